"""Test programs for the accelerator, built with the encoder (never raw bits): one per
instruction, layer sequences, random valid programs and corrupted streams.

Each builder returns ``(program, inputs)`` for :meth:`lowbit.runtime.Runtime.run`. Shared
by the Amaranth-simulator tests, the cocotb testbench, the benchmark and the timing
calibration, so every backend runs the same programs.
"""

import numpy as np

from ..config.accelerator import AcceleratorConfig
from ..config.lightnorm import LightNormConfig
from ..config.xnor_array import XNORArrayConfig
from ..isa import Opcode, instruction_set, row_words
from ..golden.lns import LNSTensor
from ..isa import lns_row_words
from ..isa import NormMode
from ..iss import from_signed, pack_bfp_params, pack_lns_rows, pack_rows
from ..program import Program

__all__ = ["small_config", "operand", "load_store", "gemm", "gemm_lns", "norm_threshold",
           "norm_statistics", "norm_normalise", "maxpool",
           "binary_mlp", "random_program", "bad_opcode", "bad_address", "bad_unused_bits",
           "truncated", "precision_name"]


def small_config(**overrides):
    """A small accelerator that simulates fast: a 2x2x32 array (8-bit bit-serial), a
    16-channel sign norm unit of block 4, 512/512/128-word buffers."""
    base = dict(xnor_array=XNORArrayConfig(rows=2, cols=2, word=32, max_k=256),
                lightnorm=LightNormConfig(channels=16, block=4, output="sign"),
                has_lns_mac=False, act_words=512, weight_words=512, out_words=128,
                timeout_cycles=64)
    base.update(overrides)
    return AcceleratorConfig(**base)


def precision_name(bits, signed):
    return "binary" if bits == 1 else f"{'' if signed else 'u'}int{bits}"


def operand(rng, rows, k, bits, signed):
    """Random integer operand rows in a precision (+-1 when ``bits == 1``)."""
    if bits == 1:
        return rng.choice([-1, 1], (rows, k))
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2 ** bits - 1)
    return rng.integers(low, high + 1, (rows, k))


def _load(buffer, source, addr, count):
    return dict(opcode="LOAD", buffer=buffer, source=source, addr=addr, count=count)


def _store(buffer, addr, count):
    return dict(opcode="STORE", buffer=buffer, addr=addr, count=count)


def _halt(status=0):
    return dict(opcode="HALT", status=status)


def load_store(config, rng):
    """LOAD each buffer from the inputs and the constants, STORE parts of them back."""
    sizes = config.buffer_words
    instrs, consts, inputs = [], [], []
    for buffer, size in (("ACT", sizes["act"]), ("WEIGHT", sizes["weight"]),
                         ("OUT", sizes["out"])):
        count = int(rng.integers(1, min(size, 9) + 1))
        addr = int(rng.integers(0, size - count + 1))
        words = rng.integers(0, 2 ** config.word, count, dtype=np.uint64)
        source = "CONST" if rng.random() < 0.5 else "INPUT"
        (consts if source == "CONST" else inputs).extend(words.tolist())
        instrs.append(_load(buffer, source, addr, count))
        instrs.append(_store(buffer, addr, count))
    instrs.append(_halt(int(rng.integers(0, 256))))
    return Program(config, instrs, consts), np.array(inputs, dtype=np.uint64)


def gemm(config, rng, m, n, k, act_bits=1, act_signed=0, weight_bits=1, weight_signed=0,
         *, a_pad=0, b_pad=0, c_pad=0, a_addr=0, b_addr=0, c_addr=0):
    """``C = A @ B.T`` of random operands, strides padded by ``*_pad`` words; returns
    ``(program, inputs, expected C)``."""
    word = config.word
    a = operand(rng, m, k, act_bits, act_signed)
    b = operand(rng, n, k, weight_bits, weight_signed)
    aw = pack_rows(a, act_bits, act_signed, word)
    bw = pack_rows(b, weight_bits, weight_signed, word)
    a_stride, b_stride, c_stride = aw.shape[1] + a_pad, bw.shape[1] + b_pad, n + c_pad
    a_img = np.zeros((m, a_stride), dtype=np.uint64)
    a_img[:, :aw.shape[1]] = aw
    b_img = np.zeros((n, b_stride), dtype=np.uint64)
    b_img[:, :bw.shape[1]] = bw
    instrs = [
        _load("ACT", "INPUT", a_addr, a_img.size),
        _load("WEIGHT", "CONST", b_addr, b_img.size),
        dict(opcode="GEMM_XNOR", a_addr=a_addr, b_addr=b_addr, c_addr=c_addr, m=m, n=n, k=k,
             a_stride=a_stride, b_stride=b_stride, c_stride=c_stride, act_bits=act_bits,
             act_signed=act_signed, weight_bits=weight_bits, weight_signed=weight_signed),
    ]
    for i in range(m):
        instrs.append(_store("OUT", c_addr + i * c_stride, n))
    instrs.append(_halt(1))
    return Program(config, instrs, b_img.ravel()), a_img.ravel(), a @ b.T


def gemm_lns(config, rng, m, n, k, *, a_pad=0, c_pad=0, a_addr=0, c_addr=0):
    """``C[i][j] = dot(A_i, B_j)`` of random LNS operands (zeros and both signs)."""
    lns, word = config.lns_mac, config.word

    def tensor(rows):
        code = rng.integers(0, 2 ** lns.code_bits, (rows, k))
        sign = rng.integers(0, 2, (rows, k)) * (code > 0)
        return LNSTensor(sign, code, 0, lns.bits, lns.gamma)

    aw, bw = pack_lns_rows(tensor(m), lns, word), pack_lns_rows(tensor(n), lns, word)
    row = lns_row_words(k, lns.bits, word)
    a_stride, c_stride = row + a_pad, n + c_pad
    a_img = np.zeros((m, a_stride), dtype=np.uint64)
    a_img[:, :row] = aw
    instrs = [
        _load("ACT", "INPUT", a_addr, a_img.size),
        _load("WEIGHT", "CONST", 0, bw.size),
        dict(opcode="GEMM_LNS", a_addr=a_addr, b_addr=0, c_addr=c_addr, m=m, n=n, k=k,
             a_stride=a_stride, b_stride=row, c_stride=c_stride),
    ]
    instrs += [_store("OUT", c_addr + i * c_stride, n) for i in range(m)]
    instrs.append(_halt(4))
    return Program(config, instrs, bw.ravel()), a_img.ravel()


def _threshold_params(config, rng, channels, low, high):
    norm = config.lightnorm
    t = np.sort(rng.integers(low, high + 1, (channels, norm.thresholds)), axis=1)
    flip = rng.integers(0, 2, channels)
    return np.concatenate([from_signed(t.ravel(), config.word), flip.astype(np.uint64)])


def norm_threshold(config, rng, rows, channels, *, src_pad=0, dst_pad=0):
    """``NORM`` in the norm unit's threshold mode over random output-buffer values."""
    norm, word = config.lightnorm, config.word
    mode = "THRESHOLD" if norm.output == "sign" else "REQUANTISE"
    half = 1 << (norm.input_width - 1)
    x = rng.integers(-min(half, 64), min(half, 64), (rows, channels))
    src_stride = channels + src_pad
    x_img = np.zeros((rows, src_stride), dtype=np.uint64)
    x_img[:, :channels] = from_signed(x, word)
    params = _threshold_params(config, rng, channels, -64, 64)
    dst_row = row_words(channels, norm.levels, word)
    dst_stride = dst_row + dst_pad
    instrs = [
        _load("OUT", "INPUT", 0, x_img.size),
        _load("WEIGHT", "CONST", 0, params.size),
        dict(opcode="NORM", mode=mode, src_addr=0, dst_addr=0, param_addr=0, rows=rows,
             channels=channels, src_stride=src_stride, dst_stride=dst_stride),
        _store("ACT", 0, rows * dst_stride),
        _halt(2),
    ]
    return Program(config, instrs, params), x_img.ravel()


def norm_statistics(config, rng, rows, channels, *, src_pad=0, dst_pad=0, scale=200):
    """``NORM STATISTICS`` of a random batch in the output buffer: sums and spreads written
    after it, then stored."""
    isa, word = instruction_set(config), config.word
    x = rng.integers(-scale, scale + 1, (rows, channels))
    src_stride = channels + src_pad
    x_img = np.zeros((rows, src_stride), dtype=np.uint64)
    x_img[:, :channels] = from_signed(x, word)
    dst, dst_stride = x_img.size, channels + dst_pad
    assert isa.norm_dst_words(NormMode.STATISTICS, channels) == channels
    instrs = [
        _load("OUT", "INPUT", 0, x_img.size),
        dict(opcode="NORM", mode="STATISTICS", src_addr=0, dst_addr=dst, param_addr=0,
             rows=rows, channels=channels, src_stride=src_stride, dst_stride=dst_stride),
        _store("OUT", dst, channels), _store("OUT", dst + dst_stride, channels),
        _halt(5),
    ]
    return Program(config, instrs), x_img.ravel()


def norm_normalise(config, rng, rows, channels, *, dst_pad=0):
    """``NORM NORMALISE`` (norm unit built for ``bfp``) with random in-range parameters."""
    isa, norm, word = instruction_set(config), config.lightnorm, config.word
    x = rng.integers(-300, 301, (rows, channels))
    man = lambda: rng.integers(-2 ** (norm.mantissa - 1), 2 ** (norm.mantissa - 1),  # noqa
                               norm.block).tolist()
    exp = lambda: int(rng.integers(-2 ** (norm.exponent - 1), 2 ** (norm.exponent - 1)))  # noqa
    params = [{"scale": man(), "scale_exp": exp(), "offset": man(), "offset_exp": exp()}
              for _ in range(norm.groups)]
    pw = pack_bfp_params(params, channels, word)
    row = isa.norm_dst_words(NormMode.NORMALISE, channels)
    dst_stride = row + dst_pad
    instrs = [
        _load("OUT", "INPUT", 0, x.size),
        _load("WEIGHT", "CONST", 1, pw.size),
        dict(opcode="NORM", mode="NORMALISE", src_addr=0, dst_addr=2, param_addr=1,
             rows=rows, channels=channels, src_stride=channels, dst_stride=dst_stride),
        _store("ACT", 2, rows * dst_stride), _halt(6),
    ]
    return Program(config, instrs, pw), from_signed(x, word).ravel()


def maxpool(config, rng, rows, row, window):
    """``MAXPOOL`` over random activation words."""
    src = rng.integers(0, 2 ** config.word, rows * window * row, dtype=np.uint64)
    dst = rows * window * row
    instrs = [_load("ACT", "INPUT", 0, src.size),
              dict(opcode="MAXPOOL", src_addr=0, dst_addr=dst, rows=rows, row_words=row,
                   window=window),
              _store("ACT", dst, rows * row), _halt(3)]
    return Program(config, instrs), src


def binary_mlp(config, rng, batch, sizes, *, resident=False):
    """A binary MLP ``sizes[0] - sizes[1] - ... - sizes[-1]`` on a batch: per layer LOAD
    weights and thresholds, GEMM_XNOR, NORM THRESHOLD into the next layer's activations;
    the last layer's scores are stored. With ``resident``, all weights are loaded first
    (they stay on chip between programs)."""
    word = config.word
    x = operand(rng, batch, sizes[0], 1, 0)
    xw = pack_rows(x, 1, 0, word)
    loads, layers, consts = [], [], []
    w_addr, a_addr, out_addr = 0, 0, 0
    act_rows = xw.shape[1]
    loads.append(_load("ACT", "INPUT", a_addr, xw.size))
    for i, (k, n) in enumerate(zip(sizes[:-1], sizes[1:])):
        b = operand(rng, n, k, 1, 0)
        bw = pack_rows(b, 1, 0, word)
        consts.append(bw.ravel())
        load_w = _load("WEIGHT", "CONST", w_addr, bw.size)
        gemm_i = dict(opcode="GEMM_XNOR", a_addr=a_addr, b_addr=w_addr, c_addr=out_addr, m=batch,
                      n=n, k=k, a_stride=act_rows, b_stride=bw.shape[1], c_stride=n,
                      act_bits=1, act_signed=0, weight_bits=1, weight_signed=0)
        step = [gemm_i]
        w_next = w_addr + bw.size
        if i < len(sizes) - 2:
            params = _threshold_params(config, rng, n, -8, 8)
            consts.append(params)
            next_addr = a_addr + batch * act_rows
            next_rows = row_words(n, 1, word)
            load_p = _load("WEIGHT", "CONST", w_next, params.size)
            step.append(dict(opcode="NORM", mode="THRESHOLD", src_addr=out_addr,
                             dst_addr=next_addr, param_addr=w_next, rows=batch, channels=n,
                             src_stride=n, dst_stride=next_rows))
            w_next += params.size
            a_addr, act_rows = next_addr, next_rows
            (loads if resident else layers).extend([load_w, load_p])
        else:
            (loads if resident else layers).append(load_w)
            step.append(_store("OUT", out_addr, batch * n))
        layers.extend(step)
        w_addr = w_next
    if resident:
        instrs = loads + layers
    else:
        instrs = loads[:1] + layers
    instrs.append(_halt(0))
    return Program(config, instrs, np.concatenate(consts)), xw.ravel()


def random_program(config, rng, blocks=3):
    """A random valid program: ``blocks`` of the builders above (small shapes) in a row,
    joined into one program (one HALT at the end)."""
    instrs, consts, inputs = [], [], []
    array = config.xnor_array
    for _ in range(blocks):
        kind = rng.integers(0, 5 if config.has_lns_mac else 4)
        if kind == 0:
            prog, inp = load_store(config, rng)
        elif kind == 1:
            bits = [1, 2, 3] if array.max_act_bits >= 3 else [1]
            ab, wb = int(rng.choice(bits)), int(rng.choice(bits))
            prog, inp, _ = gemm(config, rng, int(rng.integers(1, 4)), int(rng.integers(1, 4)),
                                int(rng.integers(1, 70)), ab, int(ab > 1 and rng.random() < .5),
                                wb, int(wb > 1 and rng.random() < .5),
                                a_pad=int(rng.integers(0, 2)), c_pad=int(rng.integers(0, 2)))
        elif kind == 2 and config.has_lightnorm:
            prog, inp = norm_threshold(config, rng, int(rng.integers(1, 3)),
                                       int(rng.integers(1, config.lightnorm.channels + 1)))
        elif kind == 4:
            prog, inp = gemm_lns(config, rng, int(rng.integers(1, 3)), int(rng.integers(1, 4)),
                                 int(rng.integers(1, 40)), a_pad=int(rng.integers(0, 2)))
        else:
            prog, inp = maxpool(config, rng, int(rng.integers(1, 3)), int(rng.integers(1, 3)),
                                int(rng.integers(1, 4)))
        instrs.extend(prog.instructions[:-1])
        consts.extend(prog.constants.tolist())
        inputs.extend(np.asarray(inp).tolist())
    instrs.append(_halt(int(rng.integers(0, 256))))
    return Program(config, instrs, consts), np.array(inputs, dtype=np.uint64)


# Corrupted streams: (bytes, expected status, expected index) -----------------------------

def _words_to_bytes(config, words):
    isa = instruction_set(config)
    return b"".join(w.to_bytes(isa.bytes, "little") for w in words)


def bad_opcode(config, opcode=15):
    """A LOAD/STORE pair, then a word with an unknown opcode."""
    isa = instruction_set(config)
    good = Program(config, [_store("ACT", 0, 1)])
    word = isa.raw_layout.const({"opcode": opcode}).as_bits()
    assert opcode not in {op.value for op in Opcode}
    return _words_to_bytes(config, good.words() + [word])


def bad_address(config):
    """A GEMM whose result region runs past the output buffer (built through the raw
    layout: the encoder refuses it)."""
    isa = instruction_set(config)
    op = Opcode.STORE
    fields = {"buffer": 2, "addr": config.out_words - 1, "count": 2}
    member = isa.raw_operands[op].const(fields).as_bits()
    word = isa.raw_layout.const({"opcode": op.value, "operands": member}).as_bits()
    good = Program(config, [_store("ACT", 0, 1)])
    return _words_to_bytes(config, good.words() + [word])


def bad_unused_bits(config):
    """A HALT with a reserved bit set."""
    isa = instruction_set(config)
    word = Program(config, [_halt(5)]).words()[0]
    return _words_to_bytes(config, [word | (1 << (isa.width - 1))])


def truncated(config, stream, cut):
    """``stream`` without its last ``cut`` bytes."""
    return stream[:len(stream) - cut]
