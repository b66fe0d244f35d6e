"""The accelerator's generated Verilog against the ISS in cocotb (Verilator; Icarus when
installed): every instruction, layer chains, random programs with every unit, faults and
truncation, through the same Runtime host code (sim/accelerator_tb.py)."""

import pytest

from lowbit.sim.accelerator_programs import small_config
from lowbit.sim.runner import icarus_time_zero, run_cocotb
from lowbit.units import get_unit

from conftest import simulator_params


@pytest.mark.cocotb
@pytest.mark.parametrize("simulator", simulator_params())
def test_accelerator_verilog_matches_the_iss(simulator, tmp_path):
    # The configuration of tests/test_runtime.py's RTL tests: one shared build.
    config = small_config()
    result = run_cocotb(get_unit("accelerator"), config, simulator=simulator,
                        test_dir=tmp_path, extra_env={"LOWBIT_PROGRAMS": "8"})
    assert result["tests"] == 2 and result["failed"] == 0


def test_icarus_time_zero_kick():
    text = "module a;\n  reg \\$auto$verilog_backend.cc:1:dump_module$3  = 0;\nendmodule\n"
    assert icarus_time_zero(text) == (
        "module a;\n  reg \\$auto$verilog_backend.cc:1:dump_module$3  = 0;\n"
        "  initial #0 \\$auto$verilog_backend.cc:1:dump_module$3 = 1'h1;\nendmodule\n")
