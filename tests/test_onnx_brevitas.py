"""ONNX import of the networks Brevitas exports: FINN's example networks from
``brevitas_examples.bnn_pynq`` (the TFC, SFC and LFC MLPs and the CNV CNN) at w1a1, w1a2 and
w2a2, with random and with briefly trained weights, and MLPs with biases and k-bit ReLU
activations on Brevitas's default quantizers.

The importer's contract, checked for every model: the imported model's integer-form
predictions equal qonnx's ``execute_onnx`` on the exported graph, and its host scores are
the graph's output (float32 rounding apart). The ``test_iss_*`` tests compile binary-weight
MLPs and run them on the ISS; those that compile multi-bit weights or convolutions are
marked ``needs_legacy_core``.

Exports are cached per session; torch runs on the CPU with denormals flushed.
"""

import dataclasses
import importlib.util
import time
import warnings

import numpy as np
import pytest

from lowbit.compiler import compile_model, run_model
from lowbit.config.accelerator import AcceleratorConfig
from lowbit.onnx_import import input_transform, load_onnx, prepare_input
from lowbit.runtime import ISSTransport, Runtime

HAS_BREVITAS = all(importlib.util.find_spec(m) is not None
                   for m in ("torch", "brevitas", "brevitas_examples"))
pytestmark = [
    pytest.mark.skipif(not HAS_BREVITAS, reason="torch and brevitas are not installed "
                       "(optional extra: pip install -e '.[brevitas]')"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
]

BATCH = 8  # exported with this batch, so qonnx executes every sample in one go

BNN_PYNQ = ["tfc_1w1a", "tfc_1w2a", "tfc_2w2a", "sfc_1w1a", "sfc_1w2a", "sfc_2w2a",
            "lfc_1w1a", "lfc_1w2a", "cnv_1w1a", "cnv_1w2a", "cnv_2w2a"]


def _input_shape(name):
    return (BATCH, 3, 32, 32) if name.startswith("cnv") else (BATCH, 1, 28, 28)


def _randomize_batch_norms(net, generator):
    import torch
    for module in net.modules():
        if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=generator) * 3)
            module.running_var.copy_(torch.rand(n, generator=generator) * 4.5 + 0.5)
            module.weight.data.copy_(torch.randn(n, generator=generator) * 0.5 + 1)
            module.bias.data.copy_(torch.randn(n, generator=generator))


def _train_briefly(net, shape, generator, steps=4, batch=16):
    """A few optimizer steps on random images and labels: weights and batch-norm
    statistics move off their initial values."""
    import torch
    net.train()
    optimizer = torch.optim.Adam(net.parameters(), lr=0.02)
    for _ in range(steps):
        x = torch.rand((batch, *shape[1:]), generator=generator)
        y = torch.randint(0, 10, (batch,), generator=generator)
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        optimizer.step()
    net.eval()


def _export(net, shape, path):
    import torch
    from brevitas.export import export_qonnx
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_qonnx(net, torch.rand(shape), export_path=str(path), dynamo=False)
    return path


@pytest.fixture(scope="session")
def exports(tmp_path_factory):
    """``get(key, build)``: the exported ONNX path of ``build()``'s ``(net, shape)``, made
    once per session."""
    import torch
    torch.set_flush_denormal(True)
    folder = tmp_path_factory.mktemp("brevitas")
    cache = {}

    def get(key, build):
        if key not in cache:
            net, shape = build()
            cache[key] = (_export(net, shape, folder / f"{key}.onnx"), shape)
        return cache[key]

    return get


def bnn_pynq(name, trained):
    import torch
    from brevitas_examples.bnn_pynq.models import model_with_cfg
    generator = torch.Generator().manual_seed(sum(map(ord, name)) + trained)
    torch.manual_seed(sum(map(ord, name)))
    net, _ = model_with_cfg(name, pretrained=False)
    shape = _input_shape(name)
    if trained:
        cnn = name.startswith("cnv")
        _train_briefly(net, shape, generator, steps=2 if cnn else 4, batch=8 if cnn else 16)
    else:
        _randomize_batch_norms(net, generator)
        net.eval()
    return net, shape


def bias_relu_mlp(weight_bits, act_bits, per_channel=False, signed_input=True):
    """QuantIdentity (Brevitas's default: signed 8-bit input) -> QuantLinear with biases ->
    QuantReLU(act_bits) -> QuantLinear -> BatchNorm1d -> QuantReLU -> QuantLinear."""
    import torch
    from brevitas.nn import QuantIdentity, QuantLinear, QuantReLU
    from brevitas.quant import Int8WeightPerChannelFloat, Int8WeightPerTensorFloat
    torch.manual_seed(weight_bits * 10 + act_bits + per_channel)
    weight_quant = Int8WeightPerChannelFloat if per_channel else Int8WeightPerTensorFloat
    layer = dict(weight_quant=weight_quant, weight_bit_width=weight_bits, bias=True)
    net = torch.nn.Sequential(
        QuantIdentity() if signed_input else QuantIdentity(bit_width=8, signed=False),
        torch.nn.Flatten(),
        QuantLinear(64, 32, **layer),
        QuantReLU(bit_width=act_bits),
        QuantLinear(32, 24, **layer),
        torch.nn.BatchNorm1d(24),
        QuantReLU(bit_width=act_bits),
        QuantLinear(24, 10, **layer))
    generator = torch.Generator().manual_seed(7)
    _train_briefly(net, (BATCH, 64), generator, steps=6)
    return net, (BATCH, 64)


def default_mlp():
    """Every quantizer Brevitas's default: 8-bit per-tensor weights, signed 8-bit input,
    unsigned 8-bit ReLU."""
    import torch
    from brevitas.nn import QuantIdentity, QuantLinear, QuantReLU
    torch.manual_seed(3)
    net = torch.nn.Sequential(QuantIdentity(), QuantLinear(32, 16, bias=True), QuantReLU(),
                              QuantLinear(16, 10, bias=True))
    _train_briefly(net, (BATCH, 32), torch.Generator().manual_seed(3), steps=4)
    return net, (BATCH, 32)


def run_qonnx(path, x):
    """qonnx's ``execute_onnx`` of the exported file on ``x`` (float32)."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.transformation.infer_shapes import InferShapes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wrapper = ModelWrapper(str(path)).transform(InferShapes())
        out = execute_onnx(wrapper, {wrapper.graph.input[0].name: x.astype(np.float32)})
    return np.asarray(out[wrapper.graph.output[0].name], dtype=np.float64)


def random_inputs(shape, seed=0, signed=False):
    rng = np.random.default_rng(seed)
    x = rng.random(shape) * (2 if signed else 1) - (1 if signed else 0)
    return x.astype(np.float32)


def check_predictions(predicted, expected, atol):
    """``predicted`` is qonnx's argmax wherever the graph's top score is unique; where two
    classes tie exactly (common with integer accumulators: their scores differ by less
    than float32 rounding), it is one of the tied classes."""
    top = expected.max(axis=1, keepdims=True)
    tied = expected >= top - atol
    unique = tied.sum(axis=1) == 1
    assert np.array_equal(predicted[unique], expected.argmax(1)[unique])
    assert tied[np.arange(len(predicted)), predicted].all()


def check_contract(path, x):
    """The imported model's predictions are qonnx's; its host scores are the graph's
    output (the importer's map from the last accumulator to the scores is the graph's own,
    rounded once to float64; qonnx computes in float32)."""
    model = load_onnx(path)
    expected = run_qonnx(path, x)
    inputs = prepare_input(model, x)
    scores = model.integer_scores(inputs)
    atol = 1e-5 * max(1.0, float(np.abs(expected).max()))
    assert np.allclose(scores, expected, rtol=0, atol=atol)
    check_predictions(model.predict(inputs), expected, atol)
    return model, inputs, expected


@pytest.mark.parametrize("trained", [False, True], ids=["random", "trained"])
@pytest.mark.parametrize("name", BNN_PYNQ)
def test_bnn_pynq_matches_qonnx(exports, name, trained):
    path, shape = exports(f"{name}-{trained}", lambda: bnn_pynq(name, trained))
    model, _, _ = check_contract(path, random_inputs(shape, seed=len(name)))
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds.count("Dense") == {"tfc": 4, "sfc": 4, "lfc": 4, "cnv": 3}[name[:3]]
    if name.startswith("cnv"):
        assert kinds.count("Conv2D") == 6 and kinds.count("MaxPool2D") == 2
        # Brevitas's CNV quantizes 2x - 1 with a signed 8-bit Quant: an input transform
        assert input_transform(model).levels == 255
    weight_bits = int(name.split("_")[1][0])
    dense = [layer for layer in model.layers if type(layer).__name__ in ("Dense", "Conv2D")]
    assert {layer.weight_bits for layer in dense} == {weight_bits}


@pytest.mark.parametrize("weight_bits,act_bits,per_channel", [
    (2, 2, False),  # ternary weights (narrow-range 2-bit), 2-bit ReLU
    (4, 2, True),
    (3, 4, False),
    (8, 8, True),
], ids=["w2a2-ternary", "w4a2-per-channel", "w3a4", "w8a8-per-channel"])
def test_mlp_with_biases_and_kbit_relu_matches_qonnx(exports, weight_bits, act_bits,
                                                     per_channel):
    path, shape = exports(f"mlp-{weight_bits}-{act_bits}-{per_channel}",
                          lambda: bias_relu_mlp(weight_bits, act_bits, per_channel))
    model, _, _ = check_contract(path, random_inputs(shape, seed=1, signed=True))
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds.count("MultiThreshold") == 2
    if weight_bits == 2:
        q = model.layers[0].integer_weight()
        assert set(np.unique(q)) <= {-1, 0, 1}


def test_unsigned_input_mlp_needs_no_transform(exports):
    path, shape = exports("mlp-unsigned", lambda: bias_relu_mlp(4, 2, signed_input=False))
    model, _, _ = check_contract(path, random_inputs(shape, seed=2))
    assert input_transform(model) is None
    assert model.input_quantizer.bits == 8


def test_brevitas_default_quantizers_match_qonnx(exports):
    path, shape = exports("mlp-default", default_mlp)
    model, _, _ = check_contract(path, random_inputs(shape, seed=3, signed=True))
    assert input_transform(model).levels == 255  # signed 8-bit input
    assert [layer.weight_bits for layer in model.layers
            if type(layer).__name__ == "Dense"] == [8, 8]


# Compiled and run on the ISS --------------------------------------------------------------

def iss_config(act_bits, conv=False):
    base = AcceleratorConfig()
    array = base.xnor_array.replace(max_k=4096 if conv else 1024)
    return base.replace(max_out_bits=min(max(1, act_bits), 4), xnor_array=array)


def check_iss(path, x, act_bits, batch=BATCH, conv=False):
    model, inputs, expected = check_contract(path, x)
    config = iss_config(act_bits, conv)
    program = compile_model(model, config, batch=batch)
    with ISSTransport(config) as link:
        scores, _ = run_model(program, Runtime(config, link), inputs)
    assert np.array_equal(scores, model.integer_scores(inputs))
    check_predictions(scores.argmax(1), expected, 1e-5 * max(1.0, np.abs(expected).max()))


@pytest.mark.parametrize("name", ["tfc_1w1a", "tfc_1w2a", "sfc_1w1a"])
def test_iss_matches_onnx_bnn_pynq(exports, name):
    path, shape = exports(f"{name}-True", lambda: bnn_pynq(name, True))
    check_iss(path, random_inputs(shape, seed=5), int(name[-2]))


@pytest.mark.needs_legacy_core
def test_iss_matches_onnx_bnn_pynq_w2a2(exports):
    path, shape = exports("tfc_2w2a-True", lambda: bnn_pynq("tfc_2w2a", True))
    check_iss(path, random_inputs(shape, seed=6), 2)


def test_lfc_import_and_compile_time(exports, record_property):
    """Import plus compile of the LFC MLP (784-1024-1024-1024-10, w1a1): the times are
    reported (``-s`` prints them), not asserted."""
    path, shape = exports("lfc_1w1a-True", lambda: bnn_pynq("lfc_1w1a", True))
    load_onnx(path)  # warm: qonnx's and onnxruntime's imports
    start = time.perf_counter()
    model = load_onnx(path)
    imported = time.perf_counter() - start
    start = time.perf_counter()
    program = compile_model(model, AcceleratorConfig(), batch=16)
    compiled = time.perf_counter() - start
    assert [layer.out_features for layer in model.layers
            if type(layer).__name__ == "Dense"] == [1024, 1024, 1024, 10]
    assert len(program) > 0
    record_property("import_seconds", round(imported, 3))
    record_property("compile_seconds", round(compiled, 3))
    print(f"\nLFC 784-1024-1024-1024-10 w1a1: import {imported:.2f} s, compile "
          f"{compiled:.2f} s ({len(program)} instructions, {len(program.constants)} "
          f"constant words)")
