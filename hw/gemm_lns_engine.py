"""The accelerator's ``GEMM_LNS`` engine: ``C[i][j] = dot(A row i, B row j)`` on the LNS
multiply-add unit (:class:`lowbit.hw.lns_mac.LNSMac`), row-major over ``i`` then ``j``.

Operand rows hold ``per_word = word // bits`` LNS words per buffer word (element ``t`` in
slot ``t % per_word`` of word ``t // per_word``, ``docs/program_format.md``). For each
dot product the engine reads one activation word and one weight word at a time (the two
buffers in parallel) and sends them as ``per_word / lanes`` beats of ``lanes`` pairs;
slots past ``k`` become zero codes (which add nothing), as in the golden schedule, and a
beat that would start past ``k`` is not sent. Results go to the output buffer as the
unit emits them.
"""

from amaranth import Array, Module, Mux, Signal
from amaranth.lib import data

from ..isa import Opcode
from .buffer_port import Engine
from .lns_mac import LNSMac

__all__ = ["GemmLnsEngine"]


class GemmLnsEngine(Engine):
    """Sequencer of ``GEMM_LNS`` instructions around an :class:`LNSMac`; ports as
    :class:`~lowbit.hw.gemm_xnor_engine.GemmXnorEngine`'s.

    Raises
    ------
    ValueError
        Unless the unit's ``lanes`` divides ``word // bits`` (a beat never spans two
        buffer words).
    """

    opcode = Opcode.GEMM_LNS

    def __init__(self, config):
        lns = config.lns_mac
        per_word = config.word // lns.bits
        if per_word % lns.lanes:
            raise ValueError(f"the LNS MAC's lanes ({lns.lanes}) must divide the LNS words "
                             f"per buffer word ({per_word} = {config.word} // {lns.bits})")
        super().__init__(config)

    def elaborate(self, platform):
        cfg, lns = self.config, self.config.lns_mac
        W, L = cfg.word, lns.lanes
        per_word = W // lns.bits
        subs = per_word // L
        m = Module()
        m.submodules.unit = unit = LNSMac(lns)
        m.d.comb += self.beat.eq(unit.i_stream.valid & unit.i_stream.ready)

        f = Signal(self.layout)
        wide = 2 * max(cfg.act_words, cfg.weight_words, cfg.out_words) + 1
        slots = data.ArrayLayout(lns.word_layout, per_word)

        # Issuer: word pairs in order (i, j, word), one outstanding read.
        i = Signal(range(cfg.act_words + 1))
        j = Signal(range(cfg.weight_words + 1))
        t_word = Signal(range(lns.max_k + per_word + 1))  # first element of the word
        a_row = Signal(range(wide))
        b_row = Signal(range(wide))
        a_ptr = Signal(range(wide))
        b_ptr = Signal(range(wide))
        issuing = Signal()
        pending = Signal()
        pend_t = Signal.like(t_word)
        # The word pair waiting to be sent, and the one being sent.
        next_valid = Signal()
        next_a, next_b = Signal(W), Signal(W)
        next_t = Signal.like(t_word)
        cur_valid = Signal()
        cur_a, cur_b = Signal(W), Signal(W)
        cur_t = Signal.like(t_word)   # first element of the current beat
        sub = Signal(range(subs + 1))

        beat_taken = unit.i_stream.valid & unit.i_stream.ready
        beat_last = cur_t + L >= f.k
        cur_done = beat_taken & ((sub == subs - 1) | beat_last)
        move = next_valid & (~cur_valid | cur_done)
        can_issue = issuing & ~pending & (~next_valid | move)
        go = can_issue & self.act.grant & self.weight.grant
        m.d.comb += [
            self.act.addr.eq(a_ptr), self.act.re.eq(can_issue),
            self.weight.addr.eq(b_ptr), self.weight.re.eq(can_issue),
        ]
        m.d.sync += pending.eq(go)
        with m.If(go):
            m.d.sync += [pend_t.eq(t_word), t_word.eq(t_word + per_word),
                         a_ptr.eq(a_ptr + 1), b_ptr.eq(b_ptr + 1)]
            with m.If(t_word + per_word >= f.k):
                # The dot product's last word: next (i, j).
                m.d.sync += [t_word.eq(0), j.eq(j + 1), b_row.eq(b_row + f.b_stride),
                             a_ptr.eq(a_row), b_ptr.eq(b_row + f.b_stride)]
                with m.If(j == f.n - 1):
                    m.d.sync += [j.eq(0), i.eq(i + 1), b_row.eq(f.b_addr), b_ptr.eq(f.b_addr),
                                 a_row.eq(a_row + f.a_stride), a_ptr.eq(a_row + f.a_stride)]
                    with m.If(i == f.m - 1):
                        m.d.sync += issuing.eq(0)
        with m.If(pending):
            m.d.sync += [next_valid.eq(1), next_a.eq(self.act.rdata),
                         next_b.eq(self.weight.rdata), next_t.eq(pend_t)]
        with m.Elif(move):
            m.d.sync += next_valid.eq(0)
        with m.If(move):
            m.d.sync += [cur_valid.eq(1), cur_a.eq(next_a), cur_b.eq(next_b),
                         cur_t.eq(next_t), sub.eq(0)]
        with m.Elif(cur_done):
            m.d.sync += cur_valid.eq(0)
        with m.Elif(beat_taken):
            m.d.sync += [sub.eq(sub + 1), cur_t.eq(cur_t + L)]

        # The current beat: `lanes` slots of the word pair, zero codes past k.
        a_slots = data.View(slots, cur_a[:slots.size])
        b_slots = data.View(slots, cur_b[:slots.size])
        beat = unit.i_stream.payload
        for lane in range(L):
            index = sub * L + lane
            keep = cur_t + lane < f.k
            a_word = Array(a_slots[s] for s in range(per_word))[index]
            b_word = Array(b_slots[s] for s in range(per_word))[index]
            m.d.comb += [
                beat.a[lane].eq(Mux(keep, a_word.as_value(), 0)),
                beat.b[lane].eq(Mux(keep, b_word.as_value(), 0)),
            ]
        m.d.comb += [unit.i_stream.valid.eq(cur_valid), beat.first.eq(cur_t == 0),
                     beat.last.eq(beat_last)]

        # Writer: results in (i, j) order.
        wi = Signal(range(cfg.act_words + 1))
        wj = Signal(range(cfg.weight_words + 1))
        c_row = Signal(range(wide))
        writing = Signal()
        m.d.comb += [
            self.out.addr.eq(c_row + wj), self.out.wdata.eq(unit.o_stream.payload.dot),
            self.out.we.eq(writing & unit.o_stream.valid),
            unit.o_stream.ready.eq(writing & self.out.grant),
        ]
        with m.If(unit.o_stream.valid & unit.o_stream.ready):
            m.d.sync += wj.eq(wj + 1)
            with m.If(wj == f.n - 1):
                m.d.sync += [wj.eq(0), wi.eq(wi + 1), c_row.eq(c_row + f.c_stride)]
                with m.If(wi == f.m - 1):
                    m.d.sync += writing.eq(0)

        setup = Signal()
        m.d.sync += setup.eq(0)
        with m.If(self.start):
            m.d.sync += [f.eq(self.instr), setup.eq(1)]
        with m.If(setup):
            m.d.sync += [i.eq(0), j.eq(0), t_word.eq(0), a_row.eq(f.a_addr), a_ptr.eq(f.a_addr),
                         b_row.eq(f.b_addr), b_ptr.eq(f.b_addr), issuing.eq(1), wi.eq(0),
                         wj.eq(0), c_row.eq(f.c_addr), writing.eq(1)]
        m.d.comb += self.busy.eq(setup | issuing | writing)
        return m
