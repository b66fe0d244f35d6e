"""lowbit.model: the intermediate form, its file format, and its integer form exact against
the golden threshold folding (docs/arithmetic.md, section 2) and against float execution except at
the documented float ties."""

import json
import math
import re
from fractions import Fraction

import numpy as np
import pytest

from lowbit.golden.lightnorm import fold_thresholds, threshold_reference
from lowbit.golden.xnor_array import Precision
from lowbit.model import (VERSION, BatchNorm, Conv2D, Dense, Flatten, InputQuantizer,
                          MaxPool2D, ModelFileError, MultiThreshold, OutputAffine, QuantModel,
                          Sign, fold_layer_thresholds)


def random_bn(rng, channels, scale=1.0):
    """Batch norm with every kind of gamma: positive, negative and zero."""
    gamma = rng.normal(size=channels)
    gamma[::5] = 0.0
    gamma[1::5] = -np.abs(gamma[1::5])
    return BatchNorm(gamma=gamma, beta=rng.normal(size=channels),
                     mean=rng.normal(size=channels) * scale,
                     var=rng.uniform(0.5, 2.0, size=channels) * scale ** 2,
                     eps=1e-5)


def random_model(seed, widths=(64, 24, 16, 10), weight_bits=(1, 2, 4), acts=("sign", 2),
                 output=True, input_bits=5, input_step=1.0, input_shape=None):
    rng = np.random.default_rng(seed)
    layers = [] if input_shape is None or len(input_shape) == 1 else [Flatten()]
    for i, (k, n) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(Dense(rng.normal(size=(n, k)), weight_bits=weight_bits[i]))
        layers.append(random_bn(rng, n, scale=3.0 * math.sqrt(k)))
        if i < len(widths) - 2:
            act = acts[i]
            layers.append(Sign() if act == "sign" else MultiThreshold.uniform(act))
    affine = None
    if output:
        affine = OutputAffine(rng.uniform(0.5, 2.0, widths[-1]), rng.normal(size=widths[-1]))
    return QuantModel(name=f"random-{seed}", dataset="digits",
                      input_quantizer=InputQuantizer(input_bits, input_step),
                      input_shape=input_shape or (widths[0],), layers=layers, output=affine,
                      metadata={"seed": seed})


def digits_like(rng, n, features=64, high=16):
    return rng.integers(0, high + 1, size=(n, features)).astype(np.float64)


# Input quantizer ------------------------------------------------------------------------

def test_input_quantizer_digits_identity():
    from sklearn.datasets import load_digits

    data = load_digits().data
    quantizer = InputQuantizer(bits=5)
    assert quantizer.precision == Precision("unsigned", 5)
    assert np.array_equal(quantizer.quantize(data), data.astype(np.int64))


def test_input_quantizer_rounds_half_even_and_clips():
    q = InputQuantizer(bits=2, step=0.5)
    assert q.quantize([-3.0, 0.24, 0.25, 0.75, 1.0, 9.0]).tolist() == [0, 0, 0, 2, 2, 3]
    assert q.dequantize([3]).tolist() == [1.5]
    with pytest.raises(ValueError, match=r"^inputs must be finite \(found NaN or infinity\)$"):
        q.quantize([np.nan])
    with pytest.raises(TypeError, match=r"^inputs must be real numbers, not <U1$"):
        q.quantize(["a"])


@pytest.mark.parametrize("kwargs, error, message", [
    ({"bits": 9}, ValueError, "input bits must be in 1..8, not 9"),
    ({"bits": 2.0}, TypeError, "input bits must be an integer, not 2.0"),
    ({"bits": 4, "step": 0}, ValueError, "input step must be positive and finite, not 0.0"),
    ({"bits": 4, "step": "1"}, TypeError, "input step must be a real number, not '1'"),
])
def test_input_quantizer_messages(kwargs, error, message):
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        InputQuantizer(**kwargs)


# Layers and grammar ---------------------------------------------------------------------

def test_dense_quantization_rules():
    w = np.array([[0.0, -0.0, -1e-9, 0.75], [1.5, -0.375, 0.25, 0.75]])
    assert Dense(w).integer_weight().tolist() == [[1, 1, -1, 1], [1, -1, 1, 1]]
    dense = Dense(w, weight_bits=3)  # qmax 3, scale max|w| / 3
    assert dense.scale.tolist() == [0.25, 0.5]
    # rint rounds half to even: 0.25 / 0.5 = 0.5 -> 0, 0.75 / 0.5 = 1.5 -> 2.
    assert dense.integer_weight().tolist() == [[0, 0, 0, 3], [3, -1, 0, 2]]
    assert np.array_equal(dense.quantized_weight(), dense.scale[:, None] *
                          dense.integer_weight())
    assert Dense(np.zeros((1, 2)), weight_bits=2).scale.tolist() == [1.0]
    assert Dense(w, weight_bits=2).weight_precision == Precision("signed", 2)


@pytest.mark.parametrize("make, error, message", [
    (lambda: Dense(np.ones(3)), ValueError, "Dense weight must have 2 dimensions, not shape (3,)"),
    (lambda: Dense(np.ones((2, 2)), weight_bits=0), ValueError,
     "Dense weight_bits must be in 1..8, not 0"),
    (lambda: Dense(np.ones((2, 2)), weight_bits=True), TypeError,
     "Dense weight_bits must be an integer, not True"),
    (lambda: Dense(np.full((1, 1), np.inf)), ValueError,
     "Dense weight must hold finite numbers only"),
    (lambda: Dense(np.ones((2, 2)), scale=[1.0]), ValueError,
     "Dense scale must have shape (2,), not (1,)"),
    (lambda: Dense(np.ones((2, 2)), weight_bits=2, scale=[1.0, 0.0]), ValueError,
     "Dense scale must be positive"),
    (lambda: BatchNorm([1.0], [0.0], [0.0], [-1.0]), ValueError, "BatchNorm var must be >= 0"),
    (lambda: BatchNorm([1.0], [0.0], [0.0], [0.0], eps=0), ValueError,
     "BatchNorm var + eps must be positive"),
    (lambda: BatchNorm([1.0, 2.0], [0.0], [0.0], [1.0]), ValueError,
     "BatchNorm beta must have shape (2,), not (1,)"),
    (lambda: BatchNorm([1.0], [0.0], [0.0], [1.0], eps=-1.0), ValueError,
     "BatchNorm eps must be finite and >= 0, not -1.0"),
    (lambda: MultiThreshold([0.0, 1.0], 1.0), ValueError,
     "MultiThreshold needs 2^k - 1 levels for k in 1..8, not 2"),
    (lambda: MultiThreshold([0.0, 2.0, 1.0], 1.0), ValueError,
     "MultiThreshold levels must be non-decreasing"),
    (lambda: MultiThreshold([0.0], -1.0), ValueError,
     "MultiThreshold step must be positive and finite, not -1.0"),
    (lambda: OutputAffine([1.0, 1.0], [0.0]), ValueError,
     "OutputAffine offset must have shape (2,), not (1,)"),
])
def test_layer_messages(make, error, message):
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        make()


def dense(n, k):
    return Dense(np.ones((n, k)))


def bn(n):
    return BatchNorm(np.ones(n), np.zeros(n), np.zeros(n), np.ones(n))


@pytest.mark.parametrize("layers, shape, message", [
    ([], (4,), "a model needs at least one layer"),
    ([dense(3, 4), Sign()], (4,),
     "layer 1 (Sign): the last layer must be Dense [BatchNorm] (raw scores), not end in an "
     "activation"),
    ([dense(3, 4), bn(3), dense(2, 3)], (4,),
     "layer 2 (Dense): expected Sign or MultiThreshold after layer 1 (BatchNorm) (a hidden "
     "layer must produce integers)"),
    ([dense(3, 5)], (4,), "layer 0 (Dense) has 5 inputs but receives 4 features"),
    ([dense(3, 4), bn(2)], (4,),
     "layer 1 (BatchNorm) has 2 channels but follows a Dense with 3 outputs"),
    ([Sign(), dense(3, 4)], (4,), "layer 0 (Sign): expected a Dense layer here"),
    ([dense(3, 4)], (2, 2),
     "layer 0 (Dense): input_shape (2, 2) needs a Flatten before the first Dense"),
    ([dense(3, 4), Sign(), Flatten(), dense(2, 3)], (4,),
     "layer 2 (Flatten): expected a Dense layer here"),
])
def test_grammar_messages(layers, shape, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        QuantModel("m", "digits", InputQuantizer(5), shape, layers)


def test_model_messages():
    ok = dict(name="m", dataset="digits", input_quantizer=InputQuantizer(5),
              input_shape=(4,), layers=[dense(3, 4)])
    QuantModel(**ok)
    cases = [
        ({"version": 2}, ValueError, "model version must be 1, not 2"),
        ({"name": None}, TypeError, "model name must be a string, not None"),
        ({"input_shape": (0,)}, ValueError,
         "input_shape must be a non-empty tuple of positive integers, not (0,)"),
        ({"layers": [dense(3, 4), "relu"]}, TypeError,
         "layer 1 must be one of Dense, Conv2D, BatchNorm, Sign, MultiThreshold, MaxPool2D, "
         "Flatten, not 'relu'"),
        ({"output": OutputAffine([1.0], [0.0])}, ValueError,
         "output has 1 classes but the last Dense has 3 outputs"),
        ({"metadata": {"x": object}}, ValueError, "metadata must be JSON-serialisable: "),
    ]
    for change, error, message in cases:
        with pytest.raises(error, match=f"^{re.escape(message)}"):
            QuantModel(**{**ok, **change})
    model = QuantModel(**ok)
    with pytest.raises(ValueError, match=re.escape("inputs must have shape (n, 4), not (4,)")):
        model.float_forward(np.zeros(4))
    with pytest.raises(ValueError, match=re.escape("inputs holds 32, outside uint5")):
        model.integer_forward(np.full((1, 4), 32))
    with pytest.raises(TypeError, match=re.escape("inputs must hold integers, not float64")):
        model.integer_forward(np.zeros((1, 4)))
    with pytest.raises(ValueError, match=re.escape(
            "backend must be 'integer' or 'float', not 'iss'")):
        model.predict(np.zeros((1, 4)), backend="iss")


# File format ----------------------------------------------------------------------------

def test_save_load_round_trip(tmp_path):
    model = random_model(1)
    path = tmp_path / "model.npz"
    model.save(path)
    loaded = QuantModel.load(path)
    header, arrays = model._state()
    header2, arrays2 = loaded._state()
    assert header == header2
    assert arrays.keys() == arrays2.keys()
    for key in arrays:
        assert arrays[key].dtype == arrays2[key].dtype == np.float64
        assert np.array_equal(arrays[key], arrays2[key]), key
    x = digits_like(np.random.default_rng(0), 50)
    assert np.array_equal(model.integer_scores(x), loaded.integer_scores(x))
    assert np.array_equal(model.float_forward(x), loaded.float_forward(x))
    assert loaded.metadata == {"seed": 1}


def rewrite_header(path, out, change):
    with np.load(path) as archive:
        arrays = dict(archive)
    header = json.loads(arrays["header"].tobytes())
    change(header)
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    with open(out, "wb") as file:
        np.savez(file, **arrays)


def test_load_refuses_unknown_version_and_bad_files(tmp_path):
    path, bad = tmp_path / "m.npz", tmp_path / "bad.npz"
    random_model(2).save(path)
    rewrite_header(path, bad, lambda h: h.update(version=2))
    with pytest.raises(ModelFileError, match=f"^{re.escape(str(bad))}: model format version 2 "
                       f"is not supported; this lowbit reads version {VERSION} only$"):
        QuantModel.load(bad)
    rewrite_header(path, bad, lambda h: h.update(format="onnx"))
    with pytest.raises(ModelFileError, match="header format is 'onnx', expected "
                       "'lowbit-model'"):
        QuantModel.load(bad)
    rewrite_header(path, bad, lambda h: h["layers"][2].update(type="Relu"))
    with pytest.raises(ValueError, match="^.*: layer 2 has unknown type 'Relu' \\(known: "):
        QuantModel.load(bad)
    rewrite_header(path, bad, lambda h: h["layers"][0].update(weight_bits=9))
    with pytest.raises(ValueError, match="^.*bad.npz: Dense weight_bits must be in 1..8, not 9$"):
        QuantModel.load(bad)
    text = tmp_path / "text.npz"
    text.write_text("hello")
    with pytest.raises(ModelFileError, match="not a lowbit model file \\(expected an .npz "
                       "archive with a JSON header\\)$"):
        QuantModel.load(text)
    plain = tmp_path / "plain.npz"
    np.savez(plain, x=np.zeros(2))
    with pytest.raises(ModelFileError, match="not a lowbit model file"):
        QuantModel.load(plain)


# Integer form: thresholds exact ---------------------------------------------------------

@pytest.mark.parametrize("act", ["sign", 1, 2, 3])
def test_thresholds_equal_golden_fold(act):
    """Binary weights with scale 1 on step-1 inputs: one accumulator step is 1, so the
    model's thresholds are exactly the golden fold_thresholds of its batch norm."""
    model = random_model(3 + (act if act != "sign" else 0), widths=(64, 12, 10),
                         weight_bits=(1, 1), acts=(act,))
    layer = model.integer_form().layers[0]
    bn = model.layers[1]
    levels = [0.0] if act == "sign" else model.layers[2].levels
    t, flip = fold_thresholds(bn.mean, bn.sigma, bn.gamma, bn.beta, levels, layer.acc_bits)
    assert np.array_equal(layer.thresholds, t)
    assert np.array_equal(layer.flip, flip.astype(bool))
    assert set(np.sign(bn.gamma)) == {-1.0, 0.0, 1.0}
    # And the counts are the exact sign(batchnorm(x)) semantics on every accumulator value.
    acc = np.arange(-64 * 16, 64 * 16 + 1)[:, None].repeat(layer.weight.shape[0], axis=1)
    count = layer.activate(acc)
    reference = threshold_reference(acc, bn.mean, bn.sigma, bn.gamma, bn.beta, levels)
    expected = 2 * reference - 1 if act == "sign" else reference
    assert np.array_equal(count, expected)


def test_thresholds_exact_with_power_of_two_unit():
    """Input step 0.25 and weight scales 2^-3: bn(unit * acc) equals threshold_reference on
    mean / unit and sigma / unit, both exact in float64."""
    rng = np.random.default_rng(7)
    n = 12
    weight = rng.normal(size=(n, 8))
    dense = Dense(weight, weight_bits=3, scale=np.full(n, 0.125))
    norm = random_bn(rng, n, scale=2.0)
    model = QuantModel("m", "x", InputQuantizer(4, 0.25), (8,),
                       [dense, norm, MultiThreshold.uniform(2), Dense(np.ones((2, n)))])
    layer = model.integer_form().layers[0]
    unit = 0.25 * 0.125
    lo, hi = -(1 << (layer.acc_bits - 1)), (1 << (layer.acc_bits - 1)) - 1
    acc = np.arange(lo, hi + 1)[:, None].repeat(n, axis=1)
    reference = threshold_reference(acc, norm.mean / unit, norm.sigma / unit, norm.gamma,
                                    norm.beta, model.layers[2].levels)
    assert np.array_equal(layer.activate(acc), reference)


def test_thresholds_exact_with_arbitrary_unit():
    """Any per-channel scale: counts equal exact rational evaluation of bn(unit * acc)."""
    rng = np.random.default_rng(8)
    n, levels = 10, MultiThreshold.uniform(2).levels
    norm = random_bn(rng, n, scale=0.3)
    units = [Fraction(float(u)) * Fraction(0.1) for u in rng.uniform(0.01, 0.05, size=n)]
    acc_bits = 8
    t, flip = fold_layer_thresholds(units, norm.gamma, norm.beta, norm.mean, norm.sigma,
                                    levels, acc_bits)
    for c in range(n):
        g, b, m, s = (Fraction(float(v[c])) for v in (norm.gamma, norm.beta, norm.mean,
                                                      norm.sigma))
        for acc in range(-128, 128):
            y = g * (units[c] * acc - m) / s + b
            exact = sum(y >= Fraction(float(level)) for level in levels)
            passed = (acc <= t[c]) if flip[c] else (acc >= t[c])
            assert int(passed.sum()) == exact, (c, acc)


def test_acc_bits_hold_every_accumulator():
    model = random_model(4, widths=(64, 16, 10), weight_bits=(4, 2), acts=(2,))
    first = model.integer_form().layers[0]
    # The largest |acc|: all inputs at 31 (uint5) against one row's positive weights.
    extreme = (first.weight > 0).astype(np.int64) * 31
    acc = first.accumulate(extreme)
    lo, hi = -(1 << (first.acc_bits - 1)), (1 << (first.acc_bits - 1)) - 1
    assert lo <= acc.min() and acc.max() <= hi
    assert first.first and not first.last and first.role == "first" and first.higher_precision
    assert first.input_precision == Precision("unsigned", 5)
    last = model.integer_form().layers[-1]
    assert last.last and last.thresholds is None and last.input_precision == Precision(
        "unsigned", 2)


# Integer form against float execution ---------------------------------------------------

@pytest.mark.parametrize("seed, weight_bits, acts", [
    (10, (1, 1, 1), ("sign", "sign")),
    (11, (1, 1, 1), (2, 2)),
    (12, (2, 2, 2), (2, 2)),
    (13, (4, 4, 4), (4, 4)),
    (14, (8, 1, 3), (3, "sign")),
])
def test_integer_forward_matches_float_forward(seed, weight_bits, acts):
    model = random_model(seed, weight_bits=weight_bits, acts=acts)
    x = digits_like(np.random.default_rng(seed), 400)
    integer = model.integer_forward(model.quantize_input(x), trace=True)
    floats = model.float_forward(x, trace=True)
    # Hidden activations agree exactly (random parameters: no float ties).
    hidden = [(layer, out) for layer, out in zip(model.layers, floats)
              if isinstance(layer, (Sign, MultiThreshold))]
    assert len(hidden) == len(integer) - 1
    for i, (got, (act, want)) in enumerate(zip(integer[:-1], hidden)):
        step = 1.0 if isinstance(act, Sign) else act.step
        assert np.array_equal(got * step, want), i
    # Class scores: the host affine of the integer scores equals float execution up to
    # rounding, and the predictions agree.
    scores = model.integer_form().layers[-1].host_scores(integer[-1])
    np.testing.assert_allclose(scores, floats[-1], rtol=1e-9, atol=1e-9)
    assert np.array_equal(model.predict(x), model.predict(x, backend="float"))


def test_integer_forward_handles_flatten_and_mnist_inputs():
    model = random_model(20, widths=(16, 8, 4), weight_bits=(1, 2), acts=("sign",),
                         input_bits=8, input_shape=(4, 4))
    x = np.random.default_rng(0).integers(0, 256, size=(30, 4, 4)).astype(np.uint8)
    assert np.array_equal(model.predict(x), model.predict(x, backend="float"))
    assert model.integer_forward(model.quantize_input(x)).shape == (30, 4)


def tie_model():
    """One input, one binary weight, batch norm chosen so that bn(1) is -2.8e-17 exactly
    but 0.0 in float: 1 - 0.1 rounds to 0.9 and 0.9 - 0.9 == 0."""
    layers = [Dense(np.ones((1, 1))),
              BatchNorm(gamma=[1.0], beta=[-0.9], mean=[0.1], var=[1.0], eps=0.0),
              Sign(),
              Dense(np.array([[1.0], [-1.0]]))]
    return QuantModel("tie", "none", InputQuantizer(1), (1,), layers)


def test_float_tie_at_a_threshold_is_the_documented_difference():
    model = tie_model()
    exact = (Fraction(1) - Fraction(0.1)) + Fraction(-0.9)
    assert exact < 0  # so sign(bn(1)) = -1 in the model's exact semantics
    x = np.array([[1.0]])
    floats = model.float_forward(x, trace=True)
    assert floats[1][0, 0] == 0.0 and floats[2][0, 0] == 1.0  # float: a tie, +1
    integer = model.integer_forward(model.quantize_input(x), trace=True)
    assert integer[0].tolist() == [[-1]]  # exact: -1
    assert model.predict(x).tolist() == [1]
    assert model.predict(x, backend="float").tolist() == [0]
    # Away from the tie the two agree.
    assert model.predict(np.array([[0.0]])).tolist() == model.predict(
        np.array([[0.0]]), backend="float").tolist() == [1]


def test_host_affine_folds_last_batch_norm_and_output():
    model = random_model(30)
    last = model.integer_form().layers[-1]
    dense, norm, out = model.layers[-2], model.layers[-1], model.output
    unit = model.layers[-3].step * dense.scale
    expected = norm.gamma * unit / norm.sigma * out.scale
    np.testing.assert_allclose(last.scale, expected, rtol=1e-12)
    np.testing.assert_allclose(
        last.offset, (norm.beta - norm.gamma * norm.mean / norm.sigma) * out.scale + out.offset,
        rtol=1e-12)


def test_integer_form_is_cached_and_read_only():
    model = random_model(31)
    form = model.integer_form()
    assert model.integer_form() is form
    with pytest.raises(ValueError):
        form.layers[0].weight[0, 0] = 5
    with pytest.raises(ValueError):
        form.layers[0].thresholds[0, 0] = 5


# Convolutions ---------------------------------------------------------------------------

def direct_conv(x, w, stride, padding, pad):
    """Convolution by explicit loops over output pixels (independent of lowbit's im2col)."""
    n, c, h, wd = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)),
                constant_values=pad)
    kh, kw = w.shape[2:]
    oh, ow = (h + 2 * padding - kh) // stride + 1, (wd + 2 * padding - kw) // stride + 1
    out = np.zeros((n, w.shape[0], oh, ow), dtype=np.result_type(x, w))
    for y in range(oh):
        for x_ in range(ow):
            patch = xp[:, :, y * stride:y * stride + kh, x_ * stride:x_ * stride + kw]
            out[:, :, y, x_] = np.einsum("ncij,kcij->nk", patch, w)
    return out


def cnn_model(seed, pad_value=1.0, weight_bits=1, act2="sign"):
    """Two conv stages: uint4 pixels (zero border), then +-1 or uint2 data with a declared
    border, max pools, flatten, dense."""
    rng = np.random.default_rng(seed)
    act = Sign() if act2 == "sign" else MultiThreshold.uniform(2)
    layers = [Conv2D(rng.normal(size=(6, 2, 3, 3)), weight_bits=weight_bits, padding=1),
              random_bn(rng, 6, 20.0), act, MaxPool2D(2),
              Conv2D(rng.normal(size=(5, 6, 3, 3)), padding=1, pad_value=pad_value,
                     stride=1), random_bn(rng, 5, 6.0), Sign(), MaxPool2D(3),
              Flatten(), Dense(rng.normal(size=(4, 5))), random_bn(rng, 4, 2.0)]
    return QuantModel(name="cnn", dataset="t", input_quantizer=InputQuantizer(4, 0.5),
                      input_shape=(2, 6, 7), layers=layers)


@pytest.mark.parametrize("pad_value, weight_bits, act2", [(1.0, 1, "sign"), (-1.0, 2, "sign"),
                                                          (0.0, 1, "sign"), (0.0, 3, "mt")])
def test_conv_integer_form_is_exact(pad_value, weight_bits, act2):
    m = cnn_model(3, pad_value, weight_bits, act2)
    x = np.random.default_rng(1).integers(0, 16, (40, 2, 6, 7)) * 0.5
    form = m.integer_form()
    assert [layer.conv.pad for layer in form.layers[:2]] == [0, int(pad_value)]
    xq = m.quantize_input(x)
    # the first layer's accumulators against a convolution by loops
    acc = form.layers[0].accumulate(xq.reshape(40, -1)).reshape(40, 6, 7, 6)
    direct = direct_conv(xq, form.layers[0].weight.reshape(6, 2, 3, 3), 1, 1, 0)
    assert np.array_equal(acc.transpose(0, 3, 1, 2), direct)
    # the integer form predicts as the float model (no input sits on a threshold here)
    assert np.array_equal(m.predict(x, backend="integer"), m.predict(x, backend="float"))
    trace = m.float_forward(x, trace=True)
    assert trace[3].shape == (40, 6, 3, 3) and trace[7].shape == (40, 5, 1, 1)


def test_conv_float_forward_pads_with_the_declared_value():
    rng = np.random.default_rng(2)
    conv = Conv2D(rng.normal(size=(3, 1, 3, 3)), weight_bits=2, padding=2, stride=2,
                  pad_value=-1.0)
    x = rng.choice([-1.0, 1.0], (2, 1, 5, 4))
    expected = direct_conv(x, conv.quantized_weight().reshape(3, 1, 3, 3), 2, 2, -1.0)
    assert np.allclose(conv.forward(x), expected)
    assert conv.output_shape((1, 5, 4)) == (3, 4, 3)


def test_conv_model_round_trip(tmp_path):
    m = cnn_model(4)
    m.save(tmp_path / "c.npz")
    loaded = QuantModel.load(tmp_path / "c.npz")
    assert loaded.layers[4].pad_value == 1.0 and loaded.layers[7].size == 3
    x = np.random.default_rng(0).integers(0, 16, (5, 2 * 6 * 7)) * 0.5  # flat rows
    assert np.array_equal(loaded.integer_scores(x), m.integer_scores(x))


def test_conv_messages():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(4, 1, 3, 3))
    q = InputQuantizer(4, 1.0)

    def make(layers, shape=(1, 4, 4)):
        return QuantModel(name="c", dataset="t", input_quantizer=q, input_shape=shape,
                          layers=layers)

    cases = [
        (lambda: Conv2D(w, pad_value=0.5), "Conv2D pad_value must be 0.0, 1.0 or -1.0, not 0.5"),
        (lambda: Conv2D(w, stride=0), "Conv2D stride must be an integer >= 1, not 0"),
        (lambda: Conv2D(w, weight_bits=9), "Conv2D weight_bits must be in 1..8, not 9"),
        (lambda: Conv2D(w[:, :, :, :0]), "Conv2D weight must not be empty"),
        (lambda: MaxPool2D(0), "MaxPool2D size must be a positive integer, not 0"),
        (lambda: make([Conv2D(w), Sign(), Flatten(), Dense(rng.normal(size=(2, 20)))]),
         "layer 3 (Dense) has 20 inputs but receives 16 features"),
        (lambda: make([Conv2D(w), Sign(), Dense(rng.normal(size=(2, 16)))]),
         "layer 2 (Dense) receives (4, 2, 2) samples: it needs a Flatten before it"),
        (lambda: make([Conv2D(rng.normal(size=(4, 2, 3, 3))), Sign(), Flatten(),
                       Dense(rng.normal(size=(2, 16)))]),
         "layer 0 (Conv2D) has 2 input channels but receives 1"),
        (lambda: make([Conv2D(rng.normal(size=(4, 1, 5, 5))), Sign(), Flatten(),
                       Dense(rng.normal(size=(2, 16)))]),
         "layer 0 (Conv2D): its 5x5 kernel is larger than its padded (1, 4, 4) input"),
        (lambda: make([Conv2D(w), Sign(), MaxPool2D(3), Flatten(),
                       Dense(rng.normal(size=(2, 4)))]),
         "layer 2 (MaxPool2D): window 3 is larger than its (4, 2, 2) input"),
        (lambda: make([Conv2D(w), BatchNorm(*np.ones((3, 4)), np.ones(4))]),
         "layer 0 (Conv2D): the last layer must be a Dense (raw class scores), not a Conv2D"),
        (lambda: make([Conv2D(w, padding=1, pad_value=1.0), Sign(), Flatten(),
                       Dense(rng.normal(size=(2, 64)))]).integer_form(),
         "layer 0 (Conv2D): pad_value 1.0 is not a value of its uint4 inputs; pad them with 0.0"),
    ]
    for build, message in cases:
        with pytest.raises((ValueError, TypeError), match=f"^{re.escape(message)}"):
            build()
