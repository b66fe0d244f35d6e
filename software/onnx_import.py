"""Import ONNX, QONNX (Brevitas) and FINN-ONNX quantized MLPs and CNNs into lowbit's
intermediate form.

:func:`load_onnx` runs the passes of :mod:`lowbit.onnx_passes` (read, ``onnx.checker``,
qonnx's clean-up with constant folding, refusal of joins) and maps the cleaned chain to a
:class:`lowbit.model.QuantModel`. ``docs/onnx_import.md`` is the full description: the
supported operators, quantizers and input descriptions, how each maps, the error messages
and what is not supported.

How it works. The graph must be a chain from its one input to its one output (constants
aside). The importer walks it and keeps, in exact rational arithmetic
(:class:`fractions.Fraction` of the graph's float constants), what the current tensor is:

* before the first layer: an affine image ``ra * x + rb`` of the raw input ``x``;
* between layers: ``a * x_int + b`` of the integers ``x_int`` lowbit's accelerator holds
  (the input quantizer's unsigned integers, +-1 after a sign, counts after a
  multi-threshold);
* after a ``MatMul``/``Gemm``/``Conv``: per output channel ``c``, ``A[c] * acc[c] + B[c]``
  of the integer accumulator ``acc = x_int @ w_int.T`` (for a convolution, at every output
  position, over the im2col patch); scales, biases, ``Add``/``Mul``/``Sub``/``Div`` by
  (per-channel) constants and ``BatchNormalization`` update ``A`` and ``B``.

A ``Conv`` pads its real input with 0: that is the integer ``-b / a`` of ``a * x_int + b``,
which becomes ``Conv2D.pad_value`` when lowbit can pad with it (0 for unsigned inputs; -1, 0
or +1 for +-1 inputs) and is an error otherwise. A ``MaxPool`` after the activation becomes
``MaxPool2D`` (the maximum of ``a * x_int + b`` is that of ``x_int`` for ``a >= 0``); one
before the activation moves after it when every channel's activation is non-decreasing in
the pooled value (checked exactly, per channel).

At an activation (``Sign``, ``BipolarQuant``, ``Quant``, ``MultiThreshold``) the exact
integer thresholds on ``acc`` are known. The importer emits ``Dense`` (the integer weights
with their real per-channel scale), a ``BatchNorm`` (``gamma = A / unit``, ``beta = B``,
``mean = 0``, ``var = 1``, ``eps = 0``, ``unit`` being the real value of one accumulator
step in lowbit's form) and ``Sign`` or ``MultiThreshold``, and then checks that the
thresholds lowbit folds from them (:func:`lowbit.model.fold_layer_thresholds`) are exactly
the graph's on every reachable accumulator value, nudging ``beta`` by a few ulps where a
float64 rounding moved one; if that fails the node is reported. The last layer becomes
``Dense`` and an :class:`~lowbit.model.OutputAffine` (``A`` and ``B`` rounded once).

Semantics: the graph is read as exact real arithmetic on its float constants, with
``Sign(0) = +1`` (lowbit's sign, docs/model.md) and ``sigma = sqrt(var + eps)`` in float64 (the
one rounded value, as in lowbit's form). onnxruntime evaluates the same graph in float32,
so the two can differ where a pre-activation lies within float32 rounding of a threshold.
"""

import argparse
import dataclasses
import logging
import math
import re
from fractions import Fraction

import numpy as np

from .model import (BatchNorm, Conv2D, Dense, Flatten, InputQuantizer, MaxPool2D,
                    MultiThreshold, OutputAffine, QuantModel, Sign, fold_layer_thresholds)

__all__ = ["ONNXImportError", "InputTransform", "InputDescription", "load_onnx",
           "input_transform", "prepare_input", "add_input_arguments",
           "input_description_from_args", "QONNX_DOMAINS"]

_log = logging.getLogger(__name__)

#: Domains whose ``Quant``, ``BipolarQuant`` and ``MultiThreshold`` are QONNX's.
QONNX_DOMAINS = ("qonnx.custom_op.general", "finn.custom_op.general", "onnx.brevitas")
_STANDARD_DOMAINS = ("", "ai.onnx")
_MAX_BITS = 8
_NUDGES = 64  # ulps of beta tried per channel when a float64 rounding moved a threshold
_ELEMENTWISE = ("Add", "Sub", "Mul", "Div")
#: How many inputs (min, max) each mapped operator takes; the first ``min`` are required.
_ARITY = {"MatMul": (2, 2), "Gemm": (2, 3), "Conv": (2, 3), "Add": (2, 2), "Sub": (2, 2),
          "Mul": (2, 2), "Div": (2, 2), "BatchNormalization": (5, 5), "Reshape": (2, 2),
          "Flatten": (1, 1), "Transpose": (1, 1), "Sign": (1, 1), "Relu": (1, 1),
          "Quant": (4, 4), "BipolarQuant": (2, 2), "MultiThreshold": (2, 2), "TopK": (2, 2),
          "ArgMax": (1, 1), "Softmax": (1, 1), "LogSoftmax": (1, 1), "MaxPool": (1, 1),
          "Identity": (1, 1), "Dropout": (1, 3)}
_NO_OPS = ("Identity", "Dropout")


class ONNXImportError(ValueError):
    """A graph node lowbit cannot map: the message names the node (its ``name``, or
    ``#index`` in the graph's node list when unnamed), its ``op_type`` and why.

    Attributes ``node`` (the label), ``op_type`` and ``reason``.
    """

    def __init__(self, node, op_type, reason):
        self.node, self.op_type, self.reason = node, op_type, reason
        super().__init__(f"node {node} ({op_type}): {reason}")


_DATATYPE = re.compile(r"^(BIPOLAR|BINARY|UINT([1-8])|INT([2-8]))$")


@dataclasses.dataclass(frozen=True)
class InputDescription:
    """What the graph's raw input holds when the graph does not say it (no input
    quantizer node and no datatype annotation): a QONNX datatype name and the real value
    of one step, e.g. ``InputDescription("UINT8", 1/255)`` for pixels in [0, 1] or
    ``InputDescription("BIPOLAR")`` for +-1 inputs. The CLI's ``--input-datatype`` and
    ``--input-scale``.

    Parameters
    ----------
    datatype : str
        ``BIPOLAR`` (+-scale), ``BINARY`` (0 or scale), ``UINTk`` (k in 1..8) or ``INTk``
        (signed, k in 2..8), case-insensitive.
    scale : float
        Real value of one integer step (positive, finite; default 1).

    Raises
    ------
    TypeError, ValueError
        On a parameter of the wrong type or out of range.
    """

    datatype: str
    scale: float = 1.0

    def __post_init__(self):
        if not isinstance(self.datatype, str):
            raise TypeError(f"input datatype must be a string, not {self.datatype!r}")
        datatype = self.datatype.strip().upper()
        if not _DATATYPE.match(datatype):
            raise ValueError(f"input datatype {self.datatype!r} is not one of BIPOLAR, "
                             f"BINARY, UINT1..UINT8, INT2..INT8")
        if isinstance(self.scale, bool) or not isinstance(self.scale, (int, float, Fraction,
                                                                       np.floating,
                                                                       np.integer)):
            raise TypeError(f"input scale must be a number, not {self.scale!r}")
        scale = float(self.scale)
        if not math.isfinite(scale) or scale <= 0:
            raise ValueError(f"input scale must be positive and finite, not {self.scale!r}")
        object.__setattr__(self, "datatype", datatype)
        object.__setattr__(self, "scale", scale)

    @property
    def bits(self):
        """The integer width: 1 for BIPOLAR and BINARY."""
        if self.datatype in ("BIPOLAR", "BINARY"):
            return 1
        return int(self.datatype.lstrip("UINT"))

    @property
    def signed(self):
        return self.datatype.startswith("INT")


@dataclasses.dataclass(frozen=True, eq=False)
class InputTransform:
    """How the host turns the graph's raw inputs into the imported model's inputs, when
    lowbit's unsigned :class:`~lowbit.model.InputQuantizer` cannot read them itself (a
    signed, narrow, zero-pointed or pre-scaled input ``Quant``, a ``MultiThreshold`` on the
    raw input, a signed ``INTk`` input).

    The raw inputs, reshaped row-major to ``shape`` (per sample), are counted against
    thresholds: ``count[c] = #{j : v >= thresholds[c][j]}`` with ``v = x`` (or ``v = -x``
    when ``negate``), ``c`` the channel (axis 1; one row shared by every channel when there
    is one row). The counts, reshaped to the model's input shape, are the model's inputs,
    read by ``InputQuantizer(bits, 1.0)``. The thresholds are the float64 values nearest
    the graph's exact ones on the correct side, so the counts are exact for every float64
    input (a float32 execution of the graph can differ within its rounding).

    Parameters
    ----------
    thresholds : tuple of tuples of float
        One non-decreasing row, or one per channel.
    shape : tuple of int
        The per-sample shape the thresholds apply to.
    negate : bool
        Count ``-x`` (the graph scaled its input by a negative factor first).
    """

    thresholds: tuple
    shape: tuple
    negate: bool = False

    def __post_init__(self):
        rows = tuple(tuple(float(t) for t in row) for row in self.thresholds)
        if not rows or not rows[0] or any(len(r) != len(rows[0]) for r in rows):
            raise ValueError("input transform thresholds must be one or more rows of equal, "
                             "non-zero length")
        if any(np.any(np.diff(r) < 0) or not np.all(np.isfinite(r)) for r in rows):
            raise ValueError("input transform thresholds must be finite and non-decreasing")
        shape = tuple(int(v) for v in self.shape)
        if len(rows) > 1 and (not shape or shape[0] != len(rows)):
            raise ValueError(f"{len(rows)} threshold rows for inputs shaped {shape}")
        object.__setattr__(self, "thresholds", rows)
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "negate", bool(self.negate))

    @property
    def levels(self):
        """How many thresholds each count can pass."""
        return len(self.thresholds[0])

    @property
    def bits(self):
        """The unsigned width of the counts."""
        return max(1, self.levels.bit_length())

    def apply(self, x):
        """The counts (float64 integers, ``(n, *shape)``) of raw inputs ``x``."""
        x = np.asarray(x)
        if x.dtype.kind not in "biuf":
            raise TypeError(f"inputs must be real numbers, not {x.dtype}")
        x = x.astype(np.float64)
        if not np.all(np.isfinite(x)):
            raise ValueError("inputs must be finite (found NaN or infinity)")
        size = math.prod(self.shape)
        if x.ndim < 1 or x.size != x.shape[0] * size:
            raise ValueError(f"inputs must hold (n, {', '.join(map(str, self.shape))}) "
                             f"values, not {x.shape}")
        v = x.reshape(x.shape[0], *self.shape)
        if self.negate:
            v = -v
        if len(self.thresholds) == 1:
            counts = np.searchsorted(np.array(self.thresholds[0]), v, side="right")
        else:
            counts = np.stack([np.searchsorted(np.array(row), v[:, c], side="right")
                               for c, row in enumerate(self.thresholds)], axis=1)
        return counts.astype(np.float64)

    def to_json(self):
        return {"thresholds": [list(r) for r in self.thresholds], "shape": list(self.shape),
                "negate": self.negate}

    @classmethod
    def from_json(cls, value):
        return cls(tuple(tuple(r) for r in value["thresholds"]), tuple(value["shape"]),
                   bool(value.get("negate", False)))


def _float_at_least(q):
    """The smallest float64 ``>= q`` (exact rational ``q``)."""
    value = float(q)
    if Fraction(value) < q:
        value = float(np.nextafter(value, np.inf))
    return value


def _float_above(q):
    """The smallest float64 ``> q``."""
    value = float(q)
    if Fraction(value) <= q:
        value = float(np.nextafter(value, np.inf))
    return value


def input_transform(model):
    """The :class:`InputTransform` an imported model's metadata records, or None when the
    model reads the graph's raw inputs itself."""
    value = (model.metadata or {}).get("input_transform")
    return None if value is None else InputTransform.from_json(value)


def prepare_input(model, x):
    """The imported ``model``'s inputs for the graph's raw inputs ``x``: the recorded
    :class:`InputTransform` applied and reshaped to ``(n, *model.input_shape)``, or ``x``
    itself when there is none."""
    transform = input_transform(model)
    if transform is None:
        return x
    counts = transform.apply(x)
    return counts.reshape(counts.shape[0], *model.input_shape)


def _label(node, index):
    return repr(node.name) if node.name else f"#{index}"


# Exact helpers --------------------------------------------------------------------------

def _fr(value):
    return Fraction(float(value))


def _fr_array(values):
    return [Fraction(float(v)) for v in np.asarray(values, dtype=np.float64).ravel()]


def _ceil(q):
    return -((-q.numerator) // q.denominator)


def _floor(q):
    return q.numerator // q.denominator


class _Node:
    """One graph node with its index, for error messages."""

    def __init__(self, node, index):
        self.proto, self.index = node, index
        self.op = node.op_type
        self.label = _label(node, index)
        self.inputs = list(node.input)
        self.outputs = list(node.output)
        self.attrs = {a.name: a for a in node.attribute}
        self.domain = node.domain

    def error(self, reason):
        return ONNXImportError(self.label, self.op, reason)

    def attr(self, name, default=None):
        import onnx.helper
        if name not in self.attrs:
            return default
        value = onnx.helper.get_attribute_value(self.attrs[name])
        return value.decode() if isinstance(value, bytes) else value

    @property
    def qonnx(self):
        return self.domain in QONNX_DOMAINS

    @property
    def standard(self):
        return self.domain in _STANDARD_DOMAINS


# The graph ------------------------------------------------------------------------------

class _Graph:
    def __init__(self, model):
        import onnx.numpy_helper
        self.model = model
        graph = model.graph
        self.initializers = {}
        for tensor in graph.initializer:
            array = onnx.numpy_helper.to_array(tensor)
            self.initializers[tensor.name] = (array.astype(np.float64)
                                              if array.dtype.kind in "biuf" else array)
        self.nodes = [_Node(n, i) for i, n in enumerate(graph.node)]
        self.producer = {}
        for node in self.nodes:
            for name in node.outputs:
                self.producer[name] = node
        # Constant nodes: every (non-empty) input constant, or a Constant node.
        self.constant = set(self.initializers)
        self.const_nodes = set()
        for node in self.nodes:
            if all(not i or i in self.constant for i in node.inputs):
                self.constant.update(node.outputs)
                self.const_nodes.add(node.index)
        self.consumers = {}
        for node in self.nodes:
            if node.index in self.const_nodes:
                continue
            for name in node.inputs:
                if name and name not in self.constant:
                    self.consumers.setdefault(name, []).append(node)

    def value(self, name, user):
        """The float64 value of constant tensor ``name`` (an initializer, a ``Constant``
        node or an ``Identity`` of one); ``user`` is the node asking (for errors)."""
        value = self._value(name, user)
        if value.dtype.kind not in "biuf":
            raise user.error(f"input {name!r} is a {value.dtype} tensor, not numbers")
        if not np.all(np.isfinite(value)):
            raise user.error(f"input {name!r} holds NaN or infinity")
        return value

    def _value(self, name, user):
        if name in self.initializers:
            return np.asarray(self.initializers[name])
        node = self.producer.get(name)
        if node is None or name not in self.constant:
            raise user.error(f"input {name!r} must be a constant (an initializer or a "
                             f"Constant node)")
        if node.op == "Constant" and node.standard:
            import onnx.numpy_helper
            for key in ("value", "value_float", "value_floats", "value_int", "value_ints"):
                if key in node.attrs:
                    value = node.attr(key)
                    if key == "value":
                        value = onnx.numpy_helper.to_array(value)
                    return np.asarray(value, dtype=np.float64)
            raise node.error("Constant without a numeric value attribute")
        if node.op == "Identity" and node.standard and node.inputs:
            return self._value(node.inputs[0], node)
        raise user.error(f"input {name!r} is computed by node {node.label} ({node.op}); "
                         f"only initializers, Constant and Identity can give this parameter")


# Weights --------------------------------------------------------------------------------

class _Weight:
    """Integer weights ``q`` and the real scale of each element (same layout), kind
    ``binary`` or ``int``."""

    def __init__(self, q, scale, kind):
        self.q, self.scale, self.kind = q, scale, kind

    def transposed(self, perm=None):
        return _Weight(np.transpose(self.q, perm), np.transpose(self.scale, perm), self.kind)


def _quant_params(graph, node):
    scale = graph.value(node.inputs[1], node)
    zeropt = graph.value(node.inputs[2], node)
    bits = graph.value(node.inputs[3], node)
    if bits.size != 1 or bits.ravel()[0] != int(bits.ravel()[0]):
        raise node.error(f"bitwidth must be one integer, not {bits.ravel().tolist()}")
    bits = int(bits.ravel()[0])
    if np.any(scale <= 0) or not np.all(np.isfinite(scale)):
        raise node.error("scale must be positive and finite")
    signed, narrow = int(node.attr("signed", 1)), int(node.attr("narrow", 0))
    mode = str(node.attr("rounding_mode", "ROUND")).upper()
    if mode not in ("ROUND", "FLOOR", "CEIL"):
        raise node.error(f"rounding_mode {mode!r} is not supported (ROUND, FLOOR, CEIL)")
    if bits < 1:
        raise node.error(f"bitwidth {bits} is not supported")
    if signed:
        lo = -(1 << (bits - 1)) + (1 if narrow else 0)
        hi = (1 << (bits - 1)) - 1
    else:
        lo, hi = 0, (1 << bits) - 1 - (1 if narrow else 0)
    return scale, zeropt, bits, bool(signed), bool(narrow), mode, lo, hi


def _round(values, mode):
    return {"ROUND": np.round, "FLOOR": np.floor, "CEIL": np.ceil}[mode](values)


def _weight(graph, name, user):
    """The quantized weights that constant tensor ``name`` holds (for MatMul/Gemm/Conv
    ``user``)."""
    node = graph.producer.get(name)
    if name in graph.initializers or (node is not None and node.op == "Constant"):
        w = graph.value(name, user)
        if np.all(np.abs(w) == 1):
            return _Weight(w.astype(np.int64), np.ones(w.shape), "binary")
        if np.all(w == np.rint(w)) and np.abs(w).max() <= (1 << (_MAX_BITS - 1)) - 1:
            return _Weight(w.astype(np.int64), np.ones(w.shape), "int")
        raise user.error(f"weight {name!r} holds float values (not +-1 or integers): "
                         f"quantize it with Sign, BipolarQuant or Quant")
    if node is None:
        raise user.error(f"weight {name!r} is not a constant")
    if node.op == "Identity" and node.standard:
        return _weight(graph, node.inputs[0], node)
    if node.op == "Transpose" and node.standard:
        return _weight(graph, node.inputs[0], node).transposed(node.attr("perm"))
    if node.op == "Sign" and node.standard:
        w = graph.value(node.inputs[0], node)
        return _Weight(np.where(w >= 0, 1, -1), np.ones(w.shape), "binary")
    if node.op == "BipolarQuant" and node.qonnx:
        w = graph.value(node.inputs[0], node)
        scale = graph.value(node.inputs[1], node)
        if np.any(scale <= 0):
            raise node.error("scale must be positive")
        return _Weight(np.where(w >= 0, 1, -1), np.broadcast_to(scale, w.shape), "binary")
    if node.op == "Quant" and node.qonnx:
        w = graph.value(node.inputs[0], node)
        scale, zeropt, bits, signed, narrow, mode, lo, hi = _quant_params(graph, node)
        if np.any(zeropt != 0):
            raise node.error("weights need zero point 0 (lowbit's k-bit weights are "
                             "symmetric)")
        if bits == 1 and signed:
            return _Weight(np.where(w / scale >= 0, 1, -1), np.broadcast_to(scale, w.shape),
                           "binary")
        if not signed:
            raise node.error("unsigned weights are not supported (lowbit's k-bit weights are "
                             "signed and symmetric)")
        if bits > _MAX_BITS:
            raise node.error(f"{bits}-bit weights: lowbit supports 1..{_MAX_BITS} bits")
        q = _round(np.clip(w / scale, lo, hi), mode).astype(np.int64)
        return _Weight(q, np.broadcast_to(scale, w.shape).astype(np.float64), "int")
    raise user.error(f"weight {name!r} comes from node {node.label} ({node.op}), which "
                     f"lowbit cannot read as quantized weights")


# Activations ----------------------------------------------------------------------------

class _Activation:
    """Per-channel levels ``levels[c][j]`` (Fractions, or one shared row), ``strict[j]``
    (pass iff ``y > level`` rather than ``>=``), and the output ``a * count + b``."""

    def __init__(self, levels, strict, a, b):
        self.levels, self.strict, self.a, self.b = levels, strict, a, b


def _quant_activation(graph, node, any_levels=False):
    scale, zeropt, bits, signed, narrow, mode, lo, hi = _quant_params(graph, node)
    if scale.size != 1:
        raise node.error("per-channel activation scales are not supported (one scale per "
                         "tensor: lowbit's activations share their levels)")
    if zeropt.size != 1:
        raise node.error("per-channel activation zero points are not supported")
    s, z = _fr(scale.ravel()[0]), _fr(zeropt.ravel()[0])
    if bits == 1 and signed:  # qonnx's int_quant: bipolar, +1 iff x / s + z >= 0
        return _Activation([[-z * s]], [False], 2 * s, -s)
    if bits > _MAX_BITS:
        raise node.error(f"{bits}-bit activations: lowbit supports 1..{_MAX_BITS} bits")
    count = hi - lo
    if count & (count + 1) and not any_levels:
        raise node.error(f"{count + 1} output levels ({'narrow ' if narrow else ''}"
                         f"{'signed' if signed else 'unsigned'} {bits} bits): lowbit's "
                         f"MultiThreshold needs 2^k levels")
    levels, strict = [], []
    for q in range(lo + 1, hi + 1):  # output >= q
        if mode == "ROUND":  # y/s + z >= q - 1/2; a tie rounds to even
            levels.append((q - z - Fraction(1, 2)) * s)
            strict.append(q % 2 == 1)
        elif mode == "FLOOR":
            levels.append((q - z) * s)
            strict.append(False)
        else:  # CEIL: y/s + z > q - 1
            levels.append((q - 1 - z) * s)
            strict.append(True)
    return _Activation([levels], strict, s, (lo - z) * s)


def _multithreshold_activation(graph, node, channels):
    thresholds = graph.value(node.inputs[1], node)
    if thresholds.ndim != 2 or thresholds.shape[0] not in (1, channels):
        raise node.error(f"thresholds must have shape (1, T) or ({channels}, T), not "
                         f"{thresholds.shape}")
    if thresholds.shape[1] < 1:
        raise node.error("no thresholds")
    if np.any(np.diff(thresholds, axis=1) < 0):
        raise node.error("thresholds must be sorted (non-decreasing) along each row")
    out_scale = _fr(node.attr("out_scale", 1.0))
    out_bias = _fr(node.attr("out_bias", 0.0))
    layout = node.attr("data_layout", "NCHW")
    if layout not in ("NCHW", "NHWC"):
        raise node.error(f"data_layout {layout!r} is not supported")
    levels = [_fr_array(row) for row in thresholds]
    return _Activation(levels, [False] * thresholds.shape[1], out_scale, out_bias)


def _shared_row(levels, channels, node):
    """Express per-channel rows as ``alpha[c] * row0 + beta[c]`` (``alpha > 0``): returns
    ``(row0, alpha, beta)`` or raises naming ``node``."""
    if len(levels) == 1:
        return levels[0], [Fraction(1)] * channels, [Fraction(0)] * channels
    row0 = levels[0]
    i, j = 0, len(row0) - 1
    alpha, beta = [], []
    for c, row in enumerate(levels):
        if row0[j] == row0[i]:
            a = Fraction(1)
        else:
            a = (row[j] - row[i]) / (row0[j] - row0[i])
        b = row[i] - a * row0[i]
        if a <= 0 or any(a * t + b != r for t, r in zip(row0, row)):
            raise node.error(f"per-channel thresholds of channel {c} are not a positive "
                             f"affine image of channel 0's (lowbit's MultiThreshold shares "
                             f"its levels across channels, with a per-channel batch norm)")
        alpha.append(a)
        beta.append(b)
    return row0, alpha, beta


def _exact_pass_interval(A, B, level, strict, lo, hi):
    """The integer accumulators in ``[lo, hi]`` where ``A * acc + B`` passes ``level``:
    ``(first, last)`` (empty: ``(1, 0)``)."""
    if A == 0:
        passed = B > level if strict else B >= level
        return (lo, hi) if passed else (1, 0)
    tau = (level - B) / A
    if A > 0:
        t = _floor(tau) + 1 if strict else _ceil(tau)
        first, last = max(t, lo), hi
    else:
        t = _ceil(tau) - 1 if strict else _floor(tau)
        first, last = lo, min(t, hi)
    return (first, last) if first <= last else (1, 0)


def _line_fit(bounds):
    """Exact ``(u, v)``, ``u > 0``, with ``low_j < u * j + v <= high_j`` for the
    ``bounds[j - 1] = (low_j, high_j)`` (None: unbounded), or None when there is none."""
    u_low, u_high = Fraction(0), None
    for j, (low_j, high_j) in enumerate(bounds, 1):
        for k, (low_k, high_k) in enumerate(bounds, 1):
            if k <= j:
                continue
            if high_k is not None and low_j is not None:  # u < (high_k - low_j) / (k - j)
                limit = Fraction(high_k - low_j, k - j)
                u_high = limit if u_high is None else min(u_high, limit)
            if low_k is not None and high_j is not None:  # u > (low_k - high_j) / (k - j)
                u_low = max(u_low, Fraction(low_k - high_j, k - j))
    if u_high is not None and u_low >= u_high:
        return None
    u = u_low + 1 if u_high is None else (u_low + u_high) / 2
    lows = [low - u * j for j, (low, _) in enumerate(bounds, 1) if low is not None]
    highs = [high - u * j for j, (_, high) in enumerate(bounds, 1) if high is not None]
    v_low, v_high = (max(lows) if lows else None), (min(highs) if highs else None)
    if v_low is not None and v_high is not None:
        if v_low >= v_high:
            return None
        return u, (v_low + v_high) / 2
    if v_low is not None:
        return u, v_low + Fraction(1, 2)
    return u, (v_high - Fraction(1, 2)) if v_high is not None else Fraction(0)


def _ir_pass_interval(t, flip, lo, hi):
    first, last = (lo, min(t, hi)) if flip else (max(t, lo), hi)
    return (first, last) if first <= last else (1, 0)


# The importer ---------------------------------------------------------------------------

class _Importer:
    def __init__(self, graph, input_quantizer, name, source=None, description=None):
        self.g = graph
        self.source = source
        self.user_quantizer = input_quantizer
        self.user_description = description
        self.transform = None  # an InputTransform the host applies
        self.tail = None  # a final ArgMax/TopK
        self.name = name
        self.layers = []
        self.quantizer = None  # determined by the graph (input Quant or input Sign)
        self.quantizer_node = None
        self.mapping = []

    # -- input --------------------------------------------------------------------------

    def _graph_io(self):
        graph = self.g.model.graph
        inputs = [i for i in graph.input if i.name not in self.g.initializers]
        if len(inputs) != 1:
            raise ValueError(f"the graph must have exactly one input (not counting "
                             f"initializers), it has {len(inputs)}: "
                             f"{[i.name for i in inputs]}")
        if len(graph.output) != 1:
            raise ValueError(f"the graph must have exactly one output, it has "
                             f"{len(graph.output)}")
        value = inputs[0]
        dims = value.type.tensor_type.shape.dim
        if len(dims) < 2:
            raise ValueError(f"graph input {value.name!r} must have a batch dimension and "
                             f"at least one feature dimension, not {len(dims)} dimensions")
        shape = []
        for d in dims[1:]:
            if not d.HasField("dim_value") or d.dim_value < 1:
                raise ValueError(f"graph input {value.name!r}: every dimension after the "
                                 f"batch must be a fixed positive size")
            shape.append(int(d.dim_value))
        batch = dims[0].dim_value if dims[0].HasField("dim_value") else None
        return value.name, tuple(shape), batch, graph.output[0].name

    def run(self):
        start, self.input_shape, self.batch, output = self._graph_io()
        # state
        self.shape = self.input_shape
        self.phase = "raw"
        self.ra, self.rb = Fraction(1), Fraction(0)
        self.relu = None
        self.pool = None  # a MaxPool on a convolution's pre-activations: (node, size, A)
        self.poolable = False  # a convolution's activation that a MaxPool may follow
        self.layer_input_shape = None  # the first layer's input shape
        current = start
        visited = set()
        while True:
            consumers = self.g.consumers.get(current, [])
            if current == output:
                if consumers:
                    raise consumers[0].error(f"reads the graph output {current!r}: the "
                                             f"output must be the end of the chain")
                break
            if not consumers:
                raise ValueError(f"tensor {current!r} is not consumed and is not the graph "
                                 f"output: the graph is not a chain from input to output")
            if len(consumers) > 1:
                names = ", ".join(f"{n.label} ({n.op})" for n in consumers)
                raise consumers[1].error(f"tensor {current!r} feeds {len(consumers)} nodes "
                                         f"({names}): lowbit imports chains, not branches")
            node = consumers[0]
            visited.add(node.index)
            data = [i for i in node.inputs if i and i not in self.g.constant]
            if len(data) != 1:
                raise node.error(f"takes {len(data)} computed tensors ({', '.join(data)}): "
                                 f"lowbit imports chains (one computed input per node)")
            if len(node.outputs) < 1:
                raise node.error("has no output")
            if self.tail is not None:
                raise node.error(f"follows {self.tail.label} ({self.tail.op}), which must be "
                                 f"the graph's last node")
            self._checked_step(node, current)
            if node is self.tail and node.op == "TopK":
                current = node.outputs[1] if len(node.outputs) > 1 else ""
            else:
                current = node.outputs[0]
        for node in self.g.nodes:
            if node.index not in visited and node.index not in self.g.const_nodes:
                raise node.error("is not on the chain from the graph input to its output")
        if self.phase != "acc":
            raise ValueError("the graph must end with a MatMul or Gemm layer (then optional "
                             "Add/Mul/BatchNormalization/Softmax): its output is not a layer's "
                             "scores")
        if self.relu is not None:
            raise self.relu.error("Relu on the class scores changes the argmax where scores "
                                  "are negative: not expressible as lowbit's host affine")
        if self.pool is not None:
            raise self.pool[0].error("pools the class scores: lowbit's last layer is a Dense "
                                     "(MatMul/Gemm) giving them")
        if isinstance(self.layers[-1], Conv2D):
            raise self.dense_node.error("its outputs are the graph's output: lowbit's last "
                                        "layer is a Dense (MatMul/Gemm) giving the class "
                                        "scores")
        self.finish_last()
        return self.model()

    # -- dispatch -----------------------------------------------------------------------

    def _checked_step(self, node, data):
        """:meth:`step`, with the node's arity checked first and what a malformed node
        raises inside it reported with the node's name."""
        arity = _ARITY.get(node.op)
        if arity is not None:
            low, high = arity
            given = len(node.inputs)
            if not low <= given <= high or any(not node.inputs[i] for i in range(low)):
                want = str(low) if low == high else f"{low} to {high}"
                raise node.error(f"takes {want} inputs, it has {given}"
                                 + (" (some of them empty)" if given >= low else ""))
        try:
            self.step(node, data)
        except ONNXImportError:
            raise
        except (ArithmeticError, ValueError, TypeError, IndexError, KeyError,
                AttributeError) as error:
            raise node.error(f"malformed node ({type(error).__name__}: {error})") from None

    def step(self, node, data):
        op = node.op
        if node.standard:
            if op in _NO_OPS:
                return
            if op in ("Reshape", "Flatten"):
                return self.reshape(node)
            if op == "Transpose":
                return self.transpose(node)
            if op in ("MatMul", "Gemm"):
                return self.matmul(node, data)
            if op in _ELEMENTWISE:
                return self.elementwise(node, data)
            if op == "BatchNormalization":
                return self.batchnorm(node)
            if op == "Sign":
                return self.activation(node, _Activation([[Fraction(0)]], [False],
                                                         Fraction(2), Fraction(-1)))
            if op == "Relu":
                return self.relu_node(node)
            if op in ("Softmax", "LogSoftmax"):
                return self.softmax(node)
            if op in ("ArgMax", "TopK"):
                return self.argmax(node)
            if op == "Conv":
                return self.conv(node, data)
            if op == "MaxPool":
                return self.maxpool(node)
            if op in ("AveragePool", "GlobalMaxPool", "GlobalAveragePool", "LpPool",
                      "GlobalLpPool"):
                raise node.error(f"{op} is not supported: lowbit's only pooling layer is "
                                 f"MaxPool2D (MaxPool with non-overlapping windows)")
            if op in ("ConvTranspose", "ConvInteger", "QLinearConv"):
                raise node.error(f"{op} is not supported: lowbit imports Conv (with "
                                 f"quantized weights as QONNX gives them) only")
        elif node.qonnx:
            if op == "Quant":
                return self.quant(node)
            if op == "BipolarQuant":
                scale = self.g.value(node.inputs[1], node)
                if scale.size != 1 or scale.ravel()[0] <= 0:
                    raise node.error("activation scale must be one positive number")
                s = _fr(scale.ravel()[0])
                return self.activation(node, _Activation([[Fraction(0)]], [False], 2 * s,
                                                         -s))
            if op == "MultiThreshold":
                if self.phase == "x":
                    raise node.error("quantizes values that are already quantized (a "
                                     "MultiThreshold must follow a MatMul/Gemm/Conv layer or "
                                     "quantize the raw input)")
                channels = len(self.A) if self.phase == "acc" else self.shape[0]
                act = _multithreshold_activation(self.g, node, channels)
                if self.phase == "raw" and len(act.levels) > 1 and \
                        node.attr("data_layout", "NCHW") == "NHWC" and len(self.shape) > 1:
                    raise node.error("per-channel thresholds with data_layout NHWC on the "
                                     "raw input: lowbit reads the input's channels on axis 1")
                if (len(self.shape) == 3 and node.attr("data_layout", "NCHW") == "NHWC"
                        and len(act.levels) > 1):
                    # its channel axis would be the last (W) of the NCHW Conv output
                    raise node.error("per-channel thresholds with data_layout NHWC on the "
                                     "NCHW output of a Conv: the channels would be columns")
                return self.activation(node, act)
        where = f"domain {node.domain!r}" if node.domain else "the standard domain"
        raise node.error(f"operator {op} of {where} is not supported by lowbit's importer "
                         f"(docs/onnx_import.md lists what is)")

    # -- shapes -------------------------------------------------------------------------

    def reshape(self, node):
        features = math.prod(self.shape)
        if node.op == "Flatten":
            axis = node.attr("axis", 1)
            if axis != 1:
                raise node.error(f"Flatten with axis={axis} would mix the batch dimension "
                                 f"(lowbit flattens each sample: axis=1)")
            new = (features,)
        else:
            target = [int(v) for v in self.g.value(node.inputs[1], node).ravel()]
            batch = self.batch or 1
            full = [batch, *self.shape]
            resolved = [full[i] if v == 0 and i < len(full) else v
                        for i, v in enumerate(target)]
            known = math.prod(v for v in resolved if v != -1)
            if resolved.count(-1) > 1 or known == 0:
                raise node.error(f"cannot resolve the target shape {target}")
            if -1 in resolved:
                resolved[resolved.index(-1)] = batch * features // known
            if math.prod(resolved) != batch * features or resolved[0] != batch:
                raise node.error(f"target shape {target} does not keep the batch dimension "
                                 f"of a ({'N' if self.batch is None else self.batch}, "
                                 f"{', '.join(map(str, self.shape))}) tensor")
            new = tuple(resolved[1:])
        if self.phase == "acc" and new != self.shape:
            raise node.error(f"reshapes a layer's outputs {self.shape} to {new}")
        if self.layers and new != self.shape:
            if len(self.shape) != 3 or len(new) != 1:
                raise node.error(f"reshapes a layer's outputs {self.shape} to {new}: lowbit "
                                 f"only flattens (C, H, W) activations for a Dense")
            # Row-major (C, H, W) order is lowbit's Flatten order; a per-feature offset
            # (self.b) keeps its order too.
            self.layers.append(Flatten())
            self.mapping.append((node, f"Flatten {self.shape} -> {new}"))
            self.poolable = False
        self.shape = new

    def transpose(self, node):
        """A ``Transpose`` of the data that keeps the batch first and moves only dimensions
        of size 1 (the row-major order of the values stays): a reshape."""
        full = (self.batch or 1, *self.shape)
        perm = node.attr("perm")
        perm = list(range(len(full)))[::-1] if perm is None else [int(p) for p in perm]
        if sorted(perm) != list(range(len(full))):
            raise node.error(f"perm {perm} is not a permutation of the {len(full)} axes")
        if perm[0] != 0:
            raise node.error(f"perm {perm} moves the batch dimension")
        order = [p for p in perm[1:] if full[p] != 1]
        if order != sorted(order):
            raise node.error(f"perm {perm} reorders the values of a {self.shape} sample "
                             f"(lowbit's layers read them in row-major order): only "
                             f"transposes that move dimensions of size 1 are reshapes")
        new = tuple(full[p] for p in perm[1:])
        if self.phase == "acc" and new != self.shape:
            raise node.error(f"transposes a layer's outputs {self.shape} to {new}")
        if self.layers and new != self.shape and len(new) != len(self.shape):
            raise node.error(f"changes the rank of a layer's outputs {self.shape} to {new}")
        self.mapping.append((node, f"a reshape {self.shape} -> {new} (only dimensions of "
                                   f"size 1 move)"))
        self.shape = new

    # -- elementwise --------------------------------------------------------------------

    def _operand(self, node, data):
        """The constant operand of a binary elementwise node, as a list of Fractions (one
        scalar, or one per feature of the flattened sample), and whether the data is the
        first input."""
        first = node.inputs[0] == data
        const = node.inputs[1] if first else node.inputs[0]
        value = self.g.value(const, node)
        if value.size == 1:
            return [_fr(value.ravel()[0])], first
        full = (1, *self.shape)
        try:
            fits = np.broadcast_shapes(value.shape, full) == full
        except ValueError:
            fits = False
        if not fits:
            what = "channel" if self.phase == "acc" else "feature"
            raise node.error(f"constant of shape {value.shape} does not broadcast as a scalar "
                             f"or per-{what} tensor over a sample of shape {self.shape}")
        values = _fr_array(np.broadcast_to(value, full))
        if self.phase == "acc" and len(self.shape) == 3:
            # a convolution's pre-activation: lowbit's batch norm is per channel
            channels = _per_channel(values, self.shape)
            if channels is None:
                raise node.error(f"constant of shape {value.shape} varies over the positions "
                                 f"of a {self.shape} convolution output: lowbit's batch norm "
                                 f"is per channel (constants shaped (1, C, 1, 1) or (C, 1, 1))")
            return channels, first
        return values, first

    def elementwise(self, node, data):
        op = node.op
        values, first = self._operand(node, data)
        if op == "Div" and not first:
            raise node.error("dividing a constant by a tensor is not affine")
        if op == "Div" and any(v == 0 for v in values):
            raise node.error("division by zero")
        if self.relu is not None:
            raise self.relu.error("Relu is supported only right before a quantizing "
                                  "activation (Quant, MultiThreshold, BipolarQuant, Sign)")
        if op in ("Mul", "Div"):
            factors = values if op == "Mul" else [1 / v for v in values]
            if self.phase == "acc":
                n = len(self.A)
                f = factors * n if len(factors) == 1 else factors
                self.A = [a * m for a, m in zip(self.A, f)]
                self.B = [b * m for b, m in zip(self.B, f)]
                return
            if len(factors) != 1:
                raise node.error("a per-feature scale before a layer would scale the "
                                 "weights' columns: not expressible with integer weights")
            m = factors[0]
            if self.phase == "raw":
                self.ra, self.rb = self.ra * m, _scale(self.rb, m)
            else:
                self.a, self.b = self.a * m, _scale(self.b, m)
            return
        # Add / Sub
        sign = 1 if op == "Add" else -1
        if op == "Sub" and not first:  # c - y = -(y) + c
            if self.phase == "acc":
                self.A = [-a for a in self.A]
                self.B = [-b for b in self.B]
            elif self.phase == "raw":
                self.ra, self.rb = -self.ra, _scale(self.rb, -1)
            else:
                self.a, self.b = -self.a, _scale(self.b, -1)
            sign = 1
        if self.phase == "acc":
            n = len(self.B)
            v = values * n if len(values) == 1 else values
            self.B = [b + sign * c for b, c in zip(self.B, v)]
        elif self.phase == "raw":
            self.rb = _add(self.rb, values, sign)
        else:
            self.b = _add(self.b, values, sign)

    def batchnorm(self, node):
        if self.phase != "acc":
            raise node.error("BatchNormalization is supported only after a MatMul/Gemm/Conv "
                             "layer (a per-feature scale of the inputs would scale the "
                             "weights' columns)")
        if self.relu is not None:
            raise self.relu.error("Relu is supported only right before a quantizing "
                                  "activation")
        if node.attr("training_mode", 0):
            raise node.error("training_mode=1 is not an inference batch norm")
        eps = float(node.attr("epsilon", 1e-5))
        params = [self.g.value(node.inputs[i], node).ravel() for i in range(1, 5)]
        n = len(self.A)
        if any(p.shape != (n,) for p in params):
            raise node.error(f"parameters must have {n} channels, not "
                             f"{[p.shape for p in params]}")
        gamma, beta, mean, var = params
        if np.any(var + eps <= 0):
            raise node.error("var + epsilon must be positive")
        sigma = np.sqrt(var + eps)
        for c in range(n):
            k = _fr(gamma[c]) / _fr(sigma[c])
            self.A[c] = self.A[c] * k
            self.B[c] = (self.B[c] - _fr(mean[c])) * k + _fr(beta[c])
        self.mapping.append((node, "folded into the next layer's thresholds or affine"))

    def relu_node(self, node):
        if self.phase == "acc":
            if self.relu is not None:
                raise node.error("two Relu nodes in a row")
            self.relu = node
            return
        if self.phase == "x":
            low = min(self._x_values())
            if low >= 0:
                self.mapping.append((node, "dropped (its inputs are never negative)"))
                return
        raise node.error("Relu is supported only right before a quantizing activation "
                         "whose levels are all positive, or on values that are never "
                         "negative")

    def _x_values(self):
        lo, hi = self.xrange
        bs = self.b if isinstance(self.b, list) else [self.b]
        return [self.a * v + b for v in (lo, hi) for b in bs]

    def softmax(self, node):
        if self.phase != "acc":
            raise node.error(f"{node.op} is supported only on the class scores (the end)")
        axis = node.attr("axis", -1)
        if axis not in (-1, 1):
            raise node.error(f"{node.op} over axis {axis}, not the classes")
        consumers = self.g.consumers.get(node.outputs[0], [])
        if consumers and not (len(consumers) == 1 and consumers[0].op in ("ArgMax", "TopK")):
            raise node.error(f"{node.op} is supported only as the graph's last node (or "
                             f"before a last ArgMax or TopK)")
        self.mapping.append((node, "dropped: monotone, the argmax is unchanged"))

    def argmax(self, node):
        """A last ``ArgMax`` or ``TopK`` (k = 1) over the class scores: the graph's output
        is the prediction, which lowbit's host argmax gives."""
        if self.phase != "acc":
            raise node.error(f"{node.op} is supported only on the class scores (the end)")
        axis = node.attr("axis", -1)
        if axis not in (-1, 1):
            raise node.error(f"{node.op} over axis {axis}, not the classes")
        if node.op == "ArgMax":
            if node.attr("select_last_index", 0):
                raise node.error("select_last_index=1: lowbit's argmax takes the first of "
                                 "equal scores")
        else:
            if len(node.inputs) < 2 or not node.inputs[1]:
                raise node.error("TopK needs its K input")
            k = self.g.value(node.inputs[1], node).ravel()
            if k.size != 1 or k[0] != 1:
                raise node.error(f"TopK with K = {k.tolist()}: lowbit predicts one class "
                                 f"(K = 1)")
            if not node.attr("largest", 1):
                raise node.error("TopK with largest=0 picks the smallest score")
            output = self.g.model.graph.output[0].name
            if len(node.outputs) < 2 or node.outputs[1] != output:
                raise node.error("TopK's indices (its second output) must be the graph's "
                                 "output")
        self.tail = node
        self.mapping.append((node, "the host's argmax of the class scores (the graph's "
                                   "output is the predicted class)"))

    # -- input quantizer ----------------------------------------------------------------

    def _set_quantizer(self, node, quantizer):
        if self.user_quantizer is not None and self.user_quantizer != quantizer:
            raise node.error(f"determines the input quantizer {quantizer}, which conflicts "
                             f"with input_quantizer={self.user_quantizer}")
        self.quantizer, self.quantizer_node = quantizer, node

    def quant(self, node):
        if self.phase == "acc":
            return self.activation(node, _quant_activation(self.g, node, any_levels=True))
        if self.phase == "x":
            raise node.error("quantizes values that are already quantized (a Quant must "
                             "follow a MatMul/Gemm/Conv layer or be the input's quantizer)")
        # The input quantizer.
        scale, zeropt, bits, signed, narrow, mode, lo, hi = _quant_params(self.g, node)
        if bits > _MAX_BITS:
            raise node.error(f"{bits}-bit inputs: lowbit supports 1..{_MAX_BITS}")
        if scale.size != 1:
            raise node.error("per-feature input scales are not supported (the real value "
                             "of an input step would scale the weights' columns)")
        if (self.ra != 1 or self.rb != 0 or signed or narrow or np.any(zeropt != 0)
                or mode != "ROUND"):
            # Not lowbit's clip(rint(x / step), 0, 2^b - 1): the host counts the levels.
            act = _quant_activation(self.g, node, any_levels=True)
            return self._transform_input(node, act, f"the input Quant's "
                                         f"{'signed' if signed else 'unsigned'} {bits}-bit "
                                         f"levels")
        step = float(scale.ravel()[0])
        self._set_quantizer(node, InputQuantizer(bits, step))
        self.mapping.append((node, f"input quantizer uint{bits} x {step:g}"))
        self._enter_x(Fraction(step), Fraction(0), (0, (1 << bits) - 1), step)

    def _input_sign(self, node, act):
        """``Sign``/``BipolarQuant`` on the raw input: a 1-bit input quantizer."""
        level = act.levels[0][0]
        if isinstance(self.ra, list) or self.ra <= 0 or isinstance(self.rb, list):
            return False
        threshold = (level - self.rb) / self.ra  # passes iff x >= threshold
        if threshold <= 0 or act.strict[0]:
            return False  # not lowbit's quantizer: an input transform (the caller)
        step = _binarizing_step(threshold)
        if step is None:
            return False
        self._set_quantizer(node, InputQuantizer(1, step))
        self.mapping.append((node, f"input quantizer uint1 (x >= {float(threshold):g})"))
        # real value: a * count + b with count in {0, 1}
        self._enter_x(act.a, act.b, (0, 1), step)
        return True

    def _transform_input(self, node, act, what, ra=None, rb=None):
        """The raw input ``ra * x + rb`` (default: the arithmetic so far) counted against
        ``act``'s levels by the host (:class:`InputTransform`); the model reads the counts
        with ``InputQuantizer(bits, 1.0)``."""
        ra = self.ra if ra is None else ra
        rb = self.rb if rb is None else rb
        if isinstance(ra, list) or isinstance(rb, list):
            raise node.error(f"quantizes the input after a per-feature scale or offset: "
                             f"{what} need one scale and one offset")
        if ra == 0:
            raise node.error("quantizes an input scaled by 0")
        rows = act.levels
        if len(rows) > 1 and (len(self.shape) < 1 or len(rows) != self.shape[0]):
            raise node.error(f"{len(rows)} threshold rows for an input of per-sample shape "
                             f"{self.shape}")
        negate = ra < 0
        thresholds = []
        for row in rows:
            out = []
            for level, st in zip(row, act.strict):
                # ra * x + rb >= level  <=>  x >= tau (ra > 0), -x >= -tau (ra < 0)
                tau = (level - rb) / ra
                tau = -tau if negate else tau
                out.append(_float_above(tau) if st else _float_at_least(tau))
            thresholds.append(out)
        try:
            transform = InputTransform(tuple(map(tuple, thresholds)), self.shape, negate)
        except ValueError as error:
            raise node.error(str(error)) from None
        if transform.bits > _MAX_BITS:
            raise node.error(f"{transform.levels} input levels: lowbit's input integers "
                             f"have at most {_MAX_BITS} bits")
        self._set_quantizer(node, InputQuantizer(transform.bits, 1.0))
        self.transform = transform
        self.mapping.append((node, f"input transform: the host counts {what} "
                                   f"({transform.levels} thresholds), read as "
                                   f"uint{transform.bits}"))
        self._enter_x(act.a, act.b, (0, transform.levels), 1.0)

    def _enter_x(self, a, b, xrange, ir_step):
        self.phase = "x"
        self.a, self.b, self.xrange, self.ir_step = a, b, xrange, ir_step

    # -- layers -------------------------------------------------------------------------

    def _check_activated(self, node):
        if self.phase == "acc":
            raise node.error("follows another MatMul/Gemm without an activation: lowbit's "
                             "hidden layers end in Sign or MultiThreshold" if node.op != "Conv"
                             else "follows another layer without an activation: lowbit's "
                             "hidden layers end in Sign or MultiThreshold")

    def _begin_layer(self, node):
        """Fix the input quantizer from the ``input_quantizer`` argument when the graph has
        not (the first layer)."""
        if self.phase == "raw" and self.user_quantizer is None:
            if not self._describe_input(node):
                raise node.error("the input is undetermined: the graph has no input "
                                 "quantizer (Quant, BipolarQuant, Sign or MultiThreshold on "
                                 "the input) and no datatype annotation on its input; give "
                                 "it with --input-datatype and --input-scale (e.g. "
                                 "--input-datatype UINT8 --input-scale 1/255 for float "
                                 "inputs in [0, 1]; in Python input_description="
                                 "InputDescription('UINT8', 1/255))")
        if self.phase == "raw":
            if isinstance(self.ra, list):
                raise node.error("per-feature input scales are not supported")
            quantizer = self.user_quantizer
            self.quantizer = quantizer
            step = Fraction(quantizer.step)
            self._enter_x(self.ra * step, self.rb, (0, (1 << quantizer.bits) - 1),
                          quantizer.step)
        if not self.layers:
            self.layer_input_shape = self.shape
        self.poolable = False

    def _describe_input(self, node):
        """Enter the first layer's input from the graph's datatype annotation or the
        ``input_description`` argument; False when neither says anything."""
        description = self.user_description
        annotated = self.g.datatype
        if annotated is not None:
            try:
                from_graph = InputDescription(annotated)
            except ValueError:
                raise node.error(f"the graph input's datatype annotation {annotated} is not "
                                 f"one lowbit reads (BIPOLAR, BINARY, UINT1..UINT8, "
                                 f"INT2..INT8)") from None
            if description is not None and description.datatype != from_graph.datatype:
                raise node.error(f"the graph annotates its input as {annotated}, which "
                                 f"conflicts with the input description "
                                 f"{description.datatype}")
            if description is None:
                description = from_graph
        if description is None:
            return False
        if isinstance(self.ra, list) or isinstance(self.rb, list):
            raise node.error("per-feature input scales and offsets are not supported before "
                             "the first layer")
        s, bits = Fraction(description.scale), description.bits
        what = f"input {description.datatype} x {description.scale:g}"
        if description.signed:
            low, high = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
            levels = [(q - Fraction(1, 2)) * s for q in range(low + 1, high + 1)]
            strict = [q % 2 == 1 for q in range(low + 1, high + 1)]
            act = _Activation([levels], strict, self.ra * s, self.rb + self.ra * s * low)
            self._transform_input(node, act, f"the {description.datatype} levels",
                                  ra=Fraction(1), rb=Fraction(0))
            return True
        quantizer = InputQuantizer(bits, description.scale)
        self._set_quantizer(node, quantizer)
        self.mapping.append((node, what))
        if description.datatype == "BIPOLAR":  # x = s * (2 * x_int - 1)
            self._enter_x(2 * self.ra * s, self.rb - self.ra * s, (0, 1), description.scale)
        else:
            self._enter_x(self.ra * s, self.rb, (0, (1 << bits) - 1), description.scale)
        return True

    def _quantized(self, node, weight, make):
        """The layer ``make(latent, bits, scale)`` holding ``weight`` (a :class:`_Weight`
        shaped ``(N, ...)``): returns it, the integer matrix ``(N, K)`` and the scales."""
        n = weight.q.shape[0]
        q = weight.q.reshape(n, -1)
        scale = np.asarray(weight.scale, dtype=np.float64).reshape(n, -1)
        if np.any(scale != scale[:, :1]):
            raise node.error("the weight scale varies along the input dimension: only "
                             "per-output-channel or per-tensor scales fold")
        s = scale[:, 0]
        if weight.kind == "binary":
            return make(weight.q.astype(np.float64), 1, s), q, s
        peak = int(np.abs(q).max(initial=0))
        bits = max(2, peak.bit_length() + 1)
        if bits > _MAX_BITS:
            raise node.error(f"integer weights up to {peak} need {bits} bits (lowbit: at "
                             f"most {_MAX_BITS})")
        if self.g.producer.get(node.inputs[1]) is not None:
            declared = self._declared_bits(node.inputs[1])
            if declared is not None and declared >= bits:
                bits = declared  # keep the Quant's width (narrow values fit)
        latent = weight.q * s.reshape(n, *[1] * (weight.q.ndim - 1))
        layer = make(latent, bits, s)
        if not np.array_equal(layer.integer_weight(), q):
            raise node.error("the weights do not survive lowbit's k-bit rounding")
        return layer, q, s

    def _enter_acc(self, node, q, s, alpha, offsets, xrange, shape):
        """The pre-activation ``A * acc + B`` per output channel of integer weights ``q``
        ``(N, K)`` with scales ``s``, ``alpha`` times the real dot product of the weights with
        inputs ``a * x_int + offsets`` (``offsets`` one value or one per column); ``xrange``
        bounds ``x_int`` (padding included)."""
        sf = _fr_array(s)
        if isinstance(offsets, list):
            bias = _int_dot(q, offsets)
        else:
            bias = [offsets * int(r) for r in q.sum(axis=1)]
        self.A = [alpha * self.a * sc for sc in sf]
        self.B = [alpha * sc * bb for sc, bb in zip(sf, bias)]
        lo, hi = xrange
        pos, neg = np.clip(q, 0, None), np.clip(q, None, 0)
        self.acc_low = (pos * lo + neg * hi).sum(axis=1).astype(int).tolist()
        self.acc_high = (pos * hi + neg * lo).sum(axis=1).astype(int).tolist()
        self.units = [Fraction(self.ir_step) * sc for sc in sf]
        self.dense_node = node
        self.phase = "acc"
        self.shape = shape

    def _add_bias(self, node, index, alpha):
        """Add ``alpha`` times the bias input ``index`` of ``node`` (1 or N values) to B."""
        if len(node.inputs) > index and node.inputs[index]:
            n = len(self.B)
            c = self.g.value(node.inputs[index], node).ravel()
            if c.size not in (1, n):
                raise node.error(f"bias must have 1 or {n} values, not {c.size}")
            cs = _fr_array(c)
            cs = cs * n if len(cs) == 1 else cs
            self.B = [b + alpha * v for b, v in zip(self.B, cs)]

    def matmul(self, node, data):
        if node.inputs[0] != data:
            raise node.error("the computed tensor must be the first input (x @ W)")
        self._check_activated(node)
        if len(self.shape) != 1:
            raise node.error(f"its input has per-sample shape {self.shape}: flatten it "
                             f"first (Flatten or Reshape)")
        self._begin_layer(node)
        if node.op == "Gemm":
            if node.attr("transA", 0):
                raise node.error("transA=1 is not supported")
            weight = _weight(self.g, node.inputs[1], node)
            if not node.attr("transB", 0):
                weight = weight.transposed()
            alpha, beta = _fr(node.attr("alpha", 1.0)), _fr(node.attr("beta", 1.0))
        else:
            weight = _weight(self.g, node.inputs[1], node).transposed()
            alpha, beta = Fraction(1), Fraction(0)
        if weight.q.ndim != 2:
            raise node.error(f"weights must be a matrix, not shape {weight.q.shape}")
        n, k = weight.q.shape
        if k != self.shape[0]:
            raise node.error(f"weights take {k} inputs, the tensor has {self.shape[0]}")
        dense, q, s = self._quantized(
            node, weight, lambda w, bits, sc: Dense(w, weight_bits=bits, scale=sc))
        self.layers.append(dense)
        self.mapping.append((node, f"Dense {k} -> {n}, weights {dense.weight_precision}"))
        self._enter_acc(node, q, s, alpha, self.b, self.xrange, (n,))
        if node.op == "Gemm":
            self._add_bias(node, 2, beta)

    def _conv_geometry(self, node, kernel):
        """``(stride, padding)`` from a Conv's attributes, or an error naming the first
        attribute lowbit's Conv2D cannot express."""
        def ints(name, default):
            value = node.attr(name)
            return list(default) if value is None else [int(v) for v in value]

        auto_pad = node.attr("auto_pad", "NOTSET")
        if auto_pad not in ("NOTSET", "VALID"):
            raise node.error(f"auto_pad {auto_pad} is not supported: give explicit "
                             f"symmetric pads")
        shape = ints("kernel_shape", kernel)
        if tuple(shape) != tuple(kernel):
            raise node.error(f"kernel_shape {shape} differs from the weights' {list(kernel)}")
        group = node.attr("group", 1)
        if group != 1:
            raise node.error(f"group={group} (a grouped or depthwise convolution) is not "
                             f"supported: lowbit's Conv2D is a full convolution (group=1)")
        dilations = ints("dilations", [1, 1])
        if any(d != 1 for d in dilations):
            raise node.error(f"dilations {dilations} are not supported: lowbit's Conv2D "
                             f"has no dilation (all 1)")
        strides = ints("strides", [1, 1])
        if len(set(strides)) != 1 or strides[0] < 1:
            raise node.error(f"strides {strides} are not supported: lowbit's Conv2D has one "
                             f"stride for both axes")
        pads = ints("pads", [0, 0, 0, 0]) if auto_pad == "NOTSET" else [0, 0, 0, 0]
        if len(set(pads)) != 1 or pads[0] < 0:
            raise node.error(f"pads {pads} are not supported: lowbit's Conv2D pads every "
                             f"side with the same number of pixels (symmetric and equal "
                             f"pads)")
        return strides[0], pads[0]

    def _channel_offsets(self, node, what):
        """The input offset ``b`` (``x = a * x_int + b``) as one value or one per channel
        of the ``(C, H, W)`` tensor; ``what`` says which node needs it (errors)."""
        if not isinstance(self.b, list):
            return self.b
        channels = _per_channel(self.b, self.shape)
        if channels is None:
            raise node.error(f"its input has an offset that varies over positions (an "
                             f"Add/Sub constant that is not per channel): {what}")
        return channels

    def _pad_integer(self, node, offsets):
        """The integer ``x_int`` that the graph's real zero padding stands for, as lowbit's
        ``Conv2D.pad_value``, or an error naming ``node``."""
        lo, hi = self.xrange
        binary = (lo, hi) == (-1, 1)
        kind = "+-1" if binary else f"unsigned {lo}..{hi}"
        if self.a == 0:
            raise node.error("its input's scale is 0: zero padding has no integer value")
        values = offsets if isinstance(offsets, list) else [offsets]
        pads = {-b / self.a for b in values}
        if len(pads) != 1:
            raise node.error(f"zero padding stands for a different integer in each channel "
                             f"(x_int = {', '.join(map(str, sorted(pads)))}) of its {kind} "
                             f"inputs: lowbit pads every channel with one value")
        pad = pads.pop()
        first = not self.layers
        if binary and pad in (-1, 0, 1):
            return float(pad)
        if not binary and pad == 0:
            return 0.0
        where = ("the first layer's input quantizer integers" if first
                 else f"its {kind} input integers")
        allowed = "-1, 0 or +1" if binary else "0"
        b = values[0]
        raise node.error(f"zero padding: the real value 0 is x_int = {pad} of {where} "
                         f"(real = {self.a} * x_int {'-' if b < 0 else '+'} {abs(b)}); lowbit "
                         f"pads them with {allowed} only")

    def conv(self, node, data):
        if node.inputs[0] != data:
            raise node.error("the computed tensor must be the first input (X)")
        self._check_activated(node)
        if len(self.shape) != 3:
            raise node.error(f"its input has per-sample shape {self.shape}: lowbit's Conv2D "
                             f"takes (C, H, W) samples")
        weight = _weight(self.g, node.inputs[1], node)
        if weight.q.ndim != 4:
            raise node.error(f"weights must be (N, C, kh, kw) (a 2-D convolution), not shape "
                             f"{weight.q.shape}")
        n, c, kh, kw = weight.q.shape
        stride, padding = self._conv_geometry(node, (kh, kw))
        if c != self.shape[0]:
            raise node.error(f"weights take {c} input channels, the tensor has "
                             f"{self.shape[0]}")
        _, h, w = self.shape
        if h + 2 * padding < kh or w + 2 * padding < kw:
            raise node.error(f"its {kh}x{kw} kernel is larger than its padded {self.shape} "
                             f"input")
        self._begin_layer(node)
        offsets = self._channel_offsets(node, "the convolution's bias would vary by position")
        pad_value = self._pad_integer(node, offsets) if padding else 0.0
        layer, q, s = self._quantized(
            node, weight, lambda wt, bits, sc: Conv2D(wt, weight_bits=bits, scale=sc,
                                                      stride=stride, padding=padding,
                                                      pad_value=pad_value))
        self.layers.append(layer)
        out = layer.output_shape(self.shape)
        self.mapping.append((node, f"Conv2D {c} -> {n}, {kh}x{kw}, stride {stride}, padding "
                                   f"{padding} (pad {pad_value:g}), weights "
                                   f"{layer.weight_precision}"))
        lo, hi = self.xrange
        if padding:
            lo, hi = min(lo, int(pad_value)), max(hi, int(pad_value))
        columns = ([v for v in offsets for _ in range(kh * kw)]
                   if isinstance(offsets, list) else offsets)
        self._enter_acc(node, q, s, Fraction(1), columns, (lo, hi), out)
        self._add_bias(node, 2, Fraction(1))

    def maxpool(self, node):
        size = self._pool_size(node)
        if not self.layers:
            raise node.error("pools the network's input: lowbit pools only a convolution's "
                             "activations (Conv2D [BatchNorm] activation MaxPool2D)")
        if len(self.shape) != 3:
            raise node.error(f"its input has per-sample shape {self.shape}: MaxPool needs "
                             f"(C, H, W) data")
        c, h, w = self.shape
        if h < size or w < size:
            raise node.error(f"window {size} is larger than its {self.shape} input")
        pooled = (c, h // size, w // size)
        if self.phase == "acc":
            # Before the activation: moved after it when that is exact (see activation()).
            if self.pool is not None:
                raise node.error(f"a second MaxPool after {self.pool[0].label}: lowbit's "
                                 f"blocks pool once")
            self.pool = (node, size, list(self.A))
            self.shape = pooled
            return
        if not self.poolable:
            raise node.error("lowbit pools right after a convolution's activation, once "
                             "(Conv2D [BatchNorm] activation MaxPool2D)")
        if self.a < 0:
            raise node.error(f"its input is {self.a} * x_int + b with a negative scale: the "
                             f"maximum of the graph's values is the minimum of lowbit's "
                             f"activations")
        offsets = self._channel_offsets(node, "the maximum of a window would not be the "
                                              "maximum of lowbit's activations")
        if isinstance(offsets, list):  # the same per-channel offsets, at fewer positions
            self.b = [v for v in offsets for _ in range(pooled[1] * pooled[2])]
        self.layers.append(MaxPool2D(size))
        self.mapping.append((node, f"MaxPool2D {size}x{size}"))
        self.shape = pooled
        self.poolable = False

    def _pool_size(self, node):
        """The window of a MaxPool that lowbit's MaxPool2D expresses, or an error."""
        if len([o for o in node.outputs if o]) > 1:
            raise node.error("the Indices output is not supported")
        kernel = [int(v) for v in node.attr("kernel_shape", [])]
        if len(kernel) != 2:
            raise node.error(f"kernel_shape {kernel}: lowbit pools 2-D windows")
        if kernel[0] != kernel[1]:
            raise node.error(f"kernel_shape {kernel} is not square: lowbit's MaxPool2D pools "
                             f"square windows")
        strides = [int(v) for v in node.attr("strides", [1, 1])]
        if strides != kernel:
            raise node.error(f"strides {strides} differ from kernel_shape {kernel}: lowbit's "
                             f"MaxPool2D pools non-overlapping windows (stride = window)")
        auto_pad = node.attr("auto_pad", "NOTSET")
        pads = [int(v) for v in node.attr("pads", [0, 0, 0, 0])]
        if auto_pad not in ("NOTSET", "VALID") or any(pads):
            raise node.error(f"padding ({'pads ' + str(pads) if any(pads) else auto_pad}) is "
                             f"not supported: lowbit's MaxPool2D does not pad")
        if node.attr("ceil_mode", 0):
            raise node.error("ceil_mode=1 is not supported: lowbit's MaxPool2D drops a "
                             "partial window at the edge (ceil_mode=0)")
        dilations = [int(v) for v in node.attr("dilations", [1, 1])]
        if any(d != 1 for d in dilations):
            raise node.error(f"dilations {dilations} are not supported (all 1)")
        return kernel[0]

    def _declared_bits(self, name):
        node = self.g.producer.get(name)
        while node is not None and node.op in ("Identity", "Transpose"):
            node = self.g.producer.get(node.inputs[0])
        if node is not None and node.op == "Quant" and node.qonnx:
            bits = int(self.g.value(node.inputs[3], node).ravel()[0])
            return bits if bits <= _MAX_BITS else None
        return None

    def activation(self, node, act):
        if self.phase == "raw":
            if len(act.levels) == 1 and len(act.levels[0]) == 1 and \
                    self._input_sign(node, act):
                return
            return self._transform_input(node, act, "the graph's input thresholds")
        if self.phase != "acc":
            raise node.error(f"{node.op} must follow a MatMul/Gemm/Conv layer (its input is "
                             f"already quantized)")
        n = len(self.A)
        if self.pool is not None:
            # The activation is non-decreasing in its input, so it commutes with the
            # maximum when what lies between the pool and it scales each channel by a
            # factor >= 0 (A[c] / A_pool[c], both exact).
            pool_node, _, before = self.pool
            for c in range(n):
                if before[c] * self.A[c] < 0:
                    raise pool_node.error(
                        f"pools before the activation {node.label} ({node.op}), and the "
                        f"nodes between them scale channel {c} by a negative factor (e.g. "
                        f"a BatchNormalization with gamma < 0): the pool takes the minimum "
                        f"where pooling after the activation takes the maximum")
        shared = None
        count = len(act.levels[0])
        if not count & (count + 1) and count <= (1 << _MAX_BITS) - 1:
            try:
                shared = _shared_row(act.levels, n, node)
            except ONNXImportError:
                shared = None
        if shared is not None and self.relu is not None:
            row, alpha, beta = shared
            # relu(y) passes a level L > 0 (or y > 0) iff y does; other levels always pass.
            if any(alpha[c] * t + beta[c] < 0 or (alpha[c] * t + beta[c] == 0 and not st)
                   for c in range(n) for t, st in zip(row, act.strict)):
                shared = None
        if shared is None:
            # Per-channel thresholds that are no affine image of one row, a number of levels
            # that is not 2^k - 1, or a Relu before levels <= 0: the integer thresholds on
            # each channel's accumulator, put on one line (exact, see _line_fit).
            act = self._refit(node, act)
            shared = _shared_row(act.levels, n, node)
        row, alpha, beta = shared
        strict = list(act.strict)
        if self.relu is not None:
            self.mapping.append((self.relu, "dropped: the next activation's levels are "
                                 "positive"))
            self.relu = None
        A = [a / al for a, al in zip(self.A, alpha)]
        B = [(b - be) / al for b, be, al in zip(self.B, beta, alpha)]
        count = len(row)
        if count == 1:
            # Sign: y >= level as y - level >= 0; output a*count + b = a/2 * (+-1) + b + a/2
            B = [b - row[0] for b in B]
            levels = [Fraction(0)]
            ir_levels = [0.0]
            out = Sign()
            next_a, next_b, xrange, ir_step = act.a / 2, act.b + act.a / 2, (-1, 1), 1.0
        else:
            if count & (count + 1):
                raise node.error(f"{count} thresholds: lowbit's MultiThreshold needs 2^k - 1")
            if count > (1 << _MAX_BITS) - 1:
                raise node.error(f"{count} thresholds: at most {(1 << _MAX_BITS) - 1}")
            levels = row
            ir_levels = []
            for t, st in zip(row, strict):
                value = float(t)
                if Fraction(value) != t:
                    raise node.error(f"level {t} is not a float64 value")
                ir_levels.append(float(np.nextafter(value, np.inf)) if st else value)
            if any(b < a for a, b in zip(ir_levels, ir_levels[1:])):
                raise node.error("levels are not non-decreasing after making the strict "
                                 "ones (rounding ties down) exact")
            step = float(act.a) if act.a > 0 else 1.0
            out = MultiThreshold(ir_levels, step)
            next_a, next_b = act.a, act.b
            xrange, ir_step = (0, count), step
        gamma, beta_ir = self._fit(node, A, B, levels, strict if count > 1 else
                                   [strict[0]], ir_levels)
        self.layers.append(BatchNorm(gamma, beta_ir, np.zeros(n), np.ones(n), eps=0.0))
        self.layers.append(out)
        self.mapping.append((node, f"{type(out).__name__} (thresholds folded with the "
                                   f"batch norm)"))
        shape = self.shape  # the layer's output (pooled if a MaxPool came first)
        self._enter_x(next_a, next_b, xrange, ir_step)
        self.shape = shape
        if self.pool is not None:
            pool_node, size, _ = self.pool
            self.layers.append(MaxPool2D(size))
            self.mapping.append((pool_node, f"MaxPool2D {size}x{size}, after the activation "
                                            f"(the same maximum: the activation is "
                                            f"non-decreasing per channel)"))
            self.pool = None
        else:
            self.poolable = len(shape) == 3

    def _refit(self, node, act):
        """Replace ``A``, ``B`` by a per-channel ``A'[c] * acc + B'[c]`` that passes the
        shared levels ``1, 2, ..., 2^k - 1`` on exactly the accumulators where the graph's
        activation (with a Relu before it, if any) passes its per-channel levels; levels
        past the graph's count never pass. Returns the activation on those levels."""
        n = len(self.A)
        rows = act.levels if len(act.levels) > 1 else act.levels * n
        count = len(rows[0])
        padded = 1 << max(1, count.bit_length())
        padded = count if not count & (count + 1) else padded - 1
        if padded > (1 << _MAX_BITS) - 1:
            raise node.error(f"{count} thresholds: at most {(1 << _MAX_BITS) - 1}")
        relu = self.relu is not None
        channel_bounds, ranges = [], []
        for c in range(n):
            lo, hi = self.acc_low[c], self.acc_high[c]
            sign = 1 if self.A[c] >= 0 else -1
            zlo, zhi = (lo, hi) if sign > 0 else (-hi, -lo)
            bounds = []
            for level, st in zip(rows[c], act.strict):
                if relu and (level < 0 or (level == 0 and not st)):
                    first, last = lo, hi  # relu(y) >= 0 >= level: always
                else:
                    first, last = _exact_pass_interval(self.A[c], self.B[c], level, st, lo,
                                                       hi)
                if first > last:
                    bounds.append((zhi, None))  # never: u*j + v > zhi
                    continue
                z_first, z_last = (first, last) if sign > 0 else (-last, -first)
                if z_last != zhi:
                    raise node.error(f"channel {c}: the activation is not monotone in the "
                                     f"accumulator")
                bounds.append((None, zlo) if z_first <= zlo else (z_first - 1, z_first))
            channel_bounds.append(bounds)
            ranges.append((sign, zlo, zhi))
        # Levels every channel always passes (or never does) get one shared level below
        # (above) every accumulator; the others are put on one line per channel.
        always = [all(b[j] == (None, r[1]) for b, r in zip(channel_bounds, ranges))
                  for j in range(count)]
        never = [all(b[j] == (r[2], None) for b, r in zip(channel_bounds, ranges))
                 for j in range(count)]
        middle = [j for j in range(count) if not always[j] and not never[j]]
        fits = []
        for c, bounds in enumerate(channel_bounds):
            fit = _line_fit([bounds[j] for j in middle]) if middle else (Fraction(1),
                                                                        Fraction(0))
            if fit is None:
                raise node.error(f"channel {c}: its thresholds are not expressible with "
                                 f"levels shared across channels (lowbit's MultiThreshold) "
                                 f"and a per-channel batch norm")
            fits.append(fit)
        top, low = len(middle) + 1, Fraction(0)
        for (u, v), (sign, zlo, zhi), c in zip(fits, ranges, range(n)):
            self.A[c], self.B[c] = sign / u, -v / u
            # y = (z - v) / u passes a level H only where z >= u * H + v: above zhi for
            # the top level, at or below zlo for the low one
            top = max(top, _floor((zhi - v) / u) + 1)
            low = min(low, _floor((zlo - v) / u))
        levels, k = [], 0
        for j in range(count):
            if always[j]:
                levels.append(low)
            elif never[j]:
                levels.append(Fraction(top))
            else:
                k += 1
                levels.append(Fraction(k))
        levels += [Fraction(top)] * (padded - count)
        return _Activation([levels], [False] * padded, act.a, act.b)

    def _fit(self, node, A, B, levels, strict, ir_levels):
        """float64 ``gamma, beta`` whose folded thresholds equal the exact ones."""
        n = len(A)
        gamma = np.array([float(a / u) for a, u in zip(A, self.units)])
        beta = np.array([float(b) for b in B])
        for c in range(n):
            lo, hi = self.acc_low[c], self.acc_high[c]
            want = [_exact_pass_interval(A[c], B[c], t, st, lo, hi)
                    for t, st in zip(levels, strict)]

            def matches(g, b):
                t, flip = fold_layer_thresholds([self.units[c]], [g], [b], [0.0], [1.0],
                                                ir_levels, 64)
                return [_ir_pass_interval(int(v), bool(flip[0]), lo, hi)
                        for v in t[0]] == want

            if matches(gamma[c], beta[c]):
                continue
            for i in range(1, _NUDGES + 1):
                found = None
                for direction in (np.inf, -np.inf):
                    b = beta[c]
                    for _ in range(i):
                        b = np.nextafter(b, direction)
                    if matches(gamma[c], b):
                        found = b
                        break
                if found is not None:
                    beta[c] = found
                    break
            else:
                raise node.error(f"channel {c}: no float64 batch norm gives this "
                                 f"activation's exact thresholds (a level within rounding "
                                 f"of an accumulator value)")
        return gamma, beta

    def finish_last(self):
        scale = [float(a / u) for a, u in zip(self.A, self.units)]
        offset = [float(b) for b in self.B]
        self.output = OutputAffine(np.array(scale), np.array(offset))

    def model(self):
        quantizer = self.quantizer if self.quantizer is not None else self.user_quantizer
        input_shape = self.input_shape
        if isinstance(self.layers[0], Conv2D):
            # (C, H, W) as the first Conv sees it: a Reshape of the graph input before it
            # is row-major, so flat rows of the graph's input are the model's input too.
            input_shape, layers = self.layer_input_shape, self.layers
        else:
            layers = ([Flatten()] if len(self.input_shape) > 1 else []) + self.layers
        mapping = [{"node": n.label, "op": n.op, "as": what} for n, what in self.mapping]
        return QuantModel(name=self.name, dataset="onnx", input_quantizer=quantizer,
                          input_shape=input_shape, layers=layers, output=self.output,
                          metadata={"importer": "lowbit.onnx_import",
                                    "producer": self.g.model.producer_name or None,
                                    "source": self.source, "mapping": mapping,
                                    "input_transform": (None if self.transform is None
                                                        else self.transform.to_json())})


def _scale(value, m):
    return [v * m for v in value] if isinstance(value, list) else value * m


def _add(value, values, sign):
    if len(values) == 1 and not isinstance(value, list):
        return value + sign * values[0]
    base = value if isinstance(value, list) else [value] * len(values)
    v = values * len(base) if len(values) == 1 else values
    return [x + sign * y for x, y in zip(base, v)]


def _per_channel(values, shape):
    """The per-channel values of a per-feature list over ``(C, H, W)`` samples (row-major),
    or None when one varies over a channel's positions."""
    size = math.prod(shape[1:])
    out = []
    for c in range(shape[0]):
        chunk = values[c * size:(c + 1) * size]
        if any(v != chunk[0] for v in chunk):
            return None
        out.append(chunk[0])
    return out


def _int_dot(q, b):
    """``q @ b`` exactly for an integer matrix and a list of Fractions."""
    den = math.lcm(*(v.denominator for v in b))
    nums = np.array([int(v * den) for v in b], dtype=object)
    return [Fraction(int(s), den) for s in (q.astype(object) @ nums)]


def _binarizing_step(threshold):
    """A float64 ``step`` with ``clip(rint(x / step), 0, 1) == (x >= threshold)`` for every
    float64 ``x`` (``x / step`` is monotone, so the floats on both sides of the threshold
    decide it), or None."""
    up = float(threshold)
    if Fraction(up) < threshold:
        up = float(np.nextafter(up, np.inf))
    below = float(np.nextafter(up, -np.inf))
    step = 2 * up
    for _ in range(64):
        if np.rint(up / step) >= 1 and np.rint(below / step) <= 0:
            return float(step)
        step = float(np.nextafter(step, 0))
    return None


def load_onnx(path_or_model, *, input_quantizer=None, input_description=None, name=None):
    """Import an ONNX, QONNX or FINN-ONNX quantized MLP or CNN as a
    :class:`~lowbit.model.QuantModel`.

    The graph is read, checked (``onnx.checker``) and cleaned by qonnx (constant subgraphs
    folded, :mod:`lowbit.onnx_passes`), then mapped. A CNN's model takes ``(C, H, W)``
    samples as its first ``Conv`` sees them (a ``Reshape`` of the graph's input before it
    is row-major, so flat rows work too). When the graph quantizes its input in a way
    lowbit's unsigned input quantizer cannot (a signed or zero-pointed input ``Quant``, a
    ``MultiThreshold`` on the raw input, an ``INTk`` input), the model's metadata records an
    :class:`InputTransform`: :func:`prepare_input` turns the graph's raw inputs into the
    model's.

    Parameters
    ----------
    path_or_model : str, path or onnx.ModelProto
    input_quantizer : InputQuantizer or None
        How the model's float inputs become integers when the graph does not say so itself,
        e.g. ``InputQuantizer(8, 1/255)`` for inputs in [0, 1]. When the graph determines
        the quantizer, this must be None or equal to it.
    input_description : InputDescription or None
        The same said as a datatype and a scale (the CLI's ``--input-datatype`` and
        ``--input-scale``), used when the graph has no input quantizer; it must agree with
        the graph's datatype annotation of its input, if any.
    name : str or None
        The model's name (default: the graph's name, else the file's stem, else "onnx").

    Raises
    ------
    ONNXImportError
        For a node that cannot be mapped (its name, its op type and why).
    ValueError
        For a graph that is not a chain with one input and one output, an unreadable or
        malformed file (every failure of a malformed graph is a ``ValueError``).
    OSError
        When the file cannot be read.
    """
    if input_quantizer is not None and not isinstance(input_quantizer, InputQuantizer):
        raise TypeError(f"input_quantizer must be an InputQuantizer or None, not "
                        f"{input_quantizer!r}")
    if input_description is not None and not isinstance(input_description,
                                                        InputDescription):
        raise TypeError(f"input_description must be an InputDescription or None, not "
                        f"{input_description!r}")
    from .onnx_passes import prepare, read_model
    model, path = read_model(path_or_model)
    if name is None:
        import os
        name = model.graph.name or (os.path.splitext(os.path.basename(path))[0] if path
                                    else "onnx")
    try:
        model, _, datatype = prepare(model)
        graph = _Graph(model)
        graph.datatype = datatype
        return _Importer(graph, input_quantizer, name, path, input_description).run()
    except (ValueError, TypeError):
        raise
    except RecursionError:
        raise ValueError("the graph is nested too deeply to import") from None
    except Exception as error:  # a malformed graph that no check above names
        _log.debug("import failed", exc_info=True)
        raise ValueError(f"malformed graph: {type(error).__name__}: {error}") from None


# Command line ---------------------------------------------------------------------------

def add_input_arguments(parser):
    """The input-description options of ``lowbit import`` and ``lowbit compile``."""
    parser.add_argument("--input-datatype", metavar="TYPE",
                        help="what the graph's raw input holds when the graph does not say "
                        "it: BIPOLAR, BINARY, UINT1..UINT8 or INT2..INT8")
    parser.add_argument("--input-scale", type=_step, metavar="S",
                        help="real value of one input step with --input-datatype (e.g. "
                        "1/255; default 1)")
    parser.add_argument("--input-bits", type=int, metavar="B",
                        help="the same as --input-datatype UINT<B> (older spelling)")
    parser.add_argument("--input-step", type=_step, metavar="S",
                        help="real value of one step with --input-bits (default 1)")


def _step(text):
    try:
        value = float(Fraction(text))
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    return value


def input_description_from_args(args):
    """``(input_quantizer, input_description)`` from the input options; raises
    ``ValueError`` (or ``TypeError``) with the CLI's message on a bad combination."""
    bits, step = getattr(args, "input_bits", None), getattr(args, "input_step", None)
    datatype, scale = getattr(args, "input_datatype", None), getattr(args, "input_scale",
                                                                     None)
    if (bits is not None or step is not None) and (datatype is not None or
                                                   scale is not None):
        raise ValueError("give --input-datatype/--input-scale or --input-bits/--input-step, "
                         "not both")
    if bits is not None or step is not None:
        if bits is None:
            raise ValueError("--input-step needs --input-bits")
        return InputQuantizer(bits, 1.0 if step is None else step), None
    if datatype is not None or scale is not None:
        if datatype is None:
            raise ValueError("--input-scale needs --input-datatype")
        return None, InputDescription(datatype, 1.0 if scale is None else scale)
    return None, None
