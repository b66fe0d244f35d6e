"""``configs/up5k.json``, the accelerator configuration that fits an iCE40UP5K with room for
a host-link bridge: it is a valid configuration, the compiler accepts the digits w1a1 BNN
(64-256-256-10) for it, and the gateware runs that compiled network bit for bit like the
ISS (and the model's own integer form). Its synthesis figures are in
``docs/accelerator_synthesis.md``; the ``synth`` test re-measures them."""

from pathlib import Path

import numpy as np
import pytest

from lowbit import datasets
from lowbit.compiler import compile_model, run_model
from lowbit.config.accelerator import AcceleratorConfig
from lowbit.isa import InstructionError, NormMode, instruction_set
from lowbit.runtime import ISSTransport, Runtime
from lowbit.sim.amaranth_transport import AmaranthTransport
from lowbit.train import train

UP5K = Path(__file__).resolve().parent.parent / "configs" / "up5k.json"

#: Logic cells left for a UART + CRC framing bridge on the iCEBreaker (~200-300 LC).
BRIDGE_HEADROOM = 300


@pytest.fixture(scope="module")
def config():
    return AcceleratorConfig.load(UP5K)


@pytest.fixture(scope="module")
def digits_bnn():
    # One epoch is enough: the test is about bit-exactness, not accuracy.
    data = datasets.load("digits")
    model, _ = train(data, precision="w1a1", hidden=(256, 256), epochs=1, seed=0,
                     progress=False, twin=False)
    return model, data


def test_up5k_config_is_what_a_binary_mlp_needs(config):
    # The file round-trips, and holds exactly what the compiled MLPs use: a binary XNOR
    # array with 5-bit bit-serial activations (digits' uint5 inputs), NORM THRESHOLD, no
    # LNS MAC, no MAXPOOL, no norm statistics.
    assert AcceleratorConfig.from_dict(config.to_dict()) == config
    assert (config.xnor_array.rows, config.xnor_array.cols) == (1, 1)
    assert config.xnor_array.max_act_bits == 5 and config.xnor_array.max_weight_bits == 1
    assert config.lightnorm.output == "sign" and not config.lightnorm.statistics
    assert not (config.has_lns_mac or config.has_maxpool)
    isa = instruction_set(config)
    norm = {"opcode": "NORM", "src_addr": 0, "dst_addr": 0, "param_addr": 0, "rows": 1,
            "channels": 32, "src_stride": 32, "dst_stride": 1}
    isa.encode({**norm, "mode": NormMode.THRESHOLD})
    for mode in (NormMode.STATISTICS, NormMode.NORMALISE, NormMode.REQUANTISE):
        with pytest.raises(InstructionError):
            isa.encode({**norm, "mode": mode, "param_addr": 0})
    with pytest.raises(InstructionError, match="MAXPOOL needs the maxpool unit"):
        isa.encode({"opcode": "MAXPOOL", "src_addr": 0, "dst_addr": 8, "rows": 1,
                    "row_words": 1, "window": 2})


def test_digits_bnn_runs_on_the_up5k_gateware_like_the_iss(config, digits_bnn):
    model, data = digits_bnn
    program = compile_model(model, config, batch=4)
    x = data.x_test[:4]
    with ISSTransport(config) as iss, AmaranthTransport(config) as rtl:
        expected, iss_stats = run_model(program, Runtime(config, iss), x)
        got, rtl_stats = run_model(program, Runtime(config, rtl), x)
    assert np.array_equal(got, expected)
    assert np.array_equal(expected, model.integer_form().scores(model.quantize_input(x)))
    assert abs(iss_stats["cycles"] - rtl_stats["cycles"]) <= 0.05 * rtl_stats["cycles"]


def test_digits_bnn_compiles_at_the_default_batch(config, digits_bnn):
    # batch 16 (the demo's): every layer's chunks fit the buffers and the 32-channel norm
    # unit; the ISS gives the model's integer scores.
    model, data = digits_bnn
    program = compile_model(model, config, batch=16)
    x = data.x_test[:16]
    with ISSTransport(config) as iss:
        scores, _ = run_model(program, Runtime(config, iss), x)
    assert np.array_equal(scores, model.integer_form().scores(model.quantize_input(x)))


@pytest.mark.synth
def test_up5k_config_fits_with_room_for_a_bridge(config):
    from lowbit.synth import synthesize
    from lowbit.units import get_unit

    result = synthesize(get_unit("accelerator"), config, "ice40")
    assert result["fits"] and result["spram"] == 4
    assert result["lc"] <= 5280 - BRIDGE_HEADROOM
    assert result["fmax_mhz"] > 12
