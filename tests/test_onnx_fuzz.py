"""Malformed graphs: thousands of mutations of small valid graphs (missing and undefined
node inputs, cycles, removed and duplicated nodes, wrong dtypes, shapes and attributes,
other operators, truncated and corrupted bytes) each give a clear error, in bounded time:
the iteration counts bound the work; nothing measures the wall clock."""

import copy

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from lowbit.cli import main
from lowbit.model import QuantModel
from lowbit.onnx_import import load_onnx
from test_onnx_finn import plain_mlp, streamlined_mlp

ROUNDS = 8  # parallel chunks (pytest -n 2)
PER_ROUND = 300  # mutated graphs per chunk: 2,400 in all
OPS = ["Relu", "Tanh", "Sign", "MatMul", "Gemm", "Add", "Mul", "Conv", "MaxPool", "Reshape",
       "Flatten", "Transpose", "BatchNormalization", "Quant", "BipolarQuant",
       "MultiThreshold", "TopK", "ArgMax", "Softmax", "Identity", "Concat", "Loop", "If"]


def quant_mlp():
    """A QONNX MLP: input Quant, Quant weights, a BatchNormalization and Relu + Quant."""
    rng = np.random.default_rng(0)
    q = "qonnx.custom_op.general"

    def init(name, value, dtype=np.float32):
        return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)

    inits = [init("s_in", 1 / 16), init("z", 0.0), init("b8", 8.0), init("b4", 4.0),
             init("b2", 2.0), init("w1", rng.normal(size=(12, 16))), init("s_w", 0.25),
             init("g", rng.uniform(0.5, 2, 12)), init("be", rng.normal(size=12)),
             init("m", rng.normal(size=12)), init("v", rng.uniform(0.5, 2, 12)),
             init("s_a", 0.5), init("w2", rng.normal(size=(10, 12))),
             init("c2", rng.normal(size=10))]
    nodes = [
        helper.make_node("Quant", ["x", "s_in", "z", "b8"], ["xq"], domain=q, name="iq",
                         signed=0, narrow=0, rounding_mode="ROUND"),
        helper.make_node("Quant", ["w1", "s_w", "z", "b4"], ["w1q"], domain=q, name="wq1",
                         signed=1, narrow=1, rounding_mode="ROUND"),
        helper.make_node("Gemm", ["xq", "w1q"], ["h"], name="fc1", transB=1),
        helper.make_node("BatchNormalization", ["h", "g", "be", "m", "v"], ["hb"],
                         name="bn", epsilon=1e-5),
        helper.make_node("Relu", ["hb"], ["hr"], name="relu"),
        helper.make_node("Quant", ["hr", "s_a", "z", "b2"], ["a"], domain=q, name="aq",
                         signed=0, narrow=0, rounding_mode="ROUND"),
        helper.make_node("Quant", ["w2", "s_w", "z", "b4"], ["w2q"], domain=q, name="wq2",
                         signed=1, narrow=1, rounding_mode="ROUND"),
        helper.make_node("Gemm", ["a", "w2q", "c2"], ["y"], name="fc2", transB=1),
    ]
    graph = helper.make_graph(nodes, "quant_mlp",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 10])],
                              inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13),
                                                   helper.make_opsetid(q, 1)])


BASES = [quant_mlp, lambda: plain_mlp(datatype="UINT8"), streamlined_mlp]


def _random_attribute(rng, attribute):
    kind = attribute.type
    if kind == onnx.AttributeProto.INT:
        return helper.make_attribute(attribute.name, int(rng.choice([-3, -1, 0, 1, 2, 7, 300])))
    if kind == onnx.AttributeProto.FLOAT:
        return helper.make_attribute(attribute.name, float(rng.choice([np.nan, np.inf, -1.0,
                                                                       0.0, 1e30])))
    if kind == onnx.AttributeProto.INTS:
        return helper.make_attribute(attribute.name, [int(v) for v in rng.integers(-2, 5, 3)])
    if kind == onnx.AttributeProto.STRING:
        return helper.make_attribute(attribute.name, str(rng.choice(["", "NHWC", "x", "FLOOR"])))
    return helper.make_attribute(attribute.name, 1)


def mutate(model, rng):
    """One random mutation of ``model`` (a copy): a ModelProto, or bytes for byte-level
    mutations."""
    model = copy.deepcopy(model)
    graph = model.graph
    nodes = graph.node
    kind = rng.integers(0, 14)
    i = int(rng.integers(0, len(nodes)))
    node = nodes[i]
    if kind == 0 and node.input:  # a missing input
        node.input[int(rng.integers(0, len(node.input)))] = ""
    elif kind == 1 and node.input:  # an undefined tensor
        node.input[int(rng.integers(0, len(node.input)))] = "nowhere"
    elif kind == 2:  # a cycle: read a later node's output
        j = int(rng.integers(i, len(nodes)))
        if node.input:
            node.input[0] = nodes[j].output[0]
    elif kind == 3:  # a node removed
        del nodes[i]
    elif kind == 4:  # a node duplicated
        nodes.insert(i, copy.deepcopy(node))
    elif kind == 5 and graph.initializer:  # an initializer of another dtype or shape
        k = int(rng.integers(0, len(graph.initializer)))
        value = numpy_helper.to_array(graph.initializer[k])
        choice = rng.integers(0, 5)
        if choice == 0:
            value = value.astype(rng.choice([np.int8, np.int64, np.float64, np.bool_]))
        elif choice == 1:
            value = value.reshape(-1)
        elif choice == 2:
            value = value.reshape(-1)[: max(0, value.size // 2)]
        elif choice == 3:
            value = np.full(value.shape, rng.choice([np.nan, np.inf, 0.0, -1.0]), value.dtype
                            if value.dtype.kind == "f" else np.float32)
        else:
            value = np.zeros((0,), np.float32)
        graph.initializer[k].CopyFrom(numpy_helper.from_array(value,
                                                              graph.initializer[k].name))
    elif kind == 6 and node.attribute:  # an attribute's value
        a = int(rng.integers(0, len(node.attribute)))
        node.attribute[a].CopyFrom(_random_attribute(rng, node.attribute[a]))
    elif kind == 7:  # the input's dtype or shape
        tensor = graph.input[0].type.tensor_type
        choice = rng.integers(0, 4)
        if choice == 0:
            tensor.elem_type = int(rng.choice([TensorProto.INT64, TensorProto.STRING,
                                               TensorProto.BOOL, 0]))
        elif choice == 1:
            tensor.shape.dim[int(rng.integers(0, len(tensor.shape.dim)))].dim_value = \
                int(rng.choice([0, 1, 3, 1000]))
        elif choice == 2:
            tensor.shape.dim[-1].dim_param = "n"
        else:
            del tensor.shape.dim[-1]
    elif kind == 8:  # outputs
        if rng.random() < 0.5:
            del graph.output[:]
        else:
            graph.output.append(helper.make_tensor_value_info(nodes[i].output[0],
                                                              TensorProto.FLOAT, [4, 10]))
    elif kind == 9:  # another operator or domain
        if rng.random() < 0.7:
            node.op_type = str(rng.choice(OPS))
        else:
            node.domain = str(rng.choice(["", "qonnx.custom_op.general", "com.example",
                                          "finn"]))
    elif kind == 10:  # nodes out of order
        j = int(rng.integers(0, len(nodes)))
        a, b = copy.deepcopy(nodes[i]), copy.deepcopy(nodes[j])
        nodes[i].CopyFrom(b)
        nodes[j].CopyFrom(a)
    elif kind == 11:  # an input added or removed
        if rng.random() < 0.5 and len(node.input) > 1:
            del node.input[-1]
        else:
            node.input.append(str(rng.choice(["x", graph.initializer[0].name, "nowhere"])))
    else:  # bytes: truncated or corrupted
        data = bytearray(model.SerializeToString())
        if kind == 12:
            return bytes(data[: int(rng.integers(0, len(data)))])
        for _ in range(int(rng.integers(1, 8))):
            data[int(rng.integers(0, len(data)))] = int(rng.integers(0, 256))
        return bytes(data)
    return model


def _import(candidate, tmp_path, index):
    if isinstance(candidate, bytes):
        path = tmp_path / f"m{index}.onnx"
        path.write_bytes(candidate)
        return load_onnx(path)
    return load_onnx(candidate)


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_mutated_graphs_give_clear_errors(round_, tmp_path):
    rng = np.random.default_rng(1000 + round_)
    bases = [base() for base in BASES]
    for base in bases:
        assert isinstance(load_onnx(base), QuantModel)
    outcomes = {"imported": 0, "refused": 0}
    for index in range(PER_ROUND):
        base = bases[index % len(bases)]
        candidate = mutate(base, rng)
        if rng.random() < 0.3:  # a second mutation on top
            candidate = mutate(candidate, rng) if not isinstance(candidate, bytes) \
                else candidate
        try:
            model = _import(candidate, tmp_path, index)
        except (ValueError, TypeError) as error:  # ONNXImportError is a ValueError
            message = str(error)
            assert message and "Traceback" not in message
            assert len(message) < 2000
            outcomes["refused"] += 1
        else:
            assert isinstance(model, QuantModel)
            outcomes["imported"] += 1
    assert outcomes["refused"] > PER_ROUND // 2


def test_mutated_files_exit_2_on_the_command_line(tmp_path, capsys):
    rng = np.random.default_rng(7)
    bases = [base() for base in BASES]
    for index in range(60):
        candidate = mutate(bases[index % len(bases)], rng)
        path = tmp_path / f"m{index}.onnx"
        path.write_bytes(candidate if isinstance(candidate, bytes)
                         else candidate.SerializeToString())
        try:  # a user error ends the command as argparse does: SystemExit(2)
            status = main(["import", str(path), "-o", str(tmp_path / "m.npz"),
                           "--input-datatype", "UINT8", "--input-scale", "1/255"])
        except SystemExit as stop:
            status = stop.code
        captured = capsys.readouterr()
        assert status in (0, 2), captured.err
        if status == 2:
            assert captured.err.startswith("lowbit import: error: "), captured.err
            assert captured.err.count("\n") == 1
