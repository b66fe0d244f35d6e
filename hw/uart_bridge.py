"""The board side of the framed host link: UART bytes <-> the accelerator's host-link streams.

The frame format and the acknowledgement protocol are defined once, in
:mod:`lowbit.framing` (``docs/boards.md``); this bridge is built from its constants
(``SYNC``, :class:`~lowbit.framing.Kind`, ``MAX_PAYLOAD``, ``CRC``, ``TAG_BYTES``,
``NO_SESSION``, :func:`~lowbit.framing.ident`) and the host side,
:class:`lowbit.framing.FramedTransport`, from the same ones.

* **Host to accelerator.** The payload of a ``DATA`` frame is written into a buffer as it
  arrives; only once its CRC checks is it forwarded to ``to_accel`` and, when the last of
  it has been taken, acknowledged (``ACK`` means "forwarded; send the next one"). A frame
  with a bad CRC or kind, a UART framing error or a silence of ``gap_ticks`` inside it (a
  lost byte) is dropped unanswered: the host sends it again. Nothing unchecked reaches
  the accelerator. A ``TAG`` frame's payload is written into the spare one of two copies
  of the resident-weights tag as it arrives; once its CRC checks, that copy becomes the
  board's tag and the frame is acknowledged.
* **Accelerator to host.** Bytes from ``from_accel`` fill a second buffer; it is sent as a
  ``DATA`` frame when full or when the accelerator has been quiet for ``flush_ticks``, and
  kept until the host acknowledges it; an ``ACK`` of the frame before it is the host's
  request to send it again (the board has no resend timer). Meanwhile ``from_accel``
  waits (the accelerator's cycle counter does not count that).
* **RESET** from the host starts a session: sequence bits to 0, unsent output dropped,
  ``accel_reset`` high for a cycle; the bridge answers ``RESET`` with its tag and identity
  (the protocol version, the accelerator configuration's fingerprint). A ``DATA`` or
  ``TAG`` frame before any session (the board was just configured) is answered with a
  ``RESET`` frame of ``seq`` ``NO_SESSION``, so a host that does not know the board
  restarted finds out.

Sequence numbers are one bit (stop and wait over an ordered line needs no more). The bridge
is built to be small (``docs/boards.md`` has its logic-cell count), which shapes it:

* Memories cost no logic cells, so whatever can be a table is one. The sender's frames
  are programs in a table memory: the header of each kind of frame, the two tag copies
  and the identity, each byte with flags that say what comes after it (the CRC, the tag
  and identity, or the output buffer). The sender steps through it with one counter, and
  no byte is chosen by a multiplexer: every memory it reads gives zero while another one
  is being sent, so the byte on its way to the UART is their OR (and the output buffer's
  length, on the one header byte flagged for it). The CRC goes out bit by bit, through
  the transmitter's ``substitute`` input.
* The receiver's position in a payload and the forwarder's index are one counter, and a
  frame's length one register: the host sends a frame only once the one before it is
  acknowledged, i.e. forwarded, so a payload arrives only while nothing is being
  forwarded. A frame with a payload that arrives while one is (the host resending before
  the acknowledgement) is passed over unread: it ends where its CRC says it does (the
  CRC register is zero after a frame's own CRC), and its acknowledgement goes once the
  slot is forwarded. Frames without a payload (``ACK``, ``RESET``) are read at any time.
* Every timer counts **ticks** of ``2**tick_log2`` cycles from one free-running prescaler,
  and every register starts at zero (an iCE40 flip-flop that starts at one costs
  inverters).
"""

import math

from amaranth import Cat, Module, Mux, ResetSignal, Signal
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ..framing import CRC, MAX_PAYLOAD, NO_SESSION, SYNC, TAG_BYTES, Kind, crc16
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


class BitCRC(wiring.Component):
    """The frame CRC (:data:`lowbit.framing.CRC`), one bit at a time, as a UART moves it.

    The CRC is the reflected kind, so bits fold in least significant first, the order a
    UART sends and samples them: the receiver's and transmitter's ``bit`` / ``bit_valid``
    drive this directly, and no byte is ever shifted for it. Folding a bit equal to
    ``crc[0]`` just shifts the register, so a transmitter that sends ``crc[0]`` for 16 bits
    (``next_bit``; :class:`lowbit.hw.uart.UARTTx`'s ``substitute``) sends the CRC itself,
    after which the register is zero, as it is at a receiver that has folded a whole good
    frame.

    The register is kept inverted: the CRC starts at all ones, and an iCE40 flip-flop at
    zero.

    Parameters
    ----------
    load_value : int
        What ``load`` sets the CRC to.

    Attributes
    ----------
    load : In(1)
        Set the CRC to ``load_value``.
    bit, valid : In(1)
        Fold ``bit`` in when ``valid``.
    crc : Out(16)
        The CRC.
    next_bit : Out(1)
        ``crc[0]``.
    zero : Out(1)
        The CRC is zero: the bits since ``load`` end with their own CRC.
    """

    load: In(1)
    bit: In(1)
    valid: In(1)
    crc: Out(CRC.algorithm.crc_width)
    next_bit: Out(1)
    zero: Out(1)

    def __init__(self, load_value):
        self.load_value = load_value
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        algorithm = CRC.algorithm
        width = algorithm.crc_width
        ones = 2 ** width - 1
        assert algorithm.reflect_input and algorithm.reflect_output \
            and algorithm.xor_output == 0, "BitCRC folds a reflected CRC LSB first"
        # The polynomial, reflected: a right-shifting register.
        poly = int(f"{algorithm.polynomial:0{width}b}"[::-1], 2)
        # (No reset: a CRC is loaded before each frame.)
        inverted = Signal(width, init=algorithm.initial_crc ^ ones, reset_less=True)
        m.d.comb += [self.crc.eq(~inverted), self.next_bit.eq(~inverted[0]),
                     self.zero.eq(inverted.all())]
        with m.If(self.load):
            m.d.sync += inverted.eq(self.load_value ^ ones)
        with m.Elif(self.valid):
            # (crc >> 1) ^ poly when the bit out differs from the bit in, inverted; a zero
            # shifted into the CRC is a one here.
            feedback = inverted[0] ^ ~self.bit
            m.d.sync += inverted.eq(Cat(inverted[1:], 1) ^ (poly & feedback.replicate(width)))
        return m


def _counter(m, width, clear, step, name, start=0):
    # A counter that the domain's reset clears (to ``start``) like its own clear: the two
    # are then one flip-flop reset, where a clear on its own costs a look-up table per bit.
    counter = Signal(width, name=name, reset_less=True)
    with m.If(clear | ResetSignal()):
        m.d.sync += counter.eq(start)
    with m.Elif(step):
        m.d.sync += counter.eq(counter + 1)
    return counter


# The table memory's flags, above each byte: what the sender does after that byte.
_F_CRC = 1 << 8       # the CRC
_F_REPLY = 1 << 9     # the RESET answer's payload: the tag in use and the identity
_F_OUTPUT = 1 << 10   # the output buffer; this byte is its length (ORed into it)
_TABLE_WIDTH = 11

# The sender's frames: (kind, seq), the table's header slot being the index here.
_HEADERS = [(Kind.ACK, 0), (Kind.ACK, 1), (Kind.DATA, 0), (Kind.DATA, 1),
            (Kind.RESET, 0), (Kind.RESET, 1), (Kind.RESET, NO_SESSION)]


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
    tx_substitute, tx_sub_bit : Out(1)
        To the transmitter's ``substitute`` and ``sub_bit``: the CRC's bytes.
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
    tx_substitute: Out(1)
    tx_sub_bit: Out(1)
    tx_bit: In(1)
    tx_bit_valid: In(1)
    to_accel: Out(stream.Signature(8))
    from_accel: In(stream.Signature(8))
    accel_reset: Out(1)
    bad_frame: Out(1)

    def __new__(cls, *, ident, tick_log2, gap_ticks, flush_ticks):
        # Checked before the object exists: a refused one leaves no unused elaboratable.
        for name, value in (("tick_log2", tick_log2), ("gap_ticks", gap_ticks),
                            ("flush_ticks", flush_ticks)):
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
                raise ValueError(f"UARTBridge {name} must be a positive integer, not "
                                 f"{value!r}")
        ident = bytes(ident)
        if len(ident) + TAG_BYTES > MAX_PAYLOAD:
            raise ValueError(f"UARTBridge ident takes at most "
                             f"{MAX_PAYLOAD - TAG_BYTES} bytes, not {len(ident)}")
        return super().__new__(cls)

    def __init__(self, *, ident, tick_log2, gap_ticks, flush_ticks):
        ident = bytes(ident)
        self.ident = ident
        self.tick_log2 = tick_log2
        self.gap_ticks = gap_ticks
        self.flush_ticks = flush_ticks
        super().__init__()

    def _table(self):
        # The table memory: for each tag copy, an area of 2**area_bits entries with the
        # headers, then one with the tag and the identity (so that the copy in use is an
        # address bit, whatever is being sent); then as many zeros, read while the sender
        # sends the output buffer. Address: offset, reply, copy, zeros.
        reply = TAG_BYTES + len(self.ident)
        area_bits = max((4 * len(_HEADERS) - 1).bit_length(), (reply - 1).bit_length())
        init = [0] * (8 << area_bits)
        for copy in (0, 1):
            headers = copy << (area_bits + 1)
            for slot, (kind, seq) in enumerate(_HEADERS):
                then = {Kind.ACK: _F_CRC, Kind.DATA: _F_OUTPUT, Kind.RESET: _F_REPLY}[kind]
                length = reply if kind == Kind.RESET else 0
                init[headers + 4 * slot:headers + 4 * slot + 4] = [SYNC, kind, seq,
                                                                    length | then]
            base = headers | (1 << area_bits)
            for i, byte in enumerate(self.ident):
                init[base + TAG_BYTES + i] = byte
            init[base + reply - 1] |= _F_CRC
        return init, area_bits

    def elaborate(self, platform):
        m = Module()
        init, area_bits = self._table()
        # Three memories (one iCE40 EBR each): the input slot, the output buffer (its
        # upper half never written: zeros), the table. no_rw_check: none is read and
        # written at one address in one cycle (the slot is written only while nothing is
        # forwarded, the table only in the spare tag copy, which is not read, the output
        # buffer only while it fills, when the sender reads it only to finish a frame of
        # a session just ended, which the host ignores); without it Yosys emulates
        # read-first ports around each EBR, about 30 logic cells each.
        rw = {"no_rw_check": 1}
        m.submodules.slot = slot_mem = memory.Memory(shape=8, depth=512, init=[], attrs=rw)
        m.submodules.output = out_mem = memory.Memory(shape=8, depth=512, init=[], attrs=rw)
        m.submodules.table = table = memory.Memory(shape=_TABLE_WIDTH, depth=len(init),
                                                   init=init, attrs=rw)
        slot_wr = slot_mem.write_port()
        slot_rd = slot_mem.read_port(transparent_for=())
        out_wr = out_mem.write_port()
        out_rd = out_mem.read_port(transparent_for=())
        table_wr = table.write_port()
        table_rd = table.read_port(transparent_for=())
        # The receiver's CRC starts again at each SYNC, from the CRC of SYNC alone; the
        # transmitter's from the initial value, as its SYNC goes out.
        m.submodules.rx_crc = rx_crc = BitCRC(crc16(bytes([SYNC])))
        m.submodules.tx_crc = tx_crc = BitCRC(CRC.algorithm.initial_crc)
        m.d.comb += [rx_crc.bit.eq(self.rx_bit), rx_crc.valid.eq(self.rx_bit_valid),
                     tx_crc.bit.eq(self.tx_bit), tx_crc.valid.eq(self.tx_bit_valid),
                     self.tx_sub_bit.eq(tx_crc.next_bit)]

        # Ticks -----------------------------------------------------------------------
        prescaler = Signal(self.tick_log2, reset_less=True)     # free-running
        tick = Signal(reset_less=True)
        m.d.sync += Cat(prescaler, tick).eq(prescaler + 1)

        # Shared state -----------------------------------------------------------------
        in_session = Signal()        # a RESET frame came since configuration
        rx_expect = Signal()         # seq bit of the next host frame
        tx_seq = Signal()            # seq bit of our outstanding DATA frame
        slot_full = Signal()         # a checked host frame is being forwarded
        tag_copy = Signal()          # the tag copy in use
        ack_pending = Signal()       # ACK(ack_seq) once the slot is forwarded
        ack_seq = Signal(reset_less=True)
        reset_pending = Signal()     # send our RESET answer
        reset_seq = Signal(reset_less=True)  # ... with the seq of the RESET it answers
        no_session = Signal()        # ... or with seq NO_SESSION
        acked = Signal()             # the host acknowledged our DATA frame
        resend = Signal()            # the host acknowledged the one before: send it again
        session = Signal()           # a good RESET frame
        m.d.sync += [self.accel_reset.eq(session), self.bad_frame.eq(0)]

        # The counter: a payload's position as it arrives, then its index as it is
        # forwarded. The length register is the payload's length, for both.
        count_clear = Signal()
        count_step = Signal()
        count = _counter(m, 8, count_clear, count_step, "count")
        # Registers that are always written before they are read need no reset (an iCE40
        # flip-flop's reset acts only when it is enabled: each enable would cost one more
        # look-up table).
        length = Signal(8, reset_less=True)
        at_end = count == length

        # Receiver -------------------------------------------------------------------
        # A frame: SYNC, kind, seq, length, then the payload at count 0, 1, ... and the
        # CRC, whose first byte comes at count == length.
        kind = Signal(2, reset_less=True)   # the kind's low bits (with kind_ok they say it)
        kind_ok = Signal(reset_less=True)
        seq = Signal(reset_less=True)
        clean = Signal(reset_less=True)     # the slot was free at the length byte
        check = Signal()             # the frame's last byte
        byte = self.rx.payload
        got = self.rx.valid
        hunting = Signal()
        # Ticks of silence in a frame, counted up from 2**n - gap_ticks: bit n is the gap
        # (no comparator), and it stops there.
        gap_bits = (self.gap_ticks - 1).bit_length()
        idle_step = Signal()
        idle = _counter(m, gap_bits + 1, got | hunting, idle_step, "idle",
                        start=2 ** gap_bits - self.gap_ticks)
        gap = idle[gap_bits]
        m.d.comb += idle_step.eq(tick & ~gap)
        # The payload kinds (with kind_ok): DATA 0b01, TAG 0b00 in the low bits.
        assert {Kind.DATA & 3, Kind.TAG & 3, Kind.ACK & 3, Kind.RESET & 3} == {1, 0, 2, 3}
        m.d.comb += [self.rx.ready.eq(1), slot_wr.addr.eq(count), slot_wr.data.eq(byte)]
        # Every payload's first TAG_BYTES bytes also go into the spare tag copy: a TAG
        # frame that checks makes it the one in use (it is spare until then, so nothing
        # else minds).
        m.d.comb += [table_wr.addr.eq(Cat(count[:area_bits], 1, ~tag_copy)),
                     table_wr.data.eq(byte)]

        # Where in a frame the receiver is: one flag each (all advance with a byte, and an
        # abandoned frame clears them all at once).
        in_frame = Signal(reset_less=True)
        at_kind = Signal(reset_less=True)
        at_seq = Signal(reset_less=True)
        at_length = Signal(reset_less=True)
        in_payload = Signal(reset_less=True)    # the payload; at_end: the CRC's first byte
        at_crc_lo = Signal(reset_less=True)     # (a frame without payload while forwarding)
        at_crc_hi = Signal(reset_less=True)
        skipping = Signal(reset_less=True)      # a payload while the slot is forwarded
        is_sync = byte == SYNC
        m.d.comb += [hunting.eq(~in_frame), rx_crc.load.eq(got & ~in_frame & is_sync),
                     check.eq(got & at_crc_hi)]
        # A lost byte or a broken one: drop the frame; the host resends it.
        abandon = in_frame & ~got & (self.rx_error | gap)
        with m.If(abandon | ResetSignal()):
            m.d.sync += [flag.eq(0) for flag in (in_frame, at_kind, at_seq, at_length,
                                                 in_payload, at_crc_lo, at_crc_hi, skipping)]
            m.d.sync += self.bad_frame.eq(abandon)  # (else 0, or 1 for a failed check below)
        with m.Elif(got):
            # A payload while the slot is forwarded is a resend: it ends at its CRC.
            m.d.sync += [
                in_frame.eq(Mux(in_frame, ~at_crc_hi & ~(skipping & rx_crc.zero), is_sync)),
                at_kind.eq(~in_frame & is_sync),
                at_seq.eq(at_kind),
                at_length.eq(at_seq),
                in_payload.eq((at_length & ~slot_full) | (in_payload & ~at_end)),
                at_crc_lo.eq(at_length & slot_full & (byte == 0)),
                at_crc_hi.eq((in_payload & at_end) | at_crc_lo),
                skipping.eq((at_length & slot_full & (byte != 0)) | (skipping & ~rx_crc.zero))]
        with m.If(got & at_kind):
            # 1 to 4 (as bits: comparisons would take carry chains).
            assert (min(Kind), max(Kind)) == (1, 4)
            m.d.sync += [kind.eq(byte[:2]),
                         kind_ok.eq((byte[3:] == 0) & (byte[2] ^ (byte[:2] != 0)))]
        with m.If(got & at_seq):
            m.d.sync += seq.eq(byte[0])
        with m.If(got & at_length):
            m.d.sync += clean.eq(~slot_full)
            with m.If(~slot_full):
                m.d.sync += length.eq(byte)
                m.d.comb += count_clear.eq(1)
        with m.If(got & in_payload & ~at_end):
            m.d.comb += [slot_wr.en.eq(1), count_step.eq(1),
                         table_wr.en.eq(count[TAG_BYTES.bit_length() - 1:] == 0)]

        # The frame's last byte: every bit of it is in the CRC already.
        with m.If(check):
            with m.If(~rx_crc.zero | ~kind_ok):
                m.d.sync += self.bad_frame.eq(1)
            with m.Elif(~kind[1]):
                # DATA or TAG.
                with m.If(~in_session):
                    m.d.sync += [reset_pending.eq(1), no_session.eq(1)]
                with m.Elif(seq != rx_expect):
                    # A repeat (its ACK was lost): acknowledge it again.
                    m.d.sync += [ack_pending.eq(1), ack_seq.eq(seq)]
                with m.Elif(clean):
                    m.d.sync += [rx_expect.eq(~rx_expect), ack_pending.eq(1),
                                 ack_seq.eq(seq)]
                    m.d.comb += count_clear.eq(1)
                    with m.If(kind[0]):
                        m.d.sync += slot_full.eq(1)
                    with m.Else():
                        m.d.sync += tag_copy.eq(~tag_copy)
                # else: the next frame while the slot is still being forwarded (after a
                # lost ACK): say nothing, the host sends it again.
            with m.Elif(~kind[0]):
                # ACK.
                m.d.comb += [acked.eq(seq == tx_seq), resend.eq(seq != tx_seq)]
            with m.Else():
                m.d.comb += session.eq(1)
                m.d.sync += reset_seq.eq(seq)

        # Forwarding the slot ----------------------------------------------------------
        # The read port's data is that of the address before (sync read): the byte on
        # to_accel is at count - 1, and the port holds it until it is taken.
        fetch = slot_full & (~self.to_accel.valid | self.to_accel.ready)
        m.d.comb += [slot_rd.addr.eq(count), slot_rd.en.eq(fetch),
                     self.to_accel.payload.eq(slot_rd.data)]
        with m.If(fetch):
            m.d.sync += self.to_accel.valid.eq(~at_end)
            with m.If(at_end):
                m.d.sync += slot_full.eq(0)
            with m.Else():
                m.d.comb += count_step.eq(1)

        # Output buffer: FILL -> READY -> SENDING -> WAIT -> (ACK) FILL / (old ACK) READY ---
        # The host asks for a resend: while it waits for output and none comes, it repeats
        # the ACK of the last frame it has; the bridge needs no timer of its own for that.
        # (FILL is none of the three flags.)
        out_ready = Signal()
        out_sending = Signal()
        out_waiting = Signal()
        filling = ~out_ready & ~out_sending & ~out_waiting
        beat = self.from_accel.valid & self.from_accel.ready
        fill_clear = Signal()
        fill = _counter(m, 8, fill_clear, beat, "fill")
        # Ticks since the last byte (counted once there is one).
        timer = _counter(m, range(self.flush_ticks + 1), beat | ~filling, (fill != 0) & tick,
                         "timer")
        m.d.comb += [out_wr.addr.eq(fill), out_wr.data.eq(self.from_accel.payload),
                     out_wr.en.eq(beat), self.from_accel.ready.eq(filling & (fill != MAX_PAYLOAD))]
        with m.If(filling & ((fill == MAX_PAYLOAD) | (timer == self.flush_ticks))):
            m.d.sync += out_ready.eq(1)
        with m.If(out_waiting & acked):
            m.d.sync += [out_waiting.eq(0), tx_seq.eq(~tx_seq)]
            m.d.comb += fill_clear.eq(1)
        with m.If(out_waiting & resend):
            m.d.sync += [out_waiting.eq(0), out_ready.eq(1)]

        # Sender: a frame's program in the table, then the CRC ----------------------------
        # Its place in a frame: one flag each (none: idle).
        busy = Signal()
        in_header = Signal()
        in_reply = Signal()
        in_output = Signal()
        in_crc_lo = Signal()
        in_crc_hi = Signal()
        header = Signal(range(len(_HEADERS)), reset_less=True)   # the frame's header slot
        flags = table_rd.data[8:]
        then_crc, then_reply, then_output = flags[0], flags[1], flags[2]
        taken = self.tx.valid & self.tx.ready
        jump = taken & in_header & (then_reply | then_output)
        index = _counter(m, 8, ~busy | jump, taken, "index")
        # The output buffer's end, registered: it is a cycle late after each byte, while
        # the UART sends that byte anyway.
        output_end = Signal()
        m.d.sync += output_end.eq(in_output & (index == fill))
        m.d.comb += [self.tx.valid.eq(busy & ~(in_output & output_end)),
                     self.tx_substitute.eq(in_crc_lo | in_crc_hi),
                     tx_crc.load.eq(taken & in_header & (index[:2] == 0))]
        with m.If(~busy):
            with m.If(reset_pending):
                # Header slots 4, 5: RESET with seq 0, 1; 6: with NO_SESSION.
                m.d.sync += [header.eq(Cat(reset_seq & ~no_session, no_session, 1)),
                             reset_pending.eq(0), no_session.eq(0), busy.eq(1),
                             in_header.eq(1)]
            with m.Elif(ack_pending & ~slot_full):
                m.d.sync += [header.eq(ack_seq), ack_pending.eq(0), busy.eq(1),
                             in_header.eq(1)]
            with m.Elif(out_ready):
                m.d.sync += [header.eq(Cat(tx_seq, 1)), out_ready.eq(0), out_sending.eq(1),
                             busy.eq(1), in_header.eq(1)]
        with m.Elif(taken):
            # What comes after a table byte, by its flags.
            m.d.sync += [in_header.eq(in_header & ~then_crc & ~then_reply & ~then_output),
                         in_reply.eq((in_header & then_reply) | (in_reply & ~then_crc)),
                         in_output.eq((in_header & then_output) | in_output),
                         in_crc_lo.eq((in_header | in_reply) & then_crc),
                         in_crc_hi.eq(in_crc_lo),
                         busy.eq(~in_crc_hi)]
            with m.If(in_crc_hi & out_sending):
                m.d.sync += [out_sending.eq(0), out_waiting.eq(1)]
        with m.Elif(in_output & output_end):
            # The UART takes a byte only once the one before is out, all its bits in the
            # CRC: from there, the CRC's next bit is always its own (BitCRC).
            m.d.sync += [in_output.eq(0), in_crc_lo.eq(1)]
        # Whatever the state, the two memories the sender does not read give zero.
        m.d.comb += [table_rd.addr.eq(Cat(index[:area_bits], in_reply, tag_copy, in_output)),
                     out_rd.addr.eq(Cat(index, ~in_output)),
                     self.tx.payload.eq(table_rd.data[:8] | out_rd.data
                                        | (fill & then_output.replicate(8)))]
        with m.If(~busy | in_header):
            # The header slot's address; index counts its four bytes. (While idle index is
            # 0: every header starts with SYNC, so the first byte is ready at once.)
            m.d.comb += table_rd.addr[2:area_bits].eq(header)

        # A RESET frame: a new session (after the receiver's and sender's updates above). It
        # drops unsent output; the sender finishes its frame.
        with m.If(session):
            m.d.sync += [in_session.eq(1), rx_expect.eq(0), tx_seq.eq(0), slot_full.eq(0),
                         self.to_accel.valid.eq(0), ack_pending.eq(0),
                         reset_pending.eq(1), no_session.eq(0),
                         out_ready.eq(0), out_sending.eq(0), out_waiting.eq(0)]
            m.d.comb += fill_clear.eq(1)
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

    def __new__(cls, *, clk_freq, baud, ident):
        # Checked before the object exists: a refused one leaves no unused elaboratable.
        bridge_timing(clk_freq, baud)
        return super().__new__(cls)

    def __init__(self, *, clk_freq, baud, ident):
        self.timing = bridge_timing(clk_freq, baud)
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
                     tx.substitute.eq(bridge.tx_substitute),
                     tx.sub_bit.eq(bridge.tx_sub_bit),
                     bridge.tx_bit.eq(tx.bit), bridge.tx_bit_valid.eq(tx.bit_valid),
                     self.accel_reset.eq(bridge.accel_reset),
                     self.bad_frame.eq(bridge.bad_frame)]
        return m
