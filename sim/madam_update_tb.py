"""cocotb testbench of the generated LNS-Madam update Verilog against the golden model.

Run it through :func:`lowbit.sim.runner.run_cocotb` (``lowbit sim madam-update``), which
passes the configuration in ``$LOWBIT_CONFIG``.
"""

import random

import cocotb
import numpy as np
from cocotb.clock import Clock

from ..config.madam import MadamUpdateConfig
from ..golden.madam import MadamUpdate
from .cocotb_streams import collect, drive, reset
from .madam_vectors import edge_beats, random_beats
from .runner import config_from_env

__all__ = []


async def _check(dut, beats, *, idle, stall, seed):
    config = config_from_env(MadamUpdateConfig)
    expected = MadamUpdate(config).run(beats)
    payloads = [config.beat_layout.const(b).as_bits() for b in beats]
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    await reset(dut)
    rng = random.Random(seed)
    cocotb.start_soon(drive(dut, payloads, rng, idle))
    raw, cycles = await collect(dut, len(expected), rng, stall, 20 * len(beats) + 100)
    layout = config.result_layout
    for n, (bits, e) in enumerate(zip(raw, expected)):
        got = layout.from_bits(bits)
        g = [{"code": int(got.w[i].code), "sign": int(got.w[i].sign)}
             for i in range(config.lanes)]
        assert g == e["w"], f"beat {n}: got {g}, expected {e['w']}"
    return cycles


@cocotb.test()
async def random_and_edge_updates_with_stalls(dut):
    """Random weights and gradients and the rule's edges, with idle and back-pressure."""
    config = config_from_env(MadamUpdateConfig)
    beats = random_beats(config, np.random.default_rng(1)) + edge_beats(config)
    await _check(dut, beats, idle=0.3, stall=0.3, seed=2)


@cocotb.test()
async def back_to_back_throughput(dut):
    """Without stalls: one beat per cycle."""
    config = config_from_env(MadamUpdateConfig)
    beats = random_beats(config, np.random.default_rng(4), 40)
    cycles = await _check(dut, beats, idle=0.0, stall=0.0, seed=5)
    assert cycles <= len(beats) + 5, (len(beats), cycles)
