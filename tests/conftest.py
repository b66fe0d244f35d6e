"""Shared pytest set-up: lowbit's tool environment and the simulator parametrisation."""

import pytest

from lowbit import toolenv

toolenv.setup()


def simulator_params():
    """``verilator`` always; ``icarus`` skipped with a visible reason when not installed."""
    return [
        pytest.param("verilator", id="verilator"),
        pytest.param("icarus", id="icarus", marks=pytest.mark.skipif(
            not toolenv.icarus_available(),
            reason="Icarus Verilog not installed (apt-get install iverilog)")),
    ]
