"""The training step's LNS-Madam update on the accelerator: every layer's latent weights
resident in a training configuration's ``latent`` memory, updated there by ``UPDATE``.

:class:`DeviceUpdate` is the update hook of :class:`lowbit.golden.training.TrainingStep`:
per step one program, an ``UPDATE`` of each layer by its ``dW`` mantissas (one byte a
weight, from the host) and a ``STORE`` of the updated latent words, which become the host's
copy of the weights (the products of the next step send their signs). The accelerator
also writes the signs into its weight memory (``docs/training.md``); the product programs
of :class:`lowbit.device_matmul.DeviceMatmul` load their own weights, so nothing reads them
there yet.

The latent words are loaded once, and again whenever the weights handed in are not the
ones the last update returned (a caller that replaced them).
"""

import dataclasses
import logging

import numpy as np

from .energy import Actions, count_program
from .layout import latent_words, pack_gradients, pack_latent, unpack_latent
from .program import Program

log = logging.getLogger(__name__)

__all__ = ["DeviceUpdate", "latent_depth_for", "with_latent_memory", "with_statistics_unit",
           "training_accelerator"]


def latent_depth_for(shapes, config):
    """The smallest ``latent_depth`` (a power of two) that holds the latent weights of
    layers of ``shapes`` ``(out, in)`` on ``config``'s array."""
    words = sum(latent_words(shape, config) for shape in shapes)
    return 1 << max(0, (words - 1).bit_length())


def with_latent_memory(base, training):
    """``base`` (an AcceleratorConfig) as a training configuration for the network of
    ``training`` (a :class:`~lowbit.golden.training.TrainingConfig`): a latent memory that
    holds every layer, of its LNS word."""
    return base.replace(latent_depth=latent_depth_for(training.shapes, base),
                        latent_bits=training.weight_bits)


def training_accelerator(base, training):
    """``base`` (an AcceleratorConfig) made to train the network of ``training`` on the
    core: :func:`with_latent_memory`, then :func:`with_statistics_unit`."""
    return with_statistics_unit(with_latent_memory(base, training), training)


def with_statistics_unit(config, training):
    """``config`` with a statistics unit for the widest layer's norm of ``training``
    (``norm_channels``, the network's ``norm_chunks``) when the configuration can hold one
    (a power-of-two chunk count, at most 1,024 channels, sums that fit a lane); else
    ``config`` unchanged: the norm statistics then stay on the host."""
    widest = max(out for out, _ in training.shapes)
    channels = -(-widest // config.cols) * config.cols
    try:
        return config.replace(norm_channels=channels, norm_chunks=training.norm_chunks)
    except ValueError as error:
        log.info("no statistics unit for this network: %s", error)
        return config


class DeviceUpdate:
    """``update(weights, grads, grad_bits, lr_exponent)`` on the accelerator behind
    ``runtime``: the new latent weights (:class:`~lowbit.golden.lns.LNSTensor` per layer),
    bit for bit those of :func:`lowbit.golden.training.madam_update`.

    Parameters
    ----------
    runtime : lowbit.runtime.Runtime
        Its configuration must be a training one (``latent_depth > 0``) whose latent memory
        holds every layer.
    shapes : list of (int, int)
        ``(out, in)`` of each layer.
    bits : int
        The latent weights' LNS word (the configuration's ``latent_bits``).

    Attributes
    ----------
    stats : dict
        ``cycles``, ``programs`` and ``updates`` (latent weights updated, padding included).
    actions : lowbit.energy.Actions
        The energy model's action counts of every program run.

    Raises
    ------
    ValueError
        For a configuration without a latent memory, of another LNS word, or too small.
    """

    def __init__(self, runtime, shapes, bits):
        c = runtime.config
        if not c.training:
            raise ValueError("the update on the accelerator needs a training configuration: "
                             "latent_depth is 0 (no latent memory)")
        if c.latent_bits != bits:
            raise ValueError(f"the training step's latent weights are {bits}-bit LNS words; "
                             f"the accelerator's latent_bits is {c.latent_bits}")
        self.shapes = [tuple(s) for s in shapes]
        self.words = [latent_words(s, c) for s in self.shapes]
        self.offsets = list(np.cumsum([0] + self.words[:-1]))
        total = sum(self.words)
        if total > c.latent_depth:
            raise ValueError(f"the latent weights of layers {self.shapes} take {total} latent "
                             f"words; latent_depth is {c.latent_depth} (at least "
                             f"{latent_depth_for(self.shapes, c)} needed)")
        if total > c.weight_depth * c.cols:
            # UPDATE writes each latent word's signs into a weight lane of its own.
            raise ValueError(f"the latent weights of layers {self.shapes} take {total} weight "
                             f"lanes for their signs; the weight memory has "
                             f"{c.weight_depth * c.cols}")
        self.runtime, self.config = runtime, c
        self.stats = {"cycles": 0, "programs": 0, "updates": 0}
        self.actions = Actions()
        self._latest = None

    def _run(self, program, inputs=()):
        result = self.runtime.run(program, inputs)
        self.stats["cycles"] += int(result.stats.get("cycles", 0))
        self.stats["programs"] += 1
        self.actions = self.actions + Actions.total(count_program(program))
        return result

    def load(self, weights):
        """Write ``weights`` (one LNSTensor per layer) into the latent memory."""
        words = [pack_latent(w.sign, w.code, self.config) for w in weights]
        self._run(Program(self.config, [
            *[dict(opcode="LOAD", buffer="LATENT", source="CONST", addr=int(o), count=n,
                   unread=0, unwritten=0) for o, n in zip(self.offsets, self.words)],
            dict(opcode="HALT", status=0)], constants=np.concatenate(words).reshape(-1)))
        self._latest = list(weights)

    def __call__(self, weights, grads, grad_bits, lr_exponent):
        if self._latest is None or any(a is not b for a, b in zip(weights, self._latest)):
            self.load(weights)
        c = self.config
        instrs = [dict(opcode="UPDATE", source="INPUT", lat_addr=int(o), w_addr=int(o),
                       count=n, grad_bits=int(bits), lr_exponent=int(lr_exponent),
                       unread=0, unwritten=0)
                  for o, n, bits in zip(self.offsets, self.words, grad_bits)]
        instrs += [dict(opcode="STORE", buffer="LATENT", addr=0, count=sum(self.words),
                        unwritten=0), dict(opcode="HALT", status=0)]
        inputs = np.concatenate([pack_gradients(g, c) for g in grads])
        result = self._run(Program(c, instrs), inputs)
        out = np.asarray(result.outputs[0]).reshape(-1, c.latent_bits)
        new = []
        for w, o, n, shape in zip(weights, self.offsets, self.words, self.shapes):
            sign, code = unpack_latent(out[o:o + n], shape, c)
            new.append(dataclasses.replace(w, sign=sign, code=code))
        self.stats["updates"] += sum(self.words) * c.word
        self._latest = new
        return new
