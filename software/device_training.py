"""Training a binarized MLP with its products on the accelerator (``lowbit train --backend``).

The step is :class:`lowbit.golden.training.TrainingStep`, bit for bit: its every product
(the forward layers, ``dW = dZ^T X`` and ``dX = dZ W``)
runs as ``SCORES`` GEMMs on the accelerator behind a :class:`lowbit.runtime.Runtime`
(:class:`lowbit.device_matmul.DeviceMatmul`): the ISS, the RTL simulation or a board. On a
training configuration (``latent_depth > 0``) the LNS-Madam update runs there too, the
latent weights resident in the latent memory (:class:`lowbit.device_update.DeviceUpdate`).
With a statistics unit (``norm_channels > 0``) the forward norms' batch statistics come
from ``STATS`` (:meth:`lowbit.device_matmul.DeviceMatmul.statistics`). The host does the
rest of the step: the statistics' folding and the BFP affine, the loss gradient and the
gradients' requantisation (``docs/training.md`` says why, and what moving them would
need).

:func:`export_model` turns the trained state into a :class:`lowbit.model.QuantModel` (the
signs of the latent weights, each LightNorm's BFP scale and offset from a reference set as
an inference batch norm), which ``lowbit compile`` compiles like any other model.
"""

import dataclasses
import logging
import time

import numpy as np

from .golden.bfp import BFP, dequantize
from .golden.training import TrainingConfig, TrainingStep, popcount_matmul

__all__ = ["DeviceTrainReport", "train_on_device", "export_model", "evaluate", "lr_exponent",
           "training_macs", "memory_per_sample", "step_energy"]

log = logging.getLogger(__name__)


@dataclasses.dataclass
class DeviceTrainReport:
    """What :func:`train_on_device` did.

    Attributes
    ----------
    config : TrainingConfig
    epochs, steps : int
    losses, accuracies : list of float
        Mean loss (nats) of each epoch's steps and test accuracy after it.
    update : str
        Where the LNS-Madam update ran: ``"host"`` or ``"accelerator"``.
    accuracy : float
        Final test accuracy of the trained step (norm statistics from the training set).
    model_accuracy : float or None
        Test accuracy of the exported model (its float batch norms).
    device : dict
        ``None`` on the host; else the accelerator's totals
        (:attr:`lowbit.device_matmul.DeviceMatmul.stats`: ``cycles``, ``array_beats``,
        ``gemms``, ``macs``) and :func:`step_energy`'s keys (``energy_pj_per_step``,
        ``fp32_mac_pj_per_step``, ...).
    seconds : float
        Wall time of the whole run, with each epoch's evaluation on the host.
    train_seconds : float
        Wall time of the training steps alone (what training images/s divide by).
    backend : str
        Where the products ran (``host``, ``iss``, ``rtl``, ``board``).
    """

    config: TrainingConfig
    epochs: int
    steps: int
    losses: list
    accuracies: list
    accuracy: float
    model_accuracy: float = None
    device: dict = None
    seconds: float = 0.0
    backend: str = "host"
    train_seconds: float = 0.0
    update: str = "host"

    @property
    def images_per_second(self):
        """Training images a second of the steps alone (0 when none ran)."""
        images = self.steps * self.config.batch
        return images / self.train_seconds if self.train_seconds else 0.0

    def lines(self):
        c = self.config
        out = [f"trained {'-'.join(map(str, c.sizes))} on the {self.backend}: {self.epochs} "
               f"epochs, {self.steps} steps of batch {c.batch}, gradients "
               f"{'/'.join(map(str, c.grad_bits))} bits, latent weights LNS {c.weight_bits}-bit "
               f"gamma {c.weight_gamma}, in {self.seconds:.1f} s "
               f"({self.images_per_second:,.0f} training images/s, evaluation aside)",
               f"test accuracy {100 * self.accuracy:.2f}% (training step, LightNorm "
               f"statistics of the training set)"]
        out.append(f"LNS-Madam update on the {self.update}"
                   + (" (latent weights resident in its latent memory)"
                      if self.update == "accelerator" else ""))
        if self.model_accuracy is not None:
            out.append(f"exported model {100 * self.model_accuracy:.2f}% (float batch norms)")
        if self.device:
            d, steps = self.device, max(self.steps, 1)
            out.append(f"accelerator: {d['gemms']:,} GEMM programs, {d['cycles']:,} cycles "
                       f"({d['cycles'] / steps:,.0f} a step), {d['array_beats']:,} array "
                       f"beats, {d['macs']:,} binary MACs")
            layers = d.get("statistics_layers", [])
            stats = len(layers) == c.layers
            parts = ["the products"] + (["the norm statistics"] if layers else []) + (
                ["the update"] if self.update == "accelerator" else [])
            on_chip = ", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 \
                else parts[0]
            rest = ("" if stats else "statistics, " if not layers else
                    "other layers' statistics, ") + "norms, softmax, requantisation" + (
                "" if self.update == "accelerator" else ", update")
            host = [i for i in range(c.layers) if i not in layers]
            where = []
            if layers:
                where.append(f"the accelerator's statistics unit (STATS) for layer(s) "
                             f"{', '.join(map(str, layers))} of {c.layers}, "
                             f"{d['statistics']:,} forward products")
            if host:
                where.append(f"the host for layer(s) {', '.join(map(str, host))} "
                             f"({d.get('statistics_refused')})")
            out.append("LightNorm batch statistics: " + "; ".join(where))
            if d.get("update_cycles"):
                out.append(f"the update: {d['update_cycles'] / steps:,.0f} cycles and "
                           f"{d['update_pj_per_step'] / 1e6:.2f} uJ a step (UPDATE of every "
                           f"layer, the latent words read back)")
            out.append(f"energy of {on_chip}: {d['energy_pj_per_step'] / 1e6:.2f} uJ a step "
                       f"(45 nm model; the same products' MACs in fp32: "
                       f"{d['fp32_mac_pj_per_step'] / 1e6:.2f} uJ)")
            out.append(f"the rest of the step ({rest}): {d['host_pj_per_step'] / 1e6:.3f} uJ "
                       f"of integer arithmetic; the whole step in fp32 arithmetic: "
                       f"{d['fp32_step_pj'] / 1e6:.2f} uJ")
        ours, full = memory_per_sample(c)
        out.append(f"kept for the backward pass: {ours:g} bytes a sample (float32 "
                   f"activations: {full:g})")
        return out


def _norm_affine(step, reference):
    """Per layer ``(scale, offset)``: each LightNorm's BFP parameters from the statistics of
    ``reference`` propagated through the network as :meth:`TrainingStep.forward` does,
    dequantized to float64 per channel."""
    cfg = step.config
    h = np.asarray(reference, dtype=np.int64)
    out = []
    for layer, w in enumerate(step.binary()):
        z = popcount_matmul(h, w, cfg.input_precision(layer), "binary")
        norm = step.norms[layer]
        total, spread = norm.statistics(z)
        params, _, _ = norm.fold_affine(total, spread, len(z), cfg.norm_gamma(layer), 0.0)
        fmt, n = norm.format, w.shape[0]
        scale, offset = (np.concatenate([
            dequantize(BFP(np.int64(p[f"{key}_exp"]), np.asarray(p[key], dtype=np.int64)),
                       fmt) for p in params])[:n] for key in ("scale", "offset"))
        out.append((scale, offset))
        values = dequantize(norm.apply(z, params), fmt).reshape(z.shape)
        h = np.where(values >= 0, 1, -1).astype(np.int64)  # as the step: sign(0) = +1
    return out


def export_model(step, reference, *, name, dataset, input_quantizer):
    """The trained ``step`` as a :class:`lowbit.model.QuantModel`: ``Dense`` layers of the
    latent weights' signs, each followed by a ``BatchNorm`` whose affine is the LightNorm's
    (statistics of the integer inputs ``reference``: ``gamma`` the BFP scale, ``beta`` the
    BFP offset, mean 0, variance 1, eps 0) and, but for the last, a ``Sign``. The compiled
    model thresholds ``scale * z + offset >= 0`` exactly; the training step rounds that sum
    to BFP first, so the two can differ for a sum within half a BFP step of zero."""
    from .model import BatchNorm, Dense, QuantModel, Sign

    layers = []
    affine = _norm_affine(step, reference)
    last = step.config.layers - 1
    for layer, (w, (scale, offset)) in enumerate(zip(step.binary(), affine)):
        layers.append(Dense(w.astype(np.float64), weight_bits=1))
        layers.append(BatchNorm(gamma=scale, beta=offset, mean=np.zeros_like(scale),
                                var=np.ones_like(scale), eps=0.0))
        if layer < last:
            layers.append(Sign())
    return QuantModel(name=name, dataset=dataset, input_quantizer=input_quantizer,
                      input_shape=(step.config.sizes[0],), layers=layers)


def evaluate(step, x, labels, reference):
    """Test accuracy of ``step`` on integer inputs ``x`` (norm statistics of
    ``reference``)."""
    return float((step.predict(x, reference) == np.asarray(labels)).mean())


def train_on_device(data, config=None, *, runtime=None, epochs=8, seed=1, progress=None,
                    backend=None, schedule=True):
    """Train :class:`TrainingStep` on ``data`` (a :class:`lowbit.datasets.Dataset`) for
    ``epochs`` epochs of shuffled batches (the remainder of each epoch dropped), its
    products on ``runtime`` (``None``: on the host), the learning-rate exponent lowered by
    one after 60% and again after 85% of the epochs (``schedule``).
    ``progress(epoch, loss, accuracy)`` is called after every epoch. Returns
    ``(step, report)``."""
    from .device_matmul import DeviceMatmul

    config = TrainingConfig() if config is None else config
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, not {epochs!r}")
    q = data.input_quantizer
    features = int(np.prod(data.input_shape))
    if q.bits != config.input_bits or features != config.sizes[0]:
        raise ValueError(f"the {data.name} data set has {features} "
                         f"{q.bits}-bit inputs; the training configuration expects "
                         f"{config.sizes[0]} of {config.input_bits} bits")
    matmul = None if runtime is None else DeviceMatmul(runtime)
    updater = None
    if runtime is not None and runtime.config.training:
        from .device_update import DeviceUpdate

        updater = DeviceUpdate(runtime, config.shapes, config.weight_bits)
    statistics = None
    on_chip = [0] * config.layers    # products whose statistics STATS computed, per layer
    if runtime is not None and runtime.config.statistics:
        def statistics(x, w, precision, norm):
            got = matmul.statistics(x, w, precision, norm)
            if got is not None:
                on_chip[step.norms.index(norm)] += 1
            return got
    step = TrainingStep(config, matmul=matmul, update=updater, statistics=statistics)
    # Evaluation is a report, not part of training: on the host (the same integers).
    host = TrainingStep(config)
    x_train, x_test = q.quantize(data.x_train), q.quantize(data.x_test)
    rng = np.random.default_rng(seed)
    steps = len(x_train) // config.batch
    if steps == 0:
        raise ValueError(f"a batch of {config.batch} needs at least that many training "
                         f"images; the {data.name} data set has {len(x_train)}")
    losses, accuracies = [], []
    start, train_seconds = time.perf_counter(), 0.0
    for epoch in range(epochs):
        step.config = dataclasses.replace(config, lr_exponent=lr_exponent(
            config.lr_exponent, epoch, epochs) if schedule else config.lr_exponent)
        order = rng.permutation(len(x_train))
        total = 0.0
        began = time.perf_counter()
        for s in range(steps):
            index = order[s * config.batch:(s + 1) * config.batch]
            result = step.step(x_train[index], data.y_train[index])
            total += float(np.mean(result.loss))
        train_seconds += time.perf_counter() - began
        losses.append(total / steps)
        host.weights = step.weights
        accuracies.append(evaluate(host, x_test, data.y_test, x_train))
        log.info("epoch %d: loss %.4f, test accuracy %.4f", epoch + 1, losses[-1],
                 accuracies[-1])
        if progress is not None:
            progress(epoch + 1, losses[-1], accuracies[-1])
    step.config = config  # the schedule's last exponent is not the caller's configuration
    device = None
    if matmul is not None:
        device = dict(matmul.stats)
        actions = matmul.actions
        if updater is not None:
            from . import energy

            device["cycles"] += updater.stats["cycles"]
            device["update_cycles"] = updater.stats["cycles"]
            device["update_pj_per_step"] = sum(
                energy.energy_of(updater.actions, runtime.config).values()) / (epochs * steps)
            actions = actions + updater.actions
        # The layers whose statistics came from the statistics unit, every step (a layer's
        # product has the same shape every step).
        layers = [i for i, n in enumerate(on_chip) if n == epochs * steps]
        device["statistics_layers"] = layers
        if len(layers) < config.layers:
            device["statistics_refused"] = (matmul.statistics_refused
                                            or "the configuration has no statistics unit")
        device.update(step_energy(config, runtime.config, actions, epochs * steps,
                                  update_on_host=updater is None, stats_on_chip=layers))
    report = DeviceTrainReport(config, epochs, epochs * steps, losses, accuracies,
                               accuracies[-1], device=device,
                               seconds=time.perf_counter() - start,
                               backend=backend or ("host" if runtime is None else "device"),
                               train_seconds=train_seconds,
                               update="host" if updater is None else "accelerator")
    return step, report


def lr_exponent(exponent, epoch, epochs):
    """The learning-rate exponent of ``epoch`` (from 0) of ``epochs``: a step schedule.
    LNS-Madam moves the largest gradient's weight ``2^e`` codes: ``e`` for the first 60% of
    the epochs, ``e - 1`` from there, ``e - 2`` for the last 15% (never below 0), so the
    accuracy settles instead of moving 1-2 points from epoch to epoch."""
    drop = (epoch >= 0.6 * epochs) + (epoch >= 0.85 * epochs)
    return max(0, exponent - drop)


def training_macs(config):
    """Useful MACs of one training step's products per sample: the forward product of
    every layer, ``dW`` of every layer and ``dX`` of all but the first (each product's
    ``K x N`` once, whatever the operand bits)."""
    pairs = list(zip(config.sizes[:-1], config.sizes[1:]))
    return 2 * sum(k * n for k, n in pairs) + sum(k * n for k, n in pairs[1:])


def memory_per_sample(config):
    """``(ours, float32)`` bytes a sample keeps for the backward pass: its k-bit input and
    two bits per hidden activation (sign and straight-through mask), against the input and
    every layer's output as float32."""
    hidden = sum(config.sizes[1:-1])
    ours = (config.sizes[0] * config.input_bits + 2 * hidden) / 8
    return ours, 4 * sum(config.sizes)


def step_energy(config, accelerator, actions, steps, tech=None, update_on_host=True,
                stats_on_chip=()):
    """Energy of the products of ``steps`` training steps from their action counts
    (``lowbit.energy``'s 45 nm table), per step, beside the same products' MACs on a
    hypothetical fp32 datapath (``energy.mac_energy``, MACs only); the step's per-element
    part (``host_pj_per_step``, the update in it unless it ran on the accelerator:
    ``update_on_host``, each layer's statistics unless the statistics unit computed them:
    ``stats_on_chip``, layer indices) and the whole step in fp32 arithmetic
    (``fp32_step_pj``) from :mod:`lowbit.training_energy`'s operation counts."""
    from . import energy

    from .training_energy import fp32_operations, host_operations, operations_energy

    tech = energy.default_technology() if tech is None else tech
    components = energy.energy_of(actions, accelerator, tech)
    total = sum(components.values())
    fp32 = training_macs(config) * config.batch * energy.mac_energy(tech, "fp32")
    host = operations_energy(host_operations(config, update=update_on_host,
                                             stats_on_chip=stats_on_chip), tech)
    return {"energy_pj_per_step": total / steps, "fp32_mac_pj_per_step": fp32,
            "energy_components_pj_per_step": {k: v / steps for k, v in components.items()},
            "host_pj_per_step": sum(host.values()), "host_components_pj_per_step": host,
            "fp32_step_pj": sum(operations_energy(fp32_operations(config), tech).values())}
