"""Block floating point (BFP), bit-exact: what :class:`lowbit.hw.lightnorm.LightNorm` computes
on BFP blocks (docs/arithmetic.md, section 3).

Format ``BFP(block B, mantissa m, exponent e, rounding)``: ``B`` values share one exponent.

* ``E = max_i floor(log2 |v_i|)`` over the block's nonzero values, clamped to the e-bit two's
  complement range ``[-2^(e-1), 2^(e-1) - 1]``; an all-zero block has ``E = -2^(e-1)``.
* ``M_i = clip(round(v_i * 2^((m - 2) - E)), -2^(m-1), 2^(m-1) - 1)``; the value of a
  mantissa is ``M_i * 2^(E - (m - 2))``.
* ``round`` is ``nearest-even`` or ``truncate`` (toward zero).

Integer inputs find ``E`` by leading-one detection: ``floor(log2 |v|)`` is the position of
the leading one of ``|v|``, and the block's maximum is the leading one of the OR of all
``|v_i|``; the gateware does exactly that.

The unit's arithmetic is one fused operation, :func:`affine` (``y = s * x + o``, pinned
below); :func:`multiply` and :func:`add` are its special cases with ``o = 0`` and ``s = 1``.
:func:`compare` is exact (the sign of the difference of the represented values).

Every function works on numpy arrays whose last axis is the block (``man``: ``(..., B)``,
``exp``: ``(...)``) and is exact: float inputs are scaled by powers of two (exact in
float64) and rounded once; integer arithmetic is int64 throughout.
"""

import dataclasses
from typing import NamedTuple

import numpy as np

from ..config.base import ConfigMixin, check_enum, check_int
from ..config.lightnorm import Rounding

__all__ = ["BFPFormat", "BFP", "round_shift", "quantize", "dequantize", "affine",
           "multiply", "add", "compare", "one"]


@dataclasses.dataclass(frozen=True)
class BFPFormat(ConfigMixin):
    """A block floating point format.

    Parameters
    ----------
    block : int
        Values sharing one exponent (1..64).
    mantissa : int
        Mantissa bits including the sign (2..16).
    exponent : int
        Shared exponent bits, two's complement (2..8).
    rounding : str
        ``"nearest-even"`` or ``"truncate"`` (toward zero).

    Raises
    ------
    TypeError, ValueError
        With an exact message naming the parameter.
    """

    block: int = 16
    mantissa: int = 8
    exponent: int = 6
    rounding: str = "nearest-even"

    def __post_init__(self):
        owner = "BFPFormat"
        check_int(owner, "block", self.block, minimum=1, maximum=64)
        check_int(owner, "mantissa", self.mantissa, minimum=2, maximum=16)
        check_int(owner, "exponent", self.exponent, minimum=2, maximum=8)
        object.__setattr__(self, "rounding",
                           check_enum(owner, "rounding", self.rounding, Rounding).value)

    @classmethod
    def of(cls, config):
        """The BFP format of a :class:`~lowbit.config.lightnorm.LightNormConfig`."""
        return cls(config.block, config.mantissa, config.exponent, config.rounding)

    @property
    def emin(self):
        return -(1 << (self.exponent - 1))

    @property
    def emax(self):
        return (1 << (self.exponent - 1)) - 1

    @property
    def mmin(self):
        return -(1 << (self.mantissa - 1))

    @property
    def mmax(self):
        return (1 << (self.mantissa - 1)) - 1


class BFP(NamedTuple):
    """BFP blocks: ``exp`` of shape ``(...)`` and ``man`` of shape ``(..., B)``, int64."""

    exp: np.ndarray
    man: np.ndarray


def round_shift(values, shift, rounding):
    """``values / 2^shift`` rounded to an integer, exactly (int64 numpy).

    ``shift <= 0`` is an exact left shift. ``rounding`` is ``"nearest-even"``,
    ``"truncate"`` (toward zero) or ``"floor"`` (an arithmetic shift right). Shifts past 62
    bits act as infinite ones (the result is 0, or -1 for ``floor`` of a negative value).
    """
    v, s = np.broadcast_arrays(np.asarray(values, dtype=np.int64),
                               np.asarray(shift, dtype=np.int64))
    left = v << np.clip(-s, 0, 62)
    r = np.clip(s, 0, 62)
    q = v >> r
    rem = v - (q << r)
    if rounding == "floor":
        up = np.zeros(v.shape, dtype=bool)
    elif rounding == Rounding.TRUNCATE.value:
        up = (v < 0) & (rem != 0)
    elif rounding == Rounding.NEAREST_EVEN.value:
        half = (np.int64(1) << r) >> 1
        up = (r > 0) & ((rem > half) | ((rem == half) & ((q & 1) == 1)))
    else:
        raise ValueError(f"rounding must be 'nearest-even', 'truncate' or 'floor', "
                         f"not {rounding!r}")
    return np.where(s <= 0, left, q + up.astype(np.int64))


def _leading_one(magnitudes):
    # floor(log2 |v|) for integers (exact below 2^53); -1 for zero.
    _, e2 = np.frexp(np.asarray(magnitudes, dtype=np.float64))
    return np.where(np.asarray(magnitudes) != 0, e2 - 1, -1).astype(np.int64)


def quantize(values, fmt):
    """Quantise ``values`` (shape ``(..., B)``, float or integer) to :class:`BFP` blocks.

    Raises ``ValueError`` if the last axis is not ``fmt.block`` long or a value is not
    finite.
    """
    v = np.asarray(values)
    if v.ndim == 0 or v.shape[-1] != fmt.block:
        raise ValueError(f"BFP values need a last axis of {fmt.block}, not shape {v.shape}")
    m = fmt.mantissa
    if np.issubdtype(v.dtype, np.integer):
        v = v.astype(np.int64)
        top = _leading_one(np.abs(v).max(axis=-1))
        exp = np.where(top < 0, fmt.emin, np.clip(top, fmt.emin, fmt.emax))
        man = round_shift(v, exp[..., None] - (m - 2), fmt.rounding)
    else:
        v = v.astype(np.float64)
        if not np.all(np.isfinite(v)):
            raise ValueError("BFP values must be finite")
        _, e2 = np.frexp(v)
        logs = np.where(v != 0, e2 - 1, np.iinfo(np.int32).min)
        top = logs.max(axis=-1)
        exp = np.where(np.all(v == 0, axis=-1), fmt.emin, np.clip(top, fmt.emin, fmt.emax))
        scaled = np.ldexp(v, (m - 2) - exp[..., None])
        man = np.rint(scaled) if fmt.rounding == "nearest-even" else np.trunc(scaled)
    man = np.clip(man, fmt.mmin, fmt.mmax).astype(np.int64)
    return BFP(np.asarray(exp, dtype=np.int64), man)


def dequantize(block, fmt):
    """The values a :class:`BFP` block represents (float64, exact)."""
    exp = np.asarray(block.exp, dtype=np.int64)
    return np.ldexp(np.asarray(block.man, dtype=np.float64),
                    (exp - (fmt.mantissa - 2))[..., None])


def affine(x, scale, offset, fmt, guard_bits=8):
    """``y = scale * x + offset`` on BFP blocks, exactly as the gateware computes it.

    Pinned arithmetic (``m`` mantissa bits, ``g = guard_bits``, ``A = m + 3 + g``):

    1. ``P_i = Mx_i * Ms_i`` exactly (``2m`` bits), of exponent ``Ep = Ex + Es``.
    2. The top exponent ``T = max(Ep, Eo)`` bounds ``|y| < 2^(T + 3)``; the accumulator is an
       ``A``-bit two's complement integer of LSB weight ``2^L``, ``L = T + 1 - m - g``.
    3. Each term is shifted into accumulator units with ``floor`` (an arithmetic shift
       right) when bits fall off: ``P`` by ``(g + 3 - m) - (T - Ep)``, ``Mo`` by
       ``(g + 1) - (T - Eo)`` (positive: left). ``S_i`` is their sum (never overflows).
    4. ``Ey = floor(log2 max |S_i|) + L`` (leading-one detection), clamped; all-zero
       gives ``emin``; ``My_i = clip(round(S_i / 2^(Ey - L - (m - 2))))`` with the format's
       rounding.

    So each result is rounded once, after a sum that keeps ``g + 1`` bits below the output
    LSB (the floor of step 3 can move a value by at most one accumulator LSB).
    """
    m, g = fmt.mantissa, guard_bits
    ex, es, eo = (np.asarray(b.exp, dtype=np.int64) for b in (x, scale, offset))
    ep = ex + es
    top = np.maximum(ep, eo)
    lsb = top + 1 - m - g
    product = np.asarray(x.man, dtype=np.int64) * np.asarray(scale.man, dtype=np.int64)
    total = (round_shift(product, ((top - ep) - (g + 3 - m))[..., None], "floor")
             + round_shift(offset.man, ((top - eo) - (g + 1))[..., None], "floor"))
    lead = _leading_one(np.abs(total).max(axis=-1))
    exp = np.where(lead < 0, fmt.emin, np.clip(lead + lsb, fmt.emin, fmt.emax))
    man = round_shift(total, (exp - lsb - (m - 2))[..., None], fmt.rounding)
    return BFP(exp, np.clip(man, fmt.mmin, fmt.mmax))


def one(fmt, shape=()):
    """BFP blocks of 1.0 (mantissa ``2^(m-2)`` at exponent 0)."""
    return BFP(np.zeros(shape, dtype=np.int64),
               np.full((*shape, fmt.block), 1 << (fmt.mantissa - 2), dtype=np.int64))


def _zero(fmt, shape):
    return BFP(np.full(shape, fmt.emin, dtype=np.int64),
               np.zeros((*shape, fmt.block), dtype=np.int64))


def multiply(x, scale, fmt, guard_bits=8):
    """``scale * x``: :func:`affine` with a zero offset."""
    return affine(x, scale, _zero(fmt, np.shape(x.exp)), fmt, guard_bits)


def add(a, b, fmt, guard_bits=8):
    """``a + b``: :func:`affine` with a unit scale (``1.0`` is exact in every format)."""
    return affine(a, one(fmt, np.shape(a.exp)), b, fmt, guard_bits)


def compare(a, b, fmt):
    """Elementwise ``sign(a - b)`` of two BFP blocks (-1, 0 or +1), exact: both sides are
    exact float64 values and IEEE subtraction preserves the sign of their difference."""
    return np.sign(dequantize(a, fmt) - dequantize(b, fmt)).astype(np.int64)
