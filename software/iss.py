"""Instruction-set simulator (ISS) of the accelerator: runs programs on the golden models,
in program order, and counts their cycles with :class:`lowbit.timing.Timing`.

Two ways in, one execution path:

* :meth:`ISS.run` / :meth:`ISS.run_words`: a program (or raw instruction words) with its
  constant and input words; returns an :class:`ISSResult`, raises :class:`ISSError`;
* :meth:`ISS.run_stream`: the accelerator's side of the host link (``docs/host_link.md``),
  bytes in, records out, with the status codes of :class:`lowbit.isa.Status`.

Memories are ``(depth, lanes)`` arrays of ``uint64`` in the layout of :mod:`lowbit.layout`;
``GEMM`` runs :class:`lowbit.golden.pe_array.PEArray` on every tile at once and
:class:`lowbit.golden.result_stage.ResultStage` on the results. Raw words are taken as the
gateware takes them: addresses modulo each memory's depth, no region checks (a
:class:`~lowbit.program.Program` has had them).

A program is *race-free* when its wait fields order every access that the stages could
otherwise make at once (the compiler's programs are; :meth:`lowbit.program.Program.check`
refuses the others): then the gateware computes exactly what this program-order model
computes.
"""

import dataclasses

import numpy as np

from .config.accelerator import AcceleratorConfig
from .golden.lightnorm import LightNorm, wrap
from .golden.lns import LNSTensor
from .golden.pe_array import PEArray
from .golden.result_stage import ResultStage
from .golden.training import madam_update
from .isa import (DATA_HEADER, STATUS_COUNTERS, STATUS_RECORD, GemmMode, InstructionError,
                  Opcode, Record, Source, Status, argmax_bytes, instruction_set)
from .program import Program
from .timing import Timing

__all__ = ["ISSError", "ISSResult", "ISS"]


class ISSError(Exception):
    """A program the accelerator would reject: illegal instruction, missing data or no
    ``HALT``. The message names the instruction index."""


@dataclasses.dataclass
class ISSResult:
    """What a run produced.

    Attributes
    ----------
    outputs : list of numpy.ndarray
        The ``word``-bit words of each ``STORE``, ``STATS`` and ``ARGMAX``, in order
        (``uint64``).
    status : int
        The ``HALT`` status.
    cycles : int
        Cycles of the run by the cycle model (the gateware's count for an ideal host).
    counters : dict
        The status record's counters (:data:`lowbit.isa.STATUS_COUNTERS`).
    instructions : int
        Instructions executed, ``HALT`` included.
    bytes_in, bytes_out : int
        Bytes moved over the host link.
    trace : list of dict
        Per instruction: ``opcode`` and its front-end ``start`` and ``end`` cycles.
    code : Status
        How the program ended.
    index : int
        The instruction the status is about.
    """

    outputs: list
    status: int
    cycles: int
    counters: dict
    instructions: int
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
        self.array = PEArray(config)
        self.result_stage = ResultStage(config)
        #: One ISSResult per program of the last run_stream call.
        self.results = []
        self.reset()

    def reset(self):
        """Zero the memories (their power-up contents in this model)."""
        cfg = self.config
        self.memories = {name: np.zeros((cfg.depth(name), cfg.lanes(name)), dtype=np.uint64)
                         for name in cfg.memories}

    # Memory access with the gateware's wrap-around ---------------------------------------

    def _read(self, name, first, words):
        depth = self.config.depth(name)
        return self.memories[name][(first + np.arange(words)) % depth]

    def _write(self, name, first, values):
        mem = self.memories[name]
        values = np.asarray(values, dtype=np.uint64).reshape(-1, mem.shape[1])
        index = (first + np.arange(len(values))) % len(mem)
        if len(values) > len(mem):
            # A region longer than the memory: later words win, as the gateware writes them
            # in order.
            index, values = index[-len(mem):], values[-len(mem):]
        mem[index] = values

    # Running ------------------------------------------------------------------------------

    def run(self, program, inputs=()):
        """Run a :class:`~lowbit.program.Program` with input words ``inputs``; return an
        :class:`ISSResult`. Raises :class:`ISSError` for a program of another
        configuration."""
        if not isinstance(program, Program):
            raise TypeError(f"program must be a Program, not {program!r}")
        if program.config.fingerprint() != self.config.fingerprint():
            raise ISSError(f"program was built for accelerator configuration "
                           f"{program.config.fingerprint()}, this accelerator is "
                           f"{self.config.fingerprint()}")
        return self.run_words(program.words(), program.constants, inputs)

    def run_words(self, words, constants=(), inputs=()):
        """Run raw instruction words as the gateware takes them; ``constants`` and
        ``inputs`` (``word``-bit words) feed the ``CONST`` and ``INPUT`` loads.

        Raises :class:`ISSError` naming the instruction for an illegal word, missing data,
        or a program that ends without ``HALT``.
        """
        streams = {Source.CONST: np.asarray(constants, dtype=np.uint64).reshape(-1),
                   Source.INPUT: np.asarray(inputs, dtype=np.uint64).reshape(-1)}
        pos = {Source.CONST: 0, Source.INPUT: 0}
        self._begin()
        for index, word in enumerate(words):
            try:
                instr = self.isa.decode(int(word), regions=False)
            except InstructionError as error:
                raise ISSError(f"instruction {index}: {error}") from None
            data = None
            if self.isa.takes_data(instr):
                source, count = instr["source"], self.isa.link_words(instr)
                stream, start = streams[source], pos[source]
                if start + count > len(stream):
                    raise ISSError(f"instruction {index}: {instr['opcode'].name} needs {count} "
                                   f"{source.name} "
                                   f"words, {len(stream) - start} remain")
                data = stream[start:start + count]
                pos[source] = start + count
            self._execute(instr, data)
            if instr["opcode"] == Opcode.HALT:
                return self._result(Status.OK, instr["status"], index)
        raise ISSError(f"program ended without HALT after {len(self._timing.trace)} "
                       f"instructions")

    def _begin(self):
        self._timing = Timing(self.config)
        self._outputs = []
        self._bytes_in = 0

    def _execute(self, instr, data):
        op = instr["opcode"]
        self._bytes_in += self.isa.bytes
        if op == Opcode.LOAD:
            name = instr["buffer"].name.lower()
            if name == "rank":
                # The rank memory keeps a word's low rank_bits bits.
                data = np.asarray(data, dtype=np.uint64) & np.uint64(
                    (1 << self.config.rank_bits) - 1)
            self._write(name, instr["addr"], data)
            self._bytes_in += len(data) * self.config.word // 8
        elif op == Opcode.STORE:
            name = instr["buffer"].name.lower()
            self._outputs.append(self._read(name, instr["addr"], instr["count"]).reshape(-1))
        elif op == Opcode.GEMM:
            self._gemm(instr)
        elif op == Opcode.UPDATE:
            self._update(instr, data)
            self._bytes_in += len(data) * self.config.word // 8
        elif op == Opcode.STATS:
            self._outputs.append(self._stats(instr))
        elif op == Opcode.ARGMAX:
            self._outputs.append(self._argmax(instr))
        self._timing.step(instr)

    def _argmax(self, instr):
        """``ARGMAX``: per sample the first of its first ``classes`` lanes whose rank (the
        ``rank`` memory's low ``rank_bits`` bits at ``rank_addr + c * stride + acc``,
        modulo its depth) is largest, one byte a sample, packed as the record sends it."""
        cfg = self.config
        groups, n = instr["groups"], instr["samples"]
        lanes = groups * cfg.cols
        classes = min(instr["classes"], lanes)
        acc = self._read("score", instr["addr"], n * groups).reshape(n, lanes)[:, :classes]
        depth = cfg.rank_depth
        # Only the accumulator's low bits reach the address (it is taken modulo the depth).
        addr = (instr["rank_addr"] + np.arange(classes, dtype=np.uint64)[None, :]
                * np.uint64(instr["stride"]) + acc) % np.uint64(depth)
        ranks = (self.memories["rank"][addr.astype(np.int64), 0]
                 & np.uint64((1 << cfg.rank_bits) - 1))
        best = np.argmax(ranks, axis=1).astype(np.uint64)       # the first of the largest
        per = argmax_bytes(cfg)
        record = np.zeros(self.isa.argmax_words(n) * per, dtype=np.uint64)
        record[:n] = best
        word_bytes = cfg.word // 8
        shifts = (8 * np.arange(word_bytes)).astype(np.uint64)
        return (record.reshape(-1, word_bytes) << shifts[None, :]).sum(axis=1,
                                                                      dtype=np.uint64)

    def _stats(self, instr):
        """``STATS``: the range batch-norm statistics of ``samples`` samples of ``groups``
        channel groups of score words, as the statistics unit's ``STAT`` beats compute
        them (:class:`lowbit.golden.lightnorm.LightNorm`), laid out as the record sends
        them: per group ``cols`` sums, then ``cols`` spreads, two's complement."""
        cfg = self.config
        norm = cfg.norm
        groups, n = instr["groups"], instr["samples"]
        words = self._read("score", instr["addr"], n * groups).astype(np.int64)
        # The unit takes the low input_width bits of each lane as a signed integer.
        x = wrap(words & ((1 << norm.input_width) - 1), norm.input_width)
        x = np.pad(x.reshape(n, groups * cfg.cols),
                   ((0, 0), (0, cfg.norm_channels - groups * cfg.cols)))
        total, spread = LightNorm(norm).statistics(x)
        lanes = np.stack([total.reshape(-1, cfg.cols), spread.reshape(-1, cfg.cols)], axis=1)
        mask = np.uint64((1 << cfg.word) - 1)
        return lanes[:groups].reshape(-1).astype(np.uint64) & mask

    def _update(self, instr, data):
        """``UPDATE``: LNS-Madam on ``count`` latent words by the gradient bytes in
        ``data`` (whole latent words only: a truncated one is not updated), their signs
        into the weight lanes from ``w_addr``."""
        cfg = self.config
        word, bits = cfg.word, cfg.latent_bits
        grads = np.asarray(data, dtype=np.uint64).astype(f"<u{word // 8}")
        grads = np.frombuffer(grads.tobytes(), dtype=np.int8).astype(np.int64)
        count = len(grads) // word
        if count == 0:
            return
        grads = grads[:count * word].reshape(count, word)
        lat = self._read("latent", instr["lat_addr"], count)            # (count, bits)
        shifts = np.arange(word, dtype=np.uint64)
        planes = (lat[:, :, None] >> shifts) & np.uint64(1)              # (count, bits, word)
        planes = planes.astype(np.int64)
        code = sum(planes[:, 1 + b] << b for b in range(bits - 1))
        new = madam_update(LNSTensor(planes[:, 0], code, 0, bits), grads,
                           instr["grad_bits"], instr["lr_exponent"])
        out = [new.sign] + [(new.code >> b) & 1 for b in range(bits - 1)]
        packed = np.stack([(p.astype(np.uint64) << shifts).sum(axis=1, dtype=np.uint64)
                           for p in out], axis=1)
        self._write("latent", instr["lat_addr"], packed)
        # The signs into the weight lanes (bit 1 = +1), in LOAD's lane order.
        signs = ((1 - new.sign).astype(np.uint64) << shifts).sum(axis=1, dtype=np.uint64)
        flat = (instr["w_addr"] + np.arange(count)) % (cfg.weight_depth * cfg.cols)
        self.memories["weight"][flat // cfg.cols, flat % cfg.cols] = signs

    def _gemm(self, instr):
        cfg = self.config
        mt, nt = instr["m_tiles"] * instr["pool"], instr["n_tiles"]
        planes, words = instr["planes"], instr["words"]
        a = self._read(instr["a_buffer"].name.lower(), instr["a_addr"], mt * planes * words)
        b = self._read("weight", instr["b_addr"], nt * words)
        acc = self.array.tiles(a.reshape(mt, planes, words, cfg.rows),
                               b.reshape(nt, words, cfg.cols))
        if instr["mode"] == GemmMode.THRESHOLD:
            bits = instr["out_bits"]
            count = (1 << bits) - 1
            thr = self._read("thresh", instr["thr_addr"], nt * count)
            out = self.result_stage.threshold_words(acc, thr.reshape(nt, count, cfg.cols),
                                                    bits, instr["pool"])
            self._write("act", instr["dst_addr"], out)
        else:
            self._write("score", instr["dst_addr"], self.result_stage.score_words(acc))

    def _counters(self):
        t = self._timing
        return {"cycles": t.cycles, "array_beats": t.beats, "tile_holds": t.holds}

    def _result(self, code, halt, index):
        counters = self._counters()
        out_bytes = sum(DATA_HEADER.size // 8 + len(o) * self.config.word // 8
                        for o in self._outputs) + STATUS_RECORD.size // 8
        return ISSResult(outputs=self._outputs, status=halt, cycles=counters["cycles"],
                         counters=counters, instructions=len(self._timing.trace),
                         bytes_in=self._bytes_in, bytes_out=out_bytes,
                         trace=self._timing.trace, code=Status(code), index=index)

    # The host link --------------------------------------------------------------------------

    def run_stream(self, data):
        """The accelerator's side of the host link: consume the bytes the host sends,
        return the bytes the accelerator answers (``docs/host_link.md``).

        ``data`` holds instruction words (``isa.bytes`` each, little-endian), each ``LOAD``
        followed by its ``count * lanes`` words (``word / 8`` bytes each). Each ``STORE``
        answers a ``DATA`` record and each program ends with a ``STATUS`` record: ``OK`` at
        ``HALT``; ``ILLEGAL`` for a word the gateware refuses (it then has no effect and the
        instructions before it complete); ``TRUNCATED`` when the bytes end inside a program
        (a truncated ``LOAD`` has written the memory words that arrived whole). Bytes after a
        ``HALT`` are the next program; after a non-``OK`` status the rest is discarded.
        Memories keep their contents between programs and calls (until :meth:`reset`).
        :attr:`results` holds an :class:`ISSResult` per program of the last call.
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data must be bytes, not {data!r}")
        data = bytes(data)
        out = bytearray()
        self.results = []
        pos = 0
        while pos < len(data):
            pos, result = self._stream_program(data, pos)
            for words in result.outputs:
                header = DATA_HEADER.const({"kind": Record.DATA, "count": len(words)})
                out += header.as_bits().to_bytes(DATA_HEADER.size // 8, "little")
                out += words.astype(f"<u{self.config.word // 8}").tobytes()
            status = STATUS_RECORD.const({"kind": Record.STATUS, "code": result.code,
                                          "halt": result.status, "index": result.index,
                                          **result.counters})
            out += status.as_bits().to_bytes(STATUS_RECORD.size // 8, "little")
            self.results.append(result)
            if result.code != Status.OK:
                break
        return bytes(out)

    def _stream_program(self, data, pos):
        isa, word_bytes = self.isa, self.config.word // 8
        self._begin()
        index = 0
        while True:
            if pos + isa.bytes > len(data):
                return len(data), self._result(Status.TRUNCATED, 0, index)
            bits = int.from_bytes(data[pos:pos + isa.bytes], "little")
            pos += isa.bytes
            try:
                instr = isa.decode(bits, regions=False)
            except InstructionError:
                self._timing.illegal()
                return len(data), self._result(Status.ILLEGAL, 0, index)
            payload = None
            if isa.takes_data(instr):
                size = isa.link_words(instr) * word_bytes
                chunk = data[pos:pos + size]
                pos += len(chunk)
                whole = len(chunk) // word_bytes
                payload = np.frombuffer(chunk[:whole * word_bytes],
                                        dtype=f"<u{word_bytes}").astype(np.uint64)
                if len(chunk) < size:
                    self._truncated(instr, payload)
                    return len(data), self._result(Status.TRUNCATED, 0, index)
            self._execute(instr, payload)
            if instr["opcode"] == Opcode.HALT:
                return pos, self._result(Status.OK, instr["status"], index)
            index += 1

    def _truncated(self, instr, payload):
        """What a ``LOAD`` or ``UPDATE`` cut short does with the words that arrived: the
        gateware writes a memory word once its last lane is in, and updates a latent word
        once its last gradient is in; the rest is lost."""
        if instr["opcode"] == Opcode.UPDATE:
            self._update(instr, payload)      # whole latent words only
            return
        name = instr["buffer"].name.lower()
        lanes = self.config.lanes(name)
        whole_words = len(payload) // lanes
        if whole_words:
            self._write(name, instr["addr"], payload[:whole_words * lanes])

    @property
    def counter_names(self):
        """The status record's counters."""
        return STATUS_COUNTERS
