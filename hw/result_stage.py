"""The result stage: what becomes of a finished tile, while the array computes the next.

On a capture the stage takes the tile's context (``THRESHOLD`` or ``SCORES``, addresses,
where its outputs go) and works from the :class:`~lowbit.hw.pe_array.PEArray`'s tile
register:

* ``THRESHOLD``: for ``t = 0 .. T - 1`` (``T = 2^out_bits - 1``) one cycle each, every PE's
  sum is compared with threshold ``t`` of its column's channel (read from the ``thresh``
  memory the cycle before) and the passes counted (a cycle later: the verdicts are
  registered); the counts go, bit plane by bit plane,
  into the tile's field of a packed activation word (a pooling window's later tiles keep
  the larger of their count and the field's); when the word is complete (its last
  field, or the layer's last tile) its ``out_bits`` planes are written to the ``act``
  memory, top plane first, ``out_words`` apart, in the cycles after;
* ``SCORES``: in ``rows`` cycles, row ``i`` of the tile (``cols`` sums, each in a
  ``word``-bit lane) is written to the ``score`` memory, ``n_tiles`` words apart.

The stage needs the tile register for ``T`` (``rows``) cycles after a capture; the execute
stage spaces captures so (``docs/accelerator.md``). ``written`` pulses with the last write
of a ``GEMM``'s last tile. Golden model: :class:`lowbit.golden.result_stage.ResultStage`.
"""

from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..config.accelerator import AcceleratorConfig

__all__ = ["ResultStage", "tile_context"]


def tile_context(config):
    """Layout of what the result stage needs to know about a tile."""
    return data.StructLayout({
        "scores": 1,                      # SCORES (else THRESHOLD)
        "out_bits": range(config.max_out_bits + 1),
        "thr_addr": range(config.thresh_depth),
        "dst_addr": range(max(config.act_depth, config.score_depth)),
        "field": range(config.word // config.cols),
        "complete": 1,                    # the tile completes its activation word
        "step": range(max(config.act_depth, config.score_depth) + 1),  # plane/row stride
        "last": 1,                        # the GEMM's last tile
        "merge": 1,                       # a pooling window's tile after its first
    })


class ResultStage(wiring.Component):
    """Thresholds or stores finished tiles.

    Parameters
    ----------
    config : AcceleratorConfig

    Attributes
    ----------
    capture : In(1), tile : In, ctx : In(tile_context(config))
        A tile's capture (from the PE array) and its context.
    thr_raddr, thr_re : Out, thr_rdata : In
        The ``thresh`` memory's read port.
    act_waddr, act_we, act_wdata : Out
        The ``act`` memory's write port.
    score_waddr, score_we, score_wdata : Out
        The ``score`` memory's write port.
    written : Out(2)
        How many ``GEMM``s wrote their last result this cycle (a ``THRESHOLD`` layer's last
        plane and a one-tile ``SCORES`` layer's last row can coincide).
    busy : Out(1)
        The stage has work in hand.
    """

    def __init__(self, config):
        if not isinstance(config, AcceleratorConfig):
            raise TypeError(f"config must be an AcceleratorConfig, not {config!r}")
        self.config = c = config
        ab = lambda depth: max(1, (depth - 1).bit_length())
        super().__init__({
            "capture": In(1),
            "tile": In(data.ArrayLayout(data.ArrayLayout(c.acc_bits, c.cols), c.rows)),
            "ctx": In(tile_context(c)),
            "thr_raddr": Out(ab(c.thresh_depth)), "thr_re": Out(1),
            "thr_rdata": In(c.cols * c.word),
            "act_waddr": Out(ab(c.act_depth)), "act_we": Out(1),
            "act_wdata": Out(c.rows * c.word),
            "score_waddr": Out(ab(c.score_depth)), "score_we": Out(1),
            "score_wdata": Out(c.cols * c.word),
            "written": Out(2), "busy": Out(1),
        })

    def elaborate(self, platform):
        cfg = self.config
        R, C, W, A = cfg.rows, cfg.cols, cfg.word, cfg.acc_bits
        OB = cfg.max_out_bits
        m = Module()
        cx = Signal(tile_context(cfg))
        active = Signal()         # comparing (THRESHOLD) or writing rows (SCORES)
        t = Signal(range(max(cfg.max_thresholds, R) + 1))
        thr_addr = Signal.like(self.thr_raddr)
        count = Signal(range(cfg.max_thresholds + 1))
        m.d.comb += count.eq((Const(1, OB + 1) << cx.out_bits) - 1)

        with m.If(self.capture):
            m.d.sync += [cx.eq(self.ctx), active.eq(1), t.eq(0)]
            m.d.comb += [self.thr_raddr.eq(self.ctx.thr_addr), self.thr_re.eq(~self.ctx.scores)]
            m.d.sync += thr_addr.eq(self.ctx.thr_addr + 1)

        # THRESHOLD: compare, one threshold per cycle; the verdicts are registered and
        # counted the cycle after (the threshold comparison and the count, pooling and
        # packing behind it were one path, critical on the UP5K). The counting cycle works
        # from ``px``, the context one cycle late: a capture may replace ``cx`` meanwhile.
        comparing = active & ~cx.scores
        final = comparing & (t == count - 1)
        passed = [[Signal(name=f"passed_{i}_{j}") for j in range(C)] for i in range(R)]
        p_valid, p_first, p_final = Signal(), Signal(), Signal()
        px = Signal(tile_context(cfg))
        m.d.sync += [p_valid.eq(comparing), p_first.eq(t == 0), p_final.eq(final)]
        with m.If(comparing):
            m.d.sync += px.eq(cx)
        for j in range(C):
            thr = self.thr_rdata[j * W:j * W + A]
            for i in range(R):
                m.d.sync += passed[i][j].eq(self.tile[i][j] >= thr)
        counts = [[Signal(OB, name=f"cnt_{i}_{j}") for j in range(C)] for i in range(R)]
        nexts = [[Signal(OB, name=f"cnt_next_{i}_{j}") for j in range(C)] for i in range(R)]
        for i in range(R):
            for j in range(C):
                m.d.comb += nexts[i][j].eq(Mux(p_first, 0, counts[i][j]) + passed[i][j])
                with m.If(p_valid):
                    m.d.sync += counts[i][j].eq(nexts[i][j])
        with m.If(comparing & ~final & ~self.capture):
            m.d.comb += [self.thr_raddr.eq(thr_addr), self.thr_re.eq(1)]
            m.d.sync += thr_addr.eq(thr_addr + 1)

        # The packed activation words, one per output plane and lane.
        pack = [[Signal(W, name=f"pack_{q}_{i}") for i in range(R)] for q in range(OB)]
        fields = W // C
        chosen = nexts
        if cfg.max_pool > 1:
            # Pooling: a window's later tiles keep the larger of the field's count so far
            # and their own (the count grows with the accumulator: max of counts is the
            # count of the max).
            chosen = [[Signal(OB, name=f"pooled_{i}_{j}") for j in range(C)]
                      for i in range(R)]
            for i in range(R):
                for j in range(C):
                    old = Signal(OB, name=f"so_far_{i}_{j}")
                    with m.Switch(px.field):
                        for fi in range(fields):
                            with m.Case(fi):
                                m.d.comb += old.eq(Cat(pack[q][i][fi * C + j]
                                                       for q in range(OB)))
                    m.d.comb += chosen[i][j].eq(
                        Mux(px.merge & (old > nexts[i][j]), old, nexts[i][j]))
        with m.If(p_final):
            for q in range(OB):
                for i in range(R):
                    bits = Cat(chosen[i][j][q] for j in range(C))
                    with m.Switch(px.field):
                        for f in range(fields):
                            with m.Case(f):
                                if f == 0:
                                    m.d.sync += pack[q][i].eq(bits)
                                else:
                                    m.d.sync += pack[q][i][f * C:(f + 1) * C].eq(bits)

        plane_done, rows_done = Signal(), Signal()
        m.d.comb += self.written.eq(plane_done + rows_done)

        # Writes of completed words: out_bits planes, top plane first, `step` apart.
        w_left = Signal(range(OB + 1))
        w_addr = Signal.like(self.act_waddr)
        w_step = Signal.like(cx.step)
        w_last = Signal()
        w_plane = Signal(range(OB))
        with m.If(w_left != 0):
            with m.Switch(w_plane):
                for q in range(OB):
                    with m.Case(q):
                        m.d.comb += self.act_wdata.eq(Cat(pack[q]))
            m.d.comb += [self.act_waddr.eq(w_addr), self.act_we.eq(1)]
            m.d.sync += [w_left.eq(w_left - 1), w_addr.eq(w_addr + w_step),
                         w_plane.eq(w_plane - 1)]
            with m.If((w_left == 1) & w_last):
                m.d.comb += plane_done.eq(1)

        # After the writes above: a word completed in their last cycle starts its own.
        with m.If(p_final & px.complete):
            m.d.sync += [w_left.eq(px.out_bits), w_addr.eq(px.dst_addr), w_step.eq(px.step),
                         w_last.eq(px.last), w_plane.eq(px.out_bits - 1)]

        # SCORES: one row of the tile per cycle.
        s_addr = Signal.like(self.score_waddr)
        writing_rows = active & cx.scores
        with m.If(writing_rows):
            with m.Switch(t):
                for i in range(R):
                    with m.Case(i):
                        m.d.comb += self.score_wdata.eq(
                            Cat(Cat(self.tile[i][j], Const(0, W - A)) for j in range(C)))
            m.d.comb += [self.score_waddr.eq(s_addr), self.score_we.eq(1)]
            m.d.sync += s_addr.eq(s_addr + cx.step)
            with m.If((t == R - 1) & cx.last):
                m.d.comb += rows_done.eq(1)
        with m.If(self.capture):  # after the row writes: a capture wins the address
            m.d.sync += s_addr.eq(self.ctx.dst_addr)

        ends = Mux(cx.scores, t == R - 1, t == count - 1)
        with m.If(active & ~self.capture):
            m.d.sync += t.eq(t + 1)
            with m.If(ends):
                m.d.sync += active.eq(0)
        m.d.comb += self.busy.eq(active | p_valid | (w_left != 0))
        return m
