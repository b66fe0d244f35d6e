"""Framing of the host link over a board's UART: the one definition of the frame format.

A UART drops and corrupts bytes; the accelerator's host link (``docs/host_link.md``) has
no way to notice. Over a serial link both directions therefore carry **frames** with a
length and a CRC, and a stop-and-wait acknowledgement protocol (``docs/boards.md``):

``SYNC | kind | seq | length | payload (length bytes) | CRC-16 (low byte first)``

* ``SYNC`` (:data:`SYNC`) starts a frame; ``kind`` is a :class:`Kind`; ``seq`` numbers
  ``DATA`` and ``TAG`` frames modulo 2 (each direction separately: stop and wait over an
  ordered line needs one bit); ``length`` is 0..:data:`MAX_PAYLOAD`.
* The CRC (:data:`CRC`, CRC-16/MCRF4XX: polynomial 0x1021 reflected, initial value
  0xFFFF, no final XOR) covers the whole frame from ``SYNC`` to the payload. It is the
  reflected form so that the UARTs, which move bits LSB first, fold each bit into it as
  it crosses the line; sent low byte first, it makes the CRC of the whole frame, CRC
  included, zero (what the gateware checks).
* A receiver acknowledges a good ``DATA`` (or ``TAG``) frame with ``ACK(seq)`` and
  delivers its payload once; a repeated frame (the same ``seq`` again: its ``ACK`` was
  lost) is acknowledged again and not delivered. A frame with a bad CRC or kind, or cut
  short (a silence of :attr:`FramedTransport.gap` mid-frame: a dropped byte), is dropped
  without an answer.
* The host repairs both directions, so the board needs no timer for it: it sends its frame
  again when no ``ACK`` comes; and while it waits for the board's output (or for an
  ``ACK``) and nothing comes, it repeats the ``ACK`` of the board's last good frame. A
  board waiting for that ``ACK`` takes it; a board whose next frame was lost takes an
  ``ACK`` of the frame before the one it holds as the request to send it again.
* A session starts with ``RESET`` from the host, repeated (``seq`` alternating) until the
  board answers with a ``RESET`` of the same ``seq``: both sides then number their frames
  from 0, whatever an earlier session left behind. The answer's payload is the board's
  resident-weights tag (:data:`TAG_BYTES`, set by the host with ``TAG`` frames) and its
  identity (:func:`ident`: protocol version and accelerator fingerprint). A
  board that gets a ``DATA`` or ``TAG`` frame outside any session (it was reconfigured)
  answers ``RESET`` with ``seq`` 0xFF.

The gateware (:mod:`lowbit.hw.uart_bridge`) is built from these constants, and
:class:`FramedTransport` is the host side: a :class:`lowbit.runtime.Transport`, so the
:class:`~lowbit.runtime.Runtime` runs programs over it exactly as over the ISS.
"""

import binascii
import enum
import time

from amaranth.lib import crc

from .runtime import Transport, TransportError

__all__ = ["SYNC", "MAX_PAYLOAD", "HEADER", "CRC", "Kind", "PROTOCOL_VERSION", "TAG_BYTES",
           "NO_SESSION", "DEFAULT_BAUD", "ident", "crc16", "encode", "Frame", "Decoder",
           "BoardMismatch", "FramedTransport", "BoardTransport"]

#: First byte of every frame.
SYNC = 0x5A
#: Largest payload of one frame (its ``length`` is one byte).
MAX_PAYLOAD = 255
#: The header fields after ``SYNC``, one byte each, in order.
HEADER = ("kind", "seq", "length")
#: The frame CRC (CRC-16/MCRF4XX); the gateware builds its bit-serial CRC units from it.
CRC = crc.Algorithm(crc_width=16, polynomial=0x1021, initial_crc=0xFFFF,
                    reflect_input=True, reflect_output=True, xor_output=0)(data_width=8)
#: Bytes of the CRC at the end of a frame.
CRC_BYTES = 2
#: The link protocol's version: the first byte of a board's identity.
PROTOCOL_VERSION = 2
#: Bytes of the resident-weights tag a board keeps (all zero: nothing resident).
TAG_BYTES = 8
#: ``seq`` of a board's ``RESET`` frame that answers a frame outside any session.
NO_SESSION = 0xFF
#: The link's default baud rate, on both sides (the boards' FTDI bridges make it exactly).
DEFAULT_BAUD = 3_000_000


def ident(config):
    """The identity a board built for the accelerator ``config`` sends in its ``RESET``
    answer: :data:`PROTOCOL_VERSION`, then the 8 bytes of ``config.fingerprint()``."""
    return bytes([PROTOCOL_VERSION]) + bytes.fromhex(config.fingerprint())


class Kind(enum.IntEnum):
    """The ``kind`` byte of a frame."""

    DATA = 0x01   #: a piece of the host-link byte stream
    ACK = 0x02    #: ``seq`` is the DATA or TAG frame received (towards the board: forwarded)
    #: Host to board: start a session (both sequence numbers 0, the board's unsent output
    #: dropped, the accelerator reset; its memories keep their contents). The board answers
    #: with a RESET frame of its own, its tag and identity as payload.
    RESET = 0x03
    #: Host to board, numbered like DATA: the payload (TAG_BYTES) becomes the board's
    #: resident-weights tag.
    TAG = 0x04


# Bit reversal of a byte: a reflected CRC is binascii's CRC-CCITT of the reversed bytes,
# reversed.
_REVERSE = bytes(int(f"{b:08b}"[::-1], 2) for b in range(256))


def crc16(data, crc=0xFFFF):
    """The frame CRC of ``data`` (bytes), continuing from ``crc``; equal to
    ``CRC.compute(data)``, but fast."""
    value = binascii.crc_hqx(bytes(data).translate(_REVERSE), _reverse16(crc))
    return _reverse16(value)


def _reverse16(value):
    return _REVERSE[value & 0xFF] << 8 | _REVERSE[value >> 8]


def encode(kind, seq, payload=b""):
    """The bytes of one frame."""
    payload = bytes(payload)
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"a frame carries at most {MAX_PAYLOAD} bytes, not {len(payload)}")
    if kind == Kind.ACK and payload:
        raise ValueError(f"a {Kind(kind).name} frame has no payload")
    frame = bytes([SYNC, Kind(kind), seq & 0xFF, len(payload)]) + payload
    return frame + crc16(frame).to_bytes(CRC_BYTES, "little")


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
        if crc16(bytes([SYNC]) + body) != 0:
            return Frame(None, None, error="CRC mismatch")
        if body[0] not in {k.value for k in Kind}:
            return Frame(None, None, error=f"unknown frame kind 0x{body[0]:02x}")
        kind, seq, length = Kind(body[0]), body[1], body[2]
        if kind == Kind.ACK and length:
            return Frame(None, None, error=f"a {kind.name} frame with a payload")
        return Frame(kind, seq, body[3:3 + length])


class BoardMismatch(TransportError):
    """The board answers, but runs another protocol version or accelerator configuration
    than the host expects: its bitstream is not the one for this program."""


class FramedTransport(Transport):
    """The host side of the framed link: a :class:`~lowbit.runtime.Transport` over a byte
    channel to a board's UART bridge.

    Opening it starts a session (``RESET`` until the board answers) and reads the board's
    identity: its protocol version and accelerator fingerprint must be the expected ones
    (:class:`BoardMismatch` otherwise). :meth:`write` cuts the data into ``DATA`` frames and
    sends each until the board acknowledges it (resending after a silence); all the
    while it also receives the board's frames, acknowledges them and keeps their payload
    for :meth:`read`. Every corrupted or lost byte is caught by the CRC or the gap timeout
    and repaired by a resend; nothing wrong is delivered. A link that stays broken, or a
    board that restarted in the middle of the session, raises
    :class:`~lowbit.runtime.TransportError`. The board keeps its memories, and a tag
    saying which weights they hold (:meth:`set_tag`), across sessions for as long as it
    keeps its bitstream: :class:`~lowbit.runtime.Runtime` uses it to keep weights resident
    (``keeps_weights``).

    Parameters
    ----------
    channel :
        As for :class:`~lowbit.runtime.StreamTransport`: ``read(n)`` (up to ``n`` bytes,
        ``b""`` after a short poll, ``EOFError`` when closed), ``write(data)``, ``close()``.
    config : AcceleratorConfig, optional
        The accelerator the host expects; a board built for another is refused.
    timeout : float
        Seconds without any good frame from the board (while the host waits for one) after
        which the link is declared dead.
    resend : float
        Seconds without an answer after which a frame is sent again.
    gap : float
        Seconds of silence inside a frame after which it is taken as cut short (a lost
        byte) and dropped.
    max_tries : int
        Sends of one frame (silence after each) before giving up.
    payload : int
        Bytes per ``DATA`` frame towards the board (1..``MAX_PAYLOAD``).
    name : str
        What is at the other end, for messages.
    clock : callable
        The time in seconds (default :func:`time.monotonic`); a simulated line passes its
        simulated time, so that every timeout is in the line's time.

    Attributes
    ----------
    stats : dict
        Counters of the link: ``frames_sent``, ``resent``, ``frames_received``,
        ``bad_frames`` (CRC or cut short), ``duplicates``, ``polls`` (repeated ACKs that
        ask the board to resend its frame).
    board_fingerprint : str
        The accelerator configuration the board was built for (hex, as
        ``AcceleratorConfig.fingerprint()``).

    Raises
    ------
    TransportError
        If the board does not answer the session's ``RESET`` within ``timeout``.
    BoardMismatch
        If it answers with another protocol version or configuration.
    """

    keeps_weights = True

    def __init__(self, channel, *, config=None, timeout=10.0, resend=1.0, gap=0.05,
                 max_tries=16, payload=MAX_PAYLOAD, name="the board", clock=time.monotonic):
        for what, value in (("timeout", timeout), ("resend", resend), ("gap", gap)):
            if not (isinstance(value, (int, float)) and value > 0):
                raise ValueError(f"{what} must be a positive number of seconds, not "
                                 f"{value!r}")
        if not (isinstance(payload, int) and 1 <= payload <= MAX_PAYLOAD):
            raise ValueError(f"payload must be 1..{MAX_PAYLOAD} bytes, not {payload!r}")
        if not (isinstance(max_tries, int) and max_tries >= 1):
            raise ValueError(f"max_tries must be a positive integer, not {max_tries!r}")
        self.channel = channel
        self.config = config
        self._now = clock
        self.timeout, self.resend, self.gap = float(timeout), float(resend), float(gap)
        self.max_tries, self.payload, self.name = max_tries, payload, name
        self._decoder = Decoder()
        self._tx_seq = 0         # seq of our next (or outstanding) DATA / TAG frame
        self._rx_expect = 0      # seq of the board's next DATA frame
        self._received = bytearray()
        self._last_byte = clock()
        self._acked = False
        self._reset_seq = None   # seq of the RESET being sent, until the board answers it
        self._answer = None      # the payload of the board's answer
        self._tag = bytes(TAG_BYTES)
        self._frames = 0         # DATA and TAG frames acknowledged in this session
        self.board_fingerprint = None
        self.stats = dict.fromkeys(("frames_sent", "resent", "frames_received",
                                    "bad_frames", "duplicates", "polls"), 0)
        self._start_session()

    def _start_session(self):
        # RESET until the board answers RESET of the same seq; then both sides count from
        # 0. The seq alternates so that a late answer to an earlier RESET is not taken for
        # the answer to this one.
        start = self._now()
        attempt = 0
        while self._answer is None:
            if self._now() - start > self.timeout:
                raise TransportError(f"no answer from {self.name} for {self.timeout:g} s: is "
                                     f"the lowbit bitstream loaded, and the baud rate right?")
            self._reset_seq = attempt & 1
            attempt += 1
            self._send(encode(Kind.RESET, self._reset_seq))
            sent = self._now()
            while self._answer is None and self._now() - sent < self.resend:
                self._poll()
        self._reset_seq = None
        tag, identity = self._answer[:TAG_BYTES], self._answer[TAG_BYTES:]
        if len(identity) != 9 or identity[0] != PROTOCOL_VERSION:
            raise BoardMismatch(f"{self.name} runs another lowbit link protocol (its identity "
                                f"is {identity.hex() or 'empty'}; this host speaks version "
                                f"{PROTOCOL_VERSION}): rebuild and flash its bitstream")
        self.board_fingerprint = identity[1:].hex()
        self._tag = bytes(tag)
        if self.config is not None and self.board_fingerprint != self.config.fingerprint():
            raise BoardMismatch(f"{self.name} was built for accelerator configuration "
                                f"{self.board_fingerprint}, the host expects "
                                f"{self.config.fingerprint()}: flash the bitstream of this "
                                f"configuration (lowbit bitstream --config ...)")
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
        now = self._now()
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
        return good

    def _handle(self, frame):
        # Returns True for a good frame (the link is alive).
        if not frame.ok:
            # Dropped: the board sends it again when no ACK comes.
            self.stats["bad_frames"] += 1
            return False
        if frame.kind == Kind.RESET:
            if frame.seq == NO_SESSION and self._reset_seq is None:
                self.closed = True
                raise TransportError(f"{self.name} restarted during the session (power, "
                                     f"reset button or a new bitstream): it has lost its "
                                     f"state; open a new link")
            if frame.seq == self._reset_seq:
                self._answer = frame.payload
            return True         # a late answer to an earlier RESET: nothing to do
        if self._reset_seq is not None:
            return True         # the tail of an earlier session
        if frame.kind == Kind.DATA:
            if frame.seq == self._rx_expect:
                self._received += frame.payload
                self._rx_expect ^= 1
                self.stats["frames_received"] += 1
                self._send_control(Kind.ACK, frame.seq)
            elif frame.seq == self._rx_expect ^ 1:
                self.stats["duplicates"] += 1   # our ACK was lost: acknowledge again
                self._send_control(Kind.ACK, frame.seq)
        elif frame.kind == Kind.ACK:
            if frame.seq == self._tx_seq:
                self._acked = True
        return True

    def _send_control(self, kind, seq):
        self._send(encode(kind, seq))

    # Transport ------------------------------------------------------------------------

    def write(self, data):
        self._check_open()
        data = bytes(data)
        for start in range(0, len(data), self.payload):
            self._send_frame(Kind.DATA, data[start:start + self.payload])

    @property
    def tag(self):
        """The board's resident-weights tag (:data:`TAG_BYTES` bytes; zeros: none)."""
        return self._tag

    def set_tag(self, tag):
        """Set the board's resident-weights tag (a ``TAG`` frame, acknowledged)."""
        self._check_open()
        tag = bytes(tag)
        if len(tag) != TAG_BYTES:
            raise ValueError(f"a tag is {TAG_BYTES} bytes, not {len(tag)}")
        self._send_frame(Kind.TAG, tag)
        self._tag = tag

    def _send_frame(self, kind, payload):
        frame = encode(kind, self._tx_seq, payload)
        self._acked = False
        tries = 0
        alive = self._now()
        while not self._acked:
            if tries == self.max_tries:
                raise TransportError(
                    f"{self.name} did not acknowledge {kind.name} frame {self._frames} "
                    f"after {tries} sends: the serial link is too noisy or the board is "
                    f"not running lowbit")
            if tries:
                self.stats["resent"] += 1
                self._poke()    # the board may be waiting for an ACK that was lost
            self.stats["frames_sent"] += 1
            self._send(frame)
            sent = self._now()
            while not self._acked:
                if self._poll():
                    alive = self._now()
                now = self._now()
                if now - alive > self.timeout:
                    raise TransportError(f"no answer from {self.name} for "
                                         f"{self.timeout:g} s ({kind.name} frame "
                                         f"unacknowledged)")
                if now - sent > self.resend:
                    break
            tries += 1
        self._tx_seq ^= 1
        self._frames += 1

    def _poke(self):
        # Repeat the ACK of the board's last frame: a board still waiting for that ACK
        # takes it; one whose next frame was lost sends that again (an ACK of the frame
        # before the one it holds is its resend request).
        self.stats["polls"] += 1
        self._send_control(Kind.ACK, self._rx_expect ^ 1)

    def read(self, n):
        self._check_open(n)
        alive = poked = self._now()
        while len(self._received) < n:
            if self._poll():
                alive = poked = self._now()
            elif self._now() - alive > self.timeout:
                raise TransportError(f"no byte from {self.name} for {self.timeout:g} s: "
                                     f"received {len(self._received)} of the {n} bytes the "
                                     f"host waits for")
            elif self._now() - poked > self.resend:
                poked = self._now()
                self._poke()
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
        The bitstream's baud rate (``lowbit bitstream --baud``; default
        :data:`DEFAULT_BAUD`).
    **options
        As for :class:`FramedTransport`; ``resend`` defaults to four frame times plus a
        USB round trip (at least 0.1 s) and ``gap`` to 32 byte times (at least 20 ms) at
        ``baudrate``.

    Raises
    ------
    TransportError
        If the port cannot be opened (no board), or the board does not answer.
    BoardMismatch
        If the board runs another configuration than ``options["config"]``.
    """

    def __init__(self, port, baudrate=DEFAULT_BAUD, **options):
        from .runtime import _SerialChannel  # the raw SerialTransport's pyserial channel

        try:
            import serial
        except ImportError:
            raise ImportError("BoardTransport needs pyserial: pip install pyserial") \
                from None
        try:
            handle = serial.Serial(port, baudrate, timeout=0.002)
        except (OSError, ValueError) as error:  # SerialException is an OSError
            raise TransportError(f"cannot open serial port {port}: {error}") from error
        handle.reset_input_buffer()  # bytes of an earlier session are no frames of ours
        # USB-serial adapters hold received bytes back for up to their latency timer
        # (1-16 ms): resend only after a few frame times and a round trip, and take a
        # frame as cut short only after that kind of pause.
        frame_s = 10 * (MAX_PAYLOAD + 6) / baudrate
        options.setdefault("resend", max(0.1, 4 * frame_s))
        options.setdefault("gap", max(0.02, 32 * 10 / baudrate))
        try:
            super().__init__(_SerialChannel(handle), name=f"the board on {port}", **options)
        except BaseException:
            handle.close()
            raise
