"""The accelerator's generated Verilog against the ISS in cocotb (Verilator; Icarus when
installed): random race-free programs byte for byte, cycles included, and random raw words
(sim/accelerator_tb.py), one build per simulator."""

import pytest

from lowbit.sim.random_programs import small_configs
from lowbit.sim.runner import icarus_time_zero, run_cocotb
from lowbit.units import get_unit

from conftest import simulator_params

#: Random programs and raw words per simulator and small configuration: Icarus is some 20x
#: slower. The first configuration has the statistics unit and a latent memory, the third
#: a latent memory and the argmax unit (one-lane record words, a word queue that fills).
COUNTS = {("verilator", 0): ("200", "400"), ("icarus", 0): ("12", "40"),
          ("verilator", 2): ("80", "150"), ("icarus", 2): ("6", "20")}


@pytest.mark.cocotb
@pytest.mark.parametrize("index", [0, 2])
@pytest.mark.parametrize("simulator", simulator_params())
def test_accelerator_verilog_matches_the_iss(simulator, index, tmp_path):
    programs, words = COUNTS[simulator, index]
    result = run_cocotb(get_unit("accelerator"), small_configs()[index], simulator=simulator,
                        test_dir=tmp_path,
                        extra_env={"LOWBIT_PROGRAMS": programs, "LOWBIT_WORDS": words})
    assert result["tests"] == 2 and result["failed"] == 0


def test_icarus_time_zero_kick():
    text = "module a;\n  reg \\$auto$verilog_backend.cc:1:dump_module$3  = 0;\nendmodule\n"
    assert icarus_time_zero(text) == (
        "module a;\n  reg \\$auto$verilog_backend.cc:1:dump_module$3  = 0;\n"
        "  initial #0 \\$auto$verilog_backend.cc:1:dump_module$3 = 1'h1;\nendmodule\n")
