"""Test workloads for the XNOR array, shared by the Amaranth-simulator tests, the cocotb
testbench and the benchmark: random tiles in every supported precision and the edge cases
(all +1, all -1, N = 1, N not a multiple of the word, the widest accumulations)."""

import numpy as np

from ..golden.xnor_array import Precision, XNORArray

__all__ = ["random_operands", "random_jobs", "edge_jobs", "beats_for"]


def random_operands(rng, precision, shape):
    """Uniform random integers of ``precision`` (+-1 for binary)."""
    precision = Precision.parse(precision)
    if precision.kind == "binary":
        return rng.integers(0, 2, shape) * 2 - 1
    low, high = precision.range
    return rng.integers(low, high + 1, shape)


def _precisions(config):
    pairs = [("binary", "binary")]
    if not config.binary_only:
        act = f"uint{config.max_act_bits}" if config.max_act_bits > 1 else "binary"
        weight = f"int{config.max_weight_bits}" if config.max_weight_bits > 1 else "binary"
        pairs += [(act, weight)]
        if config.max_weight_bits >= 2:
            pairs += [("uint2", "binary"), ("binary", "int2")]
        if config.max_act_bits >= 2 and config.max_weight_bits >= 2:
            pairs += [("uint2", "int2")]
    return pairs


def random_jobs(config, rng, count):
    """``count`` random ``(a, b, act, weight)`` tiles of random shape and precision."""
    pairs = _precisions(config)
    jobs = []
    for _ in range(count):
        act, weight = pairs[rng.integers(len(pairs))]
        k = int(rng.integers(1, min(config.max_k, 4 * config.word) + 1))
        rows = int(rng.integers(1, config.rows + 1))
        cols = int(rng.integers(1, config.cols + 1))
        jobs.append((random_operands(rng, act, (rows, k)),
                     random_operands(rng, weight, (cols, k)), act, weight))
    return jobs


def edge_jobs(config):
    """Edge-case tiles: all +1, all -1, N = 1, N = word +- 1, the widest accumulation."""
    r, c, w = config.rows, config.cols, config.word
    ones = lambda rows, k: np.ones((rows, k), dtype=np.int64)  # noqa: E731
    jobs = [
        (ones(r, w), ones(c, w), "binary", "binary"),
        (-ones(r, w), -ones(c, w), "binary", "binary"),
        (ones(r, w), -ones(c, w), "binary", "binary"),
        (ones(r, 1), -ones(c, 1), "binary", "binary"),
        (-ones(r, 1), -ones(c, 1), "binary", "binary"),
    ]
    for k in sorted({max(1, w - 1), w + 1, config.max_k}):
        if k <= config.max_k:
            jobs.append((-ones(r, k), ones(c, k), "binary", "binary"))
            jobs.append((-ones(r, k), -ones(c, k), "binary", "binary"))
    if not config.binary_only:
        k = config.max_k
        act, weight = Precision.parse(f"uint{max(config.max_act_bits, 2)}"), None
        if config.max_act_bits >= 2 and config.max_weight_bits >= 2:
            weight = Precision("signed", config.max_weight_bits)
            top = act.range[1]
            jobs.append((top * ones(r, k), weight.range[0] * ones(c, k), str(act), str(weight)))
            jobs.append((top * ones(r, k), weight.range[1] * ones(c, k), str(act), str(weight)))
    return jobs


def beats_for(config, jobs):
    """The beats of all ``jobs`` back to back and the golden result tiles they produce."""
    golden = XNORArray(config)
    beats = []
    for a, b, act, weight in jobs:
        beats += golden.schedule(a, b, act, weight)
    return beats, XNORArray(config).run(beats)
