"""ONNX / QONNX import: graphs built here with onnx.helper, imported, and checked against an
independent execution of the same graph (a numpy evaluator written below, node by node in
float64 with Sign as ``>= 0``; onnxruntime too where installed and the graph has only
standard ops) and against the compiled program on the ISS. Every kind of unmappable node
gets an error naming the node, its op and why."""

import importlib.util

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from lowbit.compiler import compile_model, run_model
from lowbit.config.accelerator import AcceleratorConfig
from lowbit.config.xnor_array import XNORArrayConfig
from lowbit.model import InputQuantizer, QuantModel
from lowbit.cli import main
from lowbit.onnx_import import ONNXImportError, load_onnx
from lowbit.runtime import ISSTransport, Runtime

QONNX = "qonnx.custom_op.general"
HAS_ORT = importlib.util.find_spec("onnxruntime") is not None
HAS_BREVITAS = (importlib.util.find_spec("torch") is not None
                and importlib.util.find_spec("brevitas") is not None)


# A numpy reference evaluator (independent of lowbit.onnx_import) ------------------------

def _attrs(node):
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def evaluate(model, x):
    """Run ``model`` on ``x`` node by node in float64 (Sign: +1 where ``>= 0``)."""
    graph = model.graph
    env = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in graph.initializer}
    env[graph.input[0].name] = np.asarray(x, dtype=np.float64)
    for node in graph.node:
        a = _attrs(node)
        i = [env[n] if n else None for n in node.input]
        op = node.op_type
        if op == "Constant":
            out = numpy_helper.to_array(a["value"]).astype(np.float64)
        elif op == "Identity":
            out = i[0]
        elif op == "MatMul":
            out = i[0] @ i[1]
        elif op == "Gemm":
            w = i[1].T if a.get("transB", 0) else i[1]
            out = a.get("alpha", 1.0) * (i[0] @ w)
            if len(i) > 2 and i[2] is not None:
                out = out + a.get("beta", 1.0) * i[2]
        elif op in ("Add", "Sub", "Mul", "Div"):
            out = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply,
                   "Div": np.divide}[op](i[0], i[1])
        elif op == "BatchNormalization":
            # per channel: axis 1 ((N, C) or (N, C, H, W) data)
            scale, bias, mean, var = (p.reshape(-1, *[1] * (i[0].ndim - 2)) for p in i[1:5])
            out = scale * (i[0] - mean) / np.sqrt(var + a.get("epsilon", 1e-5)) + bias
        elif op == "Conv":
            out = conv2d(i[0], i[1], a.get("strides", [1, 1]), a.get("pads", [0, 0, 0, 0]))
            if len(i) > 2 and i[2] is not None:
                out = out + i[2].reshape(-1, 1, 1)
        elif op == "MaxPool":
            out = max_pool2d(i[0], a["kernel_shape"], a.get("strides", [1, 1]))
        elif op == "Sign":
            out = np.where(i[0] >= 0, 1.0, -1.0)
        elif op == "Relu":
            out = np.maximum(i[0], 0)
        elif op == "Flatten":
            out = i[0].reshape(i[0].shape[0], -1)
        elif op == "Reshape":
            out = i[0].reshape([int(v) for v in i[1]])
        elif op == "Transpose":
            out = np.transpose(i[0], a.get("perm"))
        elif op == "Softmax":
            e = np.exp(i[0] - i[0].max(axis=-1, keepdims=True))
            out = e / e.sum(axis=-1, keepdims=True)
        elif op == "Quant":  # qonnx int_quant
            scale, zeropt, bits = i[1], i[2], int(i[3])
            signed, narrow = a.get("signed", 1), a.get("narrow", 0)
            mode = a.get("rounding_mode", b"ROUND")
            mode = mode.decode() if isinstance(mode, bytes) else mode
            y = i[0] / scale + zeropt
            if bits == 1 and signed:
                y = np.where(y >= 0, 1.0, -1.0)
            else:
                lo = (-(2 ** (bits - 1)) + narrow) if signed else 0
                hi = (2 ** (bits - 1) - 1) if signed else 2 ** bits - 1 - narrow
                y = {"ROUND": np.round, "FLOOR": np.floor, "CEIL": np.ceil}[mode](
                    np.clip(y, lo, hi))
            out = (y - zeropt) * scale
        elif op == "BipolarQuant":
            out = np.where(i[0] >= 0, 1.0, -1.0) * i[1]
        elif op == "MultiThreshold":
            # thresholds (C or 1, T) against the channel axis 1 (NCHW)
            t = i[1].reshape(1, i[1].shape[0], *[1] * (i[0].ndim - 2), i[1].shape[1])
            out = (i[0][..., None] >= t).sum(axis=-1) * a.get("out_scale", 1.0) \
                + a.get("out_bias", 0.0)
        else:
            raise NotImplementedError(op)
        env[node.output[0]] = out
    return env[graph.output[0].name]


def conv2d(x, w, strides, pads):
    """ONNX Conv (group 1, no dilation) by its definition: zero-padded input, a sum over
    every kernel tap (written here without lowbit's im2col)."""
    (sy, sx), (top, left, bottom, right) = strides, pads
    x = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    n, _, kh, kw = w.shape
    oh, ow = (x.shape[2] - kh) // sy + 1, (x.shape[3] - kw) // sx + 1
    out = np.zeros((x.shape[0], n, oh, ow))
    for dy in range(kh):
        for dx in range(kw):
            tap = x[:, :, dy:dy + sy * (oh - 1) + 1:sy, dx:dx + sx * (ow - 1) + 1:sx]
            out += np.einsum("bchw,nc->bnhw", tap, w[:, :, dy, dx])
    return out


def max_pool2d(x, kernel, strides):
    """ONNX MaxPool without padding (floor): the maximum of each window, position by
    position."""
    (kh, kw), (sy, sx) = kernel, strides
    oh, ow = (x.shape[2] - kh) // sy + 1, (x.shape[3] - kw) // sx + 1
    out = np.empty((*x.shape[:2], oh, ow))
    for y in range(oh):
        for x_ in range(ow):
            out[:, :, y, x_] = x[:, :, y * sy:y * sy + kh, x_ * sx:x_ * sx + kw].max(axis=(2, 3))
    return out


# Graph building -------------------------------------------------------------------------

class Builder:
    def __init__(self, input_shape, name="g"):
        self.nodes, self.inits, self.count = [], [], 0
        self.input_shape = input_shape
        self.name = name
        self.x = "x"

    def const(self, value, name=None):
        self.count += 1
        name = name or f"c{self.count}"
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=np.float32), name))
        return name

    def node(self, op, inputs, name="", domain="", data=True, **attrs):
        self.count += 1
        out = f"t{self.count}"
        self.nodes.append(helper.make_node(op, inputs, [out], name=name, domain=domain,
                                           **attrs))
        if data:
            self.x = out
        return out

    def op(self, op, *consts, name="", domain="", **attrs):
        """A node on the data path: ``op(x, *consts)``."""
        names = [c if isinstance(c, str) else self.const(c) for c in consts]
        return self.node(op, [self.x, *names], name=name, domain=domain, **attrs)

    def quant(self, value, scale, bits, signed=1, narrow=0, zeropt=0.0, mode="ROUND",
              name=""):
        """A QONNX Quant on a constant (weights): returns its output name."""
        inputs = [self.const(value), self.const(scale), self.const(zeropt),
                  self.const(float(bits))]
        return self.node("Quant", inputs, name=name, domain=QONNX, data=False,
                         signed=signed, narrow=narrow, rounding_mode=mode)

    def bn(self, rng, n, name=""):
        return self.op("BatchNormalization", rng.uniform(0.5, 2, n) * rng.choice([-1, 1], n),
                       rng.normal(size=n), rng.normal(size=n) * 3,
                       rng.uniform(0.5, 4, n) * n, name=name, epsilon=1e-5)

    def build(self, classes):
        graph = helper.make_graph(
            self.nodes, self.name,
            [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                           ["N", *self.input_shape])],
            [helper.make_tensor_value_info(self.x, TensorProto.FLOAT, ["N", classes])],
            self.inits)
        opsets = [helper.make_opsetid("", 13)]
        if any(n.domain == QONNX for n in self.nodes):
            opsets.append(helper.make_opsetid(QONNX, 1))
        model = helper.make_model(graph, opset_imports=opsets)
        model.ir_version = 8
        return model


def pm1(rng, shape):
    return rng.choice([-1.0, 1.0], shape)


def binarized_mlp(seed=0, final_bn=True):
    """Plain ONNX BNN: inputs in [0, 1] binarized by Sign(2x - 1), +-1 weight constants and
    Sign of float weights, MatMul/Gemm, Add/Mul scales, BatchNormalization, Sign."""
    rng = np.random.default_rng(seed)
    b = Builder((1, 8, 8), name="bnn")
    b.op("Flatten", name="flatten", axis=1)
    b.op("Mul", 2.0, name="in_scale")
    b.op("Add", -1.0, name="in_shift")
    b.op("Sign", name="in_sign")
    b.op("MatMul", pm1(rng, (64, 48)), name="fc1")
    b.op("Add", rng.normal(size=48), name="fc1_bias")
    b.op("Mul", rng.uniform(0.5, 2, 48), name="fc1_scale")
    b.bn(rng, 48, name="bn1")
    b.op("Sign", name="act1")
    w2 = b.node("Sign", [b.const(rng.normal(size=(48, 40)))], name="w2_sign", data=False)
    b.op("MatMul", w2, name="fc2")
    b.bn(rng, 40, name="bn2")
    b.op("Sign", name="act2")
    b.op("Gemm", pm1(rng, (10, 40)), rng.normal(size=10), name="fc3", transB=1)
    if final_bn:
        b.bn(rng, 10, name="bn3")
    return b.build(10)


def quantized_input_mlp(seed=1):
    """Float inputs on the k/255 grid, no input quantizer in the graph; integer weight
    constants, per-channel Mul and Add before BatchNormalization; 2-bit activations via a
    QONNX MultiThreshold; a final Softmax."""
    rng = np.random.default_rng(seed)
    b = Builder((64,), name="qin")
    b.op("MatMul", pm1(rng, (64, 32)), name="fc1")
    b.op("Mul", rng.uniform(0.5, 2, 32), name="s1")
    b.op("Add", rng.normal(size=32), name="b1")
    b.bn(rng, 32, name="bn1")
    b.op("MultiThreshold", np.array([[-0.5, 0.25, 1.0]]), name="mt1", domain=QONNX,
         out_dtype="UINT2", out_scale=0.5)
    b.op("MatMul", rng.integers(-3, 4, (32, 24)).astype(float), name="fc2")
    b.bn(rng, 24, name="bn2")
    # per-channel thresholds: an affine image of one row
    alpha = rng.choice([0.5, 1.0, 2.0, 4.0], (24, 1))  # exact in float32
    beta = rng.integers(-8, 9, (24, 1)) / 4
    b.op("MultiThreshold", alpha * np.array([[-1.0, 0.0, 1.0]]) + beta, name="mt2",
         domain=QONNX, out_dtype="UINT2")
    b.op("MatMul", pm1(rng, (24, 10)), name="fc3")
    b.op("Softmax", name="softmax", axis=-1)
    return b.build(10)


def qonnx_mlp(seed=2):
    """QONNX as Brevitas exports it: an input Quant, Quant'ed k-bit weights with
    per-channel scales (Gemm transB=1 with bias), BipolarQuant'ed weights, Relu + unsigned
    2-bit Quant activations, BatchNormalization, a MultiThreshold, a last BatchNorm."""
    rng = np.random.default_rng(seed)
    b = Builder((1, 8, 8), name="qonnx")
    b.op("Quant", 1 / 255, 0.0, 8.0, name="in_quant", domain=QONNX, signed=0, narrow=0,
         rounding_mode="ROUND")
    b.op("Reshape", np.array([-1, 64]), name="reshape")
    w1 = b.quant(rng.normal(size=(32, 64)), rng.uniform(0.05, 0.2, (32, 1)), 4, narrow=1,
                 name="w1_quant")
    b.op("Gemm", w1, rng.normal(size=32), name="fc1", transB=1)
    b.bn(rng, 32, name="bn1")
    b.op("Relu", name="relu1")
    b.op("Quant", 0.5, 0.0, 2.0, name="act1", domain=QONNX, signed=0, narrow=0,
         rounding_mode="ROUND")
    w2 = b.node("BipolarQuant", [b.const(rng.normal(size=(32, 24))), b.const(0.25)],
                name="w2_bq", domain=QONNX, data=False)
    b.op("MatMul", w2, name="fc2")
    b.bn(rng, 24, name="bn2")
    b.op("MultiThreshold", np.array([[-0.5, 0.5, 1.5]]), name="act2", domain=QONNX,
         out_dtype="UINT2", out_scale=1.0, out_bias=0.0, data_layout="NCHW")
    w3 = b.quant(rng.normal(size=(24, 10)), 0.1, 3, narrow=1, name="w3_quant")
    b.op("MatMul", w3, name="fc3")
    b.bn(rng, 10, name="bn3")
    return b.build(10)


def qonnx_bipolar_mlp(seed=3):
    """BipolarQuant activations and a bipolar MultiThreshold (out_scale 2, out_bias -1)."""
    rng = np.random.default_rng(seed)
    b = Builder((64,), name="qbin")
    b.op("Quant", 1.0, 0.0, 5.0, name="in_quant", domain=QONNX, signed=0, narrow=0,
         rounding_mode="ROUND")
    w1 = b.quant(rng.normal(size=(48, 64)), rng.uniform(0.05, 0.2, (48, 1)), 2, narrow=1)
    b.op("Gemm", w1, name="fc1", transB=1)
    b.bn(rng, 48, name="bn1")
    b.op("BipolarQuant", 1.0, name="act1", domain=QONNX)
    b.op("MatMul", pm1(rng, (48, 32)), name="fc2")
    b.bn(rng, 32, name="bn2")
    b.op("MultiThreshold", rng.normal(size=(32, 1)), name="act2", domain=QONNX,
         out_dtype="BIPOLAR", out_scale=2.0, out_bias=-1.0)
    b.op("MatMul", pm1(rng, (32, 10)), name="fc3")
    return b.build(10)


def config_for(act):
    return AcceleratorConfig(
        xnor_array=XNORArrayConfig(rows=2, cols=2, max_k=128, max_weight_bits=1),
        max_out_bits=act, in_depth=256, act_depth=256, weight_depth=2048)


def unit_inputs(seed, n, shape):
    """Inputs in [0, 1] on the k/255 grid (float32 values, as the graph sees them)."""
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (n, *shape)) / 255).astype(np.float32).astype(np.float64)


def check_predictions(onnx_model, model, x, act, ort=False, iss=True):
    expected = evaluate(onnx_model, x).argmax(1)
    assert np.array_equal(model.predict(x), expected)
    assert np.array_equal(model.predict(x, backend="float"), expected)
    if ort:
        import onnxruntime
        session = onnxruntime.InferenceSession(onnx_model.SerializeToString(),
                                               providers=["CPUExecutionProvider"])
        got = session.run(None, {"x": x.astype(np.float32)})[0].argmax(1)
        assert np.array_equal(got, expected)
    if iss and binary_mlp(model):
        check_iss(model, x, act, expected)


def binary_mlp(model):
    """Whether the rebuilt core runs ``model``: dense layers with +-1 weights only (the
    others run on the ISS in tests marked ``needs_legacy_core``)."""
    return all(type(layer).__name__ != "Conv2D" for layer in model.layers) and all(
        layer.weight_bits == 1 for layer in model.layers if type(layer).__name__ == "Dense")


def check_iss(model, x, act, expected):
    config = config_for(act)
    program = compile_model(model, config, batch=8)
    with ISSTransport(config) as link:
        scores, _ = run_model(program, Runtime(config, link), x)
    assert np.array_equal(scores, model.integer_scores(x))
    assert np.array_equal(scores.argmax(1), expected)


# Equivalence ----------------------------------------------------------------------------

@pytest.mark.parametrize("final_bn", [True, False])
def test_binarized_mlp_matches_the_graph_and_the_iss(final_bn):
    onnx_model = binarized_mlp(final_bn=final_bn)
    onnx.checker.check_model(onnx_model)
    model = load_onnx(onnx_model)
    assert [type(l).__name__ for l in model.layers] == [
        "Flatten", "Dense", "BatchNorm", "Sign", "Dense", "BatchNorm", "Sign", "Dense"]
    assert model.input_quantizer.bits == 1  # Sign(2x - 1) on the input: x >= 0.5
    x = unit_inputs(0, 40, (1, 8, 8))
    check_predictions(onnx_model, model, x, act=1, iss=False)


def test_binarized_mlp_on_the_iss():
    # A 1-bit (0/1) input quantizer: the compiler runs its integers as 2-bit unsigned.
    onnx_model = binarized_mlp()
    model = load_onnx(onnx_model)
    x = unit_inputs(0, 40, (1, 8, 8))
    check_iss(model, x, 1, evaluate(onnx_model, x).argmax(1))


@pytest.mark.skipif(not HAS_ORT, reason="onnxruntime is not installed (extra onnx-ref)")
def test_binarized_mlp_matches_onnxruntime():
    # onnxruntime's Sign gives 0 at 0: the inputs stay off 0.5, the only exact tie here.
    onnx_model = binarized_mlp()
    model = load_onnx(onnx_model)
    x = np.random.default_rng(5).uniform(0, 1, (64, 1, 8, 8)).astype(np.float32)
    x = x[np.all(x != 0.5, axis=(1, 2, 3))].astype(np.float64)
    import onnxruntime
    session = onnxruntime.InferenceSession(onnx_model.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    got = session.run(None, {"x": x.astype(np.float32)})[0].argmax(1)
    assert np.array_equal(model.predict(x), got)


def test_input_sign_binarizes_with_greater_equal():
    # Sign(2 * 0.5 - 1) = Sign(0): +1 for lowbit (ONNX's Sign would give 0).
    model = load_onnx(binarized_mlp())
    q = model.input_quantizer
    x = np.array([0.0, 0.25, np.nextafter(0.5, 0), 0.5, np.nextafter(0.5, 1), 0.75, 1.0])
    assert q.quantize(x).tolist() == [0, 0, 0, 1, 1, 1, 1]


def test_input_quantizer_argument_and_multithreshold():
    onnx_model = quantized_input_mlp()
    with pytest.raises(ONNXImportError, match=r"node 'fc1' \(MatMul\): the input is "
                                              r"undetermined: .* --input-datatype and "
                                              r"--input-scale"):
        load_onnx(onnx_model)
    model = load_onnx(onnx_model, input_quantizer=InputQuantizer(8, 1 / 255))
    assert [type(l).__name__ for l in model.layers] == [
        "Dense", "BatchNorm", "MultiThreshold", "Dense", "BatchNorm", "MultiThreshold",
        "Dense"]
    assert model.layers[3].weight_bits == 3
    x = unit_inputs(1, 40, (64,))
    check_predictions(onnx_model, model, x, act=2)


@pytest.mark.skipif(not HAS_ORT, reason="onnxruntime is not installed (extra onnx-ref)")
def test_plain_graph_without_custom_ops_matches_onnxruntime():
    rng = np.random.default_rng(9)
    b = Builder((64,), name="plain")
    b.op("MatMul", pm1(rng, (64, 32)), name="fc1")
    b.bn(rng, 32, name="bn1")
    b.op("Sign", name="act1")
    b.op("MatMul", rng.integers(-7, 8, (32, 10)).astype(float), name="fc2")
    b.op("Mul", rng.uniform(0.5, 2, 10), name="s2")
    onnx_model = b.build(10)
    model = load_onnx(onnx_model, input_quantizer=InputQuantizer(8, 1 / 255))
    check_predictions(onnx_model, model, unit_inputs(3, 40, (64,)), act=1, ort=True)


def test_qonnx_mlp_matches_the_graph_and_the_iss():
    onnx_model = qonnx_mlp()
    model = load_onnx(onnx_model)
    assert model.input_quantizer == InputQuantizer(8, float(np.float32(1 / 255)))
    dense = [l for l in model.layers if type(l).__name__ == "Dense"]
    assert [d.weight_bits for d in dense] == [4, 1, 3]
    # Dense carries the Quant's per-channel scale
    quant = next(n for n in onnx_model.graph.node if n.name == "w1_quant")
    scale = next(numpy_helper.to_array(t) for t in onnx_model.graph.initializer
                 if t.name == quant.input[1])
    assert np.array_equal(dense[0].scale, scale.ravel().astype(np.float64))
    x = unit_inputs(2, 40, (1, 8, 8))
    check_predictions(onnx_model, model, x, act=2)
    # the same model through the explicit argument is refused when it disagrees
    with pytest.raises(ONNXImportError, match=r"node 'in_quant' \(Quant\): determines the "
                                              r"input quantizer .* conflicts"):
        load_onnx(onnx_model, input_quantizer=InputQuantizer(8, 1.0))


@pytest.mark.needs_legacy_core
def test_iss_matches_onnx_multibit_mlps():
    """The multi-bit-weight MLPs above, compiled and run on the ISS."""
    cases = [(quantized_input_mlp(), InputQuantizer(8, 1 / 255), unit_inputs(1, 40, (64,)),
              2),
             (qonnx_mlp(), None, unit_inputs(2, 40, (1, 8, 8)), 2)]
    for onnx_model, quantizer, x, act in cases:
        model = load_onnx(onnx_model, input_quantizer=quantizer)
        assert not binary_mlp(model)
        check_iss(model, x, act, evaluate(onnx_model, x).argmax(1))


def test_qonnx_bipolar_mlp_matches_the_graph_and_the_iss():
    onnx_model = qonnx_bipolar_mlp()
    model = load_onnx(onnx_model)
    assert [type(l).__name__ for l in model.layers] == [
        "Dense", "BatchNorm", "Sign", "Dense", "BatchNorm", "Sign", "Dense"]
    x = np.random.default_rng(4).integers(0, 32, (40, 64)).astype(float)
    check_predictions(onnx_model, model, x, act=1)


def test_rounding_ties_are_exact():
    # y = acc / 2 hits every half-integer: ROUND (half to even), FLOOR and CEIL levels.
    for mode in ("ROUND", "FLOOR", "CEIL"):
        rng = np.random.default_rng(11)
        b = Builder((16,), name="ties")
        b.op("Quant", 1.0, 0.0, 2.0, name="in_quant", domain=QONNX, signed=0, narrow=0,
             rounding_mode="ROUND")
        b.op("MatMul", pm1(rng, (16, 12)), name="fc1")
        b.op("Mul", 0.125, name="half")
        b.op("Add", 1.0, name="shift")
        b.op("Quant", 1.0, 0.0, 2.0, name="act1", domain=QONNX, signed=1, narrow=0,
             rounding_mode=mode)
        b.op("MatMul", pm1(rng, (12, 10)), name="fc2")
        onnx_model = b.build(10)
        model = load_onnx(onnx_model)
        x = rng.integers(0, 4, (500, 16)).astype(float)
        hidden = evaluate_hidden(onnx_model, x)
        got = model.integer_forward(model.quantize_input(x), trace=True)[0]
        # signed 2-bit activation: lowbit's counts are the graph's values + 2
        assert np.array_equal(got, hidden + 2), mode
        assert np.array_equal(model.predict(x), evaluate(onnx_model, x).argmax(1))


def evaluate_hidden(onnx_model, x):
    """The first activation's output (the Quant named act1) of the numpy evaluator."""
    graph = onnx_model.graph
    out = next(n.output[0] for n in graph.node if n.name == "act1")
    trimmed = onnx.ModelProto()
    trimmed.CopyFrom(onnx_model)
    del trimmed.graph.output[:]
    trimmed.graph.output.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, None))
    return evaluate(trimmed, x)


def test_hidden_sign_of_zero_is_plus_one():
    # Sign right after a MatMul of +-1 values with an even K: acc == 0 happens.
    rng = np.random.default_rng(12)
    b = Builder((8,), name="zero")
    b.op("Quant", 1.0, 0.0, 1.0, name="in_quant", domain=QONNX, signed=0, narrow=0,
         rounding_mode="ROUND")
    b.op("MatMul", pm1(rng, (8, 6)), name="fc1")
    b.op("Sign", name="act1")
    b.op("MatMul", pm1(rng, (6, 4)), name="fc2")
    onnx_model = b.build(4)
    model = load_onnx(onnx_model)
    x = np.array([[int(c) for c in f"{i:08b}"] for i in range(256)], dtype=float)
    expected = evaluate(onnx_model, x)
    got = model.integer_scores(x)
    assert np.array_equal(got, expected)  # +-1 arithmetic: exact in float64


# Errors ---------------------------------------------------------------------------------

def small(*extra, head=(), tail=None, shape=(16,), name="err"):
    """A 16-8-4 graph with ``head`` nodes before the first MatMul and ``extra`` between it
    and its activation; ``tail`` replaces the activation."""
    rng = np.random.default_rng(0)
    b = Builder(shape, name=name)
    for op, consts, kw in head:
        b.op(op, *consts, **kw)
    b.op("MatMul", pm1(rng, (16, 8)), name="fc1")
    for op, consts, kw in extra:
        b.op(op, *consts, **kw)
    if tail is None:
        b.op("Sign", name="act1")
    else:
        tail(b)
    b.op("MatMul", pm1(rng, (8, 4)), name="fc2")
    return b.build(4)


Q = InputQuantizer(4, 1.0)


@pytest.mark.parametrize("graph,pattern", [
    (lambda: small(("Tanh", (), {})), r"node 'Tanh_0' \(Tanh\): operator Tanh of the "
                                      r"standard domain is not supported"),
    (lambda: small(("Relu", (), dict(name="r")), ("Mul", (2.0,), dict(name="m"))),
     r"node 'r' \(Relu\): Relu is supported only right before a quantizing activation"),
    (lambda: small(("MatMul", (np.ones((8, 8)),), dict(name="fc1b"))),
     r"node 'fc1b' \(MatMul\): follows another MatMul/Gemm without an activation"),
    (lambda: small(("Mul", (np.ones((8, 8)) * 2,), dict(name="m"))),
     r"node 'm' \(Mul\): constant of shape \(8, 8\) does not broadcast"),
    (lambda: small(head=[("Mul", (np.arange(1, 17.0),), dict(name="m"))]),
     r"node 'm' \(Mul\): a per-feature scale before a layer"),
    (lambda: small(head=[("BatchNormalization", (np.ones(16), np.zeros(16), np.zeros(16),
                                                 np.ones(16)), dict(name="bn0"))]),
     r"node 'bn0' \(BatchNormalization\): BatchNormalization is supported only after"),
    (lambda: small(head=[("Flatten", (), dict(name="fl", axis=2))], shape=(1, 4, 4)),
     r"node 'fl' \(Flatten\): Flatten with axis=2"),
    (lambda: small(head=[("Relu", (), dict(name="r0"))]),
     r"node 'r0' \(Relu\): Relu is supported only"),
    (lambda: small(tail=lambda b: b.op("Quant", np.ones(8), 0.0, 2.0, name="aq",
                                       domain=QONNX, signed=0, narrow=0)),
     r"node 'aq' \(Quant\): per-channel activation scales are not supported"),
    (lambda: small(tail=lambda b: b.op("Quant", 1.0, 0.0, 2.0, name="aq", domain=QONNX,
                                       signed=0, narrow=0, rounding_mode="STOCHASTIC")),
     r"node 'aq' \(Quant\): rounding_mode 'STOCHASTIC' is not supported"),
])
def test_unmappable_nodes_are_named(graph, pattern):
    with pytest.raises(ONNXImportError, match=pattern):
        load_onnx(graph(), input_quantizer=Q)


def test_more_errors_name_the_node():
    rng = np.random.default_rng(0)
    # float weights that are not quantized
    b = Builder((16,))
    b.op("MatMul", rng.normal(size=(16, 4)), name="fc")
    with pytest.raises(ONNXImportError, match=r"node 'fc' \(MatMul\): weight 'c1' holds "
                                              r"float values"):
        load_onnx(b.build(4), input_quantizer=Q)
    # unsigned / zero-point weight Quant
    for kwargs, why in ((dict(signed=0), "unsigned weights"),
                        (dict(zeropt=1.0), "zero point 0")):
        b = Builder((16,))
        w = b.quant(rng.normal(size=(16, 4)), 0.1, 4, name="wq", **kwargs)
        b.op("MatMul", w, name="fc")
        with pytest.raises(ONNXImportError, match=rf"node 'wq' \(Quant\): .*{why}"):
            load_onnx(b.build(4), input_quantizer=Q)
    # signed input Quant
    b = Builder((16,))
    b.op("Quant", 1.0, 0.0, 4.0, name="iq", domain=QONNX, signed=1, narrow=0)
    b.op("MatMul", pm1(rng, (16, 4)), name="fc")
    signed = load_onnx(b.build(4))  # an input transform: the host counts the levels
    # -7.5 rounds to -8 (half to even): -7 needs x > -7.5; -6.5 rounds to -6
    assert signed.metadata["input_transform"]["thresholds"][0][:2] == [
        np.nextafter(-7.5, 0), -6.5]
    # a branch: two nodes read the same tensor, then an Add of two computed tensors
    b = Builder((16,))
    b.op("MatMul", pm1(rng, (16, 4)), name="fc")
    left = b.x
    b.node("Relu", [left], name="r1")
    b.node("Relu", [left], name="r2")
    with pytest.raises(ONNXImportError, match=r"node 'r2' \(Relu\): tensor 't2' feeds 2 "
                                              r"nodes .*not branches"):
        load_onnx(b.build(4), input_quantizer=Q)
    # Relu on the class scores
    b = Builder((16,))
    b.op("MatMul", pm1(rng, (16, 4)), name="fc")
    b.op("Relu", name="out_relu")
    with pytest.raises(ONNXImportError, match=r"node 'out_relu' \(Relu\): Relu on the class "
                                              r"scores"):
        load_onnx(b.build(4), input_quantizer=Q)
    # an input binarized at a threshold <= 0 (signed inputs)
    b = Builder((16,))
    b.op("Sign", name="in_sign")
    b.op("MatMul", pm1(rng, (16, 4)), name="fc")
    at_zero = load_onnx(b.build(4))  # x >= 0, an input transform
    assert at_zero.metadata["input_transform"]["thresholds"] == [[0.0]]
    # a QONNX op in an unknown domain, and a standard op name in a custom domain
    b = Builder((16,))
    b.op("Quant", 1.0, 0.0, 4.0, domain="com.example", signed=0, narrow=0)
    with pytest.raises(ONNXImportError, match=r"node 'Quant_0' \(Quant\): operator Quant of "
                                              r"domain 'com.example' is not supported"):
        load_onnx(b.build(16), input_quantizer=Q)
    assert issubclass(ONNXImportError, ValueError)


def test_not_a_chain_and_not_onnx(tmp_path):
    path = tmp_path / "junk.onnx"
    path.write_bytes(b"not a protobuf at all \xff\xfe")
    with pytest.raises(ValueError, match="not an ONNX model"):
        load_onnx(path)
    b = Builder((16,))
    b.op("Quant", 1.0, 0.0, 4.0, name="iq", domain=QONNX, signed=0, narrow=0)
    with pytest.raises(ValueError, match="must end with a MatMul or Gemm layer"):
        load_onnx(b.build(16))


# Convolutions ---------------------------------------------------------------------------

def conv_bn(b, rng, x, name):
    """A per-channel BatchNormalization with gammas of both signs and statistics near those
    of the graph so far on the inputs ``x`` (so that its outputs take both signs)."""
    y = evaluate(b.build(1), x)
    n, axes = y.shape[1], (0, *range(2, y.ndim))
    mean, std = y.mean(axis=axes), y.std(axis=axes) + 0.1
    return b.op("BatchNormalization", rng.uniform(0.5, 2, n) * rng.choice([-1, 1], n),
                rng.normal(size=n) * 0.3, mean + rng.normal(size=n) * std * 0.3,
                (std * rng.uniform(0.7, 1.4, n)) ** 2, name=name, epsilon=1e-5)


def binarized_cnn(seed=20):
    """Plain ONNX binarized CNN on (1, 8, 8) uint4 inputs: a Conv with +-1 weights, zero
    padding and a bias, BatchNormalization, Sign, MaxPool; a second Conv on the +-1 maps
    (Sign of float weights, zero padding: pad_value 0), per-channel Mul (C, 1, 1) and Add
    (1, C, 1, 1), BatchNormalization, Sign, no pool; Flatten; Gemm with a bias; a last
    BatchNormalization."""
    rng = np.random.default_rng(seed)
    b = Builder((1, 8, 8), name="bcnn")
    w1 = pm1(rng, (8, 1, 3, 3))
    bias = rng.normal(size=8)
    b.op("Conv", w1, bias, name="conv1", pads=[1, 1, 1, 1], strides=[1, 1],
         kernel_shape=[3, 3], dilations=[1, 1], group=1)
    conv_bn(b, rng, uint_inputs(0, 50, (1, 8, 8)), "bn1")
    b.op("Sign", name="act1")
    b.op("MaxPool", name="pool1", kernel_shape=[2, 2], strides=[2, 2])
    w2 = b.node("Sign", [b.const(rng.normal(size=(16, 8, 3, 3)))], name="w2_sign",
                data=False)
    b.op("Conv", w2, name="conv2", pads=[1, 1, 1, 1])
    b.op("Mul", rng.uniform(0.5, 2, (16, 1, 1)), name="s2")
    b.op("Add", rng.normal(size=(1, 16, 1, 1)), name="b2")
    conv_bn(b, rng, uint_inputs(0, 50, (1, 8, 8)), "bn2")
    b.op("Sign", name="act2")
    b.op("Flatten", name="flatten", axis=1)
    b.op("Gemm", pm1(rng, (10, 256)), rng.normal(size=10), name="fc", transB=1)
    b.bn(rng, 10, name="bn3")
    return b.build(10)


def exact_cnn(seed=21):
    """A plain ONNX CNN whose float32 execution is exact: integer inputs and weights,
    half-integer per-channel offsets before each Sign (no pre-activation is 0), a strided
    Conv with integer weights on the +-1 maps, integer class scores."""
    rng = np.random.default_rng(seed)
    b = Builder((2, 6, 6), name="exact")
    b.op("Conv", pm1(rng, (8, 2, 3, 3)), name="conv1", pads=[1, 1, 1, 1])
    b.op("Add", rng.integers(-20, 20, (8, 1, 1)) + 0.5, name="off1")
    b.op("Sign", name="act1")
    b.op("MaxPool", name="pool1", kernel_shape=[3, 3], strides=[3, 3])
    b.op("Conv", rng.integers(-3, 4, (8, 8, 2, 2)).astype(float), name="conv2",
         pads=[1, 1, 1, 1], strides=[2, 2])
    b.op("Sub", rng.integers(-4, 4, (1, 8, 1, 1)) + 0.5, name="off2")
    b.op("Sign", name="act2")
    b.op("Flatten", name="flatten", axis=1)
    b.op("MatMul", rng.integers(-2, 3, (32, 10)).astype(float), name="fc")
    b.op("Add", rng.integers(-5, 6, 10).astype(float), name="fc_bias")
    return b.build(10)


def qonnx_cnn(seed=22):
    """QONNX CNN as Brevitas exports one: an input Quant, a Conv with 4-bit per-channel
    Quant weights ((N, 1, 1, 1) scales), a bias and zero padding, BatchNormalization, Relu +
    2-bit Quant, MaxPool; a Conv with BipolarQuant weights on the 2-bit maps (zero
    padding), BatchNormalization, a per-channel MultiThreshold; Flatten, Gemm with 3-bit
    Quant weights, BatchNormalization."""
    rng = np.random.default_rng(seed)
    b = Builder((1, 8, 8), name="qcnn")
    b.op("Quant", 1 / 255, 0.0, 8.0, name="in_quant", domain=QONNX, signed=0, narrow=0,
         rounding_mode="ROUND")
    w1 = b.quant(rng.normal(size=(8, 1, 3, 3)), rng.uniform(0.05, 0.2, (8, 1, 1, 1)), 4,
                 narrow=1, name="w1_quant")
    b.op("Conv", w1, rng.normal(size=8) * 0.1, name="conv1", pads=[1, 1, 1, 1])
    conv_bn(b, rng, unit_inputs(0, 50, (1, 8, 8)), "bn1")
    b.op("Relu", name="relu1")
    b.op("Quant", 0.5, 0.0, 2.0, name="act1", domain=QONNX, signed=0, narrow=0,
         rounding_mode="ROUND")
    b.op("MaxPool", name="pool1", kernel_shape=[2, 2], strides=[2, 2])
    w2 = b.node("BipolarQuant", [b.const(rng.normal(size=(16, 8, 3, 3))), b.const(0.25)],
                name="w2_bq", domain=QONNX, data=False)
    b.op("Conv", w2, name="conv2", pads=[1, 1, 1, 1])
    conv_bn(b, rng, unit_inputs(0, 50, (1, 8, 8)), "bn2")
    alpha = rng.choice([0.5, 1.0, 2.0], (16, 1))  # exact in float32
    beta = rng.integers(-4, 5, (16, 1)) / 4
    b.op("MultiThreshold", alpha * np.array([[-1.0, 0.0, 1.0]]) + beta, name="act2",
         domain=QONNX, out_dtype="UINT2", out_scale=1.0, out_bias=0.0)
    b.op("Flatten", name="flatten", axis=1)
    w3 = b.quant(rng.normal(size=(10, 256)), 0.1, 3, narrow=1, name="w3_quant")
    b.op("Gemm", w3, name="fc", transB=1)
    conv_bn(b, rng, unit_inputs(0, 50, (1, 8, 8)), "bn3")
    return b.build(10)


def pool_first_cnn(seed=23, side=4):
    """Brevitas' order: Conv -> BatchNormalization (gammas of both signs) -> MaxPool ->
    BipolarQuant, 32 channels (a first layer lowbit's compiler runs); then a binarized
    Dense block and the scores."""
    rng = np.random.default_rng(seed)
    b = Builder((1, side, side), name="poolfirst")
    b.op("Quant", 1.0, 0.0, 4.0, name="in_quant", domain=QONNX, signed=0, narrow=0,
         rounding_mode="ROUND")
    w1 = pm1(rng, (32, 1, 3, 3))
    b.op("Conv", w1, name="conv1", pads=[1, 1, 1, 1])
    conv_bn(b, rng, uint_inputs(0, 50, (1, side, side)), "bn1")
    b.op("MaxPool", name="pool1", kernel_shape=[2, 2], strides=[2, 2])
    b.op("BipolarQuant", 1.0, name="act1", domain=QONNX)
    b.op("Flatten", name="flatten", axis=1)
    features = 32 * (side // 2) ** 2
    b.op("MatMul", pm1(rng, (features, 16)), name="fc1")
    b.bn(rng, 16, name="bn2")
    b.op("BipolarQuant", 1.0, name="act2", domain=QONNX)
    b.op("MatMul", pm1(rng, (16, 10)), name="fc2")
    return b.build(10)


def uint_inputs(seed, n, shape, high=15):
    return np.random.default_rng(seed).integers(0, high + 1, (n, *shape)).astype(float)


def layer_names(model):
    return [type(l).__name__ for l in model.layers]


def test_binarized_cnn_matches_the_graph():
    onnx_model = binarized_cnn()
    onnx.checker.check_model(onnx_model)
    model = load_onnx(onnx_model, input_quantizer=InputQuantizer(4, 1.0))
    assert layer_names(model) == ["Conv2D", "BatchNorm", "Sign", "MaxPool2D", "Conv2D",
                                  "BatchNorm", "Sign", "Flatten", "Dense"]
    conv1, conv2 = model.layers[0], model.layers[4]
    assert (conv1.padding, conv1.pad_value, conv1.stride) == (1, 0.0, 1)
    # the graph pads the +-1 maps with 0: kept as pad_value 0 (exact in the integer form)
    assert (conv2.padding, conv2.pad_value, conv2.weight_bits) == (1, 0.0, 1)
    assert model.input_shape == (1, 8, 8)
    x = uint_inputs(20, 60, (1, 8, 8))
    expected = evaluate(onnx_model, x).argmax(1)
    assert len(set(expected)) > 3  # the scores depend on the input
    assert np.array_equal(model.predict(x), expected)
    assert np.array_equal(model.predict(x, backend="float"), expected)


@pytest.mark.skipif(not HAS_ORT, reason="onnxruntime is not installed (extra onnx-ref)")
def test_binarized_cnn_matches_onnxruntime():
    # onnxruntime works in float32: its predictions equal the exact ones away from
    # float32 ties, which these random batch norms do not reach.
    onnx_model = binarized_cnn()
    model = load_onnx(onnx_model, input_quantizer=InputQuantizer(4, 1.0))
    x = uint_inputs(24, 60, (1, 8, 8))
    assert np.array_equal(model.predict(x), run_onnxruntime(onnx_model, x).argmax(1))


def run_onnxruntime(onnx_model, x):
    import onnxruntime
    session = onnxruntime.InferenceSession(onnx_model.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x.astype(np.float32)})[0].astype(np.float64)


@pytest.mark.skipif(not HAS_ORT, reason="onnxruntime is not installed (extra onnx-ref)")
def test_exact_cnn_gives_onnxruntimes_scores_exactly():
    # Small integers throughout: onnxruntime's float32 is exact, so the scores are equal,
    # not just the predictions (strided Conv, 3x3 pooling, zero padding of +-1 maps).
    onnx_model = exact_cnn()
    model = load_onnx(onnx_model, input_quantizer=InputQuantizer(4, 1.0))
    # each offset folds into a batch norm before its Sign
    assert layer_names(model) == ["Conv2D", "BatchNorm", "Sign", "MaxPool2D", "Conv2D",
                                  "BatchNorm", "Sign", "Flatten", "Dense"]
    assert model.layers[4].weight_bits == 3 and model.layers[4].stride == 2
    x = uint_inputs(21, 100, (2, 6, 6))
    expected = run_onnxruntime(onnx_model, x)
    assert np.array_equal(model.integer_scores(x), expected)
    assert np.array_equal(evaluate(onnx_model, x), expected)  # the evaluator agrees


def test_qonnx_cnn_matches_the_graph():
    onnx_model = qonnx_cnn()
    model = load_onnx(onnx_model)
    assert layer_names(model) == ["Conv2D", "BatchNorm", "MultiThreshold", "MaxPool2D",
                                  "Conv2D", "BatchNorm", "MultiThreshold", "Flatten", "Dense"]
    assert [model.layers[i].weight_bits for i in (0, 4, 8)] == [4, 1, 3]
    quant = next(n for n in onnx_model.graph.node if n.name == "w1_quant")
    scale = next(numpy_helper.to_array(t) for t in onnx_model.graph.initializer
                 if t.name == quant.input[1])
    assert np.array_equal(model.layers[0].scale, scale.ravel().astype(np.float64))
    x = unit_inputs(22, 60, (1, 8, 8))
    expected = evaluate(onnx_model, x).argmax(1)
    assert len(set(expected)) > 3
    assert np.array_equal(model.predict(x), expected)
    assert np.array_equal(model.predict(x, backend="float"), expected)


@pytest.mark.skipif(importlib.util.find_spec("qonnx") is None,
                    reason="qonnx is not installed (extra brevitas)")
def test_qonnx_cnn_matches_qonnx_executor():
    onnx_model = qonnx_cnn()
    model = load_onnx(onnx_model)
    x = unit_inputs(23, 30, (1, 8, 8))
    assert np.array_equal(model.predict(x), run_qonnx(onnx_model, x).argmax(1))


def run_qonnx(onnx_model, x):
    """qonnx's own executor (float32, one sample at a time: the graphs' batch is "N")."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.transformation.infer_shapes import InferShapes
    fixed = onnx.ModelProto()
    fixed.CopyFrom(onnx_model)
    constants = {t.name for t in fixed.graph.initializer}
    for value in (*fixed.graph.input, *fixed.graph.output):
        if value.name not in constants:
            value.type.tensor_type.shape.dim[0].dim_value = 1
    wrapper = ModelWrapper(fixed).transform(InferShapes())
    inp, out = wrapper.graph.input[0].name, wrapper.graph.output[0].name
    return np.concatenate([execute_onnx(wrapper, {inp: x[i:i + 1].astype(np.float32)})[out]
                           for i in range(len(x))]).astype(np.float64)


@pytest.mark.parametrize("out_scale,out_bias,pad", [(1.0, 0.0, -1.0), (-1.0, 1.0, 1.0)])
def test_zero_padding_of_bipolar_maps_becomes_pad_value(out_scale, out_bias, pad):
    # A one-threshold MultiThreshold gives 0/1 (or 1/0): the graph's zero border is the
    # count 0 (or 1), i.e. lowbit's -1 (or +1) of a Sign.
    rng = np.random.default_rng(24)
    b = Builder((1, 6, 6), name="pad")
    b.op("Conv", pm1(rng, (8, 1, 3, 3)), name="conv1")
    b.op("MultiThreshold", rng.integers(-10, 10, (8, 1)) + 0.5, name="act1", domain=QONNX,
         out_dtype="BINARY", out_scale=out_scale, out_bias=out_bias)
    b.op("Conv", pm1(rng, (8, 8, 3, 3)), name="conv2", pads=[1, 1, 1, 1])
    b.op("Add", rng.integers(-6, 6, (8, 1, 1)) + 0.5, name="off2")
    b.op("Sign", name="act2")
    b.op("Flatten", name="flatten", axis=1)
    b.op("MatMul", pm1(rng, (128, 10)), name="fc")
    onnx_model = b.build(10)
    model = load_onnx(onnx_model, input_quantizer=InputQuantizer(4, 1.0))
    assert layer_names(model)[:4] == ["Conv2D", "BatchNorm", "Sign", "Conv2D"]
    assert model.layers[3].pad_value == pad
    x = uint_inputs(25, 60, (1, 6, 6))
    expected = evaluate(onnx_model, x)  # integers throughout: exact in float64
    assert np.array_equal(model.integer_scores(x), expected)


def test_pool_before_the_activation_moves_after_it():
    onnx_model = pool_first_cnn()
    model = load_onnx(onnx_model)
    assert layer_names(model) == ["Conv2D", "BatchNorm", "Sign", "MaxPool2D", "Flatten",
                                  "Dense", "BatchNorm", "Sign", "Dense"]
    gammas = next(numpy_helper.to_array(t) for t in onnx_model.graph.initializer
                  if t.name == next(n for n in onnx_model.graph.node
                                    if n.name == "bn1").input[1])
    assert (gammas < 0).any() and (gammas > 0).any()  # both orders of the maximum occur
    x = uint_inputs(26, 80, (1, 4, 4))
    expected = evaluate(onnx_model, x)
    assert np.array_equal(model.predict(x), expected.argmax(1))
    # +-1 activations and weights: the scores are exact integers in float64 too
    assert np.array_equal(model.integer_scores(x), expected)


def test_flat_input_reshaped_to_images():
    # (N, 36) rows reshaped to (N, 1, 6, 6) before the Conv: the model takes (1, 6, 6)
    # samples, and flat rows too (the Reshape is row-major).
    rng = np.random.default_rng(28)
    b = Builder((36,), name="flat")
    b.op("Reshape", np.array([-1, 1, 6, 6]), name="to_image")
    b.op("Conv", pm1(rng, (8, 1, 3, 3)), name="conv1", strides=[3, 3])
    b.op("Add", rng.integers(-4, 4, (8, 1, 1)) + 0.5, name="off1")
    b.op("Sign", name="act1")
    b.op("Flatten", name="flatten", axis=1)
    b.op("MatMul", pm1(rng, (32, 10)), name="fc")
    onnx_model = b.build(10)
    model = load_onnx(onnx_model, input_quantizer=InputQuantizer(4, 1.0))
    assert model.input_shape == (1, 6, 6)
    x = uint_inputs(28, 50, (36,))
    expected = evaluate(onnx_model, x)  # +-1 and small integers: exact
    assert np.array_equal(model.integer_scores(x), expected)
    assert np.array_equal(model.integer_scores(x.reshape(-1, 1, 6, 6)), expected)


def test_per_channel_offsets_fold():
    # x - mean[c] before an unpadded Conv folds into its bias; an Add per channel after a
    # Sign passes through MaxPool (the maximum of x + b[c] is max(x) + b[c]) and folds into
    # the Dense's bias. Integers and halves only: the evaluator's float64 is exact.
    rng = np.random.default_rng(29)
    b = Builder((2, 6, 6), name="offsets")
    b.op("Sub", np.array([3.0, 5.0]).reshape(1, 2, 1, 1), name="centre")
    b.op("Conv", pm1(rng, (8, 2, 3, 3)), name="conv1")
    b.op("Add", rng.integers(-4, 4, (8, 1, 1)) + 0.5, name="off1")
    b.op("Sign", name="act1")
    b.op("Add", rng.integers(-3, 4, (8, 1, 1)).astype(float), name="shift")
    b.op("MaxPool", name="pool1", kernel_shape=[2, 2], strides=[2, 2])
    b.op("Flatten", name="flatten", axis=1)
    b.op("MatMul", rng.integers(-3, 4, (32, 10)).astype(float), name="fc")
    onnx_model = b.build(10)
    model = load_onnx(onnx_model, input_quantizer=InputQuantizer(4, 1.0))
    assert layer_names(model) == ["Conv2D", "BatchNorm", "Sign", "MaxPool2D", "Flatten",
                                  "Dense"]
    x = uint_inputs(29, 60, (2, 6, 6))
    expected = evaluate(onnx_model, x)
    assert np.array_equal(model.integer_scores(x), expected)
    # the same Sub with zero padding: the border would be the input 3 or 5, not 0
    b = Builder((2, 6, 6), name="offsets_padded")
    b.op("Sub", np.array([3.0, 5.0]).reshape(1, 2, 1, 1), name="centre")
    b.op("Conv", pm1(rng, (8, 2, 3, 3)), name="conv1", pads=[1, 1, 1, 1])
    b.op("Sign", name="act1")
    b.op("Flatten", name="flatten", axis=1)
    b.op("MatMul", pm1(rng, (288, 10)), name="fc")
    with pytest.raises(ONNXImportError, match=r"node 'conv1' \(Conv\): zero padding stands "
                                              r"for a different integer in each channel"):
        load_onnx(b.build(10), input_quantizer=InputQuantizer(4, 1.0))


def cnn_config():
    return AcceleratorConfig(
        xnor_array=XNORArrayConfig(rows=2, cols=2, max_k=128, max_weight_bits=1),
        max_out_bits=1, in_depth=4096, act_depth=4096, weight_depth=2048)


def test_imported_cnn_runs_on_the_iss():
    # A first-layer convolution with 32 Sign channels and 2x2 pooling: what the compiler
    # runs (host-built im2col rows, a pooled GEMM); the ISS gives the model's integer scores.
    onnx_model = pool_first_cnn()
    model = load_onnx(onnx_model)
    config = cnn_config()
    program = compile_model(model, config, batch=4)
    gemms = [i for i in program.instructions if i["opcode"].name == "GEMM"]
    # 2 row blocks x 4 pooled positions, windows of 4 row tiles, 16 column tiles of 2.
    assert (gemms[0]["m_tiles"], gemms[0]["pool"], gemms[0]["n_tiles"]) == (8, 4, 16)
    x = uint_inputs(27, 10, (1, 4, 4))
    with ISSTransport(config) as link:
        scores, _ = run_model(program, Runtime(config, link), x)
    assert np.array_equal(scores, model.integer_scores(x))
    assert np.array_equal(scores.argmax(1), evaluate(onnx_model, x).argmax(1))


# CNN errors -----------------------------------------------------------------------------

def conv(name="conv", weight=None, **attrs):
    w = np.ones((8, 2, 3, 3)) if weight is None else weight
    return ("Conv", (w,), dict(name=name, **{"pads": [1, 1, 1, 1], **attrs}))


def pool(name="pool", **attrs):
    return ("MaxPool", (), dict(name=name, **{"kernel_shape": [2, 2], "strides": [2, 2],
                                              **attrs}))


SIGN = ("Sign", (), dict(name="act"))


def cnn_steps(*steps, shape=(2, 6, 6), tail=True):
    """``steps`` on a (2, 6, 6) input, then (if ``tail``) Flatten and a MatMul; the error
    cases stop at a bad node before the MatMul's size matters."""
    b = Builder(shape, name="cnn_err")
    for op, consts, kw in steps:
        b.op(op, *consts, **kw)
    if tail:
        b.op("Flatten", axis=1)
        b.op("MatMul", np.ones((8, 4)))
        return b.build(4)
    return b.build(8)


@pytest.mark.parametrize("graph,pattern", [
    (lambda: cnn_steps(conv(strides=[1, 2]), SIGN),
     r"node 'conv' \(Conv\): strides \[1, 2\] are not supported: lowbit's Conv2D has one "
     r"stride"),
    (lambda: cnn_steps(conv(pads=[1, 1, 0, 0]), SIGN),
     r"node 'conv' \(Conv\): pads \[1, 1, 0, 0\] are not supported: .*symmetric and equal"),
    (lambda: cnn_steps(conv(dilations=[2, 2]), SIGN),
     r"node 'conv' \(Conv\): dilations \[2, 2\] are not supported: lowbit's Conv2D has no "
     r"dilation"),
    (lambda: cnn_steps(conv(weight=np.ones((8, 1, 3, 3)), group=2), SIGN),
     r"node 'conv' \(Conv\): group=2 \(a grouped or depthwise convolution\) is not "
     r"supported"),
    (lambda: cnn_steps(("Conv", (np.ones((8, 2, 3, 3)),),
                        dict(name="conv", auto_pad="SAME_UPPER")), SIGN),
     r"node 'conv' \(Conv\): auto_pad SAME_UPPER is not supported: give explicit"),
    (lambda: cnn_steps(conv(kernel_shape=[2, 2]), SIGN),
     r"node 'conv' \(Conv\): kernel_shape \[2, 2\] differs from the weights' \[3, 3\]"),
    (lambda: cnn_steps(conv(weight=np.ones((8, 3, 3, 3))), SIGN),
     r"node 'conv' \(Conv\): weights take 3 input channels, the tensor has 2"),
    (lambda: cnn_steps(("Conv", (np.ones((8, 2, 3)),), dict(name="conv")), SIGN,
                       shape=(2, 6)),
     r"node 'conv' \(Conv\): its input has per-sample shape \(2, 6\): lowbit's Conv2D "
     r"takes \(C, H, W\)"),
    (lambda: cnn_steps(conv(), SIGN, pool(pads=[1, 1, 1, 1])),
     r"node 'pool' \(MaxPool\): padding \(pads \[1, 1, 1, 1\]\) is not supported: lowbit's "
     r"MaxPool2D does not pad"),
    (lambda: cnn_steps(conv(), SIGN, pool(auto_pad="SAME_UPPER")),
     r"node 'pool' \(MaxPool\): padding \(SAME_UPPER\) is not supported"),
    (lambda: cnn_steps(conv(), SIGN, pool(strides=[1, 1])),
     r"node 'pool' \(MaxPool\): strides \[1, 1\] differ from kernel_shape \[2, 2\]: .*"
     r"non-overlapping"),
    (lambda: cnn_steps(conv(), SIGN, pool(ceil_mode=1)),
     r"node 'pool' \(MaxPool\): ceil_mode=1 is not supported"),
    (lambda: cnn_steps(conv(), SIGN, pool(kernel_shape=[2, 3], strides=[2, 3])),
     r"node 'pool' \(MaxPool\): kernel_shape \[2, 3\] is not square"),
    (lambda: cnn_steps(conv(), SIGN, pool(dilations=[2, 2])),
     r"node 'pool' \(MaxPool\): dilations \[2, 2\] are not supported"),
    (lambda: cnn_steps(pool(), conv()),
     r"node 'pool' \(MaxPool\): pools the network's input"),
    (lambda: cnn_steps(conv(), SIGN, pool(), pool(name="pool2")),
     r"node 'pool2' \(MaxPool\): lowbit pools right after a convolution's activation, once"),
    (lambda: cnn_steps(conv(), SIGN, ("Mul", (-1.0,), dict(name="neg")), pool()),
     r"node 'pool' \(MaxPool\): its input is -1 \* x_int \+ b with a negative scale"),
    (lambda: cnn_steps(conv(), pool(), ("Mul", (np.array([1.0, -1.0] * 4).reshape(8, 1, 1),),
                                        dict(name="neg")), SIGN),
     r"node 'pool' \(MaxPool\): pools before the activation 'act' \(Sign\), and the nodes "
     r"between them scale channel 1 by a negative factor"),
    (lambda: cnn_steps(conv(), pool(), pool(name="pool2"), SIGN),
     r"node 'pool2' \(MaxPool\): a second MaxPool after 'pool'"),
    (lambda: cnn_steps(conv(), ("AveragePool", (), dict(name="avg", kernel_shape=[2, 2],
                                                        strides=[2, 2])), SIGN),
     r"node 'avg' \(AveragePool\): AveragePool is not supported: lowbit's only pooling "
     r"layer is MaxPool2D"),
    # the graph pads x - 0.5 with 0: the input 0.5, between two input integers
    (lambda: cnn_steps(("Sub", (0.5,), dict(name="centre")), conv(), SIGN),
     r"node 'conv' \(Conv\): zero padding: the real value 0 is x_int = 1/2 of the first "
     r"layer's input quantizer integers \(real = 1 \* x_int - 1/2\); lowbit pads them with "
     r"0 only"),
    # a signed 2-bit activation is lowbit's count - 2: the graph's zero is the count 2
    (lambda: cnn_steps(conv(), ("Quant", (1.0, 0.0, 2.0), dict(
        name="aq", domain=QONNX, signed=1, narrow=0)), conv(name="conv2",
                                                            weight=np.ones((8, 8, 3, 3))),
        SIGN),
     r"node 'conv2' \(Conv\): zero padding: the real value 0 is x_int = 2 of its unsigned "
     r"0\.\.3 input integers"),
    (lambda: cnn_steps(conv(), ("MultiThreshold", (np.zeros((1, 1)),), dict(
        name="mt", domain=QONNX, out_dtype="BINARY", out_scale=1.0, out_bias=0.5)),
        conv(name="conv2", weight=np.ones((8, 8, 3, 3))), SIGN),
     r"node 'conv2' \(Conv\): zero padding: the real value 0 is x_int = -2 of its \+-1 "
     r"input integers .*-1, 0 or \+1 only"),
    (lambda: cnn_steps(conv(), ("Add", (np.arange(36.0).reshape(1, 1, 6, 6),),
                                dict(name="pos")), SIGN),
     r"node 'pos' \(Add\): constant of shape \(1, 1, 6, 6\) varies over the positions"),
    (lambda: cnn_steps(conv(), ("MultiThreshold", (np.arange(8.0).reshape(8, 1),), dict(
        name="mt", domain=QONNX, out_dtype="BINARY", data_layout="NHWC")), pool()),
     r"node 'mt' \(MultiThreshold\): per-channel thresholds with data_layout NHWC"),
    (lambda: cnn_steps(("Add", (np.arange(72.0).reshape(1, 2, 6, 6),), dict(name="pos")),
                       conv()),
     r"node 'conv' \(Conv\): its input has an offset that varies over positions"),
    (lambda: cnn_steps(conv(), tail=False),
     r"node 'conv' \(Conv\): its outputs are the graph's output: lowbit's last layer is a "
     r"Dense"),
    (lambda: cnn_steps(("Flatten", (), dict(axis=1)), ("MatMul", (np.ones((72, 8)),),
                                                       dict(name="fc")), SIGN,
                       ("Reshape", (np.array([-1, 2, 2, 2]),), dict(name="unflatten"))),
     r"node 'unflatten' \(Reshape\): reshapes a layer's outputs \(8,\) to \(2, 2, 2\)"),
    (lambda: cnn_steps(("Flatten", (), dict(axis=1)), ("MatMul", (np.ones((72, 8)),),
                                                       dict(name="fc")), SIGN, pool()),
     r"node 'pool' \(MaxPool\): its input has per-sample shape \(8,\)"),
])
def test_cnn_errors_name_the_node_and_why(graph, pattern):
    with pytest.raises(ONNXImportError, match=pattern):
        load_onnx(graph(), input_quantizer=Q)


# Files and the command line -------------------------------------------------------------

def test_import_command_writes_a_model(tmp_path, capsys):
    onnx_model = quantized_input_mlp()
    source = tmp_path / "m.onnx"
    onnx.save(onnx_model, source)
    target = tmp_path / "m.npz"

    def run(*extra):
        # The CLI's own entry point: 0 on success, SystemExit with the status on an error.
        try:
            return main(["import", str(source), "-o", str(target), *extra])
        except SystemExit as stop:
            return stop.code

    assert run("--input-bits", "8", "--input-step", "1/255") == 0
    assert f"wrote {target}" in capsys.readouterr().out
    model = QuantModel.load(target)
    assert model.input_quantizer == InputQuantizer(8, 1 / 255)
    assert model.metadata["source"] == str(source)
    x = unit_inputs(6, 30, (64,))
    assert np.array_equal(model.predict(x), evaluate(onnx_model, x).argmax(1))
    assert run() == 2
    assert "node 'fc1' (MatMul): the input is undetermined" in capsys.readouterr().err
    assert run("--input-datatype", "UINT8", "--input-scale", "1/255") == 0
    assert QuantModel.load(target).input_quantizer == InputQuantizer(8, 1 / 255)


# Brevitas -------------------------------------------------------------------------------

@pytest.mark.skipif(not HAS_BREVITAS, reason="torch and brevitas are not installed (optional: "
                    "pip install -e .[brevitas])")
# Brevitas and torch's own deprecation notices are not lowbit's to fix.
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_brevitas_export_imports(tmp_path):
    import torch
    from brevitas.export import export_qonnx
    from brevitas.nn import QuantIdentity, QuantLinear, QuantReLU

    torch.manual_seed(0)
    torch.set_flush_denormal(True)
    net = torch.nn.Sequential(
        QuantIdentity(bit_width=8, signed=False, return_quant_tensor=True),
        torch.nn.Flatten(),
        QuantLinear(64, 32, bias=True, weight_bit_width=4),
        torch.nn.BatchNorm1d(32),
        QuantReLU(bit_width=2),
        QuantLinear(32, 10, bias=False, weight_bit_width=4))
    from sklearn.datasets import load_digits
    digits = load_digits()
    x = torch.tensor(digits.data[:512] / 16, dtype=torch.float32)
    y = torch.tensor(digits.target[:512])
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(30):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    net.eval()
    path = tmp_path / "brevitas.onnx"
    export_qonnx(net, torch.zeros(1, 64), export_path=str(path), dynamo=False)
    model = load_onnx(path)
    test = digits.data[512:712] / 16
    with torch.no_grad():
        expected = net(torch.tensor(test, dtype=torch.float32)).argmax(1).numpy()
    assert (model.predict(test) == expected).mean() >= 0.99


@pytest.mark.skipif(not HAS_BREVITAS, reason="torch and brevitas are not installed (optional: "
                    "pip install -e .[brevitas])")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_brevitas_cnn_export_imports(tmp_path):
    # Brevitas exports both pooling orders: the first block pools its batch norm's outputs
    # before the activation (moved after it), the second pools the activations.
    import torch
    from brevitas.export import export_qonnx
    from brevitas.nn import QuantConv2d, QuantIdentity, QuantLinear, QuantReLU
    from sklearn.datasets import load_digits

    torch.manual_seed(0)
    torch.set_flush_denormal(True)
    net = torch.nn.Sequential(
        QuantIdentity(bit_width=8, signed=False, return_quant_tensor=True),
        QuantConv2d(1, 8, 3, padding=1, bias=True, weight_bit_width=4),
        torch.nn.BatchNorm2d(8),
        torch.nn.MaxPool2d(2),
        QuantReLU(bit_width=2),
        QuantConv2d(8, 16, 3, padding=1, bias=False, weight_bit_width=4),
        torch.nn.BatchNorm2d(16),
        QuantReLU(bit_width=2),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        QuantLinear(64, 10, bias=False, weight_bit_width=4))
    digits = load_digits()
    x = torch.tensor(digits.data[:256] / 16, dtype=torch.float32).reshape(-1, 1, 8, 8)
    y = torch.tensor(digits.target[:256])
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(10):  # a few steps: the batch norms get real statistics
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    net.eval()
    path = tmp_path / "brevitas_cnn.onnx"
    export_qonnx(net, torch.zeros(1, 1, 8, 8), export_path=str(path), dynamo=False)
    model = load_onnx(path)
    assert layer_names(model) == ["Conv2D", "BatchNorm", "MultiThreshold", "MaxPool2D",
                                  "Conv2D", "BatchNorm", "MultiThreshold", "MaxPool2D",
                                  "Flatten", "Dense"]
    assert [model.layers[i].weight_bits for i in (0, 4, 9)] == [4, 4, 4]
    test = digits.data[1000:1300] / 16
    images = test.reshape(-1, 1, 8, 8)
    scores = model.integer_scores(test)
    # 2-bit activations and 4-bit weights on one scale: two classes often get exactly the
    # same score. A float32 execution breaks such a tie by its rounding, so predictions are
    # compared where the exact top score is unique, and the scores within float32 error.
    top = np.sort(scores, axis=1)
    unique = top[:, -1] != top[:, -2]
    assert unique.mean() > 0.8
    with torch.no_grad():
        logits = net(torch.tensor(images, dtype=torch.float32)).numpy().astype(np.float64)
    assert np.allclose(scores, logits, rtol=1e-5, atol=1e-5)
    assert np.array_equal(scores.argmax(1)[unique], logits.argmax(1)[unique])
    graph = onnx.load(path)
    reference = evaluate(graph, images)  # float64
    assert np.allclose(scores, reference, rtol=1e-9, atol=1e-9)
    assert np.array_equal(scores.argmax(1)[unique], reference.argmax(1)[unique])
    if importlib.util.find_spec("qonnx") is not None:
        # qonnx's executor (float32), one sample at a time (about 25 ms each)
        got = run_qonnx(graph, images[:30])
        assert np.allclose(scores[:30], got, rtol=1e-5, atol=1e-5)
        assert np.array_equal(scores[:30].argmax(1)[unique[:30]],
                              got.argmax(1)[unique[:30]])


@pytest.mark.skipif(not HAS_BREVITAS, reason="torch and brevitas are not installed (optional: "
                    "pip install -e .[brevitas])")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_brevitas_binarized_cnn_runs_on_the_iss(tmp_path):
    # Brevitas to the accelerator: a binary-weight Conv with 32 channels, BatchNorm2d,
    # MaxPool before a binary activation (BipolarQuant in the export), a binary
    # QuantLinear. The ISS gives the imported model's integer scores exactly.
    import torch
    from brevitas.export import export_qonnx
    from brevitas.nn import QuantConv2d, QuantIdentity, QuantLinear
    from brevitas.quant import SignedBinaryActPerTensorConst, SignedBinaryWeightPerTensorConst
    from sklearn.datasets import load_digits

    torch.manual_seed(0)
    torch.set_flush_denormal(True)
    net = torch.nn.Sequential(
        QuantIdentity(bit_width=8, signed=False, return_quant_tensor=True),
        QuantConv2d(1, 32, 3, padding=1, bias=False,
                    weight_quant=SignedBinaryWeightPerTensorConst),
        torch.nn.BatchNorm2d(32),
        torch.nn.MaxPool2d(2),
        QuantIdentity(act_quant=SignedBinaryActPerTensorConst),
        torch.nn.Flatten(),
        QuantLinear(512, 10, bias=False, weight_quant=SignedBinaryWeightPerTensorConst))
    digits = load_digits()
    x = torch.tensor(digits.data[:256] / 16, dtype=torch.float32).reshape(-1, 1, 8, 8)
    y = torch.tensor(digits.target[:256])
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(5):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    net.eval()
    path = tmp_path / "brevitas_bcnn.onnx"
    export_qonnx(net, torch.zeros(1, 1, 8, 8), export_path=str(path), dynamo=False)
    model = load_onnx(path)
    assert layer_names(model) == ["Conv2D", "BatchNorm", "Sign", "MaxPool2D", "Flatten",
                                  "Dense"]
    config = AcceleratorConfig(
        xnor_array=XNORArrayConfig(rows=2, cols=2, max_k=512, max_weight_bits=1),
        max_out_bits=1, in_depth=4096, act_depth=4096, weight_depth=2048)
    program = compile_model(model, config, batch=4)
    test = digits.data[1000:1008] / 16
    with ISSTransport(config) as link:
        scores, _ = run_model(program, Runtime(config, link), test)
    assert np.array_equal(scores, model.integer_scores(test))
    with torch.no_grad():
        logits = net(torch.tensor(test.reshape(-1, 1, 8, 8), dtype=torch.float32)).numpy()
    # torch's float32 scores, within its rounding
    assert np.allclose(scores, logits, rtol=1e-5, atol=1e-5)
