"""Instruction-set simulator (ISS) of the accelerator: executes programs with the golden
models and estimates cycles (issue 5, first slice).

Implemented: ``LOAD``, ``STORE``, ``GEMM_XNOR`` (binary and bit-serial, through
:class:`lowbit.golden.xnor_array.XNORArray`'s ``tiles``/``schedule``/``run``), ``NORM`` in
``THRESHOLD`` and ``REQUANTISE`` modes (through :class:`lowbit.golden.lightnorm.LightNorm`),
``MAXPOOL`` and ``HALT``. ``GEMM_LNS`` and ``NORM`` ``STATISTICS``/``NORMALISE`` raise
:class:`ISSError` (not simulated yet).

Operand data layout in the buffers (also in ``docs/program_format.md``): a row of ``K``
elements of ``b`` bits takes ``b * ceil(K / word)`` words, bit plane ``j`` (least
significant first) in words ``j * ceil(K / word)`` onwards, element ``t`` of a plane in bit
``t % word`` of word ``t // word``. A binary (+-1) element is one plane, bit 1 meaning +1.
Signed operands are two's complement (the top plane weighs ``-2^(b-1)``). The output buffer
holds one two's complement value per word.

Timing model (**provisional**: invented from the intended controller, to be calibrated
against the RTL's measured cycle counts once the controller exists):

* every instruction first crosses the host link: ``width / host_link_bits`` cycles;
* ``LOAD`` / ``STORE``: ``count * word / host_link_bits`` cycles (one link beat a cycle);
* ``GEMM_XNOR``: per array tile, its beats (one per word per bit-plane pass), plus the
  popcount pipeline and one cycle of latency, plus ``rows * cols`` cycles to write the tile
  to the output buffer (not overlapped yet);
* ``NORM``: ``rows * ceil(channels / block)`` beats plus 3 cycles of latency;
* ``MAXPOOL``: one cycle per word read;
* ``HALT``: the fetch only.
"""

import dataclasses

import numpy as np

from .config.accelerator import AcceleratorConfig
from .golden.lightnorm import LightNorm
from .golden.xnor_array import XNORArray
from .isa import Buffer, InstructionError, NormMode, Opcode, Source, instruction_set
from .isa import row_words
from .program import Program

__all__ = ["ISSError", "ISSResult", "ISS", "pack_rows", "unpack_rows", "to_signed",
           "from_signed"]


class ISSError(Exception):
    """A program the accelerator would reject: illegal instruction, address out of range,
    missing data or no ``HALT``. The message names the instruction index."""


def _plane_words(bits, word):
    # (n, K) booleans -> (n, ceil(K/word)) words, element t in bit t % word of word t // word.
    n, k = bits.shape
    nwords = -(-k // word)
    padded = np.zeros((n, nwords * word), dtype=bool)
    padded[:, :k] = bits
    packed = np.packbits(padded, axis=1, bitorder="little")
    return packed.view(f"<u{word // 8}").astype(np.uint64).reshape(n, nwords)


def _word_planes(words, k, word):
    # Inverse of _plane_words.
    words = np.ascontiguousarray(np.asarray(words, dtype=np.uint64).astype(f"<u{word // 8}"))
    bits = np.unpackbits(words.view(np.uint8), axis=1, bitorder="little")
    return bits[:, :k].astype(bool)


def pack_rows(values, bits, signed, word):
    """Buffer words of integer rows: ``values`` ``(n, K)`` -> ``(n, bits * ceil(K/word))``.

    ``bits == 1`` is binary (+-1, bit 1 meaning +1); otherwise ``bits``-bit unsigned or
    (``signed``) two's complement integers. Raises ``ValueError`` for a value out of range.
    """
    values = np.asarray(values, dtype=np.int64)
    if values.ndim != 2:
        raise ValueError(f"rows must be a 2-D array, not of shape {values.shape}")
    if bits == 1:
        if np.any((values != 1) & (values != -1)):
            raise ValueError("binary rows must hold only +1 and -1")
        return _plane_words(values > 0, word)
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2 ** bits - 1)
    if np.any((values < low) | (values > high)):
        raise ValueError(f"rows hold values outside {low}..{high}")
    raw = np.where(values < 0, values + 2 ** bits, values)
    planes = [_plane_words((raw // 2 ** j) % 2 == 1, word) for j in range(bits)]
    return np.concatenate(planes, axis=1)


def unpack_rows(words, k, bits, signed, word):
    """Integer rows ``(n, K)`` of buffer words ``(n, bits * ceil(K/word))``; the inverse of
    :func:`pack_rows`."""
    words = np.asarray(words, dtype=np.uint64)
    nwords = -(-k // word)
    if bits == 1:
        return np.where(_word_planes(words, k, word), 1, -1).astype(np.int64)
    out = np.zeros((words.shape[0], k), dtype=np.int64)
    for j in range(bits):
        weight = -(2 ** j) if signed and j == bits - 1 else 2 ** j
        out += weight * _word_planes(words[:, j * nwords:(j + 1) * nwords], k, word)
    return out


def to_signed(words, word):
    """Two's complement values of raw ``word``-bit buffer words (the output buffer)."""
    values = np.asarray(words, dtype=np.uint64).astype(object)
    return np.array([v - 2 ** word if v >= 2 ** (word - 1) else v for v in values.flat],
                    dtype=np.int64).reshape(np.shape(words))


def from_signed(values, word):
    """Raw ``word``-bit buffer words of signed values (wrapping, as a register does)."""
    values = np.asarray(values, dtype=np.int64).astype(object)
    return np.array([v % 2 ** word for v in values.flat],
                    dtype=np.uint64).reshape(np.shape(values))


@dataclasses.dataclass
class ISSResult:
    """What a run produced.

    Attributes
    ----------
    outputs : list of numpy.ndarray
        The raw words of each ``STORE``, in order (``uint64``).
    status : int
        The ``HALT`` status.
    cycles : int
        Estimated cycles of the whole run (provisional timing model).
    instructions : int
        Instructions executed, ``HALT`` included.
    unit_cycles : dict
        Busy cycles per unit (``host_link``, ``xnor_array``, ``lightnorm``, ``maxpool``).
    bytes_in, bytes_out : int
        Bytes moved over the host link (instructions and data in; stored data out).
    trace : list of dict
        Per instruction: ``index``, ``opcode`` and estimated ``cycles``.
    """

    outputs: list
    status: int
    cycles: int
    instructions: int
    unit_cycles: dict
    bytes_in: int
    bytes_out: int
    trace: list


class ISS:
    """Instruction-set simulator of one accelerator configuration.

    Parameters
    ----------
    config : AcceleratorConfig
        The accelerator; buffers are numpy arrays of its sizes.

    Raises
    ------
    TypeError
        If ``config`` is not an :class:`AcceleratorConfig`.
    """

    def __init__(self, config=None):
        config = AcceleratorConfig() if config is None else config
        if not isinstance(config, AcceleratorConfig):
            raise TypeError(f"config must be an AcceleratorConfig, not {config!r}")
        self.config = config
        self.isa = instruction_set(config)
        self.xnor = XNORArray(config.xnor_array) if config.has_xnor_array else None
        self.norm = LightNorm(config.lightnorm) if config.has_lightnorm else None
        self.reset()

    def reset(self):
        """Zero the buffers (their power-up contents in this model)."""
        cfg = self.config
        self.buffers = {Buffer.ACT: np.zeros(cfg.act_words, dtype=np.uint64),
                        Buffer.WEIGHT: np.zeros(cfg.weight_words, dtype=np.uint64),
                        Buffer.OUT: np.zeros(cfg.out_words, dtype=np.uint64)}

    def run(self, program, inputs=()):
        """Run a :class:`~lowbit.program.Program` with input words ``inputs`` (consumed by
        the ``INPUT`` loads in order); return an :class:`ISSResult`.

        Raises :class:`ISSError` if the program is for another configuration.
        """
        if not isinstance(program, Program):
            raise TypeError(f"program must be a Program, not {program!r}")
        if program.config.fingerprint() != self.config.fingerprint():
            raise ISSError(f"program was built for accelerator configuration "
                           f"{program.config.fingerprint()}, this accelerator is "
                           f"{self.config.fingerprint()}")
        return self.run_words(program.words(), program.constants, inputs)

    def run_words(self, words, constants=(), inputs=()):
        """Run raw instruction words (as the controller would receive them), decoding each
        one; ``constants`` and ``inputs`` feed the ``CONST`` and ``INPUT`` loads.

        Raises :class:`ISSError` naming the instruction for an illegal word, missing data,
        or a program that ends without ``HALT``.
        """
        cfg = self.config
        streams = {Source.CONST: np.asarray(constants, dtype=np.uint64).reshape(-1),
                   Source.INPUT: np.asarray(inputs, dtype=np.uint64).reshape(-1)}
        self._pos = {Source.CONST: 0, Source.INPUT: 0}
        self._streams = streams
        self._units = {"host_link": 0, "xnor_array": 0, "lightnorm": 0, "maxpool": 0}
        self._bytes = {"in": 0, "out": 0}
        outputs, trace, cycles = [], [], 0
        fetch = self.isa.width // cfg.host_link_bits
        for index, word in enumerate(words):
            try:
                instr = self.isa.decode(word)
            except InstructionError as error:
                raise ISSError(f"instruction {index}: {error}") from None
            self._units["host_link"] += fetch
            self._bytes["in"] += self.isa.bytes
            op = instr["opcode"]
            try:
                spent = fetch + getattr(self, f"_{op.name.lower()}")(instr, outputs)
            except ISSError as error:
                raise ISSError(f"instruction {index}: {error}") from None
            cycles += spent
            trace.append({"index": index, "opcode": op.name, "cycles": spent})
            if op == Opcode.HALT:
                return ISSResult(outputs=outputs, status=instr["status"], cycles=cycles,
                                 instructions=index + 1, unit_cycles=dict(self._units),
                                 bytes_in=self._bytes["in"], bytes_out=self._bytes["out"],
                                 trace=trace)
        raise ISSError(f"program ended without HALT after {len(trace)} instructions")

    # Instructions: each returns its cycles after the fetch --------------------------------

    def _link_cycles(self, count):
        cycles = count * self.config.word // self.config.host_link_bits
        self._units["host_link"] += cycles
        return cycles

    def _halt(self, instr, outputs):
        return 0

    def _load(self, instr, outputs):
        source, count = instr["source"], instr["count"]
        stream, pos = self._streams[source], self._pos[source]
        if pos + count > len(stream):
            raise ISSError(f"LOAD needs {count} {source.name} words, {len(stream) - pos} "
                           f"remain")
        addr = instr["addr"]
        self.buffers[instr["buffer"]][addr:addr + count] = stream[pos:pos + count]
        self._pos[source] = pos + count
        self._bytes["in"] += count * self.config.word // 8
        return self._link_cycles(count)

    def _store(self, instr, outputs):
        addr, count = instr["addr"], instr["count"]
        outputs.append(self.buffers[instr["buffer"]][addr:addr + count].copy())
        self._bytes["out"] += count * self.config.word // 8
        return self._link_cycles(count)

    def _rows(self, buffer, addr, rows, row, stride):
        index = addr + stride * np.arange(rows)[:, None] + np.arange(row)[None, :]
        return self.buffers[buffer][index]

    def _gemm_xnor(self, instr, outputs):
        cfg, array = self.config, self.config.xnor_array
        m, n, k = instr["m"], instr["n"], instr["k"]
        precision = {}
        operands = {}
        for name, buffer, rows in (("act", Buffer.ACT, m), ("weight", Buffer.WEIGHT, n)):
            bits, signed = instr[f"{name}_bits"], bool(instr[f"{name}_signed"])
            addr = instr["a_addr" if name == "act" else "b_addr"]
            stride = instr["a_stride" if name == "act" else "b_stride"]
            words = self._rows(buffer, addr, rows, row_words(k, bits, cfg.word), stride)
            operands[name] = unpack_rows(words, k, bits, signed, cfg.word)
            precision[name] = "binary" if bits == 1 else f"{'' if signed else 'u'}int{bits}"
        a, b = operands["act"], operands["weight"]
        result = np.zeros((m, n), dtype=np.int64)
        cycles = 0
        for r0, c0, beats in self.xnor.tiles(a, b, precision["act"], precision["weight"]):
            (tile,) = self.xnor.run(beats)
            rows, cols = min(array.rows, m - r0), min(array.cols, n - c0)
            result[r0:r0 + rows, c0:c0 + cols] = np.array(tile)[:rows, :cols]
            self._units["xnor_array"] += len(beats)
            cycles += len(beats) + array.pipeline + 1 + array.rows * array.cols
        index = (instr["c_addr"] + instr["c_stride"] * np.arange(m)[:, None]
                 + np.arange(n)[None, :])
        self.buffers[Buffer.OUT][index] = from_signed(result, cfg.word)
        return cycles

    def _gemm_lns(self, instr, outputs):
        raise ISSError("GEMM_LNS is not simulated by the ISS yet")

    def _norm(self, instr, outputs):
        cfg, norm = self.config, self.config.lightnorm
        mode = instr["mode"]
        if mode not in (NormMode.THRESHOLD, NormMode.REQUANTISE):
            raise ISSError(f"NORM {mode.name} is not simulated by the ISS yet")
        rows, channels = instr["rows"], instr["channels"]
        x = to_signed(self._rows(Buffer.OUT, instr["src_addr"], rows, channels,
                                 instr["src_stride"]), cfg.word)
        count = norm.thresholds
        params = self.buffers[Buffer.WEIGHT][instr["param_addr"]:
                                             instr["param_addr"] + channels * (count + 1)]
        t = to_signed(params[:channels * count], cfg.word).reshape(channels, count)
        flip = params[channels * count:].astype(np.int64)
        # The unit always processes whole channel blocks: pad to its configured channels.
        padded_x = np.zeros((rows, norm.channels), dtype=np.int64)
        padded_x[:, :channels] = x
        padded_t = np.zeros((norm.channels, count), dtype=np.int64)
        padded_t[:channels] = t
        padded_flip = np.zeros(norm.channels, dtype=np.int64)
        padded_flip[:channels] = flip
        try:
            out = self.norm.apply(padded_x, self.norm.threshold_params(padded_t, padded_flip))
        except ValueError as error:
            raise ISSError(f"NORM {mode.name}: {error}") from None
        out = out[:, :channels]
        levels = norm.levels
        # Sign outputs are bits with 1 meaning +1: the binary row format of a next GEMM.
        raw = np.where(out > 0, 1, -1) if levels == 1 else out
        words = pack_rows(raw, levels, False, cfg.word)
        index = (instr["dst_addr"] + instr["dst_stride"] * np.arange(rows)[:, None]
                 + np.arange(words.shape[1])[None, :])
        self.buffers[Buffer.ACT][index] = words
        beats = rows * -(-channels // norm.block)
        self._units["lightnorm"] += beats
        return beats + 3

    def _maxpool(self, instr, outputs):
        rows, row, window = instr["rows"], instr["row_words"], instr["window"]
        src = self._rows(Buffer.ACT, instr["src_addr"], rows * window, row, row)
        # +-1 data: the maximum of a window is +1 iff any element is, an OR of the bits.
        pooled = np.bitwise_or.reduce(src.reshape(rows, window, row), axis=1)
        dst = instr["dst_addr"]
        self.buffers[Buffer.ACT][dst:dst + rows * row] = pooled.reshape(-1)
        self._units["maxpool"] += rows * window * row
        return rows * window * row
