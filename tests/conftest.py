"""Shared pytest set-up: lowbit's tool environment and the simulator parametrisation."""

import pytest
from hypothesis import HealthCheck, settings

from lowbit import toolenv

toolenv.setup()

# A shared 2-core machine: no wall-clock deadlines or speed health checks, and the same
# examples on every run so CI cannot pass or fail by luck.
settings.register_profile("lowbit", deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("lowbit")


def simulator_params():
    """``verilator`` always; ``icarus`` skipped with a visible reason when not installed."""
    return [
        pytest.param("verilator", id="verilator"),
        pytest.param("icarus", id="icarus", marks=pytest.mark.skipif(
            not toolenv.icarus_available(),
            reason="Icarus Verilog not installed (apt-get install iverilog)")),
    ]
