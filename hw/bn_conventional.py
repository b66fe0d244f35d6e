"""Conventional batch-norm unit: fixed point, true variance and an integer square root. The
baseline LightNorm is measured against (same stream interface, channels per beat and
throughput); its golden model is :class:`lowbit.golden.bn_conventional.BNConventional`."""

from amaranth import Array, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data
from amaranth.lib.memory import Memory

from ..config.bn_conventional import BNConventionalConfig, Op
from .stream_unit import StreamUnit

__all__ = ["BNConventional"]


class BNConventional(StreamUnit):
    """Fixed-point batch norm with sum / sum-of-squares statistics and a square root.

    Parameters
    ----------
    config : BNConventionalConfig

    Raises
    ------
    TypeError
        If ``config`` is not a :class:`BNConventionalConfig`.

    Attributes
    ----------
    i_stream : In(stream.Signature(config.beat_layout))
    o_stream : Out(stream.Signature(config.result_layout))

    One multiplier per lane is shared: ``x * x`` for ``STAT`` beats, ``a * x`` for ``APPLY``
    beats. On a ``STAT`` beat with ``last`` every lane computes ``mu``, the variance (one more
    ``mu * mu`` multiplier) and runs a restoring square root, one result bit per cycle; the
    pipeline stalls for those ``input_width`` cycles. Flow control as in LightNorm:
    ``advance = (~o_stream.valid | o_stream.ready) & ~busy``.
    """

    config_class = BNConventionalConfig
    config_article = "a"

    def elaborate(self, platform):
        cfg = self.config
        m = Module()
        w = cfg.input_width
        busy = Signal()
        advance = self.advance(m, hold=busy)
        beat = self.i_stream.payload

        m.submodules.params = mem = Memory(shape=cfg.param_layout, depth=cfg.groups, init=[])
        wport = mem.write_port()
        rport = mem.read_port(domain="sync")
        m.d.comb += [
            wport.addr.eq(beat.group),
            wport.data.eq(beat.data.params),
            wport.en.eq(self.i_stream.valid & advance & (beat.op == Op.LOAD)),
            rport.addr.eq(beat.group),
            rport.en.eq(advance),
        ]

        ctl_layout = data.StructLayout({"valid": 1, "op": Op, "group": range(cfg.groups),
                                        "first": 1, "last": 1})
        x_layout = data.ArrayLayout(signed(w), cfg.block)
        ctl1 = Signal(ctl_layout, name="s1_ctl")
        x1 = Signal(x_layout, name="s1_x")
        with m.If(advance):
            m.d.sync += [
                ctl1.valid.eq(self.i_stream.valid), ctl1.op.eq(beat.op),
                ctl1.group.eq(beat.group), ctl1.first.eq(beat.first),
                ctl1.last.eq(beat.last), x1.eq(beat.data.x),
            ]

        # Stage 1 -> 2: the shared multiplier.
        ctl2 = Signal(ctl_layout, name="s2_ctl")
        x2 = Signal(x_layout, name="s2_x")
        c2 = Signal(data.ArrayLayout(signed(cfg.acc_bits), cfg.block), name="s2_c")
        prod2 = Signal(data.ArrayLayout(signed(cfg.product_bits), cfg.block), name="s2_prod")
        with m.If(advance):
            m.d.sync += [ctl2.eq(ctl1), x2.eq(x1), c2.eq(rport.data.c)]
            for i in range(cfg.block):
                coef = Mux(ctl1.op == Op.STAT, x1[i], rport.data.a[i])
                m.d.sync += prod2[i].eq(coef * x1[i])

        # Stage 2 -> output: affine + rounding, or statistics.
        out = self.o_stream.payload
        is_stat = ctl2.op == Op.STAT
        update = advance & ctl2.valid & is_stat
        finish = update & ctl2.last
        half = (1 << cfg.frac_bits) >> 1
        lo, hi = -(1 << (cfg.output_width - 1)), (1 << (cfg.output_width - 1)) - 1
        ys = Signal(data.ArrayLayout(signed(cfg.output_width), cfg.block), name="y")
        # The square root's state, per lane.
        count = Signal(range(w + 1), name="sqrt_count")
        pending_group = Signal(range(cfg.groups), name="sqrt_group")
        for i in range(cfg.block):
            acc = Signal(signed(cfg.acc_bits + 1), name=f"acc_{i}")
            shifted = Signal(signed(cfg.acc_bits + 1), name=f"acc_shifted_{i}")
            m.d.comb += [acc.eq(prod2[i] + c2[i] + half), shifted.eq(acc >> cfg.frac_bits),
                         ys[i].eq(Mux(shifted > hi, hi, Mux(shifted < lo, lo, shifted)))]

            sums = [Signal(signed(cfg.sum_bits), name=f"sum_{g}_{i}")
                    for g in range(cfg.groups)]
            sqs = [Signal(unsigned(cfg.sumsq_bits), name=f"sumsq_{g}_{i}")
                   for g in range(cfg.groups)]
            cur_sum = Array(sums)[ctl2.group] if cfg.groups > 1 else sums[0]
            cur_sq = Array(sqs)[ctl2.group] if cfg.groups > 1 else sqs[0]
            nsum = Signal(signed(cfg.sum_bits), name=f"sum_next_{i}")
            nsq = Signal(unsigned(cfg.sumsq_bits), name=f"sumsq_next_{i}")
            m.d.comb += [nsum.eq(Mux(ctl2.first, 0, cur_sum) + x2[i]),
                         nsq.eq(Mux(ctl2.first, 0, cur_sq) + prod2[i].as_unsigned())]
            for g in range(cfg.groups):
                with m.If(update & ((ctl2.group == g) if cfg.groups > 1 else 1)):
                    m.d.sync += [sums[g].eq(nsum), sqs[g].eq(nsq)]

            mu = Signal(signed(w), name=f"mu_{i}")
            var = Signal(signed(2 * w + cfg.batch_log2 + 1), name=f"var_{i}")
            m.d.comb += [mu.eq(nsum >> cfg.batch_log2),
                         var.eq((nsq >> cfg.batch_log2) - mu * mu)]
            # Restoring square root: two radicand bits per cycle, one root bit.
            rad = Signal(2 * w, name=f"sqrt_rad_{i}")
            rem = Signal(w + 2, name=f"sqrt_rem_{i}")
            root = Signal(w, name=f"sqrt_root_{i}")
            keep_mu = Signal(signed(w), name=f"stat_mu_{i}")
            keep_var = Signal(cfg.var_bits, name=f"stat_var_{i}")
            trial = Signal(w + 2, name=f"sqrt_trial_{i}")
            shifted_rem = Signal(w + 3, name=f"sqrt_srem_{i}")
            m.d.comb += [shifted_rem.eq((rem << 2) | rad[-2:]), trial.eq((root << 2) | 1)]
            with m.If(finish):
                clamped = Mux(var < 0, 0, var)
                m.d.sync += [rad.eq(clamped), rem.eq(0), root.eq(0), keep_mu.eq(mu),
                             keep_var.eq(clamped)]
            with m.If(busy):
                m.d.sync += rad.eq(rad << 2)
                with m.If(shifted_rem >= trial):
                    m.d.sync += [rem.eq(shifted_rem - trial), root.eq((root << 1) | 1)]
                with m.Else():
                    m.d.sync += [rem.eq(shifted_rem), root.eq(root << 1)]
            with m.If(busy & (count == w - 1)):
                last_bit = shifted_rem >= trial
                m.d.sync += [out.data.stats[i].mu.eq(keep_mu),
                             out.data.stats[i].var.eq(keep_var),
                             out.data.stats[i].sigma.eq((root << 1) | last_bit)]

        with m.If(finish):
            m.d.sync += [busy.eq(1), count.eq(0), pending_group.eq(ctl2.group)]
        with m.If(busy):
            m.d.sync += count.eq(count + 1)
            with m.If(count == w - 1):
                m.d.sync += [busy.eq(0), self.o_stream.valid.eq(1), out.op.eq(Op.STAT),
                             out.group.eq(pending_group)]
        with m.If(advance):
            m.d.sync += [
                self.o_stream.valid.eq(ctl2.valid & (ctl2.op == Op.APPLY)),
                out.op.eq(ctl2.op),
                out.group.eq(ctl2.group),
                out.data.out.eq(ys),
            ]
        return m
