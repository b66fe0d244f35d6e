"""ONNX / QONNX import: graphs built here with onnx.helper, imported, and checked against an
independent execution of the same graph (a numpy evaluator written below, node by node in
float64 with Sign as ``>= 0``; onnxruntime too where installed and the graph has only
standard ops) and against the compiled program on the ISS. Every kind of unmappable node
gets an error naming the node, its op and why."""

import argparse
import importlib.util

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from lowbit.compiler import compile_model, run_model
from lowbit.config.accelerator import AcceleratorConfig
from lowbit.config.lightnorm import LightNormConfig
from lowbit.config.xnor_array import XNORArrayConfig
from lowbit.model import InputQuantizer, QuantModel
from lowbit.onnx_import import ONNXImportError, add_import_command, load_onnx
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
            scale, bias, mean, var = i[1:5]
            out = scale * (i[0] - mean) / np.sqrt(var + a.get("epsilon", 1e-5)) + bias
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
            t = i[1]
            out = (i[0][:, :, None] >= t[None]).sum(axis=-1) * a.get("out_scale", 1.0) \
                + a.get("out_bias", 0.0)
        else:
            raise NotImplementedError(op)
        env[node.output[0]] = out
    return env[graph.output[0].name]


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
    norm = LightNormConfig(channels=64, block=4, output="sign", input_width=20) if act == 1 \
        else LightNormConfig(channels=64, block=4, output="multithreshold", act_bits=act,
                             input_width=20)
    return AcceleratorConfig(xnor_array=XNORArrayConfig(rows=2, cols=2, max_k=128),
                             lightnorm=norm, has_lns_mac=False, act_words=1024,
                             weight_words=2048, out_words=256)


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
    if iss:
        check_iss(model, x, act, expected)


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
    with pytest.raises(ONNXImportError, match=r"node 'fc1' \(MatMul\): the input quantizer "
                                              r"is undetermined"):
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
    (lambda: small(head=[("MaxPool", (), dict(name="pool", kernel_shape=[2, 2]))],
                   shape=(1, 4, 4)),
     r"node 'pool' \(MaxPool\): MaxPool is not supported yet"),
    (lambda: small(head=[("Conv", (np.ones((1, 1, 3, 3)),), dict(name="conv"))],
                   shape=(1, 4, 4)),
     r"node 'conv' \(Conv\): convolutions are not supported yet"),
    (lambda: small(("Tanh", (), {})), r"node #1 \(Tanh\): operator Tanh of the standard "
                                      r"domain is not supported"),
    (lambda: small(("Relu", (), dict(name="r")), ("Mul", (2.0,), dict(name="m"))),
     r"node 'r' \(Relu\): Relu is supported only right before a quantizing activation"),
    (lambda: small(("Relu", (), dict(name="r"))),
     r"node 'act1' \(Sign\): follows Relu 'r' and has a level 0 <= 0"),
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
    (lambda: small(tail=lambda b: b.op("MultiThreshold", np.array([[0.0, 1.0]]), name="mt",
                                       domain=QONNX, out_dtype="UINT2")),
     r"node 'mt' \(MultiThreshold\): 2 thresholds: lowbit's MultiThreshold needs 2\^k - 1"),
    (lambda: small(tail=lambda b: b.op("MultiThreshold", np.sort(np.random.default_rng(0).normal(
        size=(8, 3)), axis=1), name="mt", domain=QONNX, out_dtype="UINT2")),
     r"node 'mt' \(MultiThreshold\): per-channel thresholds of channel 1 are not a "
     r"positive affine image"),
    (lambda: small(tail=lambda b: b.op("Quant", np.ones(8), 0.0, 2.0, name="aq",
                                       domain=QONNX, signed=0, narrow=0)),
     r"node 'aq' \(Quant\): per-channel activation scales are not supported"),
    (lambda: small(tail=lambda b: b.op("Quant", 1.0, 0.0, 2.0, name="aq", domain=QONNX,
                                       signed=0, narrow=1)),
     r"node 'aq' \(Quant\): 3 output levels \(narrow unsigned 2 bits\)"),
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
    with pytest.raises(ONNXImportError, match=r"node 'iq' \(Quant\): signed inputs are not "
                                              r"supported"):
        load_onnx(b.build(4))
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
    with pytest.raises(ONNXImportError, match=r"node 'in_sign' \(Sign\): binarizes the input "
                                              r"at x >= 0"):
        load_onnx(b.build(4))
    # a QONNX op in an unknown domain, and a standard op name in a custom domain
    b = Builder((16,))
    b.op("Quant", 1.0, 0.0, 4.0, domain="com.example", signed=0, narrow=0)
    with pytest.raises(ONNXImportError, match=r"node #0 \(Quant\): operator Quant of domain "
                                              r"'com.example' is not supported"):
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


# Files and the command line -------------------------------------------------------------

def test_import_command_writes_a_model(tmp_path, capsys):
    onnx_model = quantized_input_mlp()
    source = tmp_path / "m.onnx"
    onnx.save(onnx_model, source)
    parser = argparse.ArgumentParser(prog="lowbit")
    add_import_command(parser.add_subparsers(dest="command"))
    target = tmp_path / "m.npz"
    args = parser.parse_args(["import", str(source), "-o", str(target), "--input-bits", "8",
                              "--input-step", "1/255"])
    assert args.func(parser, args) == 0
    assert f"wrote {target}" in capsys.readouterr().out
    model = QuantModel.load(target)
    assert model.input_quantizer == InputQuantizer(8, 1 / 255)
    assert model.metadata["source"] == str(source)
    x = unit_inputs(6, 30, (64,))
    assert np.array_equal(model.predict(x), evaluate(onnx_model, x).argmax(1))
    args = parser.parse_args(["import", str(source), "-o", str(target)])
    assert args.func(parser, args) == 2
    assert "node 'fc1' (MatMul): the input quantizer is undetermined" in \
        capsys.readouterr().err


# Brevitas -------------------------------------------------------------------------------

@pytest.mark.skipif(not HAS_BREVITAS, reason="torch and brevitas are not installed (optional: "
                    "pip install torch==2.13.0 brevitas, see ../shared/TOOLCHAIN.md)")
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
