"""cocotb testbench of the generated conventional batch-norm Verilog against its golden
model (``lowbit sim bn-conventional``): statistics batches, loads and applies with random
idle cycles and back-pressure, including the stall of the bit-serial square root."""

import random

import cocotb
import numpy as np

from ..config.bn_conventional import BNConventionalConfig, Op
from ..golden.bn_conventional import BNConventional
from .lightnorm_tb import _start, _transact
from .runner import config_from_env

__all__ = ["random_beats"]


def random_beats(config, rng, batches=3, applies=20):
    """Statistics batches of inputs at random magnitudes, random parameter loads, applies."""
    model = BNConventional(config)
    w = config.input_width
    beats = []
    for _ in range(batches):
        x = rng.integers(-(1 << (w - 1)), 1 << (w - 1), size=(config.batch, config.channels))
        x = x >> rng.integers(0, w, size=(1, config.channels))
        beats += model.stat_beats(x)
        for g in range(config.groups):
            a = rng.integers(-(1 << (config.coef_bits - 1)), 1 << (config.coef_bits - 1),
                             config.block)
            c = rng.integers(-(1 << (config.acc_bits - 1)), 1 << (config.acc_bits - 1),
                             config.block) >> int(rng.integers(0, config.acc_bits))
            params = {"a": a.tolist(), "c": c.tolist()}
            beats.append({"op": Op.LOAD, "group": g, "data": {"params": params}})
        beats += model.apply_beats(x[:applies] >> int(rng.integers(0, 4)))
    return beats


@cocotb.test()
async def random_operations_with_stalls(dut):
    """Every operation, with stalls, against the golden model."""
    config = config_from_env(BNConventionalConfig)
    await _start(dut)
    model = BNConventional(config)
    beats = random_beats(config, np.random.default_rng(1))
    got, cycles = await _transact(dut, model, beats, random.Random(2), idle=0.3, stall=0.3)
    dut._log.info("%d beats, %d results, %d cycles", len(beats), len(got), cycles)
