"""Golden model of one training step (lowbit.golden.training): hand-derived cases of each
piece (popcount products, gradient quantisation, the integer softmax gradient, the norm
backward, the LNS-Madam update), invariants of a whole step checked against independent
numpy formulas, exact configuration errors, determinism, and a learning check on
scikit-learn's digits."""

import re
import time

import numpy as np
import pytest

from lowbit import datasets
from lowbit.config.xnor_array import XNORArrayConfig
from lowbit.golden import lns
from lowbit.golden.bfp import BFP, BFPFormat
from lowbit.golden.training import (LOG2E_Q, Gradient, TrainingConfig, TrainingStep,
                                    init_weights, madam_update, norm_backward,
                                    popcount_matmul, quantize_gradient, softmax_gradient)
from lowbit.golden.xnor_array import XNORArray

SMALL = dict(sizes=(64, 32, 32, 10), batch=16, norm_block=16, grad_bits=(4, 6, 8))


def _ref_quantize(v, exp, bits):
    """Independent gradient quantiser (float64, exact for these magnitudes): the shift that
    makes the largest magnitude fit bits - 1 bits, round half to even, saturate."""
    v = np.asarray(v, dtype=np.float64)
    top = int(np.abs(v).max())
    shift = max(0, top.bit_length() - (bits - 1))
    qmax = 2 ** (bits - 1) - 1
    return np.clip(np.round(v / 2.0 ** shift), -qmax, qmax).astype(np.int64), exp + shift


# Pieces, by hand ---------------------------------------------------------------------------

@pytest.mark.parametrize("a_prec,b_prec", [("binary", "binary"), ("uint5", "binary"),
                                           ("int8", "binary"), ("int4", "uint3")])
def test_popcount_matmul_is_the_integer_product_and_the_xnor_arrays(a_prec, b_prec):
    rng = np.random.default_rng(3)

    def draw(prec, shape):
        if prec == "binary":
            return rng.choice([-1, 1], size=shape)
        bits = int(prec.lstrip("uint"))
        lo, hi = (0, 2 ** bits - 1) if prec.startswith("u") else (-2 ** (bits - 1),
                                                                 2 ** (bits - 1) - 1)
        return rng.integers(lo, hi + 1, size=shape)

    a, b = draw(a_prec, (5, 37)), draw(b_prec, (6, 37))  # 37: not a multiple of the word
    out = popcount_matmul(a, b, a_prec, b_prec)
    assert np.array_equal(out, a @ b.T)
    assert np.array_equal(out, XNORArray(XNORArrayConfig()).matmul(a, b, a_prec, b_prec))


def test_popcount_matmul_hand_case():
    # rows (+1 -1 +1) and (-1 -1 -1) against (+1 +1 +1): 1 and -3; 3-bit input (5, 0, 7)
    # against (+1, -1, -1): 5 - 0 - 7 = -2.
    a = np.array([[1, -1, 1], [-1, -1, -1]])
    assert popcount_matmul(a, np.array([[1, 1, 1]]), "binary", "binary").tolist() == [[1], [-3]]
    assert popcount_matmul(np.array([[5, 0, 7]]), np.array([[1, -1, -1]]), "uint3",
                           "binary").tolist() == [[-2]]


def test_quantize_gradient_hand_cases():
    # Largest 100 has 7 bits, 4-bit mantissas keep 3: shift 4. 100/16 = 6.25, -37/16 =
    # -2.3125, 5/16 = 0.3125.
    g = quantize_gradient([100, -37, 5], -3, 4)
    assert g.man.tolist() == [6, -2, 0] and g.exp == 1
    # Ties to even: 44/8 = 5.5 -> 6, 36/8 = 4.5 -> 4, -20/8 = -2.5 -> -2.
    g = quantize_gradient([44, 36, -20], 0, 4)
    assert g.man.tolist() == [6, 4, -2] and g.exp == 3
    # Saturation: 127/16 = 7.94 rounds to 8, which 4 bits cannot hold: 7.
    g = quantize_gradient([127, -3], 0, 4)
    assert g.man.tolist() == [7, 0] and g.exp == 4
    # -120/16 = -7.5 -> -8 (even) -> saturated symmetric to -7.
    assert quantize_gradient([-120], 0, 4).man.tolist() == [-7]
    # Values that fit stay exact (no left shift); a zero tensor keeps its exponent.
    g = quantize_gradient([3, -7], 5, 4)
    assert g.man.tolist() == [3, -7] and g.exp == 5
    g = quantize_gradient([0, 0], -9, 8)
    assert g.man.tolist() == [0, 0] and g.exp == -9


@pytest.mark.parametrize("bits", [4, 5, 6, 7, 8])
def test_quantize_gradient_matches_independent_formula_and_saturates(bits):
    rng = np.random.default_rng(bits)
    for _ in range(20):
        v = rng.integers(-(1 << 20), 1 << 20, size=50) >> rng.integers(0, 20)
        g = quantize_gradient(v, 2, bits)
        man, exp = _ref_quantize(v, 2, bits)
        assert np.array_equal(g.man, man) and g.exp == exp
        assert np.abs(g.man).max() <= 2 ** (bits - 1) - 1


def test_softmax_gradient_hand_cases():
    fmt = BFPFormat(block=10, mantissa=8, exponent=6)
    # Ten equal logits: every e_i = 2^16, S = 10 * 2^16, p = 1/10. p - 1 = -0.9 and 0.1 on
    # a 2^-16 grid: -58982.4 -> -58982, 6553.6 -> 6554.
    logits = BFP(np.zeros((1, 1), dtype=np.int64), np.zeros((1, 1, 10), dtype=np.int64))
    g, _ = softmax_gradient(logits, fmt, np.array([3]))
    assert g.exp == -16
    assert g.man.tolist() == [[6554] * 3 + [-58982] + [6554] * 6]
    # Two logits 1.0 and 0.0 (mantissas 64, 0 at exponent 0: value M * 2^-6). d = (0, -64);
    # u = round(8 * (94548 / 2^16) * -64 * 2^-6) = round(-11.54) = -12 = 8 * -2 + 4, so
    # e_1 = LUT[4] >> 2 = round(2^16.5) >> 2 = 92682 >> 2 = 23170; S = 65536 + 23170 =
    # 88706; 23170 / 88706 * 2^16 = 17117.998 -> 17118.
    two = BFPFormat(block=2, mantissa=8, exponent=6)
    logits = BFP(np.zeros((1, 1), dtype=np.int64), np.array([[[64, 0]]]))
    g, loss = softmax_gradient(logits, two, np.array([0]))
    assert g.man.tolist() == [[-17118, 17118]]
    # The loss (monitoring only) is ln(S / e_0) = ln(88706 / 65536), not ln(1 + e^-1):
    # exponents are on a 1/8-octave grid (2^-1.5 = 0.354 for e^-1 = 0.368).
    assert loss[0] == pytest.approx(np.log(88706 / 65536), rel=1e-12)
    assert LOG2E_Q == round(np.log2(np.e) * 2 ** 16)


def test_norm_backward_hand_case():
    # Scales 2 and 3 (mantissas 64, 96 at exponent 1 in an 8-bit format: M * 2^(1 - 6))
    # in one group, 0.5 and 0.25 in a second group at exponent -1 (64, 32: M * 2^-7).
    fmt = BFPFormat(block=2, mantissa=8, exponent=6)
    scale = BFP(np.array([1, -1]), np.array([[64, 96], [64, 32]]))
    dy = Gradient(np.array([[3, -2, 4, 5]]), -4)
    dz = norm_backward(dy, scale, fmt, 8)
    expected = np.array([[3 * 2, -2 * 3, 4 * 0.5, 5 * 0.25]]) * 2.0 ** -4
    assert np.array_equal(dz.value(), expected)  # all exact in 8 bits
    assert np.abs(dz.man).max() <= 127


def test_madam_update_hand_case():
    # 8-bit LNS (c_max 127), 8-bit gradients, lr_exponent 2: step = round(sign(w) * g / 32).
    w = lns.LNSTensor(np.array([0, 0, 1, 1, 0, 0, 0, 0]),
                      np.array([100, 2, 100, 100, 126, 0, 50, 50]), 0, 8, 8)
    g = np.array([64, 127, -64, 127, -127, -10, 48, 16])
    new = madam_update(w, g, 8, 2)
    # 64/32 = 2 -> 98. 127/32 = 3.97 -> 4: 2 - 4 < 1 crosses zero -> sign 1, code 1.
    # negative weight, negative gradient: magnitude shrinks by 2 -> 98. negative weight,
    # positive gradient: grows by 4 -> 104. -127/32 -> -4: 130 saturates to 127. Zero code:
    # as code 1, step round(-0.3125) = 0 -> code 1, sign 0. 48/32 = 1.5 -> 2 (even) -> 48;
    # 16/32 = 0.5 -> 0 (even) -> 50.
    assert new.code.tolist() == [98, 1, 98, 104, 127, 1, 48, 50]
    assert new.sign.tolist() == [0, 1, 1, 1, 0, 0, 0, 0]


def test_madam_update_matches_independent_formula():
    rng = np.random.default_rng(7)
    for bits, lr in [(4, 0), (6, 3), (8, 2), (8, 6)]:
        w = lns.LNSTensor(rng.integers(0, 2, 500), rng.integers(1, 128, 500), 0, 8, 8)
        g = rng.integers(-(2 ** (bits - 1) - 1), 2 ** (bits - 1), 500)
        new = madam_update(w, g, bits, lr)
        direction = np.where(w.sign == 1, -1.0, 1.0)
        t = w.code - np.round(direction * g * 2.0 ** lr / 2.0 ** (bits - 1))
        assert np.array_equal(new.code, np.where(t < 1, 1, np.minimum(t, 127)))
        assert np.array_equal(new.sign, np.where(t < 1, 1 - w.sign, w.sign))


# A whole step --------------------------------------------------------------------------------

def _batch(config, seed=0):
    data = datasets.load("digits")
    x = data.input_quantizer.quantize(data.x_train)
    rng = np.random.default_rng(seed)
    index = rng.choice(len(x), size=config.batch, replace=False)
    return x[index], data.y_train[index]


def test_step_invariants_against_independent_formulas():
    config = TrainingConfig(**SMALL)
    model = TrainingStep(config)
    x, labels = _batch(config)
    before = list(model.weights)
    binary = model.binary()
    # Binary weights are the signs of the latent weights (sign(0) = +1).
    for w, b in zip(before, binary):
        assert np.array_equal(b, np.where(lns.dequantize(w) >= 0, 1, -1))
    result = model.step(x, labels)
    fwd = result.forward
    for layer in range(config.layers):
        h = fwd.inputs[layer]
        assert np.array_equal(fwd.z[layer], h @ binary[layer].T)  # integer popcount sums
        # LightNorm statistics: chunk ranges by array_split, from the integer sums.
        chunks = np.array_split(fwd.z[layer], config.norm_chunks)
        spread = sum(c.max(0) for c in chunks) - sum(c.min(0) for c in chunks)
        total, got = model.norms[layer].statistics(fwd.z[layer])
        assert np.array_equal(total, fwd.z[layer].sum(0)) and np.array_equal(got, spread)
        if layer < config.layers - 1:
            y, fmt = fwd.y[layer]
            values = (y.man * 2.0 ** (y.exp - (fmt.mantissa - 2))[..., None]).reshape(
                fwd.z[layer].shape)
            assert np.array_equal(fwd.inputs[layer + 1], np.where(values >= 0, 1, -1))
            assert np.array_equal(fwd.masks[layer], np.abs(values) <= 1)
    for layer in range(config.layers):
        bits = config.grad_bits[layer]
        dz, dw = result.dz[layer], result.dw[layer]
        for g in (dz, dw):
            assert np.abs(g.man).max() <= 2 ** (bits - 1) - 1  # saturating k-bit mantissas
        man, exp = _ref_quantize(dz.man.T @ fwd.inputs[layer], dz.exp, bits)
        assert np.array_equal(dw.man, man) and dw.exp == exp  # dW = X^T dZ, requantised
        if layer < config.layers - 1:
            # Straight-through mask: no gradient where |y| > 1.
            assert not np.any(dz.man[~fwd.masks[layer]])
    assert result.d_logits.man.shape == (config.batch, 10)
    for layer, (w, new) in enumerate(zip(before, model.weights)):
        direction = np.where(w.sign == 1, -1.0, 1.0)
        bits = config.grad_bits[layer]
        t = w.code - np.round(direction * result.dw[layer].man * 2.0 ** config.lr_exponent
                              / 2.0 ** (bits - 1))
        assert np.array_equal(new.code, np.where(t < 1, 1, np.minimum(t, 127)))
        assert np.array_equal(new.sign, np.where(t < 1, 1 - w.sign, w.sign))
    assert result.flips == sum(int((b != n).sum()) for b, n in zip(binary, model.binary()))
    assert result.flips > 0


def test_dx_is_dz_times_binary_weights_masked():
    # The gradient passed down is quantise(mask * (dZ_l W_l)) with layer l's bits (dZ W
    # and the mask by plain numpy here), then the norm backward of the layer below (checked
    # by hand above) with that layer's bits.
    config = TrainingConfig(**SMALL)
    model = TrainingStep(config)
    x, labels = _batch(config, seed=1)
    binary = model.binary()
    result = model.step(x, labels)
    for layer in range(1, config.layers):
        dz, below = result.dz[layer], result.dz[layer - 1]
        dx = np.where(result.forward.masks[layer - 1], dz.man @ binary[layer], 0)
        man, exp = _ref_quantize(dx, dz.exp, config.grad_bits[layer])
        fmt = result.forward.y[layer - 1][1]
        expected = norm_backward(Gradient(man, exp), result.forward.scale[layer - 1], fmt,
                                 config.grad_bits[layer - 1])
        assert np.array_equal(below.man, expected.man) and below.exp == expected.exp


def test_step_is_deterministic():
    config = TrainingConfig(**SMALL)
    runs = []
    for _ in range(2):
        model = TrainingStep(config)
        for seed in range(3):
            result = model.step(*_batch(config, seed))
        runs.append((model.weights, result))
    (w1, r1), (w2, r2) = runs
    for a, b in zip(w1, w2):
        assert np.array_equal(a.code, b.code) and np.array_equal(a.sign, b.sign)
    for a, b in zip(r1.dw, r2.dw):
        assert np.array_equal(a.man, b.man) and a.exp == b.exp


def test_initial_weights_are_integers_of_the_format():
    config = TrainingConfig()
    weights = init_weights(config)
    assert [w.shape for w in weights] == [(128, 64), (128, 128), (10, 128)]
    for w in weights:
        assert w.code.min() >= 1 and w.code.max() <= 127 and set(np.unique(w.sign)) == {0, 1}
    assert np.array_equal(weights[0].code, init_weights(config)[0].code)


# Configuration errors ------------------------------------------------------------------------

@pytest.mark.parametrize("changes,error,message", [
    ({"sizes": (64,)}, ValueError, "TrainingConfig sizes needs at least 2 layer widths, not 1"),
    ({"sizes": 64}, TypeError, "TrainingConfig sizes must be a tuple of integers, not 64"),
    ({"sizes": (64, 0, 10), "grad_bits": (8, 8)}, ValueError,
     "TrainingConfig sizes[1] must be at least 1, not 0"),
    ({"sizes": (64, 100, 10), "grad_bits": (8, 8)}, ValueError,
     "TrainingConfig hidden width 100 must be a multiple of norm_block 16"),
    ({"sizes": (64, 128, 100), "grad_bits": (8, 8)}, ValueError,
     "TrainingConfig output width 100 must be at most 64 (one BFP block)"),
    ({"grad_bits": (8, 8)}, ValueError,
     "TrainingConfig grad_bits needs one width per layer (3), not 2"),
    ({"grad_bits": (8, 3, 8)}, ValueError,
     "TrainingConfig grad_bits[1] must be at least 4, not 3"),
    ({"grad_bits": (8, 8, 9)}, ValueError,
     "TrainingConfig grad_bits[2] must be at most 8, not 9"),
    ({"grad_bits": (8, 8.0, 8)}, TypeError,
     "TrainingConfig grad_bits[1] must be an integer, not 8.0"),
    ({"input_bits": 0}, ValueError, "TrainingConfig input_bits must be at least 1, not 0"),
    ({"weight_bits": 3}, ValueError, "TrainingConfig weight_bits must be at least 4, not 3"),
    ({"weight_gamma": 6}, ValueError,
     "TrainingConfig weight_gamma must be a power of two, not 6"),
    ({"weight_bits": 5, "weight_gamma": 16}, ValueError,
     "TrainingConfig weight_gamma must be at most 8, not 16"),
    ({"lr_exponent": 7}, ValueError, "TrainingConfig lr_exponent must be at most 6, not 7"),
    ({"batch": 15}, ValueError,
     "TrainingConfig batch 15 needs at least 2 samples per chunk: 2 * norm_chunks = 16"),
    ({"norm_rounding": "up"}, ValueError,
     "TrainingConfig norm_rounding must be one of 'nearest-even', 'truncate', not 'up'"),
    ({"logit_gamma_exp": 5}, ValueError,
     "TrainingConfig logit_gamma_exp must be at most 4, not 5"),
    ({"seed": -1}, ValueError, "TrainingConfig seed must be at least 0, not -1"),
])
def test_config_errors(changes, error, message):
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        TrainingConfig(**changes)


def test_config_is_frozen_and_lists_become_tuples():
    config = TrainingConfig(sizes=[64, 32, 10], grad_bits=[8, 4], norm_block=16)
    assert config.sizes == (64, 32, 10) and config.grad_bits == (8, 4)
    with pytest.raises(AttributeError):
        config.batch = 8


def test_step_rejects_bad_batches():
    model = TrainingStep(TrainingConfig(**SMALL))
    x, labels = _batch(model.config)
    with pytest.raises(ValueError, match=re.escape("a step needs inputs of shape (16, 64)")):
        model.step(x[:8], labels[:8])
    with pytest.raises(ValueError, match=re.escape("a step needs 16 labels in 0..9")):
        model.step(x, labels + 10)
    with pytest.raises(ValueError, match="outside uint5"):
        model.step(x + 32, labels)


# Learning ------------------------------------------------------------------------------------

#: The learning check's setting and the accuracy it reached when written (docs/training.md):
#: EPOCHS over the 1437 training images, batch 32 (44 steps an epoch, the remainder dropped),
#: 8-bit gradients, 8-bit LNS latent weights (gamma 8), shuffling seed 1, weight seed 0.
EPOCHS = 8
LEARN = {}  # the defaults: lr_exponent 3, logit_gamma_exp 2
MIN_ACCURACY = 0.90


def test_learns_digits():
    data = datasets.load("digits")
    q = data.input_quantizer
    x_train, x_test = q.quantize(data.x_train), q.quantize(data.x_test)
    config = TrainingConfig(**LEARN)
    model = TrainingStep(config)
    rng = np.random.default_rng(1)
    start = time.perf_counter()
    steps = len(x_train) // config.batch
    for _ in range(EPOCHS):
        order = rng.permutation(len(x_train))
        for s in range(steps):
            index = order[s * config.batch:(s + 1) * config.batch]
            model.step(x_train[index], data.y_train[index])
    # Evaluation: each norm's statistics from the whole training set.
    accuracy = float((model.predict(x_test, x_train) == data.y_test).mean())
    seconds = time.perf_counter() - start
    print(f"digits: {accuracy:.4f} test accuracy after {EPOCHS * steps} steps, {seconds:.1f} s")
    assert accuracy >= MIN_ACCURACY
