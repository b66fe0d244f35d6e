"""Golden model of the XNOR-popcount array: what :class:`lowbit.hw.xnor_array.XNORArray`
computes, beat by beat and bit for bit (docs/arithmetic.md, section 1).

Two layers:

* :class:`XNORArray` models the hardware: it consumes the same beats (``beat_layout`` of the
  configuration) and produces the same result tiles, including accumulator wrap-around.
* :meth:`XNORArray.schedule` turns integer operand tiles into beats (bit planes, Horner
  order, padding), and :meth:`XNORArray.matmul` tiles a whole ``A x B^T`` through the model.

Encoding (docs/arithmetic.md, section 1.1): bit 1 is +1, bit 0 is -1, ``sign(0) = +1``.
Element ``t`` of a word is bit ``t`` (least significant bit first). Padding bits are zero in
both operands: AND beats ignore them; XNOR beats count them as matches, which the first
beat's ``offset`` cancels.
"""

import dataclasses
import re

import numpy as np

from ..config.xnor_array import Op, XNORArrayConfig

__all__ = ["Precision", "XNORArray", "binarize", "pack_words", "bit_planes", "wrap"]


@dataclasses.dataclass(frozen=True)
class Precision:
    """Number format of one operand: ``binary`` (+-1), ``unsigned`` or ``signed`` k-bit."""

    kind: str
    bits: int = 1

    def __post_init__(self):
        if self.kind not in ("binary", "unsigned", "signed"):
            raise ValueError(f"precision kind must be 'binary', 'unsigned' or 'signed', "
                             f"not {self.kind!r}")
        if not isinstance(self.bits, int) or isinstance(self.bits, bool):
            raise TypeError(f"precision bits must be an integer, not {self.bits!r}")
        low = 2 if self.kind == "signed" else 1
        high = 1 if self.kind == "binary" else 8
        if not low <= self.bits <= high:
            raise ValueError(f"{self.kind} precision needs {low}..{high} bits, not {self.bits}")

    @classmethod
    def parse(cls, text):
        """Parse ``"binary"``, ``"uint2"``..``"uint8"`` or ``"int2"``..``"int8"``."""
        if isinstance(text, Precision):
            return text
        if text in ("binary", "bin", "b1"):
            return cls("binary", 1)
        match = re.fullmatch(r"(u?)int([0-9]+)", str(text))
        if not match:
            raise ValueError(f"precision must be 'binary', 'uintK' or 'intK', not {text!r}")
        return cls("unsigned" if match.group(1) else "signed", int(match.group(2)))

    @property
    def range(self):
        """Inclusive (min, max) of the values this precision holds."""
        if self.kind == "binary":
            return -1, 1
        if self.kind == "unsigned":
            return 0, (1 << self.bits) - 1
        return -(1 << (self.bits - 1)), (1 << (self.bits - 1)) - 1

    def check(self, values, name):
        """Raise ``ValueError`` unless every value is representable."""
        values = np.asarray(values)
        if not np.issubdtype(values.dtype, np.integer):
            raise TypeError(f"{name} must hold integers, not {values.dtype}")
        if self.kind == "binary":
            bad = values[(values != 1) & (values != -1)]
        else:
            low, high = self.range
            bad = values[(values < low) | (values > high)]
        if bad.size:
            raise ValueError(f"{name} holds {int(bad.flat[0])}, outside {self}")

    def __str__(self):
        return {"binary": "binary", "unsigned": f"uint{self.bits}",
                "signed": f"int{self.bits}"}[self.kind]


def wrap(value, width):
    """Wrap an integer to ``width``-bit two's complement, as a register of that width does."""
    half = 1 << (width - 1)
    return ((value + half) & ((1 << width) - 1)) - half


def binarize(x):
    """+-1 from real values with ``sign(0) = +1`` (``x >= 0``), docs/arithmetic.md, section 1.1."""
    return np.where(np.asarray(x) >= 0, 1, -1).astype(np.int64)


def bit_planes(values, precision):
    """Decompose integers into bit planes: a list of ``(bits, exponent, sign)``.

    ``values == sum(sign * 2**exponent * bits)`` elementwise, with ``bits`` boolean arrays.
    A +-1 operand ``2b - 1`` gives ``(b, 1, +1)`` and ``(ones, 0, -1)``; signed k-bit
    operands give their top plane sign -1 (two's complement).
    """
    values = np.asarray(values, dtype=np.int64)
    if precision.kind == "binary":
        return [(values > 0, 1, 1), (np.ones(values.shape, dtype=bool), 0, -1)]
    planes = []
    raw = values & ((1 << precision.bits) - 1)
    for j in range(precision.bits):
        top = precision.kind == "signed" and j == precision.bits - 1
        planes.append((((raw >> j) & 1).astype(bool), j, -1 if top else 1))
    return planes


def pack_words(bits, word):
    """Pack a ``(n, K)`` boolean array into ``(n, ceil(K/word))`` Python-int words.

    Element ``t`` of a word is bit ``t``; positions past ``K`` are zero padding.
    """
    bits = np.asarray(bits, dtype=bool)
    n, k = bits.shape
    nwords = max(1, -(-k // word))
    padded = np.zeros((n, nwords * word), dtype=bool)
    padded[:, :k] = bits
    out = []
    for row in padded.reshape(n, nwords, word):
        row_words = []
        for w in row:
            packed = np.packbits(w, bitorder="little").tobytes()
            row_words.append(int.from_bytes(packed, "little"))
        out.append(row_words)
    return out


class XNORArray:
    """Numpy/Python golden model of :class:`lowbit.hw.xnor_array.XNORArray`.

    Parameters
    ----------
    config : XNORArrayConfig
        The same configuration object the gateware is built from.
    """

    def __init__(self, config=None):
        config = XNORArrayConfig() if config is None else config
        if not isinstance(config, XNORArrayConfig):
            raise TypeError(f"config must be an XNORArrayConfig, not {config!r}")
        self.config = config
        self.reset()

    def reset(self):
        """Clear the accumulators (their power-up value in the gateware).

        The gateware's accumulators have no reset of their own (a tile's ``first`` beat
        loads them), so a beat stream must start each tile with ``first``, as
        :meth:`schedule` does; the model and the gateware then agree whatever came before.
        """
        cfg = self.config
        self.acc = [[0] * cfg.cols for _ in range(cfg.rows)]

    # Beat-level model -----------------------------------------------------------------

    def step(self, beat):
        """Consume one beat (a dict in ``beat_layout`` form); return a tile if it was last."""
        cfg = self.config
        mask = (1 << cfg.word) - 1
        width = cfg.accumulator_width
        op = Op(beat["op"])
        xnor = cfg.binary_only or op == Op.XNOR
        # A binary-only array runs single XNOR passes: it ignores op, dbl and neg.
        sign = -1 if beat["neg"] and not cfg.binary_only else 1
        scale = 2 if beat["dbl"] and not cfg.binary_only else 1
        for i in range(cfg.rows):
            a = beat["a"][i]
            for j in range(cfg.cols):
                b = beat["b"][j]
                if xnor:
                    x = 2 * ((~(a ^ b)) & mask).bit_count()
                else:
                    x = (a & b & mask).bit_count()
                base = beat["offset"] if beat["first"] else self.acc[i][j] * scale
                self.acc[i][j] = wrap(base + sign * x, width)
        if beat["last"]:
            return [row[:] for row in self.acc]
        return None

    def run(self, beats):
        """Consume beats in order; return the list of result tiles they produce."""
        tiles = []
        for beat in beats:
            tile = self.step(beat)
            if tile is not None:
                tiles.append(tile)
        return tiles

    # Operands to beats ----------------------------------------------------------------

    def schedule(self, a, b, act="binary", weight="binary"):
        """Beats that compute one tile ``a @ b.T`` (``a``: up to ``rows x K``, ``b``: up to
        ``cols x K``, integers in the given precisions).

        Binary x binary runs one XNOR pass; anything else runs AND passes over bit-plane
        pairs, grouped by total exponent from the top down (Horner: ``dbl`` on the first beat
        of each lower group).

        Raises ``ValueError`` when the operands do not fit the configuration.
        """
        cfg = self.config
        act, weight = Precision.parse(act), Precision.parse(weight)
        a, b = np.asarray(a), np.asarray(b)
        if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
            raise ValueError(f"operand tiles must be (r, K) and (c, K), not {a.shape} and "
                             f"{b.shape}")
        rows, k = a.shape
        cols = b.shape[0]
        if not (1 <= rows <= cfg.rows and 1 <= cols <= cfg.cols):
            raise ValueError(f"tile {rows}x{cols} does not fit a {cfg.rows}x{cfg.cols} array")
        if not 1 <= k <= cfg.max_k:
            raise ValueError(f"reduction length {k} is outside 1..max_k={cfg.max_k}")
        for prec, limit, name in ((act, cfg.max_act_bits, "activation"),
                                  (weight, cfg.max_weight_bits, "weight")):
            if prec.bits > limit:
                raise ValueError(f"{name} precision {prec} exceeds the array's {limit} bits")
        binary = act.kind == "binary" and weight.kind == "binary"
        if cfg.binary_only and not binary:
            raise ValueError("this array is binary only (max_act_bits = max_weight_bits = 1)")
        act.check(a, "activations")
        weight.check(b, "weights")
        a, b = a.astype(np.int64), b.astype(np.int64)

        nwords = -(-k // cfg.word)
        if binary:
            passes = [[(a > 0, b > 0, 1, Op.XNOR)]]
        else:
            groups = {}
            for pa, ea, sa in bit_planes(a, act):
                for pb, eb, sb in bit_planes(b, weight):
                    groups.setdefault(ea + eb, []).append((pa, pb, sa * sb, Op.AND))
            top = max(groups)
            assert sorted(groups) == list(range(top + 1)), "bit-plane exponents have a gap"
            passes = [groups[e] for e in range(top, -1, -1)]

        beats = []
        for g, group in enumerate(passes):
            for p, (pa, pb, sign, op) in enumerate(group):
                wa, wb = pack_words(pa, cfg.word), pack_words(pb, cfg.word)
                for w in range(nwords):
                    beats.append({
                        "a": [wa[i][w] if i < rows else 0 for i in range(cfg.rows)],
                        "b": [wb[j][w] if j < cols else 0 for j in range(cfg.cols)],
                        "op": op,
                        "first": int(not beats),
                        "last": 0,
                        "dbl": int(g > 0 and p == 0 and w == 0),
                        "neg": int(sign < 0),
                        "offset": 0,
                    })
        beats[-1]["last"] = 1
        if binary:
            # 2 * popcount over T = nwords * word positions counts each of the K valid
            # elements as +-1 plus K, and each zero padding pair as a match: subtract 2T - K.
            beats[0]["offset"] = k - 2 * nwords * cfg.word
        return beats

    def tiles(self, a, b, act="binary", weight="binary"):
        """Yield ``(row0, col0, beats)`` covering ``a @ b.T`` tile by tile."""
        a, b = np.asarray(a), np.asarray(b)
        cfg = self.config
        for r0 in range(0, a.shape[0], cfg.rows):
            for c0 in range(0, b.shape[0], cfg.cols):
                yield r0, c0, self.schedule(a[r0:r0 + cfg.rows], b[c0:c0 + cfg.cols],
                                            act, weight)

    def matmul(self, a, b, act="binary", weight="binary"):
        """``a @ b.T`` computed tile by tile through the beat-level model."""
        a, b = np.asarray(a), np.asarray(b)
        out = np.zeros((a.shape[0], b.shape[0]), dtype=np.int64)
        for r0, c0, beats in self.tiles(a, b, act, weight):
            (tile,) = self.run(beats)
            rows, cols = min(self.config.rows, a.shape[0] - r0), min(self.config.cols,
                                                                      b.shape[0] - c0)
            out[r0:r0 + rows, c0:c0 + cols] = np.array(tile)[:rows, :cols]
        return out
