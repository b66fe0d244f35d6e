"""The LightNorm gateware against its golden model on Amaranth's simulator, bit for bit, with
random idle input cycles and output back-pressure."""

import re

import numpy as np
import pytest

from lowbit.bench.lightnorm import bn_parameters, digits_preactivations
from lowbit.config.lightnorm import LightNormConfig, Op
from lowbit.golden.lightnorm import LightNorm as LightNormModel
from lowbit.golden.lightnorm import fold_thresholds
from lowbit.hw.lightnorm import LightNorm
from lowbit.sim.amaranth_streams import run_stream_test
from lowbit.sim.lightnorm_vectors import random_beats, random_blocks, random_params

CONFIGS = {
    "bfp-2groups": dict(channels=8, block=4, mantissa=6, exponent=4, input_width=10),
    "bfp-truncate-clamps": dict(channels=8, block=8, mantissa=4, exponent=3,
                                rounding="truncate", input_width=12),
    "bfp-wide-noguard": dict(channels=8, block=4, mantissa=10, exponent=5, guard_bits=0,
                             input_width=16),
    "bfp-m2": dict(channels=4, block=2, mantissa=2, exponent=2, guard_bits=1, input_width=6),
    "sign": dict(channels=8, block=4, output="sign", input_width=8),
    "multithreshold": dict(channels=16, block=16, output="multithreshold", act_bits=3,
                           input_width=8),
}


def _run(config, beats, *, idle=0.3, stall=0.3, seed=0):
    model = LightNormModel(config)
    expected = model.run(beats)
    raw, cycles = run_stream_test(LightNorm(config), [model.encode(b) for b in beats],
                                  len(expected), idle=idle, stall=stall, seed=seed)
    return [model.decode(bits) for bits in raw], expected, cycles


@pytest.mark.parametrize("name", CONFIGS)
def test_random_beats_with_stalls(name):
    config = LightNormConfig(max_batch=64, **CONFIGS[name])
    beats = random_beats(config, np.random.default_rng(len(name)))
    got, expected, _ = _run(config, beats, seed=len(name))
    assert len(got) == len(expected)
    for n, (g, e) in enumerate(zip(got, expected)):
        assert g == e, f"result {n}: got {g}, expected {e}"


@pytest.mark.parametrize("name", ["bfp-2groups", "sign"])
def test_statistics_of_one_group_back_to_back(name):
    # Several groups keep their statistics in a memory read a stage ahead of the write:
    # a batch sent group by group puts every beat right behind one of its own group (the
    # read sees the write of the cycle through the port's transparency).
    config = LightNormConfig(max_batch=64, **CONFIGS[name])
    assert config.groups > 1
    rng = np.random.default_rng(11)
    model = LightNormModel(config)
    beats = model.load_beats([random_params(config, rng) for _ in range(config.groups)])
    x = np.array(random_blocks(config, rng, 20 * config.groups)).reshape(20, -1)
    stats = model.stat_beats(x)
    beats += sorted(stats, key=lambda b: b["group"])   # stable: samples in order per group
    for seed, stall in ((1, 0.0), (2, 0.4)):
        got, expected, _ = _run(config, beats, idle=0.0, stall=stall, seed=seed)
        assert got == expected and len(expected) == config.groups


@pytest.mark.parametrize("output", ["bfp", "sign"])
def test_back_to_back_throughput(output):
    # Without stalls one beat enters per cycle: cycles = beats + latency (+1 to start).
    config = LightNormConfig(channels=8, block=4, input_width=8, output=output, max_batch=64)
    beats = random_beats(config, np.random.default_rng(5), batches=1, applies=60)
    got, expected, cycles = _run(config, beats, idle=0.0, stall=0.0)
    assert got == expected
    last = max(i for i, b in enumerate(beats) if b["op"] != Op.LOAD)
    assert cycles <= last + 1 + LightNorm.latency_for(config) + 1


def test_statistics_to_host_to_normalise_on_digits():
    """The whole loop on realistic data: the gateware's STAT results are folded on the host
    (the only place with a divider) and loaded back; APPLY then matches the golden model
    and float range batch norm within the BFP bound."""
    config = LightNormConfig(channels=16, block=8, mantissa=8, input_width=8, max_batch=256)
    model = LightNormModel(config)
    x = digits_preactivations(16)[:128]
    got, expected, _ = _run(config, model.stat_beats(x), seed=1)
    assert got == expected
    total = np.array([s["sum"] for r in got for s in r["data"]["stats"]])
    spread = np.array([s["spread"] for r in got for s in r["data"]["stats"]])
    gamma, beta = bn_parameters(16)
    params, _, _ = model.fold_affine(total, spread, 128, gamma, beta)
    got, expected, _ = _run(config, model.load_beats(params) + model.apply_beats(x[:32]),
                            seed=2)
    assert got == expected
    vectorised = model.apply(x[:32], params)
    assert [r["data"]["out"]["exp"] for r in got] == vectorised.exp.reshape(-1).tolist()

    # Fused sign output from the same statistics: thresholds on integer x.
    sign = config.replace(output="sign")
    sign_model = LightNormModel(sign)
    mu = total / 128
    sigma = 1 / np.sqrt(2 * np.log(128 / 8)) * spread / 8
    t, flip = fold_thresholds(mu, sigma, gamma, beta, [0.0], 8)
    beats = sign_model.load_beats(sign_model.threshold_params(t, flip))
    got, expected, _ = _run(sign, beats + sign_model.apply_beats(x[:32]), seed=3)
    assert got == expected
    bits = np.array([r["data"]["out"] for r in got]).reshape(32, 16)
    assert np.array_equal(bits, (gamma * (x[:32] - mu) / sigma + beta >= 0).astype(int))


def test_rejects_bad_config():
    with pytest.raises(TypeError, match=re.escape("config must be a LightNormConfig, not 4")):
        LightNorm(4)
