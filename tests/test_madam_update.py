"""The LNS-Madam update unit: its golden model on hand-derived cases, the gateware against
the golden model on Amaranth's simulator (random beats and the rule's edges, with stalls)
and on the generated Verilog with cocotb, and a real training step's update through it."""

import numpy as np
import pytest

from lowbit import datasets
from lowbit.config.madam import MadamUpdateConfig
from lowbit.golden.lns import LNSTensor
from lowbit.golden.madam import MadamUpdate as MadamModel
from lowbit.golden.training import TrainingConfig, TrainingStep
from lowbit.hw.madam_update import MadamUpdate
from lowbit.sim.amaranth_streams import run_stream_test
from lowbit.sim.madam_vectors import edge_beats, random_beats
from lowbit.sim.runner import run_cocotb
from lowbit.units import get_unit

from conftest import simulator_params

#: Right shifts only (8-bit gradients: lr 0..6 < 7); left shifts too (4-bit gradients, lr
#: up to 6 > 3); the narrowest words.
CONFIGS = {
    "g8-b8": MadamUpdateConfig(lanes=3, bits=8, grad_bits=8),
    "g4-b8": MadamUpdateConfig(lanes=2, bits=8, grad_bits=4),
    "g6-b4": MadamUpdateConfig(lanes=4, bits=4, grad_bits=6),
}


def _word(code, sign):
    return {"code": code, "sign": sign}


@pytest.mark.parametrize("word, grad, lr, expected", [
    # 8-bit words (c_max 127), 8-bit gradients: step = round(d * g * 2^lr / 128).
    (_word(10, 0), 40, 3, _word(8, 0)),      # 40 / 16 = 2.5: ties to even, 2
    (_word(10, 0), 56, 3, _word(6, 0)),      # 3.5 -> 4
    (_word(10, 1), 40, 3, _word(12, 1)),     # a negative weight: -2.5 -> -2
    (_word(126, 0), -127, 3, _word(127, 0)),  # -7.94 -> -8: 134 saturates at 127
    (_word(2, 0), 127, 3, _word(1, 1)),      # 7.94 -> 8: 2 - 8 < 1 crosses zero
    (_word(0, 1), -40, 3, _word(1, 1)),      # zero code: code 1 of sign 0, step +2: crosses
    (_word(0, 0), 0, 3, _word(1, 0)),        # zero code, no gradient: code 1
    (_word(50, 0), 100, 0, _word(49, 0)),    # lr 0: 100 / 128 -> 1
    (_word(50, 0), 64, 0, _word(50, 0)),     # 0.5: ties to even, 0
    (_word(50, 0), 100, 7, _word(1, 1)),     # lr 7 is taken as 6: 50 steps, 50 - 50 < 1
    (_word(50, 0), 100, 6, _word(1, 1)),
])
def test_golden_hand_cases(word, grad, lr, expected):
    model = MadamModel(MadamUpdateConfig(lanes=1, bits=8, grad_bits=8))
    beat = {"w": [word], "grad": [grad], "lr_exponent": lr}
    assert model.step(beat) == {"w": [expected]}


def test_golden_hand_cases_left_shift():
    # 4-bit gradients, lr 6: step = d * g * 2^(6 - 3) exactly.
    model = MadamModel(MadamUpdateConfig(lanes=2, bits=8, grad_bits=4))
    beat = {"w": [_word(100, 0), _word(100, 1)], "grad": [-3, 7], "lr_exponent": 6}
    assert model.step(beat) == {"w": [_word(124, 0), _word(127, 1)]}


def _hardware(config, beats, *, idle=0.3, stall=0.3, seed=0):
    raw, cycles = run_stream_test(MadamUpdate(config),
                                  [config.beat_layout.const(b).as_bits() for b in beats],
                                  len(beats), idle=idle, stall=stall, seed=seed)
    out = []
    for bits in raw:
        got = config.result_layout.from_bits(bits)
        out.append({"w": [_word(int(got.w[i].code), int(got.w[i].sign))
                          for i in range(config.lanes)]})
    return out, cycles


@pytest.mark.parametrize("name", CONFIGS)
def test_gateware_is_the_golden_model(name):
    config = CONFIGS[name]
    beats = random_beats(config, np.random.default_rng(len(name))) + edge_beats(config)
    got, _ = _hardware(config, beats, seed=len(name))
    expected = MadamModel(config).run(beats)
    for n, (g, e) in enumerate(zip(got, expected)):
        assert g == e, f"beat {n}: got {g}, expected {e}"


def test_gateware_hand_cases():
    config = MadamUpdateConfig(lanes=1, bits=8, grad_bits=8)
    got, _ = _hardware(config, [{"w": [_word(10, 0)], "grad": [40], "lr_exponent": 3},
                                {"w": [_word(2, 0)], "grad": [127], "lr_exponent": 3}])
    assert got == [{"w": [_word(8, 0)]}, {"w": [_word(1, 1)]}]


def test_one_beat_per_cycle():
    config = CONFIGS["g8-b8"]
    beats = random_beats(config, np.random.default_rng(9), 50)
    _, cycles = _hardware(config, beats, idle=0.0, stall=0.0)
    assert cycles <= len(beats) + 2 + 1  # two register stages, one cycle to start


def test_a_training_steps_update_through_the_unit():
    """The update the training step applies to a real layer (digits, one step) equals the
    unit's output on the step's latent weights and gradient mantissas."""
    data = datasets.load("digits")
    cfg = TrainingConfig(sizes=(64, 32, 10), grad_bits=(6, 8), batch=32, lr_exponent=3)
    step = TrainingStep(cfg)
    before = [w for w in step.weights]
    x = data.input_quantizer.quantize(data.x_train[:32])
    result = step.step(x, data.y_train[:32])
    for layer, (w, dw) in enumerate(zip(before, result.dw)):
        config = MadamUpdateConfig(lanes=16, bits=cfg.weight_bits,
                                   grad_bits=cfg.grad_bits[layer])
        model = MadamModel(config)
        beats = model.beats(w, dw.man, cfg.lr_exponent)
        got, _ = _hardware(config, beats, idle=0.0, stall=0.2)
        new = model.unpack(got, w)
        np.testing.assert_array_equal(new.code, step.weights[layer].code)
        np.testing.assert_array_equal(new.sign, step.weights[layer].sign)
        assert (new.sign != w.sign).any() or (new.code != w.code).any()


def test_beats_refuse_what_the_unit_cannot_take():
    model = MadamModel(MadamUpdateConfig(lanes=2, bits=8, grad_bits=4))
    w = LNSTensor(sign=np.zeros(3, np.int64), code=np.ones(3, np.int64), scale_exp=0)
    with pytest.raises(ValueError, match=r"gradient mantissas must be 4-bit \(-8..7\)"):
        model.beats(w, [0, 8, 0], 2)
    with pytest.raises(ValueError, match="lr_exponent must be 0..6, not 7"):
        model.beats(w, [0, 0, 0], 7)
    with pytest.raises(ValueError, match="an update needs 8-bit latent weights"):
        model.beats(w, [0, 0], 2)


@pytest.mark.parametrize("kwargs, message", [
    (dict(lanes=0), "MadamUpdateConfig lanes must be"),
    (dict(bits=3), "MadamUpdateConfig bits must be"),
    (dict(grad_bits=9), "MadamUpdateConfig grad_bits must be"),
])
def test_bad_configurations(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MadamUpdateConfig(**kwargs)
    with pytest.raises(TypeError, match="config must be a MadamUpdateConfig"):
        MadamUpdate("lanes=2")


@pytest.mark.cocotb
@pytest.mark.parametrize("simulator", simulator_params())
def test_generated_verilog_is_the_golden_model(simulator, tmp_path):
    unit = get_unit("madam-update")
    config = unit.make_config(["lanes=3", "grad_bits=4"])
    result = run_cocotb(unit, config, simulator=simulator, test_dir=tmp_path)
    assert result["tests"] == 2 and result["failed"] == 0
