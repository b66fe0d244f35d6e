"""The LNS-Madam update unit: latent LNS weights updated by LNS-Madam's multiplicative rule,
one beat of ``lanes`` weights a cycle, with no multiplier (a product of magnitudes is a
sum of codes). The rule is pinned on :class:`~lowbit.config.madam.MadamUpdateConfig`; the
golden model of the same name is :class:`lowbit.golden.madam.MadamUpdate`."""

from amaranth import Const, Module, Mux, Signal, signed

from ..config.madam import MadamUpdateConfig
from .stream_unit import StreamUnit

__all__ = ["MadamUpdate"]


class MadamUpdate(StreamUnit):
    """LNS-Madam weight-update unit with stream ports.

    Parameters
    ----------
    config : MadamUpdateConfig

    Attributes
    ----------
    i_stream : In(stream.Signature(config.beat_layout))
        One beat per cycle: ``lanes`` LNS words, their gradient mantissas, the learning-rate
        exponent.
    o_stream : Out(stream.Signature(config.result_layout))
        One beat per input beat, in order: the updated words.

    Pipeline: stage 1 turns each gradient into its step (the weight's sign applied, the
    shift ``grad_bits - 1 - lr`` decoded once per beat, round to nearest even: an
    arithmetic shift, the bits shifted out compared with a half) and registers it with the
    weight; stage 2 subtracts it from the code, saturates at ``c_max`` or flips the sign on
    a zero crossing, into the output register. Everything advances together while the
    output is empty or taken, so back-pressure holds every beat in place.
    """

    config_class = MadamUpdateConfig
    config_article = "a"

    @property
    def latency(self):
        """Cycles from an accepted beat to its result on ``o_stream`` (no stalls)."""
        return 2

    def elaborate(self, platform):
        cfg = self.config
        m = Module()
        advance = self.advance(m)
        beat = self.i_stream.payload
        gb, top = cfg.grad_bits, cfg.max_lr_exponent

        # The beat's shift: right by r = gb - 1 - lr when lr < gb, else left by lr - gb + 1.
        lr = Signal(range(top + 1))
        m.d.comb += lr.eq(Mux(beat.lr_exponent > top, top, beat.lr_exponent))
        right = Signal(range(gb))
        left_max = max(0, top - (gb - 1))
        m.d.comb += right.eq(Mux(lr >= gb - 1, 0, (gb - 1) - lr))
        if left_max:
            left = Signal(range(left_max + 1))
            m.d.comb += left.eq(Mux(lr > gb - 1, lr - (gb - 1), 0))
        mask = Signal(gb)  # 2^r - 1: the bits shifted out
        half = Signal(gb)  # 2^(r-1), 0 for r = 0
        m.d.comb += [mask.eq((Const(1, gb + 1) << right) - 1), half.eq((mask + 1) >> 1)]

        valid1 = Signal()
        steps1 = [Signal(signed(cfg.step_bits), name=f"step1_{i}") for i in range(cfg.lanes)]
        codes1 = [Signal(range(1, cfg.c_max + 1), name=f"code1_{i}") for i in range(cfg.lanes)]
        signs1 = [Signal(name=f"sign1_{i}") for i in range(cfg.lanes)]
        with m.If(advance):
            m.d.sync += valid1.eq(self.i_stream.valid)
        for i in range(cfg.lanes):
            w, g = beat.w[i], beat.grad[i]
            d = Signal(signed(gb + 1), name=f"d_{i}")  # a negative weight's step is -grad's
            m.d.comb += d.eq(Mux(w.sign, -g, g))
            q = Signal(signed(gb + 1), name=f"q_{i}")
            rem = Signal(gb, name=f"rem_{i}")
            up = Signal(name=f"up_{i}")
            m.d.comb += [
                q.eq(d >> right),
                rem.eq(d.as_unsigned() & mask),
                up.eq((right != 0) & ((rem > half) | ((rem == half) & q[0]))),
            ]
            step = q + up
            if left_max:
                step = Mux(left != 0, d << left, step)
            with m.If(advance):
                m.d.sync += [
                    steps1[i].eq(step),
                    # A zero code updates as code 1 of sign 0 (its step keeps the sign's).
                    codes1[i].eq(Mux(w.code == 0, 1, w.code)),
                    signs1[i].eq(Mux(w.code == 0, 0, w.sign)),
                ]

        out = self.o_stream.payload
        with m.If(advance):
            m.d.sync += self.o_stream.valid.eq(valid1)
        for i in range(cfg.lanes):
            t = Signal(signed(max(cfg.code_bits + 1, cfg.step_bits) + 1), name=f"t_{i}")
            cross = Signal(name=f"cross_{i}")
            m.d.comb += [t.eq(codes1[i] - steps1[i]), cross.eq(t < 1)]
            with m.If(advance):
                m.d.sync += [
                    out.w[i].code.eq(Mux(cross, 1, Mux(t > cfg.c_max, cfg.c_max, t))),
                    out.w[i].sign.eq(Mux(cross, ~signs1[i], signs1[i])),
                ]
        return m
