"""Test workloads for the LNS and int8 MAC units, shared by the Amaranth-simulator tests,
the cocotb testbenches and the benchmark, plus the cocotb stream drivers both testbenches
use: random dot products of random length (zeros, both signs, extreme codes), edge cases
(every product full scale, every product dropped, the longest dot product, one element).
"""

import numpy as np

from ..config.int8_mac import Int8MacConfig
from ..golden.int8_mac import Int8Mac
from ..golden.lns import LNSMac, LNSTensor

__all__ = ["random_jobs", "edge_jobs", "beats_for", "random_int8_jobs", "edge_int8_jobs",
           "int8_beats_for"]


def _tensor(config, code, sign):
    code = np.asarray(code, dtype=np.int64)
    sign = np.asarray(sign, dtype=np.int64)
    return LNSTensor(sign, code, 0, config.bits, config.gamma)


def _codes(config, rng, k):
    # A mix: uniform codes, a cluster near full scale (the products that use q = 0, the
    # widest terms), zeros, and the extremes 1 and c_max.
    c_max = config.c_max
    kind = rng.integers(0, 4, k)
    codes = np.where(kind == 0, rng.integers(0, c_max + 1, k),
                     np.where(kind == 1, rng.integers(max(1, c_max - 2 * config.gamma),
                                                      c_max + 1, k),
                              np.where(kind == 2, 0, rng.choice([1, c_max], k))))
    return codes


def random_jobs(config, rng, count, max_len=None):
    """``count`` random ``(a, b)`` pairs of 1-D LNS tensors of random length."""
    max_len = min(config.max_k, max_len or 4 * config.lanes + 3)
    jobs = []
    for _ in range(count):
        k = int(rng.integers(1, max_len + 1))
        jobs.append((_tensor(config, _codes(config, rng, k), rng.integers(0, 2, k)),
                     _tensor(config, _codes(config, rng, k), rng.integers(0, 2, k))))
    return jobs


def edge_jobs(config):
    """Edge cases: full-scale products of both signs over the longest dot product (the
    widest accumulations), one element, all zeros with sign bits set, products that are
    all dropped (or just kept), and every remainder once."""
    c_max, k = config.c_max, config.max_k
    ones = np.ones(k, dtype=np.int64)
    jobs = [
        (_tensor(config, c_max * ones, 0 * ones), _tensor(config, c_max * ones, 0 * ones)),
        (_tensor(config, c_max * ones, ones), _tensor(config, c_max * ones, 0 * ones)),
        (_tensor(config, [c_max], [1]), _tensor(config, [c_max], [1])),
        (_tensor(config, [0], [1]), _tensor(config, [c_max], [1])),
        (_tensor(config, [1, 1, 0], [0, 1, 1]), _tensor(config, [1, c_max, 0], [1, 1, 1])),
    ]
    # q = -shift (kept) and q = -shift - 1 (dropped) at r = 0, where reachable.
    for q in (-config.frac_shift, -config.frac_shift - 1):
        p = q * config.gamma
        if 2 - 2 * c_max <= p:
            cb = max(1, p + 2 * c_max - c_max)
            ca = p + 2 * c_max - cb
            jobs.append((_tensor(config, [ca, ca], [0, 1]), _tensor(config, [cb, cb], [0, 0])))
    # Every remainder: p = -r for r = 0..gamma-1 (b full scale).
    r = np.arange(config.gamma)
    jobs.append((_tensor(config, c_max - r, r % 2), _tensor(config, np.full(len(r), c_max),
                                                          np.zeros(len(r), dtype=np.int64))))
    return jobs


def beats_for(config, jobs):
    """The beats of all ``jobs`` back to back and the golden outputs they produce."""
    golden = LNSMac(config)
    beats = []
    for a, b in jobs:
        beats += golden.schedule(a, b)
    return beats, LNSMac(config).run(beats)


def random_int8_jobs(config, rng, count, max_len=None):
    """``count`` random int8 ``(a, b)`` pairs of random length (full range, -128 included)."""
    max_len = min(config.max_k, max_len or 4 * config.lanes + 3)
    jobs = []
    for _ in range(count):
        k = int(rng.integers(1, max_len + 1))
        jobs.append((rng.integers(-128, 128, k), rng.integers(-128, 128, k)))
    return jobs


def edge_int8_jobs(config):
    """The widest accumulations (``-128 * -128`` and ``-128 * 127`` over ``max_k``), one
    element, zeros."""
    k = config.max_k
    return [(np.full(k, -128), np.full(k, -128)), (np.full(k, -128), np.full(k, 127)),
            (np.array([-128]), np.array([127])), (np.zeros(3, dtype=np.int64),
                                                  np.array([5, -6, 7]))]


def int8_beats_for(config, jobs):
    """The beats of all int8 ``jobs`` and the golden outputs."""
    assert isinstance(config, Int8MacConfig)
    golden = Int8Mac(config)
    beats = []
    for a, b in jobs:
        beats += golden.schedule(a, b)
    return beats, Int8Mac(config).run(beats)
