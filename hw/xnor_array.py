"""The XNOR-popcount array: a ``rows x cols`` output-stationary array of popcount PEs.

Why output-stationary with broadcast operands, and what each beat field means, is
documented on :class:`~lowbit.config.xnor_array.XNORArrayConfig`; the golden model of the
same name is :class:`lowbit.golden.xnor_array.XNORArray`.
"""

from amaranth import Module, Mux, Signal, signed

from ..config.xnor_array import Op, XNORArrayConfig
from .stream_unit import StreamUnit
from .popcount import popcount_primitives, popcount_tree

__all__ = ["XNORArray"]


class XNORArray(StreamUnit):
    """Output-stationary XNOR/AND-popcount array with stream ports.

    Parameters
    ----------
    config : XNORArrayConfig

    Attributes
    ----------
    i_stream : In(stream.Signature(config.beat_layout))
        One beat per cycle: a word per row, a word per column and the control fields.
    o_stream : Out(stream.Signature(config.result_layout))
        One beat per tile: every accumulator ``c[i][j]`` after a ``last`` beat.

    Flow control: the whole pipeline advances only while the output is empty or being
    taken (``i_stream.ready = ~o_stream.valid | o_stream.ready``), so a stall on either
    side holds every beat and result in place: nothing is lost or duplicated. While the
    consumer keeps up, a tile's result leaves in the cycle the next tile's beats start
    accumulating, so back-to-back tiles keep every PE busy.
    """

    config_class = XNORArrayConfig
    config_article = "an"

    @property
    def latency(self):
        """Cycles from an accepted ``last`` beat to ``o_stream.valid``."""
        return self.config.pipeline + 1

    def elaborate(self, platform):
        cfg = self.config
        m = Module()
        advance = self.advance(m)
        beat = self.i_stream.payload
        is_and = Signal()
        m.d.comb += is_and.eq((beat.op == Op.AND) if not cfg.binary_only else 0)

        # Each PE's per-bit operation, assigned to a named signal before the tree slices it
        # (slicing an unnamed ~(a ^ b) re-emits the whole expression per bit).
        # The iCE40 cell tree, when synthesising for an iCE40, folds the same operation into
        # its first LUTs (hence the operands).
        primitives = popcount_primitives(platform)
        # The logic behind the count, in adder levels, for the cell tree's register
        # placement: a bit-serial accumulator also selects among three bases and negates.
        tail = 1.0 if cfg.binary_only else 2.0
        counts, latency = {}, 0
        for i in range(cfg.rows):
            for j in range(cfg.cols):
                x = Signal(cfg.word, name=f"x_{i}_{j}")
                xnor = ~(beat.a[i] ^ beat.b[j])
                m.d.comb += x.eq(xnor if cfg.binary_only else Mux(is_and, beat.a[i] & beat.b[j],
                                                                      xnor))
                operands = ((beat.a[i], beat.b[j]) if cfg.binary_only
                            else (beat.a[i], beat.b[j], is_and))
                counts[i, j], latency = popcount_tree(
                    m, x, stages=cfg.pipeline, enable=advance, name=f"pop_{i}_{j}",
                    primitives=primitives, operands=operands, tail=tail)

        # The control fields travel beside the popcount pipeline.
        ctl = {"valid": self.i_stream.valid, "is_and": is_and, "first": beat.first,
               "last": beat.last, "dbl": beat.dbl, "neg": beat.neg,
               "offset": beat.offset}
        for stage in range(latency):
            staged = {}
            for key, value in ctl.items():
                reg = Signal(len(value), name=f"ctl_{key}_{stage}", reset_less=key != "valid")
                with m.If(advance):
                    m.d.sync += reg.eq(value)
                staged[key] = reg
            ctl = staged

        width = cfg.accumulator_width
        accumulate = advance & ctl["valid"]
        offset = ctl["offset"].as_signed()
        for (i, j), count in counts.items():
            # Accumulators need no reset: a tile's first beat loads them.
            acc = Signal(range(-(1 << (width - 1)), 1 << (width - 1)), name=f"acc_{i}_{j}",
                         reset_less=True)
            value = Mux(ctl["is_and"], count, count << 1)
            if cfg.binary_only:
                # One XNOR pass per tile: no Horner doubling, no sign plane.
                with m.If(accumulate):
                    m.d.sync += acc.eq(Mux(ctl["first"], offset, acc) + (count << 1))
            else:
                base = Mux(ctl["first"], offset, Mux(ctl["dbl"], acc << 1, acc))
                # base - value = base + ~value + 1: one adder with a carry-in.
                # Widen to signed first: ~ of an unsigned value stays unsigned (no -x-1).
                wide = Signal(signed(len(count) + 2), name=f"value_{i}_{j}")
                addend = Signal(signed(len(count) + 2), name=f"addend_{i}_{j}")
                m.d.comb += [wide.eq(value), addend.eq(Mux(ctl["neg"], ~wide, wide))]
                with m.If(accumulate):
                    m.d.sync += acc.eq(base + addend + ctl["neg"])
            m.d.comb += self.o_stream.payload[i][j].eq(acc)

        with m.If(advance):
            m.d.sync += self.o_stream.valid.eq(ctl["valid"] & ctl["last"])
        return m
