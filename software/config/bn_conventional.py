"""Configuration of the conventional batch-norm unit lowbit generates as the baseline for
LightNorm: fixed point, true variance and an integer square root, with the same stream
interface, channel blocks and throughput as :mod:`lowbit.config.lightnorm`.

Beats carry the same operations (:class:`~lowbit.config.lightnorm.Op`):

* ``LOAD`` writes one group's fixed-point ``a`` (``coef_bits``, ``frac_bits`` fractional
  bits) and ``c`` (in units of ``2^-frac_bits``) per channel;
* ``STAT`` accumulates ``sum x`` and ``sum x^2`` per channel; the batch holds exactly
  ``2^batch_log2`` samples, so the means are shifts. On ``last`` the unit computes
  ``mu = floor(sum / n)``, ``var = max(0, floor(sum x^2 / n) - mu^2)`` and
  ``sigma = isqrt(var)`` (a bit-serial square root: the input stalls for ``input_width``
  cycles once per batch) and emits them;
* ``APPLY`` computes ``y = sat(round((a * x + c) / 2^frac_bits))`` (round half up) in
  ``output_width`` bits. ``a = gamma / sigma`` and ``c = beta - a * mu`` are folded on the
  host, as for LightNorm.
"""

import dataclasses

from amaranth import signed, unsigned
from amaranth.lib import data

from .base import ConfigMixin, check_int
from .lightnorm import Op, norm_beat_layout

__all__ = ["BNConventionalConfig", "Op"]


@dataclasses.dataclass(frozen=True)
class BNConventionalConfig(ConfigMixin):
    """Parameters of a :class:`~lowbit.hw.bn_conventional.BNConventional` and its golden
    model.

    Parameters
    ----------
    channels : int
        Channels normalised (1..1024), a multiple of ``block``.
    block : int
        Channels per beat (1..64).
    input_width : int
        Width of the signed integer inputs (2..24).
    batch_log2 : int
        Statistics batches hold exactly ``2^batch_log2`` samples (1..20).
    coef_bits : int
        Width of the signed scale ``a`` (2..24).
    frac_bits : int
        Fractional bits of ``a`` and ``c`` (0..coef_bits + input_width - 1).
    output_width : int
        Width of the signed, saturated outputs (2..32).

    Raises
    ------
    TypeError, ValueError
        With an exact message naming the parameter.
    """

    channels: int = 16
    block: int = 16
    input_width: int = 16
    batch_log2: int = 8
    coef_bits: int = 16
    frac_bits: int = 12
    output_width: int = 16

    def __post_init__(self):
        owner = "BNConventionalConfig"
        check_int(owner, "channels", self.channels, minimum=1, maximum=1024)
        check_int(owner, "block", self.block, minimum=1, maximum=64)
        if self.channels % self.block:
            raise ValueError(f"{owner} channels {self.channels} must be a multiple of "
                             f"block {self.block}")
        check_int(owner, "input_width", self.input_width, minimum=2, maximum=24)
        check_int(owner, "batch_log2", self.batch_log2, minimum=1, maximum=20)
        check_int(owner, "coef_bits", self.coef_bits, minimum=2, maximum=24)
        check_int(owner, "frac_bits", self.frac_bits, minimum=0,
                  maximum=self.coef_bits + self.input_width - 1)
        check_int(owner, "output_width", self.output_width, minimum=2, maximum=32)

    @property
    def groups(self):
        return self.channels // self.block

    @property
    def batch(self):
        """Samples per statistics batch."""
        return 1 << self.batch_log2

    @property
    def product_bits(self):
        """Width of the shared multiplier's product (``a * x`` or ``x * x``)."""
        return self.input_width + max(self.input_width, self.coef_bits)

    @property
    def acc_bits(self):
        """Width of ``c`` and of ``a * x + c``."""
        return self.product_bits + 1

    @property
    def sum_bits(self):
        return self.input_width + self.batch_log2

    @property
    def sumsq_bits(self):
        """Unsigned width of ``sum x^2`` (``x^2 <= 2^(2w - 2)``)."""
        return 2 * self.input_width - 1 + self.batch_log2

    @property
    def var_bits(self):
        return 2 * self.input_width - 1

    @property
    def param_layout(self):
        return data.StructLayout({
            "a": data.ArrayLayout(signed(self.coef_bits), self.block),
            "c": data.ArrayLayout(signed(self.acc_bits), self.block),
        })

    @property
    def beat_layout(self):
        """Same fields as LightNorm's beats (``chunk`` is ignored)."""
        return norm_beat_layout(self.groups, self.block, self.input_width, self.param_layout)

    @property
    def stats_layout(self):
        return data.ArrayLayout(data.StructLayout({
            "mu": signed(self.input_width),
            "var": unsigned(self.var_bits),
            "sigma": unsigned(self.input_width),
        }), self.block)

    @property
    def result_layout(self):
        return data.StructLayout({
            "op": Op,
            "group": range(self.groups),
            "data": data.UnionLayout({
                "out": data.ArrayLayout(signed(self.output_width), self.block),
                "stats": self.stats_layout,
            }),
        })
