"""The compiler: a quantized network (:class:`lowbit.model.QuantModel`) to a program for the
full-rate core, and the host side that runs it on model-domain inputs
(``docs/compiler.md``).

Passes, in order:

1. **fold**: the model's integer form (:meth:`~lowbit.model.QuantModel.integer_form`):
   weight scales, input steps and batch norm folded into integer thresholds on each
   channel's dot product (exact); the last layer keeps raw integer scores and a host affine;
2. **check**: every layer against the core (+-1 weights, unsigned or +-1 inputs of at most
   ``max_act_bits`` planes, outputs of at most ``max_out_bits`` bits, ``K <= max_k``, no
   convolutions) and the memories against the batch; what cannot run gets a
   :class:`CompileError` naming the layer and why;
3. **datapath**: each dense layer is one ``GEMM`` per batch; a flipped channel (batch norm
   with ``gamma < 0``: output +1 iff ``dot <= tau``) has its weights and thresholds negated
   (``-dot >= -tau``), and every threshold on the dot product becomes one on the
   accumulator (:func:`lowbit.layout.acc_threshold`), clipped to ``0..never``;
4. **memory plan**: two regions of the ``in`` memory (double-buffered inputs), two of the
   ``act`` memory (hidden activations ping-pong between layers), two of the ``score``
   memory (alternating by batch); weights and thresholds resident (loaded once per
   :func:`run_model` call) when they fit, otherwise streamed with every batch into
   alternating halves (or the whole) of their memories;
5. **schedule**: one stream for all batches of a call: the preamble, the first batch's
   input, then per batch the layer ``GEMM`` s, the next batch's input ``LOAD`` at the place
   the cycle model finds fastest, and a ``STORE`` of the scores; the wait fields make it
   race-free (:meth:`lowbit.program.Program.check_races`).

The program file holds the preamble, both input loads, a body per input region and a
``HALT``: as it stands it runs two batches; :func:`run_model` assembles the stream for any
number (``metadata["schedule"]``).
"""

import dataclasses
import logging
import math

import numpy as np

from .config.accelerator import AcceleratorConfig
from .isa import MAX_ARGMAX_CLASSES, NO_WAIT, Opcode, instruction_set
from .layout import (acc_threshold, conv_rows, dot_from_acc, flattened_weight, pack_act,
                     pack_thresholds, pack_weights, plane_words, rank_table, tiles,
                     unpack_argmax, unpack_scores)
from .model import ConvShape, QuantModel
from .program import Program
from .timing import Timing

__all__ = ["CompileError", "compile_model", "run_model", "assemble", "batch_stream",
           "METADATA_KIND", "RESULTS"]

log = logging.getLogger(__name__)

#: ``metadata["kind"]`` of a compiled model's program.
METADATA_KIND = "lowbit-model"

#: What a compiled model sends back per input (:func:`compile_model`'s ``result``).
RESULTS = ("scores", "argmax")

#: The largest wait value that still waits (``NO_WAIT`` never does).
_MOST_WAIT = NO_WAIT - 1


class CompileError(ValueError):
    """A model (or one of its layers) that this accelerator cannot run; the message names
    the layer and the reason."""


def _where(i, layer):
    kind = "dense" if layer.conv is None else "conv"
    return f"layer {i} ({layer.role} {kind} {layer.weight.shape[1]} -> {layer.weight.shape[0]})"


def _planes(precision):
    # (planes, bipolar) of an activation operand: +-1 is one plane (bit 1 = +1), unsigned
    # k-bit values k planes (1-bit 0/1 values one plane).
    if precision.kind == "binary":
        return 1, True
    return precision.bits, False


def _out_bits(precision):
    return 1 if precision.kind == "binary" else precision.bits


def _check(config, form):
    """Every integer layer against the core (pass 2)."""
    array = config.xnor_array
    for i, layer in enumerate(form.layers):
        where = _where(i, layer)
        a, w = layer.input_precision, layer.weight_precision
        if layer.conv is not None:
            _check_conv(config, layer, i, where)
        if w.kind != "binary":
            raise CompileError(f"{where}: {w} weights are not supported (the full-rate "
                               f"core's weights are +-1)")
        if a.kind == "signed":
            raise CompileError(f"{where}: signed inputs are not supported (the model's "
                               f"inputs are {a})")
        planes, _ = _planes(a)
        if planes > array.max_act_bits:
            raise CompileError(f"{where}: {a} inputs need max_act_bits >= {planes}, the "
                               f"XNOR array has {array.max_act_bits}")
        if not layer.last:
            out = layer.output_precision
            if _out_bits(out) > config.max_out_bits:
                raise CompileError(f"{where}: {out} outputs need max_out_bits >= "
                                   f"{_out_bits(out)}, the accelerator has "
                                   f"{config.max_out_bits}")
        k = layer.weight.shape[1]
        if k > array.max_k:
            raise CompileError(f"{where}: {k} inputs exceed the XNOR array's max_k "
                               f"{array.max_k}")


def _check_conv(config, layer, i, where):
    conv = layer.conv
    if i > 0:
        raise CompileError(f"{where}: only the first layer may be a convolution (the host "
                           f"builds its im2col rows; the core does not build them from the "
                           f"act memory)")
    window = (conv.pool or 1) ** 2
    if window > config.max_pool:
        raise CompileError(f"{where}: its {conv.pool}x{conv.pool} max-pooling needs max_pool "
                           f">= {window}, the accelerator has {config.max_pool}")
    positions = math.prod(conv.pooled_shape())
    if positions == 0:
        raise CompileError(f"{where}: no output position is left after pooling")
    bits = _out_bits(layer.output_precision)
    if bits > 1 and positions > 1:
        raise CompileError(f"{where}: its {layer.output_precision} outputs at {positions} "
                           f"positions cannot be flattened on the core (a convolution's "
                           f"outputs must be 1-bit, or one position)")


@dataclasses.dataclass
class _Layer:
    """One layer as the core runs it (pass 3)."""

    name: str
    weight: np.ndarray        # +-1 (N, K) as packed: flipped channels negated
    planes: int
    bipolar: bool
    out_bits: int             # None: the last layer (SCORES)
    thresholds: np.ndarray    # (N, 2^out_bits - 1) on the accumulator, 0..never; or None
    conv: ConvShape = None    # a (first-layer) convolution
    pool: int = 1             # row tiles per pooling window (P * P)
    positions: int = 1        # output row tiles per block of samples (pooled positions)
    packed: np.ndarray = None  # the weight as the memory holds it, if not `weight`

    @property
    def k(self):
        return self.weight.shape[1]

    @property
    def n(self):
        return self.weight.shape[0]

    @property
    def device_weight(self):
        return self.weight if self.packed is None else self.packed

    @property
    def in_tiles(self):
        """Row tiles the layer reads per block of samples."""
        return self.positions * self.pool

    def words(self, config):
        return plane_words(self.device_weight.shape[1], config.word)

    def n_tiles(self, config):
        return tiles(self.n, config.cols)

    def weight_words(self, config):
        return self.n_tiles(config) * self.words(config)

    def thresh_words(self, config):
        return 0 if self.out_bits is None else \
            self.n_tiles(config) * ((1 << self.out_bits) - 1)


def _datapath(config, form):
    """Pass 3: weights as packed and thresholds on the accumulator."""
    out = []
    for i, layer in enumerate(form.layers):
        planes, bipolar = _planes(layer.input_precision)
        weight = np.asarray(layer.weight, dtype=np.int64)
        name = _where(i, layer)[len(f"layer {i} ("):-1]
        shape = {}
        if layer.conv is not None:
            side = layer.conv.pool or 1
            shape = dict(conv=layer.conv, pool=side * side,
                         positions=math.prod(layer.conv.pooled_shape()))
        # A dense layer after a convolution reads its outputs position by position.
        after = out[-1] if out and out[-1].conv is not None else None

        def packed(weight):
            return None if after is None else \
                flattened_weight(weight, after.n, after.positions, config.word)

        if layer.last:
            out.append(_Layer(name, weight, planes, bipolar, None, None, packed=packed(weight),
                              **shape))
            continue
        tau = np.asarray(layer.thresholds, dtype=np.int64)
        flip = np.asarray(layer.flip, dtype=bool)
        # dot(-w) = -dot(w) exactly, and dot <= tau  <=>  -dot >= -tau: a flipped channel
        # becomes an ordinary one. The count of thresholds passed does not depend on their
        # order; they are sorted ascending for readability.
        sign = np.where(flip, -1, 1)
        weight = weight * sign[:, None]
        tau = np.sort(tau * sign[:, None], axis=1)
        acc = acc_threshold(tau, weight, planes, bipolar=bipolar)
        # acc >= 0 always: a threshold below 0 always passes, as 0 does; one above every
        # accumulator never passes, as `never` does.
        acc = np.clip(acc, 0, config.never)
        out.append(_Layer(name, weight, planes, bipolar, _out_bits(layer.output_precision),
                          acc, packed=packed(weight), **shape))
    return out


def _memory_error(batch, memory, need, region, config):
    return CompileError(f"a batch of {batch} needs {need} words of the {memory} memory (two "
                        f"regions of {region}), it has {config.depth(memory)}: use a "
                        f"smaller batch")


def _plan(config, layers, batch, resident):
    """Pass 4: the regions of every memory; returns a dict of addresses and sizes."""
    mt = tiles(batch, config.rows)
    first, last = layers[0], layers[-1]
    in_region = mt * first.in_tiles * first.planes * first.words(config)
    # Two input regions let the next batch's inputs load while this batch's first layer
    # reads; when only one fits (a convolution's im2col rows are large) the load waits.
    in_stride = in_region if 2 * in_region <= config.in_depth else 0
    if in_region > config.in_depth:
        raise CompileError(f"a batch of {batch} needs {in_region} words of the in memory, it "
                           f"has {config.in_depth}: use a smaller batch")
    isa = instruction_set(config)
    act_region = max([mt * layer.positions * layer.out_bits
                      * isa.out_words(layer.n_tiles(config)) for layer in layers[:-1]] + [0])
    if 2 * act_region > config.act_depth:
        raise _memory_error(batch, "act", 2 * act_region, act_region, config)
    score_region = mt * config.rows * last.n_tiles(config)
    if 2 * score_region > config.score_depth:
        raise _memory_error(batch, "score", 2 * score_region, score_region, config)
    weights = [layer.weight_words(config) for layer in layers]
    thresh = [layer.thresh_words(config) for layer in layers]
    fits = sum(weights) <= config.weight_depth and sum(thresh) <= config.thresh_depth
    if resident is None:
        resident = fits
    elif resident and not fits:
        raise CompileError(f"the weights and thresholds take {sum(weights)} words of the "
                           f"weight memory ({config.weight_depth}) and {sum(thresh)} of the "
                           f"thresh memory ({config.thresh_depth}): they cannot stay "
                           f"resident")
    plan = {"m_tiles": mt, "in": [0, in_region], "in_stride": in_stride,
            "act": [0, act_region],
            "score": [0, score_region], "resident": bool(resident)}
    if resident:
        plan["weight"] = list(np.cumsum([0] + weights[:-1]).astype(int))
        plan["thresh"] = list(np.cumsum([0] + thresh[:-1]).astype(int))
        return plan
    for i, layer in enumerate(layers):
        if weights[i] > config.weight_depth:
            raise CompileError(f"{_where_plain(i, layer)}: its weights take {weights[i]} "
                               f"words, the weight memory has {config.weight_depth}")
        if thresh[i] > config.thresh_depth:
            raise CompileError(f"{_where_plain(i, layer)}: its thresholds take {thresh[i]} "
                               f"words, the thresh memory has {config.thresh_depth}")
    # Streamed: layer after layer into alternate halves when every layer fits half (a load
    # then overlaps the previous layer's GEMM), else into the whole memory (a load waits
    # for every earlier GEMM).
    plan["weight_halves"] = max(weights) <= config.weight_depth // 2
    plan["thresh_halves"] = max(thresh) <= config.thresh_depth // 2
    return plan


def _where_plain(i, layer):
    return f"layer {i} ({layer.name})"


def _gemm(config, layer, plan, i, parity, dst, b_addr, thr_addr, last):
    mt = plan["m_tiles"]
    if i == 0:
        # The batch's inputs: in region `parity`.
        a_buffer, a_addr = "IN", plan["in_stride"] * parity
    else:
        # Layer i reads act region i % 2 (the previous layer's output).
        a_buffer, a_addr = "ACT", plan["act"][1] * (i % 2)
    return dict(opcode="GEMM", a_buffer=a_buffer, a_addr=a_addr, b_addr=b_addr,
                planes=layer.planes, words=layer.words(config),
                m_tiles=mt * layer.positions, n_tiles=layer.n_tiles(config), pool=layer.pool,
                mode="SCORES" if last else "THRESHOLD",
                out_bits=1 if last else layer.out_bits, dst_addr=dst, thr_addr=thr_addr,
                # Layers after the first read activations the previous GEMM writes.
                sync=int(i > 0),
                # The last layer overwrites the scores of two batches ago: the STORE of
                # those (all but the latest STORE) must have finished.
                unsent=1 if last else NO_WAIT)


def _body(config, layers, plan, parity, rank=None):
    """The instructions of one batch whose inputs sit in ``in`` region ``parity``, without
    the next batch's input load; returns ``(instructions, owners, constants)``. With
    ``rank`` (an argmax result) the batch ends in an ``ARGMAX`` instead of a ``STORE``."""
    n_layers = len(layers)
    instrs, owners, consts = [], [], []
    for i, layer in enumerate(layers):
        last = i == n_layers - 1
        # Activations: layer i reads act region i % 2 and writes region (i + 1) % 2.
        dst = plan["score"][1] * parity if last else plan["act"][1] * ((i + 1) % 2)
        if plan["resident"]:
            b_addr, thr_addr = plan["weight"][i], plan["thresh"][i]
        else:
            # The GEMM's place in the stream of all batches decides its half.
            seq = (parity * n_layers + i) % 2
            b_addr = seq * (config.weight_depth // 2) if plan["weight_halves"] else 0
            thr_addr = seq * (config.thresh_depth // 2) if plan["thresh_halves"] else 0
            # Halves: the GEMM two before used this half; the one just before may run on.
            # Weights are operands (read by the array's beats), thresholds are read by the
            # result stage until the GEMM has written its results.
            wait = 1 if plan["weight_halves"] else 0
            instrs.append(dict(opcode="LOAD", buffer="WEIGHT", source="CONST", addr=b_addr,
                               count=layer.weight_words(config), unread=wait,
                               unwritten=NO_WAIT))
            owners.append(i)
            consts.append(pack_weights(layer.device_weight, config).reshape(-1))
            if not last:
                wait = 1 if plan["thresh_halves"] else 0
                instrs.append(dict(opcode="LOAD", buffer="THRESH", source="CONST",
                                   addr=thr_addr, count=layer.thresh_words(config),
                                   unread=wait, unwritten=wait))
                owners.append(i)
                consts.append(pack_thresholds(layer.thresholds, config).reshape(-1))
        instrs.append(_gemm(config, layer, plan, i, parity, dst, b_addr,
                            0 if last else thr_addr, last))
        owners.append(i)
    # The STORE (or ARGMAX) waits for every earlier GEMM, the last layer's included.
    if rank is None:
        instrs.append(dict(opcode="STORE", buffer="SCORE", addr=plan["score"][1] * parity,
                           count=plan["score"][1], unwritten=0))
    else:
        last = layers[-1]
        instrs.append(dict(opcode="ARGMAX", addr=plan["score"][1] * parity,
                           groups=last.n_tiles(config),
                           samples=plan["m_tiles"] * config.rows, classes=last.n,
                           rank_addr=0, stride=rank["stride"], unwritten=0))
    owners.append(n_layers - 1)
    return instrs, owners, consts


def _score_meta(last):
    """``metadata["scores"]``: what turns the last layer's accumulators into dot products."""
    return {"k": last.k, "planes": last.planes, "bipolar": last.bipolar,
            "popcount": [int(v) for v in (last.weight > 0).sum(axis=1)]}


def _host_scores(acc, score, scale, offset):
    """The float class scores of accumulators ``acc`` ``(M, classes)``: the dot products
    (``score`` is ``metadata["scores"]``), times the host affine. :func:`run_model` and the
    argmax unit's rank table both compute them here, so equal scores are equal bits."""
    k, pop = score["k"], np.asarray(score["popcount"], dtype=np.int64)
    # dot_from_acc depends on the weights only through K and each channel's popcount.
    weights = np.where(np.arange(k)[None, :] < pop[:, None], 1, -1)
    dots = dot_from_acc(acc, weights, score["planes"], bipolar=score["bipolar"])
    return dots * np.asarray(scale) + np.asarray(offset)


def _rank_table(config, layers, scale, offset):
    """The argmax unit's table for the last layer: every accumulator value it can produce
    (``0 .. (2^planes - 1) K``) for every class, ranked by the host's float score."""
    last = layers[-1]
    if not config.argmax:
        raise CompileError("result 'argmax' needs an argmax unit (rank_depth > 0); this "
                           "configuration has none")
    if last.n > MAX_ARGMAX_CLASSES:
        raise CompileError(f"{_where_plain(len(layers) - 1, last)}: {last.n} classes, an "
                           f"argmax byte holds at most {MAX_ARGMAX_CLASSES}")
    stride = ((1 << last.planes) - 1) * last.k + 1
    if last.n * stride > config.rank_depth:
        raise CompileError(f"result 'argmax' needs {last.n * stride} rank words ({last.n} "
                           f"classes x {stride} accumulator values), the rank memory holds "
                           f"{config.rank_depth}: use result 'scores' or a larger rank_depth")
    score = _score_meta(last)
    table = rank_table(lambda acc: _host_scores(acc, score, scale, offset), last.n, stride)
    return {"stride": stride, "table": table}


def _floats(values):
    # The host affine as metadata holds it (and run_model reads it back).
    return [float(v) for v in values]


def _input_load(plan, region, unread):
    return dict(opcode="LOAD", buffer="IN", source="INPUT", addr=plan["in_stride"] * region,
                count=plan["in"][1], unread=unread, unwritten=NO_WAIT)


def _load_wait(body, at, n_layers, single):
    """The next batch's input load's ``unread`` at body position ``at``, or ``None`` where
    it cannot go."""
    gemms = sum(1 for instr in body[:at] if instr["opcode"] == "GEMM")
    if single:
        # One region: the load overwrites what this batch's first GEMM reads, so it goes
        # after that GEMM and waits until it has read (the GEMMs after it may run on).
        return None if gemms == 0 else min(gemms - 1, _MOST_WAIT)
    # Two regions: it overwrites the region the previous batch's first GEMM read; GEMMs
    # dispatched after that one are the previous batch's other layers and the GEMMs of
    # this batch before the load.
    return min(n_layers - 1 + gemms, _MOST_WAIT)


def assemble(pieces, batches):
    """The instruction and constant order of a run of ``batches`` batches.

    ``pieces`` is ``metadata["schedule"]`` of a compiled program; returns ``(instructions,
    constants)``, two lists of ``(start, stop)`` ranges of the stored program's
    instructions and constants, in stream order (the last instruction range is ``HALT``).
    """
    if batches < 1:
        raise ValueError(f"batches must be at least 1, not {batches}")
    instrs, consts = [tuple(pieces["preamble"])], [tuple(pieces["preamble_constants"])]
    loads = pieces["loads"]
    at = pieces["load_at"]
    instrs.append((loads[0], loads[0] + 1))
    for b in range(batches):
        start, stop = pieces["bodies"][b % 2]
        instrs.append((start, start + at))
        if b + 1 < batches:
            nxt = loads[(b + 1) % 2]
            instrs.append((nxt, nxt + 1))
        instrs.append((start + at, stop))
        consts.append(tuple(pieces["body_constants"][b % 2]))
    instrs.append((pieces["halt"], pieces["halt"] + 1))
    return instrs, consts


def batch_stream(program, batches):
    """The :class:`~lowbit.program.Program` that runs ``batches`` batches of a compiled
    ``program``: what :func:`run_model` sends (:func:`assemble`)."""
    ranges, const_ranges = assemble(program.metadata["schedule"], batches)
    return Program(program.config,
                   [i for start, stop in ranges for i in program.instructions[start:stop]],
                   np.concatenate([program.constants[start:stop]
                                   for start, stop in const_ranges]))


def _stream(instructions, pieces, batches):
    ranges, _ = assemble(pieces, batches)
    return [instr for start, stop in ranges for instr in instructions[start:stop]]


def compile_model(model, config=None, *, batch=16, resident=None, result="scores"):
    """Compile ``model`` for ``config`` (default ``AcceleratorConfig()``) to a
    :class:`~lowbit.program.Program` running ``batch`` inputs per batch.

    ``resident``: keep every weight and threshold in its memory, loaded by a preamble
    that :func:`run_model` sends once per call; ``None`` (default) when they fit, ``False``
    streams them with each batch, ``True`` requires them to fit.

    ``result``: what the accelerator sends back per input: ``"scores"`` (the last layer's
    accumulators, from which :func:`run_model` computes the float class scores) or
    ``"argmax"`` (the predicted class, one byte, from the argmax unit: its rank table,
    :func:`lowbit.layout.rank_table` of the same float scores, goes into the preamble, so
    the class is the host's ``argmax`` of the scores exactly).

    Raises
    ------
    CompileError
        For a layer the accelerator cannot run (named, with the reason), or a batch or
        model that does not fit its memories.
    """
    if not isinstance(model, QuantModel):
        raise TypeError(f"model must be a QuantModel, not {model!r}")
    config = AcceleratorConfig() if config is None else config
    if not isinstance(config, AcceleratorConfig):
        raise TypeError(f"config must be an AcceleratorConfig, not {config!r}")
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise ValueError(f"batch must be a positive integer, not {batch!r}")
    if resident is not None and not isinstance(resident, bool):
        raise TypeError(f"resident must be True, False or None, not {resident!r}")
    if result not in RESULTS:
        raise ValueError(f"result must be one of {', '.join(RESULTS)}, not {result!r}")
    form = model.integer_form()
    _check(config, form)
    layers = _datapath(config, form)
    for i, layer in enumerate(layers):
        if layer.words(config) > config.max_words:
            raise CompileError(f"{_where_plain(i, layer)}: its inputs take "
                               f"{layer.words(config)} words as the act memory holds them "
                               f"(each of the convolution's {layers[i - 1].positions} "
                               f"positions in whole words), the XNOR array's max_k allows "
                               f"{config.max_words}")
    plan = _plan(config, layers, batch, resident)
    n_layers = len(layers)

    # The preamble: resident weights and thresholds, once per call.
    preamble, pre_owner, pre_consts = [], [], []
    if plan["resident"]:
        for i, layer in enumerate(layers):
            preamble.append(dict(opcode="LOAD", buffer="WEIGHT", source="CONST",
                                 addr=plan["weight"][i], count=layer.weight_words(config),
                                 unread=NO_WAIT, unwritten=NO_WAIT))
            pre_owner.append(i)
            pre_consts.append(pack_weights(layer.device_weight, config).reshape(-1))
            if layer.out_bits is not None:
                preamble.append(dict(opcode="LOAD", buffer="THRESH", source="CONST",
                                     addr=plan["thresh"][i],
                                     count=layer.thresh_words(config), unread=NO_WAIT,
                                     unwritten=NO_WAIT))
                pre_owner.append(i)
                pre_consts.append(pack_thresholds(layer.thresholds, config).reshape(-1))
    rank = None
    if result == "argmax":
        rank = _rank_table(config, layers, _floats(form.layers[-1].scale),
                           _floats(form.layers[-1].offset))
        preamble.append(dict(opcode="LOAD", buffer="RANK", source="CONST", addr=0,
                             count=len(rank["table"]), unread=NO_WAIT, unwritten=NO_WAIT))
        pre_owner.append(n_layers - 1)
        pre_consts.append(rank.pop("table").astype(np.uint64))
    bodies = [_body(config, layers, plan, parity, rank) for parity in (0, 1)]
    sizes = [sum(len(c) for c in part) for part in (pre_consts, bodies[0][2])]

    # Where the next batch's input load goes: the place the cycle model finds fastest over
    # a few batches (before the batch's GEMMs it may hold them up while the previous
    # batch's first GEMM still reads its region; after them it runs while they compute).
    best = None
    for at in range(len(bodies[0][0]) + 1):
        unread = _load_wait(bodies[0][0], at, n_layers, plan["in_stride"] == 0)
        if unread is None:
            continue
        instrs, pieces = _layout(plan, preamble, bodies, sizes, unread, at)
        timing = Timing(config)
        for instr in _stream(instrs, pieces, 4):
            timing.step(instruction_set(config).check(instr))
        if best is None or timing.cycles < best[0]:
            best = (timing.cycles, at, unread)
    _, at, unread = best
    instrs, pieces = _layout(plan, preamble, bodies, sizes, unread, at)
    owners = pre_owner + [0, 0] + bodies[0][1] + bodies[1][1] + [n_layers - 1]
    consts = pre_consts + bodies[0][2] + bodies[1][2]
    last = form.layers[-1]
    metadata = {
        "kind": METADATA_KIND, "model": model.name, "dataset": model.dataset,
        "batch": batch, "batches": 2, "input_shape": list(form.input_shape),
        "input_quantizer": form.input_quantizer.to_json(),
        "input_planes": layers[0].planes, "input_bipolar": layers[0].bipolar,
        "input_features": math.prod(form.input_shape), "classes": layers[-1].n,
        "conv": None if layers[0].conv is None else dataclasses.asdict(layers[0].conv),
        "scores": _score_meta(layers[-1]),
        "layers": [{"name": layer.name,
                    "instructions": [j for j, o in enumerate(owners) if o == i],
                    "act_bits": layer.planes, "weight_bits": 1, "k": layer.k,
                    "n": layer.n, "out_bits": layer.out_bits, "positions": layer.in_tiles}
                   for i, layer in enumerate(layers)],
        "scale": _floats(last.scale), "offset": _floats(last.offset),
        "resident": ({"instructions": len(preamble), "constants": sizes[0]}
                     if plan["resident"] else None),
        "preamble": {"instructions": len(preamble), "constants": sizes[0]},
        "result": result, "rank": rank,
        "regions": {name: plan[name][1] for name in ("in", "act", "score")},
        "schedule": pieces,
    }
    data = np.concatenate(consts) if consts else np.zeros(0, dtype=np.uint64)
    program = Program(config, instrs, data, metadata)
    # The schedule's own invariant (a failure is a bug here, not in the model): the stored
    # program and longer streams are race-free.
    program.check_races()
    batch_stream(program, 3).check_races()
    log.info("compiled %s: %d layers, %s weights, next input loaded at body position %d",
             model.name, n_layers, "resident" if plan["resident"] else "streamed", at)
    return program


def _layout(plan, preamble, bodies, sizes, unread, at):
    # Stored program: preamble, the input load of each region, body 0, body 1, HALT.
    loads = [_input_load(plan, region, unread) for region in (0, 1)]
    instrs = [*preamble, *loads, *bodies[0][0], *bodies[1][0], dict(opcode="HALT", status=0)]
    p = len(preamble)
    b0 = p + 2
    b1 = b0 + len(bodies[0][0])
    pieces = {"preamble": [0, p], "loads": [p, p + 1], "bodies": [[b0, b1],
                                                                  [b1, b1 + len(bodies[1][0])]],
              "load_at": at, "halt": len(instrs) - 1,
              "preamble_constants": [0, sizes[0]],
              "body_constants": [[sizes[0], sizes[0] + sizes[1]],
                                 [sizes[0] + sizes[1], sizes[0] + 2 * sizes[1]]]}
    return instrs, pieces


def _quantize(meta, x):
    x = np.asarray(x)
    shape = tuple(meta["input_shape"])
    if x.ndim == 2 and len(shape) > 1 and x.shape[1] == int(np.prod(shape)):
        x = x.reshape(len(x), *shape)  # flat rows, as a data set stores images
    if x.ndim < 1 or x.shape[1:] != shape:
        if x.shape == shape:
            x = x[None]
        else:
            raise ValueError(f"inputs must have shape (n, {', '.join(map(str, shape))}), "
                             f"not {x.shape}")
    if x.dtype.kind not in "biuf" or not np.all(np.isfinite(x)):
        raise ValueError("inputs must be finite real numbers")
    q = meta["input_quantizer"]
    step, bits = float(q["step"]), int(q["bits"])
    x_int = np.clip(np.rint(x.astype(np.float64) / step), 0, 2 ** bits - 1).astype(np.int64)
    return x_int.reshape(len(x_int), -1)


def run_model(program, runtime, x, progress=None):
    """Run a compiled model's ``program`` on ``runtime`` for model-domain inputs ``x``
    (``(n, *input_shape)``, e.g. rows of ``load_digits().data``): quantize with the model's
    input quantizer, pack ``batch`` inputs per batch (the last batch padded with zeros),
    send one stream for all batches (the preamble once), unpack the scores, turn the
    accumulators into dot products and apply the host affine. ``progress(done, n)`` is
    called when the run is done.

    Returns ``(scores, stats)``: float64 ``(n, classes)`` class scores (argmax is the
    prediction), or for a program compiled with ``result="argmax"`` the ``int64`` ``(n,)``
    predicted classes the accelerator sent, and the run's stats (``cycles``,
    ``array_beats``, ``tile_holds``, ...), with ``runs`` the number of batches and ``macs``
    the network's useful binary MACs (per input and layer ``K x N x planes``, times the
    positions of a convolution; padding rows left out).

    Raises
    ------
    ValueError
        If ``program`` is not a compiled model or ``x`` has the wrong shape.
    """
    meta = program.metadata
    if meta.get("kind") != METADATA_KIND or "schedule" not in meta:
        raise ValueError("the program is not a compiled model (no model metadata): run it "
                         "with its input words instead")
    config = program.config
    x_int = _quantize(meta, x)
    batch, classes = meta["batch"], meta["classes"]
    n = len(x_int)
    batches = max(1, -(-n // batch))
    conv = meta.get("conv")
    if conv is not None:
        conv = ConvShape(**{k: tuple(v) if isinstance(v, list) else v for k, v in conv.items()})
    rows = tiles(batch, config.rows) * config.rows
    inputs = []
    for b in range(batches):
        block = np.zeros((rows, x_int.shape[1]), dtype=np.int64)
        part = x_int[b * batch:(b + 1) * batch]
        block[:len(part)] = part
        if conv is not None:
            # The host builds the first convolution's im2col rows (docs/compiler.md).
            oh, ow = conv.conv_shape
            block = conv_rows(conv.patches(block).reshape(rows, oh, ow, -1), conv.pool or 1,
                              config.rows)
        inputs.append(pack_act(block, meta["input_planes"], config,
                               bipolar=meta["input_bipolar"]).reshape(-1))
    result = runtime.run(batch_stream(program, batches), np.concatenate(inputs))
    stats = dict(result.stats)
    stats["runs"] = batches
    stats["macs"] = n * sum(layer["k"] * layer["n"] * layer["act_bits"]
                            * layer.get("positions", 1) for layer in meta["layers"])
    if meta.get("result") == "argmax":
        out = np.concatenate([unpack_argmax(words, rows, config)[:batch]
                              for words in result.outputs])[:n]
    else:
        acc = np.concatenate([unpack_scores(np.asarray(words).reshape(-1, config.cols),
                                            batch, classes, config)
                              for words in result.outputs])
        out = _host_scores(acc[:n], meta["scores"], meta["scale"], meta["offset"])
    if progress is not None:
        progress(n, n)
    return out, stats
