"""The accelerator's instruction set and host-link records, defined once.

Every instruction is one fixed-width word laid out by :attr:`InstructionSet.layout`, an
``amaranth.lib.data.StructLayout``::

    opcode    Opcode (4 bits)
    operands  UnionLayout: one StructLayout per opcode (halt, load, store, gemm)
    reserved  zero padding up to a multiple of 32 bits and of the host link width

The gateware decodes through a view of this layout; :func:`encode` builds words with
``Layout.const({...}).as_bits()`` and :func:`decode` reads them with ``from_bits``. No
module packs instruction bits by hand or repeats an opcode number. The records the
accelerator sends back (:data:`DATA_HEADER`, :data:`STATUS_RECORD`) are layouts here too,
read by the gateware, the ISS and the runtime.

The instructions, each a whole operation (``docs/accelerator.md``):

* ``LOAD`` moves ``count`` memory words from the host (the program's constants or the run's
  inputs) into the ``in``, ``weight`` or ``thresh`` memory (or ``latent``), lane 0 first;
* ``STORE`` sends ``count`` words of the ``score`` memory (or, in a training configuration,
  of the ``latent`` memory) to the host;
* ``GEMM`` runs a layer: ``m_tiles x pool x n_tiles`` array tiles, each ``planes x words``
  beats, its results thresholded into the ``act`` memory (``THRESHOLD``) or kept as
  integer scores in the ``score`` memory (``SCORES``); with ``pool > 1`` (``THRESHOLD``
  only) each output row block is the largest count over ``pool`` consecutive row tiles
  of the operand (a max-pooling window, for a convolution's im2col rows);
* ``HALT`` ends the program;
* ``UPDATE`` (a training configuration only, ``latent_depth > 0``) applies LNS-Madam's
  update to ``count`` words of the ``latent`` memory (``word`` latent weights each) by
  gradient mantissas from the host (``GRAD_FIELD_BITS``-bit two's-complement fields: 8
  ``word``-bit words per latent word), writes the updated words back and their signs
  (bit 1 = +1) into ``count`` consecutive weight *lanes* from ``w_addr`` (lane
  ``w_addr % cols`` of weight word ``w_addr // cols``, in the order ``LOAD`` moves lanes).
  Its rule is :func:`lowbit.golden.training.madam_update` with ``bits = grad_bits``;
* ``STATS`` (a configuration with a statistics unit only, ``norm_channels > 0``) reads the
  score words of ``samples`` samples of ``groups`` channel groups from ``addr`` (sample
  major, as a ``SCORES`` GEMM writes them: ``groups`` is its ``n_tiles``), computes each
  channel's range batch-norm statistics over the samples (``STAT`` beats of the
  :class:`~lowbit.hw.lightnorm.LightNorm` unit, ``norm_chunks`` chunks split as
  ``numpy.array_split`` splits them) and sends them in a ``DATA`` record: per group its
  ``cols`` sums, then its ``cols`` spreads, one ``word``-bit two's-complement lane each
  (:func:`lowbit.layout.unpack_stats`). It runs in the store stage and waits as a
  ``STORE`` does.
* ``ARGMAX`` (a configuration with an argmax unit only, ``rank_depth > 0``) reads the score
  words of ``samples`` samples of ``groups`` words each from ``addr`` (as ``STATS``), and
  sends each sample's predicted class, one byte, in a ``DATA`` record: the first of the
  first ``classes`` lanes (class ``c`` is lane ``c % cols`` of the sample's word ``c //
  cols``) whose rank is largest, the rank of class ``c`` at accumulator ``acc`` being the
  ``rank`` memory's word at ``rank_addr + c * stride + acc`` (modulo its depth). The
  record's words are ``cols``-lane memory words, :func:`argmax_bytes` bytes each, sample
  ``j`` byte ``j`` (little-endian), the last word padded with zeros
  (:func:`lowbit.layout.unpack_argmax`). It runs in the store stage and waits as a
  ``STORE`` does; a ``LOAD`` into the ``rank`` memory waits until every earlier
  ``STORE``, ``STATS`` and ``ARGMAX`` has been sent.

Three stages run them: the front end (fetch, ``LOAD`` and ``UPDATE``), the execute stage
(``GEMM``, a queue of ``queue_depth``) and the store stage (``STORE``, a queue of its own).
Their order is kept by *wait fields* the compiler sets, counts of instructions still
outstanding in another stage: a ``LOAD`` (and an ``UPDATE``) waits until at most ``unread``
of the ``GEMM``s dispatched before it are still reading operands and at most ``unwritten``
still writing results; a ``STORE`` waits (in its queue) until at most ``unwritten`` earlier
``GEMM``s are still writing; a ``GEMM`` waits (in its queue) until at most ``unsent``
earlier ``STORE``s are unfinished, and with ``sync`` until every earlier ``GEMM`` has
written its results. The value :data:`NO_WAIT` (31) never waits. An ``UPDATE``, and a
``LOAD`` into the ``latent`` memory, also wait until every earlier ``STORE`` has been sent
(the ``latent`` memory's one read port serves ``UPDATE`` and ``STORE``).

Both :func:`encode` and :func:`decode` raise :class:`InstructionError` (a ``ValueError``)
with an exact message. Its ``code`` is the :class:`Status` the accelerator reports:
``ILLEGAL`` for what the gateware checks itself (unknown opcodes, enum values, fields out of
range, an opcode's illegal buffers, nonzero unused bits), ``ADDRESS`` for a region that
leaves its memory. The gateware does not check regions: it takes every address modulo the
memory's depth, so a malformed program may compute garbage but never leaves a memory
(:meth:`InstructionSet.decode` with ``regions=False`` is what the gateware accepts).
"""

import functools
import numbers

from amaranth import unsigned
from amaranth.lib import data, enum

from .config.accelerator import GRAD_FIELD_BITS, AcceleratorConfig

__all__ = ["Opcode", "Buffer", "Source", "GemmMode", "Status", "Record", "InstructionError",
           "InstructionSet", "instruction_set", "encode", "decode", "DATA_HEADER",
           "STATUS_RECORD", "STATUS_COUNTERS", "LOAD_BUFFERS", "STORE_BUFFERS", "NO_WAIT",
           "STATS_LANES", "argmax_bytes"]

#: Lanes per channel of a ``STATS`` record: the sum and the spread.
STATS_LANES = 2
#: Instructions are padded to a multiple of this many bits (and of the host link's width).
INSTRUCTION_ALIGN = 32
#: The wait-field value that never waits: more instructions than this are never
#: outstanding (at most ``queue_depth + 2 <= 18``).
NO_WAIT = 31


class Opcode(enum.Enum, shape=4):
    """What an instruction does. ``HALT`` is zero so that an all-zero word stops the
    program rather than running garbage."""

    HALT = 0
    LOAD = 1
    STORE = 2
    GEMM = 3
    #: Training configurations only.
    UPDATE = 4
    #: Configurations with a statistics unit only.
    STATS = 5
    #: Configurations with an argmax unit only.
    ARGMAX = 6


class Buffer(enum.Enum, shape=3):
    """An accelerator memory (:data:`lowbit.config.accelerator.MEMORIES`)."""

    IN = 0
    ACT = 1
    WEIGHT = 2
    THRESH = 3
    SCORE = 4
    #: Training configurations only.
    LATENT = 5
    #: Configurations with an argmax unit only.
    RANK = 6


#: Memories a ``LOAD`` may write and a ``STORE`` may read (a training configuration adds
#: ``LATENT`` to both, an argmax unit ``RANK`` to the first:
#: :attr:`InstructionSet.load_buffers`, :attr:`~InstructionSet.store_buffers`).
LOAD_BUFFERS = (Buffer.IN, Buffer.WEIGHT, Buffer.THRESH)
STORE_BUFFERS = (Buffer.SCORE,)


class Source(enum.Enum, shape=1):
    """Where a ``LOAD``'s words come from: the program's constant data (weights,
    thresholds) or the run's input stream. Each source is consumed in order."""

    CONST = 0
    INPUT = 1


class GemmMode(enum.Enum, shape=1):
    """Where a ``GEMM``'s results go."""

    #: Thresholded, packed as the next layer's activations, into the ``act`` memory.
    THRESHOLD = 0
    #: As integer scores (the accumulators) into the ``score`` memory.
    SCORES = 1


class Status(enum.IntEnum, shape=8):
    """The ``code`` of a ``STATUS`` record (``docs/host_link.md``): how a program ended."""

    #: ``HALT`` executed.
    OK = 0
    #: The word is not a legal instruction (what the gateware checks).
    ILLEGAL = 1
    #: A region leaves its memory (found by the host's checks; the gateware wraps).
    ADDRESS = 2
    #: The host stopped sending in the middle of a program.
    TRUNCATED = 3


class Record(enum.IntEnum, shape=8):
    """The kind of a record the accelerator sends to the host (its first byte)."""

    #: The words of one ``STORE``.
    DATA = 0x01
    #: The end of a program: its status, the ``HALT`` status, an index and counters.
    STATUS = 0x02


#: The u32 counters of a ``STATUS`` record, in order: all cycles of the program but those in
#: which the accelerator only waited for the host; cycles in which the array took a beat;
#: cycles in which the execute stage held a tile back until the result stage could take it.
STATUS_COUNTERS = ("cycles", "array_beats", "tile_holds")

#: The header of a ``DATA`` record; ``count`` ``word``-bit words follow, little-endian.
DATA_HEADER = data.StructLayout({"kind": 8, "reserved": 24, "count": 32})

#: A whole ``STATUS`` record.
STATUS_RECORD = data.StructLayout({
    "kind": 8, "code": 8, "halt": 8, "reserved": 8, "index": 32,
    **{name: 32 for name in STATUS_COUNTERS}})


#: Most classes an ``ARGMAX`` chooses from: its result is one byte a sample.
MAX_ARGMAX_CLASSES = 256


def argmax_bytes(config):
    """Class bytes of one ``ARGMAX`` record word: a ``cols``-lane memory word."""
    return config.cols * config.word // 8


class InstructionError(ValueError):
    """An instruction that cannot be encoded, or a word that is not a legal instruction.

    Attributes
    ----------
    code : Status
        What the accelerator reports for it: ``Status.ADDRESS`` for a region outside its
        memory, ``Status.ILLEGAL`` otherwise.
    """

    def __init__(self, message, code=Status.ILLEGAL):
        super().__init__(message)
        self.code = Status(code)


def _bounds(shape):
    # Inclusive value range of an unsigned field shape (a range or a plain width).
    if isinstance(shape, range):
        return shape.start, shape.stop - 1
    return 0, 2 ** shape - 1


def _name(buffer):
    return Buffer(buffer).name.lower()


class InstructionSet:
    """The instruction format of one accelerator configuration.

    Parameters
    ----------
    config : AcceleratorConfig

    Attributes
    ----------
    operands : dict of Opcode to data.StructLayout
        The operand fields of each opcode.
    layout : data.StructLayout
        The whole instruction: ``opcode``, ``operands`` (a union of the above), ``reserved``.
    raw_layout, raw_operands :
        The same layouts with every field a plain unsigned integer at the same offset: what
        the decoder reads an unknown opcode or enum value through.
    width : int
        Instruction width in bits, a multiple of 32 and of the host link width.
    no_wait : int
        The wait-field value that never waits (:data:`NO_WAIT`).

    Raises
    ------
    TypeError
        If ``config`` is not an :class:`AcceleratorConfig`.
    """

    def __init__(self, config):
        if not isinstance(config, AcceleratorConfig):
            raise TypeError(f"config must be an AcceleratorConfig, not {config!r}")
        self.config = c = config
        self.no_wait = NO_WAIT
        wait = range(NO_WAIT + 1)
        extra = (Buffer.LATENT,) if c.training else ()
        #: Memories a ``LOAD`` may write and a ``STORE`` may read in this configuration.
        self.load_buffers = LOAD_BUFFERS + extra + ((Buffer.RANK,) if c.argmax else ())
        self.store_buffers = STORE_BUFFERS + extra
        loadable = max(c.depth(_name(b)) for b in self.load_buffers)
        storable = max(c.depth(_name(b)) for b in self.store_buffers)
        self.operands = {
            Opcode.HALT: data.StructLayout({"status": 8}),
            Opcode.LOAD: data.StructLayout({
                "buffer": Buffer, "source": Source, "addr": range(loadable),
                "count": range(1, loadable + 1), "unread": wait, "unwritten": wait}),
            Opcode.STORE: data.StructLayout({
                "buffer": Buffer, "addr": range(storable),
                "count": range(1, storable + 1), "unwritten": wait}),
            Opcode.GEMM: data.StructLayout({
                "a_buffer": Buffer, "a_addr": range(max(c.in_depth, c.act_depth)),
                "b_addr": range(c.weight_depth),
                "planes": range(1, c.xnor_array.max_act_bits + 1),
                "words": range(1, c.max_words + 1),
                "m_tiles": range(1, max(c.in_depth, c.act_depth) + 1),
                "n_tiles": range(1, c.weight_depth + 1),
                "pool": range(1, c.max_pool + 1),
                "mode": GemmMode, "out_bits": range(1, c.max_out_bits + 1),
                "dst_addr": range(max(c.act_depth, c.score_depth)),
                "thr_addr": range(c.thresh_depth), "sync": 1, "unsent": wait}),
        }
        if c.training:
            self.operands[Opcode.UPDATE] = data.StructLayout({
                "source": Source, "lat_addr": range(c.latent_depth),
                "w_addr": range(c.weight_depth * c.cols),
                "count": range(1, c.latent_depth + 1), "grad_bits": range(2, 9),
                "lr_exponent": range(c.max_update_lr + 1),
                "unread": wait, "unwritten": wait})
        if c.statistics:
            self.operands[Opcode.STATS] = data.StructLayout({
                "addr": range(c.score_depth), "groups": range(1, c.norm_groups + 1),
                "samples": range(1, c.score_depth + 1), "unwritten": wait})
        if c.argmax:
            self.operands[Opcode.ARGMAX] = data.StructLayout({
                "addr": range(c.score_depth), "groups": range(1, c.score_depth + 1),
                "samples": range(1, c.score_depth + 1),
                "classes": range(1, MAX_ARGMAX_CLASSES + 1),
                "rank_addr": range(c.rank_depth), "stride": range(1, c.rank_depth + 1),
                "unwritten": wait})
        #: The opcodes of this configuration (``UPDATE`` in a training configuration only,
        #: ``STATS`` with a statistics unit only, ``ARGMAX`` with an argmax unit only).
        self.opcodes = tuple(self.operands)
        #: Operand fields an instruction dict may leave out, and their values.
        self.defaults = {Opcode.GEMM: {"pool": 1}}
        union = data.UnionLayout({op.name.lower(): layout
                                  for op, layout in self.operands.items()})
        used = Opcode.as_shape().width + union.size
        self.layout = data.StructLayout({
            "opcode": Opcode, "operands": union,
            "reserved": unsigned(-used % max(INSTRUCTION_ALIGN, c.host_link_bits))})
        self.width = self.layout.size
        self.raw_layout = data.StructLayout({name: unsigned(field.width)
                                             for name, field in self.layout})
        self.raw_operands = {op: data.StructLayout({name: unsigned(field.width)
                                                    for name, field in layout})
                             for op, layout in self.operands.items()}

    @property
    def bytes(self):
        """Bytes of one instruction word."""
        return self.width // 8

    # What instructions touch, computed once for the checks, the ISS and the energy model --

    def out_words(self, n_tiles):
        """Words of one bit plane of a ``THRESHOLD`` layer's output row block."""
        return -(-n_tiles * self.config.cols // self.config.word)

    @staticmethod
    def takes_data(instr):
        """Whether ``instr`` is followed by data words from the host (``LOAD``, ``UPDATE``:
        :meth:`link_words` of them, from its ``source``)."""
        return instr["opcode"] in (Opcode.LOAD, Opcode.UPDATE, "LOAD", "UPDATE")

    def link_words(self, instr):
        """``word``-bit words a ``LOAD`` or an ``UPDATE`` takes from the host or a ``STORE``,
        ``STATS`` or ``ARGMAX`` sends."""
        op = self._opcode(instr["opcode"])
        if op == Opcode.UPDATE:
            return instr["count"] * GRAD_FIELD_BITS
        if op == Opcode.STATS:
            return instr["groups"] * STATS_LANES * self.config.cols
        if op == Opcode.ARGMAX:
            return self.argmax_words(instr["samples"]) * self.config.cols
        buffer = instr["buffer"]
        buffer = Buffer[buffer] if isinstance(buffer, str) else buffer
        return instr["count"] * self.config.lanes(_name(buffer))

    @property
    def store_words_depth(self):
        """Entries of the store stage's word queue: two words in hand keep the link busy
        when a word takes 3 or more beats, else four."""
        c = self.config
        lane_beats = c.word // c.host_link_bits
        beats = [c.cols * lane_beats] + ([c.latent_bits * lane_beats] if c.training else [])
        return 2 if min(beats) >= 3 else 4

    def argmax_words(self, samples):
        """Record words (``cols``-lane memory words) of an ``ARGMAX`` of ``samples``."""
        return -(-samples // argmax_bytes(self.config))

    def regions(self, instr):
        """The memory regions an instruction reads and writes: a list of ``(memory, first,
        words, access)`` with ``access`` ``"r"`` or ``"w"``, in memory words. Enum fields
        may be members or names."""
        c = self.config
        op = self._opcode(instr["opcode"])
        instr = {**self.defaults.get(op, {}), **instr}
        instr = {name: (self._member(op, name, field.shape, instr[name], False)
                        if isinstance(field.shape, type) and issubclass(field.shape, enum.Enum)
                        else instr[name])
                 for name, field in self.operands[op]}
        if op == Opcode.LOAD:
            return [(_name(instr["buffer"]), instr["addr"], instr["count"], "w")]
        if op == Opcode.STORE:
            return [(_name(instr["buffer"]), instr["addr"], instr["count"], "r")]
        if op == Opcode.STATS:
            return [("score", instr["addr"], instr["samples"] * instr["groups"], "r")]
        if op == Opcode.ARGMAX:
            return [("score", instr["addr"], instr["samples"] * instr["groups"], "r"),
                    ("rank", instr["rank_addr"], instr["classes"] * instr["stride"], "r")]
        if op == Opcode.UPDATE:
            first = instr["w_addr"] // c.cols
            last = (instr["w_addr"] + instr["count"] - 1) // c.cols
            return [("latent", instr["lat_addr"], instr["count"], "r"),
                    ("latent", instr["lat_addr"], instr["count"], "w"),
                    ("weight", first, last - first + 1, "w")]
        if op != Opcode.GEMM:
            return []
        m, n = instr["m_tiles"], instr["n_tiles"]
        out = [(_name(instr["a_buffer"]), instr["a_addr"],
                m * instr["pool"] * instr["planes"] * instr["words"], "r"),
               ("weight", instr["b_addr"], n * instr["words"], "r")]
        if instr["mode"] == GemmMode.THRESHOLD:
            bits = instr["out_bits"]
            out += [("thresh", instr["thr_addr"], n * ((1 << bits) - 1), "r"),
                    ("act", instr["dst_addr"], m * bits * self.out_words(n), "w")]
        else:
            out.append(("score", instr["dst_addr"], m * c.rows * n, "w"))
        return out

    # Validation shared by encode and decode ---------------------------------------------

    def _opcode(self, value):
        op = None
        if isinstance(value, Opcode):
            op = value
        elif isinstance(value, str) and value in Opcode.__members__:
            op = Opcode[value]
        if op is None:
            raise InstructionError(f"unknown opcode {value!r}")
        if op not in self.operands:
            if op == Opcode.STATS:
                raise InstructionError("STATS needs a statistics unit (norm_channels > 0); "
                                       "this accelerator has none")
            if op == Opcode.ARGMAX:
                raise InstructionError("ARGMAX needs an argmax unit (rank_depth > 0); this "
                                       "accelerator has none")
            raise InstructionError(f"{op.name} needs a training configuration (latent_depth "
                                   f"> 0); this accelerator has no latent memory")
        return op

    def _check(self, instr, *, raw=False, regions=True):
        if not isinstance(instr, dict):
            raise InstructionError(f"an instruction must be a dict, not {instr!r}")
        if "opcode" not in instr:
            raise InstructionError("instruction has no opcode")
        op = self._opcode(instr["opcode"])
        instr = {**self.defaults.get(op, {}), **instr}
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
            if value < low:
                raise InstructionError(f"{op.name} {name} must be at least {low}, not {value}")
            if value > high:
                raise InstructionError(f"{op.name} {name} must be at most {high}, not {value}")
            out[name] = value
        if op == Opcode.LOAD and out["buffer"] not in self.load_buffers:
            raise InstructionError(f"LOAD cannot write the {_name(out['buffer'])} memory "
                                   f"(only {', '.join(_name(b) for b in self.load_buffers)})")
        if op == Opcode.STORE and out["buffer"] not in self.store_buffers:
            raise InstructionError(f"STORE cannot read the {_name(out['buffer'])} memory "
                                   f"(only {', '.join(_name(b) for b in self.store_buffers)})")
        if op == Opcode.GEMM and out["a_buffer"] not in (Buffer.IN, Buffer.ACT):
            raise InstructionError(f"GEMM a_buffer must be IN or ACT, not "
                                   f"{out['a_buffer'].name}")
        values = {name: value.value if isinstance(value, enum.Enum) else value
                  for name, value in out.items()}
        for message, rule in self.field_rules(op):
            if rule(values):
                raise InstructionError(f"{op.name}: {message}")
        if regions:
            for memory, first, words, _ in self.regions(out):
                depth = self.config.depth(memory)
                if first + words > depth:
                    raise InstructionError(
                        f"{op.name} region of {words} words at {first} runs past the end of "
                        f"the {memory} memory ({depth} words)", Status.ADDRESS)
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

    # Encode and decode ------------------------------------------------------------------

    def check(self, instr):
        """Validate an instruction dict and return it normalised (enum members)."""
        return self._check(instr)

    def encode(self, instr):
        """The instruction word (an ``int`` of :attr:`width` bits) of an instruction dict:
        ``opcode`` (an :class:`Opcode` or its name) and exactly ``operands[opcode]``'s
        fields; enum fields take members or names."""
        instr = self._check(instr)
        op = instr["opcode"]
        fields = {name: value for name, value in instr.items() if name != "opcode"}
        return self.layout.const({"opcode": op, "operands": {op.name.lower(): fields},
                                  "reserved": 0}).as_bits()

    def decode(self, bits, *, regions=True):
        """The instruction dict of an instruction word; raises :class:`InstructionError`
        for any word :meth:`encode` would not produce. ``regions=False`` skips the region
        checks, as the gateware does (it wraps addresses instead)."""
        if not isinstance(bits, int) or isinstance(bits, bool) or not \
                0 <= bits < 2 ** self.width:
            raise InstructionError(f"an instruction word must be a {self.width}-bit unsigned "
                                   f"integer, not {bits!r}")
        raw = self.raw_layout.from_bits(bits)
        if raw.opcode not in {op.value for op in self.opcodes}:
            raise InstructionError(f"unknown opcode {raw.opcode}")
        op = Opcode(raw.opcode)
        member = getattr(self.layout.from_bits(bits).operands, op.name.lower())
        view = self.raw_operands[op].from_bits(member.as_bits())
        fields = {name: view[name] for name, _ in self.operands[op]}
        operands = self.raw_operands[op].const(fields).as_bits()
        clean = self.raw_layout.const({"opcode": op.value, "operands": operands}).as_bits()
        if clean != bits:
            raise InstructionError(f"unused bits of a {op.name} instruction are not zero")
        return self._check({"opcode": op, **fields}, raw=True, regions=regions)

    def field_rules(self, op):
        """Rules across an opcode's fields that the gateware checks too: ``(message,
        rule)`` pairs, ``rule(fields)`` true for an illegal instruction. ``fields`` maps
        names to integers (enum values), or to Amaranth values in the gateware, so one
        expression serves both."""
        if op == Opcode.GEMM:
            # Pooling keeps the largest threshold count: it has no meaning for raw scores.
            return [("a SCORES GEMM cannot pool (pool must be 1)",
                     lambda f: (f["mode"] == GemmMode.SCORES.value) & (f["pool"] != 1))]
        return []

    def unused_mask(self, op):
        """Bits of the instruction word that ``op`` does not use (they must be zero)."""
        used = ((1 << self.layout["opcode"].width) - 1) << self.layout["opcode"].offset
        base = self.layout["operands"].offset
        for _, field in self.operands[op]:
            used |= ((1 << field.width) - 1) << (base + field.offset)
        return ((1 << self.width) - 1) & ~used


@functools.lru_cache(maxsize=32)
def instruction_set(config):
    """The (cached) :class:`InstructionSet` of ``config``."""
    return InstructionSet(config)


def encode(instr, config):
    """Encode an instruction dict for ``config``; see :meth:`InstructionSet.encode`."""
    return instruction_set(config).encode(instr)


def decode(bits, config, *, regions=True):
    """Decode an instruction word for ``config``; see :meth:`InstructionSet.decode`."""
    return instruction_set(config).decode(bits, regions=regions)
