"""The compiler: a quantized network (:class:`lowbit.model.QuantModel`) to an accelerator
program, and the host side that runs it on model-domain inputs (``docs/compiler.md``).

Passes, in order:

1. **fold**: the model's integer form (:meth:`~lowbit.model.QuantModel.integer_form`):
   weight scales, input steps and batch norm folded into integer thresholds (exact); the
   last layer keeps raw integer scores and a host affine;
2. **check**: every layer against the accelerator: precisions against the XNOR array's
   bit-serial widths, activations against the norm unit's output mode, dot-product ranges
   against the norm unit's input width; a layer that cannot run gets a
   :class:`CompileError` naming it and why;
3. **datapath**: every dense layer runs on the XNOR array (binary layers as XNOR passes,
   the k-bit first layer and k-bit weights bit-serially), its activation on the norm unit
   (``THRESHOLD`` for +-1, ``REQUANTISE`` for k-bit);
4. **tile**: output channels in chunks that fit half the weight buffer (double
   buffering), the norm unit and the output buffer; batch rows in blocks that fit the
   output buffer;
5. **schedule**: each chunk's weights and thresholds are loaded right after the previous
   chunk's first GEMM, into the other half of the weight buffer, so they stream in while
   the array computes (``docs/accelerator.md``, decoupled load and compute);
6. **pack and emit**: weights and thresholds in the buffer layouts of
   ``docs/program_format.md``; the program's metadata holds what the host needs
   (input quantizer and packing, where the scores land, the host affine).

:func:`run_model` then quantizes inputs, packs them batch by batch, runs the program on any
:class:`~lowbit.runtime.Runtime` and returns float class scores.
"""

import numpy as np

from .config.accelerator import AcceleratorConfig
from .isa import row_words
from .iss import from_signed, pack_rows, to_signed
from .model import ConvShape, QuantModel
from .program import Program

__all__ = ["CompileError", "compile_model", "run_model", "METADATA_KIND"]

#: ``metadata["kind"]`` of a compiled model's program.
METADATA_KIND = "lowbit-model"


class CompileError(ValueError):
    """A model (or one of its layers) that this accelerator cannot run; the message names
    the layer and the reason."""


def _bits(precision):
    # Planes of an operand: 1 for +-1; 1-bit unsigned (0/1) values take two planes, since
    # a 1-bit operand on the array means +-1 (lowbit.isa).
    if precision.kind == "binary":
        return 1
    return max(precision.bits, 2)


def _check(config, form):
    """Every integer layer against the accelerator (pass 2)."""
    array, norm = config.xnor_array, config.lightnorm
    if not config.has_xnor_array:
        raise CompileError("the accelerator has no XNOR array: every dense layer needs it")
    for i, layer in enumerate(form.layers):
        where = _where(i, layer)
        a, w = layer.input_precision, layer.weight_precision
        if layer.conv is not None:
            _check_conv(config, i, layer, where)
        if a.kind == "signed":
            raise CompileError(f"{where}: signed inputs are not supported (the model's "
                               f"inputs are {a})")
        if _bits(a) > array.max_act_bits:
            raise CompileError(f"{where}: {a} inputs need max_act_bits >= {_bits(a)}, the "
                               f"XNOR array has {array.max_act_bits}")
        if _bits(w) > array.max_weight_bits:
            raise CompileError(f"{where}: {w} weights need max_weight_bits >= {_bits(w)}, "
                               f"the XNOR array has {array.max_weight_bits}")
        k = layer.weight.shape[1]
        if k > array.max_k:
            raise CompileError(f"{where}: {k} inputs exceed the XNOR array's max_k "
                               f"{array.max_k}")
        if layer.last:
            if layer.acc_bits > config.word:
                raise CompileError(f"{where}: scores of {layer.acc_bits} bits do not fit a "
                                   f"{config.word}-bit output word")
            continue
        if not config.has_lightnorm:
            raise CompileError(f"{where}: its activation needs the norm unit, which this "
                               f"accelerator does not have")
        out = layer.output_precision
        need = "sign" if out.kind == "binary" else "multithreshold"
        if norm.output != need or (need == "multithreshold" and norm.act_bits != out.bits):
            built = norm.output + (f" act_bits={norm.act_bits}"
                                   if norm.output == "multithreshold" else "")
            wanted = need + (f" act_bits={out.bits}" if need == "multithreshold" else "")
            raise CompileError(f"{where}: {out} activations need the norm unit built for "
                               f"output={wanted}, it is built for output={built}")
        if layer.acc_bits > norm.input_width:
            raise CompileError(f"{where}: dot products need {layer.acc_bits} bits, the norm "
                               f"unit takes {norm.input_width}-bit inputs")


def _where(i, layer):
    kind = "dense" if layer.conv is None else "conv"
    return f"layer {i} ({layer.role} {kind} {layer.weight.shape[1]} -> {layer.weight.shape[0]})"


def _check_conv(config, i, layer, where):
    """A convolution runs as a GEMM over im2col rows the host builds (so only the first
    layer, whose inputs come from the host), with +-1 outputs in whole words (pixels are
    rows of channel words, pooled by OR-ing rows: ``MAXPOOL``)."""
    conv = layer.conv
    if not layer.first:
        if layer.input_precision.kind != "binary":
            raise CompileError(f"{where}: a convolution over on-chip activations needs +-1 "
                               f"inputs (its im2col rows are copied pixel by pixel), not "
                               f"{layer.input_precision}")
        if conv.in_shape[0] % config.word:
            raise CompileError(f"{where}: its {conv.in_shape[0]} input channels must be a "
                               f"multiple of the {config.word}-bit word")
        if conv.padding and conv.pad == 0:
            raise CompileError(f"{where}: +-1 data cannot hold the zero border the model "
                               f"declares (pad_value 0.0); pad with +1 or -1 (lowbit's trainer "
                               f"pads +-1 activations with +1)")
        if not config.has_maxpool:
            raise CompileError(f"{where}: a convolution over on-chip activations copies its "
                               f"im2col rows with MAXPOOL, which this accelerator does not "
                               f"have")
    if layer.output_precision is None or layer.output_precision.kind != "binary":
        raise CompileError(f"{where}: convolutions need +-1 (Sign) outputs on the "
                           f"accelerator; {layer.output_precision} pixels are bit planes a "
                           f"row apart, which MAXPOOL and a following Dense cannot read")
    if layer.weight.shape[0] % config.word:
        raise CompileError(f"{where}: its {layer.weight.shape[0]} channels must be a "
                           f"multiple of the {config.word}-bit word (a pixel is a row of "
                           f"whole channel words)")
    if conv.pool and not config.has_maxpool:
        raise CompileError(f"{where}: its max pool needs MAXPOOL, which this accelerator does "
                           f"not have")
    if conv.pool:
        oh, ow = conv.conv_shape
        if oh % conv.pool or ow % conv.pool:
            raise CompileError(f"{where}: its {oh}x{ow} output does not divide into "
                               f"{conv.pool}x{conv.pool} pooling windows")
        if conv.pool > 16:
            raise CompileError(f"{where}: pooling window {conv.pool} exceeds MAXPOOL's 16")


def _hw_columns(prev, layer):
    """Columns of ``layer``'s weights in the order the accelerator holds its inputs: a
    Dense after a convolution reads pixels as rows of channels ``(y, x, c)``; the model
    flattens ``(c, y, x)``."""
    if layer.conv is not None and not layer.first:
        # im2col rows copied on chip hold pixels of channel words: (dy, dx, c)
        c, (kh, kw) = layer.conv.in_shape[0], layer.conv.kernel
        model_index = np.arange(c * kh * kw).reshape(c, kh, kw).transpose(1, 2, 0).ravel()
        return layer.weight[:, model_index]
    if prev is None or prev.conv is None:
        return layer.weight
    n = prev.weight.shape[0]
    oh, ow = prev.conv.pooled_shape()
    model_index = np.arange(n * oh * ow).reshape(n, oh, ow).transpose(1, 2, 0).ravel()
    return layer.weight[:, model_index]


def _im2col_copies(conv, batch, src, dst, pad_addr, word):
    """``MAXPOOL`` copies (window 1) that build a convolution's im2col rows from ``batch``
    samples of ``(y, x, c)`` pixel rows at ``src``: row ``(b, oy, ox)`` at ``dst`` holds, for
    each kernel row ``dy``, ``kw`` pixels of channel words, pixels outside the image taken
    from the row of pad words at ``pad_addr``. Runs of neighbouring pixels copy at once."""
    c, h, w = conv.in_shape
    cw = row_words(c, 1, word)
    (kh, kw), stride, p = conv.kernel, conv.stride, conv.padding
    oh, ow = conv.conv_shape
    copies = []
    for b in range(batch):
        for oy in range(oh):
            for ox in range(ow):
                row = dst + ((b * oh + oy) * ow + ox) * kh * kw * cw
                for dy in range(kh):
                    iy = oy * stride + dy - p
                    at = row + dy * kw * cw
                    dx = 0
                    while dx < kw:
                        ix = ox * stride + dx - p
                        inside = 0 <= iy < h and 0 <= ix < w
                        run = 1
                        while dx + run < kw and (0 <= iy < h and 0 <= ix + run < w) == inside:
                            run += 1
                        from_addr = (src + ((b * h + iy) * w + ix) * cw) if inside else pad_addr
                        copies.append(dict(opcode="MAXPOOL", src_addr=from_addr,
                                           dst_addr=at + dx * cw, rows=1, row_words=run * cw,
                                           window=1))
                        dx += run
    return copies


def _chunk(config, layer, rows, space):
    """Output channels per chunk (pass 4): within ``space`` weight words, the norm unit and
    the output buffer; a multiple of the word for +-1 outputs (NORM writes whole words),
    every channel for k-bit outputs (their bit planes are a whole row apart)."""
    n, k = layer.weight.shape
    word = config.word
    w_row = row_words(k, _bits(layer.weight_precision), word)
    params = 0 if layer.last else config.lightnorm.thresholds + 1
    limit = min(space // (w_row + params), config.out_words // rows)
    if not layer.last:
        limit = min(limit, config.lightnorm.channels)
        if layer.output_precision.kind != "binary":
            return n if n <= limit else None
        if limit < n:
            limit = limit // word * word
    return min(n, limit) if limit > 0 else None


def compile_model(model, config=None, *, batch=16, resident=None):
    """Compile ``model`` for ``config`` (default ``AcceleratorConfig()``) to a
    :class:`~lowbit.program.Program` running ``batch`` inputs per run.

    ``resident``: keep every weight and threshold in the weight buffer, loaded by a
    preamble that :func:`run_model` sends once per call (later batches send inputs only);
    ``None`` (default) when they fit, ``False`` streams them with each batch into alternate
    halves of the buffer (loads overlapping compute), ``True`` requires it.

    Raises
    ------
    CompileError
        For a layer the accelerator cannot run (named, with the reason), or a model that
        does not fit its buffers.
    """
    if not isinstance(model, QuantModel):
        raise TypeError(f"model must be a QuantModel, not {model!r}")
    config = AcceleratorConfig() if config is None else config
    if not isinstance(config, AcceleratorConfig):
        raise TypeError(f"config must be an AcceleratorConfig, not {config!r}")
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise ValueError(f"batch must be a positive integer, not {batch!r}")
    form = model.integer_form()
    _check(config, form)
    word = config.word
    layers = form.layers
    # GEMM rows per sample (a convolution's output positions; 1 for a dense layer) and the
    # words of every GEMM row of each layer's input and output (k-bit: one plane per bit).
    positions = [1 if l.conv is None else l.conv.positions for l in layers]
    act_rows = [row_words(l.weight.shape[1], _bits(l.input_precision), word) for l in layers]
    out_rows = [None if l.last else row_words(l.weight.shape[0], _bits(l.output_precision),
                                              word) for l in layers]
    # A convolution over on-chip activations reads im2col rows the accelerator copies into a
    # third region (MAXPOOL with a window of 1 is a copy), the border from a row of pad
    # words loaded with each batch.
    onchip = [l.conv is not None and not l.first for l in layers]
    widest = max([p * a for p, a, o in zip(positions, act_rows, onchip) if not o]
                 + [p * o for p, o in zip(positions, out_rows) if o is not None])
    scratch = max([p * a for p, a, o in zip(positions, act_rows, onchip) if o] + [0])
    pad_words = max([l.conv.kernel[1] * row_words(l.conv.in_shape[0], 1, word)
                     for l, o in zip(layers, onchip) if o] + [0])
    need = 2 * batch * widest + batch * scratch + pad_words
    if need > config.act_words:
        raise CompileError(f"a batch of {batch} needs {need} activation words (two regions of "
                           f"{batch} samples of {widest} words"
                           + (f", im2col rows of {scratch} words per sample" if scratch else "")
                           + f"), the buffer has {config.act_words}: use a smaller batch")
    regions = (0, batch * widest)
    im2col_addr = 2 * batch * widest
    pad_addr = im2col_addr + batch * scratch
    half = config.weight_words // 2
    instrs = [dict(opcode="LOAD", buffer="ACT", source="INPUT", addr=0,
                   count=batch * positions[0] * act_rows[0])]
    head_consts = []
    if pad_words:
        pad = next(l.conv.pad for l, o in zip(layers, onchip) if o)
        instrs.append(dict(opcode="LOAD", buffer="ACT", source="CONST", addr=pad_addr,
                           count=pad_words))
        head_consts.append(np.full(pad_words, (1 << word) - 1 if pad > 0 else 0,
                                   dtype=np.uint64))
    consts, stores, schedule = [], [], []
    chunk_index = 0
    for i, layer in enumerate(layers):
        n, k = layer.weight.shape
        a, w = layer.input_precision, layer.weight_precision
        # GEMM rows (samples, or samples x positions) per GEMM: up to 32, fewer when the
        # layer's channels cannot be split finely enough for the output buffer.
        total = batch * positions[i]
        matrix = _hw_columns(layers[i - 1] if i else None, layer)
        rows, space = min(total, 32), half
        nc = _chunk(config, layer, rows, space)
        if nc is None or nc < min(n, word):
            rows = max(1, min(total, config.out_words // n))
            nc = _chunk(config, layer, rows, space)
        if nc is None:
            # One chunk in the whole weight buffer: its loads cannot overlap compute.
            space = config.weight_words
            nc = _chunk(config, layer, rows, space)
        if nc is None:
            raise CompileError(f"{_where(i, layer)}: its {n} "
                               f"channels do not fit the buffers and the norm unit in one "
                               f"chunk ({layer.output_precision} outputs cannot be split)")
        src, dst = regions[i % 2], regions[(i + 1) % 2]
        out_bits = None if layer.last else _bits(layer.output_precision)
        dst_row = None if layer.last else row_words(n, out_bits, word)
        chunks = []
        for c0 in range(0, n, nc):
            cn = min(nc, n - c0)
            w_addr = (chunk_index % 2) * half if space == half else 0
            chunk_index += 1
            weights = pack_rows(matrix[c0:c0 + cn], _bits(w), w.kind == "signed", word)
            loads = [dict(opcode="LOAD", buffer="WEIGHT", source="CONST", addr=w_addr,
                          count=weights.size)]
            data = [weights.ravel()]
            p_addr = w_addr + weights.size
            if not layer.last:
                params = np.concatenate([
                    from_signed(layer.thresholds[c0:c0 + cn].ravel(), word),
                    layer.flip[c0:c0 + cn].astype(np.uint64)])
                loads.append(dict(opcode="LOAD", buffer="WEIGHT", source="CONST",
                                  addr=p_addr, count=params.size))
                data.append(params)
            body = []
            if onchip[i] and not chunks:
                body += _im2col_copies(layer.conv, batch, src, im2col_addr, pad_addr, word)
            a_base = im2col_addr if onchip[i] else src
            for r0 in range(0, total, rows):
                rn = min(rows, total - r0)
                body.append(dict(
                    opcode="GEMM_XNOR", a_addr=a_base + r0 * act_rows[i], b_addr=w_addr,
                    c_addr=0, m=rn, n=cn, k=k, a_stride=act_rows[i],
                    b_stride=weights.shape[1], c_stride=cn, act_bits=_bits(a),
                    act_signed=int(a.kind == "signed"), weight_bits=_bits(w),
                    weight_signed=int(w.kind == "signed")))
                if layer.last:
                    body.append(dict(opcode="STORE", buffer="OUT", addr=0, count=rn * cn))
                    stores.append([r0, rn, c0, cn])
                else:
                    mode = "THRESHOLD" if out_bits == 1 else "REQUANTISE"
                    body.append(dict(
                        opcode="NORM", mode=mode, src_addr=0,
                        dst_addr=dst + r0 * dst_row + c0 // word, param_addr=p_addr,
                        rows=rn, channels=cn, src_stride=cn, dst_stride=dst_row))
            chunks.append((loads, data, body, space == half, i, w_addr))
        if layer.conv is not None and layer.conv.pool:
            # 2-D max pool of the (y, x) pixel rows as two OR passes (+-1 data): windows of
            # `pool` neighbouring pixels into the free region, then of `pool` image rows
            # back, which leaves the pooled samples contiguous in `dst`.
            s_, (oh, ow) = layer.conv.pool, layer.conv.conv_shape
            chunks[-1][2].extend([
                dict(opcode="MAXPOOL", src_addr=dst, dst_addr=src, rows=batch * oh * ow // s_,
                     row_words=dst_row, window=s_),
                dict(opcode="MAXPOOL", src_addr=src, dst_addr=dst, rows=batch * oh // s_,
                     row_words=ow // s_ * dst_row, window=s_)])
        schedule += chunks
    # Pass 5, resident weights: a preamble loads every chunk (below). Streamed weights:
    # chunk c + 1's loads (the other half of the weight buffer; across layers too) go right
    # after chunk c's first GEMM, so that they stream in while it computes; a chunk that
    # fills the whole weight buffer is loaded after the previous chunk's last instruction
    # instead (nothing of it may be overwritten early).
    owner = [0] * len(instrs)  # each instruction's layer (the energy model's per-layer view)

    def emit(items, layer):
        instrs.extend(items)
        owner.extend([layer] * len(items))

    total = sum(load["count"] for chunk in schedule for load in chunk[0])
    if resident is None:
        resident = total <= config.weight_words
    elif resident and total > config.weight_words:
        raise CompileError(f"the weights and thresholds take {total} words, the weight buffer "
                           f"has {config.weight_words}: they cannot stay resident")
    if resident:
        # Every chunk at its own address, all loaded by a preamble that run_model sends once
        # per call: later batches send their inputs only.
        base = 0
        for loads, _, body, _, _, w_addr in schedule:
            shift = base - w_addr
            for load in loads:
                load["addr"] += shift
            for instr in body:
                if instr["opcode"] == "GEMM_XNOR":
                    instr["b_addr"] += shift
                elif instr["opcode"] == "NORM":
                    instr["param_addr"] += shift
            base += sum(load["count"] for load in loads)
        first, owner, instrs = instrs, [], []
        for loads, data, _, _, layer_index, _ in schedule:
            emit(loads, layer_index)
            consts += data
        preamble = len(instrs)
        emit(first, 0)
        consts += head_consts
        for _, _, body, _, layer_index, _ in schedule:
            emit(body, layer_index)
    else:
        consts += head_consts
        emit(schedule[0][0], schedule[0][4])
        consts += schedule[0][1]
        for c, (_, _, body, halved, layer_index, _) in enumerate(schedule):
            following = schedule[c + 1] if c + 1 < len(schedule) else None
            early = following is not None and halved and following[3]
            emit(body[:1], layer_index)
            if early:
                emit(following[0], following[4])
                consts += following[1]
            emit(body[1:], layer_index)
            if following is not None and not early:
                emit(following[0], following[4])
                consts += following[1]
    emit([dict(opcode="HALT", status=0)], len(layers) - 1)
    last = layers[-1]
    metadata = {
        "kind": METADATA_KIND, "model": model.name, "dataset": model.dataset,
        "batch": batch, "input_shape": list(form.input_shape),
        "input_quantizer": form.input_quantizer.to_json(),
        "input_bits": _bits(layers[0].input_precision),
        "input_features": layers[0].weight.shape[1], "input_conv": _conv_json(layers[0].conv),
        "classes": int(last.weight.shape[0]), "stores": stores,
        "layers": [{"name": _where(i, layer)[len(f"layer {i} ("):-1],
                    "instructions": [j for j, o in enumerate(owner) if o == i],
                    "act_bits": _bits(layer.input_precision),
                    "weight_bits": _bits(layer.weight_precision)}
                   for i, layer in enumerate(layers)],
        "scale": [float(v) for v in last.scale], "offset": [float(v) for v in last.offset],
        "resident": {"instructions": preamble, "constants": total} if resident else None,
    }
    return Program(config, instrs, np.concatenate(consts), metadata)


def _conv_json(conv):
    if conv is None:
        return None
    return {"in_shape": list(conv.in_shape), "kernel": list(conv.kernel),
            "stride": conv.stride, "padding": conv.padding, "pad": conv.pad}


def run_model(program, runtime, x, progress=None):
    """Run a compiled model's ``program`` on ``runtime`` for model-domain inputs ``x``
    (``(n, *input_shape)``, e.g. rows of ``load_digits().data``): quantize with the model's
    input quantizer, pack ``batch`` inputs per run (the last batch padded with zeros), run,
    collect the integer scores and apply the host affine. A program with resident weights
    first runs its preamble (the weight and threshold loads) once; each batch then runs the
    rest. ``progress(done, n)`` is called after each batch.

    Returns ``(scores, stats)``: float64 ``(n, classes)`` class scores (argmax is the
    prediction) and the runs' stats summed, the preamble's included (``runs`` counts the
    batches).

    Raises
    ------
    ValueError
        If ``program`` is not a compiled model or ``x`` has the wrong shape.
    """
    meta = program.metadata
    if meta.get("kind") != METADATA_KIND:
        raise ValueError("the program is not a compiled model (no model metadata): run it "
                         "with its input words instead")
    config = program.config
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
    q = meta["input_quantizer"]
    step, bits = float(q["step"]), int(q["bits"])
    if x.dtype.kind not in "biuf" or not np.all(np.isfinite(x)):
        raise ValueError("inputs must be finite real numbers")
    x_int = np.clip(np.rint(x.astype(np.float64) / step), 0, 2 ** bits - 1).astype(np.int64)
    x_int = x_int.reshape(len(x_int), -1)
    batch, classes = meta["batch"], meta["classes"]
    scale, offset = np.array(meta["scale"]), np.array(meta["offset"])
    scores = np.zeros((len(x_int), classes))
    totals = {}
    resident = meta.get("resident")
    if resident:
        n, c = resident["instructions"], resident["constants"]
        preamble = Program(config, [*program.instructions[:n], dict(opcode="HALT", status=0)],
                           program.constants[:c])
        totals.update(runtime.run(preamble).stats)
        program = Program(config, program.instructions[n:], program.constants[c:])
    for start in range(0, len(x_int), batch):
        block = np.zeros((batch, x_int.shape[1]), dtype=np.int64)
        part = x_int[start:start + batch]
        block[:len(part)] = part
        if meta.get("input_conv"):
            # the host builds the first convolution's im2col rows (padded with its `pad`)
            c = meta["input_conv"]
            block = ConvShape(tuple(c["in_shape"]), tuple(c["kernel"]), c["stride"],
                              c["padding"], c["pad"]).patches(block)
        words = pack_rows(block, meta["input_bits"], False, config.word)
        result = runtime.run(program, words.ravel())
        acc = np.zeros((batch, classes), dtype=np.int64)
        for (r0, rn, c0, cn), out in zip(meta["stores"], result.outputs):
            acc[r0:r0 + rn, c0:c0 + cn] = to_signed(out, config.word).reshape(rn, cn)
        scores[start:start + len(part)] = acc[:len(part)] * scale + offset
        for name, value in result.stats.items():
            totals[name] = totals.get(name, 0) + value
        if progress is not None:
            progress(min(start + batch, len(x_int)), len(x_int))
    totals["runs"] = -(-len(x_int) // batch)
    return scores, totals
