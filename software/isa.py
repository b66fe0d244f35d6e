"""The accelerator's instruction set, defined once (issue 5, ../shared/STYLE.md point 3).

Every instruction is one fixed-width word laid out by :attr:`InstructionSet.layout`, an
``amaranth.lib.data.StructLayout``::

    opcode    Opcode (4 bits)
    operands  UnionLayout: one StructLayout per opcode (load, store, gemm_xnor, ...)
    reserved  zero padding up to a multiple of 32 bits and of the host link width

The gateware decoder switches on ``opcode`` of a view of this layout; :func:`encode` builds
words with ``Layout.const({...}).as_bits()`` and :func:`decode` reads them with
``Layout.from_bits(...)``. No module packs instruction bits by hand or repeats an opcode
number: bit positions, widths and opcode values all come from here.

Address and count fields are as wide as the :class:`~lowbit.config.accelerator.
AcceleratorConfig`'s buffers require, so the format (and the fingerprint that stamps
programs) follows the configuration. One instruction covers a whole layer: a GEMM names
``M``, ``N`` and ``K`` and row strides, and the controller loops over array tiles, bit-plane
passes and words itself. Operand data layout in the buffers is described in
``docs/program_format.md``.

Both :func:`encode` and :func:`decode` run the same checks and raise
:class:`InstructionError` (a ``ValueError``) with an exact message: unknown opcode, an
instruction for a unit the accelerator lacks, missing or unknown fields, values outside a
field, addresses or regions outside their buffer, zero counts, unsupported precisions, and
(decode only) nonzero unused bits. Its ``code`` is the :class:`Status` the accelerator
reports for the word over the host link (``docs/host_link.md``): ``ADDRESS`` for a region
that leaves its buffer or a stride shorter than a row, ``ILLEGAL`` for everything else.
"""

import functools
import numbers

from amaranth import unsigned
from amaranth.lib import data, enum

from .config.accelerator import AcceleratorConfig

__all__ = ["Opcode", "Buffer", "Source", "NormMode", "Status", "Record", "InstructionError",
           "InstructionSet", "instruction_set", "encode", "decode", "row_words",
           "lns_row_words"]

#: Instructions are padded to a multiple of this many bits (and of the host link's width),
#: so that they are whole bytes, whole buffer words and whole host-link beats.
INSTRUCTION_ALIGN = 32


class Opcode(enum.Enum, shape=4):
    """What an instruction does. ``HALT`` is zero so that an all-zero (unwritten) word
    stops the controller rather than running garbage."""

    HALT = 0
    LOAD = 1
    STORE = 2
    GEMM_XNOR = 3
    GEMM_LNS = 4
    NORM = 5
    MAXPOOL = 6


class Buffer(enum.Enum, shape=2):
    """An on-chip buffer named by ``LOAD`` and ``STORE``."""

    ACT = 0
    WEIGHT = 1
    OUT = 2


class Source(enum.Enum, shape=1):
    """Where a ``LOAD``'s words come from: the program's constant data (weights,
    thresholds) or the run's input stream. Each source is consumed in order."""

    CONST = 0
    INPUT = 1


class NormMode(enum.Enum, shape=2):
    """Operation of a ``NORM`` instruction on the norm unit (REFERENCE.md sections 2, 3)."""

    STATISTICS = 0
    NORMALISE = 1
    THRESHOLD = 2
    REQUANTISE = 3


class Status(enum.IntEnum, shape=8):
    """The ``code`` of a ``STATUS`` record on the host link (``docs/host_link.md``): how a
    program ended. One byte on the link, hence the 8-bit shape."""

    #: ``HALT`` executed.
    OK = 0
    #: The word is not a legal instruction (any decode error but the three below).
    ILLEGAL = 1
    #: A legal instruction whose region leaves its buffer, or whose stride is shorter than a
    #: row.
    ADDRESS = 2
    #: The host stopped sending in the middle of a program.
    TRUNCATED = 3


class Record(enum.IntEnum, shape=8):
    """The kind of a record the accelerator sends to the host (byte 0 of its 8-byte header,
    ``docs/host_link.md``)."""

    #: The words of one ``STORE``.
    DATA = 0x01
    #: The end of a program: a :class:`Status` code, the ``HALT`` status, an instruction
    #: index and four counters.
    STATUS = 0x02


# The norm unit's build-time output mode each NORM mode needs (None: any).
_NORM_OUTPUT = {NormMode.STATISTICS: None, NormMode.NORMALISE: "bfp",
                NormMode.THRESHOLD: "sign", NormMode.REQUANTISE: "multithreshold"}

# The unit each opcode runs on (None: the controller itself).
_UNIT = {Opcode.GEMM_XNOR: "xnor_array", Opcode.GEMM_LNS: "lns_mac",
         Opcode.NORM: "lightnorm", Opcode.MAXPOOL: "maxpool"}

_BUFFER_NAMES = {Buffer.ACT: "act", Buffer.WEIGHT: "weight", Buffer.OUT: "out"}


class InstructionError(ValueError):
    """An instruction that cannot be encoded, or a word that is not a legal instruction.

    Attributes
    ----------
    code : Status
        What the accelerator reports for it: ``Status.ADDRESS`` for a region outside its
        buffer or a stride shorter than a row, ``Status.ILLEGAL`` otherwise.
    """

    def __init__(self, message, code=Status.ILLEGAL):
        super().__init__(message)
        self.code = Status(code)


def row_words(elements, bits_per_element, word):
    """Words of one packed operand row: ``ceil(elements / word)`` words per bit plane."""
    return bits_per_element * -(-elements // word)


def lns_row_words(elements, bits, word):
    """Words of one packed LNS operand row: ``word // bits`` LNS words per buffer word."""
    return -(-elements // (word // bits))


def _bounds(shape):
    # Inclusive value range of an unsigned field shape (a range or a plain width).
    if isinstance(shape, range):
        return shape.start, shape.stop - 1
    return 0, 2 ** shape - 1


class InstructionSet:
    """The instruction format of one accelerator configuration.

    Parameters
    ----------
    config : AcceleratorConfig
        The accelerator; buffer sizes give the address and count field widths, unit
        configurations the reduction lengths and precisions.

    Attributes
    ----------
    operands : dict of Opcode to data.StructLayout
        The operand fields of each opcode.
    layout : data.StructLayout
        The whole instruction: ``opcode``, ``operands`` (a union of the above),
        ``reserved``.
    raw_layout, raw_operands :
        The same layouts with every field a plain unsigned integer at the same offset:
        what the decoder reads an unknown opcode or enum value through (and what tests
        build malformed words with).
    width : int
        Instruction width in bits, a multiple of 32 and of the host link width.

    Raises
    ------
    TypeError
        If ``config`` is not an :class:`AcceleratorConfig`.
    """

    def __init__(self, config):
        if not isinstance(config, AcceleratorConfig):
            raise TypeError(f"config must be an AcceleratorConfig, not {config!r}")
        self.config = config
        act, weight, out = config.act_words, config.weight_words, config.out_words
        widest = max(act, weight, out)
        bits = range(1, 9)  # operand precision: 1 (binary +-1) .. 8 bits
        gemm = {
            "a_addr": range(act), "b_addr": range(weight), "c_addr": range(out),
            "m": range(1, act + 1), "n": range(1, weight + 1),
            "a_stride": range(1, act + 1), "b_stride": range(1, weight + 1),
            "c_stride": range(1, out + 1),
        }
        self.operands = {
            Opcode.HALT: data.StructLayout({"status": 8}),
            Opcode.LOAD: data.StructLayout({
                "buffer": Buffer, "source": Source,
                "addr": range(widest), "count": range(1, widest + 1)}),
            Opcode.STORE: data.StructLayout({
                "buffer": Buffer, "addr": range(widest), "count": range(1, widest + 1)}),
            Opcode.GEMM_XNOR: data.StructLayout({
                **gemm, "k": range(1, config.xnor_array.max_k + 1),
                "act_bits": bits, "act_signed": 1, "weight_bits": bits, "weight_signed": 1}),
            Opcode.GEMM_LNS: data.StructLayout({
                **gemm, "k": range(1, config.lns_mac.max_k + 1)}),
            Opcode.NORM: data.StructLayout({
                # The destination is the activation buffer, or the output buffer for
                # STATISTICS: its fields reach the larger of the two.
                "mode": NormMode, "src_addr": range(out), "dst_addr": range(max(act, out)),
                "param_addr": range(weight), "rows": range(1, out + 1),
                "channels": range(1, config.lightnorm.channels + 1),
                "src_stride": range(1, out + 1), "dst_stride": range(1, max(act, out) + 1)}),
            Opcode.MAXPOOL: data.StructLayout({
                "src_addr": range(act), "dst_addr": range(act), "rows": range(1, act + 1),
                "row_words": range(1, act + 1), "window": range(1, 17)}),
        }
        union = data.UnionLayout({op.name.lower(): layout
                                  for op, layout in self.operands.items()})
        used = Opcode.as_shape().width + union.size
        self.layout = data.StructLayout({
            "opcode": Opcode, "operands": union,
            "reserved": unsigned(-used % max(INSTRUCTION_ALIGN, config.host_link_bits))})
        self.width = self.layout.size
        # Every field as a plain unsigned integer at the same offset: decode reads an
        # unknown opcode or enum value through these to report it.
        self.raw_layout = data.StructLayout({name: unsigned(field.width)
                                             for name, field in self.layout})
        self.raw_operands = {op: data.StructLayout({name: unsigned(field.width)
                                                    for name, field in layout})
                             for op, layout in self.operands.items()}
        for op, layout in self.operands.items():
            assert all(field.offset == self.raw_operands[op][name].offset
                       for name, field in layout)

    @property
    def bytes(self):
        """Bytes of one instruction word."""
        return self.width // 8

    # Validation shared by encode and decode --------------------------------------------

    def _opcode(self, value):
        if isinstance(value, Opcode):
            op = value
        elif isinstance(value, str) and value in Opcode.__members__:
            op = Opcode[value]
        else:
            raise InstructionError(f"unknown opcode {value!r}")
        unit = _UNIT.get(op)
        if unit is not None and not getattr(self.config, f"has_{unit}"):
            raise InstructionError(f"{op.name} needs the {unit} unit, which this accelerator "
                                   f"does not have")
        return op

    def _check(self, instr, *, raw=False):
        """Validate an instruction dict; return it normalised (enum members, ``opcode``
        first). ``raw`` accepts integers for enum fields (decode)."""
        if not isinstance(instr, dict):
            raise InstructionError(f"an instruction must be a dict, not {instr!r}")
        if "opcode" not in instr:
            raise InstructionError("instruction has no opcode")
        op = self._opcode(instr["opcode"])
        layout = self.operands[op]
        names = [name for name, _ in layout]
        missing = [name for name in names if name not in instr]
        if missing:
            raise InstructionError(f"{op.name} is missing field(s) {', '.join(missing)}")
        extra = sorted(set(instr) - set(names) - {"opcode"})
        if extra:
            raise InstructionError(f"{op.name} has no field(s) {', '.join(extra)}")
        out = {"opcode": op}
        for name, field in layout:
            value = instr[name]
            shape = field.shape
            if isinstance(shape, type) and issubclass(shape, enum.Enum):
                out[name] = self._member(op, name, shape, value, raw)
                continue
            if not isinstance(value, numbers.Integral) or isinstance(value, bool):
                raise InstructionError(f"{op.name} {name} must be an integer, not {value!r}")
            value = int(value)
            low, high = _bounds(shape)
            # Addresses are checked against their buffer by the opcode's own check below,
            # which gives the clearer message.
            if not name.endswith("addr"):
                if value < low:
                    raise InstructionError(f"{op.name} {name} must be at least {low}, not "
                                           f"{value}")
                if value > high:
                    raise InstructionError(f"{op.name} {name} must be at most {high}, not "
                                           f"{value}")
            out[name] = value
        getattr(self, f"_check_{op.name.lower()}", lambda instr: None)(out)
        return out

    @staticmethod
    def _member(op, name, enum_type, value, raw):
        if isinstance(value, enum_type):
            return value
        if isinstance(value, str) and value in enum_type.__members__:
            return enum_type[value]
        if raw and isinstance(value, int):
            try:
                return enum_type(value)
            except ValueError:
                pass
        choices = ", ".join(enum_type.__members__)
        raise InstructionError(f"{op.name} {name} must be one of {choices}, not {value!r}")

    def _region(self, op, what, buffer, addr, rows, row, stride):
        # A region of `rows` rows of `row` words, `stride` words apart, must fit `buffer`.
        size = self.config.buffer_words[buffer]
        name = f"{op.name} {what}" if what else op.name
        if not 0 <= addr < size:
            raise InstructionError(f"{name} address {addr} is outside the {buffer} buffer "
                                   f"(0..{size - 1})", Status.ADDRESS)
        if rows > 1 and stride < row:
            raise InstructionError(f"{name} stride {stride} is shorter than a row ({row} "
                                   f"words)", Status.ADDRESS)
        if addr + (rows - 1) * stride + row > size:
            shape = f"of {rows} rows of {row} words (stride {stride})" if rows > 1 else \
                f"of {row} words"
            raise InstructionError(f"{name} {shape} at {addr} runs past the end of the "
                                   f"{buffer} buffer ({size} words)", Status.ADDRESS)

    def _check_load(self, instr):
        buffer = _BUFFER_NAMES[instr["buffer"]]
        self._region(instr["opcode"], "", buffer, instr["addr"], 1, instr["count"], 1)

    _check_store = _check_load

    def _check_gemm(self, instr, a_row, b_row):
        op = instr["opcode"]
        self._region(op, "operand a", "act", instr["a_addr"], instr["m"], a_row,
                     instr["a_stride"])
        self._region(op, "operand b", "weight", instr["b_addr"], instr["n"], b_row,
                     instr["b_stride"])
        self._region(op, "result c", "out", instr["c_addr"], instr["m"], instr["n"],
                     instr["c_stride"])

    def _check_gemm_xnor(self, instr):
        op, array = instr["opcode"], self.config.xnor_array
        for name, limit in (("act", array.max_act_bits), ("weight", array.max_weight_bits)):
            bits, signed = instr[f"{name}_bits"], instr[f"{name}_signed"]
            if bits > limit:
                raise InstructionError(f"{op.name} {name}_bits {bits} exceeds the XNOR "
                                       f"array's {limit}-bit {name} operands")
            if signed and bits < 2:
                raise InstructionError(f"{op.name} {name}_signed needs {name}_bits >= 2 "
                                       f"(1-bit operands are binary +-1)")
        word = self.config.word
        self._check_gemm(instr, row_words(instr["k"], instr["act_bits"], word),
                         row_words(instr["k"], instr["weight_bits"], word))

    def _check_gemm_lns(self, instr):
        row = lns_row_words(instr["k"], self.config.lns_mac.bits, self.config.word)
        self._check_gemm(instr, row, row)

    # NORM regions, shared with the ISS (docs/program_format.md, "NORM data") ------------

    def norm_block_words(self):
        """Buffer words of one ``NORMALISE`` output block: the norm unit's
        ``output_layout`` (shared exponent and ``block`` mantissas) in whole words."""
        return -(-self.config.lightnorm.output_layout.size // self.config.word)

    def norm_dst_words(self, mode, channels):
        """Words of one ``NORM`` destination row of ``channels`` channels: packed
        activations (``THRESHOLD``, ``REQUANTISE``), whole BFP blocks (``NORMALISE``), or
        one value per channel (``STATISTICS``: a row of sums, then one of spreads)."""
        norm, mode = self.config.lightnorm, NormMode(mode)
        if mode == NormMode.STATISTICS:
            return channels
        if mode == NormMode.NORMALISE:
            return -(-channels // norm.block) * self.norm_block_words()
        return row_words(channels, norm.levels, self.config.word)

    def norm_param_words(self, mode, channels):
        """Weight-buffer words of the parameters of a ``NORM`` over ``channels`` channels:
        ``T + 1`` per channel (thresholds, flip) in threshold modes; two mantissas per
        channel and two exponents per block of channels in ``NORMALISE``; none for
        ``STATISTICS``."""
        norm, mode = self.config.lightnorm, NormMode(mode)
        if mode == NormMode.STATISTICS:
            return 0
        if mode == NormMode.NORMALISE:
            return 2 * channels + 2 * -(-channels // norm.block)
        return channels * (norm.thresholds + 1)

    def _check_norm(self, instr):
        op, norm, mode = instr["opcode"], self.config.lightnorm, instr["mode"]
        needs = _NORM_OUTPUT[mode]
        if needs is not None and norm.output != needs:
            raise InstructionError(f"{op.name} mode {mode.name} needs the norm unit "
                                   f"in {needs!r} output mode, it is built for "
                                   f"{norm.output!r}")
        if mode == NormMode.STATISTICS and not norm.statistics:
            raise InstructionError(f"{op.name} mode STATISTICS needs the norm unit built with "
                                   f"statistics, it is built without")
        channels, rows = instr["channels"], instr["rows"]
        self._region(op, "source", "out", instr["src_addr"], rows, channels,
                     instr["src_stride"])
        row = self.norm_dst_words(mode, channels)
        if mode == NormMode.STATISTICS:
            self._check_statistics(instr)
            # Two rows of signed words in the output buffer: sums, then spreads.
            self._region(op, "destination", "out", instr["dst_addr"], 2, row,
                         instr["dst_stride"])
            return
        self._region(op, "destination", "act", instr["dst_addr"], rows, row,
                     instr["dst_stride"])
        self._region(op, "parameters", "weight", instr["param_addr"], 1,
                     self.norm_param_words(mode, channels), 1)

    def _check_statistics(self, instr):
        op, norm, word = instr["opcode"], self.config.lightnorm, self.config.word
        if instr["param_addr"] != 0:
            raise InstructionError(f"{op.name} mode STATISTICS takes no parameters: "
                                   f"param_addr must be 0, not {instr['param_addr']}")
        if instr["rows"] > norm.max_batch:
            raise InstructionError(f"{op.name} mode STATISTICS rows {instr['rows']} exceed "
                                   f"the norm unit's max_batch {norm.max_batch}")
        need = max(norm.sum_bits, norm.spread_bits)
        if need > word:
            raise InstructionError(f"{op.name} mode STATISTICS needs {need}-bit buffer words "
                                   f"for its sums, this accelerator's are {word} bits")

    def _check_maxpool(self, instr):
        op = instr["opcode"]
        rows, row, window = instr["rows"], instr["row_words"], instr["window"]
        self._region(op, "source", "act", instr["src_addr"], rows * window, row, row)
        self._region(op, "destination", "act", instr["dst_addr"], rows, row, row)

    # Encode and decode -----------------------------------------------------------------

    def check(self, instr):
        """Validate an instruction dict and return it normalised (enum members)."""
        return self._check(instr)

    def encode(self, instr):
        """The instruction word (an ``int`` of :attr:`width` bits) of an instruction dict.

        ``instr`` holds ``opcode`` (an :class:`Opcode` or its name) and exactly the fields
        of ``operands[opcode]``; enum fields take members or names.
        """
        instr = self._check(instr)
        op = instr["opcode"]
        fields = {name: value for name, value in instr.items() if name != "opcode"}
        return self.layout.const({"opcode": op, "operands": {op.name.lower(): fields},
                                  "reserved": 0}).as_bits()

    def decode(self, bits):
        """The instruction dict of an instruction word; raises :class:`InstructionError`
        for any word :meth:`encode` would not produce."""
        if not isinstance(bits, int) or isinstance(bits, bool) or not \
                0 <= bits < 2 ** self.width:
            raise InstructionError(f"an instruction word must be a {self.width}-bit unsigned "
                                   f"integer, not {bits!r}")
        raw = self.raw_layout.from_bits(bits)
        if raw.opcode not in {op.value for op in Opcode}:
            raise InstructionError(f"unknown opcode {raw.opcode}")
        op = Opcode(raw.opcode)
        # The union member of this opcode (a view of its own bits), read with raw fields.
        member = getattr(self.layout.from_bits(bits).operands, op.name.lower())
        view = self.raw_operands[op].from_bits(member.as_bits())
        fields = {name: view[name] for name, _ in self.operands[op]}
        # Anything outside the opcode's own fields (union padding, reserved) must be zero:
        # the word rebuilt from the fields alone must be the same word.
        operands = self.raw_operands[op].const(fields).as_bits()
        clean = self.raw_layout.const({"opcode": op.value, "operands": operands}).as_bits()
        unused = InstructionError(f"unused bits of a {op.name} instruction are not zero")
        try:
            instr = self._check({"opcode": op, **fields}, raw=True)
        except InstructionError as error:
            # A word with both kinds of fault is ILLEGAL (docs/host_link.md), so nonzero
            # unused bits win over an address fault (the field checks come first anyway).
            if error.code == Status.ADDRESS and clean != bits:
                raise unused from None
            raise
        if clean != bits:
            raise unused
        return instr


@functools.lru_cache(maxsize=32)
def instruction_set(config):
    """The (cached) :class:`InstructionSet` of ``config``."""
    return InstructionSet(config)


def encode(instr, config):
    """Encode an instruction dict for ``config``; see :meth:`InstructionSet.encode`."""
    return instruction_set(config).encode(instr)


def decode(bits, config):
    """Decode an instruction word for ``config``; see :meth:`InstructionSet.decode`."""
    return instruction_set(config).decode(bits)
