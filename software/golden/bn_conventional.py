"""Golden model of the conventional batch-norm unit (fixed point, true variance, integer
square root): what :class:`lowbit.hw.bn_conventional.BNConventional` computes, bit for bit.
The arithmetic is documented on :class:`~lowbit.config.bn_conventional.BNConventionalConfig`.
"""

import math

import numpy as np

from ..config.bn_conventional import BNConventionalConfig, Op

__all__ = ["BNConventional"]


def _wrap(value, width):
    half = 1 << (width - 1)
    return ((int(value) + half) & ((1 << width) - 1)) - half


class BNConventional:
    """Python golden model of :class:`lowbit.hw.bn_conventional.BNConventional`.

    Parameters
    ----------
    config : BNConventionalConfig

    Raises
    ------
    TypeError
        If ``config`` is not a :class:`BNConventionalConfig`.
    """

    def __init__(self, config=None):
        config = BNConventionalConfig() if config is None else config
        if not isinstance(config, BNConventionalConfig):
            raise TypeError(f"config must be a BNConventionalConfig, not {config!r}")
        self.config = config
        self.reset()

    def reset(self):
        """Clear the statistics and (as at power-on) the parameters."""
        cfg = self.config
        self.sum = [[0] * cfg.block for _ in range(cfg.groups)]
        self.sumsq = [[0] * cfg.block for _ in range(cfg.groups)]
        self.params = [{"a": [0] * cfg.block, "c": [0] * cfg.block} for _ in range(cfg.groups)]

    def _check(self, name, values, bits):
        lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        for v in np.asarray(values).reshape(-1):
            if not lo <= int(v) <= hi:
                raise ValueError(f"BNConventional {name} holds {int(v)}, outside the "
                                 f"{bits}-bit signed range [{lo}, {hi}]")

    def step(self, beat):
        """Consume one beat dict; return a result dict or ``None``."""
        cfg = self.config
        op, g = Op(beat["op"]), beat.get("group", 0)
        if op == Op.LOAD:
            p = beat["data"]["params"]
            self._check("a", p["a"], cfg.coef_bits)
            self._check("c", p["c"], cfg.acc_bits)
            self.params[g] = {"a": list(p["a"]), "c": list(p["c"])}
            return None
        x = [int(v) for v in beat["data"]["x"]]
        self._check("input", x, cfg.input_width)
        if op == Op.APPLY:
            p = self.params[g]
            lo, hi = -(1 << (cfg.output_width - 1)), (1 << (cfg.output_width - 1)) - 1
            half = (1 << cfg.frac_bits) >> 1
            out = []
            for xi, a, c in zip(x, p["a"], p["c"]):
                acc = _wrap(a * xi + c, cfg.acc_bits + 1)
                out.append(min(max((acc + half) >> cfg.frac_bits, lo), hi))
            return {"op": op, "group": g, "data": {"out": out}}
        first = beat.get("first", 0)
        for i, xi in enumerate(x):
            self.sum[g][i] = _wrap((0 if first else self.sum[g][i]) + xi, cfg.sum_bits)
            sq = (0 if first else self.sumsq[g][i]) + xi * xi
            self.sumsq[g][i] = sq & ((1 << cfg.sumsq_bits) - 1)
        if not beat.get("last", 0):
            return None
        stats = []
        for i in range(cfg.block):
            mu = self.sum[g][i] >> cfg.batch_log2
            var = max(0, (self.sumsq[g][i] >> cfg.batch_log2) - mu * mu)
            var &= (1 << cfg.var_bits) - 1
            stats.append({"mu": mu, "var": var, "sigma": math.isqrt(var)})
        return {"op": op, "group": g, "data": {"stats": stats}}

    def run(self, beats):
        """Consume beats in order; return the results."""
        return [r for r in (self.step(b) for b in beats) if r is not None]

    def encode(self, beat):
        return self.config.beat_layout.const(beat).as_bits()

    def decode(self, bits):
        """A result dict from raw output bits (only the member its ``op`` selects)."""
        view = self.config.result_layout.from_bits(bits)
        op = Op(view.op)
        if op == Op.STAT:
            body = {"stats": [{"mu": s.mu, "var": s.var, "sigma": s.sigma}
                              for s in view.data.stats]}
        else:
            body = {"out": [int(v) for v in view.data.out]}
        return {"op": op, "group": int(view.group), "data": body}

    def stat_beats(self, x):
        """``STAT`` beats of a batch ``x`` of ``(2^batch_log2, channels)`` integers."""
        cfg = self.config
        x = np.asarray(x).reshape(-1, cfg.groups, cfg.block)
        if x.shape[0] != cfg.batch:
            raise ValueError(f"BNConventional batches hold exactly {cfg.batch} samples, "
                             f"not {x.shape[0]}")
        n = x.shape[0]
        return [{"op": Op.STAT, "group": g, "first": int(i == 0), "last": int(i == n - 1),
                 "data": {"x": x[i, g].tolist()}} for i in range(n) for g in range(cfg.groups)]

    def apply_beats(self, x):
        cfg = self.config
        x = np.asarray(x).reshape(-1, cfg.groups, cfg.block)
        return [{"op": Op.APPLY, "group": g, "data": {"x": x[i, g].tolist()}}
                for i in range(x.shape[0]) for g in range(cfg.groups)]

    def fold(self, mu, sigma, gamma, beta):
        """Host-side: per-group ``LOAD`` parameters ``a = gamma / sigma``, ``c = beta - a*mu``
        in fixed point (the division lives here, as for LightNorm)."""
        cfg = self.config
        scale = 1 << cfg.frac_bits
        sigma = np.maximum(np.asarray(sigma, dtype=np.float64), 1.0)
        a = np.rint(np.asarray(gamma) / sigma * scale)
        a = np.clip(a, -(1 << (cfg.coef_bits - 1)), (1 << (cfg.coef_bits - 1)) - 1)
        c = np.rint(np.asarray(beta) * scale - a * np.asarray(mu))
        c = np.clip(c, -(1 << (cfg.acc_bits - 1)), (1 << (cfg.acc_bits - 1)) - 1)
        a = a.astype(np.int64).reshape(cfg.groups, cfg.block)
        c = c.astype(np.int64).reshape(cfg.groups, cfg.block)
        return [{"a": a[g].tolist(), "c": c[g].tolist()} for g in range(cfg.groups)]
