"""Training quantized MLPs with numpy only: the straight-through estimator (STE).

:func:`train` returns a :class:`~lowbit.model.QuantModel` and a :class:`TrainReport`.
The method (``docs/model.md`` has the measured accuracies):

* Latent float weights, quantized in every forward pass exactly as
  :class:`~lowbit.model.Dense` quantizes them (binary ``w >= 0``; k-bit symmetric with the
  per-channel ``max|w| / (2^(k-1) - 1)`` scale); the gradient passes straight through,
  masked where ``|w| > 1``, and the latent weights are clipped to ``[-1, 1]`` after every
  step (BinaryConnect).
* Batch norm after every Dense (batch statistics while training), then ``Sign`` (STE
  gradient where ``|y| <= 1``, the hardtanh estimator) or a k-bit ``MultiThreshold``
  quantizing ``[0, 1]`` (gradient where ``0 <= y <= 1``); the last layer's batch norm
  output is the logits (softmax cross-entropy). Adam, cosine learning-rate decay.
* After training, every batch norm's ``mean``/``var`` are recomputed layer by layer on the
  whole training set through the exported model's own float semantics, so the saved
  statistics are exactly those of the quantized network.
* The reference float accuracy comes from an unquantized twin (same shape, float weights,
  batch norm, ReLU) trained the same way.

``arch="cnn"`` adds 3x3 convolution stages (batch norm, activation, 2x2 max pool) in front
of the dense layers, trained the same way (the pool's gradient is shared by the window's
maxima); it exports ``Conv2D``/``MaxPool2D`` layers with their padding semantics stated.
"""

import dataclasses
import math
import time

import numpy as np

from . import datasets
from .progress import bar as progress_bar
from .model import (BatchNorm, Conv2D, Dense, Flatten, MaxPool2D, MultiThreshold,
                    QuantModel, Sign, im2col, max_pool)

__all__ = ["PRECISIONS", "ARCHS", "DEFAULT_HIDDEN", "TrainReport", "train", "image_shape"]

#: ``precision -> (weight_bits, activation_bits)``; activation bits 1 mean Sign (+-1).
PRECISIONS = {"w1a1": (1, 1), "w1a2": (1, 2), "w2a2": (2, 2), "w4a4": (4, 4)}
ARCHS = ("mlp", "cnn")
#: Hidden dense widths when none are given.
DEFAULT_HIDDEN = {"mlp": (256, 256), "cnn": (256,)}
#: Epochs when none are given: enough for digits' 1437 samples, one core, about a minute.
DEFAULT_EPOCHS = {"digits": 60, "mnist": 10}
_EPS = 1e-5


@dataclasses.dataclass(frozen=True)
class TrainReport:
    """What :func:`train` measured (accuracies are fractions of the test set)."""

    dataset: str
    arch: str
    precision: str
    hidden: tuple
    epochs: int
    seed: int
    seconds: float
    float_accuracy: float  # the unquantized twin; None when not trained
    float_forward_accuracy: float  # the quantized model, float_forward
    integer_accuracy: float  # the quantized model, integer_forward + host argmax
    agreement: int  # test inputs where float_forward and integer_forward predict alike
    test_size: int
    train_accuracy: float  # the quantized model (integer) on the training set

    def to_json(self):
        return {**dataclasses.asdict(self), "hidden": list(self.hidden)}

    def lines(self):
        twin = ("not trained" if self.float_accuracy is None
                else f"{100 * self.float_accuracy:.2f}%")
        return [
            f"{self.dataset} {self.arch} {self.precision} "
            f"{'-'.join(map(str, self.hidden)) or 'no hidden layers'}, {self.epochs} epochs, "
            f"seed {self.seed}: {self.seconds:.1f} s",
            f"float test accuracy (unquantized twin): {twin}",
            f"quantized test accuracy: {100 * self.integer_accuracy:.2f}% integer_forward, "
            f"{100 * self.float_forward_accuracy:.2f}% float_forward (predictions agree on "
            f"{self.agreement}/{self.test_size})",
        ]


class _Adam:
    def __init__(self, params, lr):
        self.params, self.lr = params, lr
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]
        self.t = 0

    def step(self, grads, lr):
        self.t += 1
        b1, b2 = 0.9, 0.999
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            mhat = m / (1 - b1 ** self.t)
            vhat = v / (1 - b2 ** self.t)
            p -= lr * mhat / (np.sqrt(vhat) + 1e-8)


def _quantize_weight(w, bits):
    """Float32 copy of :meth:`lowbit.model.Dense.quantized_weight` (``None``: float)."""
    if bits is None:
        return w
    if bits == 1:
        return np.where(w >= 0, 1.0, -1.0).astype(np.float32)
    qmax = (1 << (bits - 1)) - 1
    peak = np.abs(w).max(axis=1, keepdims=True)
    scale = np.where(peak > 0, peak / qmax, 1.0).astype(np.float32)
    return np.clip(np.rint(w / scale), -qmax, qmax) * scale


class _Net:
    """The network being trained: float32 latent weights, batch norm, STE activations.

    ``weight_bits``/``act_bits`` ``None`` make the unquantized twin (float weights, ReLU).
    """

    def __init__(self, sizes, weight_bits, act_bits, rng, input_scale):
        self.weight_bits, self.act_bits = weight_bits, act_bits
        self.weights, self.gammas, self.betas = [], [], []
        for k, n in zip(sizes[:-1], sizes[1:]):
            limit = math.sqrt(6.0 / (k + n))
            if weight_bits is not None:
                limit = min(1.0, limit * 2)
            self.weights.append(rng.uniform(-limit, limit, size=(n, k)).astype(np.float32))
            self.gammas.append(np.ones(n, dtype=np.float32))
            self.betas.append(np.zeros(n, dtype=np.float32))
        self.input_scale = np.float32(input_scale)
        if act_bits is not None and act_bits > 1:
            mt = MultiThreshold.uniform(act_bits)
            self.levels = mt.levels.astype(np.float32)
            self.act_step = np.float32(mt.step)

    @property
    def params(self):
        return self.weights + self.gammas + self.betas

    def _act(self, y):
        if self.act_bits is None:
            return np.maximum(y, 0), (y > 0)
        if self.act_bits == 1:
            return np.where(y >= 0, 1.0, -1.0).astype(np.float32), np.abs(y) <= 1
        count = (y[..., None] >= self.levels).sum(axis=-1)
        return (self.act_step * count).astype(np.float32), (y >= 0) & (y <= 1)

    def loss_and_grads(self, x, labels):
        loss, grads, _ = self._dense_loss_and_grads(x, labels)
        return loss, grads

    def _dense_loss_and_grads(self, x, labels):
        # (loss, gradients of params, gradient of the input)
        h = x * self.input_scale
        caches = []
        last = len(self.weights) - 1
        for i, w in enumerate(self.weights):
            wq = _quantize_weight(w, self.weight_bits)
            z = h @ wq.T
            mu, var = z.mean(axis=0), z.var(axis=0)
            inv = 1.0 / np.sqrt(var + _EPS)
            xhat = (z - mu) * inv
            y = self.gammas[i] * xhat + self.betas[i]
            mask = None
            if i < last:
                a, mask = self._act(y)
            else:
                a = y
            caches.append((h, wq, xhat, inv, mask))
            h = a
        logits = h - h.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        batch = x.shape[0]
        loss = -np.log(p[np.arange(batch), labels] + 1e-12).mean()
        dy = p
        dy[np.arange(batch), labels] -= 1
        dy /= batch
        grads_w, grads_g, grads_b = [None] * len(self.weights), [], []
        for i in range(last, -1, -1):
            h, wq, xhat, inv, mask = caches[i]
            if mask is not None:
                dy = dy * mask
            grads_g.append((dy * xhat).sum(axis=0))
            grads_b.append(dy.sum(axis=0))
            dxhat = dy * self.gammas[i]
            dz = inv * (dxhat - dxhat.mean(axis=0) - xhat * (dxhat * xhat).mean(axis=0))
            dw = dz.T @ h
            if self.weight_bits is not None:
                dw *= np.abs(self.weights[i]) <= 1
            grads_w[i] = dw
            dy = dz @ wq
        return loss, grads_w + grads_g[::-1] + grads_b[::-1], dy * self.input_scale

    def clip(self):
        if self.weight_bits is not None:
            for w in self.weights:
                np.clip(w, -1, 1, out=w)

    def twin_accuracy(self, x_train, x_test, labels):
        """Accuracy of the float twin with population batch-norm statistics."""
        h_train, h_test = x_train * self.input_scale, x_test * self.input_scale
        last = len(self.weights) - 1
        for i, w in enumerate(self.weights):
            z_train, z_test = h_train @ w.T, h_test @ w.T
            mu, sd = z_train.mean(axis=0), np.sqrt(z_train.var(axis=0) + _EPS)
            h_train = self.gammas[i] * (z_train - mu) / sd + self.betas[i]
            h_test = self.gammas[i] * (z_test - mu) / sd + self.betas[i]
            if i < last:
                h_train, h_test = self._act(h_train)[0], self._act(h_test)[0]
        return float((h_test.argmax(axis=1) == labels).mean())


def _col2im(dcols, shape, kernel, padding):
    """Adjoint of :func:`lowbit.model.im2col` (stride 1): patch gradients ``(n, P, K)``
    summed back into an ``(n, C, H, W)`` input gradient."""
    n, c, h, w = shape
    kh, kw = kernel
    hp, wp = h + 2 * padding, w + 2 * padding
    oh, ow = hp - kh + 1, wp - kw + 1
    d = dcols.reshape(n, oh, ow, c, kh, kw)
    dx = np.zeros((n, c, hp, wp), dtype=dcols.dtype)
    for dy in range(kh):
        for dxx in range(kw):
            dx[:, :, dy:dy + oh, dxx:dxx + ow] += d[:, :, :, :, dy, dxx].transpose(0, 3, 1, 2)
    return dx[:, :, padding:padding + h, padding:padding + w]


class _CNN(_Net):
    """Convolution stages (3x3, stride 1, padding 1, batch norm, activation, 2x2 max pool)
    then the dense layers of :class:`_Net`. The first stage pads its unsigned pixels with 0;
    a later stage pads +-1 inputs with +1 (``Conv2D.pad_value``) and k-bit inputs with 0."""

    KERNEL = (3, 3)

    def __init__(self, input_shape, channels, sizes, weight_bits, act_bits, rng, input_scale):
        c, h, w = input_shape
        self.conv_weights, self.conv_gammas, self.conv_betas, self.pads = [], [], [], []
        for j, n in enumerate(channels):
            k = c * self.KERNEL[0] * self.KERNEL[1]
            limit = math.sqrt(6.0 / (k + n))
            if weight_bits is not None:
                limit = min(1.0, limit * 2)
            self.conv_weights.append(rng.uniform(-limit, limit, size=(n, k)).astype(np.float32))
            self.conv_gammas.append(np.ones(n, dtype=np.float32))
            self.conv_betas.append(np.zeros(n, dtype=np.float32))
            self.pads.append(1.0 if j > 0 and act_bits == 1 else 0.0)
            c, h, w = n, h // 2, w // 2
        self.input_shape = tuple(input_shape)
        super().__init__((c * h * w, *sizes), weight_bits, act_bits, rng, input_scale)

    @property
    def params(self):
        return (self.conv_weights + self.weights + self.conv_gammas + self.gammas
                + self.conv_betas + self.betas)

    def _stages(self, x, stats=None, record=None):
        """Forward through the convolution stages; ``stats`` (per stage ``(mu, sd)``) for
        population batch norm, else batch statistics (appended to ``record`` if given)."""
        h = x.reshape(x.shape[0], *self.input_shape) * self.input_scale
        caches = []
        for j, w in enumerate(self.conv_weights):
            n = h.shape[0]
            cols = im2col(h, self.KERNEL, 1, 1, self.pads[j])
            oh, ow = h.shape[2], h.shape[3]
            cols = cols.reshape(n * oh * ow, -1)
            wq = _quantize_weight(w, self.weight_bits)
            z = cols @ wq.T
            if stats is None:
                mu, var = z.mean(axis=0), z.var(axis=0)
                if record is not None:
                    record.append((mu, np.sqrt(var + _EPS)))
                inv = 1.0 / np.sqrt(var + _EPS)
            else:
                mu, inv = stats[j][0], 1.0 / stats[j][1]
            xhat = (z - mu) * inv
            y = self.conv_gammas[j] * xhat + self.conv_betas[j]
            a, mask = self._act(y)
            a6 = a.reshape(n, oh // 2, 2, ow // 2, 2, -1)
            pooled = a6.max(axis=(2, 4))
            # the gradient goes to every maximum of a window, shared equally (+-1 data ties)
            hit = a6 == pooled[:, :, None, :, None, :]
            route = hit / hit.sum(axis=(2, 4), keepdims=True)
            caches.append((h.shape, cols, wq, xhat, inv, mask, route))
            h = pooled.transpose(0, 3, 1, 2)
        return h.reshape(h.shape[0], -1), caches

    def loss_and_grads(self, x, labels):
        h, caches = self._stages(x)
        scale = self.input_scale
        self.input_scale = np.float32(1)
        try:
            loss, grads, dh = self._dense_loss_and_grads(h, labels)
        finally:
            self.input_scale = scale
        gw, gg, gb = [None] * len(caches), [None] * len(caches), [None] * len(caches)
        for j in range(len(caches) - 1, -1, -1):
            shape, cols, wq, xhat, inv, mask, route = caches[j]
            n, n_out = shape[0], wq.shape[0]
            oh, ow = shape[2], shape[3]
            dp = dh.reshape(n, n_out, oh // 2, ow // 2).transpose(0, 2, 3, 1)
            da = (route * dp[:, :, None, :, None, :]).reshape(n * oh * ow, n_out)
            dy = da * mask
            gg[j] = (dy * xhat).sum(axis=0)
            gb[j] = dy.sum(axis=0)
            dxhat = dy * self.conv_gammas[j]
            dz = inv * (dxhat - dxhat.mean(axis=0) - xhat * (dxhat * xhat).mean(axis=0))
            dw = dz.T @ cols
            if self.weight_bits is not None:
                dw *= np.abs(self.conv_weights[j]) <= 1
            gw[j] = dw
            if j > 0:
                dh = _col2im((dz @ wq).reshape(n, oh * ow, -1), shape, self.KERNEL, 1)
        k = len(self.weights)
        return loss, gw + grads[:k] + gg + grads[k:2 * k] + gb + grads[2 * k:]

    def clip(self):
        super().clip()
        if self.weight_bits is not None:
            for w in self.conv_weights:
                np.clip(w, -1, 1, out=w)

    def twin_accuracy(self, x_train, x_test, labels):
        stats = []
        h_train, _ = self._stages(x_train, record=stats)
        h_test, _ = self._stages(x_test, stats=stats)
        scale = self.input_scale
        self.input_scale = np.float32(1)
        try:
            return super().twin_accuracy(h_train, h_test, labels)
        finally:
            self.input_scale = scale


def _fit(net, x, labels, epochs, batch_size, lr, rng, progress, label):
    opt = _Adam(net.params, lr)
    steps_per_epoch = max(1, math.ceil(x.shape[0] / batch_size))
    total = epochs * steps_per_epoch
    with progress_bar(epochs, label, progress) as bar:
        _epochs(net, x, labels, epochs, batch_size, lr, rng, opt, steps_per_epoch, total,
                bar)


def _epochs(net, x, labels, epochs, batch_size, lr, rng, opt, steps_per_epoch, total, bar):
    step = 0
    for epoch in range(epochs):
        order = rng.permutation(x.shape[0])
        losses = []
        for s in range(steps_per_epoch):
            index = order[s * batch_size:(s + 1) * batch_size]
            if index.size < 2:  # batch statistics need two samples
                continue
            loss, grads = net.loss_and_grads(x[index], labels[index])
            rate = lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * step / total)))
            opt.step(grads, rate)
            net.clip()
            losses.append(loss)
            step += 1
        bar.update(epoch + 1, f"loss {np.mean(losses):.3f}")


def _export(net, data, precision, weight_bits, act_bits, x_train_real, name):
    """The trained network as a QuantModel, batch-norm statistics recomputed on the
    training set through the model's own float semantics (float64)."""
    layers = _dense_layers(net, weight_bits, act_bits, x_train_real.astype(np.float64))
    return QuantModel(name=name, dataset=data.name, input_quantizer=data.input_quantizer,
                      input_shape=data.input_shape, layers=layers)


def _dense_layers(net, weight_bits, act_bits, h):
    """The exported Dense, BatchNorm and activation layers of ``net`` (statistics of the
    float64 inputs ``h``)."""
    layers = []
    last = len(net.weights) - 1
    for i, w in enumerate(net.weights):
        dense = Dense(w.astype(np.float64), weight_bits=weight_bits)
        z = h @ dense.quantized_weight().T
        bn = BatchNorm(gamma=net.gammas[i].astype(np.float64),
                       beta=net.betas[i].astype(np.float64), mean=z.mean(axis=0),
                       var=z.var(axis=0), eps=_EPS)
        layers += [dense, bn]
        if i < last:
            act = Sign() if act_bits == 1 else MultiThreshold.uniform(act_bits)
            layers.append(act)
            y = bn.apply(z)
            h = np.where(y >= 0, 1.0, -1.0) if act_bits == 1 else act.apply(y)
    return layers


#: Training samples whose statistics a CNN's exported batch norms get (memory bound).
_CNN_STAT_SAMPLES = 10000


def _export_cnn(net, data, weight_bits, act_bits, x_train_real, name):
    """:func:`_export` for a :class:`_CNN`: convolution stages, then the dense layers."""
    layers = []
    h = x_train_real[:_CNN_STAT_SAMPLES].reshape(-1, *net.input_shape).astype(np.float64)
    for j, w in enumerate(net.conv_weights):
        conv = Conv2D(w.reshape(w.shape[0], h.shape[1], *net.KERNEL).astype(np.float64),
                      weight_bits=weight_bits, padding=1, pad_value=net.pads[j])
        z = conv.forward(h)
        bn = BatchNorm(gamma=net.conv_gammas[j].astype(np.float64),
                       beta=net.conv_betas[j].astype(np.float64), mean=z.mean(axis=(0, 2, 3)),
                       var=z.var(axis=(0, 2, 3)), eps=_EPS)
        act = Sign() if act_bits == 1 else MultiThreshold.uniform(act_bits)
        layers += [conv, bn, act, MaxPool2D(2)]
        y = np.moveaxis(bn.apply(np.moveaxis(z, 1, -1)), -1, 1)
        h = np.where(y >= 0, 1.0, -1.0) if act_bits == 1 else act.apply(y)
        h = max_pool(h, 2)
    layers += [Flatten(), *_dense_layers(net, weight_bits, act_bits, h.reshape(len(h), -1))]
    return QuantModel(name=name, dataset=data.name, input_quantizer=data.input_quantizer,
                      input_shape=net.input_shape, layers=layers)


def image_shape(data):
    """``(1, side, side)``: the (C, H, W) shape of a data set of flat square images."""
    features = math.prod(data.input_shape)
    side = math.isqrt(features)
    if len(data.input_shape) == 3:
        return tuple(data.input_shape)
    if side * side != features:
        raise ValueError(f"arch 'cnn' needs square images; {data.name} samples have "
                         f"{features} features")
    return 1, side, side


def _check_args(dataset, arch, precision, hidden, epochs, seed, batch_size, lr):
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {', '.join(ARCHS)}, not {arch!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not "
                         f"{precision!r}")
    if (isinstance(hidden, (str, bytes)) or not hasattr(hidden, "__iter__")
            or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0
                       for n in hidden)):
        raise ValueError(f"hidden must be a sequence of positive integers, not {hidden!r}")
    for value, name in ((seed, "seed"), (batch_size, "batch_size")):
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{name} must be an integer, not {value!r}")
    if epochs is not None and (not isinstance(epochs, int) or isinstance(epochs, bool)
                               or epochs < 1):
        raise ValueError(f"epochs must be a positive integer, not {epochs!r}")
    if batch_size < 2:
        raise ValueError(f"batch_size must be at least 2, not {batch_size}")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive number, not {lr!r}")
    if not isinstance(dataset, (str, datasets.Dataset)):
        raise TypeError(f"dataset must be a name ({', '.join(datasets.NAMES)}) or a "
                        f"Dataset, not {dataset!r}")


def train(dataset="digits", arch="mlp", precision="w1a1", hidden=None, epochs=None,
          seed=0, progress=True, *, batch_size=64, lr=0.01, twin=True, channels=(32,)):
    """Train a quantized network; return ``(model, report)``.

    Parameters
    ----------
    dataset : str or Dataset
        ``"digits"``, ``"mnist"`` (see :mod:`lowbit.datasets`) or a loaded
        :class:`~lowbit.datasets.Dataset`.
    arch : str
        ``"mlp"``, or ``"cnn"``: per entry of ``channels`` a 3x3 convolution (padding 1:
        zeros around the pixels, +1 around +-1 activations), batch norm, activation and
        2x2 max pool, then ``Flatten`` and the dense layers.
    precision : str
        ``"w1a1"``, ``"w1a2"``, ``"w2a2"`` or ``"w4a4"`` (weight and activation bits;
        1-bit activations are Sign, +-1). The first layer takes the input quantizer's
        integers (uint5 for digits, uint8 for MNIST); the last layer's integer scores go
        to the host. Every Dense uses the same weight precision.
    hidden : sequence of int or None
        Hidden dense layer widths; ``None``: :data:`DEFAULT_HIDDEN` of the architecture.
    epochs : int or None
        ``None``: :data:`DEFAULT_EPOCHS` of the data set (60 for digits).
    seed : int
        Seeds the initialisation and the batch order: same seed, same model.
    progress : bool
        Draw a progress bar on stderr.
    batch_size, lr : int, float
        Mini-batch size and Adam's initial learning rate (cosine decay to 1%).
    twin : bool
        Also train the unquantized twin for the reference float accuracy.
    channels : sequence of int
        ``arch="cnn"``: output channels of each convolution stage.

    Raises
    ------
    ValueError, TypeError
        On a bad argument (exact messages).
    """
    if hidden is None:
        hidden = DEFAULT_HIDDEN.get(arch, (256, 256))
    _check_args(dataset, arch, precision, hidden, epochs, seed, batch_size, lr)
    if (isinstance(channels, (str, bytes)) or not hasattr(channels, "__iter__")
            or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0
                       for n in channels)):
        raise ValueError(f"channels must be a sequence of positive integers, not "
                         f"{channels!r}")
    channels = tuple(channels)
    start = time.monotonic()
    data = dataset if isinstance(dataset, datasets.Dataset) else datasets.load(dataset)
    hidden = tuple(hidden)
    if epochs is None:
        epochs = DEFAULT_EPOCHS.get(data.name, 30)
    weight_bits, act_bits = PRECISIONS[precision]
    quantizer = data.input_quantizer
    x_train_real = quantizer.dequantize(quantizer.quantize(data.x_train)).reshape(
        len(data.x_train), -1)
    x_test_real = quantizer.dequantize(quantizer.quantize(data.x_test)).reshape(
        len(data.x_test), -1)
    x32 = x_train_real.astype(np.float32)
    sizes = (x32.shape[1], *hidden, data.classes)
    # Inputs scaled to about [0, 1] while training (batch norm makes the model invariant).
    input_scale = 1.0 / max(1.0, float(x_train_real.max()))
    rng = np.random.default_rng(seed)

    if arch == "cnn":
        shape = image_shape(data)
        sizes = (*hidden, data.classes)

        def make(wbits, abits, generator):
            return _CNN(shape, channels, sizes, wbits, abits, generator, input_scale)
        tag = f"c{'-c'.join(map(str, channels))}-{'-'.join(map(str, sizes))}"
    else:
        def make(wbits, abits, generator):
            return _Net(sizes, wbits, abits, generator, input_scale)
        tag = "-".join(map(str, sizes))
    net = make(weight_bits, act_bits, rng)
    _fit(net, x32, data.y_train, epochs, batch_size, lr, rng, progress,
         f"train {precision}")
    name = f"{data.name}-{arch}-{precision}-{tag}"
    if arch == "cnn":
        model = _export_cnn(net, data, weight_bits, act_bits, x_train_real, name)
    else:
        model = _export(net, data, precision, weight_bits, act_bits, x_train_real, name)

    float_accuracy = None
    if twin:
        twin_net = make(None, None, np.random.default_rng(seed))
        _fit(twin_net, x32, data.y_train, epochs, batch_size, lr,
             np.random.default_rng(seed + 1), progress, "train float twin")
        float_accuracy = twin_net.twin_accuracy(x32, x_test_real.astype(np.float32),
                                                data.y_test)

    pred_float = model.predict(data.x_test, backend="float")
    pred_int = model.predict(data.x_test, backend="integer")
    train_pred = model.predict(data.x_train, backend="integer")
    report = TrainReport(
        dataset=data.name, arch=arch, precision=precision, hidden=hidden, epochs=epochs,
        seed=seed, seconds=time.monotonic() - start, float_accuracy=float_accuracy,
        float_forward_accuracy=float((pred_float == data.y_test).mean()),
        integer_accuracy=float((pred_int == data.y_test).mean()),
        agreement=int((pred_float == pred_int).sum()), test_size=len(data.y_test),
        train_accuracy=float((train_pred == data.y_train).mean()))
    model = dataclasses.replace(model, metadata={
        "trainer": "lowbit.train (numpy STE)", "batch_size": batch_size, "lr": lr,
        "report": report.to_json()})
    return model, report
