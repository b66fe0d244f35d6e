"""cocotb testbench of the generated LNS MAC Verilog against the golden model, bit for bit.

Run it through :func:`lowbit.sim.runner.run_cocotb` (``lowbit sim lns-mac``), which passes
the configuration in ``$LOWBIT_CONFIG``. ``$LOWBIT_DOTS`` sets the number of random dot
products (default 120).
"""

import os
import random
import time

import cocotb
import numpy as np
from cocotb.clock import Clock

from ..config.lns import LNSMacConfig
from .cocotb_streams import collect, drive, reset
from .lns_mac_vectors import beats_for, edge_jobs, random_jobs
from .runner import config_from_env

__all__ = []


async def _check(dut, jobs, *, idle, stall, seed):
    config = config_from_env(LNSMacConfig)
    beats, expected = beats_for(config, jobs)
    payloads = [config.beat_layout.const(b).as_bits() for b in beats]
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    await reset(dut)
    rng = random.Random(seed)
    cocotb.start_soon(drive(dut, payloads, rng, idle))
    start = time.perf_counter()
    timeout = (config.gamma + 4) * (len(beats) + len(expected)) * 20 + 100
    raw, cycles = await collect(dut, len(expected), rng, stall, timeout)
    elapsed = time.perf_counter() - start
    got = [config.result_layout.from_bits(bits).dot for bits in raw]
    for n, (g, e) in enumerate(zip(got, expected)):
        assert g == e, f"dot product {n}: got {g}, expected {e}"
    dut._log.info("%d beats, %d dot products, %d cycles, %.0f cycles/s", len(beats),
                  len(expected), cycles, cycles / max(elapsed, 1e-9))
    return len(beats), cycles


@cocotb.test()
async def random_dot_products_with_stalls(dut):
    """Random lengths, zeros, both signs, extreme codes; random idle and back-pressure."""
    config = config_from_env(LNSMacConfig)
    count = int(os.environ.get("LOWBIT_DOTS", "120"))
    jobs = random_jobs(config, np.random.default_rng(1), count)
    await _check(dut, jobs, idle=0.3, stall=0.3, seed=2)


@cocotb.test()
async def edge_cases(dut):
    """Longest full-scale sums of both signs, one element, signed zeros, the drop
    boundary, every remainder; heavy back-pressure."""
    config = config_from_env(LNSMacConfig)
    await _check(dut, edge_jobs(config), idle=0.2, stall=0.6, seed=3)


@cocotb.test()
async def long_dot_products_stream_without_bubbles(dut):
    """Dot products of at least gamma + 2 beats: one beat per cycle."""
    config = config_from_env(LNSMacConfig)
    length = min(config.max_k, config.lanes * (config.gamma + 3))
    rng = np.random.default_rng(4)
    jobs = [job for job in random_jobs(config, rng, 6, max_len=config.max_k)]
    jobs = [(a, b) for a, b in jobs if a.shape[0] >= length] or random_jobs(
        config, rng, 1, max_len=length)
    beats, cycles = await _check(dut, jobs, idle=0.0, stall=0.0, seed=5)
    if length >= config.lanes * (config.gamma + 2):
        assert cycles <= beats + config.gamma + 6, (beats, cycles)
