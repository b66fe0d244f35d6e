"""The int8 multiply-accumulate unit: lowbit's baseline for the LNS unit, with the same
lanes, throughput and stream interface (one beat of ``lanes`` pairs per cycle, ``first`` /
``last`` flags, one output beat per dot product)."""

from amaranth import Module, Mux, Signal, signed

from ..config.int8_mac import Int8MacConfig
from .stream_unit import StreamUnit
from .lns_mac import tree_sum

__all__ = ["Int8Mac"]


class Int8Mac(StreamUnit):
    """Vector int8 multiply-accumulate unit (golden model:
    :class:`lowbit.golden.int8_mac.Int8Mac`).

    Parameters
    ----------
    config : Int8MacConfig

    Attributes
    ----------
    i_stream : In(stream.Signature(config.beat_layout))
        One beat per cycle: ``lanes`` signed 8-bit pairs, ``first`` and ``last``.
    o_stream : Out(stream.Signature(config.result_layout))
        One beat per dot product.

    Pipeline: one multiplier per lane (registered 16-bit products), an adder tree
    (registered), the accumulator. Flow control is the XNOR array's: everything advances
    while the output is empty or being taken, so back-pressure holds every beat in place.
    """

    config_class = Int8MacConfig
    config_article = "an"

    @property
    def latency(self):
        """Cycles from an accepted ``last`` beat to ``o_stream.valid``."""
        return 3

    def elaborate(self, platform):
        cfg = self.config
        m = Module()
        beat = self.i_stream.payload
        advance = self.advance(m)

        def stage(value, name):
            reg = Signal.like(value, name=name)
            with m.If(advance):
                m.d.sync += reg.eq(value)
            return reg

        products = []
        for i in range(cfg.lanes):
            product = Signal(signed(16), name=f"product_{i}")
            m.d.comb += product.eq(beat.a[i] * beat.b[i])
            products.append(stage(product, f"product1_{i}"))
        ctl = {"valid": self.i_stream.valid, "first": beat.first, "last": beat.last}
        ctl = {key: stage(value, f"ctl1_{key}") for key, value in ctl.items()}
        total = stage(tree_sum(m, products, "sum"), "sum2")
        ctl = {key: stage(value, f"ctl2_{key}") for key, value in ctl.items()}

        acc = Signal(signed(cfg.accumulator_width))
        with m.If(advance & ctl["valid"]):
            m.d.sync += acc.eq(Mux(ctl["first"], 0, acc) + total)
        with m.If(advance):
            m.d.sync += self.o_stream.valid.eq(ctl["valid"] & ctl["last"])
        m.d.comb += self.o_stream.payload.dot.eq(acc)
        return m
