"""The XNOR array's generated Verilog against its golden model in cocotb (Verilator and
Icarus), through the same runner ``lowbit sim`` uses. One build per configuration and
simulator, cached; each run batches random tiles, edge cases and a throughput check."""

import pytest

from lowbit.units import get_unit
from lowbit.sim.runner import run_cocotb

from conftest import simulator_params

CONFIGS = {
    "bitserial": ["rows=2", "cols=3", "word=16", "max_k=64"],
    "binary-256": ["rows=2", "cols=2", "word=256", "max_k=1024", "max_act_bits=1",
                   "max_weight_bits=1"],
}


@pytest.mark.cocotb
@pytest.mark.parametrize("simulator", simulator_params())
@pytest.mark.parametrize("name", CONFIGS)
def test_generated_verilog_matches_golden(simulator, name, tmp_path):
    unit = get_unit("xnor-array")
    config = unit.make_config(CONFIGS[name])
    result = run_cocotb(unit, config, simulator=simulator, test_dir=tmp_path)
    assert result["tests"] == 3 and result["failed"] == 0
