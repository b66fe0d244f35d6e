"""The accelerator's ``MAXPOOL`` engine: output row ``r`` is the bitwise OR of input rows
``r * window .. r * window + window - 1`` (the maximum of +-1 data, bit 1 meaning +1), all
in the activation buffer."""

from amaranth import Module, Signal

from ..isa import Opcode
from .buffer_port import Engine

__all__ = ["MaxPoolEngine"]


class MaxPoolEngine(Engine):
    """Sequencer of ``MAXPOOL`` instructions on the activation buffer.

    Per output word: ``window`` reads (one per cycle, OR-ed as they return), then one
    write. Ports as :class:`~lowbit.hw.gemm_xnor_engine.GemmXnorEngine`'s.
    """

    opcode = Opcode.MAXPOOL
    buffers = ("act",)
    counts_beats = False

    def elaborate(self, platform):
        cfg = self.config
        m = Module()
        f = Signal(self.layout)
        wide = 2 * cfg.act_words + 1
        r = Signal(range(cfg.act_words + 1))
        w = Signal(range(cfg.act_words + 1))
        q = Signal(range(17))
        src_row = Signal(range(wide))   # first input row of output row r
        ptr = Signal(range(wide))       # the word being read
        dst = Signal(range(wide))       # the word being written
        acc = Signal(cfg.word)
        pending = Signal()              # a granted read returns this cycle
        port = self.act

        with m.If(pending):
            m.d.sync += acc.eq(acc | port.rdata)
        m.d.sync += pending.eq(0)
        with m.FSM() as fsm:
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += f.eq(self.instr)
                    m.next = "SETUP"
            with m.State("SETUP"):
                m.d.sync += [r.eq(0), w.eq(0), q.eq(0), src_row.eq(f.src_addr),
                             ptr.eq(f.src_addr), dst.eq(f.dst_addr), acc.eq(0)]
                m.next = "READ"
            with m.State("READ"):
                m.d.comb += [port.addr.eq(ptr), port.re.eq(1)]
                with m.If(port.grant):
                    m.d.sync += [pending.eq(1), q.eq(q + 1), ptr.eq(ptr + f.row_words)]
                    with m.If(q == f.window - 1):
                        m.next = "WRITE"
            with m.State("WRITE"):
                # The last read's data is OR-ed in this cycle; write next cycle.
                with m.If(~pending):
                    m.d.comb += [port.addr.eq(dst), port.wdata.eq(acc), port.we.eq(1)]
                    with m.If(port.grant):
                        m.d.sync += [acc.eq(0), q.eq(0), dst.eq(dst + 1), w.eq(w + 1),
                                     ptr.eq(src_row + w + 1)]
                        m.next = "READ"
                        with m.If(w == f.row_words - 1):
                            # Next output row: its inputs start `window` rows further on.
                            m.d.sync += [w.eq(0), r.eq(r + 1),
                                         src_row.eq(src_row + f.row_words * f.window),
                                         ptr.eq(src_row + f.row_words * f.window)]
                            with m.If(r == f.rows - 1):
                                m.next = "IDLE"
        # An unconditional assignment: a signal only driven inside FSM states starts as X
        # in Icarus (its always @* block never runs before the state first changes).
        m.d.comb += self.busy.eq(~fsm.ongoing("IDLE"))
        return m
