"""The graph passes that prepare an ONNX, QONNX or FINN-ONNX graph for lowbit's importer.

Each pass takes an ``onnx.ModelProto`` and returns one (or raises ``ValueError`` with a
message naming what is wrong); :func:`prepare` runs them in order, as FINN runs its
transformations:

1. :func:`read_model`: the file's bytes as a ``ModelProto`` (truncated or foreign bytes
   are an error, not a traceback);
2. :func:`normalize_domains`: FINN's and Brevitas's older custom-op domains
   (``finn.custom_op.general``, ``finn``, ``onnx.brevitas``) become QONNX's
   (``qonnx.custom_op.general``), with the opset import the checker needs;
3. :func:`check_structure`: ``onnx.checker`` plus what lowbit relies on (every node input
   defined before use, so no cycles; float inputs; fixed feature dimensions);
4. :func:`qonnx_cleanup`: qonnx's ``ModelWrapper`` with its clean-up transformations
   (``RemoveStaticGraphInputs``, ``InferShapes``, ``FoldConstants`` (which keeps ``Quant``
   and ``BipolarQuant`` on weights), ``GiveUniqueNodeNames`` with the graph's own unique
   names kept, so messages name nodes as their author did), so constant subgraphs such as
   Brevitas's ``Shape -> Gather -> Unsqueeze -> Concat -> Reshape`` flatten fold away;
5. :func:`refuse_joins`: a node that joins two computed tensors (a residual ``Add``) is
   refused by name.

qonnx is a dependency of lowbit (it needs onnx and onnxruntime, not torch).
"""

import logging
import warnings

import numpy as np

__all__ = ["QONNX_DOMAIN", "OLD_DOMAINS", "read_model", "normalize_domains",
           "check_structure", "qonnx_cleanup", "refuse_joins", "input_datatype", "prepare"]

_log = logging.getLogger(__name__)

#: The custom-op domain of QONNX's ``Quant``, ``BipolarQuant`` and ``MultiThreshold``.
QONNX_DOMAIN = "qonnx.custom_op.general"
#: Older domains of the same operators, read as :data:`QONNX_DOMAIN`.
OLD_DOMAINS = ("finn.custom_op.general", "finn", "onnx.brevitas")
_CUSTOM_OPS = ("Quant", "BipolarQuant", "MultiThreshold", "Trunc")
_FLOAT_TYPES = (1, 10, 11)  # FLOAT, FLOAT16, DOUBLE
_QONNX_OPS = _CUSTOM_OPS + ("IntQuant", "FloatQuant", "Im2Col", "MaxPoolNHWC",
                            "QuantAvgPool2d", "XnorPopcountMatMul", "DebugMarker",
                            "GenericPartition")
_JOIN_OPS = ("Add", "Sub", "Mul", "Div", "Concat", "Sum", "Max", "Min", "Mean")


def _qonnx():
    try:
        from qonnx.core.modelwrapper import ModelWrapper
    except ImportError as error:  # pragma: no cover - qonnx is a dependency
        raise ImportError(f"lowbit's ONNX importer needs qonnx (pip install qonnx): "
                          f"{error}") from None
    return ModelWrapper


def read_model(path_or_model):
    """``(model, path)``: an ``onnx.ModelProto`` as given (``path`` None), or the file
    ``path_or_model`` read and decoded. ``FileNotFoundError``/``OSError`` when it cannot
    be read, ``ValueError`` when its bytes are not an ONNX model."""
    import onnx
    if isinstance(path_or_model, onnx.ModelProto):
        return path_or_model, None
    path = str(path_or_model)
    with open(path, "rb") as file:
        data = file.read()
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as error:  # protobuf raises DecodeError and friends
        raise ValueError(f"{path}: not an ONNX model ({type(error).__name__}: {error})") \
            from None
    if not model.HasField("graph"):
        raise ValueError(f"{path}: not an ONNX model (no graph)")
    return model, path


def normalize_domains(model):
    """Read ``Quant``, ``BipolarQuant``, ``MultiThreshold`` and ``Trunc`` of the older
    domains as QONNX's; add the opset imports of custom domains the graph uses."""
    import onnx
    model = _copy(model)
    for node in model.graph.node:
        if node.domain in OLD_DOMAINS and node.op_type in _CUSTOM_OPS:
            node.domain = QONNX_DOMAIN
    have = {o.domain for o in model.opset_import}
    if "" not in have and "ai.onnx" not in have:
        model.opset_import.append(onnx.helper.make_opsetid("", 13))
    for domain in sorted({n.domain for n in model.graph.node} - have - {"", "ai.onnx"}):
        model.opset_import.append(onnx.helper.make_opsetid(domain, 1))
    return model


def _copy(model):
    import onnx
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy


def check_structure(model):
    """``onnx.checker`` and lowbit's own structural checks; returns ``model``.

    Raises ``ValueError`` for: a model the checker refuses, not exactly one graph input
    (initializers aside) and one output, a node input that no earlier node, initializer
    or graph input defines (an undefined tensor or a cycle), a non-float graph input,
    and a graph input whose dimensions after the batch are not fixed positive sizes.
    """
    import onnx
    graph = model.graph
    try:
        onnx.checker.check_model(model)
    except Exception as error:  # ValidationError, and protobuf errors on odd fields
        text = str(error).strip().splitlines()
        raise ValueError(f"the ONNX checker refuses the graph: {text[0] if text else error}")\
            from None
    initializers = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise ValueError(f"the graph must have exactly one input (not counting "
                         f"initializers), it has {len(inputs)}: {[i.name for i in inputs]}")
    if len(graph.output) != 1:
        raise ValueError(f"the graph must have exactly one output, it has "
                         f"{len(graph.output)}")
    value = inputs[0]
    kind = value.type.tensor_type.elem_type
    if not value.type.HasField("tensor_type") or kind not in _FLOAT_TYPES:
        raise ValueError(f"graph input {value.name!r} must be a float tensor, not "
                         f"{onnx.TensorProto.DataType.Name(kind) if kind else 'untyped'}")
    dims = value.type.tensor_type.shape.dim
    if len(dims) < 2:
        raise ValueError(f"graph input {value.name!r} must have a batch dimension and at "
                         f"least one feature dimension, not {len(dims)} dimensions")
    for d in dims[1:]:
        if not d.HasField("dim_value") or d.dim_value < 1:
            raise ValueError(f"graph input {value.name!r}: every dimension after the batch "
                             f"must be a fixed positive size")
    for index, node in enumerate(graph.node):
        if node.domain in (QONNX_DOMAIN, *OLD_DOMAINS) and node.op_type not in _QONNX_OPS:
            raise ValueError(f"node {repr(node.name) if node.name else f'#{index}'} "
                             f"({node.op_type}): operator {node.op_type} of domain "
                             f"{node.domain!r} is not one of QONNX's")
    defined = initializers | {i.name for i in graph.input}
    for index, node in enumerate(graph.node):
        label = repr(node.name) if node.name else f"#{index}"
        for name in node.input:
            if name and name not in defined:
                raise ValueError(f"node {label} ({node.op_type}): input {name!r} is not "
                                 f"defined by an initializer, the graph input or an earlier "
                                 f"node (an undefined tensor, or a cycle)")
        for name in node.output:
            if name:
                defined.add(name)
    if graph.output[0].name not in defined:
        raise ValueError(f"graph output {graph.output[0].name!r} is computed by no node")
    return model


def qonnx_cleanup(model):
    """qonnx's clean-up: ``RemoveStaticGraphInputs``, ``InferShapes``, ``FoldConstants``
    (``Quant`` and ``BipolarQuant`` stay: they give quantized weights) and
    ``GiveUniqueNodeNames``, whose generated names (``OpType_N``) are kept only for nodes
    that had no name or a duplicate one. Returns the cleaned ``onnx.ModelProto``."""
    ModelWrapper = _qonnx()
    from qonnx.transformation.fold_constants import FoldConstants
    from qonnx.transformation.general import GiveUniqueNodeNames, RemoveStaticGraphInputs
    from qonnx.transformation.infer_shapes import InferShapes

    names = [n.name for n in model.graph.node]
    keep = {}
    for node in model.graph.node:
        if node.name and names.count(node.name) == 1 and node.output:
            keep[node.output[0]] = node.name
    steps = (RemoveStaticGraphInputs(), InferShapes(), FoldConstants(), InferShapes(),
             GiveUniqueNodeNames())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        np_errors = np.seterr(all="ignore")
        try:
            wrapper = ModelWrapper(_copy(model))
            for step in steps:
                try:
                    wrapper = wrapper.transform(step, make_deepcopy=False, cleanup=False)
                except RecursionError:
                    raise ValueError(f"qonnx's {type(step).__name__} does not finish on "
                                     f"this graph") from None
                except Exception as error:  # whatever qonnx or onnxruntime raise
                    text = str(error).strip().splitlines()
                    raise ValueError(
                        f"qonnx's {type(step).__name__} cannot process the graph: "
                        f"{type(error).__name__}: {text[0] if text else ''}") from None
        finally:
            np.seterr(**np_errors)
    cleaned = wrapper.model
    used = set()
    for node in cleaned.graph.node:
        original = keep.get(node.output[0]) if node.output else None
        if original is not None and original not in used:
            node.name = original
        used.add(node.name)
    _log.debug("qonnx clean-up: %d nodes -> %d", len(names), len(cleaned.graph.node))
    return cleaned


def _constant_tensors(graph):
    constant = {t.name for t in graph.initializer}
    for node in graph.node:
        if all(not i or i in constant for i in node.input):
            constant.update(node.output)
    return constant


def refuse_joins(model):
    """Raise ``ValueError`` (an ``ONNXImportError`` from the importer) naming the first node
    that combines two computed tensors: lowbit imports chains."""
    from .onnx_import import ONNXImportError
    graph = model.graph
    constant = _constant_tensors(graph)
    for node in graph.node:
        computed = [i for i in node.input if i and i not in constant]
        if len(set(computed)) > 1:
            what = ("a residual connection or a join of branches" if node.op_type in
                    _JOIN_OPS else "a node with two computed inputs")
            raise ONNXImportError(repr(node.name), node.op_type,
                                  f"combines {len(set(computed))} computed tensors "
                                  f"({', '.join(sorted(set(computed)))}): {what}, which "
                                  f"lowbit does not import (it imports chains)")
    return model


def input_datatype(model):
    """The QONNX tensor datatype annotation of the graph input (``"BIPOLAR"``,
    ``"UINT8"``, ...), or None when there is none (or it is a float type)."""
    graph = model.graph
    initializers = {t.name for t in graph.initializer}
    name = next(i.name for i in graph.input if i.name not in initializers)
    for annotation in graph.quantization_annotation:
        if annotation.tensor_name == name:
            for entry in annotation.quant_parameter_tensor_names:
                if entry.key == "finn_datatype":
                    value = entry.value.strip().upper()
                    return None if value.startswith("FLOAT") else value
    return None


def prepare(path_or_model):
    """``(model, path, datatype)``: the graph read, checked, cleaned by qonnx and free of
    joins, with its input's datatype annotation (or None)."""
    model, path = read_model(path_or_model)
    model = normalize_domains(model)
    check_structure(model)
    datatype = input_datatype(model)
    model = qonnx_cleanup(model)
    refuse_joins(model)
    return model, path, datatype
