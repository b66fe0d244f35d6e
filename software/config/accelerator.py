"""Configuration of the programmable accelerator: its XNOR-popcount array, its memories, its
stages' queues and its host link.

One frozen object is read by the gateware (:mod:`lowbit.hw.accelerator`), the instruction
set (:mod:`lowbit.isa`), the buffer data layout (:mod:`lowbit.layout`), the
instruction-set simulator and its cycle model (:mod:`lowbit.iss`), the compiler, the
runtime and the energy model. Its :meth:`~AcceleratorConfig.fingerprint` stamps every
program, so a program built for one configuration is refused by another.

The core feeds the array one beat per cycle (``docs/accelerator.md``). Every memory is
*lanes* words wide, one ``word``-bit lane per array row or column, so that one read gives a
whole beat:

========  =========  ==============================================  =================
memory    lanes      holds                                           written by / read by
========  =========  ==============================================  =================
``in``    ``rows``   activations from the host (a network's input)   LOAD / array rows
``act``   ``rows``   activations between layers (packed bit planes)  result stage / array rows
``weight`` ``cols``  +-1 weights                                     LOAD / array columns
``thresh`` ``cols``  per-channel thresholds (low ``acc_bits`` bits)   LOAD / result stage
``score`` ``cols``   a last layer's integer scores                   result stage / STORE
``latent`` ``latent_bits`` LNS latent weights (training only)        LOAD, UPDATE / UPDATE, STORE
========  =========  ==============================================  =================

The ``latent`` memory exists only in a training configuration (``latent_depth > 0``): one
memory word per ``word``-bit lane of the weight memory, its ``word`` LNS weights as
``latent_bits`` bit planes (plane 0 the signs, plane ``1 + b`` bit ``b`` of the codes).
``UPDATE`` applies LNS-Madam's rule to them and writes their signs into the weight memory
(``docs/training.md``).

A configuration with ``norm_channels > 0`` has a statistics unit in its store stage: the
``STATS`` instruction reads score words, runs them through a
:class:`~lowbit.hw.lightnorm.LightNorm` (:attr:`AcceleratorConfig.norm`) and sends each
channel's range batch-norm statistics (sum and spread) to the host.

A configuration with ``rank_depth > 0`` has an argmax unit in its store stage and a ``rank``
memory (one lane, ``rank_bits`` bits a word): the ``ARGMAX`` instruction reads score words
and sends each sample's predicted class as one byte, the class whose *rank* is largest.
The rank of class ``c`` at accumulator ``acc`` is the ``rank`` memory's word at
``c * stride + acc``, a table the compiler fills with each score's place in the sorted
list of every score the last layer can produce, so the device's choice is the host's
``argmax`` of the float scores, exactly (``docs/accelerator.md``).

Each memory has one writer and one reader, so no engine ever waits for a port: the RAM's
write port serves the writer, its read port the reader. The one exception is a weight
memory built from single-ported RAM (``weight_single_port``, the iCE40UP5K's SPRAM): there
a weight ``LOAD`` waits until no ``GEMM`` is still reading weights.
"""

import dataclasses
import json

from .base import ConfigMixin, check_bool, check_int
from .lightnorm import LightNormConfig
from .xnor_array import XNORArrayConfig

__all__ = ["AcceleratorConfig", "MEMORIES", "GRAD_FIELD_BITS"]

#: The accelerator's memories, in the order of :class:`lowbit.isa.Buffer` (a training
#: configuration adds ``latent``: :attr:`AcceleratorConfig.memories`).
MEMORIES = ("in", "act", "weight", "thresh", "score")

#: Bits of one gradient mantissa in an ``UPDATE``'s data: a two's-complement byte.
GRAD_FIELD_BITS = 8

#: Deepest memory a configuration may ask for (words of ``lanes x word`` bits).
MAX_DEPTH = 1 << 16


def _power_of_two(value):
    return value > 0 and value & (value - 1) == 0


@dataclasses.dataclass(frozen=True)
class AcceleratorConfig(ConfigMixin):
    """Parameters of the accelerator, its instruction set, its simulator and its compiler.

    Parameters
    ----------
    xnor_array : XNORArrayConfig
        The array: ``rows x cols`` PEs of ``word`` bits, ``max_k`` the longest reduction,
        ``max_act_bits`` the most bit planes of an activation operand (bit-serial, unsigned),
        ``pipeline`` the popcount's register stages. Weights are +-1: ``max_weight_bits``
        must be 1.
    max_out_bits : int
        Bits of the activations the result stage writes between layers (1..4): a layer's
        output is the number of its ``2^bits - 1`` thresholds that the dot product reaches.
        1 is the sign of a binary network.
    max_pool : int
        The largest max-pooling window a ``THRESHOLD`` ``GEMM`` may ask for, in array tiles
        (1..16; 4 holds a 2x2 window, 1 builds no pooling): the result stage keeps the
        largest threshold count over ``pool`` consecutive row tiles of one column tile
        (``docs/accelerator.md``).
    in_depth, act_depth, weight_depth, thresh_depth, score_depth : int
        Depth of each memory in memory words (``lanes x word`` bits each); powers of two,
        1..65536. The gateware takes every address modulo its memory's depth, so no
        instruction, however malformed, can reach outside a memory.
    weight_single_port : bool
        The weight memory is single-ported RAM (an iCE40UP5K's SPRAM): a ``LOAD`` into it
        waits until no ``GEMM`` is reading weights (``docs/accelerator.md``).
    queue_depth : int
        Entries of the execute and store stages' instruction queues (1..16).
    host_link_bits : int
        Width of the host link's streams: 8 (a UART), 16, 32 or 64, at most ``word``.
    timeout_cycles : int
        Cycles without host-link input after which an incomplete program is abandoned with
        the ``TRUNCATED`` status (16..2^32-1; ``docs/host_link.md``).
    latent_depth : int
        Words of the ``latent`` memory of a training configuration (a power of two,
        1..65536; one word per weight lane), or 0: no latent memory and no ``UPDATE``.
    latent_bits : int
        LNS word of a latent weight, sign included (4..16): bit planes of a latent word.
    norm_channels : int
        Channels the ``STATS`` instruction's statistics unit holds (0..1024, a multiple of
        ``cols``), or 0: no statistics unit and no ``STATS``.
    norm_chunks : int
        ``K``, the range chunks of those statistics (a power of two, 1..64): the batch is
        split as ``numpy.array_split`` splits it.
    rank_depth : int
        Words of the ``rank`` memory of the argmax unit (a power of two, 1..65536), or 0:
        no argmax unit and no ``ARGMAX``.

    Raises
    ------
    TypeError, ValueError
        With an exact message naming the parameter, for any invalid value or combination.
    """

    xnor_array: XNORArrayConfig = dataclasses.field(
        default_factory=lambda: XNORArrayConfig(rows=8, cols=8, word=32, max_k=2048,
                                                max_act_bits=8, max_weight_bits=1,
                                                pipeline=2))
    max_out_bits: int = 2
    max_pool: int = 4
    in_depth: int = 512
    act_depth: int = 512
    weight_depth: int = 8192
    thresh_depth: int = 512
    score_depth: int = 512
    weight_single_port: bool = False
    queue_depth: int = 4
    host_link_bits: int = 8
    timeout_cycles: int = 1 << 20
    latent_depth: int = 0
    latent_bits: int = 8
    norm_channels: int = 0
    norm_chunks: int = 8
    rank_depth: int = 0

    def __post_init__(self):
        owner = "AcceleratorConfig"
        if not isinstance(self.xnor_array, XNORArrayConfig):
            raise TypeError(f"{owner} xnor_array must be a XNORArrayConfig, not "
                            f"{self.xnor_array!r}")
        array = self.xnor_array
        if array.max_weight_bits != 1:
            raise ValueError(f"{owner} needs +-1 weights: xnor_array.max_weight_bits must be "
                             f"1, not {array.max_weight_bits}")
        if array.word not in (8, 16, 32, 64):
            raise ValueError(f"{owner} xnor_array.word must be 8, 16, 32 or 64, not "
                             f"{array.word}")
        if not _power_of_two(array.cols) or array.cols > array.word:
            raise ValueError(f"{owner} xnor_array.cols {array.cols} must be a power of two "
                             f"no larger than the word ({array.word}): a tile's outputs fill "
                             f"whole fields of an activation word")
        check_int(owner, "max_out_bits", self.max_out_bits, minimum=1, maximum=4)
        check_int(owner, "max_pool", self.max_pool, minimum=1, maximum=16)
        for name in MEMORIES:
            depth = check_int(owner, f"{name}_depth", getattr(self, f"{name}_depth"),
                              minimum=1, maximum=MAX_DEPTH)
            if not _power_of_two(depth):
                raise ValueError(f"{owner} {name}_depth must be a power of two, not {depth}")
        check_bool(owner, "weight_single_port", self.weight_single_port)
        check_int(owner, "queue_depth", self.queue_depth, minimum=1, maximum=16)
        check_int(owner, "host_link_bits", self.host_link_bits)
        if self.host_link_bits not in (8, 16, 32):
            # 64 would cut the 160-bit STATUS record inside a beat (its last 32 bits lost).
            raise ValueError(f"{owner} host_link_bits must be 8, 16 or 32, not "
                             f"{self.host_link_bits}")
        if self.host_link_bits > array.word:
            raise ValueError(f"{owner} host_link_bits {self.host_link_bits} must not exceed "
                             f"the word ({array.word})")
        check_int(owner, "timeout_cycles", self.timeout_cycles, minimum=16,
                  maximum=(1 << 32) - 1)
        latent = check_int(owner, "latent_depth", self.latent_depth, minimum=0,
                           maximum=MAX_DEPTH)
        if latent and not _power_of_two(latent):
            raise ValueError(f"{owner} latent_depth must be 0 or a power of two, not {latent}")
        check_int(owner, "latent_bits", self.latent_bits, minimum=4, maximum=16)
        if latent and self.weight_single_port:
            raise ValueError(f"{owner} latent_depth > 0 needs a dual-ported weight memory: "
                             f"UPDATE writes one lane of a weight word (weight_single_port "
                             f"must be False)")
        if self.acc_bits > array.word:
            raise ValueError(f"{owner} the {self.acc_bits}-bit accumulators (max_k "
                             f"{array.max_k}, max_act_bits {array.max_act_bits}) do not fit "
                             f"a {array.word}-bit threshold or score lane")
        norm = check_int(owner, "norm_channels", self.norm_channels, minimum=0,
                         maximum=1024)
        if norm % array.cols:
            raise ValueError(f"{owner} norm_channels {norm} must be a multiple of cols "
                             f"{array.cols}: a score word is cols channels")
        chunks = check_int(owner, "norm_chunks", self.norm_chunks, minimum=1, maximum=64)
        if not _power_of_two(chunks):
            raise ValueError(f"{owner} norm_chunks must be a power of two (the gateware "
                             f"splits a batch by shifts), not {chunks}")
        if norm and self.acc_bits + 1 > 32:
            raise ValueError(f"{owner} a statistics unit takes scores of at most 31 bits; "
                             f"the {self.acc_bits}-bit accumulators (max_k {array.max_k}, "
                             f"max_act_bits {array.max_act_bits}) are wider")
        if norm:
            stats = self.norm
            if stats.sum_bits > array.word:
                raise ValueError(f"{owner} the statistics' {stats.sum_bits}-bit sums "
                                 f"({self.acc_bits}-bit scores over up to score_depth "
                                 f"{self.score_depth} samples) do not fit a {array.word}-bit "
                                 f"lane")

        rank = check_int(owner, "rank_depth", self.rank_depth, minimum=0, maximum=MAX_DEPTH)
        if rank and not _power_of_two(rank):
            raise ValueError(f"{owner} rank_depth must be 0 or a power of two, not {rank}")
        if rank > 1 << array.word:
            raise ValueError(f"{owner} rank_depth {rank} needs {self.rank_bits}-bit ranks; a "
                             f"LOAD writes a rank memory word from one {array.word}-bit word")

    # Derived quantities ------------------------------------------------------------------

    @property
    def rows(self):
        """Array rows: activation lanes."""
        return self.xnor_array.rows

    @property
    def cols(self):
        """Array columns: weight, threshold and score lanes."""
        return self.xnor_array.cols

    @property
    def word(self):
        """Bits of one lane."""
        return self.xnor_array.word

    @property
    def max_words(self):
        """Words of one bit plane of the longest reduction."""
        return -(-self.xnor_array.max_k // self.word)

    @property
    def acc_bits(self):
        """Width of an accumulator, a threshold and a score: unsigned, wide enough that the
        all-ones value exceeds every dot product (a threshold no output reaches)."""
        array = self.xnor_array
        most = ((1 << array.max_act_bits) - 1) * self.max_words * self.word
        return (most + 1).bit_length()

    @property
    def never(self):
        """The threshold no accumulator reaches (``2^acc_bits - 1``)."""
        return (1 << self.acc_bits) - 1

    @property
    def max_thresholds(self):
        """Thresholds per channel at ``max_out_bits``."""
        return (1 << self.max_out_bits) - 1

    @property
    def training(self):
        """Whether this configuration has a ``latent`` memory and ``UPDATE``."""
        return self.latent_depth > 0

    @property
    def statistics(self):
        """Whether this configuration has the statistics unit and ``STATS``."""
        return self.norm_channels > 0

    @property
    def norm_groups(self):
        """Channel groups of the statistics unit: score words per sample."""
        return self.norm_channels // self.cols

    @property
    def norm(self):
        """The :class:`LightNormConfig` of the statistics unit (``norm_channels > 0``): a
        block of ``cols`` channels (a score word), inputs the scores as signed
        ``acc_bits + 1``-bit integers, batches of up to ``score_depth`` samples; statistics
        only (its ``APPLY`` path is not used, so synthesis removes it)."""
        if not self.statistics:
            raise ValueError("AcceleratorConfig has no statistics unit (norm_channels is 0)")
        return LightNormConfig(channels=self.norm_channels, block=self.cols,
                               input_width=self.acc_bits + 1, chunks=self.norm_chunks,
                               max_batch=self.score_depth, output="sign", statistics=True)

    @property
    def argmax(self):
        """Whether this configuration has the argmax unit, its ``rank`` memory and
        ``ARGMAX``."""
        return self.rank_depth > 0

    @property
    def rank_bits(self):
        """Bits of a ``rank`` memory word: enough for every rank below ``rank_depth`` (a
        table of ``rank_depth`` entries has at most that many distinct scores)."""
        return max(1, (self.rank_depth - 1).bit_length())

    @property
    def memories(self):
        """The names of this configuration's memories (:data:`MEMORIES`, ``latent`` in a
        training configuration, ``rank`` with an argmax unit)."""
        return (MEMORIES + (("latent",) if self.training else ())
                + (("rank",) if self.argmax else ()))

    @property
    def max_update_lr(self):
        """The largest learning-rate exponent of an ``UPDATE``: ``latent_bits - 2``."""
        return self.latent_bits - 2

    def lanes(self, memory):
        """Lanes of ``memory`` (a name of :attr:`memories`)."""
        if memory == "latent":
            return self.latent_bits
        if memory == "rank":
            return 1
        return self.rows if memory in ("in", "act") else self.cols

    def depth(self, memory):
        """Depth of ``memory`` in memory words."""
        return getattr(self, f"{memory}_depth")

    def flat_words(self, memory):
        """``word``-bit words of ``memory``: what ``LOAD`` and ``STORE`` address."""
        return self.depth(memory) * self.lanes(memory)

    @property
    def macs(self):
        """Binary MACs per cycle of the array."""
        return self.xnor_array.macs

    # Files --------------------------------------------------------------------------------

    def to_dict(self):
        """The fields as plain JSON-compatible values, the array as a dict with a ``type``.
        An inference configuration (``latent_depth`` 0) leaves the latent fields out, and
        one without a statistics unit (``norm_channels`` 0) the norm fields and one
        without an argmax unit ``rank_depth``, so its
        fingerprint, and every program and bitstream stamped with it, is what it was
        before training configurations existed (the hardware is the same)."""
        out = {}
        for field in dataclasses.fields(self):
            if not self.training and field.name in ("latent_depth", "latent_bits"):
                continue
            if not self.statistics and field.name in ("norm_channels", "norm_chunks"):
                continue
            if not self.argmax and field.name == "rank_depth":
                continue
            value = getattr(self, field.name)
            if isinstance(value, ConfigMixin):
                value = {"type": type(value).__name__, **value.to_dict()}
            out[field.name] = value
        return out

    @classmethod
    def from_dict(cls, d):
        """The configuration described by ``d``, the inverse of :meth:`to_dict`. Fields left
        out keep their defaults; ``xnor_array`` is a dict with ``type`` ``"XNORArrayConfig"``
        and that class's fields (left-out ones keep the accelerator's defaults).

        Raises
        ------
        TypeError
            If ``d`` or ``xnor_array`` is not a dict.
        ValueError
            For an unknown key, a wrong ``type``, and any field the configurations reject.
        """
        owner = cls.__name__
        if not isinstance(d, dict):
            raise TypeError(f"{owner}.from_dict needs a dict, not {d!r}")
        fields = {field.name: field for field in dataclasses.fields(cls)}
        unknown = sorted(set(d) - set(fields))
        if unknown:
            raise ValueError(f"{owner} has no parameter(s) {', '.join(map(repr, unknown))} "
                             f"(known: {', '.join(sorted(fields))})")
        values = dict(d)
        if "xnor_array" in values:
            value = values["xnor_array"]
            if not isinstance(value, dict):
                raise TypeError(f"{owner} xnor_array must be a dict with a 'type' key, not "
                                f"{value!r}")
            kind = value.get("type", "XNORArrayConfig")
            if kind != "XNORArrayConfig":
                raise ValueError(f"{owner} xnor_array type must be 'XNORArrayConfig', not "
                                 f"{kind!r}")
            params = {k: v for k, v in value.items() if k != "type"}
            known = {field.name for field in dataclasses.fields(XNORArrayConfig)}
            unknown = sorted(set(params) - known)
            if unknown:
                raise ValueError(f"XNORArrayConfig has no parameter(s) "
                                 f"{', '.join(map(repr, unknown))} (known: "
                                 f"{', '.join(sorted(known))})")
            base = fields["xnor_array"].default_factory()
            values["xnor_array"] = base.replace(**params)
        return cls(**values)

    @classmethod
    def load(cls, path):
        """Read a configuration from the JSON file ``path`` (as written by :meth:`save`).

        Raises ``ValueError`` (text that is not JSON) and the errors of :meth:`from_dict`,
        their messages prefixed with ``path``; ``OSError`` if the file cannot be read.
        """
        from .base import load_config  # the one loader of every configuration

        return load_config(path, cls)

    def save(self, path):
        """Write the configuration to ``path`` as JSON (:meth:`to_dict`)."""
        with open(path, "w", encoding="utf-8") as file:
            json.dump(self.to_dict(), file, indent=2)
            file.write("\n")
