"""The board side of the framed host link: UART bytes <-> the accelerator's host-link streams.

The frame format and the acknowledgement protocol are defined once, in
:mod:`lowbit.framing` (``docs/boards.md``); this bridge is built from its constants
(``SYNC``, :class:`~lowbit.framing.Kind`, ``MAX_PAYLOAD``, ``CRC``) and the host side,
:class:`lowbit.framing.FramedTransport`, from the same ones.

* **Host to accelerator.** A ``DATA`` frame is written into a 256-byte buffer as it
  arrives; only once its CRC checks is it forwarded to ``to_accel`` and, when the last of
  it has been taken, acknowledged (``ACK`` means "forwarded; send the next one"). A bad
  CRC, a UART framing error, a silence of ``gap_cycles`` inside a frame (a lost byte) or an
  unexpected sequence number is answered with ``NAK`` (once the line is quiet and the
  receiver hunts for ``SYNC`` again); nothing unchecked reaches the accelerator.
* **Accelerator to host.** Bytes from ``from_accel`` fill a second buffer; it is sent as a
  ``DATA`` frame when full or when the accelerator has been quiet for ``flush_cycles``, and
  kept until the host acknowledges it (resent on ``NAK`` or after ``resend_cycles``).
  Meanwhile ``from_accel`` waits (the accelerator's cycle counter does not count that).
* **RESET** from the host starts a session: sequence numbers to 0, unsent output dropped,
  ``accel_reset`` high for a cycle; the bridge answers ``RESET``.
"""

from amaranth import Module, Mux, Signal
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ..framing import CRC, MAX_PAYLOAD, SYNC, Kind

__all__ = ["UARTBridge"]


class UARTBridge(wiring.Component):
    """Framing, checking and acknowledgement between a UART and the accelerator.

    Parameters
    ----------
    gap_cycles : int
        Cycles of silence inside a frame after which it is abandoned (a lost byte) and
        answered with ``NAK``. Must exceed the time of a byte on the line.
    flush_cycles : int
        Cycles the accelerator may be quiet before its buffered output is sent.
    resend_cycles : int
        Cycles without an acknowledgement after which an output frame is sent again.

    Attributes
    ----------
    rx : In(stream.Signature(8))
        Bytes from the UART receiver (always taken within a cycle).
    rx_error : In(1)
        The receiver's framing-error pulse: the frame in progress is abandoned.
    tx : Out(stream.Signature(8))
        Bytes to the UART transmitter.
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
        If a cycle count is not a positive integer.
    """

    rx: In(stream.Signature(8))
    rx_error: In(1)
    tx: Out(stream.Signature(8))
    to_accel: Out(stream.Signature(8))
    from_accel: In(stream.Signature(8))
    accel_reset: Out(1)
    bad_frame: Out(1)

    def __init__(self, *, gap_cycles, flush_cycles, resend_cycles):
        for name, value in (("gap_cycles", gap_cycles), ("flush_cycles", flush_cycles),
                            ("resend_cycles", resend_cycles)):
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
                self._MustUse__silence = True  # never built: no "created but never used"
                raise ValueError(f"UARTBridge {name} must be a positive integer, not "
                                 f"{value!r}")
        self.gap_cycles = gap_cycles
        self.flush_cycles = flush_cycles
        self.resend_cycles = resend_cycles
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        depth = MAX_PAYLOAD + 1
        m.submodules.rx_mem = rx_mem = memory.Memory(shape=8, depth=depth, init=[])
        m.submodules.tx_mem = tx_mem = memory.Memory(shape=8, depth=depth, init=[])
        m.submodules.rx_crc = rx_crc = CRC.create()
        m.submodules.tx_crc = tx_crc = CRC.create()
        rx_wr = rx_mem.write_port()
        rx_rd = rx_mem.read_port(transparent_for=())
        tx_wr = tx_mem.write_port()
        tx_rd = tx_mem.read_port(transparent_for=())

        # Shared state ---------------------------------------------------------------
        rx_expect = Signal(8)        # seq of the next host DATA frame
        tx_seq = Signal(8)           # seq of our next / outstanding DATA frame
        slot_full = Signal()         # a checked host frame waits in rx_mem
        slot_len = Signal(8)
        ack_pending = Signal()       # ACK(ack_seq) once the slot is forwarded
        ack_seq = Signal(8)
        nak_pending = Signal()       # NAK(rx_expect)
        reset_pending = Signal()     # answer a RESET
        # Events of the receiver's check cycle, acted on by the output side.
        acked = Signal()
        resend = Signal()
        session = Signal()           # a good RESET frame

        m.d.sync += [self.accel_reset.eq(session), self.bad_frame.eq(0)]

        # Receiver -------------------------------------------------------------------
        kind = Signal(8)
        seq = Signal(8)
        length = Signal(8)
        index = Signal(8)
        store = Signal()             # this frame's payload goes into rx_mem
        gap = Signal(range(self.gap_cycles + 1))
        # A NAK waits for a quiet line and a receiver hunting for SYNC: the host's resend
        # then starts a frame here, instead of being swallowed by a frame misparsed from
        # the tail of the damaged one (which would draw another NAK, and another resend,
        # without end).
        quiet_cycles = max(self.gap_cycles // 8, 1)
        quiet = Signal(range(quiet_cycles + 1))
        byte = self.rx.payload
        got = Signal()
        with m.If(self.rx.valid):
            m.d.sync += quiet.eq(0)
        with m.Elif(quiet != quiet_cycles):
            m.d.sync += quiet.eq(quiet + 1)
        m.d.comb += [got.eq(self.rx.valid & self.rx.ready),
                     rx_crc.data.eq(byte),
                     rx_wr.addr.eq(index), rx_wr.data.eq(byte)]

        def abandon():
            m.d.sync += [nak_pending.eq(1), self.bad_frame.eq(1)]
            m.next = "HUNT"

        with m.FSM(name="receiver") as receiver:
            m.d.comb += self.rx.ready.eq(~receiver.ongoing("CHECK"))
            with m.State("HUNT"):
                with m.If(got & (byte == SYNC)):
                    m.next = "KIND"
            with m.State("CHECK"):
                ok = rx_crc.match_detected
                with m.If(~ok):
                    abandon()
                with m.Elif(kind == Kind.DATA):
                    with m.If(store):
                        m.d.sync += [rx_expect.eq(rx_expect + 1), ack_pending.eq(1),
                                     ack_seq.eq(seq), slot_full.eq(length != 0),
                                     slot_len.eq(length)]
                    with m.Elif(seq == (rx_expect - 1)[:8]):
                        m.d.sync += [ack_pending.eq(1), ack_seq.eq(seq)]  # a repeat
                    with m.Elif(seq == rx_expect):
                        # The next frame while the slot is still being forwarded (it came
                        # early: the host took a NAK for an ACK). Say nothing: the host
                        # sends it again, and a NAK would only make it hurry.
                        pass
                    with m.Else():
                        m.d.sync += nak_pending.eq(1)
                with m.Elif(kind == Kind.ACK):
                    m.d.comb += acked.eq(seq == tx_seq)
                with m.Elif(kind == Kind.NAK):
                    m.d.comb += [resend.eq(seq == tx_seq), acked.eq(seq == (tx_seq + 1)[:8])]
                with m.Elif(kind == Kind.RESET):
                    m.d.comb += session.eq(1)
                with m.Else():
                    abandon()
                m.next = "HUNT"
            for state, following in (("KIND", "SEQ"), ("SEQ", "LEN"), ("LEN", None),
                                     ("PAYLOAD", None), ("CRC_HI", "CRC_LO"),
                                     ("CRC_LO", "CHECK")):
                with m.State(state):
                    with m.If(got):
                        m.d.sync += gap.eq(0)
                        m.d.comb += [rx_crc.valid.eq(1), rx_crc.start.eq(state == "KIND")]
                        if state == "KIND":
                            m.d.sync += kind.eq(byte)
                        elif state == "SEQ":
                            m.d.sync += seq.eq(byte)
                        elif state == "LEN":
                            m.d.sync += [length.eq(byte), index.eq(0),
                                         store.eq((kind == Kind.DATA) & (seq == rx_expect)
                                                  & ~slot_full)]
                            m.next = "PAYLOAD"
                            with m.If(byte == 0):
                                m.next = "CRC_HI"
                        elif state == "PAYLOAD":
                            m.d.comb += rx_wr.en.eq(store)
                            m.d.sync += index.eq(index + 1)
                            with m.If(index == length - 1):
                                m.next = "CRC_HI"
                        if following:
                            m.next = following
                    with m.Elif(self.rx_error | (gap == self.gap_cycles)):
                        m.d.sync += gap.eq(0)
                        abandon()
                    with m.Else():
                        m.d.sync += gap.eq(gap + 1)

        # Forwarding a checked frame to the accelerator --------------------------------
        # The read port's address is the next index, so its data is always that of the
        # current one (sync read, one cycle).
        fwd = Signal(8)
        fwd_next = Signal(8)
        taken = self.to_accel.valid & self.to_accel.ready
        m.d.comb += [self.to_accel.valid.eq(slot_full), self.to_accel.payload.eq(rx_rd.data),
                     fwd_next.eq(Mux(slot_full, fwd + taken, 0)), rx_rd.addr.eq(fwd_next)]
        m.d.sync += fwd.eq(fwd_next)
        with m.If(taken & (fwd == slot_len - 1)):
            m.d.sync += [slot_full.eq(0), fwd.eq(0)]

        # Output buffer: FILL -> READY -> SENDING -> WAIT -> (ACK) FILL / (NAK) READY --------
        fill = Signal(range(depth + 1))
        timer = Signal(range(max(self.flush_cycles, self.resend_cycles) + 1))
        sent = Signal()              # the sender finished the DATA frame
        picked = Signal()            # the sender took the READY frame
        beat = self.from_accel.valid & self.from_accel.ready
        m.d.comb += [tx_wr.addr.eq(fill), tx_wr.data.eq(self.from_accel.payload),
                     tx_wr.en.eq(beat)]
        def new_session():
            # A RESET frame drops unsent output (last, so it wins over the state's own).
            with m.If(session):
                m.d.sync += [fill.eq(0), timer.eq(0)]
                m.next = "FILL"

        with m.FSM(name="output") as output:
            with m.State("FILL"):
                m.d.comb += self.from_accel.ready.eq(fill != MAX_PAYLOAD)
                with m.If(beat):
                    m.d.sync += [fill.eq(fill + 1), timer.eq(0)]
                with m.Elif(fill != 0):
                    m.d.sync += timer.eq(timer + 1)
                with m.If((fill == MAX_PAYLOAD)
                          | ((fill != 0) & (timer == self.flush_cycles))):
                    m.next = "READY"
                new_session()
            with m.State("READY"):
                with m.If(picked):
                    m.next = "SENDING"
                new_session()
            with m.State("SENDING"):
                with m.If(sent):
                    m.d.sync += timer.eq(0)
                    m.next = "WAIT"
                new_session()
            with m.State("WAIT"):
                m.d.sync += timer.eq(timer + 1)
                with m.If(acked):
                    m.d.sync += [tx_seq.eq(tx_seq + 1), fill.eq(0), timer.eq(0)]
                    m.next = "FILL"
                with m.Elif(resend | (timer == self.resend_cycles)):
                    m.next = "READY"
                new_session()

        # Sender: SYNC kind seq length payload CRC ------------------------------------
        s_kind = Signal(8)
        s_seq = Signal(8)
        s_len = Signal(8)
        s_idx = Signal(8)
        s_next = Signal(8)
        tx_taken = self.tx.valid & self.tx.ready
        m.d.comb += [tx_crc.data.eq(self.tx.payload), tx_rd.addr.eq(s_next)]
        m.d.sync += s_idx.eq(s_next)
        with m.FSM(name="sender") as sender:
            m.d.comb += [self.tx.valid.eq(~sender.ongoing("IDLE")), s_next.eq(s_idx)]
            with m.State("IDLE"):
                m.d.comb += s_next.eq(0)
                with m.If(reset_pending):
                    m.d.sync += [s_kind.eq(Kind.RESET), s_seq.eq(0), s_len.eq(0),
                                 reset_pending.eq(0)]
                    m.next = "SYNC"
                with m.Elif(nak_pending & receiver.ongoing("HUNT") & (quiet == quiet_cycles)):
                    m.d.sync += [s_kind.eq(Kind.NAK), s_seq.eq(rx_expect), s_len.eq(0),
                                 nak_pending.eq(0)]
                    m.next = "SYNC"
                with m.Elif(ack_pending & ~slot_full):
                    m.d.sync += [s_kind.eq(Kind.ACK), s_seq.eq(ack_seq), s_len.eq(0),
                                 ack_pending.eq(0)]
                    m.next = "SYNC"
                with m.Elif(output.ongoing("READY")):
                    m.d.comb += picked.eq(1)
                    m.d.sync += [s_kind.eq(Kind.DATA), s_seq.eq(tx_seq), s_len.eq(fill)]
                    m.next = "SYNC"
            with m.State("SYNC"):
                m.d.comb += self.tx.payload.eq(SYNC)
                with m.If(tx_taken):
                    m.next = "KIND"
            for state, value, following in (("KIND", s_kind, "SEQ"), ("SEQ", s_seq, "LEN"),
                                            ("LEN", s_len, None)):
                with m.State(state):
                    m.d.comb += [self.tx.payload.eq(value), tx_crc.valid.eq(tx_taken),
                                 tx_crc.start.eq(state == "KIND")]
                    with m.If(tx_taken):
                        if following:
                            m.next = following
                        else:
                            m.next = "CRC_HI"
                            with m.If(s_len != 0):
                                m.next = "PAYLOAD"
            with m.State("PAYLOAD"):
                m.d.comb += [self.tx.payload.eq(tx_rd.data), tx_crc.valid.eq(tx_taken)]
                with m.If(tx_taken):
                    m.d.comb += s_next.eq(s_idx + 1)
                    with m.If(s_idx == s_len - 1):
                        m.next = "CRC_HI"
            with m.State("CRC_HI"):
                m.d.comb += self.tx.payload.eq(tx_crc.crc[8:])
                with m.If(tx_taken):
                    m.next = "CRC_LO"
            with m.State("CRC_LO"):
                m.d.comb += self.tx.payload.eq(tx_crc.crc[:8])
                with m.If(tx_taken):
                    m.d.comb += sent.eq((s_kind == Kind.DATA) & output.ongoing("SENDING"))
                    m.next = "IDLE"

        # A RESET frame: a new session (after the receiver's and sender's updates above).
        with m.If(session):
            m.d.sync += [rx_expect.eq(0), tx_seq.eq(0), slot_full.eq(0), fwd.eq(0),
                         ack_pending.eq(0), nak_pending.eq(0), reset_pending.eq(1)]
        return m
