"""Golden model of one on-device training step of a binarized MLP, in the accelerator's
integer and low-bit formats, bit-exact and deterministic (``docs/training.md``).

The network is ``sizes[0] - ... - sizes[-1]`` (64-128-128-10 on digits by default): +-1
weights (the signs of latent weights held in LNS), unsigned ``input_bits``-bit inputs, +-1
hidden activations, a LightNorm range batch norm after every layer (statistics of the
batch, training mode), the last norm's BFP output as the logits.

One step (:meth:`TrainingStep.step`):

1. **Forward.** ``z = X W^T`` by XNOR/AND-popcount over bit planes (exact integers,
   :func:`popcount_matmul`, the arithmetic of :mod:`lowbit.golden.xnor_array`);
   LightNorm statistics of ``z`` over the batch, folded into a BFP scale and offset,
   ``y = scale * z + offset`` in BFP (:mod:`lowbit.golden.lightnorm`); hidden layers keep
   two bits per activation for the backward pass: ``a = (y >= 0)`` and the straight-through
   mask ``|y| <= 1``.
2. **Loss gradient** of softmax cross-entropy, in integers, from the BFP logits
   (:func:`softmax_gradient`): exponentials through the LNS table ``2^(r / gamma)``.
3. **Backward.** Per layer, from the top: through the norm (``dz = scale * dy``, the batch
   statistics treated as constants), ``dW = dZ^T X`` and ``dX = dZ W`` by popcount over bit
   planes, every gradient requantised to ``grad_bits[l]``-bit signed mantissas with one
   power-of-two exponent per tensor (:func:`quantize_gradient`); ``dX`` is masked by the
   straight-through mask of the layer below before it is requantised.
4. **Update.** LNS-Madam's multiplicative rule on the latent weights' log codes
   (:func:`madam_update`); a weight that would cross zero flips sign at the smallest
   magnitude. The binary weights are the latent weights' signs.

Every quantity is an integer (or a BFP/LNS integer pair); the only floating-point operations
are those the LightNorm golden model already pins for folding the statistics (IEEE-754
divisions and one ``log`` of the constant ``n / K``), so a step is reproducible bit for bit.
"""

import dataclasses
import math
from typing import NamedTuple

import numpy as np

from ..config.base import ConfigMixin, check_enum, check_int
from ..config.lightnorm import LightNormConfig, Rounding
from ..config.lns import lns_lut
from . import lns
from .bfp import BFP, BFPFormat, dequantize, round_shift
from .lightnorm import LightNorm
from .xnor_array import Precision, bit_planes

__all__ = ["TrainingConfig", "Gradient", "ForwardRecord", "StepResult", "TrainingStep",
           "popcount_matmul", "quantize_gradient", "softmax_gradient", "norm_backward",
           "madam_update", "host_update", "binary_weights", "init_weights", "SOFTMAX_GAMMA",
           "SOFTMAX_FRAC", "PROB_FRAC", "LOG2E_Q", "NORM_GUARD_BITS"]

#: Softmax exponentials are ``2^(u / SOFTMAX_GAMMA)`` for integer ``u``: the LNS table of
#: that base (``lns_lut(SOFTMAX_GAMMA, SOFTMAX_FRAC)``, ``SOFTMAX_FRAC`` fractional bits).
SOFTMAX_GAMMA = 8
SOFTMAX_FRAC = 16
#: ``round(log2(e) * 2^16)``: turns a logit difference into a base-2 exponent.
LOG2E_Q = 94548
LOG2E_FRAC = 16
#: Fractional bits of ``p - onehot`` before it is quantised to ``grad_bits`` (the division
#: ``e_i / sum_j e_j`` is rounded once, to this grid).
PROB_FRAC = 16
#: Bits kept below the largest block exponent when the norm backward aligns its per-block
#: products to one exponent per tensor (far below any ``grad_bits``-bit mantissa).
NORM_GUARD_BITS = 24
#: Statistics batches may be this large (evaluation folds whole training sets).
MAX_STAT_BATCH = 1 << 16


def _check_tuple(owner, name, value):
    if isinstance(value, list):
        value = tuple(value)
    if not isinstance(value, tuple):
        raise TypeError(f"{owner} {name} must be a tuple of integers, not {value!r}")
    return value


@dataclasses.dataclass(frozen=True)
class TrainingConfig(ConfigMixin):
    """Formats and hyper-parameters of one training step.

    Parameters
    ----------
    sizes : tuple of int
        Layer widths, inputs first (at least 2 entries, each 1..1024). Hidden widths are
        multiples of ``norm_block``; the output layer (at most 64 wide) is one BFP block.
    input_bits : int
        Width of the unsigned integer inputs (1..8).
    grad_bits : tuple of int
        Per layer (``len(sizes) - 1`` entries), the signed mantissa width of every gradient
        that layer's backward pass produces: ``dZ``, ``dW`` and the ``dX`` it passes down
        (4..8; the output gradient uses the last entry).
    weight_bits : int
        LNS word of a latent weight, sign included (4..16).
    weight_gamma : int
        LNS base ``2^(1 / weight_gamma)``: a power of two, at most ``2^(weight_bits - 2)``.
    lr_exponent : int
        A weight whose gradient is the largest of its tensor moves ``2^lr_exponent`` codes
        (``2^lr_exponent / weight_gamma`` octaves); 0..``weight_bits - 2``.
    batch : int
        Samples per step (at least ``2 * norm_chunks``, at most 4096).
    norm_block, norm_mantissa, norm_exponent, norm_chunks, norm_rounding
        The LightNorm BFP format (block of hidden channels, mantissa and exponent bits,
        rounding) and its number of range chunks ``K``.
    logit_gamma_exp : int
        The last norm's ``gamma = 2^logit_gamma_exp`` (-4..4): the softmax temperature.
        Every other norm has ``gamma = 1``, ``beta = 0``.
    seed : int
        Seed of the initial latent weights (0..2^32 - 1).

    Raises
    ------
    TypeError, ValueError
        With an exact message naming the parameter.
    """

    sizes: tuple = (64, 128, 128, 10)
    input_bits: int = 5
    grad_bits: tuple = (8, 8, 8)
    weight_bits: int = 8
    weight_gamma: int = 8
    lr_exponent: int = 3
    batch: int = 32
    norm_block: int = 16
    norm_mantissa: int = 8
    norm_exponent: int = 6
    norm_chunks: int = 8
    norm_rounding: str = "nearest-even"
    logit_gamma_exp: int = 2
    seed: int = 0

    def __post_init__(self):
        owner = "TrainingConfig"
        sizes = _check_tuple(owner, "sizes", self.sizes)
        if len(sizes) < 2:
            raise ValueError(f"{owner} sizes needs at least 2 layer widths, not {len(sizes)}")
        for i, width in enumerate(sizes):
            check_int(owner, f"sizes[{i}]", width, minimum=1, maximum=1024)
        object.__setattr__(self, "sizes", sizes)
        check_int(owner, "input_bits", self.input_bits, minimum=1, maximum=8)
        grad_bits = _check_tuple(owner, "grad_bits", self.grad_bits)
        if len(grad_bits) != len(sizes) - 1:
            raise ValueError(f"{owner} grad_bits needs one width per layer "
                             f"({len(sizes) - 1}), not {len(grad_bits)}")
        for i, bits in enumerate(grad_bits):
            check_int(owner, f"grad_bits[{i}]", bits, minimum=4, maximum=8)
        object.__setattr__(self, "grad_bits", grad_bits)
        check_int(owner, "weight_bits", self.weight_bits, minimum=4, maximum=16)
        check_int(owner, "weight_gamma", self.weight_gamma, minimum=1,
                  maximum=1 << (self.weight_bits - 2))
        if self.weight_gamma & (self.weight_gamma - 1):
            raise ValueError(f"{owner} weight_gamma must be a power of two, not "
                             f"{self.weight_gamma}")
        check_int(owner, "lr_exponent", self.lr_exponent, minimum=0,
                  maximum=self.weight_bits - 2)
        check_int(owner, "norm_block", self.norm_block, minimum=1, maximum=64)
        check_int(owner, "norm_mantissa", self.norm_mantissa, minimum=2, maximum=16)
        check_int(owner, "norm_exponent", self.norm_exponent, minimum=2, maximum=8)
        check_int(owner, "norm_chunks", self.norm_chunks, minimum=1, maximum=64)
        object.__setattr__(self, "norm_rounding", check_enum(
            owner, "norm_rounding", self.norm_rounding, Rounding).value)
        check_int(owner, "batch", self.batch, minimum=1, maximum=4096)
        if self.batch < 2 * self.norm_chunks:
            raise ValueError(f"{owner} batch {self.batch} needs at least 2 samples per "
                             f"chunk: 2 * norm_chunks = {2 * self.norm_chunks}")
        for width in sizes[1:-1]:
            if width % self.norm_block:
                raise ValueError(f"{owner} hidden width {width} must be a multiple of "
                                 f"norm_block {self.norm_block}")
        if sizes[-1] > 64:
            raise ValueError(f"{owner} output width {sizes[-1]} must be at most 64 "
                             f"(one BFP block)")
        check_int(owner, "logit_gamma_exp", self.logit_gamma_exp, minimum=-4, maximum=4)
        check_int(owner, "seed", self.seed, minimum=0, maximum=(1 << 32) - 1)

    @property
    def layers(self):
        return len(self.sizes) - 1

    @property
    def shapes(self):
        """``(out, in)`` of each layer's weights."""
        return [(n, k) for k, n in zip(self.sizes[:-1], self.sizes[1:])]

    def input_precision(self, layer):
        """The operand format of layer ``layer``'s inputs: k-bit unsigned, then binary."""
        return Precision("unsigned", self.input_bits) if layer == 0 else Precision("binary")

    def norm_config(self, layer):
        """The :class:`LightNormConfig` of layer ``layer``'s norm (BFP output)."""
        fan_in, width = self.sizes[layer], self.sizes[layer + 1]
        peak = fan_in * ((1 << self.input_bits) - 1 if layer == 0 else 1)
        return LightNormConfig(
            channels=width, block=self.norm_block if layer < self.layers - 1 else width,
            mantissa=self.norm_mantissa, exponent=self.norm_exponent,
            rounding=self.norm_rounding, input_width=peak.bit_length() + 1,
            chunks=self.norm_chunks, max_batch=MAX_STAT_BATCH, output="bfp")

    def norm_gamma(self, layer):
        return 2.0 ** self.logit_gamma_exp if layer == self.layers - 1 else 1.0


# Formats ----------------------------------------------------------------------------------

class Gradient(NamedTuple):
    """A gradient tensor: signed integer mantissas ``man`` and one exponent ``exp`` for the
    whole tensor; the value of an element is ``man * 2^exp``. After
    :func:`quantize_gradient` with ``bits`` = k, ``|man| <= 2^(k-1) - 1`` (symmetric, so a
    negation never overflows)."""

    man: np.ndarray
    exp: int

    def value(self):
        """The real values (float64, exact for mantissas below 2^53)."""
        return np.ldexp(self.man.astype(np.float64), self.exp)


def quantize_gradient(values, exp, bits):
    """Requantise integers ``values * 2^exp`` to a :class:`Gradient` of ``bits``-bit
    mantissas.

    The exponent grows by ``shift = max(0, L - (bits - 1))``, ``L`` the bit length of the
    largest magnitude (leading-one detection), so the largest value fits ``bits - 1``
    magnitude bits; mantissas are ``values / 2^shift`` rounded to nearest, ties to even,
    and saturated to ``+-(2^(bits-1) - 1)`` (a largest value that rounds up to
    ``2^(bits-1)`` is the one case that saturates). Values that already fit are kept exact
    (no left shift); an all-zero tensor keeps ``exp``.
    """
    v = np.asarray(values, dtype=np.int64)
    top = int(np.abs(v).max()) if v.size else 0
    shift = max(0, top.bit_length() - (bits - 1))
    qmax = (1 << (bits - 1)) - 1
    man = np.clip(round_shift(v, shift, "nearest-even"), -qmax, qmax).astype(np.int64)
    return Gradient(man, int(exp) + shift)


def binary_weights(latent):
    """The +-1 weights of an :class:`~lowbit.golden.lns.LNSTensor`: its signs (sign bit 0,
    which a zero code always has, is +1: ``sign(0) = +1``)."""
    return np.where(latent.sign == 0, 1, -1).astype(np.int64)


def init_weights(config):
    """Initial latent weights, drawn as integers (so identical on every platform): random
    signs and codes uniform in ``1..c_max`` (log-uniform magnitudes over the format's whole
    range, scale ``S = 1``), one :class:`~lowbit.golden.lns.LNSTensor` ``(out, in)`` per
    layer."""
    rng = np.random.default_rng(config.seed)
    c_max = (1 << (config.weight_bits - 1)) - 1
    out = []
    for fan_in, width in zip(config.sizes[:-1], config.sizes[1:]):
        sign = rng.integers(0, 2, size=(width, fan_in), dtype=np.int64)
        code = rng.integers(1, c_max + 1, size=(width, fan_in), dtype=np.int64)
        out.append(lns.LNSTensor(sign, code, 0, config.weight_bits, config.weight_gamma))
    return out


# Arithmetic -------------------------------------------------------------------------------

def popcount_matmul(a, b, a_precision, b_precision):
    """``a @ b.T`` exactly, as the XNOR array computes it (docs: arithmetic, section 1).

    Binary x binary: ``2 * popcount(XNOR) - N``. Otherwise the sum over bit-plane pairs
    (:func:`lowbit.golden.xnor_array.bit_planes`) of ``sign * 2^(ea + eb) *
    popcount(a_plane AND b_plane)``. The popcounts are computed here as integer products of
    0/1 matrices (vectorised); :meth:`lowbit.golden.xnor_array.XNORArray.matmul` computes
    the same numbers beat by beat (a test checks it).
    """
    a_precision, b_precision = Precision.parse(a_precision), Precision.parse(b_precision)
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    a_precision.check(a, "left operand")
    b_precision.check(b, "right operand")
    if a_precision.kind == b_precision.kind == "binary":
        pa, pb = (a > 0).astype(np.int64), (b > 0).astype(np.int64)
        matches = pa @ pb.T + (1 - pa) @ (1 - pb).T  # popcount(XNOR)
        return 2 * matches - a.shape[1]
    out = np.zeros((a.shape[0], b.shape[0]), dtype=np.int64)
    for plane_a, ea, sa in bit_planes(a, a_precision):
        for plane_b, eb, sb in bit_planes(b, b_precision):
            count = plane_a.astype(np.int64) @ plane_b.astype(np.int64).T  # popcount(AND)
            out += (sa * sb) * (count << (ea + eb))
    return out


def softmax_gradient(logits, fmt, labels):
    """The gradient of softmax cross-entropy with respect to the logits, ``p - onehot``, in
    integers, as an unquantised :class:`Gradient` of ``PROB_FRAC`` fractional bits (the
    caller requantises it). Also returns the per-sample loss (float, for monitoring only).

    ``logits`` is a :class:`~lowbit.golden.bfp.BFP` of one block per sample (``exp``
    ``(n, 1)``, ``man`` ``(n, 1, C)``: value ``M * 2^(E - (m - 2))``) in format ``fmt``.
    With ``d = M - max M`` (<= 0) and ``G = SOFTMAX_GAMMA = 2^g``:

    * ``u = round(G * log2(e) * d * 2^(E - (m - 2)))``, with ``log2(e)`` the 16-bit
      constant ``LOG2E_Q / 2^16`` and round-to-nearest-even (one shift);
    * ``e_i = LUT[u mod G] >> -floor(u / G)`` with ``LUT = lns_lut(G, SOFTMAX_FRAC)``, so
      ``e_i ~ 2^(SOFTMAX_FRAC) * exp(y_i - max y)``; the largest logit gives ``2^16``;
    * ``p_i - onehot_i = (e_i - onehot_i * S) / S``, ``S = sum_j e_j``, rounded to
      ``PROB_FRAC`` fractional bits, half up: ``floor((2^(F+1) * num + S) / (2 S))``.
    """
    man = np.asarray(logits.man, dtype=np.int64)[:, 0, :]
    exp = np.asarray(logits.exp, dtype=np.int64)[:, 0]
    n = man.shape[0]
    g = SOFTMAX_GAMMA.bit_length() - 1
    d = man - man.max(axis=1, keepdims=True)
    # u = d * LOG2E_Q * 2^(E - (m - 2)) * 2^g / 2^LOG2E_FRAC
    shift = LOG2E_FRAC - g - (exp - (fmt.mantissa - 2))
    u = round_shift(d * LOG2E_Q, shift[:, None], "nearest-even")
    lut = np.array(lns_lut(SOFTMAX_GAMMA, SOFTMAX_FRAC), dtype=np.int64)
    q, r = u >> g, u & (SOFTMAX_GAMMA - 1)
    e = round_shift(lut[r], -q, "floor")
    total = e.sum(axis=1, keepdims=True)
    onehot = np.zeros_like(e)
    onehot[np.arange(n), labels] = 1
    num = e - onehot * total
    grad = ((num << (PROB_FRAC + 1)) + total) // (2 * total)
    # -ln p_label = ln S - ln e_label, with ln e_label from its exponent u (finite even
    # where e_label underflows to 0); monitoring only, never fed back.
    loss = np.log(total[:, 0]) - (SOFTMAX_FRAC + u[np.arange(n), labels] / SOFTMAX_GAMMA) \
        * math.log(2)
    return Gradient(grad, -PROB_FRAC), loss


def norm_backward(dy, scale, fmt, bits):
    """``dz = scale * dy`` through a norm unit (its batch statistics held constant),
    requantised to ``bits``.

    ``dy`` is a :class:`Gradient` ``(n, C)``; ``scale`` the unit's BFP scale per channel
    group (``exp`` ``(groups,)``, ``man`` ``(groups, block)``). The exact products
    ``dy.man * scale.man`` carry per-group exponents; they are aligned to the largest one
    minus ``NORM_GUARD_BITS`` (left shifts, or round-to-nearest-even right shifts for groups
    further below), then :func:`quantize_gradient` rounds once more.
    """
    n, channels = dy.man.shape
    groups, block = scale.man.shape
    prod = dy.man.reshape(n, groups, block) * scale.man[None]
    base = int(scale.exp.max()) - NORM_GUARD_BITS
    aligned = round_shift(prod, (base - scale.exp)[None, :, None], "nearest-even")
    return quantize_gradient(aligned.reshape(n, channels),
                             dy.exp + base - (fmt.mantissa - 2), bits)


def madam_update(latent, grad, bits, lr_exponent):
    """LNS-Madam's multiplicative update on log codes: ``|w| <- |w| * 2^(-step/gamma)``
    with ``step = round(sign(w) * man * 2^lr_exponent / 2^(bits - 1))`` codes
    (round-to-nearest-even; ``man`` the ``bits``-bit gradient mantissas, so the gradient is
    normalised by its tensor's power-of-two exponent, as Madam normalises it).

    ``t = c - step``: ``t > c_max`` saturates to ``c_max`` (``|w| <= S``, BinaryConnect's
    clip); ``t < 1`` means the weight crossed zero: the sign flips and the code becomes 1,
    the smallest magnitude of the other side (a multiplicative rule alone never changes a
    sign, and the binary weight is the sign). A zero code updates as code 1 of sign 0.
    """
    c_max = latent.c_max
    direction = np.where(latent.sign == 1, -1, 1)
    step = round_shift(direction * np.asarray(grad, dtype=np.int64),
                       (bits - 1) - lr_exponent, "nearest-even")
    t = np.where(latent.code == 0, 1, latent.code) - step
    sign = np.where(latent.code == 0, 0, latent.sign)
    cross = t < 1
    return dataclasses.replace(
        latent, sign=np.where(cross, 1 - sign, sign).astype(np.int64),
        code=np.where(cross, 1, np.minimum(t, c_max)).astype(np.int64))


def host_update(weights, grads, grad_bits, lr_exponent):
    """The update of every layer on the host: :func:`madam_update` of each latent tensor by
    its mantissas."""
    return [madam_update(w, g, bits, lr_exponent)
            for w, g, bits in zip(weights, grads, grad_bits)]


# The step ---------------------------------------------------------------------------------

class ForwardRecord(NamedTuple):
    """What a forward pass keeps (per layer lists): ``inputs`` (the integer operand of each
    layer: k-bit inputs, then +-1), ``z`` (popcount sums), ``y`` (norm outputs, BFP),
    ``scale`` (each norm's BFP scale), ``masks`` (straight-through masks of the hidden
    layers, ``|y| <= 1``). The backward pass reads only ``inputs`` (bits), ``masks`` (one
    bit per activation), ``scale`` and the logits ``y[-1]``."""

    inputs: list
    z: list
    y: list
    scale: list
    masks: list


class StepResult(NamedTuple):
    """One step's outputs: the forward record, the output gradient (quantised), each
    layer's ``dZ`` and ``dW`` (:class:`Gradient`), the per-sample loss (float, monitoring
    only) and the number of binary weights that flipped."""

    forward: ForwardRecord
    d_logits: Gradient
    dz: list
    dw: list
    loss: np.ndarray
    flips: int


class TrainingStep:
    """Training state (latent LNS weights) and the bit-exact step of a binary MLP.

    Parameters
    ----------
    config : TrainingConfig
    weights : list of LNSTensor, optional
        Initial latent weights ``(out, in)``; :func:`init_weights` by default.
    matmul : callable, optional
        ``matmul(a, b, a_precision, b_precision)``, the exact ``a @ b.T`` every product of
        the step goes through: :func:`popcount_matmul` by default, or
        :class:`lowbit.device_matmul.DeviceMatmul` to run them on the accelerator (a step is
        then the same bit for bit, which the tests check).
    update : callable, optional
        ``update(weights, grads, grad_bits, lr_exponent)``, the new latent weights of every
        layer from its ``dW`` mantissas: :func:`madam_update` layer by layer by default, or
        :class:`lowbit.device_update.DeviceUpdate` to run the update on the accelerator.
    statistics : callable, optional
        ``statistics(x, w, precision, norm)``, a training-mode forward product with its
        norm's batch statistics: ``(z, total, spread)`` as ``matmul`` and
        ``norm.statistics(z)`` give them, or ``None`` to leave both to those two. By
        default the host computes them; :meth:`lowbit.device_matmul.DeviceMatmul.statistics`
        has the accelerator's statistics unit compute them.
    """

    def __init__(self, config=None, weights=None, matmul=None, update=None, statistics=None):
        config = TrainingConfig() if config is None else config
        if not isinstance(config, TrainingConfig):
            raise TypeError(f"config must be a TrainingConfig, not {config!r}")
        self.config = config
        self.matmul = popcount_matmul if matmul is None else matmul
        self.update = host_update if update is None else update
        self.statistics = statistics
        self.weights = init_weights(config) if weights is None else list(weights)
        for layer, (w, shape) in enumerate(zip(self.weights, config.shapes)):
            if w.shape != shape or (w.bits, w.gamma) != (config.weight_bits,
                                                         config.weight_gamma):
                raise ValueError(f"layer {layer} weights must be {shape} LNS "
                                 f"{config.weight_bits}-bit gamma={config.weight_gamma}, not "
                                 f"{w.shape} {w.bits}-bit gamma={w.gamma}")
        self.norms = [LightNorm(config.norm_config(i)) for i in range(config.layers)]

    def binary(self):
        """The +-1 weights of every layer (signs of the latent weights)."""
        return [binary_weights(w) for w in self.weights]

    def forward(self, x, reference=None):
        """Forward pass of integer inputs ``x`` ``(n, sizes[0])``. The norms use the batch
        statistics of ``x`` (training mode) or, given ``reference`` inputs, those of the
        reference batch propagated through the same network (evaluation)."""
        cfg = self.config
        h = np.asarray(x, dtype=np.int64)
        ref = None if reference is None else np.asarray(reference, dtype=np.int64)
        record = ForwardRecord([], [], [], [], [])
        for layer, w in enumerate(self.binary()):
            prec = cfg.input_precision(layer)
            norm = self.norms[layer]
            got = None
            if ref is None and self.statistics is not None:
                got = self.statistics(h, w, prec, norm)
            if got is not None:
                z, total, spread = got
                stat_z = z
            else:
                z = self.matmul(h, w, prec, "binary")
                stat_z = z if ref is None else self.matmul(ref, w, prec, "binary")
                total, spread = norm.statistics(stat_z)
            params, _, _ = norm.fold_affine(total, spread, stat_z.shape[0],
                                            cfg.norm_gamma(layer), 0.0)
            y = norm.apply(z, params)
            scale = BFP(np.array([p["scale_exp"] for p in params], dtype=np.int64),
                        np.array([p["scale"] for p in params], dtype=np.int64))
            record.inputs.append(h)
            record.z.append(z)
            record.y.append((y, norm.format))
            record.scale.append(scale)
            if layer < cfg.layers - 1:
                values = dequantize(y, norm.format).reshape(z.shape)  # exact
                record.masks.append(np.abs(values) <= 1)
                h = np.where(values >= 0, 1, -1).astype(np.int64)  # sign(0) = +1
                if ref is not None:
                    ref_y = dequantize(norm.apply(stat_z, params), norm.format)
                    ref = np.where(ref_y.reshape(stat_z.shape) >= 0, 1, -1).astype(np.int64)
        return record

    def logits(self, x, reference=None):
        """The logits as exact float values ``(n, classes)`` (for argmax and reports)."""
        y, fmt = self.forward(x, reference).y[-1]
        return dequantize(y, fmt)[:, 0, :]

    def predict(self, x, reference):
        """Class predictions, norm statistics from ``reference`` (ties: lowest class)."""
        return self.logits(x, reference).argmax(axis=1)

    def step(self, x, labels):
        """One training step on a batch; updates :attr:`weights` and returns a
        :class:`StepResult`."""
        cfg = self.config
        x = np.asarray(x, dtype=np.int64)
        labels = np.asarray(labels, dtype=np.int64)
        if x.shape != (cfg.batch, cfg.sizes[0]):
            raise ValueError(f"a step needs inputs of shape ({cfg.batch}, {cfg.sizes[0]}), "
                             f"not {x.shape}")
        if labels.shape != (cfg.batch,) or labels.min() < 0 or labels.max() >= cfg.sizes[-1]:
            raise ValueError(f"a step needs {cfg.batch} labels in 0..{cfg.sizes[-1] - 1}")
        fwd = self.forward(x)
        binary = self.binary()
        raw, loss = softmax_gradient(*fwd.y[-1], labels)
        top = cfg.layers - 1
        dy = quantize_gradient(raw.man, raw.exp, cfg.grad_bits[top])
        d_logits = dy
        dzs, dws = [None] * cfg.layers, [None] * cfg.layers
        for layer in range(top, -1, -1):
            bits = cfg.grad_bits[layer]
            dz = norm_backward(dy, fwd.scale[layer], fwd.y[layer][1], bits)
            k = Precision("signed", bits)
            dw_sum = self.matmul(dz.man.T, fwd.inputs[layer].T, k,
                                 cfg.input_precision(layer))
            dzs[layer], dws[layer] = dz, quantize_gradient(dw_sum, dz.exp, bits)
            if layer > 0:
                dx_sum = self.matmul(dz.man, binary[layer].T, k, "binary")
                dx_sum = np.where(fwd.masks[layer - 1], dx_sum, 0)  # straight-through mask
                dy = quantize_gradient(dx_sum, dz.exp, bits)
        self.weights = self.update(self.weights, [g.man for g in dws], cfg.grad_bits,
                                   cfg.lr_exponent)
        flips = int(sum((b != n).sum() for b, n in zip(binary, self.binary())))
        return StepResult(fwd, d_logits, dzs, dws, loss, flips)
