"""cocotb testbench of the generated LightNorm Verilog against the golden model.

Run it through :func:`lowbit.sim.runner.run_cocotb` (``lowbit sim lightnorm``), which passes
the configuration in ``$LOWBIT_CONFIG``. Three tests share one build: random operations with
random idle cycles and back-pressure, the host loop (the unit's own statistics folded on the
host and loaded back), and back-to-back throughput.
"""

import os
import random

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import RisingEdge

from ..config.lightnorm import LightNormConfig
from ..golden.lightnorm import LightNorm, fold_thresholds, range_scale
from ..hw.lightnorm import LightNorm as LightNormUnit
from .lightnorm_vectors import random_beats
from .cocotb_streams import collect, drive, reset
from .runner import config_from_env

__all__ = []


async def _start(dut):
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    await reset(dut)


async def _transact(dut, model, beats, rng, *, idle, stall):
    """Send ``beats``, check every result against ``model`` (which consumes them too);
    return ``(results, cycles)``."""
    expected = model.run(beats)
    cocotb.start_soon(drive(dut, [model.encode(b) for b in beats], rng, idle))
    raw, cycles = await collect(dut, len(expected), rng, stall, 20 * len(beats) + 100)
    got = [model.decode(bits) for bits in raw]
    for n, (g, e) in enumerate(zip(got, expected)):
        assert g == e, f"result {n}: got {g}, expected {e}"
    # Let the last result leave before the next transaction drives new beats.
    await RisingEdge(dut.clk)
    return got, cycles


@cocotb.test()
async def random_operations_with_stalls(dut):
    """Loads, statistics batches and applies over whole parameter ranges, with stalls."""
    config = config_from_env(LightNormConfig)
    await _start(dut)
    model = LightNorm(config)
    batches = int(os.environ.get("LOWBIT_BATCHES", "4"))
    beats = random_beats(config, np.random.default_rng(1), batches=batches, samples=24,
                         applies=150)
    got, cycles = await _transact(dut, model, beats, random.Random(2), idle=0.3, stall=0.4)
    dut._log.info("%d beats, %d results, %d cycles", len(beats), len(got), cycles)


@cocotb.test()
async def host_folds_the_units_statistics(dut):
    """STAT on a batch, fold the unit's own statistics on the host (division and square
    root live there), LOAD the result and APPLY: the real host flow, checked bit-exactly."""
    config = config_from_env(LightNormConfig)
    await _start(dut)
    model = LightNorm(config)
    rng = np.random.default_rng(3)
    n = min(config.max_batch, max(4 * config.chunks, 48))
    limit = (1 << (config.input_width - 1)) - 1
    centre = rng.integers(-limit // 4, limit // 4 + 1, config.channels)
    spread = rng.integers(1, limit // 8 + 2, config.channels)
    x = np.clip(np.rint(rng.normal(centre, spread, size=(n, config.channels))), -limit,
                limit).astype(np.int64)
    prng = random.Random(4)
    stats, _ = await _transact(dut, model, model.stat_beats(x), prng, idle=0.2, stall=0.2)
    total = np.array([s["sum"] for r in stats for s in r["data"]["stats"]])
    ranges = np.array([s["spread"] for r in stats for s in r["data"]["stats"]])
    gamma = rng.uniform(0.5, 2.0, config.channels) * rng.choice([-1, 1], config.channels)
    gamma[0] = 0.0
    beta = rng.normal(0.0, 0.5, config.channels)
    if config.output == "bfp":
        params, _, _ = model.fold_affine(total, ranges, n, gamma, beta)
    else:
        sigma = range_scale(n, config.chunks) * ranges / config.chunks + 1e-5
        levels = [0.0] if config.output == "sign" else [
            (j - 0.5) * 0.5 for j in range(1, config.thresholds + 1)]
        t, flip = fold_thresholds(total / n, sigma, gamma, beta, levels, config.input_width)
        params = model.threshold_params(t, flip)
    await _transact(dut, model, model.load_beats(params) + model.apply_beats(x), prng,
                    idle=0.2, stall=0.2)


@cocotb.test()
async def back_to_back_throughput(dut):
    """Without stalls one beat is taken per cycle: cycles = beats + pipeline latency."""
    config = config_from_env(LightNormConfig)
    await _start(dut)
    model = LightNorm(config)
    beats = random_beats(config, np.random.default_rng(5), batches=1, samples=16, applies=100)
    # End on a beat with a result. The leading LOADs matter: reset clears the statistics
    # but not the parameter memory, which still holds the previous test's parameters.
    while beats[-1]["op"].name == "LOAD":
        beats.pop()
    _, cycles = await _transact(dut, model, beats, random.Random(6), idle=0.0, stall=0.0)
    latency = LightNormUnit.latency_for(config)
    assert cycles <= len(beats) + latency + 1, (len(beats), cycles)
