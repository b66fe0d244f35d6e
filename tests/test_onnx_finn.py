"""ONNX import of FINN-ONNX forms no exporter makes (FINN's streamlining does): graphs
built here with ``onnx.helper``, with ``MultiThreshold`` nodes (several thresholds per
channel, ``out_scale``, ``out_bias``), thresholding of the raw input, inputs described by a
QONNX datatype annotation, ``TopK``/``ArgMax`` at the end, and Brevitas's constant-shape
flatten. Each is checked against qonnx's ``execute_onnx``; the CLI's input options and
``lowbit compile MODEL.onnx`` too."""

import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from lowbit.cli import main
from lowbit.compiler import compile_model, run_model
from lowbit.config.accelerator import AcceleratorConfig
from lowbit.model import InputQuantizer
from lowbit.onnx_import import (InputDescription, InputTransform, ONNXImportError,
                                input_transform, load_onnx, prepare_input)
from lowbit.runtime import ISSTransport, Runtime

QONNX = "qonnx.custom_op.general"
N = 16


class Graph:
    """A chain of nodes from input ``x`` (``(N, *shape)`` float)."""

    def __init__(self, shape, seed=0):
        self.shape, self.nodes, self.inits = shape, [], []
        self.x, self.count = "x", 0
        self.rng = np.random.default_rng(seed)

    def const(self, value, dtype=np.float32):
        name = f"c{len(self.inits)}"
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op, *consts, name=None, domain="", outputs=1, **attrs):
        self.count += 1
        out = [f"t{self.count}_{i}" for i in range(outputs)]
        inputs = [self.x] + [c if isinstance(c, str) else self.const(c) for c in consts]
        self.nodes.append(helper.make_node(op, inputs, out, name=name or f"n{self.count}",
                                           domain=domain, **attrs))
        self.x = out[0]
        return out

    def threshold(self, thresholds, name, **attrs):
        return self.op("MultiThreshold", np.asarray(thresholds, np.float32), name=name,
                       domain=QONNX, **attrs)

    def build(self, classes, output=None, dtype=TensorProto.FLOAT, datatype=None):
        output = output or self.x
        shape = [N, classes] if dtype == TensorProto.FLOAT else [N, 1]
        graph = helper.make_graph(
            self.nodes, "finn", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                               [N, *self.shape])],
            [helper.make_tensor_value_info(output, dtype, shape)], self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13),
                                                        helper.make_opsetid(QONNX, 1)])
        if datatype is not None:
            annotation = onnx.TensorAnnotation()
            annotation.tensor_name = "x"
            entry = annotation.quant_parameter_tensor_names.add()
            entry.key, entry.value = "finn_datatype", datatype
            model.graph.quantization_annotation.append(annotation)
        return model


def pm1(rng, shape):
    return np.where(rng.random(shape) < 0.5, -1.0, 1.0)


def streamlined_thresholds(rng, channels, count, spread):
    """Per-channel integer thresholds as FINN's streamlining leaves them: a uniform
    quantizer's levels through a per-channel affine map (a batch norm), rounded up to the
    integer accumulator's grid, so no row is an exact affine image of another."""
    alpha = rng.uniform(1, spread, (channels, 1))
    beta = rng.uniform(-spread, spread, (channels, 1))
    return np.ceil(alpha * (np.arange(count) - (count - 1) / 2) + beta).astype(np.float32)


def run_qonnx(model, x):
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.transformation.infer_shapes import InferShapes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wrapper = ModelWrapper(model).transform(InferShapes())
        out = execute_onnx(wrapper, {"x": np.asarray(x, np.float32)})
    return np.asarray(out[wrapper.graph.output[0].name])


def streamlined_mlp(seed=0, per_feature_input=False, bipolar=True):
    """FINN-streamlined: MultiThreshold on the raw input (uint8 of [0, 1]), a +-1 MatMul,
    per-channel 2-bit thresholds, a +-1 MatMul, a bipolar MultiThreshold (out_scale 2,
    out_bias -1), a last MatMul, Mul and Add, and TopK."""
    g = Graph((16,), seed)
    rng = g.rng
    if per_feature_input:
        rows = np.sort(rng.random((16, 3)), axis=1)
        g.threshold(rows, "in_mt", out_dtype="UINT2")
        top = 3
    else:
        # counts 0..255 of pixels in [0, 1]; the next thresholds count in these units
        g.threshold(((np.arange(1, 256) - 0.5) / 255)[None, :], "in_mt", out_dtype="UINT8")
        top = 255
    g.op("MatMul", pm1(rng, (16, 24)), name="fc1")
    spread = 4 * top
    g.threshold(streamlined_thresholds(rng, 24, 3, spread), "mt1", out_dtype="UINT2")
    g.op("MatMul", pm1(rng, (24, 32)), name="fc2")
    if bipolar:
        g.threshold(rng.integers(-4, 4, (32, 1)) + 0.5, "mt2", out_dtype="BIPOLAR",
                    out_scale=2.0, out_bias=-1.0)
    else:  # signed 2-bit: -2..1
        g.threshold(streamlined_thresholds(rng, 32, 3, 6), "mt2", out_dtype="INT2",
                    out_bias=-2.0)
    g.op("MatMul", pm1(rng, (32, 10)), name="fc3")
    g.op("Mul", np.float32(0.5), name="scale")
    g.op("Add", rng.integers(-3, 3, (10,)).astype(np.float32), name="bias")
    values, indices = g.op("TopK", g.const([1], np.int64), name="topk", outputs=2, axis=-1)
    model = g.build(10, output=indices, dtype=TensorProto.INT64)
    # the unused values output keeps its shape through qonnx's InferShapes
    model.graph.value_info.append(helper.make_tensor_value_info(values, TensorProto.FLOAT,
                                                                [N, 1]))
    return model


@pytest.mark.parametrize("per_feature_input", [False, True], ids=["uint8", "per-feature"])
def test_streamlined_mlp_matches_qonnx(per_feature_input):
    onnx_model = streamlined_mlp(per_feature_input=per_feature_input)
    model = load_onnx(onnx_model)
    x = np.random.default_rng(1).random((N, 16)).astype(np.float32)
    expected = run_qonnx(onnx_model, x)[:, 0]
    assert np.array_equal(model.predict(prepare_input(model, x)), expected)
    transform = input_transform(model)
    assert transform.levels == (3 if per_feature_input else 255)
    assert len(transform.thresholds) == (16 if per_feature_input else 1)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == ["Dense", "BatchNorm", "MultiThreshold", "Dense", "BatchNorm", "Sign",
                     "Dense"]
    assert model.metadata["mapping"][-1]["op"] == "TopK"


def test_streamlined_mlp_on_the_iss():
    onnx_model = streamlined_mlp(seed=3, bipolar=False)
    model = load_onnx(onnx_model)
    x = np.random.default_rng(2).random((N, 16)).astype(np.float32)
    inputs = prepare_input(model, x)
    base = AcceleratorConfig()
    import dataclasses
    config = base.replace(max_out_bits=2)
    program = compile_model(model, config, batch=8)
    with ISSTransport(config) as link:
        scores, _ = run_model(program, Runtime(config, link), inputs)
    assert np.array_equal(scores, model.integer_scores(inputs))
    assert np.array_equal(scores.argmax(1), run_qonnx(onnx_model, x)[:, 0])


@pytest.mark.parametrize("datatype,values", [
    ("BIPOLAR", lambda rng: pm1(rng, (N, 16))),
    ("BINARY", lambda rng: rng.integers(0, 2, (N, 16))),
    ("UINT4", lambda rng: rng.integers(0, 16, (N, 16))),
    ("INT4", lambda rng: rng.integers(-8, 8, (N, 16))),
])
def test_input_datatype_annotation(datatype, values):
    g = Graph((16,), seed=4)
    rng = g.rng
    g.op("MatMul", rng.integers(-1, 2, (16, 12)).astype(np.float32), name="fc1")
    g.op("Add", rng.integers(-3, 3, (12,)).astype(np.float32), name="bias")
    g.threshold(streamlined_thresholds(rng, 12, 3, 6), "mt1", out_dtype="UINT2")
    g.op("MatMul", pm1(rng, (12, 10)), name="fc2")
    g.op("ArgMax", name="argmax", axis=1, keepdims=1)
    onnx_model = g.build(10, dtype=TensorProto.INT64, datatype=datatype)
    model = load_onnx(onnx_model)
    x = values(np.random.default_rng(5)).astype(np.float32)
    expected = run_qonnx(onnx_model, x)[:, 0]
    assert np.array_equal(model.predict(prepare_input(model, x)), expected)
    assert (input_transform(model) is not None) == datatype.startswith("INT")
    # the annotation says it: an input description that disagrees is an error
    with pytest.raises(ONNXImportError, match=rf"node 'fc1' \(MatMul\): the graph annotates "
                                              rf"its input as {datatype}, which conflicts"):
        load_onnx(onnx_model, input_description=InputDescription(
            "UINT8" if datatype != "UINT8" else "INT8"))


def plain_mlp(datatype=None):
    g = Graph((16,), seed=6)
    g.op("MatMul", pm1(g.rng, (16, 12)), name="fc1")
    g.threshold(np.arange(-3, 4, dtype=np.float32)[None, :] * 4, "mt1", out_dtype="UINT3")
    g.op("MatMul", pm1(g.rng, (12, 10)), name="fc2")
    return g.build(10, datatype=datatype)


def test_undescribed_input_names_the_flags_and_they_describe_it():
    onnx_model = plain_mlp()
    with pytest.raises(ONNXImportError, match=r"node 'fc1' \(MatMul\): the input is "
                                              r"undetermined: .*--input-datatype and "
                                              r"--input-scale"):
        load_onnx(onnx_model)
    model = load_onnx(onnx_model, input_description=InputDescription("UINT8", 1 / 255))
    assert model.input_quantizer == InputQuantizer(8, 1 / 255)
    x = np.random.default_rng(7).integers(0, 256, (N, 16)) / 255
    assert np.array_equal(model.predict(x), run_qonnx(onnx_model, x).argmax(1))
    with pytest.raises(ValueError, match=r"input datatype 'FLOAT' is not one of BIPOLAR"):
        InputDescription("FLOAT")
    with pytest.raises(ValueError, match=r"input scale must be positive and finite"):
        InputDescription("UINT8", -1.0)


def test_unreadable_annotation_is_named():
    with pytest.raises(ONNXImportError, match=r"node 'fc1' \(MatMul\): the graph input's "
                                              r"datatype annotation INT16 is not one lowbit"):
        load_onnx(plain_mlp(datatype="INT16"))


def test_brevitas_constant_shape_flatten_folds():
    """Shape -> Gather -> Unsqueeze -> Concat -> Reshape, the input read twice."""
    g = Graph((1, 4, 4), seed=8)
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"], name="shape"),
        helper.make_node("Gather", ["shape", g.const(0, np.int64)], ["batch"], name="gather",
                         axis=0),
        helper.make_node("Unsqueeze", ["batch", g.const([0], np.int64)], ["batch1"],
                         name="unsqueeze"),
        helper.make_node("Concat", ["batch1", g.const([-1], np.int64)], ["target"],
                         name="concat", axis=0),
        helper.make_node("Reshape", ["x", "target"], ["flat"], name="reshape"),
    ]
    g.nodes.extend(nodes)
    g.x = "flat"
    # a power-of-two scale keeps qonnx's float32 sums exact (Sign ties at 0 agree)
    g.op("Quant", np.float32(1 / 16), np.float32(0), np.float32(4), name="in_q",
         domain=QONNX, signed=0, narrow=0, rounding_mode="ROUND")
    g.op("MatMul", pm1(g.rng, (16, 12)), name="fc1")
    g.op("BipolarQuant", np.float32(1.0), name="act", domain=QONNX)
    g.op("MatMul", pm1(g.rng, (12, 10)), name="fc2")
    onnx_model = g.build(10)
    model = load_onnx(onnx_model)
    assert model.input_quantizer == InputQuantizer(4, 1 / 16)
    x = np.random.default_rng(9).random((N, 1, 4, 4)).astype(np.float32)
    expected = run_qonnx(onnx_model, x)
    assert np.allclose(model.integer_scores(x), expected)
    assert np.array_equal(model.predict(x), expected.argmax(1))


def test_residual_add_is_refused_by_name():
    g = Graph((16,), seed=10)
    g.op("Quant", np.float32(1 / 15), np.float32(0), np.float32(4), name="in_q",
         domain=QONNX, signed=0, narrow=0, rounding_mode="ROUND")
    g.op("MatMul", pm1(g.rng, (16, 16)), name="fc1")
    skip = g.x
    g.op("Relu", name="relu")
    g.nodes.append(helper.make_node("Add", [g.x, skip], ["res"], name="residual"))
    g.x = "res"
    g.op("MatMul", pm1(g.rng, (16, 10)), name="fc2")
    with pytest.raises(ONNXImportError, match=r"node 'residual' \(Add\): combines 2 computed "
                                              r"tensors .*a residual connection"):
        load_onnx(g.build(10))


def test_compile_command_imports_onnx(tmp_path, capsys):
    path = tmp_path / "plain.onnx"
    onnx.save(plain_mlp(), path)
    program = tmp_path / "plain.prog"
    with pytest.raises(SystemExit) as stop:
        main(["compile", str(path), "-o", str(program)])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("lowbit compile: error: node 'fc1' (MatMul): the input is "
                          "undetermined")
    assert "--input-datatype UINT8 --input-scale 1/255" in err
    base = AcceleratorConfig()
    import dataclasses
    config = base.replace(max_out_bits=3)
    config_path = tmp_path / "config.json"
    config.save(config_path)
    assert main(["compile", str(path), "--input-datatype", "UINT8", "--input-scale",
                 "1/255", "--config", str(config_path), "-o", str(program)]) == 0
    assert f"plain.onnx -> {program}" in capsys.readouterr().out
    with pytest.raises(SystemExit) as stop:
        main(["compile", str(path), "--input-scale", "1/255", "-o", str(program)])
    assert stop.value.code == 2
    assert "--input-scale needs --input-datatype" in capsys.readouterr().err


def test_transform_round_trips_and_checks_inputs():
    transform = InputTransform(((0.5, 1.5),), (2,))
    assert InputTransform.from_json(transform.to_json()).to_json() == transform.to_json()
    assert transform.apply(np.array([[0.0, 0.5], [1.49, 7.0]])).tolist() == [[0, 1], [1, 2]]
    with pytest.raises(ValueError, match=r"inputs must hold \(n, 2\) values"):
        transform.apply(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="finite"):
        transform.apply(np.array([[np.nan, 0.0]]))


@pytest.mark.parametrize("tail", ["narrow", "relu-zero"])
def test_activations_lowbit_pads_or_drops_match_qonnx(tail):
    """A narrow unsigned 2-bit Quant (3 values: a never-passed fourth level) and a Relu
    before a level at 0 (always passed): both import and match qonnx."""
    g = Graph((16,), seed=11)
    g.op("Quant", np.float32(1 / 16), np.float32(0), np.float32(4), name="in_q",
         domain=QONNX, signed=0, narrow=0, rounding_mode="ROUND")
    g.op("MatMul", pm1(g.rng, (16, 12)), name="fc1")
    if tail == "narrow":
        g.op("Quant", np.float32(0.5), np.float32(0), np.float32(2), name="aq",
             domain=QONNX, signed=0, narrow=1, rounding_mode="ROUND")
    else:
        g.op("Add", g.rng.integers(-2, 3, (12,)).astype(np.float32), name="bias")
        g.op("Relu", name="relu")
        g.threshold(np.array([[0.0, 0.5, 1.0]], np.float32), "mt", out_dtype="UINT2")
    g.op("MatMul", pm1(g.rng, (12, 10)), name="fc2")
    onnx_model = g.build(10)
    model = load_onnx(onnx_model)
    x = np.random.default_rng(12).integers(0, 16, (N, 16)).astype(np.float32) / 16
    expected = run_qonnx(onnx_model, x)
    assert np.allclose(model.integer_scores(x), expected)
    assert np.array_equal(model.predict(x), expected.argmax(1))
    assert model.layers[2].levels.shape == (3,)
