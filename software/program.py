"""Accelerator programs and their file format (described in ``docs/program_format.md``).

A :class:`Program` is a list of instructions (dicts in :mod:`lowbit.isa` form) plus the
constant data its ``LOAD`` instructions with ``source=CONST`` consume in order (weights,
thresholds), all for one :class:`~lowbit.config.accelerator.AcceleratorConfig`. The file
stamps that configuration's fingerprint; :meth:`Program.load` refuses a program built for
another configuration.

File layout (all integers little-endian)::

    offset  size  field
         0     8  magic b"LOWBIT\\0\\0"
         8     2  format version (3)
        10     2  bytes per instruction
        12    16  accelerator configuration fingerprint (ASCII hex)
        28     4  instruction count
        32     4  constant data length in bytes
        36     4  metadata length in bytes (0: none)
        40        instructions, each one word of the instruction layout
                  constant data, buffer words of ``config.word`` bits
                  metadata: UTF-8 JSON object (what the host needs to run a compiled
                  model: input quantizer and packing, output layout, host affine)
"""

import json
import struct

import numpy as np

from .config.accelerator import AcceleratorConfig
from .isa import InstructionError, Opcode, Source, instruction_set

__all__ = ["MAGIC", "VERSION", "HEADER", "ProgramError", "Program"]

#: First bytes of every program file.
MAGIC = b"LOWBIT\0\0"
#: The format version this module writes and reads (2 added the metadata section, 3 is the
#: full-rate core's instruction set).
VERSION = 3
#: The file header (the byte layout of a file, not of an instruction: instructions are laid
#: out by :mod:`lowbit.isa` alone).
HEADER = struct.Struct("<8sHH16sIII")


class ProgramError(ValueError):
    """A program that is malformed, or a file that is not a program for this accelerator."""


class Program:
    """A validated accelerator program.

    Parameters
    ----------
    config : AcceleratorConfig
        The accelerator the program is built for.
    instructions : sequence of dict
        Instructions in :func:`lowbit.isa.encode` form; each is validated.
    constants : sequence of int
        Buffer words (unsigned, ``config.word`` bits) that the ``CONST`` loads consume, in
        order; exactly as many as they load.
    metadata : dict or None
        JSON-serialisable information for the host (a compiled model's input quantizer,
        input packing, output layout and host affine: :mod:`lowbit.compiler`).

    Raises
    ------
    TypeError
        If ``config`` is not an :class:`AcceleratorConfig`.
    ProgramError
        With an exact message for an invalid instruction (``instruction 3: ...``), a
        constant out of range, or constant data that does not match the loads.
    """

    def __init__(self, config, instructions, constants=(), metadata=None):
        if not isinstance(config, AcceleratorConfig):
            raise TypeError(f"config must be an AcceleratorConfig, not {config!r}")
        self.config = config
        isa = instruction_set(config)
        checked = []
        for index, instr in enumerate(instructions):
            try:
                checked.append(isa.check(instr))
            except InstructionError as error:
                raise ProgramError(f"instruction {index}: {error}") from None
        self.instructions = checked
        values = [int(v) for v in np.asarray(constants, dtype=object).reshape(-1)]
        bad = [v for v in values if not 0 <= v < 2 ** config.word]
        if bad:
            raise ProgramError(f"constant {bad[0]} does not fit a {config.word}-bit word")
        self.constants = np.array(values, dtype=np.uint64)
        loaded = sum(isa.link_words(i) for i in checked
                     if i["opcode"] == Opcode.LOAD and i["source"] == Source.CONST)
        if loaded != len(values):
            raise ProgramError(f"program loads {loaded} constant words but carries "
                               f"{len(values)}")
        if metadata is not None and not isinstance(metadata, dict):
            raise ProgramError(f"program metadata must be a dict, not {metadata!r}")
        try:
            self._metadata_bytes = json.dumps(metadata).encode() if metadata else b""
        except (TypeError, ValueError) as error:
            raise ProgramError(f"program metadata is not JSON-serialisable: {error}") from None
        self.metadata = json.loads(self._metadata_bytes) if metadata else {}

    def __len__(self):
        return len(self.instructions)

    def check_races(self):
        """Refuse the program (:class:`ProgramError`) if its wait fields leave a race
        between the accelerator's stages; see :func:`lowbit.races.check_races`."""
        from .races import check_races  # races imports this module

        check_races(self)

    def words(self):
        """The instruction words, as the accelerator receives them."""
        isa = instruction_set(self.config)
        return [isa.encode(instr) for instr in self.instructions]

    # Serialisation ----------------------------------------------------------------------

    def to_bytes(self):
        """The program file's contents."""
        isa = instruction_set(self.config)
        word_bytes = self.config.word // 8
        const = b"".join(int(v).to_bytes(word_bytes, "little") for v in self.constants)
        header = HEADER.pack(MAGIC, VERSION, isa.bytes, self.config.fingerprint().encode(),
                             len(self.instructions), len(const), len(self._metadata_bytes))
        body = b"".join(w.to_bytes(isa.bytes, "little") for w in self.words())
        return header + body + const + self._metadata_bytes

    def save(self, path):
        """Write the program file to ``path``."""
        with open(path, "wb") as file:
            file.write(self.to_bytes())

    @classmethod
    def from_bytes(cls, blob, config):
        """Parse a program file's contents for the accelerator ``config``.

        Raises :class:`ProgramError` for a truncated file, bad magic, an unsupported
        version, a program built for another configuration, or an invalid instruction.
        """
        if not isinstance(config, AcceleratorConfig):
            raise TypeError(f"config must be an AcceleratorConfig, not {config!r}")
        blob = bytes(blob)
        if len(blob) < HEADER.size:
            raise ProgramError(f"truncated program: the header needs {HEADER.size} bytes, "
                               f"the file has {len(blob)}")
        magic, version, instr_bytes, fingerprint, count, const_len, meta_len = \
            HEADER.unpack_from(blob)
        if magic != MAGIC:
            raise ProgramError(f"not a lowbit program: bad magic {magic!r}")
        if version != VERSION:
            raise ProgramError(f"unsupported program format version {version} (this lowbit "
                               f"reads version {VERSION})")
        ours = config.fingerprint()
        theirs = fingerprint.decode("ascii", errors="replace")
        if theirs != ours:
            raise ProgramError(f"program was built for accelerator configuration {theirs}, "
                               f"this accelerator is {ours}")
        isa = instruction_set(config)
        if instr_bytes != isa.bytes:
            raise ProgramError(f"program instructions are {instr_bytes} bytes, this "
                               f"accelerator's are {isa.bytes}")
        word_bytes = config.word // 8
        if const_len % word_bytes:
            raise ProgramError(f"constant data of {const_len} bytes is not a whole number of "
                               f"{config.word}-bit words")
        need = HEADER.size + count * instr_bytes + const_len + meta_len
        if len(blob) < need:
            meta = f" and {meta_len} bytes of metadata" if meta_len else ""
            raise ProgramError(f"truncated program: {count} instructions and {const_len} "
                               f"bytes of constant data{meta} need {need} bytes, the file "
                               f"has {len(blob)}")
        if len(blob) > need:
            raise ProgramError(f"program file has {len(blob) - need} bytes after its "
                               f"{'metadata' if meta_len else 'constant data'}")
        metadata = None
        if meta_len:
            try:
                metadata = json.loads(blob[need - meta_len:].decode())
            except (UnicodeDecodeError, ValueError) as error:
                raise ProgramError(f"program metadata is not valid JSON: {error}") from None
        instructions = []
        for index in range(count):
            start = HEADER.size + index * instr_bytes
            word = int.from_bytes(blob[start:start + instr_bytes], "little")
            try:
                instructions.append(isa.decode(word))
            except InstructionError as error:
                raise ProgramError(f"instruction {index}: {error}") from None
        start = HEADER.size + count * instr_bytes
        constants = [int.from_bytes(blob[i:i + word_bytes], "little")
                     for i in range(start, start + const_len, word_bytes)]
        return cls(config, instructions, constants, metadata)

    @classmethod
    def load(cls, path, config):
        """Read a program file for the accelerator ``config``; see :meth:`from_bytes`."""
        with open(path, "rb") as file:
            return cls.from_bytes(file.read(), config)
