"""Framing of the host link over a board's UART: the one definition of the frame format.

A UART drops and corrupts bytes; the accelerator's host link (``docs/host_link.md``) has
no way to notice. Over a serial link both directions therefore carry **frames** with a
length and a CRC, and a stop-and-wait acknowledgement protocol (``docs/boards.md``):

``SYNC | kind | seq | length | payload (length bytes) | CRC-16 (high byte first)``

* ``SYNC`` (:data:`SYNC`) starts a frame; ``kind`` is a :class:`Kind`; ``seq`` numbers
  ``DATA`` frames modulo 256 (each direction separately); ``length`` is 0..
  :data:`MAX_PAYLOAD`.
* The CRC (:data:`CRC`, CRC-16/CCITT-FALSE: polynomial 0x1021, initial value 0xFFFF, no
  reflection) covers ``kind``, ``seq``, ``length`` and the payload. Sent high byte first,
  so the CRC of everything after ``SYNC``, CRC included, is zero (what the gateware
  checks).
* A receiver acknowledges a good ``DATA`` frame with ``ACK(seq)`` and delivers its payload
  once; a repeated ``DATA`` frame (the same ``seq`` again: its ``ACK`` was lost) is
  acknowledged again and not delivered. A bad CRC, a frame cut short (a silence of
  :attr:`FramedTransport.gap` mid-frame: a dropped byte) or an unexpected ``seq`` is
  answered with ``NAK(expected seq)``, once the line is quiet and the receiver hunts for
  ``SYNC`` again; the sender sends its frame again. A sender that
  hears nothing resends after a while; one that gets a ``NAK`` for the frame after its
  outstanding one takes it as an ``ACK`` (the ``ACK`` was lost).
* A session starts with ``RESET`` from the host, repeated until the board answers with
  ``RESET``: both sides then number their ``DATA`` frames from 0, whatever an earlier
  session left behind.

The gateware (:mod:`lowbit.hw.uart_bridge`) is built from these constants, and
:class:`FramedTransport` is the host side: a :class:`lowbit.runtime.Transport`, so the
:class:`~lowbit.runtime.Runtime` runs programs over it exactly as over the ISS.
"""

import binascii
import enum
import time

from amaranth.lib import crc

from .runtime import Transport, TransportError

__all__ = ["SYNC", "MAX_PAYLOAD", "HEADER", "CRC", "Kind", "crc16", "encode", "Frame",
           "Decoder", "FramedTransport", "BoardTransport"]

#: First byte of every frame.
SYNC = 0x5A
#: Largest payload of one frame (its ``length`` is one byte).
MAX_PAYLOAD = 255
#: The header fields after ``SYNC``, one byte each, in order.
HEADER = ("kind", "seq", "length")
#: The frame CRC (CRC-16/CCITT-FALSE); the gateware builds its CRC units from it.
CRC = crc.Algorithm(crc_width=16, polynomial=0x1021, initial_crc=0xFFFF,
                    reflect_input=False, reflect_output=False, xor_output=0)(data_width=8)
#: Bytes of the CRC at the end of a frame.
CRC_BYTES = 2


class Kind(enum.IntEnum):
    """The ``kind`` byte of a frame."""

    DATA = 0x01   #: a piece of the host-link byte stream
    ACK = 0x02    #: ``seq`` is the DATA frame received (and, towards the board, forwarded)
    NAK = 0x03    #: ``seq`` is the DATA frame the receiver expects next; resend it
    #: Host to board: start a session (both sequence numbers 0, the board's unsent output
    #: dropped, the accelerator reset; its buffers keep their contents). The board answers
    #: with a RESET frame of its own.
    RESET = 0x04


def crc16(data):
    """The frame CRC of ``data`` (bytes); equal to ``CRC.compute(data)``, but fast."""
    # binascii's CRC-CCITT is exactly CRC-16/CCITT-FALSE when started from 0xFFFF.
    return binascii.crc_hqx(bytes(data), 0xFFFF)


def encode(kind, seq, payload=b""):
    """The bytes of one frame."""
    payload = bytes(payload)
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"a frame carries at most {MAX_PAYLOAD} bytes, not {len(payload)}")
    if kind != Kind.DATA and payload:
        raise ValueError(f"a {Kind(kind).name} frame has no payload")
    body = bytes([Kind(kind), seq & 0xFF, len(payload)]) + payload
    return bytes([SYNC]) + body + crc16(body).to_bytes(CRC_BYTES, "big")


class Frame:
    """A received frame: ``kind`` (:class:`Kind`, or ``None`` when the CRC failed or the
    frame was cut short), ``seq``, ``payload``; ``error`` says what was wrong."""

    def __init__(self, kind, seq, payload=b"", error=None):
        self.kind, self.seq, self.payload, self.error = kind, seq, bytes(payload), error

    @property
    def ok(self):
        return self.error is None

    def __repr__(self):
        if self.error:
            return f"Frame(error={self.error!r})"
        return f"Frame({self.kind.name}, seq={self.seq}, {len(self.payload)} bytes)"


class Decoder:
    """Turns received bytes into :class:`Frame` objects, as the gateware's receiver does.

    :meth:`feed` takes bytes and returns the frames they complete: good ones, and bad ones
    (``error`` set: a CRC mismatch or an unknown kind). Bytes outside a frame are skipped
    until ``SYNC``. :meth:`abort` ends a frame cut short (the caller's gap timeout) and
    returns the bad frame, or ``None`` when no frame was in progress.
    """

    def __init__(self):
        self._frame = None   # bytes after SYNC of the frame in progress, or None (hunting)
        self.skipped = 0     # bytes seen outside frames

    @property
    def in_frame(self):
        return self._frame is not None

    def feed(self, data):
        frames = []
        for byte in bytes(data):
            if self._frame is None:
                if byte == SYNC:
                    self._frame = bytearray()
                else:
                    self.skipped += 1
                continue
            self._frame.append(byte)
            body = self._frame
            if len(body) >= len(HEADER) and len(body) == len(HEADER) + body[2] + CRC_BYTES:
                frames.append(self._finish(bytes(body)))
                self._frame = None
        return frames

    def abort(self):
        if self._frame is None:
            return None
        self._frame = None
        return Frame(None, None, error="frame cut short (a byte was lost)")

    @staticmethod
    def _finish(body):
        if crc16(body) != 0:
            return Frame(None, None, error="CRC mismatch")
        if body[0] not in {k.value for k in Kind}:
            return Frame(None, None, error=f"unknown frame kind 0x{body[0]:02x}")
        kind, seq, length = Kind(body[0]), body[1], body[2]
        if kind != Kind.DATA and length:
            return Frame(None, None, error=f"a {kind.name} frame with a payload")
        return Frame(kind, seq, body[3:3 + length])


class FramedTransport(Transport):
    """The host side of the framed link: a :class:`~lowbit.runtime.Transport` over a byte
    channel to a board's UART bridge.

    :meth:`write` cuts the data into ``DATA`` frames and sends each until the board
    acknowledges it (resending on ``NAK`` or silence); all the while it also receives the
    board's frames, acknowledges them and keeps their payload for :meth:`read`. Every
    corrupted or lost byte is caught by the CRC or the gap timeout and repaired by a resend;
    nothing wrong is delivered. A link that stays broken raises
    :class:`~lowbit.runtime.TransportError`.

    Parameters
    ----------
    channel :
        As for :class:`~lowbit.runtime.StreamTransport`: ``read(n)`` (up to ``n`` bytes,
        ``b""`` after a short poll, ``EOFError`` when closed), ``write(data)``, ``close()``.
    timeout : float
        Seconds without any good frame from the board (while the host waits for one) after
        which the link is declared dead.
    resend : float
        Seconds without an answer after which a ``DATA`` frame is sent again.
    gap : float
        Seconds of silence inside a frame after which it is taken as cut short (a lost
        byte) and answered with ``NAK``.
    max_tries : int
        Sends of one frame (``NAK`` or silence each time) before giving up.
    payload : int
        Bytes per ``DATA`` frame towards the board (1..``MAX_PAYLOAD``).
    name : str
        What is at the other end, for messages.

    Attributes
    ----------
    stats : dict
        Counters of the link: ``frames_sent``, ``resent``, ``naks_received``,
        ``frames_received``, ``bad_frames`` (CRC or cut short), ``duplicates``,
        ``naks_sent``.
    """

    def __init__(self, channel, *, timeout=10.0, resend=1.0, gap=0.05, max_tries=16,
                 payload=MAX_PAYLOAD, name="the board"):
        for what, value in (("timeout", timeout), ("resend", resend), ("gap", gap)):
            if not (isinstance(value, (int, float)) and value > 0):
                raise ValueError(f"{what} must be a positive number of seconds, not "
                                 f"{value!r}")
        if not (isinstance(payload, int) and 1 <= payload <= MAX_PAYLOAD):
            raise ValueError(f"payload must be 1..{MAX_PAYLOAD} bytes, not {payload!r}")
        if not (isinstance(max_tries, int) and max_tries >= 1):
            raise ValueError(f"max_tries must be a positive integer, not {max_tries!r}")
        self.channel = channel
        self.timeout, self.resend, self.gap = float(timeout), float(resend), float(gap)
        self.max_tries, self.payload, self.name = max_tries, payload, name
        self._decoder = Decoder()
        self._tx_seq = 0         # seq of our next (or outstanding) DATA frame
        self._rx_expect = 0      # seq of the board's next DATA frame
        self._received = bytearray()
        self._last_byte = time.monotonic()
        self._acked = False
        self._nak = False
        self._nak_due = False
        self._reset_seen = False
        self.stats = dict.fromkeys(("frames_sent", "resent", "naks_received",
                                    "frames_received", "bad_frames", "duplicates",
                                    "naks_sent"), 0)
        self._start_session()

    def _start_session(self):
        # RESET until the board answers RESET; then both sides count from 0.
        frame = encode(Kind.RESET, 0)
        start = time.monotonic()
        while not self._reset_seen:
            if time.monotonic() - start > self.timeout:
                raise TransportError(f"no answer from {self.name} for {self.timeout:g} s: is "
                                     f"the lowbit bitstream loaded, and the baud rate right?")
            self._send(frame)
            sent = time.monotonic()
            while not self._reset_seen and time.monotonic() - sent < self.resend:
                self._poll()
        # Anything before the board's RESET belongs to an earlier session.
        self._received.clear()
        self._tx_seq = self._rx_expect = 0

    # The channel ----------------------------------------------------------------------

    def _send(self, data):
        try:
            self.channel.write(bytes(data))
        except OSError as error:
            raise TransportError(f"cannot send to {self.name}: {error}") from error

    def _poll(self):
        # Take what the channel has (one short poll) and act on the frames it completes.
        try:
            chunk = self.channel.read(4096)
        except EOFError:
            raise TransportError(f"{self.name} closed the link") from None
        except OSError as error:
            raise TransportError(f"cannot receive from {self.name}: {error}") from error
        now = time.monotonic()
        if chunk:
            self._last_byte = now
            frames = self._decoder.feed(chunk)
        elif self._decoder.in_frame and now - self._last_byte > self.gap:
            frames = [self._decoder.abort()]
        else:
            frames = []
        good = False
        for frame in frames:
            good |= self._handle(frame)
        if self._nak_due and not chunk and not self._decoder.in_frame:
            self._nak_due = False
            self._send_control(Kind.NAK, self._rx_expect)
        return good

    def _handle(self, frame):
        # Returns True for a good frame (the link is alive).
        if not frame.ok:
            self.stats["bad_frames"] += 1
            # NAK once the line is quiet and the decoder hunts for SYNC (see _poll), so the
            # board's resend is not swallowed by a frame misparsed from the damaged one's
            # tail. Not a reason to resend our own frame at once, though it may have been
            # its ACK: on a noisy line every resend is more noise (we resend on silence).
            self._nak_due = True
            return False
        if frame.kind == Kind.DATA:
            if frame.seq == self._rx_expect:
                self._received += frame.payload
                self._rx_expect = (self._rx_expect + 1) & 0xFF
                self.stats["frames_received"] += 1
                self._send_control(Kind.ACK, frame.seq)
            elif frame.seq == (self._rx_expect - 1) & 0xFF:
                self.stats["duplicates"] += 1   # our ACK was lost: acknowledge again
                self._send_control(Kind.ACK, frame.seq)
            else:
                self._send_control(Kind.NAK, self._rx_expect)
        elif frame.kind == Kind.ACK:
            if frame.seq == self._tx_seq:
                self._acked = True
        elif frame.kind == Kind.RESET:
            self._reset_seen = True
        elif frame.kind == Kind.NAK:
            if frame.seq == self._tx_seq:
                self.stats["naks_received"] += 1
                self._nak = True
            elif frame.seq == (self._tx_seq + 1) & 0xFF:
                self._acked = True      # it has our frame; its ACK was lost
        return True

    def _send_control(self, kind, seq):
        if kind == Kind.NAK:
            self.stats["naks_sent"] += 1
        self._send(encode(kind, seq))

    # Transport ------------------------------------------------------------------------

    def write(self, data):
        self._check_open()
        data = bytes(data)
        for start in range(0, len(data), self.payload):
            self._send_frame(data[start:start + self.payload])

    def _send_frame(self, payload):
        frame = encode(Kind.DATA, self._tx_seq, payload)
        self._acked = False
        tries = 0
        alive = time.monotonic()
        while not self._acked:
            if tries == self.max_tries:
                raise TransportError(
                    f"{self.name} did not acknowledge DATA frame {self._tx_seq} after "
                    f"{tries} sends ({self.stats['naks_received']} NAKs so far): the "
                    f"serial link is too noisy or the board is not running lowbit")
            if tries:
                self.stats["resent"] += 1
            self.stats["frames_sent"] += 1
            self._send(frame)
            self._nak = False
            sent = time.monotonic()
            while not (self._acked or self._nak):
                if self._poll():
                    alive = time.monotonic()
                now = time.monotonic()
                if now - alive > self.timeout:
                    raise TransportError(f"no answer from {self.name} for "
                                         f"{self.timeout:g} s (DATA frame {self._tx_seq} "
                                         f"unacknowledged)")
                if now - sent > self.resend:
                    break
            tries += 1
        self._tx_seq = (self._tx_seq + 1) & 0xFF

    def read(self, n):
        self._check_open(n)
        alive = time.monotonic()
        while len(self._received) < n:
            if self._poll():
                alive = time.monotonic()
            elif time.monotonic() - alive > self.timeout:
                raise TransportError(f"no byte from {self.name} for {self.timeout:g} s: "
                                     f"received {len(self._received)} of the {n} bytes the "
                                     f"host waits for")
        out = bytes(self._received[:n])
        del self._received[:n]
        return out

    def close(self):
        if not self.closed:
            self.closed = True
            try:
                self.channel.close()
            except OSError:
                pass  # already gone: closing is all we wanted


class BoardTransport(FramedTransport):
    """A :class:`FramedTransport` over a serial port (pyserial): a lowbit board.

    Parameters
    ----------
    port : str
        The board's serial device (``/dev/ttyUSB1`` for the iCEBreaker's second FTDI
        channel).
    baudrate : int
        The bitstream's baud rate (``lowbit bitstream --baud``; default 115200).
    **options
        As for :class:`FramedTransport`; ``resend`` defaults to four frame times (at least
        1 s) and ``gap`` to 32 byte times (at least 50 ms) at ``baudrate``.

    Raises
    ------
    TransportError
        If the port cannot be opened.
    """

    def __init__(self, port, baudrate=115200, **options):
        from .runtime import _SerialChannel  # the raw SerialTransport's pyserial channel

        try:
            import serial
        except ImportError:
            raise ImportError("BoardTransport needs pyserial: pip install pyserial") \
                from None
        try:
            handle = serial.Serial(port, baudrate, timeout=0.01)
        except (OSError, ValueError) as error:  # SerialException is an OSError
            raise TransportError(f"cannot open serial port {port}: {error}") from error
        handle.reset_input_buffer()  # bytes of an earlier session are no frames of ours
        # At low baud rates a whole frame takes a while on the line: resend only after a
        # few frame times, and take a frame as cut short only after several byte times
        # (USB-serial adapters also hold bytes back for up to 16 ms).
        frame_s = 10 * (MAX_PAYLOAD + 6) / baudrate
        options.setdefault("resend", max(1.0, 4 * frame_s))
        options.setdefault("gap", max(0.05, 32 * 10 / baudrate))
        super().__init__(_SerialChannel(handle), name=f"the board on {port}", **options)
