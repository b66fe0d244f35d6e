"""Shared pytest set-up: lowbit's tool environment and the simulator parametrisation."""

import os

import pytest
from hypothesis import HealthCheck, settings

from lowbit import toolenv

toolenv.setup()

# A shared 2-core machine: no wall-clock deadlines or speed health checks, and the same
# examples on every run so CI cannot pass or fail by luck. Cheap properties take the
# profile's count (500); HYPOTHESIS_PROFILE=long runs 5,000 of each, with fresh examples.
settings.register_profile("lowbit", deadline=None, derandomize=True, max_examples=500,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", parent=settings.get_profile("lowbit"), derandomize=False,
                          max_examples=5000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "lowbit"))


def simulator_params():
    """``verilator`` always; ``icarus`` skipped with a visible reason when not installed."""
    return [
        pytest.param("verilator", id="verilator"),
        pytest.param("icarus", id="icarus", marks=pytest.mark.skipif(
            not toolenv.icarus_available(),
            reason="Icarus Verilog not installed (apt-get install iverilog)")),
    ]


def pytest_collection_modifyitems(config, items):
    # The full-rate core runs dense layers with +-1 weights only; the compiler refuses
    # convolutions and multi-bit weights by layer name (tests/test_compiler.py). The
    # importer's own contract for those models (against qonnx) runs unmarked.
    skip = pytest.mark.skip(reason="needs convolutions or multi-bit weights, which the "
                                   "full-rate core does not run yet")
    for item in items:
        if "needs_legacy_core" in item.keywords:
            item.add_marker(skip)
