"""cocotb testbench of the generated XNOR-array Verilog against the golden model.

Run it through :func:`lowbit.sim.runner.run_cocotb` (``lowbit sim xnor-array``), which
passes the configuration in ``$LOWBIT_CONFIG``.
"""

import os
import random
import time

import cocotb
import numpy as np
from cocotb.clock import Clock

from ..config.xnor_array import XNORArrayConfig
from .cocotb_streams import collect, drive, reset
from .runner import config_from_env
from .xnor_array_vectors import beats_for, edge_jobs, random_jobs

__all__ = []


async def _check(dut, jobs, *, idle, stall, seed):
    config = config_from_env(XNORArrayConfig)
    beats, expected = beats_for(config, jobs)
    payloads = [config.beat_layout.const(b).as_bits() for b in beats]
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    await reset(dut)
    rng = random.Random(seed)
    cocotb.start_soon(drive(dut, payloads, rng, idle))
    start = time.perf_counter()
    raw, cycles = await collect(dut, len(expected), rng, stall, 20 * len(beats) + 100)
    elapsed = time.perf_counter() - start
    layout = config.result_layout
    got = [[[layout.from_bits(bits)[i][j] for j in range(config.cols)]
            for i in range(config.rows)] for bits in raw]
    for n, (g, e) in enumerate(zip(got, expected)):
        assert g == e, f"tile {n}: got {g}, expected {e}"
    dut._log.info("%d beats, %d tiles, %d cycles, %.0f cycles/s", len(beats), len(expected),
                  cycles, cycles / max(elapsed, 1e-9))
    return len(beats), cycles


@cocotb.test()
async def random_tiles_with_stalls(dut):
    """Random tiles in every precision, random idle input and output back-pressure."""
    config = config_from_env(XNORArrayConfig)
    count = int(os.environ.get("LOWBIT_TILES", "60"))
    jobs = random_jobs(config, np.random.default_rng(1), count)
    await _check(dut, jobs, idle=0.3, stall=0.3, seed=2)


@cocotb.test()
async def edge_cases(dut):
    """All +1, all -1, N = 1, N = word +- 1, the widest accumulations, with stalls."""
    config = config_from_env(XNORArrayConfig)
    await _check(dut, edge_jobs(config), idle=0.2, stall=0.5, seed=3)


@cocotb.test()
async def back_to_back_throughput(dut):
    """Without stalls, tiles stream back to back: cycles = beats + pipeline latency."""
    config = config_from_env(XNORArrayConfig)
    jobs = random_jobs(config, np.random.default_rng(4), 20)
    beats, cycles = await _check(dut, jobs, idle=0.0, stall=0.0, seed=5)
    # The collector starts counting in the cycle the first beat is offered.
    assert cycles <= beats + config.pipeline + 2, (beats, cycles)
