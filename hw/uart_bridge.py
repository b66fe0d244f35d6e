"""The board side of the framed host link: UART bytes <-> the accelerator's host-link streams.

The frame format and the acknowledgement protocol are defined once, in
:mod:`lowbit.framing` (``docs/boards.md``); this bridge is built from its constants
(``SYNC``, :class:`~lowbit.framing.Kind`, ``MAX_PAYLOAD``, ``CRC``, ``TAG_BYTES``,
:func:`~lowbit.framing.ident`) and the host side, :class:`lowbit.framing.FramedTransport`,
from the same ones.

* **Host to accelerator.** The payload of a ``DATA`` frame is written into a buffer as it
  arrives; only once its CRC checks is it forwarded to ``to_accel`` and, when the last of
  it has been taken, acknowledged (``ACK`` means "forwarded; send the next one"). A frame
  with a bad CRC or kind, a UART framing error or a silence of ``gap_ticks`` inside it (a
  lost byte) is dropped unanswered: the host sends it again. Nothing unchecked reaches
  the accelerator. A ``TAG`` frame is handled the same way, but its payload goes into the
  board's resident-weights tag instead of the accelerator.
* **Accelerator to host.** Bytes from ``from_accel`` fill a second buffer; it is sent as a
  ``DATA`` frame when full or when the accelerator has been quiet for ``flush_ticks``, and
  kept until the host acknowledges it; an ``ACK`` of the frame before it is the host's
  request to send it again (the board has no resend timer). Meanwhile ``from_accel``
  waits (the accelerator's cycle counter does not count that).
* **RESET** from the host starts a session: sequence bits to 0, unsent output dropped,
  ``accel_reset`` high for a cycle; the bridge answers ``RESET`` with its tag and identity
  (the protocol version, the accelerator configuration's fingerprint). A ``DATA`` or
  ``TAG`` frame before any session (the board was just configured) is answered with a
  ``RESET`` frame of ``seq`` 0xFF, so a host that does not know the board restarted finds
  out.

Sequence numbers are one bit (stop and wait over an ordered line needs no more). Every
timer counts **ticks** of ``2**tick_log2`` cycles from one free-running prescaler, so none
is wide: the bridge is built to be small (``docs/boards.md`` has its logic-cell count).
"""

import math

from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ..framing import CRC, MAX_PAYLOAD, SYNC, TAG_BYTES, Kind, crc16
from .uart import UARTRx, UARTTx, baud_divisor

__all__ = ["TICK_LOG2", "bridge_timing", "BitCRC", "UARTBridge", "SerialBridge"]

#: The bridge's timer tick: 2**TICK_LOG2 clock cycles (43 us at 24 MHz).
TICK_LOG2 = 10


def bridge_timing(clk_freq, baud, *, gap_s=1e-3):
    """The bridge's tick counts for a clock and baud rate: ``gap_ticks`` about ``gap_s``
    (a host's frame arrives back to back, but a USB-serial adapter can pause between its
    USB packets) and at least four byte times; ``flush_ticks`` two byte times (accelerator
    output comes in bursts of a cycle or so per byte).

    Raises
    ------
    ValueError
        As :func:`lowbit.hw.uart.baud_divisor`.
    """
    tick = 2 ** TICK_LOG2
    byte = 10 * baud_divisor(clk_freq, baud)
    return {"tick_log2": TICK_LOG2,
            "gap_ticks": max(math.ceil(gap_s * clk_freq / tick), math.ceil(4 * byte / tick) + 1),
            "flush_ticks": max(1, math.ceil(2 * byte / tick))}


# Where the RESET answer's payload lives in the output memory: the tag (written by TAG
# frames), then the identity (constant: the memory's initial value).
_REPLY_BASE = 256


class BitCRC(wiring.Component):
    """The frame CRC (:data:`lowbit.framing.CRC`), one bit at a time, as a UART moves it.

    The CRC is the reflected kind, so bits fold in least significant first, the order a
    UART sends and samples them: the receiver's and transmitter's ``bit`` / ``bit_valid``
    drive this directly, and no byte is ever shifted for it. A transmitter that sends the
    register's low byte twice sends the CRC itself (folding a bit equal to ``crc[0]``
    just shifts the register), after which the register is zero, as it is at a receiver
    that has folded a whole good frame.

    Parameters
    ----------
    load_value : int
        What ``load`` sets the register to.

    Attributes
    ----------
    load : In(1)
        Set the register to ``load_value``.
    bit, valid : In(1)
        Fold ``bit`` in when ``valid``.
    crc : Out(16)
        The register.
    zero : Out(1)
        The register is zero: the bits since ``load`` end with their own CRC.
    """

    load: In(1)
    bit: In(1)
    valid: In(1)
    crc: Out(CRC.algorithm.crc_width)
    zero: Out(1)

    def __init__(self, load_value):
        self.load_value = load_value
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        algorithm = CRC.algorithm
        width = algorithm.crc_width
        assert algorithm.reflect_input and algorithm.reflect_output \
            and algorithm.xor_output == 0, "BitCRC folds a reflected CRC LSB first"
        # The polynomial, reflected: a right-shifting register.
        poly = int(f"{algorithm.polynomial:0{width}b}"[::-1], 2)
        reg = Signal(width, init=algorithm.initial_crc)
        m.d.comb += [self.crc.eq(reg), self.zero.eq(reg == 0)]
        with m.If(self.load):
            m.d.sync += reg.eq(self.load_value)
        with m.Elif(self.valid):
            m.d.sync += reg.eq((reg >> 1) ^ Mux(reg[0] ^ self.bit, poly, 0))
        return m


class UARTBridge(wiring.Component):
    """Framing, checking and acknowledgement between a UART and the accelerator.

    Parameters
    ----------
    ident : bytes
        The constant end of the RESET answer's payload (:func:`lowbit.framing.ident`).
    tick_log2 : int
        The timers' tick is ``2**tick_log2`` clock cycles.
    gap_ticks : int
        Ticks of silence inside a frame after which it is abandoned (a lost byte). Must
        exceed the time of a byte on the line.
    flush_ticks : int
        Ticks the accelerator may be quiet before its buffered output is sent.

    Attributes
    ----------
    rx : In(stream.Signature(8))
        Bytes from the UART receiver (always taken at once).
    rx_error : In(1)
        The receiver's framing-error pulse: the frame in progress is abandoned.
    rx_bit, rx_bit_valid : In(1)
        The receiver's data bits as sampled (the CRC folds them).
    tx : Out(stream.Signature(8))
        Bytes to the UART transmitter.
    tx_bit, tx_bit_valid : In(1)
        The transmitter's data bits as sent.
    to_accel : Out(stream.Signature(8))
        Checked host-link bytes, to the accelerator's ``i_stream``.
    from_accel : In(stream.Signature(8))
        The accelerator's ``o_stream``.
    accel_reset : Out(1)
        High for one cycle after a ``RESET`` frame.
    bad_frame : Out(1)
        High for one cycle when a frame fails its check (for a LED).

    Raises
    ------
    ValueError
        If a tick count is not a positive integer, or ``ident`` is too long.
    """

    rx: In(stream.Signature(8))
    rx_error: In(1)
    rx_bit: In(1)
    rx_bit_valid: In(1)
    tx: Out(stream.Signature(8))
    tx_bit: In(1)
    tx_bit_valid: In(1)
    to_accel: Out(stream.Signature(8))
    from_accel: In(stream.Signature(8))
    accel_reset: Out(1)
    bad_frame: Out(1)

    def __init__(self, *, ident, tick_log2, gap_ticks, flush_ticks):
        try:
            for name, value in (("tick_log2", tick_log2), ("gap_ticks", gap_ticks),
                                ("flush_ticks", flush_ticks)):
                if not (isinstance(value, int) and not isinstance(value, bool)
                        and value >= 1):
                    raise ValueError(f"UARTBridge {name} must be a positive integer, not "
                                     f"{value!r}")
            ident = bytes(ident)
            if len(ident) + TAG_BYTES > MAX_PAYLOAD:
                raise ValueError(f"UARTBridge ident takes at most "
                                 f"{MAX_PAYLOAD - TAG_BYTES} bytes, not {len(ident)}")
        except (TypeError, ValueError):
            self._MustUse__silence = True  # never built: no "created but never used"
            raise
        self.ident = ident
        self.tick_log2 = tick_log2
        self.gap_ticks = gap_ticks
        self.flush_ticks = flush_ticks
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        # One 512-byte memory each way (a single iCE40 EBR each): the input slot, and the
        # output buffer with the RESET answer's tag and identity above it.
        reply = TAG_BYTES + len(self.ident)
        init = [0] * (_REPLY_BASE + TAG_BYTES) + list(self.ident)
        m.submodules.rx_mem = rx_mem = memory.Memory(shape=8, depth=512, init=[])
        m.submodules.tx_mem = tx_mem = memory.Memory(shape=8, depth=512, init=init)
        # The receiver's CRC starts again at each SYNC, from the CRC of SYNC alone; the
        # transmitter's from the initial value, as its SYNC goes out.
        m.submodules.rx_crc = rx_crc = BitCRC(crc16(bytes([SYNC])))
        m.submodules.tx_crc = tx_crc = BitCRC(CRC.algorithm.initial_crc)
        m.d.comb += [rx_crc.bit.eq(self.rx_bit), rx_crc.valid.eq(self.rx_bit_valid),
                     tx_crc.bit.eq(self.tx_bit), tx_crc.valid.eq(self.tx_bit_valid)]
        rx_wr = rx_mem.write_port()
        rx_rd = rx_mem.read_port(transparent_for=())
        tx_wr = tx_mem.write_port()
        tx_rd = tx_mem.read_port(transparent_for=())

        # Ticks -----------------------------------------------------------------------
        prescaler = Signal(self.tick_log2)
        tick = Signal()
        m.d.sync += Cat(prescaler, tick).eq(prescaler + 1)

        # Shared state -----------------------------------------------------------------
        in_session = Signal()        # a RESET frame came since configuration
        rx_expect = Signal()         # seq bit of the next host frame
        tx_seq = Signal()            # seq bit of our outstanding DATA frame
        slot_full = Signal()         # a checked host frame waits in rx_mem
        slot_tag = Signal()          # ... and it is a TAG frame
        slot_len = Signal(8)
        ack_pending = Signal()       # ACK(ack_seq) once the slot is forwarded
        ack_seq = Signal()
        reset_pending = Signal()     # send our RESET answer
        reset_seq = Signal()         # ... with the seq of the RESET it answers
        no_session = Signal()        # ... or with seq 0xFF: "this board has no session"
        acked = Signal()             # the host acknowledged our DATA frame
        resend = Signal()            # the host acknowledged the one before: send it again
        session = Signal()           # a good RESET frame
        m.d.sync += [self.accel_reset.eq(session), self.bad_frame.eq(0)]

        # Receiver -------------------------------------------------------------------
        # A frame: SYNC, header bytes (one-hot phase), then payload and CRC with pos
        # counting from -1, so that byte i of the payload goes to address pos + 1 = i and
        # the frame's last byte (the CRC's second) comes at pos = length.
        in_frame = Signal()
        header = Signal(3)           # one-hot: kind, seq, length next
        kind = Signal(3)
        kind_ok = Signal()
        seq = Signal()
        length = Signal(8)
        pos = Signal(9)
        pos_next = Signal(9)
        clean = Signal()             # the slot was free when the frame began
        check = Signal()             # the frame's last byte
        idle = Signal(range(self.gap_ticks + 1))
        byte = self.rx.payload
        got = self.rx.valid
        in_body = ~header.any()
        m.d.comb += [self.rx.ready.eq(1), pos_next.eq(pos + 1),
                     rx_wr.addr.eq(pos_next), rx_wr.data.eq(byte),
                     rx_wr.en.eq(got & in_frame & in_body & clean)]
        with m.If(got | ~in_frame):
            m.d.sync += idle.eq(0)
        with m.Elif(tick & (idle != self.gap_ticks)):
            m.d.sync += idle.eq(idle + 1)

        with m.If(~in_frame):
            with m.If(got & (byte == SYNC)):
                m.d.sync += [in_frame.eq(1), header.eq(1), clean.eq(~slot_full)]
                m.d.comb += rx_crc.load.eq(1)
        with m.Elif(got):
            m.d.sync += [header.eq(header << 1), pos.eq(pos_next)]
            with m.If(header[0]):
                m.d.sync += [kind.eq(byte[:3]),
                             kind_ok.eq((byte >= min(Kind)) & (byte <= max(Kind)))]
            with m.If(header[1]):
                m.d.sync += seq.eq(byte[0])
            with m.If(header[2]):
                m.d.sync += [length.eq(byte), pos.eq(-1)]
            with m.If(in_body & (pos == length)):
                m.d.sync += in_frame.eq(0)
                m.d.comb += check.eq(1)
        with m.Elif(self.rx_error | (idle == self.gap_ticks)):
            # A lost byte or a broken one: drop the frame; the host resends it.
            m.d.sync += [in_frame.eq(0), self.bad_frame.eq(1)]

        # The frame's last byte: every bit of it is in the CRC already.
        with m.If(check):
            with m.If(~rx_crc.zero | ~kind_ok):
                m.d.sync += self.bad_frame.eq(1)
            with m.Elif((kind == Kind.DATA) | (kind == Kind.TAG)):
                with m.If(~in_session):
                    m.d.sync += [reset_pending.eq(1), no_session.eq(1)]
                with m.Elif(seq != rx_expect):
                    # A repeat (its ACK was lost): acknowledge it again.
                    m.d.sync += [ack_pending.eq(1), ack_seq.eq(seq)]
                with m.Elif(clean):
                    m.d.sync += [rx_expect.eq(~rx_expect), ack_pending.eq(1),
                                 ack_seq.eq(seq), slot_full.eq(length != 0),
                                 slot_len.eq(length), slot_tag.eq(kind == Kind.TAG)]
                # else: the next frame while the slot is still being forwarded (after a
                # lost ACK): say nothing, the host sends it again.
            with m.Elif(kind == Kind.ACK):
                m.d.comb += [acked.eq(seq == tx_seq), resend.eq(seq != tx_seq)]
            with m.Elif(kind == Kind.RESET):
                m.d.comb += session.eq(1)
                m.d.sync += reset_seq.eq(seq)

        # Forwarding a checked frame: to the accelerator, or a TAG into tx_mem -------------
        # The read port's address is the next index, so its data is that of the current
        # one (sync read, one cycle).
        fwd = Signal(8)
        fwd_inc = Signal(8)
        fwd_next = Signal(8)
        taken = Signal()
        m.d.comb += [self.to_accel.valid.eq(slot_full & ~slot_tag),
                     self.to_accel.payload.eq(rx_rd.data),
                     taken.eq(slot_full & (slot_tag | self.to_accel.ready)),
                     fwd_inc.eq(fwd + 1),
                     fwd_next.eq(Mux(taken, fwd_inc, Mux(slot_full, fwd, 0))),
                     rx_rd.addr.eq(fwd_next)]
        m.d.sync += fwd.eq(fwd_next)
        with m.If(taken & (fwd_inc == slot_len)):
            m.d.sync += [slot_full.eq(0), fwd.eq(0)]

        # Output buffer: FILL -> READY -> SENDING -> WAIT -> (ACK) FILL / (old ACK) READY ---
        # The host asks for a resend: while it waits for output and none comes, it repeats
        # the ACK of the last frame it has; the bridge needs no timer of its own for that.
        fill = Signal(8)
        timer = Signal(range(self.flush_ticks + 1))
        sent = Signal()              # the sender finished the DATA frame
        picked = Signal()            # the sender took the READY frame
        writing_tag = slot_full & slot_tag
        beat = self.from_accel.valid & self.from_accel.ready
        m.d.comb += [
            tx_wr.addr.eq(Mux(writing_tag, _REPLY_BASE | fwd[:3], fill)),
            tx_wr.data.eq(Mux(writing_tag, rx_rd.data, self.from_accel.payload)),
            tx_wr.en.eq(beat | writing_tag)]

        def new_session():
            # A RESET frame drops unsent output (last, so it wins over the state's own).
            with m.If(session):
                m.d.sync += [fill.eq(0), timer.eq(0)]
                m.next = "FILL"

        with m.FSM(name="output") as output:
            with m.State("FILL"):
                m.d.comb += self.from_accel.ready.eq((fill != MAX_PAYLOAD) & ~writing_tag)
                with m.If(beat):
                    m.d.sync += [fill.eq(fill + 1), timer.eq(0)]
                with m.Elif((fill != 0) & tick):
                    m.d.sync += timer.eq(timer + 1)
                with m.If((fill == MAX_PAYLOAD) | ((fill != 0) & (timer == self.flush_ticks))):
                    m.next = "READY"
                new_session()
            with m.State("READY"):
                with m.If(picked):
                    m.next = "SENDING"
                new_session()
            with m.State("SENDING"):
                with m.If(sent):
                    m.next = "WAIT"
                new_session()
            with m.State("WAIT"):
                with m.If(acked):
                    m.d.sync += [tx_seq.eq(~tx_seq), fill.eq(0), timer.eq(0)]
                    m.next = "FILL"
                with m.Elif(resend):
                    m.next = "READY"
                new_session()

        # Sender: SYNC kind seq length payload CRC ------------------------------------
        s_kind = Signal(3)
        s_seq = Signal()
        s_all = Signal()             # seq byte 0xFF
        s_len = Signal(8)
        s_idx = Signal(8)
        s_next = Signal(8)
        s_high = Signal()            # the payload is the RESET answer (above _REPLY_BASE)
        tx_taken = self.tx.valid & self.tx.ready
        m.d.comb += [tx_rd.addr.eq(Cat(s_next, s_high)),
                     s_len.eq(Mux(s_kind == Kind.DATA, fill,
                                  Mux(s_kind == Kind.RESET, reply, 0)))]
        m.d.sync += s_idx.eq(s_next)
        with m.FSM(name="sender") as sender:
            m.d.comb += [self.tx.valid.eq(~sender.ongoing("IDLE")), s_next.eq(s_idx)]
            with m.State("IDLE"):
                m.d.comb += s_next.eq(0)
                with m.If(reset_pending):
                    m.d.sync += [s_kind.eq(Kind.RESET), s_seq.eq(reset_seq | no_session),
                                 s_all.eq(no_session), s_high.eq(1), reset_pending.eq(0),
                                 no_session.eq(0)]
                    m.next = "SYNC"
                with m.Elif(ack_pending & ~slot_full):
                    m.d.sync += [s_kind.eq(Kind.ACK), s_seq.eq(ack_seq), s_all.eq(0),
                                 s_high.eq(0), ack_pending.eq(0)]
                    m.next = "SYNC"
                with m.Elif(output.ongoing("READY")):
                    m.d.comb += picked.eq(1)
                    m.d.sync += [s_kind.eq(Kind.DATA), s_seq.eq(tx_seq), s_all.eq(0),
                                 s_high.eq(0)]
                    m.next = "SYNC"
            with m.State("SYNC"):
                m.d.comb += [self.tx.payload.eq(SYNC), tx_crc.load.eq(tx_taken)]
                with m.If(tx_taken):
                    m.next = "KIND"
            for state, value, following in (("KIND", s_kind, "SEQ"),
                                            ("SEQ", Cat(s_seq, s_all.replicate(7)), "LEN"),
                                            ("LEN", s_len, None)):
                with m.State(state):
                    m.d.comb += self.tx.payload.eq(value)
                    with m.If(tx_taken):
                        if following:
                            m.next = following
                        else:
                            m.next = "CRC_LO"
                            with m.If(s_len != 0):
                                m.next = "PAYLOAD"
            with m.State("PAYLOAD"):
                m.d.comb += self.tx.payload.eq(tx_rd.data)
                with m.If(tx_taken):
                    m.d.comb += s_next.eq(s_idx + 1)
                    with m.If(s_next == s_len):
                        m.next = "CRC_LO"
            # The UART takes a byte only once the previous one is out, all its bits in the
            # CRC: the register's low byte, twice, is the CRC (BitCRC).
            with m.State("CRC_LO"):
                m.d.comb += self.tx.payload.eq(tx_crc.crc[:8])
                with m.If(tx_taken):
                    m.next = "CRC_HI"
            with m.State("CRC_HI"):
                m.d.comb += self.tx.payload.eq(tx_crc.crc[:8])
                with m.If(tx_taken):
                    m.d.comb += sent.eq((s_kind == Kind.DATA) & output.ongoing("SENDING"))
                    m.next = "IDLE"

        # A RESET frame: a new session (after the receiver's and sender's updates above).
        with m.If(session):
            m.d.sync += [in_session.eq(1), rx_expect.eq(0), tx_seq.eq(0), slot_full.eq(0),
                         fwd.eq(0), ack_pending.eq(0), reset_pending.eq(1),
                         no_session.eq(0)]
        return m


class SerialBridge(wiring.Component):
    """UART pins to the accelerator's host-link streams: :class:`~lowbit.hw.uart.UARTRx`,
    :class:`~lowbit.hw.uart.UARTTx` and :class:`UARTBridge` (what a board adds to the
    accelerator; ``docs/boards.md`` has its size).

    Parameters
    ----------
    clk_freq : int or float
        Clock frequency in Hz.
    baud : int
        Baud rate of the UART.
    ident : bytes
        As for :class:`UARTBridge`.

    Attributes
    ----------
    rx : In(1)
        UART line from the host (asynchronous).
    tx : Out(1)
        UART line to the host.
    to_accel, from_accel, accel_reset, bad_frame :
        As for :class:`UARTBridge`.
    timing : dict
        The bridge's tick counts.

    Raises
    ------
    ValueError
        If the baud rate does not suit the clock (:func:`lowbit.hw.uart.baud_divisor`).
    """

    rx: In(1, init=1)
    tx: Out(1, init=1)
    to_accel: Out(stream.Signature(8))
    from_accel: In(stream.Signature(8))
    accel_reset: Out(1)
    bad_frame: Out(1)

    def __init__(self, *, clk_freq, baud, ident):
        try:
            self.timing = bridge_timing(clk_freq, baud)
        except ValueError:
            self._MustUse__silence = True  # never built: no "created but never used"
            raise
        self.clk_freq, self.baud, self.ident = clk_freq, baud, bytes(ident)
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.uart_rx = rx = UARTRx(clk_freq=self.clk_freq, baud=self.baud)
        m.submodules.uart_tx = tx = UARTTx(clk_freq=self.clk_freq, baud=self.baud)
        m.submodules.bridge = bridge = UARTBridge(ident=self.ident, **self.timing)
        wiring.connect(m, rx.o_stream, bridge.rx)
        wiring.connect(m, bridge.tx, tx.i_stream)
        wiring.connect(m, bridge.to_accel, wiring.flipped(self.to_accel))
        wiring.connect(m, wiring.flipped(self.from_accel), bridge.from_accel)
        m.d.comb += [rx.rx.eq(self.rx), self.tx.eq(tx.tx), bridge.rx_error.eq(rx.error),
                     bridge.rx_bit.eq(rx.bit), bridge.rx_bit_valid.eq(rx.bit_valid),
                     bridge.tx_bit.eq(tx.bit), bridge.tx_bit_valid.eq(tx.bit_valid),
                     self.accel_reset.eq(bridge.accel_reset),
                     self.bad_frame.eq(bridge.bad_frame)]
        return m
