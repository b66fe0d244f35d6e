"""The accelerator's ``NORM`` engine around the norm unit (:class:`lowbit.hw.lightnorm.
LightNorm`), in every mode the unit is built for (layouts in ``docs/program_format.md``).

An instruction runs in up to two phases:

1. **parameters** (``THRESHOLD``/``REQUANTISE``: ``block * T`` thresholds and ``block``
   flips per channel group; ``NORMALISE``: ``block`` scale and offset mantissas and the
   two exponents) are read from the weight buffer and sent as one ``LOAD`` beat per group
   in use; channels past ``channels`` get zeros;
2. **data**: for each of ``rows`` rows, each group's ``block`` values are read from the
   output buffer (the low ``input_width`` bits of each word, two's complement) and sent as
   an ``APPLY`` beat, or a ``STAT`` beat (``STATISTICS``: ``first`` on row 0, ``chunk`` at
   the ``numpy.array_split`` chunk starts, ``last`` on the final row).

The unit's outputs are written as they come: packed bit planes to the activation buffer
(threshold modes), whole BFP blocks to the activation buffer (``NORMALISE``), or a row of
sums and a row of spreads to the output buffer (``STATISTICS``).

Every value is taken modulo its field's width (thresholds, flips, mantissas, exponents,
inputs), as the ISS does.
"""

from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import data

from ..config.lightnorm import Op
from ..isa import NormMode, Opcode, instruction_set
from .buffer_port import Engine
from .lightnorm import LightNorm

__all__ = ["NormEngine", "floor_divmod"]


def floor_divmod(x, d, limit):
    """``(x // d, x % d)`` for a constant ``d`` and ``0 <= x <= limit``, by a multiplication
    with the rounded-up reciprocal (exact in range, no divider)."""
    if d & (d - 1) == 0:
        shift = d.bit_length() - 1
        return x >> shift, x & (d - 1)
    n = limit.bit_length()
    shift = n + d.bit_length()
    mult = -(-(1 << shift) // d)
    quotient = (x * mult) >> shift
    return quotient, x - quotient * d


class NormEngine(Engine):
    """Sequencer of ``NORM`` instructions around a :class:`LightNorm`. Ports as
    :class:`~lowbit.hw.gemm_xnor_engine.GemmXnorEngine`'s; ``beat`` pulses when the unit
    accepts a beat."""

    opcode = Opcode.NORM

    def elaborate(self, platform):
        cfg, ncfg = self.config, self.config.lightnorm
        isa = instruction_set(cfg)
        W, B = cfg.word, ncfg.block
        bfp = ncfg.output == "bfp"
        m = Module()
        m.submodules.unit = unit = LightNorm(ncfg)
        m.d.comb += self.beat.eq(unit.i_stream.valid & unit.i_stream.ready)

        f = Signal(self.layout)
        # The latched instruction is STATISTICS. Without statistics in the unit that mode is
        # illegal, so a constant: the statistics writer and chunk counters fold away.
        stats = Signal() if ncfg.statistics else Const(0)
        wide = 2 * max(cfg.act_words, cfg.weight_words, cfg.out_words) + 1
        groups_used = Signal(range(ncfg.groups + 1))
        base = Signal(range(ncfg.max_batch + 1))     # rows // chunks
        extra = Signal(range(ncfg.chunks + 1))       # rows % chunks

        # Issuer -------------------------------------------------------------------------
        g = Signal(range(ncfg.groups + 1))
        b = Signal(range(B))
        t = Signal(range(ncfg.thresholds + 2))       # which parameter word of channel b
        r = Signal(range(max(cfg.out_words, ncfg.max_batch) + 1))
        ch = Signal(range(ncfg.channels + B + 1))
        ptr = [Signal(range(wide), name=f"param_ptr{i}") for i in range(4)]
        src_row = Signal(range(wide))
        xptr = Signal(range(wide))
        params = Signal(ncfg.param_layout)
        xs = Signal(data.ArrayLayout(ncfg.input_width, B))
        chunk_index = Signal(range(ncfg.chunks + 1))
        chunk_left = Signal(range(ncfg.max_batch + 1))
        chunk_flag = Signal()
        ch_ok = ch < f.channels
        beat = unit.i_stream.payload
        issue_done = Signal(init=1)
        writer_busy = Signal()  # the statistics writer owns the output buffer's port
        x_grant = self.out.grant & ~writer_busy

        # Parameter words: (pointer, where it lands) per step t of a channel.
        if bfp:
            steps = [(0, lambda v: params.scale[cap_b].eq(v)),
                     (1, lambda v: params.offset[cap_b].eq(v))]
            group_steps = [(2, lambda v: params.scale_exp.eq(v)),
                           (3, lambda v: params.offset_exp.eq(v))]
            zero_steps = [params.scale[b].eq(0), params.offset[b].eq(0)]
        else:
            steps = [(0, None)] * ncfg.thresholds + [(1, None)]
            group_steps = []
        per_channel = len(steps)
        cap, cap_group = Signal(), Signal()
        cap_b = Signal(range(B))
        cap_t = Signal(range(per_channel + 2))
        m.d.sync += cap.eq(0)
        with m.If(cap):
            value = self.weight.rdata
            if bfp:
                with m.If(cap_group):
                    for i, (_, land) in enumerate(group_steps):
                        with m.If(cap_t == i):
                            m.d.sync += land(value)
                with m.Else():
                    for i, (_, land) in enumerate(steps):
                        with m.If(cap_t == i):
                            m.d.sync += land(value)
            else:
                with m.If(cap_t == ncfg.thresholds):
                    m.d.sync += params.flip[cap_b].eq(value[0])
                with m.Else():
                    m.d.sync += params.t[cap_b][cap_t].eq(value)
        xcap = Signal()
        xcap_b = Signal(range(B))
        m.d.sync += xcap.eq(0)
        with m.If(xcap):
            m.d.sync += xs[xcap_b].eq(self.out.rdata)

        in_group = Signal()  # BFP: the channel steps of the group are done
        with m.FSM() as fsm:
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [f.eq(self.instr), issue_done.eq(0)]
                    if ncfg.statistics:
                        m.d.sync += stats.eq(self.instr.mode == NormMode.STATISTICS)
                    m.next = "SETUP"
            with m.State("SETUP"):
                quotient, remainder = floor_divmod(f.rows, ncfg.chunks,
                                                   max(cfg.out_words, ncfg.max_batch))
                used = (f.channels + B - 1) >> (B.bit_length() - 1) if B & (B - 1) == 0 \
                    else floor_divmod(f.channels + B - 1, B, ncfg.channels + B)[0]
                m.d.sync += [
                    groups_used.eq(used), base.eq(quotient), extra.eq(remainder),
                    g.eq(0), b.eq(0), t.eq(0), r.eq(0), ch.eq(0), in_group.eq(0),
                    src_row.eq(f.src_addr), xptr.eq(f.src_addr),
                    chunk_index.eq(0), chunk_left.eq(0),
                ]
                if bfp:
                    m.d.sync += [ptr[0].eq(f.param_addr), ptr[1].eq(f.param_addr + f.channels),
                                 ptr[2].eq(f.param_addr + 2 * f.channels),
                                 ptr[3].eq(f.param_addr + 2 * f.channels + used)]
                else:
                    m.d.sync += [ptr[0].eq(f.param_addr),
                                 ptr[1].eq(f.param_addr + f.channels * ncfg.thresholds)]
                with m.If(~stats):
                    m.next = "PARAM"
                with m.Else():
                    m.next = "X"
            with m.State("PARAM"):
                if bfp:
                    step_ptr = Mux(in_group, Mux(t == 0, ptr[2], ptr[3]),
                                   Mux(t == 0, ptr[0], ptr[1]))
                    need = in_group | ch_ok
                else:
                    step_ptr = Mux(t == ncfg.thresholds, ptr[1], ptr[0])
                    need = ch_ok
                m.d.comb += [self.weight.addr.eq(step_ptr), self.weight.re.eq(need)]
                with m.If(~need | self.weight.grant):
                    with m.If(need):
                        m.d.sync += [cap.eq(1), cap_group.eq(in_group), cap_b.eq(b),
                                     cap_t.eq(t)]
                        if bfp:
                            with m.If(in_group):
                                with m.If(t == 0):
                                    m.d.sync += ptr[2].eq(ptr[2] + 1)
                                with m.Else():
                                    m.d.sync += ptr[3].eq(ptr[3] + 1)
                            with m.Else():
                                with m.If(t == 0):
                                    m.d.sync += ptr[0].eq(ptr[0] + 1)
                                with m.Else():
                                    m.d.sync += ptr[1].eq(ptr[1] + 1)
                        else:
                            with m.If(t == ncfg.thresholds):
                                m.d.sync += ptr[1].eq(ptr[1] + 1)
                            with m.Else():
                                m.d.sync += ptr[0].eq(ptr[0] + 1)
                    with m.Else():
                        if bfp:
                            m.d.sync += zero_steps
                        else:
                            with m.If(t == ncfg.thresholds):
                                m.d.sync += params.flip[b].eq(0)
                            with m.Else():
                                m.d.sync += params.t[b][t].eq(0)
                    m.d.sync += t.eq(t + 1)
                    last_step = (t == 1) if bfp else (t == ncfg.thresholds)
                    with m.If(last_step):
                        m.d.sync += t.eq(0)
                        if bfp:
                            with m.If(in_group):
                                m.d.sync += in_group.eq(0)
                                m.next = "PARAM_SEND"
                            with m.Else():
                                m.d.sync += [b.eq(b + 1), ch.eq(ch + 1)]
                                with m.If(b == B - 1):
                                    m.d.sync += [b.eq(0), in_group.eq(1)]
                        else:
                            m.d.sync += [b.eq(b + 1), ch.eq(ch + 1)]
                            with m.If(b == B - 1):
                                m.d.sync += b.eq(0)
                                m.next = "PARAM_SEND"
            with m.State("PARAM_SEND"):
                # The last read lands in `params` at the end of the previous cycle at the
                # latest (`cap` is one cycle behind the grant).
                with m.If(~cap):
                    m.d.comb += [beat.op.eq(Op.LOAD),
                                 beat.group.eq(g), beat.data.params.eq(params)]
                    with m.If(unit.i_stream.ready):
                        m.d.sync += g.eq(g + 1)
                        m.next = "PARAM"
                        with m.If(g == groups_used - 1):
                            m.d.sync += [g.eq(0), ch.eq(0)]
                            m.next = "X"
            with m.State("X"):
                m.d.comb += [self.out.re.eq(ch_ok & ~writer_busy)]
                with m.If(~writer_busy):
                    m.d.comb += self.out.addr.eq(xptr)
                with m.If(~ch_ok | x_grant):
                    with m.If(ch_ok):
                        m.d.sync += [xcap.eq(1), xcap_b.eq(b), xptr.eq(xptr + 1)]
                    with m.Else():
                        m.d.sync += xs[b].eq(0)
                    m.d.sync += [b.eq(b + 1), ch.eq(ch + 1)]
                    with m.If(b == B - 1):
                        m.d.sync += b.eq(0)
                        m.next = "X_SEND"
            with m.State("X_SEND"):
                # A chunk starts where the previous one ran out (numpy.array_split sizes:
                # the first `rows % chunks` chunks take one more row).
                m.d.comb += chunk_flag.eq(chunk_left == 0)
                with m.If(~xcap):
                    m.d.comb += [beat.group.eq(g),
                                 beat.op.eq(Mux(stats, Op.STAT, Op.APPLY)),
                                 beat.first.eq(stats & (r == 0)),
                                 beat.chunk.eq(stats & chunk_flag),
                                 beat.last.eq(stats & (r == f.rows - 1))]
                    for i in range(B):
                        m.d.comb += beat.data.x[i].eq(xs[i].as_signed())
                    with m.If(unit.i_stream.ready):
                        m.d.sync += g.eq(g + 1)
                        m.next = "X"
                        with m.If(g == groups_used - 1):
                            m.d.sync += [g.eq(0), ch.eq(0), r.eq(r + 1),
                                         src_row.eq(src_row + f.src_stride),
                                         xptr.eq(src_row + f.src_stride),
                                         chunk_left.eq(chunk_left - 1)]
                            with m.If(chunk_flag):
                                m.d.sync += [
                                    chunk_index.eq(chunk_index + 1),
                                    chunk_left.eq(base + (chunk_index < extra) - 1)]
                            with m.If(r == f.rows - 1):
                                m.d.sync += issue_done.eq(1)
                                m.next = "IDLE"

        # Driven outside the FSM's states: a signal only assigned inside them starts as X in
        # Icarus (its always @* block has not run), and an X valid jams the unit's pipeline.
        m.d.comb += unit.i_stream.valid.eq((fsm.ongoing("PARAM_SEND") & ~cap)
                                           | (fsm.ongoing("X_SEND") & ~xcap))

        # Output handler -------------------------------------------------------------------
        og = Signal(range(ncfg.groups + 1))
        orow = Signal(range(cfg.out_words + 1))
        dst_row = Signal(range(wide))
        j = Signal(range(2 * B + max(ncfg.levels, isa.norm_block_words()) + 1))
        handling = Signal()
        writing = Signal()
        result = unit.o_stream.payload
        take = Signal()
        m.d.comb += unit.o_stream.ready.eq(take)

        def next_output(per_row):
            m.d.sync += [writing.eq(0), j.eq(0), og.eq(og + 1)]
            with m.If(og == groups_used - 1):
                m.d.sync += og.eq(0)
                if per_row:
                    m.d.sync += [orow.eq(orow + 1), dst_row.eq(dst_row + f.dst_stride)]
                    with m.If(orow == f.rows - 1):
                        m.d.sync += handling.eq(0)
                else:
                    m.d.sync += handling.eq(0)

        # STATISTICS: each channel's sum to dst, spread to dst + dst_stride.
        s_ch = og * B + (j >> 1)
        s_entry = Mux(j[0], result.data.stats[j >> 1].spread, result.data.stats[j >> 1].sum)
        stat_words = 2 * B

        if bfp:
            block_words = isa.norm_block_words()
            block_bits = Cat(result.data.out.as_value(),
                             Signal(block_words * W - len(result.data.out.as_value())))
            block = data.View(data.ArrayLayout(W, block_words), block_bits)
        else:
            per_word = W // B
            log_pw = per_word.bit_length() - 1
            L = ncfg.levels
            planes = [Signal(W, name=f"plane{jj}") for jj in range(L)]
            ncw = Signal(range(ncfg.channels // W + 2))
            sub = og[:log_pw] if log_pw else 0
        with m.If(handling & unit.o_stream.valid):
            with m.If(stats):
                m.d.comb += writer_busy.eq(1)
                valid = s_ch < f.channels
                m.d.comb += [self.out.addr.eq(Mux(j[0], f.dst_addr + f.dst_stride, f.dst_addr)
                                              + s_ch),
                             self.out.wdata.eq(s_entry), self.out.we.eq(valid)]
                with m.If(~valid | self.out.grant):
                    m.d.sync += j.eq(j + 1)
                    with m.If(j == stat_words - 1):
                        m.d.comb += take.eq(1)
                        next_output(per_row=False)
            with m.Else():
                if bfp:
                    m.d.comb += [self.act.addr.eq(dst_row + og * block_words + j),
                                 self.act.wdata.eq(block[j]), self.act.we.eq(1)]
                    with m.If(self.act.grant):
                        m.d.sync += j.eq(j + 1)
                        with m.If(j == block_words - 1):
                            m.d.comb += take.eq(1)
                            next_output(per_row=True)
                else:
                    # Bits of this group into the planes; flush the planes' words when a
                    # word is full or the row ends.
                    with m.If(~writing):
                        for jj in range(L):
                            bits = Cat(result.data.out[i][jj] & (og * B + i < f.channels)
                                       for i in range(B))
                            m.d.sync += planes[jj].word_select(sub, B).eq(bits)
                        with m.If((sub == per_word - 1) | (og == groups_used - 1)):
                            m.d.sync += [writing.eq(1), j.eq(0)]
                        with m.Else():
                            m.d.comb += take.eq(1)
                            m.d.sync += og.eq(og + 1)
                    with m.Else():
                        plane = Signal(W)
                        m.d.comb += plane.eq(planes[0])
                        for jj in range(1, L):
                            with m.If(j == jj):
                                m.d.comb += plane.eq(planes[jj])
                        word_index = og >> log_pw if log_pw else og
                        # One plane (sign output): no plane offset, so no multiplier in
                        # front of the buffer's address (the iCE40's longest path).
                        plane_row = dst_row + j * ncw if L > 1 else dst_row
                        m.d.comb += [self.act.addr.eq(plane_row + word_index),
                                     self.act.wdata.eq(plane), self.act.we.eq(1)]
                        with m.If(self.act.grant):
                            m.d.sync += j.eq(j + 1)
                            with m.If(j == L - 1):
                                m.d.comb += take.eq(1)
                                m.d.sync += [planes[jj].eq(0) for jj in range(L)]
                                next_output(per_row=True)
        with m.If(self.start):
            m.d.sync += [og.eq(0), orow.eq(0), dst_row.eq(self.instr.dst_addr),
                         handling.eq(1), writing.eq(0), j.eq(0)]
            if not bfp:
                m.d.sync += [planes[jj].eq(0) for jj in range(L)]
                m.d.sync += ncw.eq((self.instr.channels + W - 1) >> (W.bit_length() - 1))
        m.d.comb += self.busy.eq(~issue_done | handling)
        return m
