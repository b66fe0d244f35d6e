"""lowbit's intermediate form for quantized networks, and its exact integer form.

A :class:`QuantModel` is the trained (or imported) network as its author meant it: latent
float weights with the rule that quantizes them, batch norm with float statistics, sign and
MultiThreshold activations, an input quantizer from the model's own input domain to
integers, and an optional affine step the host applies to the last layer's scores. It is
saved and loaded as one ``.npz`` archive with a JSON header (format version
:data:`VERSION`). ``docs/model.md`` is the full specification.

:meth:`QuantModel.integer_form` turns it into what an integer accelerator computes
(docs/arithmetic.md, sections 1 and 2): per compute layer an integer weight matrix, the precision
of its inputs, and either per-channel integer thresholds with a flip bit (hidden layers) or
a per-class scale and offset the host applies to the raw integer scores (the last layer).
That integer form is the compiler's contract: :meth:`IntegerForm.forward` is its bit-exact
semantics, and it equals the model's exact real-number semantics on every input.
:meth:`QuantModel.float_forward` runs the same model independently in float64; the two
differ only where a float rounding error decides a comparison (a pre-activation within a few
ulps of a threshold level, or two class scores within a few ulps of each other).

Exact semantics, pinned: every stored parameter is the exact rational value of its float64;
the one derived float is ``sigma = sqrt(var + eps)``, the float64 numpy computes (IEEE,
correctly rounded); every other step (products of scales, the batch norm, comparisons with
levels) is exact.
"""

import dataclasses
import functools
import json
import math
import zipfile
from fractions import Fraction

import numpy as np

from .golden.xnor_array import Precision

__all__ = ["VERSION", "FORMAT", "ModelFileError", "InputQuantizer", "Dense", "Conv2D",
           "BatchNorm", "Sign", "MultiThreshold", "MaxPool2D", "Flatten", "OutputAffine",
           "QuantModel", "IntegerLayer", "ConvShape", "IntegerForm", "fold_layer_thresholds",
           "im2col", "max_pool"]

#: Version of the model file format and of the semantics this module implements.
VERSION = 1
#: ``"format"`` entry of a model file's JSON header.
FORMAT = "lowbit-model"

_MAX_BITS = 8  # what Precision (the XNOR array's operand formats) supports
_EXACT_FLOAT = 1 << 53  # float64 holds every integer of smaller magnitude exactly


class ModelFileError(ValueError):
    """A model file cannot be read: not a model archive, or a version this lowbit lacks."""


# Validation helpers ---------------------------------------------------------------------

def _is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _positive_float(value, name):
    if not isinstance(value, (int, float, np.integer, np.floating)) or isinstance(value, bool):
        raise TypeError(f"{name} must be a real number, not {value!r}")
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be positive and finite, not {value!r}")
    return value


def _array(value, name, ndim, dtype=np.float64):
    """A read-only float64 (or int64) copy of ``value`` with ``ndim`` dimensions."""
    try:
        array = np.array(value, dtype=dtype)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be an array of real numbers, not "
                        f"{type(value).__name__}") from None
    if array.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension{'s' if ndim != 1 else ''}, "
                         f"not shape {array.shape}")
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must hold finite numbers only")
    array.setflags(write=False)
    return array


def _channels(array, name, channels):
    if array.shape != (channels,):
        raise ValueError(f"{name} must have shape ({channels},), not {array.shape}")
    return array


def _exact(value):
    return Fraction(float(value))


# Input quantizer ------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class InputQuantizer:
    """Maps the model's own input domain to unsigned integers.

    ``x_int = clip(rint(x / step), 0, 2^bits - 1)`` in float64 (``rint``: round half to
    even); an input integer stands for the real value ``x_int * step``. lowbit's digits
    models use ``bits=5, step=1`` (the pixels 0..16 of ``load_digits().data`` unchanged);
    MNIST models ``bits=8, step=1`` (uint8 pixels unchanged).

    Parameters
    ----------
    bits : int
        Width of the unsigned input integers, 1..8.
    step : float
        Real value of one integer step (positive, finite).

    Raises
    ------
    TypeError, ValueError
        On a parameter of the wrong type or out of range.
    """

    bits: int
    step: float = 1.0

    def __post_init__(self):
        if not _is_int(self.bits):
            raise TypeError(f"input bits must be an integer, not {self.bits!r}")
        if not 1 <= self.bits <= _MAX_BITS:
            raise ValueError(f"input bits must be in 1..{_MAX_BITS}, not {self.bits}")
        object.__setattr__(self, "bits", int(self.bits))
        object.__setattr__(self, "step", _positive_float(self.step, "input step"))

    @property
    def precision(self):
        """The :class:`~lowbit.golden.xnor_array.Precision` of the integers produced."""
        return Precision("unsigned", self.bits)

    def quantize(self, x):
        """Integers (int64) of model-domain inputs ``x``; values outside the range clip.

        Raises ``ValueError`` on non-finite inputs and ``TypeError`` on non-numbers.
        """
        x = np.asarray(x)
        if x.dtype.kind not in "biuf":
            raise TypeError(f"inputs must be real numbers, not {x.dtype}")
        x = x.astype(np.float64)
        if not np.all(np.isfinite(x)):
            raise ValueError("inputs must be finite (found NaN or infinity)")
        return np.clip(np.rint(x / self.step), 0, (1 << self.bits) - 1).astype(np.int64)

    def dequantize(self, x_int):
        """The real values (float64) the integers stand for."""
        return np.asarray(x_int, dtype=np.float64) * self.step

    def to_json(self):
        return {"bits": self.bits, "step": self.step}


# Layers ---------------------------------------------------------------------------------

def _weight_rule(owner, matrix, weight_bits, scale):
    """Checked ``(weight_bits, scale)`` of a layer whose weights, as a matrix, are
    ``matrix`` ``(N, K)``: the quantization rule of :class:`Dense`."""
    if not _is_int(weight_bits):
        raise TypeError(f"{owner} weight_bits must be an integer, not {weight_bits!r}")
    if not 1 <= weight_bits <= _MAX_BITS:
        raise ValueError(f"{owner} weight_bits must be in 1..{_MAX_BITS}, not {weight_bits}")
    weight_bits = int(weight_bits)
    if scale is None:
        scale = Dense.default_scale(matrix, weight_bits)
    else:
        scale = _channels(_array(scale, f"{owner} scale", 1), f"{owner} scale",
                          matrix.shape[0])
        if np.any(scale <= 0):
            raise ValueError(f"{owner} scale must be positive")
    scale.setflags(write=False)
    return weight_bits, scale


def _integer_weight(matrix, weight_bits, scale):
    if weight_bits == 1:
        return np.where(matrix >= 0, 1, -1).astype(np.int64)
    qmax = (1 << (weight_bits - 1)) - 1
    return np.clip(np.rint(matrix / scale[:, None]), -qmax, qmax).astype(np.int64)


def _weight_precision(weight_bits):
    if weight_bits == 1:
        return Precision("binary", 1)
    return Precision("signed", weight_bits)



@dataclasses.dataclass(frozen=True, eq=False)
class Dense:
    """Fully connected layer ``z = x @ Wq.T`` without bias (a bias folds into the following
    :class:`BatchNorm`'s ``mean`` or into :class:`OutputAffine`'s ``offset``).

    Weight quantization, from the latent float ``weight`` of shape ``(N, K)``:

    * ``weight_bits == 1``: binary, ``w_int = +1 if weight >= 0 else -1`` (docs/arithmetic.md,
      section 1: ``sign(0) = +1``);
    * ``weight_bits == k >= 2``: symmetric signed k-bit,
      ``w_int = clip(rint(weight / scale[n]), -(2^(k-1) - 1), 2^(k-1) - 1)``.

    The real weight is ``Wq[n] = scale[n] * w_int[n]``.

    Parameters
    ----------
    weight : array (N, K)
        Latent float weights.
    weight_bits : int
        1..8.
    scale : array (N,) or None
        Positive per-output-channel scale. ``None``: ones for binary weights, and
        ``max|weight[n]| / (2^(k-1) - 1)`` (1 for an all-zero row) for k-bit weights.
    """

    weight: np.ndarray
    weight_bits: int = 1
    scale: np.ndarray = None

    def __post_init__(self):
        weight = _array(self.weight, "Dense weight", 2)
        if weight.shape[0] < 1 or weight.shape[1] < 1:
            raise ValueError(f"Dense weight must not be empty, not shape {weight.shape}")
        object.__setattr__(self, "weight", weight)
        bits, scale = _weight_rule("Dense", weight, self.weight_bits, self.scale)
        object.__setattr__(self, "weight_bits", bits)
        object.__setattr__(self, "scale", scale)

    @staticmethod
    def default_scale(weight, weight_bits):
        """The scale rule used when none is given (see the class docstring)."""
        weight = np.asarray(weight, dtype=np.float64)
        if weight_bits == 1:
            return np.ones(weight.shape[0])
        peak = np.abs(weight).max(axis=1)
        return np.where(peak > 0, peak / ((1 << (weight_bits - 1)) - 1), 1.0)

    @property
    def out_features(self):
        return self.weight.shape[0]

    @property
    def in_features(self):
        return self.weight.shape[1]

    @property
    def weight_precision(self):
        """``binary`` or ``int{k}`` (the values stay within ``+-(2^(k-1) - 1)``)."""
        return _weight_precision(self.weight_bits)

    def integer_weight(self):
        """The integer weights ``w_int`` (int64, shape (N, K))."""
        return _integer_weight(self.weight, self.weight_bits, self.scale)

    def quantized_weight(self):
        """The real weights ``scale[:, None] * w_int`` (float64)."""
        return self.scale[:, None] * self.integer_weight()

    def arrays(self):
        return {"weight": self.weight, "scale": self.scale}

    def params(self):
        return {"weight_bits": self.weight_bits}


@dataclasses.dataclass(frozen=True, eq=False)
class BatchNorm:
    """Inference batch norm ``y = gamma * (z - mean) / sigma + beta`` per channel, with
    ``sigma = sqrt(var + eps)`` in float64.

    Raises ``ValueError`` unless the four arrays are 1-D of one length, ``var >= 0``,
    ``eps >= 0`` and ``var + eps > 0``.
    """

    gamma: np.ndarray
    beta: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    eps: float = 1e-5

    def __post_init__(self):
        gamma = _array(self.gamma, "BatchNorm gamma", 1)
        for name in ("gamma", "beta", "mean", "var"):
            value = _channels(_array(getattr(self, name), f"BatchNorm {name}", 1),
                              f"BatchNorm {name}", gamma.shape[0])
            object.__setattr__(self, name, value)
        if isinstance(self.eps, bool) or not isinstance(self.eps, (int, float, np.integer,
                                                                   np.floating)):
            raise TypeError(f"BatchNorm eps must be a real number, not {self.eps!r}")
        eps = float(self.eps)
        if not (math.isfinite(eps) and eps >= 0):
            raise ValueError(f"BatchNorm eps must be finite and >= 0, not {eps!r}")
        object.__setattr__(self, "eps", eps)
        if np.any(self.var < 0):
            raise ValueError("BatchNorm var must be >= 0")
        if np.any(self.var + eps <= 0):
            raise ValueError("BatchNorm var + eps must be positive")

    @property
    def channels(self):
        return self.gamma.shape[0]

    @property
    def sigma(self):
        """``sqrt(var + eps)`` in float64: the one rounded quantity of the exact semantics."""
        return np.sqrt(self.var + self.eps)

    def apply(self, z):
        """Float batch norm, evaluated as ``gamma * (z - mean) / sigma + beta``."""
        return self.gamma * (z - self.mean) / self.sigma + self.beta

    def arrays(self):
        return {"gamma": self.gamma, "beta": self.beta, "mean": self.mean, "var": self.var}

    def params(self):
        return {"eps": self.eps}


@dataclasses.dataclass(frozen=True, eq=False)
class Sign:
    """Binary activation: +1 where the input is ``>= 0``, else -1 (``sign(0) = +1``)."""

    def arrays(self):
        return {}

    def params(self):
        return {}


@dataclasses.dataclass(frozen=True, eq=False)
class MultiThreshold:
    """k-bit unsigned activation (FINN's MultiThreshold with levels shared by all channels):
    ``count = number of j with y >= levels[j]`` (equality passes), real output
    ``count * step``.

    Parameters
    ----------
    levels : array (2^bits - 1,)
        Non-decreasing finite levels.
    step : float
        Real value of one count (positive).
    """

    levels: np.ndarray
    step: float

    def __post_init__(self):
        levels = _array(self.levels, "MultiThreshold levels", 1)
        count = levels.shape[0]
        if count < 1 or count & (count + 1) or count > (1 << _MAX_BITS) - 1:
            raise ValueError(f"MultiThreshold needs 2^k - 1 levels for k in 1..{_MAX_BITS}, "
                             f"not {count}")
        if np.any(np.diff(levels) < 0):
            raise ValueError("MultiThreshold levels must be non-decreasing")
        object.__setattr__(self, "levels", levels)
        object.__setattr__(self, "step", _positive_float(self.step, "MultiThreshold step"))

    @classmethod
    def uniform(cls, bits, high=1.0):
        """Rounding quantizer of ``[0, high]`` to ``bits`` bits: levels ``(j - 1/2) * step``,
        ``step = high / (2^bits - 1)`` (round half up, clip to the range)."""
        if not _is_int(bits) or not 1 <= bits <= _MAX_BITS:
            raise ValueError(f"MultiThreshold bits must be an integer in 1..{_MAX_BITS}, "
                             f"not {bits!r}")
        top = (1 << bits) - 1
        step = float(high) / top
        return cls(levels=(np.arange(1, top + 1) - 0.5) * step, step=step)

    @property
    def bits(self):
        return (self.levels.shape[0] + 1).bit_length() - 1

    def apply(self, y):
        """Float counts of levels passed, times ``step``."""
        return self.step * (y[..., None] >= self.levels).sum(axis=-1)

    def arrays(self):
        return {"levels": self.levels}

    def params(self):
        return {"step": self.step}


@dataclasses.dataclass(frozen=True, eq=False)
class Flatten:
    """Reshape each sample to one dimension (no arithmetic)."""

    def arrays(self):
        return {}

    def params(self):
        return {}


def im2col(x, kernel, stride=1, padding=0, pad=0):
    """Patches of ``x`` ``(n, C, H, W)``: ``(n, OH * OW, C * kh * kw)``, positions in
    row-major order, each patch's elements in the order ``(c, dy, dx)`` of a
    ``weight.reshape(N, -1)``; the border is padded with the value ``pad``."""
    x = np.asarray(x)
    kh, kw = kernel
    if padding:
        x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)),
                   constant_values=pad)
    n, c, h, w = x.shape
    oh, ow = (h - kh) // stride + 1, (w - kw) // stride + 1
    cols = np.empty((n, c, kh, kw, oh, ow), dtype=x.dtype)
    for dy in range(kh):
        for dx in range(kw):
            cols[:, :, dy, dx] = x[:, :, dy:dy + stride * oh:stride, dx:dx + stride * ow:stride]
    return cols.reshape(n, c * kh * kw, oh * ow).transpose(0, 2, 1)


def max_pool(x, size):
    """Max over non-overlapping ``size x size`` windows of ``x`` ``(n, C, H, W)`` (a
    partial window at the bottom or right edge is dropped, as in ONNX and torch)."""
    n, c, h, w = x.shape
    oh, ow = h // size, w // size
    x = x[:, :, :oh * size, :ow * size].reshape(n, c, oh, size, ow, size)
    return x.max(axis=(3, 5))


@dataclasses.dataclass(frozen=True, eq=False)
class Conv2D:
    """2-D convolution without bias over ``(C, H, W)`` samples: ``z[n, oy, ox] =
    sum_{c, dy, dx} Wq[n, c, dy, dx] * x_pad[c, stride * oy + dy, stride * ox + dx]``.

    Weights quantize as :class:`Dense`'s, per output channel, on ``weight.reshape(N, -1)``.

    Padding semantics (the model states them; the hardware must match): the border of
    ``padding`` pixels holds the real value ``pad_value``: ``0.0`` (zero padding, exact
    for unsigned k-bit inputs such as the first layer's) or ``+1.0`` / ``-1.0``. A +-1
    input cannot hold a zero, so a binarized convolution that follows a ``Sign`` pads with
    +1 or -1 on the accelerator; zero padding of +-1 data is defined here (the integer
    form computes it exactly) but the compiler refuses it.

    Parameters
    ----------
    weight : array (N, C, kh, kw)
    weight_bits : int
        1..8.
    scale : array (N,) or None
        As :class:`Dense`'s.
    stride, padding : int
        ``stride >= 1``; ``padding >= 0`` pixels on every side.
    pad_value : float
        ``0.0``, ``1.0`` or ``-1.0``.
    """

    weight: np.ndarray
    weight_bits: int = 1
    scale: np.ndarray = None
    stride: int = 1
    padding: int = 0
    pad_value: float = 0.0

    def __post_init__(self):
        weight = _array(self.weight, "Conv2D weight", 4)
        if 0 in weight.shape:
            raise ValueError(f"Conv2D weight must not be empty, not shape {weight.shape}")
        object.__setattr__(self, "weight", weight)
        bits, scale = _weight_rule("Conv2D", self.matrix, self.weight_bits, self.scale)
        object.__setattr__(self, "weight_bits", bits)
        object.__setattr__(self, "scale", scale)
        for name, low in (("stride", 1), ("padding", 0)):
            value = getattr(self, name)
            if not _is_int(value) or value < low:
                raise ValueError(f"Conv2D {name} must be an integer >= {low}, not {value!r}")
            object.__setattr__(self, name, int(value))
        if self.pad_value not in (0.0, 1.0, -1.0) or isinstance(self.pad_value, bool):
            raise ValueError(f"Conv2D pad_value must be 0.0, 1.0 or -1.0, not "
                             f"{self.pad_value!r}")
        object.__setattr__(self, "pad_value", float(self.pad_value))

    @property
    def matrix(self):
        """The latent weights as a ``(N, C * kh * kw)`` matrix (im2col order)."""
        return self.weight.reshape(self.weight.shape[0], -1)

    @property
    def out_channels(self):
        return self.weight.shape[0]

    @property
    def in_channels(self):
        return self.weight.shape[1]

    @property
    def kernel(self):
        return self.weight.shape[2], self.weight.shape[3]

    def output_shape(self, shape):
        """``(N, OH, OW)`` for an input of ``shape`` ``(C, H, W)`` (``None`` if the padded
        input is smaller than the kernel)."""
        _, h, w = shape
        (kh, kw), s, p = self.kernel, self.stride, self.padding
        if h + 2 * p < kh or w + 2 * p < kw:
            return None
        return self.out_channels, (h + 2 * p - kh) // s + 1, (w + 2 * p - kw) // s + 1

    @property
    def weight_precision(self):
        return _weight_precision(self.weight_bits)

    def integer_weight(self):
        """The integer weights ``w_int`` as a matrix (int64, ``(N, C * kh * kw)``)."""
        return _integer_weight(self.matrix, self.weight_bits, self.scale)

    def quantized_weight(self):
        """The real weights as a matrix, ``scale[:, None] * w_int`` (float64)."""
        return self.scale[:, None] * self.integer_weight()

    def forward(self, x):
        """Float convolution of ``x`` ``(n, C, H, W)`` -> ``(n, N, OH, OW)``."""
        cols = im2col(x, self.kernel, self.stride, self.padding, self.pad_value)
        _, oh, ow = self.output_shape(x.shape[1:])
        z = cols @ self.quantized_weight().T
        return z.transpose(0, 2, 1).reshape(x.shape[0], self.out_channels, oh, ow)

    def arrays(self):
        return {"weight": self.weight, "scale": self.scale}

    def params(self):
        return {"weight_bits": self.weight_bits, "stride": self.stride,
                "padding": self.padding, "pad_value": self.pad_value}


@dataclasses.dataclass(frozen=True, eq=False)
class MaxPool2D:
    """Max over non-overlapping ``size x size`` windows (stride ``size``, no padding; a
    partial window at the edge is dropped). For +-1 data the maximum is +1 iff any element
    is, an OR of the bits."""

    size: int = 2

    def __post_init__(self):
        if not _is_int(self.size) or self.size < 1:
            raise ValueError(f"MaxPool2D size must be a positive integer, not {self.size!r}")
        object.__setattr__(self, "size", int(self.size))

    def arrays(self):
        return {}

    def params(self):
        return {"size": self.size}


@dataclasses.dataclass(frozen=True, eq=False)
class OutputAffine:
    """Per-class ``score = y * scale + offset`` the host applies after the last layer."""

    scale: np.ndarray
    offset: np.ndarray

    def __post_init__(self):
        scale = _array(self.scale, "OutputAffine scale", 1)
        object.__setattr__(self, "scale", scale)
        object.__setattr__(self, "offset", _channels(
            _array(self.offset, "OutputAffine offset", 1), "OutputAffine offset",
            scale.shape[0]))


LAYER_TYPES = {cls.__name__: cls for cls in (Dense, Conv2D, BatchNorm, Sign, MultiThreshold,
                                             MaxPool2D, Flatten)}
_ACTIVATIONS = (Sign, MultiThreshold)


# Integer form ---------------------------------------------------------------------------

def _signed_width(low, high):
    """Smallest two's complement width holding every integer in ``[low, high]``."""
    bits = 1
    while not (-(1 << (bits - 1)) <= low and high <= (1 << (bits - 1)) - 1):
        bits += 1
    return bits


def _matmul_exact(x, weight):
    """``x @ weight.T`` on int64, exactly: in float64 (BLAS) when every partial sum stays
    below 2^53, else in int64."""
    bound = int(np.abs(x).max(initial=0)) * int(np.abs(weight).sum(axis=1).max(initial=0))
    if bound < _EXACT_FLOAT:
        return (x.astype(np.float64) @ weight.T.astype(np.float64)).astype(np.int64)
    return x @ weight.T


def fold_layer_thresholds(unit, gamma, beta, mean, sigma, levels, acc_bits):
    """Integer thresholds of ``count_j(bn(unit * acc) >= levels[j])`` on integer ``acc``.

    ``bn(z) = gamma * (z - mean) / sigma + beta``, all evaluated exactly on the float64
    values given; ``unit`` (> 0, per channel) is the exact real value of one accumulator
    step, given as :class:`fractions.Fraction` or float. For ``gamma > 0`` level ``l`` is
    passed iff ``acc >= ceil(tau)``, ``tau = (mean + (l - beta) * sigma / gamma) / unit``;
    for ``gamma < 0`` iff ``acc <= floor(tau)`` (``flip``); ``gamma == 0`` passes iff
    ``beta >= l``. This is :func:`lowbit.golden.lightnorm.fold_thresholds` with the
    accumulator's scale ``unit`` (equal to it when ``unit == 1``), including its clamping
    to ``[amin, amax + 1]`` (``[amin - 1, amax]`` flipped) for ``acc_bits``-bit ``acc``.

    Returns ``(t, flip)``: int64 ``(C, len(levels))`` and bool ``(C,)``.
    """
    gamma, beta, mean, sigma = (np.atleast_1d(np.asarray(v, dtype=np.float64))
                                for v in (gamma, beta, mean, sigma))
    channels = gamma.shape[0]
    units = list(unit) if np.ndim(unit) else [unit] * channels
    amin, amax = -(1 << (acc_bits - 1)), (1 << (acc_bits - 1)) - 1
    exact_levels = [_exact(level) for level in levels]
    t = np.zeros((channels, len(exact_levels)), dtype=np.int64)
    for c in range(channels):
        g, b, m, s = (_exact(v[c]) for v in (gamma, beta, mean, sigma))
        u = Fraction(units[c])
        for j, level in enumerate(exact_levels):
            if g == 0:
                t[c, j] = amin if b >= level else amax + 1
                continue
            tau = (m + (level - b) * s / g) / u
            if g > 0:
                t[c, j] = min(max(math.ceil(tau), amin), amax + 1)
            else:
                t[c, j] = min(max(math.floor(tau), amin - 1), amax)
    return t, gamma < 0


@dataclasses.dataclass(frozen=True)
class ConvShape:
    """Geometry of an integer convolution layer: input ``in_shape`` ``(C, H, W)``,
    ``kernel`` ``(kh, kw)``, ``stride``, ``padding`` pixels holding the integer ``pad``, and
    the ``pool`` window of a following :class:`MaxPool2D` (``None``: no pooling)."""

    in_shape: tuple
    kernel: tuple
    stride: int
    padding: int
    pad: int
    pool: int = None

    @property
    def conv_shape(self):
        """``(OH, OW)`` before pooling."""
        _, h, w = self.in_shape
        (kh, kw), s, p = self.kernel, self.stride, self.padding
        return (h + 2 * p - kh) // s + 1, (w + 2 * p - kw) // s + 1

    @property
    def positions(self):
        """Output positions per sample before pooling (rows of the im2col matrix)."""
        return math.prod(self.conv_shape)

    def pooled_shape(self):
        """``(OH', OW')`` after pooling."""
        oh, ow = self.conv_shape
        return (oh // self.pool, ow // self.pool) if self.pool else (oh, ow)

    def patches(self, x):
        """im2col rows of flat ``(n, C * H * W)`` inputs: ``(n * positions, C * kh * kw)``."""
        x = np.asarray(x).reshape(-1, *self.in_shape)
        cols = im2col(x, self.kernel, self.stride, self.padding, self.pad)
        return cols.reshape(-1, cols.shape[2])


@dataclasses.dataclass(frozen=True, eq=False)
class IntegerLayer:
    """One compute layer as an integer accelerator runs it.

    ``acc = x @ weight.T`` on integers (``x`` in ``input_precision``; binary values are
    +-1). A hidden layer then outputs, per channel ``n``, the number of thresholds passed:
    ``count = sum_j (acc >= thresholds[n, j])``, or ``acc <= thresholds[n, j]`` where
    ``flip[n]``; with one threshold (``output_precision`` binary) the output is
    ``2 * count - 1`` (+-1), else ``count`` (unsigned k-bit). The last layer outputs
    ``acc`` itself; the host turns it into float class scores ``acc * scale + offset``.

    Attributes
    ----------
    weight : int64 (N, K)
    weight_precision, input_precision : Precision
    input_step : float
        Real value of one input integer step (1 for binary inputs): informational.
    acc_bits : int
        Signed width that holds every possible ``acc``; thresholds lie in
        ``[-2^(acc_bits-1) - 1, 2^(acc_bits-1)]`` (``acc_bits + 1`` signed bits).
    first, last : bool
        First layer (its inputs come from the input quantizer, ``uint{bits}``) and last
        layer (raw integer scores): the layers kept at higher precision.
    thresholds : int64 (N, T) or None, flip : bool (N,) or None
        Hidden layers only; each row is sorted (ascending, descending where flipped).
    output_precision : Precision or None
        ``binary`` or ``uint{k}``; ``None`` for the last layer.
    scale, offset : float64 (N,) or None
        Last layer only: the host affine (correctly rounded from the exact values).
    conv : ConvShape or None
        A convolution: ``weight`` is ``(N, C * kh * kw)`` in im2col order, ``acc`` has one
        row per sample and output position, and the activations are max-pooled by
        ``conv.pool``; inputs and outputs are flat ``(C, H, W)`` samples.
    """

    weight: np.ndarray
    weight_precision: Precision
    input_precision: Precision
    input_step: float
    acc_bits: int
    first: bool
    last: bool
    thresholds: np.ndarray = None
    flip: np.ndarray = None
    output_precision: Precision = None
    scale: np.ndarray = None
    offset: np.ndarray = None
    conv: ConvShape = None

    @property
    def role(self):
        """``"first"``, ``"hidden"`` or ``"last"`` (a one-layer model is ``"last"``)."""
        return "last" if self.last else ("first" if self.first else "hidden")

    @property
    def higher_precision(self):
        """True for the layers kept at higher precision: the first (k-bit inputs) and the
        last (raw integer scores for the host)."""
        return self.first or self.last

    def accumulate(self, x):
        """``x @ weight.T`` exactly (int64), after checking ``x`` against the precision."""
        x = np.asarray(x)
        features = (self.weight.shape[1] if self.conv is None
                    else math.prod(self.conv.in_shape))
        if x.ndim != 2 or x.shape[1] != features:
            raise ValueError(f"layer inputs must have shape (n, {features}), not {x.shape}")
        self.input_precision.check(x, "layer inputs")
        if self.conv is not None:
            x = self.conv.patches(x)
        return _matmul_exact(x.astype(np.int64), self.weight)

    def activate(self, acc):
        """Threshold counts of a hidden layer's accumulators (int64)."""
        acc = np.asarray(acc, dtype=np.int64)
        count = np.empty(acc.shape, dtype=np.int64)
        for n, row in enumerate(np.sort(self.thresholds, axis=1)):
            # count_j(acc >= t_j) or count_j(acc <= t_j), by binary search in the sorted row
            if self.flip[n]:
                count[:, n] = row.size - np.searchsorted(row, acc[:, n], side="left")
            else:
                count[:, n] = np.searchsorted(row, acc[:, n], side="right")
        if self.output_precision.kind == "binary":
            return 2 * count - 1
        return count

    def forward(self, x):
        """The layer's outputs: flat samples (``(n, N * OH' * OW')`` in ``(C, H, W)`` order
        for a convolution, pooled), or the last layer's ``acc``."""
        acc = self.accumulate(x)
        if self.last:
            return acc
        out = self.activate(acc)
        if self.conv is None:
            return out
        oh, ow = self.conv.conv_shape
        out = out.reshape(-1, oh, ow, out.shape[1]).transpose(0, 3, 1, 2)
        if self.conv.pool:
            out = max_pool(out, self.conv.pool)
        return out.reshape(out.shape[0], -1)

    def host_scores(self, acc):
        """Float class scores ``acc * scale + offset`` (float64), last layer only."""
        return np.asarray(acc, dtype=np.int64).astype(np.float64) * self.scale + self.offset


@dataclasses.dataclass(frozen=True, eq=False)
class IntegerForm:
    """A :class:`QuantModel` as integer layers (:meth:`QuantModel.integer_form`)."""

    input_quantizer: InputQuantizer
    input_shape: tuple
    layers: tuple

    def forward(self, x_int, trace=False):
        """The last layer's integer scores (int64, ``(n, classes)``) of quantized inputs
        ``x_int`` (``(n, *input_shape)`` integers in ``uint{bits}``); with ``trace`` a list
        of every layer's output."""
        x = np.asarray(x_int)
        if x.shape[1:] != tuple(self.input_shape) or x.ndim < 2:
            raise ValueError(f"inputs must have shape (n, {', '.join(map(str, self.input_shape))}"
                             f"), not {x.shape}")
        self.input_quantizer.precision.check(x, "inputs")
        h = x.reshape(x.shape[0], -1).astype(np.int64)
        outputs = []
        for layer in self.layers:
            h = layer.forward(h)
            outputs.append(h)
        return outputs if trace else h

    def scores(self, x_int):
        """Host class scores (float64) of quantized inputs."""
        return self.layers[-1].host_scores(self.forward(x_int))

    def predict(self, x):
        """Predicted classes of model-domain inputs ``x`` (quantize, integers, host argmax)."""
        return np.argmax(self.scores(self.input_quantizer.quantize(x)), axis=1)


# The model ------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True, eq=False)
class QuantModel:
    """A quantized network in lowbit's intermediate form (format :data:`VERSION`).

    Layer grammar (checked on construction): ``[Flatten] block* last``, where a hidden
    ``block`` is ``Dense [BatchNorm] (Sign | MultiThreshold)`` and ``last`` is
    ``Dense [BatchNorm]``; the host then applies ``output`` (if any) and takes the argmax.
    A ``Flatten`` is required before the first ``Dense`` when ``input_shape`` has more
    than one dimension.

    Parameters
    ----------
    name, dataset : str
    input_quantizer : InputQuantizer
    input_shape : tuple of int
        Shape of one sample in the model's input domain, e.g. ``(64,)``.
    layers : sequence of layers
    output : OutputAffine or None
    metadata : dict or None
        JSON-serialisable free data (training report, provenance).
    version : int
        Must be :data:`VERSION`.

    Raises
    ------
    TypeError, ValueError
        With a message naming the layer (by index and type) that breaks the grammar.
    """

    name: str
    dataset: str
    input_quantizer: InputQuantizer
    input_shape: tuple
    layers: tuple
    output: OutputAffine = None
    metadata: dict = None
    version: int = VERSION

    def __post_init__(self):
        if self.version != VERSION or not _is_int(self.version):
            raise ValueError(f"model version must be {VERSION}, not {self.version!r}")
        for field in ("name", "dataset"):
            if not isinstance(getattr(self, field), str):
                raise TypeError(f"model {field} must be a string, not "
                                f"{getattr(self, field)!r}")
        if not isinstance(self.input_quantizer, InputQuantizer):
            raise TypeError(f"input_quantizer must be an InputQuantizer, not "
                            f"{self.input_quantizer!r}")
        shape = self.input_shape
        if (not isinstance(shape, (tuple, list)) or not shape
                or not all(_is_int(d) and d > 0 for d in shape)):
            raise ValueError(f"input_shape must be a non-empty tuple of positive integers, "
                             f"not {shape!r}")
        object.__setattr__(self, "input_shape", tuple(int(d) for d in shape))
        if isinstance(self.layers, (str, bytes)) or not hasattr(self.layers, "__iter__"):
            raise TypeError(f"layers must be a sequence of layers, not {self.layers!r}")
        object.__setattr__(self, "layers", tuple(self.layers))
        if self.output is not None and not isinstance(self.output, OutputAffine):
            raise TypeError(f"output must be an OutputAffine or None, not {self.output!r}")
        metadata = {} if self.metadata is None else self.metadata
        if not isinstance(metadata, dict):
            raise TypeError(f"metadata must be a dict, not {type(metadata).__name__}")
        try:
            metadata = json.loads(json.dumps(metadata, allow_nan=False))
        except (TypeError, ValueError) as error:
            raise ValueError(f"metadata must be JSON-serialisable: {error}") from None
        object.__setattr__(self, "metadata", metadata)
        self._check_grammar()

    def _check_grammar(self):
        layers = self.layers
        if not layers:
            raise ValueError("a model needs at least one layer")
        for i, layer in enumerate(layers):
            if not isinstance(layer, tuple(LAYER_TYPES.values())):
                raise TypeError(f"layer {i} must be one of {', '.join(LAYER_TYPES)}, not "
                                f"{layer!r}")

        def where(i):
            return f"layer {i} ({type(layers[i]).__name__})"

        shape = self.input_shape
        i = 0
        if isinstance(layers[0], Flatten):
            shape = (math.prod(shape),)
            i = 1
        elif len(shape) > 1 and not isinstance(layers[0], Conv2D):
            raise ValueError(f"{where(0)}: input_shape {self.input_shape} needs a Flatten "
                             f"before the first Dense")
        blocks = []
        while True:
            if i >= len(layers):
                raise ValueError("the model must end with a Dense [BatchNorm] output layer")
            if (isinstance(layers[i], Flatten) and blocks and len(shape) == 3
                    and not isinstance(layers[i - 1], Flatten)):
                shape = (math.prod(shape),)
                i += 1
                continue
            if isinstance(layers[i], Conv2D):
                conv = layers[i]
                if len(shape) != 3:
                    raise ValueError(f"{where(i)} needs (C, H, W) samples, it receives "
                                     f"{shape}")
                if conv.in_channels != shape[0]:
                    raise ValueError(f"{where(i)} has {conv.in_channels} input channels but "
                                     f"receives {shape[0]}")
                out = conv.output_shape(shape)
                if out is None:
                    raise ValueError(f"{where(i)}: its {conv.kernel[0]}x{conv.kernel[1]} "
                                     f"kernel is larger than its padded {shape} input")
                block = {"dense": i, "bn": None, "act": None, "pool": None,
                         "in_shape": shape}
                shape, features = out, out[0]
            elif isinstance(layers[i], Dense):
                dense = layers[i]
                if len(shape) != 1:
                    raise ValueError(f"{where(i)} receives {shape} samples: it needs a "
                                     f"Flatten before it")
                if dense.in_features != shape[0]:
                    raise ValueError(f"{where(i)} has {dense.in_features} inputs but "
                                     f"receives {shape[0]} features")
                block = {"dense": i, "bn": None, "act": None, "pool": None,
                         "in_shape": shape}
                features = dense.out_features
                shape = (features,)
            else:
                raise ValueError(f"{where(i)}: expected a Dense layer here")
            i += 1
            if i < len(layers) and isinstance(layers[i], BatchNorm):
                if layers[i].channels != features:
                    raise ValueError(f"{where(i)} has {layers[i].channels} channels but "
                                     f"follows a {type(layers[i - 1]).__name__} with "
                                     f"{features} outputs")
                block["bn"] = i
                i += 1
            if i == len(layers):
                if len(shape) != 1:
                    raise ValueError(f"{where(block['dense'])}: the last layer must be a "
                                     f"Dense (raw class scores), not a Conv2D")
                blocks.append(block)
                break
            if not isinstance(layers[i], _ACTIVATIONS):
                raise ValueError(f"{where(i)}: expected Sign or MultiThreshold after "
                                 f"{where(i - 1)} (a hidden layer must produce integers)")
            block["act"] = i
            i += 1
            if i < len(layers) and isinstance(layers[i], MaxPool2D):
                if len(shape) != 3:
                    raise ValueError(f"{where(i)} needs (C, H, W) data, not {shape}")
                size = layers[i].size
                if shape[1] < size or shape[2] < size:
                    raise ValueError(f"{where(i)}: window {size} is larger than its "
                                     f"{shape} input")
                shape = (shape[0], shape[1] // size, shape[2] // size)
                block["pool"] = i
                i += 1
            blocks.append(block)
            if i == len(layers):
                raise ValueError(f"{where(i - 1)}: the last layer must be Dense [BatchNorm] "
                                 f"(raw scores), not end in an activation")
        if self.output is not None and self.output.scale.shape[0] != features:
            raise ValueError(f"output has {self.output.scale.shape[0]} classes but the last "
                             f"Dense has {features} outputs")
        object.__setattr__(self, "_blocks", tuple(blocks))

    @property
    def classes(self):
        """Number of class scores the model produces."""
        return self.layers[self._blocks[-1]["dense"]].out_features

    # Semantics --------------------------------------------------------------------------

    def _check_samples(self, x):
        x = np.asarray(x)
        if x.ndim == 2 and len(self.input_shape) > 1 and x.shape[1] == math.prod(
                self.input_shape):
            # flat rows (as a data set stores them) for (C, H, W) samples
            x = x.reshape(x.shape[0], *self.input_shape)
        if x.ndim < 2 or x.shape[1:] != self.input_shape:
            raise ValueError(f"inputs must have shape (n, {', '.join(map(str, self.input_shape))}"
                             f"), not {x.shape}")
        return x

    def quantize_input(self, x):
        """Model-domain inputs to the integers the accelerator receives (int64)."""
        return self.input_quantizer.quantize(self._check_samples(x))

    def float_forward(self, x, trace=False):
        """Class scores (float64, ``(n, classes)``) of model-domain inputs ``x``, computed
        independently of the integer form: quantized input values ``x_int * step``, real
        quantized weights, float batch norm, float sign / MultiThreshold, the output
        affine. With ``trace``, a list of every layer's output (then the scores)."""
        h = self.input_quantizer.dequantize(self.quantize_input(x))
        outputs = []
        for layer in self.layers:
            if isinstance(layer, Flatten):
                h = h.reshape(h.shape[0], -1)
            elif isinstance(layer, Dense):
                h = h @ layer.quantized_weight().T
            elif isinstance(layer, Conv2D):
                h = layer.forward(h)
            elif isinstance(layer, MaxPool2D):
                h = max_pool(h, layer.size)
            elif isinstance(layer, BatchNorm):
                # per channel: the last axis of (n, N) data, axis 1 of (n, N, H, W) data
                h = np.moveaxis(layer.apply(np.moveaxis(h, 1, -1)), -1, 1)
            elif isinstance(layer, Sign):
                h = np.where(h >= 0, 1.0, -1.0)
            else:
                h = layer.apply(h)
            outputs.append(h)
        if self.output is not None:
            h = h * self.output.scale + self.output.offset
            outputs.append(h)
        return outputs if trace else h

    @functools.cached_property
    def _integer_form(self):
        layers = []
        precision, step = self.input_quantizer.precision, Fraction(self.input_quantizer.step)
        for index, block in enumerate(self._blocks):
            dense = self.layers[block["dense"]]
            weight = dense.integer_weight()
            weight.setflags(write=False)
            low, high = precision.range
            conv = None
            if isinstance(dense, Conv2D):
                pad = 0
                if dense.padding and dense.pad_value != 0:
                    if precision.kind != "binary":
                        raise ValueError(
                            f"layer {block['dense']} (Conv2D): pad_value {dense.pad_value} "
                            f"is not a value of its {precision} inputs; pad them with 0.0")
                    pad = int(dense.pad_value)
                pool = self.layers[block["pool"]].size if block["pool"] is not None else None
                conv = ConvShape(block["in_shape"], dense.kernel, dense.stride, dense.padding,
                                 pad, pool)
                if dense.padding:
                    low, high = min(low, pad), max(high, pad)
            row_high = np.maximum(weight * low, weight * high).sum(axis=1)
            row_low = np.minimum(weight * low, weight * high).sum(axis=1)
            acc_bits = _signed_width(int(row_low.min()), int(row_high.max()))
            units = [step * _exact(s) for s in dense.scale]
            bn = self.layers[block["bn"]] if block["bn"] is not None else None
            common = dict(weight=weight, weight_precision=dense.weight_precision,
                          input_precision=precision, input_step=float(step),
                          acc_bits=acc_bits, first=index == 0,
                          last=index == len(self._blocks) - 1, conv=conv)
            if block["act"] is None:
                layers.append(IntegerLayer(**common, **self._host_affine(units, bn)))
                break
            act = self.layers[block["act"]]
            levels = [0.0] if isinstance(act, Sign) else act.levels
            if bn is None:
                ones = np.ones(weight.shape[0])
                params = (ones, np.zeros_like(ones), np.zeros_like(ones), ones)
            else:
                params = (bn.gamma, bn.beta, bn.mean, bn.sigma)
            t, flip = fold_layer_thresholds(units, *params, levels, acc_bits)
            t.setflags(write=False)
            flip.setflags(write=False)
            if isinstance(act, Sign):
                precision, step = Precision("binary", 1), Fraction(1)
            else:
                precision, step = Precision("unsigned", act.bits), _exact(act.step)
            layers.append(IntegerLayer(**common, thresholds=t, flip=flip,
                                       output_precision=precision))
        return IntegerForm(self.input_quantizer, self.input_shape, tuple(layers))

    def _host_affine(self, units, bn):
        scale, offset = [], []
        for c, unit in enumerate(units):
            if bn is None:
                a, b = unit, Fraction(0)
            else:
                g, s = _exact(bn.gamma[c]), _exact(bn.sigma[c])
                a, b = g * unit / s, _exact(bn.beta[c]) - g * _exact(bn.mean[c]) / s
            if self.output is not None:
                a, b = (a * _exact(self.output.scale[c]),
                        b * _exact(self.output.scale[c]) + _exact(self.output.offset[c]))
            scale.append(float(a))
            offset.append(float(b))
        scale, offset = np.array(scale), np.array(offset)
        scale.setflags(write=False)
        offset.setflags(write=False)
        return {"scale": scale, "offset": offset}

    def integer_form(self):
        """The :class:`IntegerForm` an integer accelerator computes (computed once).

        Hidden layers fold the weight scales, the input or activation step and the batch
        norm into integer thresholds (exact, :func:`fold_layer_thresholds`); the last
        layer folds them, with :attr:`output`, into the host's per-class scale and offset
        (exact values rounded once to float64).
        """
        return self._integer_form

    def integer_forward(self, x_int, trace=False):
        """Integer scores (int64) of quantized inputs: :meth:`IntegerForm.forward`."""
        return self.integer_form().forward(x_int, trace=trace)

    def integer_scores(self, x):
        """Host class scores (float64) of model-domain inputs via the integer form."""
        return self.integer_form().scores(self.quantize_input(x))

    def predict(self, x, backend="integer"):
        """Predicted classes of model-domain inputs: ``backend`` ``"integer"`` (the
        accelerator's semantics) or ``"float"`` (:meth:`float_forward`)."""
        if backend == "integer":
            return np.argmax(self.integer_scores(x), axis=1)
        if backend == "float":
            return np.argmax(self.float_forward(x), axis=1)
        raise ValueError(f"backend must be 'integer' or 'float', not {backend!r}")

    # File format ------------------------------------------------------------------------

    def _state(self):
        """``(header, arrays)``: the JSON header and the named arrays of the file."""
        arrays, entries = {}, []
        for i, layer in enumerate(self.layers):
            names = {}
            for key, value in layer.arrays().items():
                names[key] = f"layers/{i}/{key}"
                arrays[names[key]] = value
            entries.append({"type": type(layer).__name__, **layer.params(), "arrays": names})
        output = None
        if self.output is not None:
            arrays["output/scale"], arrays["output/offset"] = (self.output.scale,
                                                               self.output.offset)
            output = {"arrays": {"scale": "output/scale", "offset": "output/offset"}}
        header = {"format": FORMAT, "version": self.version, "name": self.name,
                  "dataset": self.dataset, "input": self.input_quantizer.to_json(),
                  "input_shape": list(self.input_shape), "layers": entries,
                  "output": output, "metadata": self.metadata}
        return header, arrays

    def save(self, path):
        """Write the model to ``path`` (an ``.npz`` archive; see ``docs/model.md``)."""
        header, arrays = self._state()
        blob = np.frombuffer(json.dumps(header, indent=1).encode("utf-8"), dtype=np.uint8)
        with open(path, "wb") as file:
            np.savez(file, header=blob, **arrays)

    @classmethod
    def load(cls, path):
        """Read a model file written by :meth:`save`.

        Raises
        ------
        ModelFileError
            If the file is not a lowbit model archive or has another format version.
        TypeError, ValueError
            If its contents break the model's rules (message prefixed with the path).
        """
        try:
            archive = np.load(path, allow_pickle=False)
        except (OSError, ValueError, zipfile.BadZipFile) as error:
            if isinstance(error, FileNotFoundError):
                raise
            raise ModelFileError(f"{path}: not a lowbit model file (expected an .npz archive "
                                 f"with a JSON header)") from None
        with archive:
            if not isinstance(archive, np.lib.npyio.NpzFile) or "header" not in archive:
                raise ModelFileError(f"{path}: not a lowbit model file (expected an .npz "
                                     f"archive with a JSON header)")
            try:
                header = json.loads(archive["header"].tobytes().decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as error:
                raise ModelFileError(f"{path}: unreadable model header: {error}") from None
            found = header.get("format") if isinstance(header, dict) else None
            if found != FORMAT:
                raise ModelFileError(f"{path}: not a lowbit model file (header format is "
                                     f"{found!r}, expected {FORMAT!r})")
            version = header.get("version")
            if version != VERSION:
                raise ModelFileError(f"{path}: model format version {version!r} is not "
                                     f"supported; this lowbit reads version {VERSION} only")
            try:
                return cls._from_state(header, archive)
            except KeyError as error:
                raise ModelFileError(f"{path}: model file lacks {error}") from None
            except (TypeError, ValueError) as error:
                raise type(error)(f"{path}: {error}") from None

    @classmethod
    def _from_state(cls, header, archive):
        layers = []
        for i, entry in enumerate(header["layers"]):
            kind = entry.get("type")
            if kind not in LAYER_TYPES:
                raise ValueError(f"layer {i} has unknown type {kind!r} (known: "
                                 f"{', '.join(LAYER_TYPES)})")
            params = {k: v for k, v in entry.items() if k not in ("type", "arrays")}
            params.update({k: archive[v] for k, v in entry.get("arrays", {}).items()})
            layers.append(LAYER_TYPES[kind](**params))
        output = None
        if header.get("output") is not None:
            names = header["output"]["arrays"]
            output = OutputAffine(scale=archive[names["scale"]],
                                  offset=archive[names["offset"]])
        return cls(name=header["name"], dataset=header["dataset"],
                   input_quantizer=InputQuantizer(**header["input"]),
                   input_shape=tuple(header["input_shape"]), layers=layers, output=output,
                   metadata=header.get("metadata"), version=header["version"])

    def summary(self):
        """One line per layer (type, shape, precision) for humans."""
        lines = [f"{self.name} ({self.dataset}), input {self.input_shape} as "
                 f"{self.input_quantizer.precision} x {self.input_quantizer.step:g}"]
        for i, layer in enumerate(self.layers):
            if isinstance(layer, Dense):
                text = (f"Dense {layer.in_features} -> {layer.out_features}, weights "
                        f"{layer.weight_precision}")
            elif isinstance(layer, Conv2D):
                text = (f"Conv2D {layer.in_channels} -> {layer.out_channels}, "
                        f"{layer.kernel[0]}x{layer.kernel[1]} stride {layer.stride} padding "
                        f"{layer.padding} (pad {layer.pad_value:g}), weights "
                        f"{layer.weight_precision}")
            elif isinstance(layer, MaxPool2D):
                text = f"MaxPool2D {layer.size}x{layer.size}"
            elif isinstance(layer, MultiThreshold):
                text = f"MultiThreshold uint{layer.bits}"
            else:
                text = type(layer).__name__
            lines.append(f"  {i}: {text}")
        return "\n".join(lines)
