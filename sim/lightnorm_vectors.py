"""Test vectors for the LightNorm unit, shared by the Amaranth-simulator tests and the cocotb
testbench: random parameter loads, statistics batches and blocks whose magnitudes sweep every
leading-one position, all-zero blocks and extreme values."""

import numpy as np

from ..config.lightnorm import Op

__all__ = ["random_params", "random_blocks", "random_beats"]


def random_params(config, rng):
    """One group's parameters drawn over their whole ranges (exponent clamps included)."""
    b = config.block
    if config.output == "bfp":
        mlo, mhi = -(1 << (config.mantissa - 1)), 1 << (config.mantissa - 1)
        lo, hi = config.emin, config.emax
        if rng.random() < 0.3:  # anywhere: exercises exponent clamps and saturation
            es, eo = (int(v) for v in rng.integers(lo, hi + 1, 2))
        else:  # realistic: scale * x of the same order as the offset
            es = int(np.clip(rng.integers(-config.input_width, 2), lo, hi))
            typical = config.input_width // 2 + es
            eo = int(np.clip(typical + rng.integers(-3, 4), lo, hi))
        return {"scale": rng.integers(mlo, mhi, b).tolist(), "scale_exp": es,
                "offset": rng.integers(mlo, mhi, b).tolist(), "offset_exp": eo}
    xmax = (1 << (config.input_width - 1)) - 1
    # Thresholds mostly near small inputs, sometimes at the clamp values min - 1 / max + 1.
    t = rng.integers(-xmax - 2, xmax + 2, size=(b, config.thresholds))
    near = rng.integers(-8, 9, size=(b, config.thresholds))
    t = np.where(rng.random((b, config.thresholds)) < 0.6, near, t)
    return {"t": np.sort(t, axis=1).tolist(), "flip": rng.integers(0, 2, b).tolist()}


def random_blocks(config, rng, count):
    """``count`` blocks of inputs: each block has its own magnitude (1 to full scale), some
    are all zero, some hold the extremes ``-2^(w-1)`` and ``2^(w-1) - 1``."""
    w = config.input_width
    out = []
    for _ in range(count):
        kind = rng.random()
        if kind < 0.05:
            block = np.zeros(config.block, dtype=np.int64)
        elif kind < 0.1:
            block = rng.choice([-(1 << (w - 1)), (1 << (w - 1)) - 1, 0, 1, -1],
                               config.block)
        else:
            bits = int(rng.integers(1, w + 1))
            block = rng.integers(-(1 << (bits - 1)), 1 << (bits - 1), config.block)
        out.append([int(v) for v in block])
    return out


def random_beats(config, rng, batches=2, samples=12, applies=40):
    """A run mixing every operation: loads, statistics batches (chunks by the model's
    rule, groups interleaved), applies, a reload and another batch."""
    from ..golden.lightnorm import LightNorm

    model = LightNorm(config)
    beats = model.load_beats([random_params(config, rng) for _ in range(config.groups)])
    for k in range(batches):
        n = min(samples + k * 5, config.max_batch)
        x = np.array(random_blocks(config, rng, n * config.groups)).reshape(n, -1)
        beats += model.stat_beats(x)
        x = np.array(random_blocks(config, rng, applies)).reshape(-1, config.block)
        beats += [{"op": Op.APPLY, "group": int(rng.integers(config.groups)),
                   "data": {"x": row.tolist()}} for row in x]
        g = int(rng.integers(config.groups))
        beats.append({"op": Op.LOAD, "group": g, "data": {"params": random_params(config,
                                                                                  rng)}})
    return beats
