"""LightNorm-style batch-norm unit: range batch-norm statistics, BFP affine normalisation and
fused threshold outputs, with no divider or square root (docs/arithmetic.md, sections 2 and 3).

What each beat does is documented on :class:`~lowbit.config.lightnorm.LightNormConfig`; the
golden model of the same name is :class:`lowbit.golden.lightnorm.LightNorm`, and the pinned
BFP arithmetic is :func:`lowbit.golden.bfp.affine`.
"""

from amaranth import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data
from amaranth.lib.memory import Memory

from ..config.lightnorm import LightNormConfig, Op
from .stream_unit import StreamUnit

__all__ = ["LightNorm"]


def _leading_one(m, value, name):
    """Position of the highest set bit of ``value`` (0 when ``value`` is 0), as a tree of
    ``log2(width)`` mux levels: the upper half decides when it holds a one."""

    def tree(v):
        if len(v) == 1:
            return v[0], None
        half = 1 << ((len(v) - 1).bit_length() - 1)
        lo_any, lo_pos = tree(v[:half])
        hi_any, hi_pos = tree(v[half:])
        bits = (half - 1).bit_length()
        lo_pos = Const(0, bits) if lo_pos is None else lo_pos
        hi_pos = Const(0, bits) if hi_pos is None else hi_pos
        pos = Signal(bits + 1)
        m.d.comb += pos.eq(Cat(Mux(hi_any, hi_pos, lo_pos), hi_any))
        return lo_any | hi_any, pos

    lead = Signal(range(max(len(value), 2)), name=name)
    _, pos = tree(value)
    if pos is not None:
        m.d.comb += lead.eq(pos)
    return lead


def _abs(m, value, name):
    # |v| of a w-bit signed value fits w unsigned bits (|-2^(w-1)| = 2^(w-1)).
    mag = Signal(len(value), name=name)
    m.d.comb += mag.eq(Mux(value < 0, -value, value))
    return mag


class _Shifter:
    """``value / 2^shift`` rounded as :func:`lowbit.golden.bfp.round_shift` does, for every
    lane of a block: the shift amount is the block's, so its decoding is built once here
    and each lane (:meth:`apply`) costs one adder, one bit select and one barrel shifter.

    ``shift`` is a signed signal known to lie in ``[lo, hi]``; negative shifts are exact
    left shifts. Right shifts are clamped to the lanes' width ``w``: shifting by ``w`` or
    more gives the same rounded result (0, or -1 for ``floor`` of a negative value).
    Rounding adds a bias before an arithmetic shift: ``2^(r-1) - 1 + bit_r(v)`` rounds to
    nearest, ties to even; ``2^r - 1`` for negative ``v`` truncates toward zero.
    """

    def __init__(self, m, shift, lo, hi, width, rounding, name):
        self.width, self.rounding, self.name = width, rounding, name
        self.right_max = right_max = max(0, min(hi, width))
        self.left_max = left_max = max(0, -lo)
        self.rr = Signal(range(right_max + 1), name=f"{name}_rr")
        m.d.comb += self.rr.eq(Mux(shift <= 0, 0, Mux(shift >= right_max, right_max, shift)))
        self.left = Signal(name=f"{name}_left")
        m.d.comb += self.left.eq(shift < 0)
        if left_max:
            self.ls = Signal(range(left_max + 1), name=f"{name}_ls")
            m.d.comb += self.ls.eq(Mux(shift < 0, Mux(shift <= -left_max, left_max, -shift),
                                       0))
        if rounding != "floor" and right_max:
            self.nonzero = Signal(name=f"{name}_nz")
            self.half = Signal(width + 1, name=f"{name}_half")  # 2^(r-1) - 1, or 0
            self.mask = Signal(width + 1, name=f"{name}_mask")  # 2^r - 1
            m.d.comb += [
                self.nonzero.eq(self.rr != 0),
                self.mask.eq((Const(1, 1) << self.rr) - 1),
                self.half.eq(self.mask >> 1),
            ]

    def apply(self, m, value, name):
        """The rounded, shifted ``value`` (a ``width``-bit signed value) as a signal."""
        w = self.width
        ext = Signal(signed(w + 1), name=f"{name}_ext")
        m.d.comb += ext.eq(value)
        biased = Signal(signed(w + 2), name=f"{name}_biased")
        if self.rounding == "floor" or not self.right_max:
            m.d.comb += biased.eq(ext)
        elif self.rounding == "truncate":
            m.d.comb += biased.eq(ext + Mux(ext < 0, self.mask, 0))
        else:
            bit = Signal(name=f"{name}_bit")
            m.d.comb += [bit.eq(self.nonzero & ext.bit_select(self.rr, 1)),
                         biased.eq(ext + self.half + bit)]
        out = Signal(signed(w + 2 + self.left_max), name=name)
        shifted = biased >> self.rr
        if self.left_max:
            m.d.comb += out.eq(Mux(self.left, ext << self.ls, shifted))
        else:
            m.d.comb += out.eq(shifted)
        return out


def _clip(m, value, lo, hi, width, name):
    out = Signal(signed(width), name=name)
    m.d.comb += out.eq(Mux(value > hi, hi, Mux(value < lo, lo, value)))
    return out


class LightNorm(StreamUnit):
    """LightNorm-style batch-norm unit with stream ports.

    Parameters
    ----------
    config : LightNormConfig

    Raises
    ------
    TypeError
        If ``config`` is not a :class:`LightNormConfig`.

    Attributes
    ----------
    i_stream : In(stream.Signature(config.beat_layout))
        One beat per cycle: ``LOAD`` a group's parameters, ``STAT`` or ``APPLY`` one block.
    o_stream : Out(stream.Signature(config.result_layout))
        One beat per ``APPLY`` and per ``STAT`` beat with ``last`` set, in input order.

    Pipeline: the beat and its group's parameters (a synchronous memory read) are
    registered; ``bfp`` mode then finds the block exponent (leading-one detection of the OR
    of ``|x_i|``, a tree), quantises the block (one rounding shifter per lane), multiplies
    by the scale mantissas and adds the aligned offset in a ``mantissa + 3 + guard_bits``
    accumulator, finds the output exponent (leading-one detection again) and rounds the
    sums to the output block: six register stages, one per step, because each step is a
    deep chain of LUTs on an iCE40. Threshold modes compare ``x`` with every threshold of its
    channel and count: two register stages. Statistics live in a memory word per group (block
    RAM): read a stage before the last, updated and written back in the last, so back-to-back
    beats of one group are exact (the read port is transparent to the write); a one-group
    unit keeps them in a register.

    Flow control is one global ``advance = ~o_stream.valid | o_stream.ready``: every stage,
    the memory read and the statistics registers move only together, so stalls on either
    side never lose or duplicate a beat.
    """

    config_class = LightNormConfig
    config_article = "a"

    @staticmethod
    def latency_for(config):
        """Cycles from an accepted beat to its result on ``o_stream`` (no stalls)."""
        return 6 if config.output == "bfp" else 2

    @property
    def latency(self):
        """:meth:`latency_for` this unit's configuration."""
        return self.latency_for(self.config)

    def elaborate(self, platform):
        cfg = self.config
        m = Module()
        advance = self.advance(m)
        beat = self.i_stream.payload

        # Parameters: one memory word per channel group, written by LOAD beats and read
        # in step with the pipeline (the read port holds its data while stalled).
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

        ctl_layout = data.StructLayout({
            "valid": 1, "op": Op, "group": range(cfg.groups), "first": 1, "chunk": 1,
            "last": 1})
        x_layout = data.ArrayLayout(signed(cfg.input_width), cfg.block)

        def stage(ctl, name):
            reg = Signal(ctl_layout, name=f"{name}_ctl")
            with m.If(advance):
                m.d.sync += reg.eq(ctl)
            return reg

        ctl0 = Signal(ctl_layout)
        m.d.comb += [
            ctl0.valid.eq(self.i_stream.valid), ctl0.op.eq(beat.op), ctl0.group.eq(beat.group),
            ctl0.first.eq(beat.first), ctl0.chunk.eq(beat.chunk), ctl0.last.eq(beat.last),
        ]
        ctl1 = stage(ctl0, "s1")
        x1 = Signal(x_layout, name="s1_x")
        with m.If(advance):
            m.d.sync += x1.eq(beat.data.x)
        params = rport.data

        if cfg.output == "bfp":
            ctl_pre, ctl_fin, x_fin, result = self._bfp_path(m, advance, ctl1, x1, params,
                                                             x_layout, stage)
        else:
            ctl_pre, ctl_fin, x_fin = ctl0, ctl1, x1
            result = self._threshold_path(m, x1, params)

        if cfg.statistics:
            stats = self._statistics(m, advance, ctl_pre, ctl_fin, x_fin)
        else:
            stats = Signal(cfg.stats_layout, name="stats")  # not built: zeros

        out = self.o_stream.payload
        with m.If(advance):
            m.d.sync += [
                self.o_stream.valid.eq(ctl_fin.valid & (
                    (ctl_fin.op == Op.APPLY) | ((ctl_fin.op == Op.STAT) & ctl_fin.last))),
                out.op.eq(ctl_fin.op),
                out.group.eq(ctl_fin.group),
            ]
            with m.If(ctl_fin.op == Op.STAT):
                m.d.sync += out.data.stats.eq(stats)
            with m.Else():
                m.d.sync += out.data.out.eq(result)
        return m

    # Fused threshold outputs ---------------------------------------------------------------

    def _threshold_path(self, m, x, params):
        cfg = self.config
        result = Signal(cfg.output_layout, name="counts")
        for i in range(cfg.block):
            passed = []
            for j in range(cfg.thresholds):
                t = params.t[i][j]
                passed.append(Mux(params.flip[i], x[i] <= t, x[i] >= t))
            m.d.comb += result[i].eq(sum(passed))
        return result

    # BFP affine ----------------------------------------------------------------------------

    def _bfp_path(self, m, advance, ctl1, x1, params, x_layout, stage):
        cfg = self.config
        mw, g, width = cfg.mantissa, cfg.guard_bits, cfg.acc_width
        emin, emax = cfg.emin, cfg.emax
        mmin, mmax = -(1 << (mw - 1)), (1 << (mw - 1)) - 1
        ewide = signed(cfg.exponent + 8)  # room for exponent sums and offsets

        def register(value, name):
            reg = Signal.like(value, name=name)
            with m.If(advance):
                m.d.sync += reg.eq(value)
            return reg

        # Stage A: the input block's exponent (leading one of OR_i |x_i|), registered with
        # x and the parameters (STAT beats only use x).
        mags = [_abs(m, x1[i], f"mag_{i}") for i in range(cfg.block)]
        anyone = Signal(cfg.input_width, name="x_or")
        m.d.comb += anyone.eq(_or_all(mags))
        lead = _leading_one(m, anyone, "x_lead")
        ex = Signal(signed(cfg.exponent), name="x_exp")
        m.d.comb += ex.eq(Mux(anyone == 0, emin, Mux(lead > emax, emax, lead)))
        shift = Signal(ewide, name="x_shift")
        # An all-zero block shifts by 0 (its mantissas are 0 whatever the shift).
        m.d.comb += shift.eq(Mux(anyone == 0, 0, ex - (mw - 2)))
        ctla = stage(ctl1, "sa")
        xa = register(x1, "sa_x")
        exa = register(ex, "sa_exp")
        shifta = register(shift, "sa_shift")
        pa = register(params, "sa_params")

        # Stage B: quantise x (one rounding shifter per lane); the affine's exponents.
        top = min(cfg.input_width - 1, emax)
        xq = _Shifter(m, shifta, -(mw - 2), top - (mw - 2), cfg.input_width, cfg.rounding,
                      "xq")
        mx = [_clip(m, xq.apply(m, xa[i], f"xq_{i}"), mmin, mmax, mw, f"mx_{i}")
              for i in range(cfg.block)]
        ep = Signal(ewide, name="prod_exp")
        top_exp = Signal(ewide, name="top_exp")
        sp = Signal(ewide, name="prod_shift")
        so = Signal(ewide, name="offset_shift")
        m.d.comb += [
            ep.eq(exa + pa.scale_exp),
            top_exp.eq(Mux(ep > pa.offset_exp, ep, pa.offset_exp)),
            sp.eq(top_exp - ep - (g + 3 - mw)),
            so.eq(top_exp - pa.offset_exp - (g + 1)),
        ]
        q_layout = data.StructLayout({
            "mx": data.ArrayLayout(signed(mw), cfg.block),
            "scale": data.ArrayLayout(signed(mw), cfg.block),
            "offset": data.ArrayLayout(signed(mw), cfg.block),
            "top": ewide, "sp": ewide, "so": ewide})
        ctl2 = stage(ctla, "s2")
        s2 = Signal(data.UnionLayout({"x": x_layout, "q": q_layout}), name="s2")
        with m.If(advance):
            with m.If(ctla.op == Op.STAT):
                m.d.sync += s2.x.eq(xa)
            with m.Else():
                m.d.sync += [s2.q.top.eq(top_exp), s2.q.sp.eq(sp), s2.q.so.eq(so),
                             s2.q.scale.eq(pa.scale), s2.q.offset.eq(pa.offset)]
                m.d.sync += [s2.q.mx[i].eq(mx[i]) for i in range(cfg.block)]

        # Stage C: multiply, align both terms to the accumulator (floor), add.
        gap_p = emax - 2 * emin  # largest possible T - Ep
        gap_o = 2 * emax - emin  # largest possible T - Eo
        q = s2.q
        tp_shift = _Shifter(m, q.sp, -(g + 3 - mw), gap_p - (g + 3 - mw), 2 * mw, "floor",
                            "tp")
        to_shift = _Shifter(m, q.so, -(g + 1), gap_o - (g + 1), mw, "floor", "to")
        sums = []
        for i in range(cfg.block):
            prod = Signal(signed(2 * mw), name=f"prod_{i}")
            m.d.comb += prod.eq(q.mx[i] * q.scale[i])
            total = Signal(signed(width), name=f"acc_{i}")
            m.d.comb += total.eq(tp_shift.apply(m, prod, f"tp_{i}")
                                 + to_shift.apply(m, q.offset[i], f"to_{i}"))
            sums.append(total)
        # Also in stage C, from the top exponent alone: the accumulator's LSB exponent and the
        # limits that the output exponent's clamps put on the leading-one position, so stage
        # D only compares a small position with registered bounds (no chained carry chains).
        lead_bits = signed(width.bit_length() + 1)
        shift_bits = signed((2 * width).bit_length() + 1)
        lsb = Signal(ewide, name="acc_lsb")
        hi_c = Signal(ewide, name="lead_hi_raw")
        lo_c = Signal(ewide, name="lead_lo_raw")
        m.d.comb += [lsb.eq(q.top + (1 - mw - g)), hi_c.eq(emax - lsb), lo_c.eq(emin - lsb)]

        def bounded(value, lo, hi):
            return Mux(value > hi, hi, Mux(value < lo, lo, value))

        a_layout = data.StructLayout({
            "s": data.ArrayLayout(signed(width), cfg.block), "lsb": ewide,
            # Position bounds, clamped to [-1, width]: comparisons with a position in
            # [0, width - 1] come out the same.
            "hi": lead_bits, "lo": lead_bits,
            # The output shifts when the exponent clamps high / low.
            "ry_hi": shift_bits, "ry_lo": shift_bits})
        ctl3 = stage(ctl2, "s3")
        s3 = Signal(data.UnionLayout({"x": x_layout, "a": a_layout}), name="s3")
        with m.If(advance):
            with m.If(ctl2.op == Op.STAT):
                m.d.sync += s3.x.eq(s2.x)
            with m.Else():
                m.d.sync += [
                    s3.a.lsb.eq(lsb),
                    s3.a.hi.eq(bounded(hi_c, -1, width)),
                    s3.a.lo.eq(bounded(lo_c, -1, width)),
                    s3.a.ry_hi.eq(bounded(hi_c - (mw - 2), -mw, width)),
                    s3.a.ry_lo.eq(bounded(lo_c - (mw - 2), -mw, width)),
                ]
                m.d.sync += [s3.a.s[i].eq(sums[i]) for i in range(cfg.block)]

        # Stage D: the output block's exponent (leading one of OR_i |S_i|, clamped) and the
        # rounding shift ``Ey - L - (m - 2)``, bounded where larger shifts give the same
        # result (right shifts of A or more round like infinite ones, left shifts of m or
        # more always clip).
        a = s3.a
        smags = [_abs(m, a.s[i], f"smag_{i}") for i in range(cfg.block)]
        s_or = Signal(width, name="s_or")
        m.d.comb += s_or.eq(_or_all(smags))
        s_lead = _leading_one(m, s_or, "s_lead")
        high = Signal(name="y_exp_high")
        low = Signal(name="y_exp_low")
        m.d.comb += [high.eq(s_lead > a.hi), low.eq(s_lead < a.lo)]
        ey = Signal(signed(cfg.exponent), name="y_exp")
        ry = Signal(shift_bits, name="y_shift")
        m.d.comb += [
            ey.eq(Mux(s_or == 0, emin, Mux(high, emax, Mux(low, emin, s_lead + a.lsb)))),
            ry.eq(Mux(high, a.ry_hi, Mux(low, a.ry_lo, s_lead - (mw - 2)))),
        ]
        n_layout = data.StructLayout({
            "s": data.ArrayLayout(signed(width), cfg.block), "exp": signed(cfg.exponent),
            "shift": shift_bits})
        ctl4 = stage(ctl3, "s4")
        s4 = Signal(data.UnionLayout({"x": x_layout, "n": n_layout}), name="s4")
        with m.If(advance):
            with m.If(ctl3.op == Op.STAT):
                m.d.sync += s4.x.eq(s3.x)
            with m.Else():
                m.d.sync += [s4.n.s.eq(a.s), s4.n.exp.eq(ey), s4.n.shift.eq(ry)]

        # Stage E: round the sums to the output block's mantissas.
        result = Signal(cfg.output_layout, name="y")
        m.d.comb += result.exp.eq(s4.n.exp)
        ys = _Shifter(m, s4.n.shift, -mw, width, width, cfg.rounding, "ys")
        for i in range(cfg.block):
            shifted = ys.apply(m, s4.n.s[i], f"ys_{i}")
            m.d.comb += result.man[i].eq(_clip(m, shifted, mmin, mmax, mw, f"my_{i}"))
        return ctl3, ctl4, s4.x, result

    # Range batch-norm statistics ----------------------------------------------------------

    def _statistics(self, m, advance, ctl_pre, ctl, x):
        """Per channel: sum, current chunk max/min, sums of finished chunks' max/min, one
        memory word per group read a stage ahead (``ctl_pre``'s group) and written back by
        the beat in ``ctl``. Returns the ``stats_layout`` value of the beat in ``ctl``
        (valid on ``last``)."""
        cfg = self.config
        ext = cfg.extreme_bits
        stats = Signal(cfg.stats_layout, name="stats")
        update = advance & ctl.valid & (ctl.op == Op.STAT)
        new_chunk = ctl.first | ctl.chunk
        nxt = Signal(cfg.running_stats_layout, name="st_next")
        if cfg.groups == 1:
            # One group: a register is the whole memory (a one-word RAM would add the
            # transparency's bypass register and multiplexer, about 10% of the unit).
            held = Signal(cfg.running_stats_layout, name="st_held")
            with m.If(update):
                m.d.sync += held.eq(nxt)
            cur_stats = held
        else:
            # Block RAM, not flip-flops: 80-100 bits a channel would be about 84,000
            # flip-flops at 1,024 channels, more than an ECP5-85F has. The read is issued
            # with the beat one stage before the update, so it sees every earlier beat's
            # write: the one a cycle ahead through the port's transparency (a write and a
            # read of one group in the same cycle return the written word), older ones from
            # the memory. Stalls stop both ports together.
            m.submodules.stats = mem = Memory(shape=cfg.running_stats_layout,
                                              depth=cfg.groups, init=[])
            wport = mem.write_port()
            rport = mem.read_port(domain="sync", transparent_for=(wport,))
            m.d.comb += [
                rport.addr.eq(ctl_pre.group), rport.en.eq(advance),
                wport.addr.eq(ctl.group), wport.data.eq(nxt), wport.en.eq(update),
            ]
            cur_stats = rport.data
        for i in range(cfg.block):
            cur, new, xi = cur_stats[i], nxt[i], x[i]
            m.d.comb += [
                new.sum.eq(Mux(ctl.first, 0, cur.sum) + xi),
                new.smax.eq(Mux(ctl.first, 0, Mux(ctl.chunk, cur.smax + cur.cmax, cur.smax))),
                new.smin.eq(Mux(ctl.first, 0, Mux(ctl.chunk, cur.smin + cur.cmin, cur.smin))),
                new.cmax.eq(Mux(new_chunk | (xi > cur.cmax), xi, cur.cmax)),
                new.cmin.eq(Mux(new_chunk | (xi < cur.cmin), xi, cur.cmin)),
            ]
            hi = Signal(signed(ext), name=f"st_hi_{i}")
            lo = Signal(signed(ext), name=f"st_lo_{i}")
            m.d.comb += [
                hi.eq(new.smax + new.cmax),
                lo.eq(new.smin + new.cmin),
                stats[i].sum.eq(new.sum),
                stats[i].spread.eq(hi - lo),
            ]
        return stats


def _or_all(values):
    out = values[0]
    for v in values[1:]:
        out = out | v
    return out
