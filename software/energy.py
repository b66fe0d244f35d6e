"""Energy estimates of accelerator programs, Accelergy-style: the energy of a run is the
sum over action types of ``count x energy per action``.

Three parts (``docs/energy.md``):

* a **technology table** (:class:`Technology`): measured 45 nm entries (M. Horowitz,
  ISSCC 2014; default file ``energy_45nm.toml``, shipped with the package) and the entries
  lowbit derives from them (:meth:`Technology.derived`), each with its derivation;
* **action counts** of a program, from its instructions (:func:`count_instruction`,
  :func:`count_program`), by the full-rate core's semantics: what each instruction reads
  and writes comes from :meth:`lowbit.isa.InstructionSet.regions` and
  :meth:`~lowbit.isa.InstructionSet.link_words`. A ``GEMM`` takes one beat per cycle,
  ``tiles x planes x words`` of them; each beat reads one memory word of the activation
  memory (``rows`` lanes) and one of the weight memory (``cols`` lanes), and every PE does
  a ``word``-bit XNOR and popcount and one accumulator add; the result stage reads ``T``
  threshold words per tile and compares every output ``T`` times (``THRESHOLD``) or writes
  the accumulators (``SCORES``). ``LOAD`` and ``STORE`` move host bytes and memory words;
  every instruction is fetched over the host link, and ``HALT`` answers a status record;
* **estimates** (:func:`estimate`): energy per action and per component (array, result
  stage, each memory, host link), per layer, per inference; and **comparisons**
  (:func:`compare`) of the same network's work on other datapaths (binary, int8, fp32;
  the last two hypothetical, costed with their table entries).

Per layer: a program's metadata may list its layers (``metadata["layers"]``, each a dict
with ``name`` and ``instructions``, a list of instruction indices); otherwise layers are
found from the dataflow (:func:`layers`).
"""

import collections
import dataclasses
import math
import tomllib
from importlib import resources
from pathlib import Path

from .config.accelerator import MEMORIES, AcceleratorConfig
from .isa import DATA_HEADER, STATUS_RECORD, Buffer, GemmMode, Opcode, instruction_set
from .program import Program

__all__ = ["TechError", "Technology", "default_technology", "MEASURED", "PARAMETERS",
           "Actions", "ACTIONS", "COUNTED", "count_instruction", "count_program", "Layer",
           "layers", "action_energy", "energy_of", "COMPONENTS", "KINDS", "Estimate",
           "estimate", "DATAPATHS", "Datapath", "compare", "per_inference", "mac_energy"]

#: The measured entries every technology file must give, in pJ.
MEASURED = ("int_add_8", "int_add_16", "int_add_32", "int_mul_8", "int_mul_32",
            "fp_add_16", "fp_add_32", "fp_mul_16", "fp_mul_32", "sram_read_64b_8kb",
            "sram_read_64b_32kb", "sram_read_64b_1mb", "dram_access_64b")
#: The derivation parameters every technology file must give.
PARAMETERS = ("gates_per_full_adder", "popcount_full_adders_per_bit", "sram_write_per_read",
              "host_dram_per_byte")
_TEXT = ("name", "source")

#: Bytes of a ``DATA`` record's header and of a whole ``STATUS`` record
#: (``docs/host_link.md``).
DATA_HEADER_BYTES = DATA_HEADER.size // 8
STATUS_BYTES = STATUS_RECORD.size // 8


class TechError(ValueError):
    """A technology file that cannot be used; the message names the file and the key."""


def _number(path, key, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not \
            math.isfinite(value):
        raise TechError(f"{path}: {key} must be a number, not {value!r}")
    if value < 0:
        raise TechError(f"{path}: {key} must not be negative, not {value!r}")
    return float(value)


@dataclasses.dataclass(frozen=True)
class Technology:
    """A technology table: measured energies per operation and derivation parameters.

    Parameters
    ----------
    name, source : str
        What the table is and where its numbers come from.
    energy_pj : dict
        Every key of :data:`MEASURED`, in picojoules.
    derivation : dict
        Every key of :data:`PARAMETERS` (see ``energy_45nm.toml``).
    path : str
        The file it was read from (in error messages).

    Raises
    ------
    TechError
        For a missing or unknown key, or a value that is not a non-negative number.
    """

    name: str
    source: str
    energy_pj: dict
    derivation: dict
    path: str = "<technology>"

    def __post_init__(self):
        for section, keys in (("energy_pj", MEASURED), ("derivation", PARAMETERS)):
            table = getattr(self, section)
            if not isinstance(table, dict):
                raise TechError(f"{self.path}: [{section}] must be a table, not {table!r}")
            missing = [key for key in keys if key not in table]
            if missing:
                raise TechError(f"{self.path}: missing key(s) "
                                f"{', '.join(f'{section}.{k}' for k in missing)}")
            unknown = sorted(set(table) - set(keys))
            if unknown:
                raise TechError(f"{self.path}: unknown key(s) "
                                f"{', '.join(f'{section}.{k}' for k in unknown)} (known: "
                                f"{', '.join(keys)})")
            object.__setattr__(self, section, {key: _number(self.path, f"{section}.{key}",
                                                            table[key]) for key in keys})
        for key in _TEXT:
            if not isinstance(getattr(self, key), str):
                raise TechError(f"{self.path}: {key} must be text, not "
                                f"{getattr(self, key)!r}")
        if self.derivation["gates_per_full_adder"] == 0:
            raise TechError(f"{self.path}: derivation.gates_per_full_adder must be positive")

    @classmethod
    def from_dict(cls, values, path="<technology>"):
        """A table from the parsed contents of a technology file."""
        if not isinstance(values, dict):
            raise TechError(f"{path}: a technology file is a TOML table")
        known = set(_TEXT) | {"energy_pj", "derivation"}
        unknown = sorted(set(values) - known)
        if unknown:
            raise TechError(f"{path}: unknown key(s) {', '.join(unknown)} (known: "
                            f"{', '.join(sorted(known))})")
        missing = [key for key in sorted(known) if key not in values]
        if missing:
            raise TechError(f"{path}: missing key(s) {', '.join(missing)}")
        return cls(values["name"], values["source"], values["energy_pj"],
                   values["derivation"], str(path))

    @classmethod
    def load(cls, path):
        """Read a technology TOML file; :class:`TechError` names the file and the key."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as error:
            raise TechError(f"{path}: cannot read: {error.strerror or error}") from None
        try:
            values = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise TechError(f"{path}: not a TOML file: {error}") from None
        return cls.from_dict(values, path)

    def to_toml(self):
        """The table as a technology file (what :meth:`load` reads back)."""
        lines = [f"name = {_toml_str(self.name)}", f"source = {_toml_str(self.source)}", ""]
        for section in ("energy_pj", "derivation"):
            lines.append(f"[{section}]")
            lines += [f"{key} = {value!r}" for key, value in getattr(self, section).items()]
            lines.append("")
        return "\n".join(lines)

    def replace(self, **entries):
        """A copy with some measured entries or derivation parameters changed."""
        energy, derivation = dict(self.energy_pj), dict(self.derivation)
        for key, value in entries.items():
            (energy if key in energy else derivation)[key] = value
        return Technology(self.name, self.source, energy, derivation, self.path)

    # Derived entries -------------------------------------------------------------------

    def __getitem__(self, key):
        return self.energy_pj[key]

    @property
    def gate(self):
        """One logic gate: an 8-bit ripple-carry add is 8 full adders of
        ``gates_per_full_adder`` gates."""
        return self["int_add_8"] / (8 * self.derivation["gates_per_full_adder"])

    @property
    def xnor_popcount_bit(self):
        """One XNOR (or AND) gate and its share of a carry-save popcount tree
        (``popcount_full_adders_per_bit`` full adders per input)."""
        d = self.derivation
        return self.gate * (1 + d["popcount_full_adders_per_bit"] * d["gates_per_full_adder"])

    def int_add(self, bits):
        """A ``bits``-bit integer add: linear between the 8/16/32-bit entries, beyond
        them linear in the bits of the nearest entry (an adder's energy grows with its
        width)."""
        return _interpolate(bits, {8: self["int_add_8"], 16: self["int_add_16"],
                                   32: self["int_add_32"]}, power=1.0)

    def int_mul(self, bits):
        """A ``bits`` x ``bits`` integer multiply: the power law through the 8- and 32-bit
        entries (exponent log(3.1 / 0.2) / log 4 = 1.98 with the default table: an array
        multiplier's partial products grow with the square of the width)."""
        low, high = self["int_mul_8"], self["int_mul_32"]
        exponent = math.log(high / low) / math.log(4) if low > 0 and high > 0 else 2.0
        return low * (bits / 8) ** exponent

    def sram_access(self, words, width, write=False):
        """A ``width``-bit access of a ``words`` x ``width`` SRAM: the 64-bit read energy of
        an array of that many bytes, log-log interpolated between the 8 KB, 32 KB and 1 MB
        entries (below 8 KB extrapolated with the 8-32 KB slope), times ``width / 64``
        (bit lines switched); a write is ``sram_write_per_read`` reads."""
        size = words * width / 8
        points = {8 * 1024: self["sram_read_64b_8kb"], 32 * 1024: self["sram_read_64b_32kb"],
                  1024 * 1024: self["sram_read_64b_1mb"]}
        energy = _interpolate_loglog(size, points) * width / 64
        return energy * (self.derivation["sram_write_per_read"] if write else 1.0)

    @property
    def host_byte(self):
        """One byte over the host link: ``host_dram_per_byte`` eighths of a 64-bit DRAM
        access (the host reads what it sends from its DRAM, writes what it receives)."""
        return self["dram_access_64b"] / 8 * self.derivation["host_dram_per_byte"]

    def derived(self, config=None):
        """The derived entries: name -> ``(pJ, derivation)``, for ``config``'s memory and
        accumulator sizes where they depend on them."""
        config = AcceleratorConfig() if config is None else config
        d = self.derivation
        out = {
            "gate": (self.gate, f"int_add_8 / (8 x {d['gates_per_full_adder']:g} gates per "
                                f"full adder)"),
            "xnor_popcount_bit": (self.xnor_popcount_bit, "one XNOR gate + "
                                  f"{d['popcount_full_adders_per_bit']:g} full adder(s) of a "
                                  "carry-save popcount tree"),
            f"int_add_{config.acc_bits}": (self.int_add(config.acc_bits),
                                           f"the {config.acc_bits}-bit accumulator add or "
                                           f"threshold compare"),
            "host_byte": (self.host_byte, f"dram_access_64b / 8 x {d['host_dram_per_byte']:g}"
                                          " (host DRAM read or write; link I/O not included)"),
        }
        for name in config.memories:
            depth, width = config.depth(name), config.lanes(name) * config.word
            out[f"sram_{name}"] = (
                self.sram_access(depth, width),
                f"{depth} x {width} bits = {_kib(depth * width)}: 64-bit read energy "
                f"interpolated log-log in size, x {width}/64")
        for name, dp in DATAPATHS.items():
            out[f"mac_{name}"] = (mac_energy(self, dp, config), dp.derivation)
        return out


def _kib(bits):
    size = bits / 8192
    return f"{size:g} KB"


def _toml_str(text):
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _interpolate(x, points, power=1.0):
    # Piecewise linear through `points` (x -> y); outside, proportional to the nearest
    # point (y ~ x^power).
    xs = sorted(points)
    if x <= xs[0]:
        return points[xs[0]] * (x / xs[0]) ** power
    if x >= xs[-1]:
        return points[xs[-1]] * (x / xs[-1]) ** power
    for lo, hi in zip(xs, xs[1:]):
        if lo <= x <= hi:
            return points[lo] + (points[hi] - points[lo]) * (x - lo) / (hi - lo)
    raise AssertionError(x)


def _interpolate_loglog(x, points):
    # Log-log piecewise linear through `points`; beyond the ends, the end segment's slope.
    xs = sorted(points)
    if any(points[p] <= 0 for p in xs):
        return _interpolate(x, points)
    pairs = list(zip(xs, xs[1:]))
    lo, hi = pairs[0] if x < xs[0] else pairs[-1] if x > xs[-1] else \
        next((lo, hi) for lo, hi in pairs if lo <= x <= hi)
    slope = math.log(points[hi] / points[lo]) / math.log(hi / lo)
    return points[lo] * (x / lo) ** slope


def default_technology():
    """The default 45 nm table (``energy_45nm.toml``, package data)."""
    text = resources.files(__package__).joinpath("energy_45nm.toml").read_text("utf-8")
    return Technology.from_dict(tomllib.loads(text), "energy_45nm.toml")


# Action counts ---------------------------------------------------------------------------

#: Every memory an action may name: :data:`MEMORIES`, a training configuration's latent
#: memory and an argmax unit's rank memory (whose actions count 0 elsewhere).
_ALL_MEMORIES = MEMORIES + ("latent", "rank")


def _memory_actions():
    return tuple(f"{m}_{rw}" for m in _ALL_MEMORIES for rw in ("reads", "writes"))


#: Actions that cost energy: the array's bit operations (a ``word``-bit XNOR and popcount
#: share per PE and beat, counted per bit) and accumulator adds (one per PE and beat), the
#: result stage's threshold compares, memory-word reads and writes per memory, bytes over
#: the host link each way, an ``UPDATE``'s latent weights (``lns_updates``) and a
#: ``STATS``'s channel samples (``stat_updates``); an ``ARGMAX``'s class comparisons are
#: counted as threshold compares.
ACTIONS = ("xnor_bit_ops", "acc_adds", "threshold_compares", *_memory_actions(),
           "host_bytes_in", "host_bytes_out", "lns_updates", "stat_updates")
#: Actions counted for reference, with no energy of their own (their work is in
#: :data:`ACTIONS`): array beats (the status record's ``array_beats``), tiles, the
#: array's MACs (``tiles x rows x cols x words x word``: one per weight element of every
#: PE's tile, padding included; a bit-serial operand's planes are one MAC), instructions.
COUNTED = ("array_beats", "tiles", "array_macs", "instructions")


class Actions(collections.Counter):
    """Counts of actions by name (:data:`ACTIONS` and :data:`COUNTED`); a
    :class:`collections.Counter`, so counts add with ``+`` and missing ones are 0."""

    def __add__(self, other):
        out = Actions(self)
        out.update(other)
        return out

    @classmethod
    def total(cls, counts):
        """The sum of several :class:`Actions` (or dicts of counts)."""
        out = cls()
        for item in counts:
            out.update(item)
        return out


def count_instruction(instr, config):
    """The :class:`Actions` of one instruction (in :func:`lowbit.isa.decode` form) on
    ``config``: its fetch over the host link included, for ``HALT`` also the ``STATUS``
    record."""
    isa = instruction_set(config)
    word_bytes = config.word // 8
    op = instr["opcode"]
    a = Actions(instructions=1, host_bytes_in=isa.bytes)
    regions = isa.regions(instr)
    if op == Opcode.HALT:
        a["host_bytes_out"] += STATUS_BYTES
    elif op == Opcode.LOAD:
        (memory, _, words, _), = regions
        a[f"{memory}_writes"] += words
        a["host_bytes_in"] += isa.link_words(instr) * word_bytes
    elif op == Opcode.STORE:
        (memory, _, words, _), = regions
        a[f"{memory}_reads"] += words
        a["host_bytes_out"] += DATA_HEADER_BYTES + isa.link_words(instr) * word_bytes
    elif op == Opcode.GEMM:
        _count_gemm(instr, config, regions, a)
    elif op == Opcode.UPDATE:
        # A read and a write of each latent word; its signs go into one weight lane,
        # charged as a whole weight-word write (an upper bound).
        count = instr["count"]
        a.update(latent_reads=count, latent_writes=count, weight_writes=count,
                 lns_updates=count * config.word)
        a["host_bytes_in"] += isa.link_words(instr) * word_bytes
    elif op == Opcode.STATS:
        (memory, _, words, _), = regions
        a[f"{memory}_reads"] += words
        a["stat_updates"] += words * config.cols
        a["host_bytes_out"] += DATA_HEADER_BYTES + isa.link_words(instr) * word_bytes
    elif op == Opcode.ARGMAX:
        # A score word per group, a rank word per lane step and a compare per class (an
        # acc_bits-wide comparison, charged as a threshold compare).
        words = instr["samples"] * instr["groups"]
        a["score_reads"] += words
        a["rank_reads"] += words * config.cols
        a["threshold_compares"] += instr["samples"] * min(instr["classes"],
                                                          instr["groups"] * config.cols)
        a["host_bytes_out"] += DATA_HEADER_BYTES + isa.link_words(instr) * word_bytes
    return a


def _count_gemm(instr, config, regions, a):
    # The execute stage runs tile after tile, each planes x words beats; every beat reads
    # one activation word (all rows' lanes) and one weight word (all columns' lanes), so the
    # array re-reads an activation row block once per column tile and a weight column block
    # once per row tile and plane. The result stage reads a tile's T threshold words once
    # and writes what regions() says the GEMM writes.
    rows, cols, word = config.rows, config.cols, config.word
    tiles = instr["m_tiles"] * instr.get("pool", 1) * instr["n_tiles"]
    beats = tiles * instr["planes"] * instr["words"]
    a.update(array_beats=beats, tiles=tiles,
             array_macs=tiles * rows * cols * instr["words"] * word,
             xnor_bit_ops=beats * rows * cols * word, acc_adds=beats * rows * cols,
             weight_reads=beats)
    a[f"{Buffer(instr['a_buffer']).name.lower()}_reads"] += beats
    if instr["mode"] == GemmMode.THRESHOLD:
        count = (1 << instr["out_bits"]) - 1
        a["thresh_reads"] += tiles * count
        a["threshold_compares"] += tiles * rows * cols * count
    for memory, _, words, access in regions:
        if access == "w":
            a[f"{memory}_writes"] += words


def count_program(program):
    """Per-instruction :class:`Actions` of a :class:`~lowbit.program.Program` (a list, one
    per instruction, ``HALT`` included)."""
    if not isinstance(program, Program):
        raise TypeError(f"program must be a Program, not {program!r}")
    return [count_instruction(instr, program.config) for instr in program.instructions]


# Layers ----------------------------------------------------------------------------------

@dataclasses.dataclass
class Layer:
    """A layer of a program: a name, its instruction indices and its precisions
    (``act_bits``: the bit planes of its ``GEMM`` s' activations; ``weight_bits``: 1)."""

    name: str
    instructions: list
    act_bits: object = None
    weight_bits: object = None


def _span(region):
    memory, first, words, _ = region
    return memory, (first, first + words)


def _overlap(a, b):
    return a is not None and b is not None and a[0] < b[1] and b[0] < a[1]


def layers(program):
    """The :class:`Layer` s of ``program``.

    From ``metadata["layers"]`` when the program has it (instructions no layer names form a
    last layer, ``other``; ``ValueError`` for an index outside the program or in two
    layers; a compiled program's preamble, the first ``metadata["preamble"]["instructions"]``
    (its resident weights, an argmax unit's rank table), is left out: it runs once per
    call, not per batch); otherwise from the dataflow: a ``GEMM`` starts a new layer when it has another
    activation memory, plane count, reduction length, mode or output width than the current
    layer's, or reads activations a ``GEMM`` of the current layer wrote. A ``STORE`` belongs
    to the current layer; a ``LOAD`` to the layer of the first later ``GEMM`` that reads
    what it wrote (weights are loaded ahead, while the previous layer computes), else the
    current layer. A program without ``GEMM`` is one layer, ``program``.
    """
    instrs, isa = program.instructions, instruction_set(program.config)
    meta = program.metadata.get("layers") if isinstance(program.metadata, dict) else None
    if meta:
        found = _metadata_layers(meta, len(instrs))
        # The preamble (resident weights, an argmax unit's rank table); older programs
        # name it by their resident weights only.
        resident = program.metadata.get("preamble") or program.metadata.get("resident")
        if isinstance(resident, dict) and resident.get("instructions"):
            # Resident weights: the preamble that loads them runs once per call
            # (lowbit.compiler.run_model), not once per batch: it is no part of an
            # inference.
            for layer in found:
                layer.instructions = [i for i in layer.instructions
                                      if i >= resident["instructions"]]
        return found
    owner = [None] * len(instrs)
    found = []          # (signature, planes)
    produced = None     # act span written by the current layer
    current = None
    for i, instr in enumerate(instrs):
        op = instr["opcode"]
        if op == Opcode.GEMM:
            signature = (instr["a_buffer"], instr["planes"], instr["words"], instr["mode"],
                         instr["out_bits"] if instr["mode"] == GemmMode.THRESHOLD else None)
            regions = isa.regions(instr)
            memory, span = _span(regions[0])
            fresh = memory == "act" and _overlap(span, produced)
            if current is None or found[current][0] != signature or fresh:
                found.append((signature, instr["planes"]))
                current = len(found) - 1
                produced = None
            owner[i] = current
            for region in regions:
                memory, span = _span(region)
                if region[3] == "w" and memory == "act":
                    produced = span if produced is None else (min(produced[0], span[0]),
                                                              max(produced[1], span[1]))
        elif op == Opcode.STORE:
            owner[i] = current
    if not found:
        return [Layer("program", list(range(len(instrs))))]
    for i, instr in enumerate(instrs):
        if instr["opcode"] != Opcode.LOAD:
            continue
        memory, span = _span(isa.regions(instr)[0])
        for j in range(i + 1, len(instrs)):
            if instrs[j]["opcode"] != Opcode.GEMM:
                continue
            if any(r[0] == memory and r[3] == "r" and _overlap(_span(r)[1], span)
                   for r in isa.regions(instrs[j])):
                owner[i] = owner[j]
                break
    # Anything left (a LOAD nobody reads, the HALT, leading instructions): the layer before
    # (the first layer for leading ones).
    last = next(o for o in owner if o is not None)
    for i in range(len(instrs)):
        if owner[i] is None:
            owner[i] = last
        last = owner[i]
    out = [Layer(f"layer {n}", [], planes, 1) for n, (_, planes) in enumerate(found)]
    for i, n in enumerate(owner):
        out[n].instructions.append(i)
    return out


def _metadata_layers(meta, count):
    # metadata["layers"]: [{"name", "instructions": [indices], optional act_bits and
    # weight_bits}]; an index list, not a range, because a compiler interleaves layers (it
    # loads the next layer's weights while this one computes).
    if not isinstance(meta, list):
        raise ValueError("program metadata layers must be a list")
    out, seen = [], set()
    for n, entry in enumerate(meta):
        if not isinstance(entry, dict) or not isinstance(entry.get("instructions"), list):
            raise ValueError(f"program metadata layer {n} must be a dict with an "
                             f"'instructions' list")
        indices = entry["instructions"]
        for i in indices:
            if not isinstance(i, int) or not 0 <= i < count:
                raise ValueError(f"program metadata layer {n} names instruction {i!r}, the "
                                 f"program has {count}")
            if i in seen:
                raise ValueError(f"program metadata puts instruction {i} in two layers")
            seen.add(i)
        out.append(Layer(str(entry.get("name", f"layer {n}")), sorted(indices),
                         entry.get("act_bits"), entry.get("weight_bits")))
    rest = [i for i in range(count) if i not in seen]
    if rest:
        out.append(Layer("other", rest))
    return out


# Energy ----------------------------------------------------------------------------------

#: Components of an estimate, and the actions each one sums.
COMPONENTS = {
    "xnor_array": ("xnor_bit_ops", "acc_adds"),
    "result_stage": ("threshold_compares",),
    **{f"{m}_memory": (f"{m}_reads", f"{m}_writes") for m in _ALL_MEMORIES},
    "host_link": ("host_bytes_in", "host_bytes_out"),
    "lns_update": ("lns_updates",),
    "statistics": ("stat_updates",),
}
#: Which components are compute, memory (on-chip) and host transfer.
KINDS = {"compute": ("xnor_array", "result_stage", "lns_update", "statistics"),
         "memory": tuple(f"{m}_memory" for m in _ALL_MEMORIES), "host": ("host_link",)}


def action_energy(tech, config):
    """Energy per action (pJ) on ``config`` with table ``tech``: action name -> ``(pJ,
    derivation)``. Each memory's word is ``lanes x word`` bits; its access costs an SRAM of
    its depth and width. The :data:`COUNTED` actions cost nothing of their own."""
    word, acc = config.word, config.acc_bits
    e = {}
    for memory in _ALL_MEMORIES:
        if memory not in config.memories:
            e[f"{memory}_reads"] = e[f"{memory}_writes"] = (0.0, "no such memory")
            continue
        depth = config.depth(memory)
        width = config.rank_bits if memory == "rank" else config.lanes(memory) * word
        e[f"{memory}_reads"] = (tech.sram_access(depth, width),
                                f"sram {depth} x {width} bits, read")
        e[f"{memory}_writes"] = (tech.sram_access(depth, width, write=True),
                                 f"sram {depth} x {width} bits, write")
    bits = config.latent_bits
    # The update of one weight: the step's shift and rounding, the code's subtraction and
    # the saturation or zero-crossing compare, each at most a latent_bits-wide add.
    e["lns_updates"] = (3 * tech.int_add(bits), f"3 x int_add({bits}) per latent weight")
    if config.statistics:
        # One channel of a STAT beat: the sum's add and the chunk max and min compares
        # (the unit's statistics-memory word is read and written a beat: charged with it).
        norm = config.norm
        stats_pj = tech.int_add(norm.sum_bits) + 2 * tech.int_add(norm.input_width)
        what = f"int_add({norm.sum_bits}) + 2 x int_add({norm.input_width})"
        if config.norm_groups > 1:   # one group keeps its statistics in a register
            stats_pj += 2 * tech.sram_access(config.norm_groups,
                                             norm.running_stats_layout.size) / config.cols
            what += f" + the statistics word's read and write over {config.cols} channels"
        e["stat_updates"] = (stats_pj, f"{what}, per channel and sample")
    else:
        e["stat_updates"] = (0.0, "no statistics unit")
    e["host_bytes_in"] = e["host_bytes_out"] = (tech.host_byte, "host_byte")
    e["xnor_bit_ops"] = (tech.xnor_popcount_bit, "xnor_popcount_bit")
    e["acc_adds"] = (tech.int_add(acc), f"int_add({acc}) per PE and beat")
    e["threshold_compares"] = (tech.int_add(acc), f"int_add({acc}) per output and threshold")
    for name in COUNTED:
        e[name] = (0.0, "counted for reference; its work is in the other actions")
    return e


@dataclasses.dataclass
class Estimate:
    """The energy of one program run.

    Attributes
    ----------
    program : Program
    batch : int
        Inferences per run (``metadata["batch"] x metadata["batches"]``, each 1 when
        absent).
    per_layer : list of dict
        Per layer: ``name``, ``instructions``, ``act_bits``, ``weight_bits``, ``actions``
        (counts), ``components`` (pJ per :data:`COMPONENTS` entry), ``total_pj`` (per run).
    energy : dict
        Action name -> ``(pJ per action, derivation)``.
    """

    program: Program
    batch: int
    per_layer: list
    energy: dict

    def per_instruction(self):
        """Per instruction: ``index``, ``opcode`` (name) and ``total_pj`` (per run)."""
        out = []
        for index, (instr, counts) in enumerate(zip(self.program.instructions,
                                                    count_program(self.program))):
            _, total = _energy_of(counts, self.energy)
            out.append({"index": index, "opcode": instr["opcode"].name, "total_pj": total})
        return out

    @property
    def total_run_pj(self):
        """Energy of one program run (every layer), pJ."""
        return sum(layer["total_pj"] for layer in self.per_layer)

    @property
    def total_pj(self):
        """Energy per inference, pJ."""
        return self.total_run_pj / self.batch

    def actions(self):
        """Counts of every action over the layers (one run)."""
        return Actions.total(layer["actions"] for layer in self.per_layer)

    def components(self):
        """pJ per component, whole run."""
        out = collections.Counter()
        for layer in self.per_layer:
            out.update(layer["components"])
        return {name: out[name] for name in COMPONENTS}

    def shares(self):
        """Fractions of the total in compute, memory and host transfer."""
        comps, total = self.components(), self.total_run_pj or 1.0
        return {kind: sum(comps[c] for c in names) / total for kind, names in KINDS.items()}


def _energy_of(actions, energy):
    comps = {name: sum(actions[a] * energy[a][0] for a in acts)
             for name, acts in COMPONENTS.items()}
    return comps, sum(comps.values())


def energy_of(actions, config, tech=None):
    """pJ per :data:`COMPONENTS` entry of any counts (``actions``: name -> count) on
    ``config`` with ``tech``."""
    tech = default_technology() if tech is None else tech
    return _energy_of(collections.Counter(actions), action_energy(tech, config))[0]


def _batch(program):
    meta = program.metadata if isinstance(program.metadata, dict) else {}
    batch, batches = meta.get("batch", 1), meta.get("batches", 1)
    for name, value in (("batch", batch), ("batches", batches)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"program metadata {name} must be a positive integer, not "
                             f"{value!r}")
    return batch * batches


def estimate(program, tech=None):
    """The :class:`Estimate` of ``program`` with technology ``tech`` (default table)."""
    tech = default_technology() if tech is None else tech
    counts = count_program(program)
    energy = action_energy(tech, program.config)
    per_layer = []
    for layer in layers(program):
        actions = Actions.total(counts[i] for i in layer.instructions)
        comps, total = _energy_of(actions, energy)
        per_layer.append({"name": layer.name, "instructions": layer.instructions,
                          "act_bits": layer.act_bits, "weight_bits": layer.weight_bits,
                          "actions": dict(actions), "components": comps, "total_pj": total})
    return Estimate(program, _batch(program), per_layer, energy)


# Comparisons -----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Datapath:
    """A MAC datapath to compare: operand bits and how one MAC is costed."""

    name: str
    act_bits: int
    weight_bits: int
    hypothetical: bool
    derivation: str


#: The datapaths :func:`compare` costs the same network's work on.
DATAPATHS = {
    "binary": Datapath("binary", 1, 1, False,
                       "xnor_popcount_bit + 1/word of an accumulator add"),
    "int8": Datapath("int8", 8, 8, True, "int_mul_8 + int_add_32 (hypothetical)"),
    "fp32": Datapath("fp32", 32, 32, True, "fp_mul_32 + fp_add_32 (hypothetical)"),
}


def mac_energy(tech, datapath, config=None):
    """Energy of one MAC on ``datapath`` (a :class:`Datapath` or its name), pJ; a binary
    MAC is one XNOR-popcount bit and a ``1 / word`` share of the accumulator add of its
    PE's beat."""
    config = AcceleratorConfig() if config is None else config
    dp = DATAPATHS[datapath] if isinstance(datapath, str) else datapath
    if dp.name == "fp32":
        return tech["fp_mul_32"] + tech["fp_add_32"]
    if dp.name == "int8":
        return tech["int_mul_8"] + tech["int_add_32"]
    passes = dp.act_bits * dp.weight_bits
    return passes * (tech.xnor_popcount_bit + tech.int_add(config.acc_bits) / config.word)


def _output_energy(tech, dp, energy, count):
    # One output of a THRESHOLD GEMM: an fp32 batch norm folded to x * a + b on fp32, an
    # integer requantisation (16-bit multiply, 32-bit add) on int8, the result stage's
    # count threshold compares on the binary datapath.
    if dp.name == "fp32":
        return tech["fp_mul_32"] + tech["fp_add_32"]
    if dp.name == "int8":
        return tech.int_mul(16) + tech["int_add_32"]
    return count * energy["threshold_compares"][0]


def compare(program, tech=None, datapaths=None):
    """Energy per inference of ``program``'s network on other datapaths: name ->
    ``{"total_pj", "compute_pj", "memory_pj", "host_pj", "hypothetical"}``.

    Every datapath does the array's MACs of each ``GEMM`` (:data:`COUNTED`'s
    ``array_macs``: padding included, so the hypothetical datapaths are charged for the
    padding too) at its own MAC energy (:func:`mac_energy`) and each ``THRESHOLD`` output
    at its own cost (an fp32 batch norm ``x * a + b``, an int8 requantisation, or the
    threshold compares as built). It moves the program's memory words and host bytes with
    the operand traffic scaled to its operand width: activation reads by ``datapath act
    bits / the GEMM's planes``, activation writes by ``act bits / out_bits``, weight reads,
    writes and loads by the weight bits (the core's are 1), input loads by ``act bits /
    the planes of the layer that reads them``; thresholds, scores, instructions and records
    unchanged. fp32 and int8 are hypothetical: lowbit builds no such datapath; their table
    entries cost the same work.
    """
    tech = default_technology() if tech is None else tech
    datapaths = DATAPATHS if datapaths is None else datapaths
    config = program.config
    isa = instruction_set(config)
    est = estimate(program, tech)
    counts = count_program(program)
    energy = est.energy
    out = {}
    for name, dp in datapaths.items():
        compute = memory = host = 0.0
        for layer in layers(program):
            planes = layer.act_bits if isinstance(layer.act_bits, int) and \
                layer.act_bits > 0 else 1
            for i in layer.instructions:
                instr, a = program.instructions[i], counts[i]
                op = instr["opcode"]
                # Scale of each memory action's count on this datapath.
                scale = {"weight_reads": dp.weight_bits, "weight_writes": dp.weight_bits}
                if op == Opcode.GEMM:
                    compute += a["array_macs"] * mac_energy(tech, dp, config)
                    a_name = Buffer(instr["a_buffer"]).name.lower()
                    scale[f"{a_name}_reads"] = dp.act_bits / instr["planes"]
                    if instr["mode"] == GemmMode.THRESHOLD:
                        t = (1 << instr["out_bits"]) - 1
                        outputs = a["threshold_compares"] // t
                        compute += outputs * _output_energy(tech, dp, energy, t)
                        scale["act_writes"] = dp.act_bits / instr["out_bits"]
                elif op == Opcode.LOAD:
                    scale["in_writes"] = dp.act_bits / planes
                for key in _memory_actions():
                    memory += a[key] * energy[key][0] * scale.get(key, 1.0)
                moved = a["host_bytes_in"] + a["host_bytes_out"]
                if op == Opcode.LOAD:
                    # A LOAD's data words cross the link at the datapath's operand width.
                    data = isa.link_words(instr) * config.word // 8
                    key = f"{Buffer(instr['buffer']).name.lower()}_writes"
                    moved += data * (scale.get(key, 1.0) - 1)
                host += moved * tech.host_byte
        total = compute + memory + host
        b = est.batch
        out[name] = {"total_pj": total / b, "compute_pj": compute / b,
                     "memory_pj": memory / b, "host_pj": host / b,
                     "hypothetical": dp.hypothetical}
    return out


def per_inference(program, config=None, tech=None):
    """``(total_pj, fp32_pj)``: the energy per inference of ``program`` on the accelerator
    as built, and of the same network on a hypothetical fp32 datapath (:func:`compare`).
    ``config``, when given, must be the program's configuration."""
    if config is not None and config != program.config:
        raise ValueError("program was built for another accelerator configuration")
    tech = default_technology() if tech is None else tech
    return estimate(program, tech).total_pj, compare(program, tech)["fp32"]["total_pj"]
