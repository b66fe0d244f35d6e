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
from lowbit.runtime import ISSTransport, Runtime
from lowbit.sim.amaranth_transport import AmaranthTransport
from lowbit.train import train

UP5K = Path(__file__).resolve().parent.parent / "configs" / "up5k.json"

#: Logic cells left for a board's UART and framing bridge.
BRIDGE_HEADROOM = 400


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


def test_up5k_config_is_what_the_digits_bnn_needs(config):
    # The file round-trips and holds what the compiled digits BNN uses: 4x2 PEs of 32-bit
    # words (256 binary MACs a cycle: 128-bit activation words in 8 EBRs, 64-bit weight
    # words in the UP5K's 4 single-ported SPRAMs), 5-bit bit-serial inputs, +-1 outputs
    # between layers.
    assert AcceleratorConfig.from_dict(config.to_dict()) == config
    assert (config.rows, config.cols, config.word) == (4, 2, 32) and config.macs == 256
    assert config.xnor_array.max_act_bits == 5 and config.max_out_bits == 1
    assert config.weight_single_port


def test_digits_bnn_runs_on_the_up5k_gateware_like_the_iss(config, digits_bnn):
    model, data = digits_bnn
    program = compile_model(model, config, batch=4)
    x = data.x_test[:8]
    with ISSTransport(config) as iss, AmaranthTransport(config) as rtl:
        expected, iss_stats = run_model(program, Runtime(config, iss), x)
        got, rtl_stats = run_model(program, Runtime(config, rtl), x)
    assert np.array_equal(got, expected)
    assert np.array_equal(expected, model.integer_form().scores(model.quantize_input(x)))
    for name in ("cycles", "array_beats", "tile_holds"):
        assert iss_stats[name] == rtl_stats[name], name


def test_digits_bnn_compiles_at_the_default_batch(config, digits_bnn):
    # batch 16 (the demo's): the ISS gives the model's integer scores.
    model, data = digits_bnn
    program = compile_model(model, config, batch=16)
    x = data.x_test[:32]
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
