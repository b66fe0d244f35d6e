"""Instruction-set simulator (ISS) of the accelerator: executes programs with the golden
models and estimates cycles (issue 5).

Two ways in, one execution path:

* :meth:`ISS.run` / :meth:`ISS.run_words`: a program (or raw instruction words) with its
  constant and input words; returns an :class:`ISSResult`, raises :class:`ISSError`.
* :meth:`ISS.run_stream`: the accelerator's side of the host link (``docs/host_link.md``),
  bytes in, records out, with the status codes of :class:`lowbit.isa.Status`.

Every instruction is simulated: ``LOAD``, ``STORE``, ``GEMM_XNOR`` (binary and bit-serial,
through :class:`lowbit.golden.xnor_array.XNORArray`'s ``tiles``/``schedule``/``run``),
``GEMM_LNS`` (through :meth:`lowbit.golden.lns.LNSMac.dots`), ``NORM`` in all four modes
(through :class:`lowbit.golden.lightnorm.LightNorm`'s ``statistics`` and ``apply``),
``MAXPOOL`` and ``HALT``, each bit-exact with its unit's golden model.

Operand data layout in the buffers (also in ``docs/program_format.md``): a row of ``K``
elements of ``b`` bits takes ``b * ceil(K / word)`` words, bit plane ``j`` (least
significant first) in words ``j * ceil(K / word)`` onwards, element ``t`` of a plane in bit
``t % word`` of word ``t // word``. A binary (+-1) element is one plane, bit 1 meaning +1.
Signed operands are two's complement (the top plane weighs ``-2^(b-1)``). An LNS row packs
``word // bits`` LNS words (``LNSMacConfig.word_layout``) per buffer word, element ``t`` in
slot ``t % per_word`` of word ``t // per_word`` (:func:`pack_lns_rows`). The output buffer
holds one two's complement value per word. ``NORM STATISTICS`` writes a row of sums and a
row of spreads there; ``NORMALISE`` reads its BFP parameters one value per weight-buffer word
(:func:`pack_bfp_params`) and writes whole BFP blocks, each the norm unit's
``output_layout`` in whole words (:func:`pack_bfp_rows`).

Cycles come from :class:`lowbit.timing.Timing`, the controller's cycle model calibrated
against the gateware.
"""

import dataclasses
import struct

import numpy as np

from .config.accelerator import AcceleratorConfig
from .golden.bfp import BFP
from .golden.lightnorm import LightNorm
from .golden.lns import LNSMac, LNSTensor
from .golden.xnor_array import XNORArray
from .isa import (Buffer, InstructionError, NormMode, Opcode, Record, Source, Status,
                  instruction_set, lns_row_words, row_words)
from .program import Program
from .timing import Timing

__all__ = ["ISSError", "ISSResult", "ISS", "pack_rows", "unpack_rows", "pack_lns_rows",
           "unpack_lns_rows", "pack_bfp_rows", "unpack_bfp_rows", "pack_bfp_params",
           "unpack_bfp_params", "to_signed", "from_signed"]


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


def _lns_slots(config, word):
    # (LNS words per buffer word, their place values, the code's and the sign's place
    # values within an LNS word): element t of a row sits in slot t % per_word of word
    # t // per_word, slot j at bits j * bits (ArrayLayout(word_layout, per_word) order).
    layout = config.word_layout
    per_word = word // layout.size
    slots = np.array([2 ** (j * layout.size) for j in range(per_word)], dtype=np.uint64)
    return per_word, slots, 2 ** layout["code"].offset, 2 ** layout["sign"].offset


def pack_lns_rows(tensor, config, word):
    """Buffer words of LNS rows: an :class:`~lowbit.golden.lns.LNSTensor` of shape
    ``(n, K)`` -> ``(n, ceil(K / (word // bits)))`` words.

    Element ``t`` of a row is the LNS word (``config.word_layout``: code in the low
    ``bits - 1`` bits, sign on top) in bits ``(t % per_word) * bits`` onwards of word
    ``t // per_word``, ``per_word = word // bits``; unused slots and bits are zero.
    ``config`` is the :class:`~lowbit.config.lns.LNSMacConfig`. Raises ``ValueError`` for
    a tensor of another format or shape, or codes and signs out of range.
    """
    if not isinstance(tensor, LNSTensor):
        raise TypeError(f"rows must be an LNSTensor, not {tensor!r}")
    if (tensor.bits, tensor.gamma) != (config.bits, config.gamma):
        raise ValueError(f"rows are {tensor.bits}-bit gamma={tensor.gamma}, the unit "
                         f"{config.bits}-bit gamma={config.gamma}")
    code = np.asarray(tensor.code, dtype=np.int64)
    sign = np.asarray(tensor.sign, dtype=np.int64)
    if code.ndim != 2 or sign.shape != code.shape:
        raise ValueError(f"LNS rows must be 2-D, not of shape {code.shape}")
    if np.any((code < 0) | (code > config.c_max)) or np.any((sign != 0) & (sign != 1)):
        raise ValueError(f"LNS rows hold codes outside 0..{config.c_max} or signs other "
                         f"than 0 and 1")
    per_word, slots, code_place, sign_place = _lns_slots(config, word)
    n, k = code.shape
    nwords = lns_row_words(k, config.bits, word)
    values = np.zeros((n, nwords * per_word), dtype=np.uint64)
    values[:, :k] = code * code_place + sign * sign_place
    # Disjoint bit fields: the sum is their OR and stays below 2^word.
    return (values.reshape(n, nwords, per_word) * slots).sum(axis=2, dtype=np.uint64)


def unpack_lns_rows(words, k, config, word):
    """The :class:`~lowbit.golden.lns.LNSTensor` (scale exponent 0) of ``(n, words)``
    buffer words holding rows of ``k`` LNS words; the inverse of :func:`pack_lns_rows`.
    Slots past ``k`` and bits past the last slot are ignored."""
    per_word, slots, code_place, sign_place = _lns_slots(config, word)
    words = np.asarray(words, dtype=np.uint64)
    n = words.shape[0]
    values = (words[:, :, None] // slots) % np.uint64(2 ** config.bits)
    values = values.reshape(n, -1)[:, :k]
    code = (values // np.uint64(code_place)) % np.uint64(2 ** config.code_bits)
    sign = (values // np.uint64(sign_place)) % np.uint64(2)
    return LNSTensor(sign.astype(np.int64), code.astype(np.int64), 0, config.bits,
                     config.gamma)


def pack_bfp_rows(blocks, config, word):
    """Activation-buffer words of ``NORMALISE`` output rows: :class:`~lowbit.golden.bfp.BFP`
    blocks ``exp (n, G)``, ``man (n, G, block)`` -> ``(n, G * block_words)`` words.

    Block ``g`` of a row takes words ``g * block_words`` onwards, ``block_words =
    ceil(output_layout.size / word)``; their bits, least significant first (word 0 first),
    are the norm unit's ``output_layout`` (``config``: the
    :class:`~lowbit.config.lightnorm.LightNormConfig`): the shared exponent, then mantissa
    ``i`` (two's complement each); the bits past the layout are zero.
    """
    layout, word_bytes = config.output_layout, word // 8
    block_words = -(-layout.size // word)
    exp = np.asarray(blocks.exp, dtype=np.int64)
    man = np.asarray(blocks.man, dtype=np.int64)
    n, groups = exp.shape
    raw = b"".join(
        layout.const({"exp": int(exp[r, g]), "man": [int(v) for v in man[r, g]]})
        .as_bits().to_bytes(block_words * word_bytes, "little")
        for r in range(n) for g in range(groups))
    words = np.frombuffer(raw, dtype=f"<u{word_bytes}").astype(np.uint64)
    return words.reshape(n, groups * block_words)


def unpack_bfp_rows(words, channels, config, word):
    """The :class:`~lowbit.golden.bfp.BFP` blocks of ``(n, G * block_words)`` words holding
    rows of ``channels`` channels (``G = ceil(channels / block)``); the inverse of
    :func:`pack_bfp_rows`."""
    layout, word_bytes = config.output_layout, word // 8
    block_words = -(-layout.size // word)
    words = np.asarray(words, dtype=np.uint64)
    n, groups = words.shape[0], -(-channels // config.block)
    raw = words[:, :groups * block_words].astype(f"<u{word_bytes}").tobytes()
    size = block_words * word_bytes
    views = [layout.from_bits(int.from_bytes(raw[i:i + size], "little"))
             for i in range(0, len(raw), size)]
    exp = np.array([v.exp for v in views], dtype=np.int64).reshape(n, groups)
    man = np.array([list(v.man) for v in views], dtype=np.int64).reshape(n, groups,
                                                                          config.block)
    return BFP(exp, man)


def pack_bfp_params(params, channels, word):
    """Weight-buffer words of ``NORMALISE`` parameters: per-group ``LOAD`` parameter dicts
    (``scale``, ``scale_exp``, ``offset``, ``offset_exp``, as
    :meth:`~lowbit.golden.lightnorm.LightNorm.affine_params` returns) of the first
    ``channels`` channels -> ``2 * channels + 2 * G`` words, one two's complement value
    each: the ``channels`` scale mantissas, the ``channels`` offset mantissas, the ``G``
    scale exponents, the ``G`` offset exponents (``G = ceil(channels / block)``)."""
    block = len(params[0]["scale"])
    groups = -(-channels // block)
    used = params[:groups]
    values = [np.concatenate([p[key] for p in used])[:channels] for key in ("scale", "offset")]
    values += [np.array([p[key] for p in used]) for key in ("scale_exp", "offset_exp")]
    return from_signed(np.concatenate(values), word)


def unpack_bfp_params(words, channels, config, word):
    """Per-group ``LOAD`` parameter dicts of the ``G = ceil(channels / block)`` groups from
    the words of :func:`pack_bfp_params`; channels past ``channels`` get zero
    mantissas."""
    block = config.block
    groups = -(-channels // block)
    values = to_signed(words, word)
    scale, offset = (np.zeros(groups * block, dtype=np.int64) for _ in range(2))
    scale[:channels] = values[:channels]
    offset[:channels] = values[channels:2 * channels]
    exps = values[2 * channels:].reshape(2, groups)
    return [{"scale": [int(v) for v in scale[g * block:(g + 1) * block]],
             "scale_exp": int(exps[0, g]),
             "offset": [int(v) for v in offset[g * block:(g + 1) * block]],
             "offset_exp": int(exps[1, g])} for g in range(groups)]


def _wrap(values, bits):
    # Two's complement values modulo 2^bits, as a narrower register holds them.
    half = 2 ** (bits - 1)
    return ((np.asarray(values, dtype=np.int64) + half) % (2 * half)) - half


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


#: Header of every host-link record (docs/host_link.md): kind, three bytes, a u32.
_RECORD_HEADER = struct.Struct("<BBBBI")
#: The counters of a STATUS record: cycles, xnor_busy, norm_busy, lns_busy.
_COUNTERS = struct.Struct("<IIII")


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
        Busy cycles per unit (``host_link``, ``xnor_array``, ``lightnorm``, ``lns_mac``,
        ``maxpool``); for the three compute units, the beats they accepted.
    bytes_in, bytes_out : int
        Bytes moved over the host link (instructions and data in; stored data out).
    trace : list of dict
        Per instruction: ``index``, ``opcode`` and estimated ``cycles``.
    code : Status
        How the program ended (``OK`` unless it came from :meth:`ISS.run_stream`).
    index : int
        The instruction the status is about (the ``HALT``, or the failing instruction).
    """

    outputs: list
    status: int
    cycles: int
    instructions: int
    unit_cycles: dict
    bytes_in: int
    bytes_out: int
    trace: list
    code: Status = Status.OK
    index: int = 0


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
        self.lns = LNSMac(config.lns_mac) if config.has_lns_mac else None
        #: One ISSResult per program of the last run_stream call.
        self.results = []
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
        streams = {Source.CONST: np.asarray(constants, dtype=np.uint64).reshape(-1),
                   Source.INPUT: np.asarray(inputs, dtype=np.uint64).reshape(-1)}
        pos = {Source.CONST: 0, Source.INPUT: 0}
        self._begin()
        for index, word in enumerate(words):
            try:
                instr = self.isa.decode(word)
            except InstructionError as error:
                raise ISSError(f"instruction {index}: {error}") from None
            data = None
            if instr["opcode"] == Opcode.LOAD:
                source, count = instr["source"], instr["count"]
                stream, start = streams[source], pos[source]
                if start + count > len(stream):
                    raise ISSError(f"instruction {index}: LOAD needs {count} {source.name} "
                                   f"words, {len(stream) - start} remain")
                data = stream[start:start + count]
                pos[source] = start + count
            self._execute(index, instr, data)
            if instr["opcode"] == Opcode.HALT:
                return self._result(Status.OK, instr["status"])
        raise ISSError(f"program ended without HALT after {len(self._trace)} instructions")

    def run_stream(self, data):
        """The accelerator's side of the host link (``docs/host_link.md``): consume the
        bytes the host sends, return the bytes the accelerator answers.

        ``data`` holds instruction words (``isa.bytes`` each, little-endian), every ``LOAD``
        followed by its ``count`` data words (``word / 8`` bytes each, little-endian; its
        ``source`` field is not looked at). Each ``STORE`` answers a ``DATA`` record, and
        each program ends with one ``STATUS`` record: ``OK`` at ``HALT``; ``ILLEGAL`` or
        ``ADDRESS`` (:attr:`InstructionError.code`) for a word that does not decode, which
        then has no effect; ``TRUNCATED`` when the bytes end inside an instruction or its
        data, or between instructions before a ``HALT`` (the index is then that of the
        missing instruction). A truncated ``LOAD`` has written the whole words that
        arrived, as the controller writes each word when it arrives.

        Bytes after a ``HALT`` are the next program: programs run one after the other
        until the bytes are exhausted (no bytes at all is no program, and no record). After
        a non-``OK`` status the rest of ``data`` is discarded, as the accelerator discards
        input until the link falls idle. Buffers keep their contents between programs and
        between calls (until :meth:`reset`). :attr:`results` holds an :class:`ISSResult`
        per program of the last call.

        Values read into a unit's narrower fields are taken modulo the field's width, as
        the hardware does (a ``NORM`` input keeps its low ``input_width`` bits, a threshold
        its low ``input_width + 1`` bits, a flip its bit 0, a BFP parameter its mantissa or
        exponent bits): programs with such values run the same on both.
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data must be bytes, not {data!r}")
        data = bytes(data)
        out = bytearray()
        self.results = []
        pos = 0
        while pos < len(data):
            pos, records, result = self._stream_program(data, pos)
            out += records
            self.results.append(result)
            if result.code != Status.OK:
                break
        return bytes(out)

    def _stream_program(self, data, pos):
        # One program of run_stream from data[pos:]: (next position, records, result).
        word_bytes = self.config.word // 8
        self._begin()
        records = bytearray()
        index = 0
        while True:
            start = pos
            if len(data) - pos < self.isa.bytes:
                result = self._truncated(index, len(data) - start)
                return len(data), records + self._status_record(result), result
            word = int.from_bytes(data[pos:pos + self.isa.bytes], "little")
            pos += self.isa.bytes
            try:
                instr = self.isa.decode(word)
            except InstructionError as error:
                # The word arrived (its fetch counts); the instruction has no effect.
                self._cycles = self._timing.fault()
                self._units["host_link"] += self._timing.fetch
                self._bytes["in"] += self.isa.bytes
                result = self._result(error.code, 0, index)
                return len(data), records + self._status_record(result), result
            words = None
            if instr["opcode"] == Opcode.LOAD:
                count = instr["count"]
                arrived = min(count, (len(data) - pos) // word_bytes)
                words = np.frombuffer(data[pos:pos + arrived * word_bytes],
                                      dtype=f"<u{word_bytes}").astype(np.uint64)
                if arrived < count:
                    # The controller writes each word as it arrives; the LOAD never ends.
                    addr = instr["addr"]
                    self.buffers[instr["buffer"]][addr:addr + arrived] = words
                    result = self._truncated(index, len(data) - start)
                    return len(data), records + self._status_record(result), result
                pos += count * word_bytes
            self._execute(index, instr, words)
            if instr["opcode"] == Opcode.STORE:
                records += self._data_record(self._outputs[-1])
            if instr["opcode"] == Opcode.HALT:
                result = self._result(Status.OK, instr["status"])
                return pos, records + self._status_record(result), result
            index += 1

    # Per-program state, results and host-link records -------------------------------------

    def _begin(self):
        self._units = {"host_link": 0, "xnor_array": 0, "lightnorm": 0, "lns_mac": 0,
                       "maxpool": 0}
        self._bytes = {"in": 0, "out": 0}
        self._outputs, self._trace, self._cycles = [], [], 0
        self._timing = Timing(self.config)

    def _result(self, code, status, index=None):
        # The ISSResult of the program so far; `index` defaults to the last instruction.
        instructions = len(self._trace)
        return ISSResult(
            outputs=self._outputs, status=status, cycles=self._cycles,
            instructions=instructions, unit_cycles=dict(self._units),
            bytes_in=self._bytes["in"], bytes_out=self._bytes["out"], trace=self._trace,
            code=Status(code), index=instructions - 1 if index is None else index)

    def _truncated(self, index, received):
        # The bytes ended `received` bytes into instruction `index` (or before it).
        self._cycles = self._timing.truncated(received)
        self._units["host_link"] += received * 8 // self.config.host_link_bits
        self._bytes["in"] += received
        return self._result(Status.TRUNCATED, 0, index)

    def _data_record(self, words):
        word_bytes = self.config.word // 8
        body = np.asarray(words, dtype=np.uint64).astype(f"<u{word_bytes}").tobytes()
        return _RECORD_HEADER.pack(Record.DATA, 0, 0, 0, len(words)) + body

    @staticmethod
    def _status_record(result):
        units = result.unit_cycles
        counters = [result.cycles, units["xnor_array"], units["lightnorm"],
                    units["lns_mac"]]
        return (_RECORD_HEADER.pack(Record.STATUS, result.code, result.status, 0,
                                    result.index)
                + _COUNTERS.pack(*(value % 2 ** 32 for value in counters)))

    def _execute(self, index, instr, data):
        """Execute one decoded instruction (``data``: a ``LOAD``'s words), fetch included:
        the one execution path of :meth:`run_words` and :meth:`run_stream`."""
        op = instr["opcode"]
        self._bytes["in"] += self.isa.bytes
        try:
            busy = getattr(self, f"_{op.name.lower()}")(instr, data)
        except ISSError as error:
            raise ISSError(f"instruction {index}: {error}") from None
        self._units["host_link"] += self._timing.fetch
        for unit, beats in busy.items():
            self._units[unit] += beats
        # The front end's cycles for this instruction (a compute instruction's engine runs
        # on beside the next ones; HALT waits for it).
        before = self._timing.fe
        end = self._timing.instruction(instr)
        self._cycles = self._timing.fe if end is None else end
        self._trace.append({"index": index, "opcode": op.name,
                            "cycles": self._cycles - before})

    # Instructions: each returns (cycles after the fetch, busy cycles per unit) ------------

    def _halt(self, instr, data):
        return {}

    def _load(self, instr, data):
        addr, count = instr["addr"], instr["count"]
        self.buffers[instr["buffer"]][addr:addr + count] = data
        self._bytes["in"] += count * self.config.word // 8
        return {"host_link": count * self.config.word // self.config.host_link_bits}

    def _store(self, instr, data):
        addr, count = instr["addr"], instr["count"]
        self._outputs.append(self.buffers[instr["buffer"]][addr:addr + count].copy())
        self._bytes["out"] += count * self.config.word // 8
        return {"host_link": count * self.config.word // self.config.host_link_bits}

    def _rows(self, buffer, addr, rows, row, stride):
        # `rows` rows of `row` words, row i at addr + i * stride: (rows, row) words.
        index = addr + stride * np.arange(rows)[:, None] + np.arange(row)[None, :]
        return self.buffers[buffer][index]

    def _write_rows(self, buffer, addr, stride, words):
        # The inverse of _rows: (rows, row) words to row i at addr + i * stride.
        rows, row = words.shape
        index = addr + stride * np.arange(rows)[:, None] + np.arange(row)[None, :]
        self.buffers[buffer][index] = words

    def _gemm_xnor(self, instr, data):
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
        busy = 0
        for r0, c0, beats in self.xnor.tiles(a, b, precision["act"], precision["weight"]):
            (tile,) = self.xnor.run(beats)
            rows, cols = min(array.rows, m - r0), min(array.cols, n - c0)
            result[r0:r0 + rows, c0:c0 + cols] = np.array(tile)[:rows, :cols]
            busy += len(beats)
        self._write_rows(Buffer.OUT, instr["c_addr"], instr["c_stride"],
                         from_signed(result, cfg.word))
        return {"xnor_array": busy}

    def _gemm_lns(self, instr, data):
        cfg, lns = self.config, self.config.lns_mac
        m, n, k = instr["m"], instr["n"], instr["k"]
        row = lns_row_words(k, lns.bits, cfg.word)
        a = unpack_lns_rows(self._rows(Buffer.ACT, instr["a_addr"], m, row,
                                       instr["a_stride"]), k, lns, cfg.word)
        b = unpack_lns_rows(self._rows(Buffer.WEIGHT, instr["b_addr"], n, row,
                                       instr["b_stride"]), k, lns, cfg.word)
        # C[i][j] = dot(A row i, B row j), vectorised (LNSMac.dots equals the beat-level
        # model for k <= max_k, which the instruction set guarantees).
        result = self.lns.dots(a[:, None], b[None, :])
        self._write_rows(Buffer.OUT, instr["c_addr"], instr["c_stride"],
                         from_signed(result, cfg.word))
        # Every dot product has the beats of the unit's own schedule.
        beats = len(self.lns.schedule(a[0], b[0]))
        return {"lns_mac": m * n * beats}

    def _norm(self, instr, data):
        cfg, norm = self.config, self.config.lightnorm
        mode, rows, channels = instr["mode"], instr["rows"], instr["channels"]
        x = _wrap(to_signed(self._rows(Buffer.OUT, instr["src_addr"], rows, channels,
                                       instr["src_stride"]), cfg.word), norm.input_width)
        # The unit always processes whole channel blocks: pad to its configured channels
        # (zero inputs with zero parameters, which change no real channel's result).
        padded = np.zeros((rows, norm.channels), dtype=np.int64)
        padded[:, :channels] = x
        params = self.buffers[Buffer.WEIGHT][
            instr["param_addr"]:instr["param_addr"] + self.isa.norm_param_words(mode, channels)]
        run = {NormMode.STATISTICS: self._norm_statistics,
               NormMode.NORMALISE: self._norm_normalise}.get(mode, self._norm_threshold)
        try:
            run(instr, padded, params)
        except ValueError as error:
            raise ISSError(f"NORM {mode.name}: {error}") from None
        # The unit takes a beat per group and row, and a LOAD beat per group of parameters
        # (STATISTICS has none).
        groups = -(-channels // norm.block)
        beats = rows * groups + (0 if mode == NormMode.STATISTICS else groups)
        return {"lightnorm": beats}

    def _norm_threshold(self, instr, x, params):
        # THRESHOLD / REQUANTISE: channels * T thresholds, channels flips -> packed rows.
        cfg, norm, channels = self.config, self.config.lightnorm, instr["channels"]
        count = norm.thresholds
        t = np.zeros((norm.channels, count), dtype=np.int64)
        t[:channels] = _wrap(to_signed(params[:channels * count], cfg.word),
                             norm.threshold_bits).reshape(channels, count)
        flip = np.zeros(norm.channels, dtype=np.int64)
        flip[:channels] = params[channels * count:].astype(np.int64) % 2
        out = self.norm.apply(x, self.norm.threshold_params(t, flip))[:, :channels]
        # Sign outputs are bits with 1 meaning +1: the binary row format of a next GEMM.
        raw = np.where(out > 0, 1, -1) if norm.levels == 1 else out
        words = pack_rows(raw, norm.levels, False, cfg.word)
        self._write_rows(Buffer.ACT, instr["dst_addr"], instr["dst_stride"], words)

    def _norm_statistics(self, instr, x, params):
        # Per channel sum and spread (range batch norm, chunked by the numpy.array_split
        # rule over the rows): a row of sums at dst_addr, of spreads dst_stride later.
        channels = instr["channels"]
        total, spread = self.norm.statistics(x)
        words = from_signed(np.stack([total[:channels], spread[:channels]]), self.config.word)
        self._write_rows(Buffer.OUT, instr["dst_addr"], instr["dst_stride"], words)

    def _norm_normalise(self, instr, x, params):
        # BFP scale and offset from the weight buffer; whole BFP blocks to the act buffer.
        norm, channels = self.config.lightnorm, instr["channels"]
        groups = -(-channels // norm.block)
        loads = [{"scale": _wrap(p["scale"], norm.mantissa).tolist(),
                  "scale_exp": int(_wrap(p["scale_exp"], norm.exponent)),
                  "offset": _wrap(p["offset"], norm.mantissa).tolist(),
                  "offset_exp": int(_wrap(p["offset_exp"], norm.exponent))}
                 for p in unpack_bfp_params(params, channels, norm, self.config.word)]
        zero = [0] * norm.block
        loads += [{"scale": zero, "scale_exp": 0, "offset": zero, "offset_exp": 0}
                  for _ in range(norm.groups - groups)]
        out = self.norm.apply(x, loads)
        words = pack_bfp_rows(BFP(out.exp[:, :groups], out.man[:, :groups]), norm,
                              self.config.word)
        self._write_rows(Buffer.ACT, instr["dst_addr"], instr["dst_stride"], words)

    def _maxpool(self, instr, data):
        rows, row, window = instr["rows"], instr["row_words"], instr["window"]
        src = self._rows(Buffer.ACT, instr["src_addr"], rows * window, row, row)
        # +-1 data: the maximum of a window is +1 iff any element is, an OR of the bits.
        pooled = np.bitwise_or.reduce(src.reshape(rows, window, row), axis=1)
        dst = instr["dst_addr"]
        self.buffers[Buffer.ACT][dst:dst + rows * row] = pooled.reshape(-1)
        words = rows * window * row
        return {"maxpool": words}
