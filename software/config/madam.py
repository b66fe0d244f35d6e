"""Configuration of the LNS-Madam update unit, :class:`lowbit.hw.madam_update.MadamUpdate`.

The unit applies LNS-Madam's multiplicative weight update to latent weights kept as LNS
words (the LNS MAC's word layout: a sign and a magnitude code, ``|w| = S * 2^(-code/gamma)``
for a nonzero code): multiplying a magnitude by ``2^(-step/gamma)`` is adding ``step`` to
its code, so the update needs no multiplier. One beat carries ``lanes`` weights, their
signed ``grad_bits``-bit gradient mantissas (the tensor's gradient normalised by its
power-of-two exponent) and the learning-rate exponent; one output beat carries the updated
words, whose signs are the binary weights. The arithmetic is
:func:`lowbit.golden.training.madam_update` (docs/training.md, "Update"):

* ``step = round(d * grad * 2^lr / 2^(grad_bits - 1))``, round to nearest, ties to even;
  ``d = -1`` for a negative weight, else ``+1`` (a gradient of the weight's sign shrinks it);
* ``t = max(code, 1) - step``; ``t > c_max`` saturates to ``c_max = 2^(bits-1) - 1`` (the
  largest magnitude, BinaryConnect's clip); ``t < 1`` crosses zero: the sign flips and the
  code becomes 1;
* a zero code updates as code 1 of sign 0.
"""

import dataclasses

from amaranth import signed, unsigned
from amaranth.lib import data

from .base import ConfigMixin, check_int

__all__ = ["MadamUpdateConfig"]


@dataclasses.dataclass(frozen=True)
class MadamUpdateConfig(ConfigMixin):
    """Parameters of a :class:`~lowbit.hw.madam_update.MadamUpdate` and its golden model
    :class:`~lowbit.golden.madam.MadamUpdate`.

    Parameters
    ----------
    lanes : int
        Weights updated per beat (1..64).
    bits : int
        LNS word bits ``B`` of the latent weights, sign included (4..16): codes
        ``0..2^(B-1) - 1``.
    grad_bits : int
        Signed bits of the gradient mantissas (2..8).
    lr_headroom : int
        Learning-rate exponents beyond ``bits - 2`` a beat may carry (0..8): the
        accelerator's ``UPDATE`` feeds ``8``-bit mantissa fields and folds a narrower
        ``grad_bits`` into the exponent (``lr + 8 - grad_bits``), which needs up to 6 more.

    Raises
    ------
    TypeError, ValueError
        With an exact message naming the parameter, for any invalid value.
    """

    lanes: int = 16
    bits: int = 8
    grad_bits: int = 8
    lr_headroom: int = 0

    def __post_init__(self):
        owner = "MadamUpdateConfig"
        check_int(owner, "lanes", self.lanes, minimum=1, maximum=64)
        check_int(owner, "bits", self.bits, minimum=4, maximum=16)
        check_int(owner, "grad_bits", self.grad_bits, minimum=2, maximum=8)
        check_int(owner, "lr_headroom", self.lr_headroom, minimum=0, maximum=8)

    @property
    def code_bits(self):
        """Bits of a magnitude code."""
        return self.bits - 1

    @property
    def c_max(self):
        """The largest code (the largest magnitude)."""
        return (1 << self.code_bits) - 1

    @property
    def max_lr_exponent(self):
        """The largest learning-rate exponent a beat may carry: ``B - 2 + lr_headroom``
        (``B - 2``: a step of up to ``2^(B-2)`` codes, half the code range)."""
        return self.bits - 2 + self.lr_headroom

    @property
    def step_bits(self):
        """Signed width of a step: ``|step| <= 2^max(grad_bits - 1, B - 2)``."""
        return max(self.grad_bits - 1, self.max_lr_exponent) + 2

    @property
    def word_layout(self):
        """One latent weight: as :attr:`lowbit.config.lns.LNSMacConfig.word_layout`."""
        return data.StructLayout({"code": unsigned(self.code_bits), "sign": 1})

    @property
    def beat_layout(self):
        """Payload of one input beat: ``lanes`` weights, their gradient mantissas and the
        learning-rate exponent (0..:attr:`max_lr_exponent`; larger values are taken as
        :attr:`max_lr_exponent`)."""
        return data.StructLayout({
            "w": data.ArrayLayout(self.word_layout, self.lanes),
            "grad": data.ArrayLayout(signed(self.grad_bits), self.lanes),
            "lr_exponent": unsigned(self.max_lr_exponent.bit_length()),
        })

    @property
    def result_layout(self):
        """Payload of one output beat: the updated weights (their signs: the binary
        weights, 1 = -1)."""
        return data.StructLayout({"w": data.ArrayLayout(self.word_layout, self.lanes)})
