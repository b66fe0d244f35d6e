"""Accelerator programs and their file format (described in ``docs/program_format.md``).

A :class:`Program` is a list of instructions (dicts in :mod:`lowbit.isa` form) plus the
constant data its ``LOAD`` instructions with ``source=CONST`` consume in order (weights,
thresholds), all for one :class:`~lowbit.config.accelerator.AcceleratorConfig`. A program
file is self-describing: it embeds that configuration (and a compiled model's metadata),
so :meth:`Program.load` needs no configuration, and it ends in a CRC-32 of every byte
before it, so a corrupted or truncated file is refused, never run.

File layout (all integers little-endian)::

    offset  size  field
         0     8  magic b"LOWBIT\\0\\0"
         8     2  format version (4)
        10     2  bytes per instruction
        12    16  accelerator configuration fingerprint (ASCII hex)
        28     4  instruction count
        32     4  constant data length in bytes
        36     4  configuration length in bytes
        40     4  metadata length in bytes (0: none)
        44        instructions, each one word of the instruction layout
                  constant data, buffer words of ``config.word`` bits
                  configuration: UTF-8 JSON object (``AcceleratorConfig.to_dict``)
                  metadata: UTF-8 JSON object (what the host needs to run a compiled
                  model: input quantizer and packing, output layout, host affine)
      end-4     4  CRC-32 (``zlib.crc32``) of every byte before it
"""

import json
import struct
import zlib

import numpy as np

from .config.accelerator import AcceleratorConfig
from .isa import InstructionError, Opcode, Source, instruction_set

__all__ = ["MAGIC", "VERSION", "HEADER", "TRAILER", "ProgramError", "Program",
           "config_differences"]

#: First bytes of every program file.
MAGIC = b"LOWBIT\0\0"
#: The format version this module writes and reads (2 added the metadata section, 3 is the
#: full-rate core's instruction set, 4 embeds the configuration and ends in a CRC-32).
VERSION = 4
#: The file header (the byte layout of a file, not of an instruction: instructions are laid
#: out by :mod:`lowbit.isa` alone).
HEADER = struct.Struct("<8sHH16sIIII")
#: The file's last bytes: the CRC-32 of everything before them.
TRAILER = struct.Struct("<I")


def config_differences(ours, theirs):
    """The fields in which two accelerator configurations differ, as ``"name: A vs B"``
    strings (``xnor_array.rows`` for the array's), for messages that name both."""
    out = []
    a, b = ours.to_dict(), theirs.to_dict()
    for key in a:
        if isinstance(a[key], dict):
            out += [f"{key}.{k}: {a[key][k]!r} vs {b[key].get(k)!r}" for k in a[key]
                    if a[key][k] != b[key].get(k)]
        elif a[key] != b.get(key):
            out.append(f"{key}: {a[key]!r} vs {b.get(key)!r}")
    return out


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
                     if isa.takes_data(i) and i["source"] == Source.CONST)
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
        """The program file's contents (configuration embedded, CRC-32 last)."""
        isa = instruction_set(self.config)
        word_bytes = self.config.word // 8
        const = b"".join(int(v).to_bytes(word_bytes, "little") for v in self.constants)
        config = json.dumps(self.config.to_dict(), sort_keys=True).encode()
        header = HEADER.pack(MAGIC, VERSION, isa.bytes, self.config.fingerprint().encode(),
                             len(self.instructions), len(const), len(config),
                             len(self._metadata_bytes))
        body = b"".join(w.to_bytes(isa.bytes, "little") for w in self.words())
        blob = header + body + const + config + self._metadata_bytes
        return blob + TRAILER.pack(zlib.crc32(blob))

    def save(self, path):
        """Write the program file to ``path``."""
        with open(path, "wb") as file:
            file.write(self.to_bytes())

    @classmethod
    def from_bytes(cls, blob, config=None):
        """Parse a program file's contents.

        ``config`` (optional) is the accelerator the caller means to run on: a program
        built for another configuration is refused, naming both and their differences.
        Without it the program's embedded configuration is used.

        Raises :class:`ProgramError` for a truncated file, bad magic, an unsupported
        version, a checksum that does not match (a corrupted file), a program built for
        another configuration, or an invalid instruction; ``TypeError`` for a ``config``
        that is not an :class:`AcceleratorConfig`.
        """
        if config is not None and not isinstance(config, AcceleratorConfig):
            raise TypeError(f"config must be an AcceleratorConfig, not {config!r}")
        blob = bytes(blob)
        if len(blob) < HEADER.size + TRAILER.size:
            raise ProgramError(f"truncated program: the header and checksum need "
                               f"{HEADER.size + TRAILER.size} bytes, the file has "
                               f"{len(blob)}")
        magic, version, instr_bytes, fingerprint, count, const_len, config_len, meta_len = \
            HEADER.unpack_from(blob)
        if magic != MAGIC:
            raise ProgramError(f"not a lowbit program: bad magic {magic!r}")
        if version != VERSION:
            raise ProgramError(f"unsupported program format version {version} (this lowbit "
                               f"reads version {VERSION})")
        sizes = [count * instr_bytes, const_len, config_len, meta_len]
        need = HEADER.size + sum(sizes) + TRAILER.size
        if len(blob) != need:
            # A length field may be what is corrupted: say both readings.
            raise ProgramError(
                f"truncated or corrupted program: its header describes {count} "
                f"instructions, {const_len} bytes of constant data, {config_len} of "
                f"configuration and {meta_len} of metadata, {need} bytes in all; the file "
                f"has {len(blob)}")
        stored, = TRAILER.unpack_from(blob, len(blob) - TRAILER.size)
        computed = zlib.crc32(blob[:-TRAILER.size])
        if stored != computed:
            raise ProgramError(f"corrupted program: its CRC-32 is {stored:08x}, its contents "
                               f"give {computed:08x}")
        start = HEADER.size
        sections = []
        for size in sizes:
            sections.append(blob[start:start + size])
            start += size
        body, const, config_text, meta_text = sections
        try:
            embedded = AcceleratorConfig.from_dict(json.loads(config_text.decode()))
        except (UnicodeDecodeError, TypeError, ValueError) as error:
            raise ProgramError(f"program's embedded configuration is invalid: {error}") \
                from None
        theirs = fingerprint.decode("ascii", errors="replace")
        if embedded.fingerprint() != theirs:
            raise ProgramError(f"program's embedded configuration is {embedded.fingerprint()}"
                               f", its header says {theirs}")
        if config is not None and config.fingerprint() != theirs:
            raise ProgramError(
                f"program was built for accelerator configuration {theirs}, this "
                f"accelerator is {config.fingerprint()} (the program's vs this: "
                f"{'; '.join(config_differences(embedded, config))})")
        config = embedded
        isa = instruction_set(config)
        if instr_bytes != isa.bytes:
            raise ProgramError(f"program instructions are {instr_bytes} bytes, its "
                               f"accelerator's are {isa.bytes}")
        word_bytes = config.word // 8
        if const_len % word_bytes:
            raise ProgramError(f"constant data of {const_len} bytes is not a whole number of "
                               f"{config.word}-bit words")
        metadata = None
        if meta_len:
            try:
                metadata = json.loads(meta_text.decode())
            except (UnicodeDecodeError, ValueError) as error:
                raise ProgramError(f"program metadata is not valid JSON: {error}") from None
        instructions = []
        for index in range(count):
            word = int.from_bytes(body[index * instr_bytes:(index + 1) * instr_bytes],
                                  "little")
            try:
                instructions.append(isa.decode(word))
            except InstructionError as error:
                raise ProgramError(f"instruction {index}: {error}") from None
        constants = [int.from_bytes(const[i:i + word_bytes], "little")
                     for i in range(0, const_len, word_bytes)]
        return cls(config, instructions, constants, metadata)

    @classmethod
    def load(cls, path, config=None):
        """Read the program file ``path`` (see :meth:`from_bytes`); every
        :class:`ProgramError` names the file. ``OSError`` if it cannot be read."""
        with open(path, "rb") as file:
            blob = file.read()
        try:
            return cls.from_bytes(blob, config)
        except ProgramError as error:
            raise ProgramError(f"{path}: {error}") from None
