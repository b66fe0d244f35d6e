"""The LNS MAC's and int8 MAC's generated Verilog against their golden models in cocotb
(Verilator; Icarus when installed), through the runner ``lowbit sim`` uses. One build per
configuration and simulator (cached); each run batches random dot products with stalls,
edge cases and a throughput check."""

import pytest

from lowbit.sim.runner import run_cocotb
from lowbit.units import get_unit

from conftest import simulator_params


@pytest.mark.cocotb
@pytest.mark.parametrize("simulator", simulator_params())
def test_lns_mac_verilog_matches_golden(simulator, tmp_path):
    unit = get_unit("lns-mac")
    config = unit.make_config(["lanes=3", "max_k=40"])
    result = run_cocotb(unit, config, simulator=simulator, test_dir=tmp_path)
    assert result["tests"] == 3 and result["failed"] == 0


@pytest.mark.cocotb
@pytest.mark.parametrize("simulator", simulator_params())
def test_int8_mac_verilog_matches_golden(simulator, tmp_path):
    unit = get_unit("int8-mac")
    config = unit.make_config(["lanes=3", "max_k=40"])
    result = run_cocotb(unit, config, simulator=simulator, test_dir=tmp_path)
    assert result["tests"] == 2 and result["failed"] == 0
