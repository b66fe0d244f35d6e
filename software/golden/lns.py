"""Golden model of multi-base LNS arithmetic (LNS-Madam style, docs/arithmetic.md, section 4) and
of the unit that computes it, :class:`lowbit.hw.lns_mac.LNSMac`, bit for bit.

Pinned choices (the gateware and ``docs/lns_mac.md`` follow them):

* **Words.** Sign bit (1 = negative) and a ``(B-1)``-bit code ``c``; ``c = 0`` is exact
  zero whatever the sign bit; otherwise ``|x| = S * 2^((c - c_max) / gamma)``,
  ``c_max = 2^(B-1) - 1``, ``S = 2^s``.
* **Scale.** By default ``s = ceil(log2(max |x|))`` (exact, from ``frexp``), the smallest
  power of two not below the largest magnitude, so no value saturates; an all-zero tensor
  gets ``s = 0``. A caller may pin ``s``; magnitudes above ``S`` then saturate to
  ``c_max``.
* **Quantise.** With the real-valued code ``e = gamma * log2(|x| / S) + c_max``:
  ``e >= 1/2`` gives ``c = min(floor(e + 1/2), c_max)`` (nearest in the log domain, ties
  up); ``1 - gamma <= e < 1/2`` gives ``c = 1``; ``e < 1 - gamma`` flushes to zero. The
  last two rows are nearest *in the linear domain* between 0 and the smallest magnitude
  ``m = S * 2^((1 - c_max) / gamma)``: ``|x| >= m / 2`` becomes ``m``, smaller values
  become 0. Exact zeros become code 0, sign 0. NaN and infinities raise ``ValueError``.
* **Multiply.** Signs XOR; codes add, ``e = c_a + c_b - c_max`` in the product's format
  (scale ``S_a * S_b``), then the same rule as quantising (integer ``e``): ``e >= 1``
  keeps it, ``1 - gamma <= e <= 0`` gives 1, smaller flushes to zero. A zero operand
  gives zero.
* **Dot product.** See :mod:`lowbit.config.lns`: ``p = (c_a - c_max) + (c_b - c_max)``,
  ``q = floor(p / gamma)``, ``r = p mod gamma``; a product adds ``+-(1 << (q + shift))``
  to ``acc[r]`` or is dropped when ``q + shift < 0``; ``total = bias +
  sum_r acc[r] * LUT[r]``; the output is ``total >> out_shift``.
  :func:`dot_partial_sums` (LNS-Madam's form) and :func:`dot_per_product` (each product
  converted to linear on its own: ``+-(LUT[r] << (q + shift))``) give the same ``total``
  bit for bit: both drop the same products, and integer multiplication distributes over
  the partial sums without rounding.
* **LNS-domain addition** (optional, reference only): :func:`add_codes`.
"""

import dataclasses

import numpy as np

from ..config.lns import LNSMacConfig, Rounding, lns_lut

__all__ = ["LNSTensor", "LNSMac", "scale_exponent", "quantize", "dequantize", "multiply",
           "product_fields", "dot_partial_sums", "dot_per_product", "finalize",
           "add_codes", "add_table", "wrap"]


def wrap(value, width):
    """Wrap an integer to ``width``-bit two's complement, as a register of that width does."""
    half = 1 << (width - 1)
    return ((value + half) & ((1 << width) - 1)) - half


def _c_max(bits):
    return (1 << (bits - 1)) - 1


@dataclasses.dataclass(frozen=True)
class LNSTensor:
    """An LNS-quantised tensor: per-element ``sign`` (0/1) and ``code``, one scale.

    Attributes
    ----------
    sign, code : numpy.ndarray of int64
        Same shape. ``code`` in ``0..2^(bits-1) - 1``; ``sign`` 1 means negative.
    scale_exp : int
        ``s`` of the per-tensor scale ``S = 2^s``.
    bits, gamma : int
        Word width and base ``2^(1/gamma)``.
    """

    sign: np.ndarray
    code: np.ndarray
    scale_exp: int
    bits: int = 8
    gamma: int = 8

    @property
    def c_max(self):
        return _c_max(self.bits)

    @property
    def shape(self):
        return self.code.shape

    def __getitem__(self, index):
        return dataclasses.replace(self, sign=self.sign[index], code=self.code[index])

    def words(self, config):
        """The elements as dicts in ``config.word_layout`` form (for beats)."""
        return [{"code": int(c), "sign": int(s)}
                for c, s in zip(self.code.ravel(), self.sign.ravel())]


def scale_exponent(x):
    """``ceil(log2(max |x|))``, computed exactly; 0 for an all-zero (or empty) tensor."""
    x = np.asarray(x, dtype=np.float64)
    top = float(np.max(np.abs(x))) if x.size else 0.0
    if top == 0.0:
        return 0
    mantissa, exponent = np.frexp(top)  # top = mantissa * 2^exponent, 0.5 <= mantissa < 1
    return int(exponent) - 1 if mantissa == 0.5 else int(exponent)


def quantize(x, *, bits=8, gamma=8, scale_exp=None):
    """Quantise real values to an :class:`LNSTensor` (rules in the module docstring)."""
    x = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError("LNS quantize needs finite values")
    s = scale_exponent(x) if scale_exp is None else int(scale_exp)
    c_max = _c_max(bits)
    mag = np.abs(x)
    nonzero = mag > 0
    with np.errstate(divide="ignore"):
        e = gamma * (np.log2(np.where(nonzero, mag, 1.0)) - s) + c_max
    code = np.clip(np.floor(e + 0.5), 1, c_max)
    code = np.where(e < 0.5, 1, code)
    code = np.where((e < 1 - gamma) | ~nonzero, 0, code).astype(np.int64)
    sign = ((x < 0) & (code > 0)).astype(np.int64)
    return LNSTensor(sign, code, s, bits, gamma)


def dequantize(t):
    """The real values an :class:`LNSTensor` encodes."""
    mag = np.exp2(t.scale_exp + (t.code - t.c_max) / t.gamma)
    return np.where(t.code > 0, np.where(t.sign > 0, -mag, mag), 0.0)


def multiply(a, b):
    """Elementwise product of two LNS tensors of the same format, in LNS (scale
    ``S_a * S_b``): exponent add, sign XOR, flush rule of :func:`quantize`."""
    if (a.bits, a.gamma) != (b.bits, b.gamma):
        raise ValueError(f"LNS formats differ: bits/gamma {a.bits}/{a.gamma} and "
                         f"{b.bits}/{b.gamma}")
    e = a.code + b.code - a.c_max
    nonzero = (a.code > 0) & (b.code > 0) & (e >= 1 - a.gamma)
    code = np.where(nonzero, np.maximum(e, 1), 0).astype(np.int64)
    sign = np.where(nonzero, a.sign ^ b.sign, 0).astype(np.int64)
    return LNSTensor(sign, code, a.scale_exp + b.scale_exp, a.bits, a.gamma)


def product_fields(a, b, shift):
    """Per product: ``(r, k, neg, kept)`` with ``k = q + shift``; ``kept`` is false for a
    zero operand or a dropped product (``k < 0``)."""
    c_max = a.c_max
    g = a.gamma.bit_length() - 1
    p = a.code + b.code - 2 * c_max
    q, r = p >> g, p & (a.gamma - 1)  # floor division and modulo, gamma = 2^g
    k = q + shift
    kept = (a.code > 0) & (b.code > 0) & (k >= 0)
    return r, np.where(kept, k, 0), (a.sign ^ b.sign).astype(bool), kept


def _dtype(width):
    # int64 while every intermediate fits; Python integers (object arrays) beyond.
    return np.int64 if width <= 62 else object


def _pow2(k, dtype):
    if dtype is object:
        return np.vectorize(lambda v: 1 << int(v), otypes=[object])(k) if k.size else \
            np.zeros(k.shape, dtype=object)
    return np.left_shift(np.int64(1), k.astype(np.int64))


def dot_partial_sums(a, b, *, lut_frac, shift):
    """LNS-Madam's form: ``(total, acc)`` over the last axis, ``total`` without the
    rounding bias, ``acc`` of shape ``(..., gamma)``: the ``gamma`` partial sums of
    ``+-(1 << (q + shift))``, then one constant multiply per remainder."""
    r, k, neg, kept = product_fields(a, b, shift)
    dtype = _dtype(shift + lut_frac + 2 + int(max(r.shape[-1:] or [1])).bit_length())
    terms = np.where(kept, _pow2(k, dtype), 0).astype(dtype)
    terms = np.where(neg, -terms, terms)
    lut = lns_lut(a.gamma, lut_frac)
    acc = np.stack([np.where(r == j, terms, 0).astype(dtype).sum(axis=-1)
                    for j in range(a.gamma)], axis=-1).astype(dtype)
    total = sum(acc[..., j] * lut[j] for j in range(a.gamma))
    return total, acc


def dot_per_product(a, b, *, lut_frac, shift):
    """The plain form: each product converted to linear on its own,
    ``+-(LUT[r] << (q + shift))``, and summed. Equals :func:`dot_partial_sums`' total."""
    r, k, neg, kept = product_fields(a, b, shift)
    dtype = _dtype(shift + lut_frac + 2 + int(max(r.shape[-1:] or [1])).bit_length())
    lut = np.array(lns_lut(a.gamma, lut_frac), dtype=dtype)
    terms = np.where(kept, lut[r] * _pow2(k, dtype), 0).astype(dtype)
    return np.where(neg, -terms, terms).sum(axis=-1)


def finalize(total, *, out_shift, rounding="nearest"):
    """``(total + bias) >> out_shift``: floor, or nearest with ties up."""
    bias = (1 << (out_shift - 1)) if Rounding(rounding) == Rounding.NEAREST and out_shift \
        else 0
    if isinstance(total, np.ndarray) and total.dtype == object:
        return np.vectorize(lambda v: (int(v) + bias) >> out_shift, otypes=[object])(total)
    return (total + bias) >> out_shift


def add_table(gamma):
    """``T[d] = round(gamma * log2(1 + 2^(-d / gamma)))`` (half up) for ``d = 0..D``, where
    ``T[D + 1] = 0`` and every later entry is zero as well."""
    table = []
    d = 0
    while True:
        entry = int(np.floor(gamma * np.log2(1 + 2.0 ** (-d / gamma)) + 0.5))
        if entry == 0:
            return tuple(table)
        table.append(entry)
        d += 1


def _mitchell(d, gamma):
    # log2(1 + y) ~ y and, for y = 2^(-d/gamma) with d = n * gamma + r (r < gamma),
    # 2^(-d/gamma) = 2^(-n-1) * 2^(1 - r/gamma) ~ 2^(-n-1) * (2 - r/gamma) (the antilog
    # half of Mitchell's approximation): gamma * y ~ (2 * gamma - r) >> (n + 1), rounded.
    n, r = d // gamma, d % gamma
    return ((2 * gamma - r) + (1 << n)) >> (n + 1)


def add_codes(code_a, code_b, *, gamma, bits, method="table"):
    """LNS-domain addition of two same-sign magnitudes (codes of one format and scale):
    ``max + gamma * log2(1 + 2^(-|a - b| / gamma))`` by ``"table"`` (exact to half a code)
    or ``"mitchell"`` (shifts only); saturates at ``c_max``. A zero code is zero."""
    if method not in ("table", "mitchell"):
        raise ValueError(f"method must be 'table' or 'mitchell', not {method!r}")
    code_a, code_b = np.asarray(code_a, dtype=np.int64), np.asarray(code_b, dtype=np.int64)
    d = np.abs(code_a - code_b)
    if method == "table":
        table = np.array(add_table(gamma) + (0,), dtype=np.int64)
        corr = table[np.minimum(d, len(table) - 1)]
    else:
        corr = np.vectorize(lambda v: _mitchell(int(v), gamma), otypes=[np.int64])(d) \
            if d.size else d
    out = np.minimum(np.maximum(code_a, code_b) + corr, _c_max(bits))
    return np.where(code_a == 0, code_b, np.where(code_b == 0, code_a, out))


class LNSMac:
    """Beat-level golden model of :class:`lowbit.hw.lns_mac.LNSMac`.

    Parameters
    ----------
    config : LNSMacConfig
        The same configuration object the gateware is built from.

    The partial accumulators wrap at ``config.accumulator_width`` bits and ``total`` at
    ``config.total_width`` bits, as the registers do; within ``max_k`` products neither
    wraps.
    """

    def __init__(self, config=None):
        config = LNSMacConfig() if config is None else config
        if not isinstance(config, LNSMacConfig):
            raise TypeError(f"config must be an LNSMacConfig, not {config!r}")
        self.config = config
        self.reset()

    def reset(self):
        """Clear the partial accumulators, as the gateware's reset does."""
        self.acc = [0] * self.config.gamma

    def _operands(self, words):
        code = np.array([w["code"] for w in words], dtype=np.int64)
        sign = np.array([w["sign"] for w in words], dtype=np.int64)
        return LNSTensor(sign, code, 0, self.config.bits, self.config.gamma)

    def step(self, beat):
        """Consume one beat (a dict in ``beat_layout`` form); return the output ``dot`` if
        it was the last beat of a dot product, else ``None``."""
        cfg = self.config
        a, b = self._operands(beat["a"]), self._operands(beat["b"])
        r, k, neg, kept = product_fields(a, b, cfg.frac_shift)
        sums = [0] * cfg.gamma
        for lane in range(cfg.lanes):
            if kept[lane]:
                sums[int(r[lane])] += -(1 << int(k[lane])) if neg[lane] else 1 << int(k[lane])
        for j in range(cfg.gamma):
            base = 0 if beat["first"] else self.acc[j]
            self.acc[j] = wrap(base + sums[j], cfg.accumulator_width)
        if not beat["last"]:
            return None
        total = cfg.rounding_bias
        for acc, entry in zip(self.acc, cfg.lut):
            total = wrap(total + acc * entry, cfg.total_width)
        return total >> cfg.output_shift

    def run(self, beats):
        """Consume beats in order; return the list of dot products they produce."""
        out = []
        for beat in beats:
            result = self.step(beat)
            if result is not None:
                out.append(result)
        return out

    def schedule(self, a, b):
        """Beats computing the dot product of two 1-D :class:`LNSTensor` of equal length
        (at least 1): ``lanes`` pairs per beat, zero codes padding the last beat."""
        cfg = self.config
        for t, name in ((a, "a"), (b, "b")):
            if (t.bits, t.gamma) != (cfg.bits, cfg.gamma):
                raise ValueError(f"operand {name} is {t.bits}-bit gamma={t.gamma}, the unit "
                                 f"{cfg.bits}-bit gamma={cfg.gamma}")
        if a.code.ndim != 1 or a.shape != b.shape or a.shape[0] < 1:
            raise ValueError(f"operands must be 1-D of one nonzero length, not {a.shape} and "
                             f"{b.shape}")
        wa, wb = a.words(cfg), b.words(cfg)
        pad = {"code": 0, "sign": 0}
        beats = []
        for start in range(0, len(wa), cfg.lanes):
            chunk_a = wa[start:start + cfg.lanes]
            chunk_b = wb[start:start + cfg.lanes]
            chunk_a += [pad] * (cfg.lanes - len(chunk_a))
            chunk_b += [pad] * (cfg.lanes - len(chunk_b))
            beats.append({"a": chunk_a, "b": chunk_b, "first": int(start == 0), "last": 0})
        beats[-1]["last"] = 1
        return beats

    def dot(self, a, b):
        """The unit's output for one dot product (through the beat-level model)."""
        (out,) = LNSMac(self.config).run(self.schedule(a, b))
        return out

    def dots(self, a, b):
        """Outputs for many dot products at once (``(..., K)`` operands, vectorised);
        equal to :meth:`dot` for ``K <= max_k``."""
        cfg = self.config
        total, _ = dot_partial_sums(a, b, lut_frac=cfg.lut_frac, shift=cfg.frac_shift)
        return finalize(total, out_shift=cfg.output_shift, rounding=cfg.rounding)

    def value(self, out, a, b):
        """The real value of output ``out`` for operands ``a`` and ``b``."""
        return np.asarray(out, dtype=np.float64) * self.config.result_scale(a.scale_exp,
                                                                            b.scale_exp)
