"""The accelerator's ``rows x cols`` array of XNOR-popcount PEs with Horner accumulation.

Each cycle in which ``valid`` is high the array takes a beat: a word per row (``a``), a
word per column (``b``) and three control bits. PE ``(i, j)`` counts
``pop = popcount(XNOR(a_i, b_j))`` through a pipelined popcount tree and accumulates
``acc = pop`` (``first``), ``acc = 2 * acc + pop`` (``dbl``, the first word of a lower bit
plane) or ``acc = acc + pop``. On a ``last`` beat the final sums go to the ``tile``
register in the same cycle as they are formed (``capture`` high that cycle) while the
accumulators are free for the next tile's first beat: the array never stops. The golden
model of the same name is :class:`lowbit.golden.pe_array.PEArray`.
"""

from amaranth import Module, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..config.accelerator import AcceleratorConfig
from .popcount import popcount_primitives, popcount_tree

__all__ = ["PEArray"]


class PEArray(wiring.Component):
    """XNOR-popcount PEs of one configuration.

    Parameters
    ----------
    config : AcceleratorConfig

    Attributes
    ----------
    valid, first, dbl, last : In(1)
        A beat and its control.
    a : In(ArrayLayout(word, rows)), b : In(ArrayLayout(word, cols))
        The beat's operand words.
    capture : Out(1)
        High in the cycle in which a tile's last beat is accumulated; ``tile`` holds that
        tile's sums from the next cycle until the next capture.
    tile : Out(ArrayLayout(ArrayLayout(acc_bits, cols), rows))
        The last captured tile.
    latency : int
        Cycles from a beat to its accumulation (the popcount's stages).
    """

    def __init__(self, config):
        if not isinstance(config, AcceleratorConfig):
            raise TypeError(f"config must be an AcceleratorConfig, not {config!r}")
        self.config = config
        self.latency = config.xnor_array.pipeline
        r, c, w = config.rows, config.cols, config.word
        super().__init__({
            "valid": In(1), "first": In(1), "dbl": In(1), "last": In(1),
            "a": In(data.ArrayLayout(w, r)), "b": In(data.ArrayLayout(w, c)),
            "capture": Out(1),
            "tile": Out(data.ArrayLayout(data.ArrayLayout(config.acc_bits, c), r)),
        })

    def elaborate(self, platform):
        cfg = self.config
        m = Module()
        stages = cfg.xnor_array.pipeline
        # The iCE40 cell tree when synthesising for an iCE40, else the behavioural one.
        primitives = popcount_primitives(platform)
        pops = {}
        for i in range(cfg.rows):
            for j in range(cfg.cols):
                # Named before the tree slices it (an unnamed ~(a ^ b) is re-emitted per bit).
                x = Signal(cfg.word, name=f"x_{i}_{j}")
                m.d.comb += x.eq(~(self.a[i] ^ self.b[j]))
                pops[i, j], latency = popcount_tree(
                    m, x, stages=stages, name=f"pop_{i}_{j}", primitives=primitives,
                    operands=(self.a[i], self.b[j]))
        assert latency == self.latency
        ctl = {"valid": self.valid, "first": self.first, "dbl": self.dbl, "last": self.last}
        for stage in range(latency):
            staged = {}
            for key, value in ctl.items():
                reg = Signal(name=f"ctl_{key}_{stage}", reset_less=key != "valid")
                m.d.sync += reg.eq(value)
                staged[key] = reg
            ctl = staged
        m.d.comb += self.capture.eq(ctl["valid"] & ctl["last"])
        for i in range(cfg.rows):
            for j in range(cfg.cols):
                acc = Signal(cfg.acc_bits, name=f"acc_{i}_{j}", reset_less=True)
                nxt = Signal(cfg.acc_bits, name=f"next_{i}_{j}")
                with m.If(ctl["first"]):
                    m.d.comb += nxt.eq(pops[i, j])
                with m.Elif(ctl["dbl"]):
                    m.d.comb += nxt.eq((acc << 1) + pops[i, j])
                with m.Else():
                    m.d.comb += nxt.eq(acc + pops[i, j])
                with m.If(ctl["valid"]):
                    m.d.sync += acc.eq(nxt)
                with m.If(self.capture):
                    m.d.sync += self.tile[i][j].eq(nxt)
        return m
