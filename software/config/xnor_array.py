"""Configuration of the XNOR-popcount systolic array, shared by gateware, golden model,
compiler and energy model.

The array computes a ``rows x cols`` tile of ``C = A x B^T`` where row ``i`` of ``A`` and row
``j`` of ``B`` are streamed ``word`` bits per cycle. Each processing element (PE) ``(i, j)``
counts ``popcount(op(a_i, b_j))`` with ``op`` XNOR (both operands +-1) or AND (bit planes of
multi-bit operands) and accumulates it in place.

Dataflow: **output-stationary with broadcast operands**. On an iCE40 a flip-flop only
registers its own LUT's output, so every operand bit held inside a PE costs a whole logic
cell: a weight-stationary array (weights held in PEs) or a classic systolic pass-through of
operands would cost about one extra cell per binary MAC, as much as the popcount itself.
Broadcasting row words along rows and column words along columns holds no operand bit in a
PE: operands come straight from the producer's registers (block RAM outputs in the
accelerator), and only the accumulators stay in the PEs. The accumulators also make
bit-serial multi-bit layers cheap: each bit-plane pass adds into the same accumulator
(Horner's scheme: one doubling between plane groups, docs/arithmetic.md, section 1.4).
"""

import dataclasses
import enum

from amaranth import signed
from amaranth.lib import data
from amaranth.lib import enum as hdl_enum

from .base import ConfigMixin, check_enum, check_int

__all__ = ["Dataflow", "Op", "XNORArrayConfig"]


class Dataflow(enum.Enum):
    """How operands and results move through the array."""

    OUTPUT_STATIONARY = "output-stationary"


class Op(hdl_enum.Enum, shape=1):
    """Per-bit operation of a beat: XNOR for +-1 operands, AND for bit planes."""

    XNOR = 0
    AND = 1


def _plane_coefficient_sum(bits):
    # Sum of |coefficient| over the bit planes of the widest operand of `bits` bits:
    # unsigned/signed k bits -> 2^k - 1; a +-1 operand in AND mode uses planes (b: +2, ones: -1).
    return (1 << max(bits, 2)) - 1


@dataclasses.dataclass(frozen=True)
class XNORArrayConfig(ConfigMixin):
    """Parameters of an :class:`~lowbit.hw.xnor_array.XNORArray` and its golden model.

    Parameters
    ----------
    rows, cols : int
        Array shape: ``rows`` output rows (operand ``a``) by ``cols`` output columns
        (operand ``b``). At least 1 each.
    word : int
        Bits each PE reduces per cycle (1..4096).
    max_k : int
        Longest reduction (elements) the accumulators must hold without overflow.
    max_act_bits, max_weight_bits : int
        Widest bit-serial operands (1..8). With both equal to 1 the array is binary only:
        it runs single XNOR passes and ignores the beats' ``op``, ``dbl`` and ``neg``;
        its PEs compute XNOR alone (no AND path, no Horner step: fewer cells).
    acc_width : int or None
        Accumulator width in bits. ``None`` derives the narrowest safe width; a narrower
        explicit choice raises ``ValueError``.
    pipeline : int
        Register stages in the popcount (0..3): after the sums of 8-bit groups, after the
        sums of 8 of those, then after the total (the iCE40 cell tree of
        :mod:`lowbit.hw.popcount` spreads as many stages between its adder levels). More
        stages raise Fmax (3 reach 48 MHz on the iCE40UP5K at a 256-bit word) and add as
        many cycles of latency.
    dataflow : str
        ``"output-stationary"`` (see the module docstring for why).

    Raises
    ------
    TypeError, ValueError
        With an exact message naming the parameter, for any invalid value.
    """

    rows: int = 4
    cols: int = 4
    word: int = 32
    max_k: int = 1024
    max_act_bits: int = 8
    max_weight_bits: int = 8
    acc_width: int | None = None
    pipeline: int = 2
    dataflow: str = "output-stationary"

    def __post_init__(self):
        owner = "XNORArrayConfig"
        check_int(owner, "rows", self.rows, minimum=1, maximum=64)
        check_int(owner, "cols", self.cols, minimum=1, maximum=64)
        check_int(owner, "word", self.word, minimum=1, maximum=4096)
        check_int(owner, "max_k", self.max_k, minimum=1, maximum=1 << 24)
        check_int(owner, "max_act_bits", self.max_act_bits, minimum=1, maximum=8)
        check_int(owner, "max_weight_bits", self.max_weight_bits, minimum=1, maximum=8)
        check_int(owner, "pipeline", self.pipeline, minimum=0, maximum=3)
        if self.dataflow == "weight-stationary":
            raise ValueError(
                "XNORArrayConfig dataflow 'weight-stationary' is not supported: holding "
                "weights in the PEs costs one iCE40 cell per weight bit; use "
                "'output-stationary'")
        object.__setattr__(self, "dataflow",
                           check_enum(owner, "dataflow", self.dataflow, Dataflow).value)
        if self.acc_width is not None:
            check_int(owner, "acc_width", self.acc_width, minimum=2, maximum=64)
            if self.acc_width < self.required_acc_width:
                raise ValueError(
                    f"{owner} acc_width {self.acc_width} could overflow: reductions of up to "
                    f"{self.max_k} elements at {self.max_act_bits}-bit activations and "
                    f"{self.max_weight_bits}-bit weights need {self.required_acc_width} bits")

    # Derived quantities -----------------------------------------------------------------

    @property
    def binary_only(self):
        """True when the array only runs +-1 x +-1 (XNOR) layers."""
        return self.max_act_bits == 1 and self.max_weight_bits == 1

    @property
    def max_words(self):
        """Beats per bit-plane pass of the longest reduction."""
        return -(-self.max_k // self.word)

    @property
    def required_acc_width(self):
        """Narrowest two's complement width that no legal schedule can overflow."""
        bits = self.max_words * self.word  # processed bits, padding included
        if self.binary_only:
            bound = 2 * bits
        else:
            bound = bits * max(2, _plane_coefficient_sum(self.max_act_bits)
                               * _plane_coefficient_sum(self.max_weight_bits))
        return bound.bit_length() + 1

    @property
    def accumulator_width(self):
        """The accumulator width in use (explicit or derived)."""
        return self.required_acc_width if self.acc_width is None else self.acc_width

    @property
    def pop_width(self):
        """Width of one PE's popcount of a word."""
        return self.word.bit_length()

    @property
    def macs(self):
        """Binary MACs per cycle of the whole array."""
        return self.rows * self.cols * self.word

    # Stream layouts, the single definition used by gateware, golden model and testbenches.

    @property
    def beat_layout(self):
        """Payload of one input beat: a row word per row, a column word per column, control.

        ``first`` restarts the accumulators from ``offset`` (instead of adding to them),
        ``last`` emits the tile after this beat, ``dbl`` doubles the running sums before
        adding (Horner step between bit-plane groups), ``neg`` subtracts this beat's counts
        (the sign plane of signed operands). XNOR beats add ``2 * popcount``; the schedule
        sets ``offset = K - 2 * T`` for a reduction of ``K`` elements over ``T`` processed
        bit positions, which removes both the ``- N`` of ``2 * popcount(XNOR) - N`` and the
        zero padding (a padding pair counts as a match). Starting from an offset costs the
        same multiplexer as starting from zero, so no per-PE output subtractor is needed.
        """
        return data.StructLayout({
            "a": data.ArrayLayout(self.word, self.rows),
            "b": data.ArrayLayout(self.word, self.cols),
            "op": Op,
            "first": 1,
            "last": 1,
            "dbl": 1,
            "neg": 1,
            "offset": signed(self.accumulator_width),
        })

    @property
    def result_layout(self):
        """Payload of one output beat: the whole tile, ``c[i][j]`` signed."""
        return data.ArrayLayout(
            data.ArrayLayout(signed(self.accumulator_width), self.cols), self.rows)
