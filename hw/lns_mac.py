"""The LNS multiply-add unit: a vector dot-product engine in LNS-Madam's partial-sum form.

The arithmetic (pinned in :mod:`lowbit.config.lns` and :mod:`lowbit.golden.lns`) needs no
multiplier per product: a product of two LNS words is an add of their codes, and its
conversion to linear is a one-hot decode of the quotient ``q`` steered by the remainder
``r`` into one of ``gamma`` partial accumulators. The ``gamma`` constant multiplies
``acc[r] * LUT[r]`` happen once per dot product, in a sequential finaliser with one
multiplier shared by the whole unit.
"""

import functools
import operator

from amaranth import Cat, Module, Mux, Signal, signed

from ..config.lns import LNSMacConfig
from .stream_unit import StreamUnit

__all__ = ["LNSMac", "tree_sum"]


def tree_sum(m, values, name):
    """Sum ``values`` with a balanced tree of adders (combinational); return the result."""
    level = 0
    while len(values) > 1:
        paired = []
        for n in range(0, len(values) - 1, 2):
            a, b = values[n], values[n + 1]
            s = Signal(signed(max(len(a), len(b)) + 1), name=f"{name}_l{level}_{n // 2}")
            m.d.comb += s.eq(a + b)
            paired.append(s)
        if len(values) % 2:
            paired.append(values[-1])
        values, level = paired, level + 1
    return values[0]


class LNSMac(StreamUnit):
    """Vector LNS multiply-add unit with stream ports (golden model:
    :class:`lowbit.golden.lns.LNSMac`).

    Parameters
    ----------
    config : LNSMacConfig

    Attributes
    ----------
    i_stream : In(stream.Signature(config.beat_layout))
        One beat per cycle: ``lanes`` pairs of LNS words, ``first`` and ``last``, as the
        XNOR array's beats (the controller drives both units the same way).
    o_stream : Out(stream.Signature(config.result_layout))
        One beat per dot product: ``dot``, in units of ``config.result_scale()``.

    Pipeline. Stage 1 adds the codes of each lane and registers ``r``, ``k = q + shift``,
    the sign and whether the product is kept. Stage 2 decodes ``k`` into ``+-(1 << k)``
    (a one-hot, or its negation: a thermometer from bit ``k`` up), steers it to the adder
    tree of remainder ``r`` and registers the ``gamma`` lane sums. Stage 3 adds them into
    the ``gamma`` partial accumulators (or restarts them on ``first``). A ``last`` beat also
    copies the new accumulator values into the finaliser's buffer, which then shifts them
    out one per cycle through a single ``acc * LUT[r]`` multiplier into ``total``.

    Flow control. Every pipeline register advances together; the only stall is a ``last``
    beat reaching stage 3 while the finaliser still holds the previous dot product
    (``gamma + 2`` cycles after its ``last``, longer while ``o_stream`` is not taken). So
    dot products of at least ``gamma + 2`` beats stream at one beat per cycle with no
    bubble, shorter ones at one per ``gamma + 2`` cycles, and back-pressure on
    ``o_stream`` holds everything in place: nothing is lost or duplicated.
    """

    config_class = LNSMacConfig
    config_article = "an"

    @property
    def latency(self):
        """Cycles from an accepted ``last`` beat to ``o_stream.valid`` (without stalls)."""
        return 3 + self.config.gamma + 1

    def elaborate(self, platform):
        cfg = self.config
        m = Module()
        bits, g, shift, gamma = cfg.bits, cfg.g, cfg.frac_shift, cfg.gamma
        beat = self.i_stream.payload
        advance = Signal()
        buf_free = Signal()
        m.d.comb += self.i_stream.ready.eq(advance)

        def stage(value, name):
            reg = Signal.like(value, name=name)
            with m.If(advance):
                m.d.sync += reg.eq(value)
            return reg

        # Stage 1: p + 2^B = c_a + c_b + 2 (as c_max = 2^(B-1) - 1), never negative; gamma
        # divides 2^B, so r and q + 2^(B-g) are its low g bits and the bits above. The
        # product is kept iff q >= -shift, i.e. those upper bits reach 2^(B-g) - shift.
        threshold = (1 << (bits - g)) - shift
        lanes = []
        for i in range(cfg.lanes):
            a, b = beat.a[i], beat.b[i]
            u = Signal(bits + 1, name=f"u_{i}")
            m.d.comb += u.eq(a.code + b.code + 2)
            upper = u[g:]
            kept = Signal(name=f"kept0_{i}")
            k = Signal(range(shift + 1), name=f"k0_{i}")
            m.d.comb += [
                kept.eq((a.code != 0) & (b.code != 0) & (upper >= threshold)),
                k.eq(upper - threshold),
            ]
            lanes.append({
                "r": stage(u[:g], f"r1_{i}"), "k": stage(k, f"k1_{i}"),
                "neg": stage(a.sign ^ b.sign, f"neg1_{i}"), "kept": stage(kept, f"kept1_{i}"),
            })
        ctl = {"valid": self.i_stream.valid, "first": beat.first, "last": beat.last}
        ctl = {key: stage(value, f"ctl1_{key}") for key, value in ctl.items()}

        # Stage 2: each lane's signed term +-(1 << k), then one adder tree per remainder.
        patterns = []
        for i, lane in enumerate(lanes):
            pattern = Signal(signed(cfg.term_width), name=f"term_{i}")
            m.d.comb += pattern.eq(Cat(
                *[(lane["k"] == n) | (lane["neg"] & (lane["k"] < n)) for n in range(shift + 1)],
                lane["neg"]))
            patterns.append(pattern)
        sums = []
        for j in range(gamma):
            terms = []
            for i, lane in enumerate(lanes):
                term = Signal(signed(cfg.term_width), name=f"term_{i}_r{j}")
                m.d.comb += term.eq(Mux(lane["kept"] & (lane["r"] == j), patterns[i], 0))
                terms.append(term)
            sums.append(stage(tree_sum(m, terms, f"sum_r{j}"), f"sum2_r{j}"))
        ctl = {key: stage(value, f"ctl2_{key}") for key, value in ctl.items()}

        # Stage 3: the partial accumulators.
        m.d.comb += advance.eq(~(ctl["valid"] & ctl["last"] & ~buf_free))
        update = Signal()
        load = Signal()
        m.d.comb += [update.eq(advance & ctl["valid"]), load.eq(update & ctl["last"])]
        width = cfg.accumulator_width
        nxt = []
        for j in range(gamma):
            acc = Signal(signed(width), name=f"acc_r{j}")
            value = Signal(signed(width), name=f"acc_next_r{j}")
            m.d.comb += value.eq(Mux(ctl["first"], 0, acc) + sums[j])
            with m.If(update):
                m.d.sync += acc.eq(value)
            nxt.append(value)

        # Finaliser: total = bias + sum_r buf[r] * LUT[r], one product per cycle. The buffer
        # shifts toward buf[0] (a 2:1 multiplexer per bit) instead of being indexed (a
        # gamma:1 multiplexer per bit); only the small LUT constant is selected by index.
        buf = [Signal(signed(width), name=f"buf_r{j}") for j in range(gamma)]
        busy, issuing, pvalid, plast = Signal(), Signal(), Signal(), Signal()
        index = Signal(range(gamma))
        entry = Signal(cfg.lut_width)
        # An OR of gated constants rather than a Switch: Icarus never runs the `always @*`
        # a Switch becomes until its input changes, so the entry for index 0 would stay X.
        m.d.comb += entry.eq(functools.reduce(operator.or_, [
            Mux(index == j, constant, 0) for j, constant in enumerate(cfg.lut)]))
        product = Signal(signed(width + cfg.lut_width + 1))
        total = Signal(signed(cfg.total_width))
        taken = Signal()
        m.d.comb += [
            taken.eq(self.o_stream.valid & self.o_stream.ready),
            buf_free.eq(~busy | taken),
            self.o_stream.payload.dot.eq(total[cfg.output_shift:]),
        ]
        m.d.sync += pvalid.eq(0)
        with m.If(issuing):
            m.d.sync += [product.eq(buf[0] * entry), pvalid.eq(1),
                         plast.eq(index == gamma - 1), index.eq(index + 1)]
            m.d.sync += [buf[j].eq(buf[j + 1]) for j in range(gamma - 1)]
            with m.If(index == gamma - 1):
                m.d.sync += issuing.eq(0)
        with m.If(pvalid):
            m.d.sync += total.eq(total + product)
            with m.If(plast):
                m.d.sync += self.o_stream.valid.eq(1)
        with m.If(taken):
            m.d.sync += [self.o_stream.valid.eq(0), busy.eq(0)]
        with m.If(load):
            # Starting from the rounding bias makes round-to-nearest free.
            m.d.sync += [busy.eq(1), issuing.eq(1), index.eq(0), total.eq(cfg.rounding_bias)]
            m.d.sync += [buf[j].eq(nxt[j]) for j in range(gamma)]
        return m
