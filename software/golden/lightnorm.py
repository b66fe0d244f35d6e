"""Golden model of the LightNorm-style batch-norm unit: what
:class:`lowbit.hw.lightnorm.LightNorm` computes, beat by beat and bit for bit, plus the float
references it approximates (docs/arithmetic.md, sections 2 and 3).

Three layers:

* :class:`LightNorm` models the hardware on beats (``beat_layout`` of the configuration):
  ``LOAD`` parameters, ``STAT`` statistics, ``APPLY`` outputs, including register
  wrap-around. Vectorised equivalents (:meth:`LightNorm.statistics`, :meth:`LightNorm.apply`)
  process whole batches.
* Host-side folding (:meth:`LightNorm.fold_affine`, :func:`fold_thresholds`) turns
  statistics and batch-norm parameters into the parameters the unit loads. Every division
  and square root lives here, not in the datapath.
* Float references: :func:`batchnorm` (true variance), :func:`range_batchnorm`.

Range batch norm (Banner et al. 2018), pinned:

* A channel's ``n`` samples are split into ``K`` chunks the way ``numpy.array_split``
  does: the first ``n % K`` chunks hold ``n // K + 1`` samples, the others ``n // K``.
  (The hardware obeys the ``chunk`` flags of its beats; :meth:`LightNorm.stat_beats` sets
  them by this rule.) Folding needs ``n >= 2K`` so that every chunk has two samples.
* ``range = (sum_k max_k - sum_k min_k) / K``, ``C(n) = 1 / sqrt(2 ln(n / K))`` with the
  real ``n / K`` even when it is not an integer, ``sigma ~ C(n) * range``.
* ``y = gamma * (x - mu) / (C(n) * range + eps) + beta``, folded to
  ``y = scale * x + offset`` with ``scale = gamma / (C(n) * range + eps)`` and
  ``offset = beta - scale * mu``; ``scale`` and ``offset`` are quantised to BFP per block
  of channels and the unit computes :func:`lowbit.golden.bfp.affine`.

Threshold outputs (section 2): output = number of thresholds passed, where a channel's
thresholds are passed when ``x >= t`` (``gamma > 0``) or ``x <= t`` (``gamma < 0``, the
``flip`` bit); ``gamma == 0`` becomes a threshold nothing or everything passes. ``sign``
mode has one threshold (level 0, so equality gives +1); its output bit 1 means +1.
"""

import math
from fractions import Fraction

import numpy as np

from ..config.lightnorm import LightNormConfig, Op
from .bfp import BFP, BFPFormat, affine, quantize

__all__ = ["LightNorm", "chunk_starts", "range_scale", "batchnorm", "range_batchnorm",
           "fold_thresholds", "threshold_reference", "wrap"]


def wrap(value, width):
    """Wrap integers to ``width``-bit two's complement, as a register of that width does."""
    half = 1 << (width - 1)
    return ((np.asarray(value, dtype=np.int64) + half) & ((1 << width) - 1)) - half


def chunk_starts(n, chunks):
    """Indices of the first sample of each nonempty chunk (``numpy.array_split`` rule)."""
    base, extra = divmod(n, chunks)
    starts, pos = [], 0
    for k in range(chunks):
        size = base + (1 if k < extra else 0)
        if size:
            starts.append(pos)
        pos += size
    return starts


def range_scale(n, chunks):
    """``C(n) = 1 / sqrt(2 ln(n / K))``: the range-to-sigma factor of Gaussian data."""
    if n <= chunks:
        raise ValueError(f"range batch norm needs more samples than chunks: n={n}, "
                         f"chunks={chunks}")
    return 1.0 / math.sqrt(2.0 * math.log(n / chunks))


def batchnorm(x, gamma, beta, eps=1e-5):
    """Float batch norm with the true (biased) batch variance; ``x`` is ``(n, C)``."""
    x = np.asarray(x, dtype=np.float64)
    mu, var = x.mean(axis=0), x.var(axis=0)
    return gamma * (x - mu) / np.sqrt(var + eps) + beta


def _range_stats(x, chunks):
    x = np.asarray(x)
    maxs = [c.max(axis=0) for c in np.array_split(x, chunks, axis=0) if len(c)]
    mins = [c.min(axis=0) for c in np.array_split(x, chunks, axis=0) if len(c)]
    return x.sum(axis=0), np.sum(maxs, axis=0) - np.sum(mins, axis=0)


def range_batchnorm(x, gamma, beta, chunks=8, eps=1e-5):
    """Float range batch norm (the exact-arithmetic version of what the unit computes)."""
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[0]
    total, spread = _range_stats(x, chunks)
    mu = total / n
    sigma = range_scale(n, chunks) * spread / chunks
    return gamma * (x - mu) / (sigma + eps) + beta


def _exact(value):
    return Fraction(float(value))


def fold_thresholds(mu, sigma, gamma, beta, levels, input_width):
    """Integer thresholds for ``count(bn(x) >= level)`` on integer ``x`` (section 2).

    ``bn(x) = gamma * (x - mu) / sigma + beta`` with the given float parameters, evaluated
    exactly (every float is an exact rational). For ``gamma > 0`` level ``l`` is passed iff
    ``x >= ceil(tau)``, ``tau = mu + (l - beta) * sigma / gamma``; for ``gamma < 0`` iff
    ``x <= floor(tau)`` (``flip``); ``gamma == 0`` passes iff ``beta >= l``. Thresholds are
    clamped to ``[xmin, xmax + 1]`` (``[xmin - 1, xmax]`` flipped), which keeps the count
    exact for every representable ``x``.

    Returns ``(t, flip)``: ``t`` of shape ``(C, len(levels))`` and ``flip`` of ``(C,)``.
    """
    mu, sigma, gamma, beta = (np.atleast_1d(np.asarray(v, dtype=np.float64))
                              for v in (mu, sigma, gamma, beta))
    channels = max(len(mu), len(sigma), len(gamma), len(beta))
    mu, sigma, gamma, beta = (np.broadcast_to(v, (channels,)) for v in (mu, sigma, gamma,
                                                                           beta))
    if np.any(sigma <= 0):
        raise ValueError("sigma must be positive")
    xmin, xmax = -(1 << (input_width - 1)), (1 << (input_width - 1)) - 1
    t = np.zeros((channels, len(levels)), dtype=np.int64)
    flip = (gamma < 0).astype(np.int64)
    for c in range(channels):
        g, b = _exact(gamma[c]), _exact(beta[c])
        for j, level in enumerate(levels):
            level = _exact(level)
            if g == 0:
                t[c, j] = xmin if b >= level else xmax + 1
                continue
            tau = _exact(mu[c]) + (level - b) * _exact(sigma[c]) / g
            if g > 0:
                t[c, j] = min(max(math.ceil(tau), xmin), xmax + 1)
            else:
                t[c, j] = min(max(math.floor(tau), xmin - 1), xmax)
    return t, flip


def threshold_reference(x, mu, sigma, gamma, beta, levels):
    """Exact ``count_j(bn(x) >= level_j)`` for integer ``x`` of shape ``(n, C)``, with
    ``bn`` in exact rational arithmetic of the float parameters (slow; for tests)."""
    x = np.asarray(x)
    out = np.zeros(x.shape, dtype=np.int64)
    params = [np.broadcast_to(np.asarray(v, dtype=np.float64), (x.shape[1],))
              for v in (mu, sigma, gamma, beta)]
    for c in range(x.shape[1]):
        mu_c, sigma_c, gamma_c, beta_c = (_exact(p[c]) for p in params)
        for i in range(x.shape[0]):
            y = gamma_c * (int(x[i, c]) - mu_c) / sigma_c + beta_c
            out[i, c] = sum(y >= _exact(level) for level in levels)
    return out


class LightNorm:
    """Numpy golden model of :class:`lowbit.hw.lightnorm.LightNorm`.

    Parameters
    ----------
    config : LightNormConfig
        The same configuration object the gateware is built from.

    Raises
    ------
    TypeError
        If ``config`` is not a :class:`LightNormConfig`.
    """

    def __init__(self, config=None):
        config = LightNormConfig() if config is None else config
        if not isinstance(config, LightNormConfig):
            raise TypeError(f"config must be a LightNormConfig, not {config!r}")
        self.config = config
        self.format = BFPFormat.of(config)
        self.reset()

    def reset(self):
        """Clear the statistics (as the gateware's reset does) and the parameters (as at
        power-on: the parameter memory starts zeroed but a reset does not clear it)."""
        cfg = self.config
        zeros = lambda: np.zeros((cfg.groups, cfg.block), dtype=np.int64)  # noqa: E731
        self.sum, self.cmax, self.cmin, self.smax, self.smin = (zeros() for _ in range(5))
        self.params = [self._zero_params() for _ in range(cfg.groups)]

    def _zero_params(self):
        cfg = self.config
        if cfg.output == "bfp":
            return {"scale": [0] * cfg.block, "scale_exp": 0, "offset": [0] * cfg.block,
                    "offset_exp": 0}
        return {"t": [[0] * cfg.thresholds for _ in range(cfg.block)],
                "flip": [0] * cfg.block}

    # Range checks of everything a beat carries ----------------------------------------

    @staticmethod
    def _check(name, values, bits, signed=True):
        values = np.asarray(values)
        if not np.issubdtype(values.dtype, np.integer):
            raise TypeError(f"LightNorm {name} must hold integers, not {values.dtype}")
        lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0,
                                                                           (1 << bits) - 1)
        bad = values[(values < lo) | (values > hi)]
        if bad.size:
            kind = "signed" if signed else "unsigned"
            raise ValueError(f"LightNorm {name} holds {int(bad.flat[0])}, outside the "
                             f"{bits}-bit {kind} range [{lo}, {hi}]")

    def check_params(self, params):
        """Raise ``ValueError`` unless one group's parameters fit the parameter layout."""
        cfg = self.config
        if cfg.output == "bfp":
            for key in ("scale", "offset"):
                values = np.asarray(params[key])
                if values.shape != (cfg.block,):
                    raise ValueError(f"LightNorm {key} needs {cfg.block} mantissas, not shape "
                                     f"{values.shape}")
                self._check(key, values, cfg.mantissa)
                self._check(f"{key}_exp", params[f"{key}_exp"], cfg.exponent)
        else:
            t = np.asarray(params["t"])
            if t.shape != (cfg.block, cfg.thresholds):
                raise ValueError(f"LightNorm thresholds need shape ({cfg.block}, "
                                 f"{cfg.thresholds}), not {t.shape}")
            self._check("thresholds", t, cfg.threshold_bits)
            self._check("flip", params["flip"], 1, signed=False)

    def check_inputs(self, x):
        """Raise ``ValueError`` unless ``x`` fits ``input_width``-bit signed integers."""
        self._check("input", x, self.config.input_width)

    # Beat-level model -------------------------------------------------------------------

    def step(self, beat):
        """Consume one beat (a dict in ``beat_layout`` form); return a result dict (in
        ``result_layout`` form) or ``None``."""
        cfg = self.config
        op, group = Op(beat["op"]), beat.get("group", 0)
        if not 0 <= group < cfg.groups:
            raise ValueError(f"LightNorm group {group} is outside 0..{cfg.groups - 1}")
        if op == Op.LOAD:
            params = beat["data"]["params"]
            self.check_params(params)
            self.params[group] = params
            return None
        x = np.asarray(beat["data"]["x"], dtype=np.int64)
        self.check_inputs(x)
        if op == Op.STAT:
            return self._stat(group, x, beat.get("first", 0), beat.get("chunk", 0),
                              beat.get("last", 0))
        return {"op": Op.APPLY, "group": group, "data": {"out": self._apply_block(group, x)}}

    def _stat(self, g, x, first, chunk, last):
        cfg = self.config
        new = first or chunk
        ext = cfg.extreme_bits
        self.sum[g] = wrap((0 if first else self.sum[g]) + x, cfg.sum_bits)
        if first:
            self.smax[g], self.smin[g] = 0, 0
        elif chunk:
            self.smax[g] = wrap(self.smax[g] + self.cmax[g], ext)
            self.smin[g] = wrap(self.smin[g] + self.cmin[g], ext)
        self.cmax[g] = x if new else np.maximum(self.cmax[g], x)
        self.cmin[g] = x if new else np.minimum(self.cmin[g], x)
        if not last:
            return None
        spread = wrap(wrap(self.smax[g] + self.cmax[g], ext) - wrap(self.smin[g] + self.cmin[g],
                                                                       ext), cfg.spread_bits)
        stats = [{"sum": int(s), "spread": int(r)} for s, r in zip(self.sum[g], spread)]
        return {"op": Op.STAT, "group": g, "data": {"stats": stats}}

    def _apply_block(self, g, x):
        cfg, p = self.config, self.params[g]
        if cfg.output == "bfp":
            out = affine(quantize(x, self.format), self._bfp(p["scale_exp"], p["scale"]),
                         self._bfp(p["offset_exp"], p["offset"]), self.format, cfg.guard_bits)
            return {"exp": int(out.exp), "man": [int(v) for v in out.man]}
        return [int(v) for v in self._count(x, np.asarray(p["t"]), np.asarray(p["flip"]))]

    @staticmethod
    def _bfp(exp, man):
        return BFP(np.asarray(exp, dtype=np.int64), np.asarray(man, dtype=np.int64))

    @staticmethod
    def _count(x, t, flip):
        # x: (..., B); t: (B, T); flip: (B,). Thresholds passed per channel.
        x = np.asarray(x)[..., None]
        passed = np.where(flip[:, None] == 1, x <= t, x >= t)
        return passed.sum(axis=-1).astype(np.int64)

    def run(self, beats):
        """Consume beats in order; return the list of results they produce."""
        results = []
        for beat in beats:
            result = self.step(beat)
            if result is not None:
                results.append(result)
        return results

    # Encoding to and from the stream layouts -------------------------------------------

    def encode(self, beat):
        """The raw bits of a beat dict in ``beat_layout``."""
        return self.config.beat_layout.const(beat).as_bits()

    def decode(self, bits):
        """A result dict from the raw bits of an output beat (only the member its ``op``
        selects, so it compares equal to :meth:`step`'s result)."""
        cfg = self.config
        view = cfg.result_layout.from_bits(bits)
        op = Op(view.op)
        out = {"op": op, "group": int(view.group)}
        if op == Op.STAT:
            out["data"] = {"stats": [{"sum": s.sum, "spread": s.spread}
                                     for s in view.data.stats]}
        elif cfg.output == "bfp":
            out["data"] = {"out": {"exp": view.data.out.exp,
                                   "man": [int(v) for v in view.data.out.man]}}
        else:
            out["data"] = {"out": [int(v) for v in view.data.out]}
        return out

    # Beat schedules -----------------------------------------------------------------------

    def _blocks(self, x):
        cfg = self.config
        x = np.asarray(x, dtype=np.int64)
        if x.ndim != 2 or x.shape[1] != cfg.channels:
            raise ValueError(f"LightNorm inputs must be (n, {cfg.channels}), not {x.shape}")
        self.check_inputs(x)
        return x.reshape(x.shape[0], cfg.groups, cfg.block)

    def load_beats(self, params):
        """``LOAD`` beats for a list of per-group parameter dicts."""
        if len(params) != self.config.groups:
            raise ValueError(f"LightNorm needs parameters for {self.config.groups} groups, "
                             f"not {len(params)}")
        for p in params:
            self.check_params(p)
        return [{"op": Op.LOAD, "group": g, "data": {"params": p}}
                for g, p in enumerate(params)]

    def stat_beats(self, x):
        """``STAT`` beats over a batch ``x`` of shape ``(n, channels)``: sample-major,
        groups in order, ``chunk`` flags by the ``numpy.array_split`` rule."""
        cfg = self.config
        blocks = self._blocks(x)
        n = blocks.shape[0]
        if not 1 <= n <= cfg.max_batch:
            raise ValueError(f"LightNorm batch of {n} samples is outside "
                             f"1..max_batch={cfg.max_batch}")
        starts = set(chunk_starts(n, cfg.chunks))
        return [{"op": Op.STAT, "group": g, "first": int(i == 0), "chunk": int(i in starts),
                 "last": int(i == n - 1), "data": {"x": [int(v) for v in blocks[i, g]]}}
                for i in range(n) for g in range(cfg.groups)]

    def apply_beats(self, x):
        """``APPLY`` beats for samples ``x`` of shape ``(n, channels)``."""
        blocks = self._blocks(x)
        return [{"op": Op.APPLY, "group": g, "data": {"x": [int(v) for v in blocks[i, g]]}}
                for i in range(blocks.shape[0]) for g in range(self.config.groups)]

    # Vectorised model and host-side folding -------------------------------------------------

    def statistics(self, x):
        """Exact ``(sum, spread)`` per channel of a batch, as ``STAT`` beats produce them."""
        cfg = self.config
        blocks = self._blocks(x).reshape(-1, cfg.channels)
        total, spread = _range_stats(blocks, cfg.chunks)
        return wrap(total, cfg.sum_bits), wrap(spread, cfg.spread_bits)

    def fold_affine(self, total, spread, n, gamma, beta, eps=1e-5):
        """Fold statistics and ``gamma``, ``beta`` into per-group BFP parameters.

        Host-side (this is where the division and square root of batch norm go):
        ``mu = total / n``, ``sigma = C(n) * spread / K``, ``scale = gamma / (sigma + eps)``,
        ``offset = beta - scale * mu``. Returns ``(params, scale, offset)`` with ``params`` a
        list of ``LOAD`` parameter dicts and the float ``scale`` and ``offset``.
        """
        cfg = self.config
        if n < 2 * cfg.chunks:
            raise ValueError(f"range batch norm needs at least 2 samples per chunk: "
                             f"n={n}, chunks={cfg.chunks}")
        mu = np.asarray(total, dtype=np.float64) / n
        sigma = range_scale(n, cfg.chunks) * np.asarray(spread, dtype=np.float64) / cfg.chunks
        scale = np.broadcast_to(np.asarray(gamma, dtype=np.float64), mu.shape) / (sigma + eps)
        offset = np.asarray(beta, dtype=np.float64) - scale * mu
        return self.affine_params(scale, offset), scale, offset

    def affine_params(self, scale, offset):
        """Per-group ``LOAD`` parameter dicts of float per-channel ``scale`` and ``offset``."""
        cfg = self.config
        if cfg.output != "bfp":
            raise ValueError("affine parameters need output mode 'bfp'")
        s = quantize(np.asarray(scale, dtype=np.float64).reshape(cfg.groups, cfg.block),
                     self.format)
        o = quantize(np.asarray(offset, dtype=np.float64).reshape(cfg.groups, cfg.block),
                     self.format)
        return [{"scale": [int(v) for v in s.man[g]], "scale_exp": int(s.exp[g]),
                 "offset": [int(v) for v in o.man[g]], "offset_exp": int(o.exp[g])}
                for g in range(cfg.groups)]

    def threshold_params(self, t, flip):
        """Per-group ``LOAD`` parameter dicts of thresholds ``t`` ``(C, T)`` and ``flip``."""
        cfg = self.config
        t = np.asarray(t).reshape(cfg.groups, cfg.block, cfg.thresholds)
        flip = np.asarray(flip).reshape(cfg.groups, cfg.block)
        return [{"t": t[g].tolist(), "flip": flip[g].tolist()} for g in range(cfg.groups)]

    def apply(self, x, params):
        """Vectorised ``APPLY`` of samples ``x`` ``(n, channels)`` with per-group
        ``params``: a :class:`BFP` of shape ``(n, groups)`` in ``bfp`` mode, else integer
        outputs ``(n, channels)``. Equal to the beat-level model's results."""
        cfg = self.config
        for p in params:
            self.check_params(p)
        blocks = self._blocks(x)
        if cfg.output == "bfp":
            scale = BFP(np.array([p["scale_exp"] for p in params]),
                        np.array([p["scale"] for p in params]))
            offset = BFP(np.array([p["offset_exp"] for p in params]),
                         np.array([p["offset"] for p in params]))
            return affine(quantize(blocks, self.format), scale, offset, self.format,
                          cfg.guard_bits)
        out = np.stack([self._count(blocks[:, g], np.asarray(p["t"]), np.asarray(p["flip"]))
                        for g, p in enumerate(params)], axis=1)
        return out.reshape(-1, cfg.channels)
