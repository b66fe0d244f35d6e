"""cocotb testbench of the generated int8 MAC Verilog against the golden model.

Run it through :func:`lowbit.sim.runner.run_cocotb` (``lowbit sim int8-mac``), which passes
the configuration in ``$LOWBIT_CONFIG``.
"""

import random

import cocotb
import numpy as np
from cocotb.clock import Clock

from ..config.int8_mac import Int8MacConfig
from .cocotb_streams import collect, drive, reset
from .lns_mac_vectors import edge_int8_jobs, int8_beats_for, random_int8_jobs
from .runner import config_from_env

__all__ = []


async def _check(dut, jobs, *, idle, stall, seed):
    config = config_from_env(Int8MacConfig)
    beats, expected = int8_beats_for(config, jobs)
    payloads = [config.beat_layout.const(b).as_bits() for b in beats]
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    await reset(dut)
    rng = random.Random(seed)
    cocotb.start_soon(drive(dut, payloads, rng, idle))
    raw, cycles = await collect(dut, len(expected), rng, stall, 20 * len(beats) + 100)
    got = [config.result_layout.from_bits(bits).dot for bits in raw]
    for n, (g, e) in enumerate(zip(got, expected)):
        assert g == e, f"dot product {n}: got {g}, expected {e}"
    return len(beats), cycles


@cocotb.test()
async def random_and_edge_dot_products_with_stalls(dut):
    """Random int8 dot products and the widest accumulations, with idle and back-pressure."""
    config = config_from_env(Int8MacConfig)
    jobs = random_int8_jobs(config, np.random.default_rng(1), 80) + edge_int8_jobs(config)
    await _check(dut, jobs, idle=0.3, stall=0.3, seed=2)


@cocotb.test()
async def back_to_back_throughput(dut):
    """Without stalls: one beat per cycle."""
    config = config_from_env(Int8MacConfig)
    jobs = random_int8_jobs(config, np.random.default_rng(4), 20)
    beats, cycles = await _check(dut, jobs, idle=0.0, stall=0.0, seed=5)
    assert cycles <= beats + 5, (beats, cycles)
