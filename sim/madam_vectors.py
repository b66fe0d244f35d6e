"""Test beats for the LNS-Madam update unit: random ones and the edges of its rule."""

__all__ = ["random_beats", "edge_beats"]


def _beat(config, words, grads, lr):
    pad = config.lanes - len(words)
    return {"w": [{"code": c, "sign": s} for c, s in words] + [{"code": 0, "sign": 0}] * pad,
            "grad": list(grads) + [0] * pad, "lr_exponent": lr}


def random_beats(config, rng, count=60):
    """``count`` beats of random weights, gradients and exponents (every field value the
    layout can hold, out-of-range exponents included)."""
    lo, hi = -(1 << (config.grad_bits - 1)), 1 << (config.grad_bits - 1)
    lr_values = 1 << config.beat_layout["lr_exponent"].shape.width
    return [_beat(config,
                  [(int(rng.integers(config.c_max + 1)), int(rng.integers(2)))
                   for _ in range(config.lanes)],
                  [int(v) for v in rng.integers(lo, hi, config.lanes)],
                  int(rng.integers(lr_values)))
            for _ in range(count)]


def edge_beats(config):
    """Beats at the rule's edges, one lane at a time: zero codes of both signs, the largest
    code under a shrinking and a growing step, the smallest code crossing zero, the extreme
    gradients, every exponent."""
    lo, hi = -(1 << (config.grad_bits - 1)), (1 << (config.grad_bits - 1)) - 1
    words = [(0, 0), (0, 1), (1, 0), (1, 1), (config.c_max, 0), (config.c_max, 1),
             (config.c_max - 1, 1), (2, 0)]
    beats = []
    for lr in range(config.max_lr_exponent + 1):
        for g in (lo, -1, 0, 1, hi):
            for start in range(0, len(words), config.lanes):
                chunk = words[start:start + config.lanes]
                beats.append(_beat(config, chunk, [g] * len(chunk), lr))
    return beats
