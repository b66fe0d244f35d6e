"""Configuration of the LightNorm-style batch-norm unit, shared by gateware, golden model,
testbenches and benchmark (docs/arithmetic.md, sections 2 and 3).

The unit takes one *block* of ``block`` channels at one sample position per beat: the
signed integer outputs of the XNOR array. Each beat carries an operation:

* ``LOAD`` writes one group's parameters (a small memory, one word per channel group):
  a BFP scale and offset block in ``bfp`` output mode, sorted thresholds and a
  comparison direction per channel in ``sign`` and ``multithreshold`` modes;
* ``STAT`` accumulates the batch statistics of range batch norm (sum, chunk max/min);
  ``first`` clears a group's statistics, ``chunk`` starts a new chunk, ``last`` emits
  ``sum`` and ``spread = sum_k max_k - sum_k min_k`` for every channel of the group;
* ``APPLY`` normalises: a BFP block ``y = scale * x + offset`` (``bfp``), +-1 bits
  (``sign``) or k-bit unsigned activations (``multithreshold``).

No divider or square root is built: ``1 / (C(n) * range + eps)`` and ``1 / n`` are
computed by the host when it folds the statistics into the parameters it loads (see
:meth:`lowbit.golden.lightnorm.LightNorm.fold_affine`); the hardware only multiplies,
adds, shifts, compares and detects leading ones.
"""

import dataclasses
import enum

from amaranth import signed, unsigned
from amaranth.lib import data
from amaranth.lib import enum as hdl_enum

from .base import ConfigMixin, check_bool, check_enum, check_int

__all__ = ["Rounding", "OutputMode", "Op", "LightNormConfig", "norm_beat_layout"]


class Rounding(enum.Enum):
    """How a value is rounded to a BFP mantissa (docs/arithmetic.md, section 3.2)."""

    NEAREST_EVEN = "nearest-even"
    TRUNCATE = "truncate"


class OutputMode(enum.Enum):
    """What an ``APPLY`` beat produces: a BFP block, +-1 bits or k-bit activations."""

    BFP = "bfp"
    SIGN = "sign"
    MULTITHRESHOLD = "multithreshold"


class Op(hdl_enum.Enum, shape=2):
    """Operation of one input beat (and the kind of the output beat it produces)."""

    APPLY = 0
    STAT = 1
    LOAD = 2


def norm_beat_layout(groups, block, input_width, param_layout):
    """The beat of a norm unit (LightNorm and its conventional baseline): operation,
    channel group, flags and either the ``x`` block (``APPLY``, ``STAT``) or the group's
    ``params`` (``LOAD``)."""
    return data.StructLayout({
        "op": Op,
        "group": range(groups),
        "first": 1,
        "chunk": 1,
        "last": 1,
        "data": data.UnionLayout({
            "x": data.ArrayLayout(signed(input_width), block),
            "params": param_layout,
        }),
    })


@dataclasses.dataclass(frozen=True)
class LightNormConfig(ConfigMixin):
    """Parameters of a :class:`~lowbit.hw.lightnorm.LightNorm` and its golden model.

    Parameters
    ----------
    channels : int
        Channels normalised (1..1024), a multiple of ``block``.
    block : int
        Channels per beat, sharing one BFP exponent (1..64; LightNorm uses 16).
    mantissa : int
        BFP mantissa bits ``m`` including the sign (2..16).
    exponent : int
        BFP shared-exponent bits ``e``, two's complement (2..8).
    rounding : str
        ``"nearest-even"`` (default) or ``"truncate"`` (toward zero, LightNorm's choice).
    guard_bits : int
        Extra fractional bits of the affine accumulator beyond the mantissa (0..16;
        LightNorm keeps 8). The accumulator is ``mantissa + 3 + guard_bits`` bits wide.
    input_width : int
        Width of the signed integer inputs (2..32).
    chunks : int
        ``K``, the number of chunks of range batch norm (1..64; LightNorm uses 8).
    max_batch : int
        Most samples per channel in one statistics batch (1..2^24); sizes the sum.
    sum_width : int or None
        Width of the per-channel sum. ``None`` derives the narrowest safe width; a
        narrower explicit choice raises ``ValueError``.
    output : str
        ``"bfp"``, ``"sign"`` or ``"multithreshold"``.
    act_bits : int
        ``k`` of ``multithreshold`` outputs (1..4): ``2^k - 1`` thresholds per channel.
        Ignored (taken as 1) in ``sign`` mode.
    statistics : bool
        Build the range batch-norm statistics (``STAT`` beats). They keep five values per
        channel (:attr:`running_stats_layout`, about 80-100 bits) in a memory of one word
        per group (block RAM on an FPGA, so 1,024 channels fit; one group: a register); an
        inference-only unit leaves them out, and its ``STAT`` beats then report zero
        statistics.

    Raises
    ------
    TypeError, ValueError
        With an exact message naming the parameter, for any invalid value.
    """

    channels: int = 16
    block: int = 16
    mantissa: int = 8
    exponent: int = 6
    rounding: str = "nearest-even"
    guard_bits: int = 8
    input_width: int = 16
    chunks: int = 8
    max_batch: int = 4096
    sum_width: int | None = None
    output: str = "bfp"
    act_bits: int = 2
    statistics: bool = True

    def __post_init__(self):
        owner = "LightNormConfig"
        check_int(owner, "channels", self.channels, minimum=1, maximum=1024)
        check_int(owner, "block", self.block, minimum=1, maximum=64)
        if self.channels % self.block:
            raise ValueError(f"{owner} channels {self.channels} must be a multiple of "
                             f"block {self.block}")
        check_int(owner, "mantissa", self.mantissa, minimum=2, maximum=16)
        check_int(owner, "exponent", self.exponent, minimum=2, maximum=8)
        object.__setattr__(self, "rounding",
                           check_enum(owner, "rounding", self.rounding, Rounding).value)
        check_int(owner, "guard_bits", self.guard_bits, minimum=0, maximum=16)
        check_int(owner, "input_width", self.input_width, minimum=2, maximum=32)
        check_int(owner, "chunks", self.chunks, minimum=1, maximum=64)
        check_int(owner, "max_batch", self.max_batch, minimum=1, maximum=1 << 24)
        object.__setattr__(self, "output",
                           check_enum(owner, "output", self.output, OutputMode).value)
        check_int(owner, "act_bits", self.act_bits, minimum=1, maximum=4)
        check_bool(owner, "statistics", self.statistics)
        if self.sum_width is not None:
            check_int(owner, "sum_width", self.sum_width, minimum=2, maximum=64)
            if self.sum_width < self.required_sum_width:
                raise ValueError(
                    f"{owner} sum_width {self.sum_width} could overflow: {self.max_batch} "
                    f"samples of {self.input_width} bits need {self.required_sum_width} bits")

    # Derived quantities -----------------------------------------------------------------

    @property
    def groups(self):
        """Channel groups (beats per sample position)."""
        return self.channels // self.block

    @property
    def emin(self):
        """Smallest shared exponent (also the exponent of an all-zero block)."""
        return -(1 << (self.exponent - 1))

    @property
    def emax(self):
        """Largest shared exponent."""
        return (1 << (self.exponent - 1)) - 1

    @property
    def acc_width(self):
        """Width of the affine accumulator: ``|scale * x + offset| < 2^(T + 3)`` plus
        ``mantissa + guard_bits - 1`` bits below the top exponent ``T``."""
        return self.mantissa + 3 + self.guard_bits

    @property
    def required_sum_width(self):
        """Narrowest signed width holding any sum of ``max_batch`` inputs."""
        return self.input_width + (self.max_batch - 1).bit_length()

    @property
    def sum_bits(self):
        """The sum width in use (explicit or derived)."""
        return self.required_sum_width if self.sum_width is None else self.sum_width

    @property
    def extreme_bits(self):
        """Width of a sum of ``chunks`` chunk maxima (or minima)."""
        return self.input_width + (self.chunks - 1).bit_length()

    @property
    def spread_bits(self):
        """Width of ``spread = sum max - sum min`` (non-negative, kept signed)."""
        return self.extreme_bits + 1

    @property
    def levels(self):
        """Output bits per channel in threshold modes (``sign`` gives 1)."""
        return 1 if self.output == "sign" else self.act_bits

    @property
    def thresholds(self):
        """Thresholds per channel in threshold modes: ``2^levels - 1``."""
        return (1 << self.levels) - 1

    @property
    def threshold_bits(self):
        """Width of a threshold: one more than the input, so ``min - 1`` and ``max + 1``
        (never / always passed) are representable."""
        return self.input_width + 1

    # Stream layouts, the single definition used by gateware, golden model and testbenches.

    @property
    def param_layout(self):
        """One group's parameters, as stored in the parameter memory."""
        b = self.block
        if self.output == "bfp":
            return data.StructLayout({
                "scale": data.ArrayLayout(signed(self.mantissa), b),
                "scale_exp": signed(self.exponent),
                "offset": data.ArrayLayout(signed(self.mantissa), b),
                "offset_exp": signed(self.exponent),
            })
        return data.StructLayout({
            "t": data.ArrayLayout(data.ArrayLayout(signed(self.threshold_bits),
                                                   self.thresholds), b),
            "flip": data.ArrayLayout(unsigned(1), b),
        })

    @property
    def beat_layout(self):
        """Payload of one input beat: operation, channel group, flags and either the
        ``x`` block (``APPLY``, ``STAT``) or the group's ``params`` (``LOAD``)."""
        return norm_beat_layout(self.groups, self.block, self.input_width, self.param_layout)

    @property
    def output_layout(self):
        """The ``APPLY`` result of one block in the configured output mode."""
        if self.output == "bfp":
            return data.StructLayout({
                "exp": signed(self.exponent),
                "man": data.ArrayLayout(signed(self.mantissa), self.block),
            })
        return data.ArrayLayout(unsigned(self.levels), self.block)

    @property
    def stats_layout(self):
        """The ``STAT`` result of one group (emitted on its ``last`` beat)."""
        return data.ArrayLayout(data.StructLayout({
            "sum": signed(self.sum_bits),
            "spread": signed(self.spread_bits),
        }), self.block)

    @property
    def running_stats_layout(self):
        """What the unit keeps of one group between ``STAT`` beats (a word of its statistics
        memory): per channel the running sum, the current chunk's max and min and the sums
        of the finished chunks' maxima and minima."""
        ext = self.extreme_bits
        return data.ArrayLayout(data.StructLayout({
            "sum": signed(self.sum_bits), "cmax": signed(self.input_width),
            "cmin": signed(self.input_width), "smax": signed(ext), "smin": signed(ext),
        }), self.block)

    @property
    def memory_bits(self):
        """Bits of the unit's memories: one parameter word per group, and one statistics
        word per group when ``statistics`` is built with more than one group (one group
        keeps its statistics in a register). A lower bound on the block RAM used: the
        words are wide and shallow, so each takes whole primitives."""
        per_group = self.param_layout.size
        if self.statistics and self.groups > 1:
            per_group += self.running_stats_layout.size
        return self.groups * per_group

    @property
    def result_layout(self):
        """Payload of one output beat: the operation it answers, the group, and the
        ``out`` block (``APPLY``) or the ``stats`` (``STAT``)."""
        return data.StructLayout({
            "op": Op,
            "group": range(self.groups),
            "data": data.UnionLayout({"out": self.output_layout, "stats": self.stats_layout}),
        })
