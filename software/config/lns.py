"""Configuration of the LNS multiply-add unit (LNS-Madam style), shared by gateware, golden
model, testbenches and benchmark (docs/arithmetic.md, section 4).

Number format. A B-bit word holds a sign bit and a ``(B-1)``-bit magnitude code ``c``:
``c = 0`` is exact zero; otherwise ``|x| = S * 2^((c - c_max) / gamma)`` with
``c_max = 2^(B-1) - 1``, ``gamma = 2^g`` and ``S`` a per-tensor power of two that the
hardware never sees (it scales the result, see :meth:`LNSMacConfig.result_scale`).

Datapath. One beat carries ``lanes`` pairs ``(a_i, b_i)``. Each product's exponent
``p = (c_a - c_max) + (c_b - c_max)`` splits into ``q = floor(p / gamma)`` and
``r = p mod gamma`` (bit slices, since gamma is a power of two); the product adds
``+-(1 << (q + shift))`` into partial accumulator ``acc[r]``, or nothing when
``q + shift < 0`` (too small for the accumulators: *dropped*, pinned). After a ``last``
beat the unit forms ``total = bias + sum_r acc[r] * LUT[r]`` with
``LUT[r] = round(2^(r / gamma) * 2^F)`` and emits ``total >> out_shift``. So the output
is an integer in units of ``2^(out_shift - F - shift) * S_a * S_b``.
"""

import dataclasses
import enum
import math

from amaranth import signed, unsigned
from amaranth.lib import data

from .base import ConfigMixin, check_enum, check_int

__all__ = ["Rounding", "LNSMacConfig", "lns_lut", "SHIFT_CAP"]

#: The derived ``shift`` never exceeds this: products below ``2^-16`` of full scale
#: (``S_a * S_b``) change an 8-bit LNS dot product by far less than its own quantisation
#: error (measured in ``docs/lns_mac.md``), and every extra bit widens all ``gamma``
#: partial accumulators.
SHIFT_CAP = 16


def lns_lut(gamma, lut_frac):
    """``LUT[r] = round(2^(r / gamma) * 2^F)`` for ``r = 0..gamma-1``, rounding half up.

    The one definition of the table; the gateware builds it from the configuration and the
    golden model calls this function directly.
    """
    return tuple(math.floor(2 ** (r / gamma + lut_frac) + 0.5) for r in range(gamma))


class Rounding(enum.Enum):
    """How the final ``total >> out_shift`` rounds.

    ``floor`` is an arithmetic shift (toward minus infinity); ``nearest`` rounds half up
    (toward plus infinity), by starting ``total`` from ``2^(out_shift - 1)`` instead of 0,
    which costs no logic.
    """

    FLOOR = "floor"
    NEAREST = "nearest"


def _is_power_of_two(value):
    return value >= 1 and value & (value - 1) == 0


@dataclasses.dataclass(frozen=True)
class LNSMacConfig(ConfigMixin):
    """Parameters of an :class:`~lowbit.hw.lns_mac.LNSMac` and its golden model
    :class:`~lowbit.golden.lns.LNSMac`.

    Parameters
    ----------
    lanes : int
        Products per beat (1..64).
    bits : int
        ``B``, the LNS word width including the sign bit (3..12).
    gamma : int
        Base ``2^(1/gamma)``: a power of two, 1..64, at most ``2^(bits-2)`` (the codes must
        span at least one octave).
    lut_frac : int
        ``F``, fraction bits of the remainder table ``LUT[r] = round(2^(r/gamma) * 2^F)``
        (1..24).
    shift : int or None
        Fraction bits of the partial accumulators: a product with ``q < -shift`` is
        dropped. ``None`` derives ``min(-q_min, 16)``: every product is kept when the format
        reaches no lower than ``2^-16`` of full scale (``S_a * S_b``), else the products
        below that are dropped. At most ``-q_min`` (beyond it no product is dropped and the
        extra bits would always be zero).
    max_k : int
        Longest dot product (products) the accumulators must hold without overflow.
    acc_width : int or None
        Width of each of the ``gamma`` partial accumulators. ``None`` derives the narrowest
        safe width; a narrower explicit choice raises ``ValueError``.
    out_shift : int or None
        Right shift of the final total (0..``shift + lut_frac``). ``None`` means
        ``lut_frac``: the output keeps ``shift`` fraction bits.
    rounding : str
        ``"nearest"`` (default, half up) or ``"floor"``.

    Raises
    ------
    TypeError, ValueError
        With an exact message naming the parameter, for any invalid value.
    """

    lanes: int = 4
    bits: int = 8
    gamma: int = 8
    lut_frac: int = 8
    shift: int | None = None
    max_k: int = 256
    acc_width: int | None = None
    out_shift: int | None = None
    rounding: str = "nearest"

    def __post_init__(self):
        owner = "LNSMacConfig"
        check_int(owner, "lanes", self.lanes, minimum=1, maximum=64)
        check_int(owner, "bits", self.bits, minimum=3, maximum=12)
        check_int(owner, "gamma", self.gamma, minimum=1, maximum=64)
        if not _is_power_of_two(self.gamma):
            raise ValueError(f"{owner} gamma must be a power of two, not {self.gamma}")
        if self.gamma > 1 << (self.bits - 2):
            raise ValueError(
                f"{owner} gamma {self.gamma} is too large for {self.bits}-bit words: the "
                f"codes must span at least one octave (gamma <= {1 << (self.bits - 2)})")
        check_int(owner, "lut_frac", self.lut_frac, minimum=1, maximum=24)
        check_int(owner, "max_k", self.max_k, minimum=1, maximum=1 << 20)
        if self.shift is not None:
            check_int(owner, "shift", self.shift, minimum=0)
            if self.shift > -self.q_min:
                raise ValueError(
                    f"{owner} shift must be at most {-self.q_min} for bits={self.bits}, "
                    f"gamma={self.gamma} (the smallest product, 2^{self.q_min}, already "
                    f"lands on bit 0), not {self.shift}")
        if self.out_shift is not None:
            check_int(owner, "out_shift", self.out_shift, minimum=0,
                      maximum=self.frac_shift + self.lut_frac)
        object.__setattr__(self, "rounding",
                           check_enum(owner, "rounding", self.rounding, Rounding).value)
        if self.acc_width is not None:
            check_int(owner, "acc_width", self.acc_width, minimum=2, maximum=64)
            if self.acc_width < self.required_acc_width:
                raise ValueError(
                    f"{owner} acc_width {self.acc_width} could overflow: dot products of up "
                    f"to {self.max_k} products with shift={self.frac_shift} need "
                    f"{self.required_acc_width} bits")

    # Number format ----------------------------------------------------------------------

    @property
    def code_bits(self):
        """Bits of the magnitude code (``B - 1``)."""
        return self.bits - 1

    @property
    def c_max(self):
        """The largest code, ``2^(B-1) - 1``; it encodes ``|x| = S``."""
        return (1 << (self.bits - 1)) - 1

    @property
    def g(self):
        """``log2(gamma)``: the remainder is the low ``g`` bits of the product exponent."""
        return self.gamma.bit_length() - 1

    @property
    def q_min(self):
        """The smallest quotient ``floor(p / gamma)`` of a product of nonzero codes."""
        return (2 - 2 * self.c_max) // self.gamma

    @property
    def frac_shift(self):
        """The ``shift`` in use (explicit or derived)."""
        if self.shift is None:
            return min(-self.q_min, SHIFT_CAP)
        return self.shift

    @property
    def output_shift(self):
        """The ``out_shift`` in use (explicit or derived)."""
        return self.lut_frac if self.out_shift is None else self.out_shift

    @property
    def lut(self):
        """``LUT[r] = round(2^(r / gamma) * 2^F)`` (round half up), ``r = 0..gamma-1``."""
        return lns_lut(self.gamma, self.lut_frac)

    # Widths -----------------------------------------------------------------------------

    @property
    def required_acc_width(self):
        """Narrowest two's complement width of ``acc[r]`` that ``max_k`` products cannot
        overflow: each adds at most ``2^shift`` in magnitude (``q <= 0``)."""
        return (self.max_k << self.frac_shift).bit_length() + 1

    @property
    def accumulator_width(self):
        """The partial accumulator width in use (explicit or derived)."""
        return self.required_acc_width if self.acc_width is None else self.acc_width

    @property
    def rounding_bias(self):
        """The value ``total`` starts from: ``2^(out_shift - 1)`` for nearest, else 0."""
        if self.rounding == Rounding.NEAREST.value and self.output_shift > 0:
            return 1 << (self.output_shift - 1)
        return 0

    @property
    def total_width(self):
        """Width of ``total``: every product adds at most ``2^(shift + F)`` in magnitude
        (``LUT[0] = 2^F`` with ``q <= 0``; ``LUT[r] <= 2^(F+1)`` with ``q <= -1`` for
        ``r > 0``), plus the rounding bias."""
        bound = (self.max_k << (self.frac_shift + self.lut_frac)) + self.rounding_bias
        return bound.bit_length() + 1

    @property
    def out_width(self):
        """Width of the output dot product (``total`` without its ``out_shift`` low bits)."""
        return max(self.total_width - self.output_shift, 2)

    @property
    def lut_width(self):
        """Width of the unsigned table entries (``F + 1``, or ``F + 2`` when a small ``F``
        rounds ``LUT[gamma - 1]`` up to ``2^(F+1)``)."""
        return max(self.lut).bit_length()

    @property
    def term_width(self):
        """Width of one signed product term ``+-(1 << k)``, ``0 <= k <= shift``."""
        return self.frac_shift + 2

    @property
    def macs(self):
        """Products per cycle."""
        return self.lanes

    def result_scale(self, scale_a_exp=0, scale_b_exp=0):
        """The real value of one output unit for operand scales ``2^scale_a_exp`` and
        ``2^scale_b_exp``: ``2^(out_shift - F - shift + scale_a_exp + scale_b_exp)``."""
        return 2.0 ** (self.output_shift - self.lut_frac - self.frac_shift + scale_a_exp
                       + scale_b_exp)

    # Stream layouts, the single definition used by gateware, golden model and testbenches.

    @property
    def word_layout(self):
        """One LNS word: the magnitude code in the low ``B-1`` bits, the sign on top
        (1 = negative). A zero code is zero whatever its sign."""
        return data.StructLayout({"code": unsigned(self.code_bits), "sign": 1})

    @property
    def beat_layout(self):
        """Payload of one input beat: ``lanes`` pairs and the XNOR array's control flags.

        ``first`` restarts the dot product (the partial accumulators start from zero
        instead of adding to them), ``last`` emits it after this beat. Unused lanes carry
        zero codes, which contribute nothing, so dot products of any length need no
        correction.
        """
        return data.StructLayout({
            "a": data.ArrayLayout(self.word_layout, self.lanes),
            "b": data.ArrayLayout(self.word_layout, self.lanes),
            "first": 1,
            "last": 1,
        })

    @property
    def result_layout(self):
        """Payload of one output beat: the dot product, in units of
        :meth:`result_scale`."""
        return data.StructLayout({"dot": signed(self.out_width)})
