"""Energy estimates of accelerator programs (issue 8), Accelergy-style: the energy of a run
is the sum over action types of ``count x energy per action``.

Three parts (``docs/energy.md``):

* a **technology table** (:class:`Technology`): the measured 45 nm entries of
  ``../shared/REFERENCE.md`` section 5 (default file ``energy_45nm.toml``, shipped with the
  package) and the entries lowbit derives from them (:meth:`Technology.derived`), each with
  its derivation;
* **action counts** of a program, from its instructions (:func:`count_instruction`,
  :func:`count_program`). The :data:`ACTIVITY` actions are what the gateware does and are
  also counted on the RTL (:mod:`lowbit.sim.activity`): buffer word reads and writes per
  buffer, beats accepted per unit (``NORM`` by mode), engine starts, host-link bytes. The
  :data:`OPERATIONS` are derived from the same instructions: logical MACs, bit operations
  and accumulator adds of the array, LNS products and dot products, norm-unit values;
* **estimates** (:func:`estimate`): energy per action and per component (compute, buffers,
  host link), per layer, per inference; and **comparisons** (:func:`compare`) of the same
  network's operation counts on other datapaths (binary, bit-serial k-bit, 8-bit LNS, int8,
  fp32), the hypothetical ones costed with their table entries, and of LightNorm's batch
  norm against an fp32 batch norm (:func:`compare_norm`).

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

from .config.accelerator import AcceleratorConfig
from .isa import Buffer, NormMode, Opcode, instruction_set, lns_row_words, row_words
from .program import Program
from .runtime import RECORD_HEADER, STATUS_COUNTERS

__all__ = ["TechError", "Technology", "default_technology", "MEASURED", "PARAMETERS",
           "Actions", "ACTIVITY", "OPERATIONS", "count_instruction", "count_program",
           "Layer", "layers", "action_energy", "energy_of", "COMPONENTS", "KINDS",
           "Estimate", "estimate", "DATAPATHS", "Datapath", "compare", "compare_norm",
           "per_inference", "mac_energy"]

#: The measured entries every technology file must give, in pJ.
MEASURED = ("int_add_8", "int_add_16", "int_add_32", "int_mul_8", "int_mul_32",
            "fp_add_16", "fp_add_32", "fp_mul_16", "fp_mul_32", "sram_read_64b_8kb",
            "sram_read_64b_32kb", "sram_read_64b_1mb", "dram_access_64b")
#: The derivation parameters every technology file must give.
PARAMETERS = ("gates_per_full_adder", "popcount_full_adders_per_bit", "sram_write_per_read",
              "host_dram_per_byte")
_TEXT = ("name", "source")

#: Bytes of a ``STATUS`` record: its header and four u32 counters (``docs/host_link.md``).
STATUS_RECORD = RECORD_HEADER + 4 * len(STATUS_COUNTERS)


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

    def bfp_mul(self, mantissa, exponent):
        """A BFP multiply: an ``mantissa``-bit integer multiply and an ``exponent``-bit
        exponent add."""
        return self.int_mul(mantissa) + self.int_add(exponent)

    def bfp_add(self, width, mantissa):
        """A BFP add into a ``width``-bit accumulator: the add and an alignment shift of a
        ``mantissa``-bit operand (a barrel shifter of ``log2(width)`` levels of
        ``mantissa`` two-gate multiplexers)."""
        return self.int_add(width) + 2 * self.gate * mantissa * math.ceil(math.log2(width))

    def lns_product(self, code_bits, acc_width, gamma):
        """One LNS-Madam product and partial sum: a ``code_bits + 1``-bit exponent add, a
        sign XOR, the decode of ``1 << q`` (one gate per accumulator bit), the selection of
        ``acc[r]`` (a ``gamma``-way multiplexer per bit: ``gamma - 1`` two-gate muxes)
        and an ``acc_width``-bit add."""
        return (self.int_add(code_bits + 1) + self.gate
                + self.gate * acc_width * (1 + 2 * (gamma - 1) / max(gamma, 1))
                + self.int_add(acc_width))

    def lns_dot(self, gamma, lut_width, acc_width, total_width):
        """The per-dot-product finish of LNS-Madam: ``gamma`` LUT reads (``lut_width``
        bits, one gate each) and constant multiplies ``acc[r] * LUT[r]`` (costed as a
        multiply of the geometric-mean width) added into a ``total_width``-bit total."""
        width = math.sqrt(lut_width * acc_width)
        return gamma * (self.gate * lut_width + self.int_mul(width) + self.int_add(total_width))

    def derived(self, config=None):
        """The derived entries: name -> ``(pJ, derivation)``, for ``config``'s buffer and
        unit sizes where they depend on them."""
        config = AcceleratorConfig() if config is None else config
        d = self.derivation
        out = {
            "gate": (self.gate, f"int_add_8 / (8 x {d['gates_per_full_adder']:g} gates per "
                                f"full adder)"),
            "xnor_popcount_bit": (self.xnor_popcount_bit, "one XNOR/AND gate + "
                                  f"{d['popcount_full_adders_per_bit']:g} full adder(s) of a "
                                  "carry-save popcount tree"),
            "host_byte": (self.host_byte, f"dram_access_64b / 8 x {d['host_dram_per_byte']:g}"
                                          " (host DRAM read or write; link I/O not included)"),
        }
        for name, words in config.buffer_words.items():
            out[f"sram_{name}_{config.word}b"] = (
                self.sram_access(words, config.word),
                f"{words} x {config.word} bits = {words * config.word // 8192} KB: 64-bit read "
                f"energy interpolated log-log in size, x {config.word}/64")
        norm = config.lightnorm
        out["bfp_mul"] = (self.bfp_mul(norm.mantissa, norm.exponent),
                          f"int_mul({norm.mantissa}) + int_add({norm.exponent})")
        out["bfp_add"] = (self.bfp_add(norm.acc_width, norm.mantissa),
                          f"int_add({norm.acc_width}) + alignment shifter")
        lns = config.lns_mac
        out["lns_product"] = (
            self.lns_product(lns.code_bits, lns.accumulator_width, lns.gamma),
            f"int_add({lns.code_bits + 1}) exponent add + sign XOR + decode and acc[r] "
            f"select + int_add({lns.accumulator_width})")
        out["lns_dot"] = (self.lns_dot(lns.gamma, lns.lut_width, lns.accumulator_width,
                                       lns.total_width),
                          f"{lns.gamma} x (LUT read + constant multiply + "
                          f"int_add({lns.total_width})), once per dot product")
        for name, dp in DATAPATHS.items():
            out[f"mac_{name}"] = (mac_energy(self, dp, config), dp.derivation)
        return out


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

#: Actions the gateware performs, counted both from a program (:func:`count_instruction`)
#: and on the RTL (:mod:`lowbit.sim.activity`); the two must agree.
ACTIVITY = tuple(
    [f"{b}_{rw}" for b in ("act", "weight", "out") for rw in ("reads", "writes")]
    + ["xnor_beats", "lns_beats"] + [f"norm_beats_{m.name.lower()}" for m in NormMode]
    + [f"engine_starts_{op.name.lower()}" for op in
       (Opcode.GEMM_XNOR, Opcode.GEMM_LNS, Opcode.NORM, Opcode.MAXPOOL)]
    + ["host_bytes_in", "host_bytes_out"])

#: Operations derived from the instructions (not probed on the RTL): logical MACs (``m n
#: k``), bit-plane passes (tiles x plane pairs; 1 per tile when binary), the array's bit
#: operations (``beats x rows x cols x word``: every PE works on every
#: beat, padding and idle PEs of partial tiles included) and accumulator adds, LNS products
#: (``beats x lanes``) and dot products, norm-unit values by mode and parameter beats,
#: max-pool word ORs.
OPERATIONS = ("xnor_macs", "xnor_passes", "xnor_bit_ops", "xnor_acc_adds", "lns_macs",
              "lns_products",
              "lns_dots") + tuple(f"norm_values_{m.name.lower()}" for m in NormMode) + (
              "norm_param_beats", "maxpool_words")


class Actions(collections.Counter):
    """Counts of actions by name (:data:`ACTIVITY` and :data:`OPERATIONS`); a
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

    def activity(self):
        """Only the :data:`ACTIVITY` counts, every one present (zeros included)."""
        return {name: int(self[name]) for name in ACTIVITY}


def count_instruction(instr, config):
    """The :class:`Actions` of one instruction (in :func:`lowbit.isa.decode` form) on
    ``config``, its fetch included (``HALT``: and the ``STATUS`` record)."""
    isa = instruction_set(config)
    word, word_bytes = config.word, config.word // 8
    op = instr["opcode"]
    a = Actions()
    a["host_bytes_in"] += isa.bytes
    if op == Opcode.HALT:
        a["host_bytes_out"] += STATUS_RECORD
    elif op == Opcode.LOAD:
        buffer = Buffer(instr["buffer"]).name.lower()
        a[f"{buffer}_writes"] += instr["count"]
        a["host_bytes_in"] += instr["count"] * word_bytes
    elif op == Opcode.STORE:
        buffer = Buffer(instr["buffer"]).name.lower()
        a[f"{buffer}_reads"] += instr["count"]
        a["host_bytes_out"] += RECORD_HEADER + instr["count"] * word_bytes
    elif op == Opcode.GEMM_XNOR:
        _count_gemm_xnor(instr, config, a)
    elif op == Opcode.GEMM_LNS:
        lns = config.lns_mac
        m, n, k = instr["m"], instr["n"], instr["k"]
        row = lns_row_words(k, lns.bits, word)
        beats = m * n * -(-k // lns.lanes)
        a.update(engine_starts_gemm_lns=1, act_reads=m * n * row, weight_reads=m * n * row,
                 out_writes=m * n, lns_beats=beats, lns_macs=m * n * k,
                 lns_products=beats * lns.lanes, lns_dots=m * n)
    elif op == Opcode.NORM:
        norm, mode = config.lightnorm, NormMode(instr["mode"])
        rows, channels = instr["rows"], instr["channels"]
        groups = -(-channels // norm.block)
        name = mode.name.lower()
        a.update(engine_starts_norm=1, out_reads=rows * channels)
        a[f"norm_values_{name}"] += rows * channels
        if mode == NormMode.STATISTICS:
            a.update(out_writes=2 * channels, **{f"norm_beats_{name}": rows * groups})
        else:
            a.update(weight_reads=isa.norm_param_words(mode, channels),
                     act_writes=rows * isa.norm_dst_words(mode, channels),
                     norm_param_beats=groups,
                     **{f"norm_beats_{name}": rows * groups + groups})
    elif op == Opcode.MAXPOOL:
        words = instr["rows"] * instr["window"] * instr["row_words"]
        a.update(engine_starts_maxpool=1, act_reads=words,
                 act_writes=instr["rows"] * instr["row_words"], maxpool_words=words)
    return a


def _count_gemm_xnor(instr, config, a):
    # The engine walks XNORArray.schedule: per tile, every bit-plane pair over every word of
    # the row (a binary operand has a made, not stored, all-ones second plane); each beat
    # gathers one word per tile row and column present (partial tiles read fewer).
    array = config.xnor_array
    m, n, k = instr["m"], instr["n"], instr["k"]
    ab, wb = instr["act_bits"], instr["weight_bits"]
    words = -(-k // config.word)
    if ab == wb == 1:
        planes_a = planes_w = 1
        pairs = 1
    else:
        na, nb = (2 if ab == 1 else ab), (2 if wb == 1 else wb)
        pairs = na * nb
        planes_a = pairs // 2 if ab == 1 else pairs
        planes_w = pairs // 2 if wb == 1 else pairs
    row_tiles, col_tiles = -(-m // array.rows), -(-n // array.cols)
    beats = row_tiles * col_tiles * pairs * words
    a.update(engine_starts_gemm_xnor=1, xnor_beats=beats,
             xnor_passes=row_tiles * col_tiles * pairs,
             act_reads=planes_a * words * m * col_tiles,
             weight_reads=planes_w * words * n * row_tiles, out_writes=m * n,
             xnor_macs=m * n * k, xnor_bit_ops=beats * array.rows * array.cols * config.word,
             xnor_acc_adds=beats * array.rows * array.cols)


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
    (``act_bits``, ``weight_bits`` of its GEMMs; LNS: ``"lns"``)."""

    name: str
    instructions: list
    act_bits: object = None
    weight_bits: object = None


def _regions(instr, config):
    # Buffer regions (buffer name -> (lo, hi)) an instruction reads and writes.
    isa, word = instruction_set(config), config.word
    op = instr["opcode"]

    def hull(addr, rows, row, stride):
        return addr, addr + (rows - 1) * stride + row

    reads, writes = {}, {}
    if op in (Opcode.GEMM_XNOR, Opcode.GEMM_LNS):
        k = instr["k"]
        if op == Opcode.GEMM_XNOR:
            a_row = row_words(k, instr["act_bits"], word)
            b_row = row_words(k, instr["weight_bits"], word)
        else:
            a_row = b_row = lns_row_words(k, config.lns_mac.bits, word)
        reads["act"] = hull(instr["a_addr"], instr["m"], a_row, instr["a_stride"])
        reads["weight"] = hull(instr["b_addr"], instr["n"], b_row, instr["b_stride"])
        writes["out"] = hull(instr["c_addr"], instr["m"], instr["n"], instr["c_stride"])
    elif op == Opcode.NORM:
        mode = NormMode(instr["mode"])
        dst = "out" if mode == NormMode.STATISTICS else "act"
        rows = 2 if mode == NormMode.STATISTICS else instr["rows"]
        writes[dst] = hull(instr["dst_addr"], rows,
                           isa.norm_dst_words(mode, instr["channels"]), instr["dst_stride"])
    elif op == Opcode.MAXPOOL:
        writes["act"] = (instr["dst_addr"], instr["dst_addr"] + instr["rows"]
                         * instr["row_words"])
    elif op == Opcode.LOAD:
        writes[Buffer(instr["buffer"]).name.lower()] = (instr["addr"],
                                                        instr["addr"] + instr["count"])
    return reads, writes


def _overlap(a, b):
    return a is not None and b is not None and a[0] < b[1] and b[0] < a[1]


def layers(program):
    """The :class:`Layer` s of ``program``.

    From ``metadata["layers"]`` when the program has it (instructions no layer names form a
    last layer, ``other``; ``ValueError`` for an index outside the program or in two
    layers; a compiled program's resident-weight preamble, ``metadata["resident"]``, is
    left out: it runs once per call, not per batch); otherwise from the dataflow: a
    ``GEMM`` starts a new layer when it has another reduction length or precision than the
    current layer's, or reads activations that a ``NORM`` or ``MAXPOOL`` of the current
    layer wrote. ``NORM``, ``MAXPOOL`` and ``STORE`` belong to the current layer; a ``LOAD``
    to the layer of the first later compute instruction that reads what it wrote (the
    compiler loads a chunk's weights ahead, during the previous chunk), else the current
    layer. A program without compute instructions is one layer, ``program``.
    """
    instrs, config = program.instructions, program.config
    meta = program.metadata.get("layers") if isinstance(program.metadata, dict) else None
    if meta:
        found = _metadata_layers(meta, len(instrs))
        resident = program.metadata.get("resident")
        if resident:
            # Resident weights: the preamble that loads them runs once per call, not once
            # per batch (lowbit.compiler.run_model); it is not part of an inference.
            for layer in found:
                layer.instructions = [i for i in layer.instructions
                                      if i >= resident["instructions"]]
        return found
    owner = [None] * len(instrs)
    found = []  # (signature, precisions)
    produced = {}
    current = None
    for i, instr in enumerate(instrs):
        op = instr["opcode"]
        if op in (Opcode.GEMM_XNOR, Opcode.GEMM_LNS):
            if op == Opcode.GEMM_XNOR:
                bits = (instr["act_bits"], instr["weight_bits"])
            else:
                bits = ("lns", "lns")
            signature = (op, instr["k"], bits)
            reads, _ = _regions(instr, config)
            fresh = _overlap(reads.get("act"), produced.get("act"))
            if current is None or found[current][0] != signature or fresh:
                found.append((signature, bits))
                current = len(found) - 1
                produced = {}
            owner[i] = current
        elif op in (Opcode.NORM, Opcode.MAXPOOL, Opcode.STORE):
            owner[i] = current
            _, writes = _regions(instr, config)
            for buffer, span in writes.items():
                old = produced.get(buffer)
                produced[buffer] = span if old is None else (min(old[0], span[0]),
                                                             max(old[1], span[1]))
    if not found:
        return [Layer("program", list(range(len(instrs))))]
    # LOADs: to the first later compute instruction reading their region.
    for i, instr in enumerate(instrs):
        if instr["opcode"] != Opcode.LOAD:
            continue
        _, writes = _regions(instr, config)
        (buffer, span), = writes.items()
        for j in range(i + 1, len(instrs)):
            other = instrs[j]
            if other["opcode"] in (Opcode.GEMM_XNOR, Opcode.GEMM_LNS, Opcode.NORM,
                                   Opcode.MAXPOOL):
                reads, _ = _regions(other, config)
                if other["opcode"] == Opcode.NORM:
                    reads = _norm_reads(other, config)
                elif other["opcode"] == Opcode.MAXPOOL:
                    reads = {"act": (other["src_addr"], other["src_addr"] + other["rows"]
                                     * other["window"] * other["row_words"])}
                if _overlap(reads.get(buffer), span):
                    owner[i] = owner[j]
                    break
    # Anything left (a LOAD nobody reads, the HALT, leading instructions): the layer before
    # (the first layer for leading ones).
    last = 0
    for i in range(len(instrs)):
        if owner[i] is None:
            owner[i] = last
        last = owner[i]
    out = [Layer(f"layer {n}", [], *bits) for n, (_, bits) in enumerate(found)]
    for i, n in enumerate(owner):
        out[n].instructions.append(i)
    return out


def _metadata_layers(meta, count):
    # metadata["layers"]: [{"name", "instructions": [indices], optional act_bits and
    # weight_bits}]; an index list, not a range, because a compiler interleaves layers (it
    # loads the next layer's weights while this one computes).
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


def _norm_reads(instr, config):
    isa = instruction_set(config)
    mode = NormMode(instr["mode"])
    reads = {"out": (instr["src_addr"], instr["src_addr"] + (instr["rows"] - 1)
                     * instr["src_stride"] + instr["channels"])}
    if mode != NormMode.STATISTICS:
        reads["weight"] = (instr["param_addr"], instr["param_addr"]
                           + isa.norm_param_words(mode, instr["channels"]))
    return reads


# Energy ----------------------------------------------------------------------------------

#: Components of an estimate, and the actions each one sums.
COMPONENTS = {
    "xnor_array": ("xnor_bit_ops", "xnor_acc_adds"),
    "lns_mac": ("lns_products", "lns_dots"),
    "norm": tuple(f"norm_values_{m.name.lower()}" for m in NormMode) + ("norm_param_beats",),
    "maxpool": ("maxpool_words",),
    "act_buffer": ("act_reads", "act_writes"),
    "weight_buffer": ("weight_reads", "weight_writes"),
    "out_buffer": ("out_reads", "out_writes"),
    "host_link": ("host_bytes_in", "host_bytes_out"),
}
#: Which components are compute, memory (on-chip buffers) and host transfer.
KINDS = {"compute": ("xnor_array", "lns_mac", "norm", "maxpool"),
         "memory": ("act_buffer", "weight_buffer", "out_buffer"), "host": ("host_link",)}


def action_energy(tech, config):
    """Energy per action (pJ) on ``config`` with table ``tech``: action name -> ``(pJ,
    derivation)``. The beat and engine-start counts of :data:`ACTIVITY` have no energy of
    their own: their work is in the :data:`OPERATIONS`."""
    word, array, norm, lns = config.word, config.xnor_array, config.lightnorm, config.lns_mac
    e = {}
    for buffer, words in config.buffer_words.items():
        e[f"{buffer}_reads"] = (tech.sram_access(words, word),
                                f"sram {words} x {word} bits, read")
        e[f"{buffer}_writes"] = (tech.sram_access(words, word, write=True),
                                 f"sram {words} x {word} bits, write")
    e["host_bytes_in"] = e["host_bytes_out"] = (tech.host_byte, "host_byte")
    e["xnor_bit_ops"] = (tech.xnor_popcount_bit, "xnor_popcount_bit")
    e["xnor_acc_adds"] = (tech.int_add(array.accumulator_width),
                          f"int_add({array.accumulator_width}) per PE and beat")
    e["lns_products"] = (tech.lns_product(lns.code_bits, lns.accumulator_width, lns.gamma),
                         "lns_product")
    e["lns_dots"] = (tech.lns_dot(lns.gamma, lns.lut_width, lns.accumulator_width,
                                  lns.total_width), "lns_dot")
    compare = tech.int_add(norm.threshold_bits)
    e["norm_values_threshold"] = e["norm_values_requantise"] = (
        norm.thresholds * compare, f"{norm.thresholds} x int_add({norm.threshold_bits}) "
        f"threshold compares per value")
    e["norm_values_normalise"] = (tech.bfp_mul(norm.mantissa, norm.exponent)
                                  + tech.bfp_add(norm.acc_width, norm.mantissa),
                                  "bfp_mul + bfp_add per value (scale, offset)")
    e["norm_values_statistics"] = (tech.int_add(norm.sum_bits)
                                   + 2 * tech.int_add(norm.input_width),
                                   f"int_add({norm.sum_bits}) sum + 2 x "
                                   f"int_add({norm.input_width}) max/min compares")
    param_bits = norm.block * (norm.thresholds * norm.threshold_bits + 1)
    e["norm_param_beats"] = (tech.gate * param_bits,
                             f"{param_bits} parameter register bits, a gate each")
    e["maxpool_words"] = (tech.gate * word, f"{word} OR gates")
    for name in ACTIVITY:
        e.setdefault(name, (0.0, "counted for checking; its work is in the operations"))
    return e


@dataclasses.dataclass
class Estimate:
    """The energy of one program run.

    Attributes
    ----------
    program : Program
    batch : int
        Inferences per run (``metadata["batch"]``, else 1).
    per_layer : list of dict
        Per layer: ``name``, ``instructions``, ``actions`` (counts), ``components`` (pJ
        per :data:`COMPONENTS` entry), ``total_pj`` (per run).
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

    def components(self):
        """pJ per component, whole run."""
        out = collections.Counter()
        for layer in self.per_layer:
            out.update(layer["components"])
        return {name: out[name] for name in COMPONENTS}

    def shares(self):
        """Fractions of the total in compute, memory (buffers) and host transfer."""
        comps, total = self.components(), self.total_run_pj or 1.0
        return {kind: sum(comps[c] for c in names) / total for kind, names in KINDS.items()}


def _energy_of(actions, energy):
    comps = {name: sum(actions[a] * energy[a][0] for a in acts)
             for name, acts in COMPONENTS.items()}
    return comps, sum(comps.values())


def energy_of(actions, config, tech=None):
    """pJ per :data:`COMPONENTS` entry of any counts (``actions``: name -> count), on
    ``config`` with ``tech``: for instance the operations counted from a program with the
    activity measured on the RTL (:mod:`lowbit.sim.activity`)."""
    tech = default_technology() if tech is None else tech
    return _energy_of(collections.Counter(actions), action_energy(tech, config))[0]


def estimate(program, tech=None):
    """The :class:`Estimate` of ``program`` with technology ``tech`` (default table)."""
    tech = default_technology() if tech is None else tech
    config = program.config
    counts = count_program(program)
    energy = action_energy(tech, config)
    per_layer = []
    for layer in layers(program):
        actions = Actions()
        for i in layer.instructions:
            actions.update(counts[i])
        comps, total = _energy_of(actions, energy)
        per_layer.append({"name": layer.name, "instructions": layer.instructions,
                          "act_bits": layer.act_bits, "weight_bits": layer.weight_bits,
                          "actions": dict(actions), "components": comps, "total_pj": total})
    batch = program.metadata.get("batch", 1) if isinstance(program.metadata, dict) else 1
    return Estimate(program, int(batch), per_layer, energy)


# Comparisons -----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Datapath:
    """A MAC datapath to compare: operand bits and how one MAC is costed."""

    name: str
    act_bits: int
    weight_bits: int
    hypothetical: bool
    derivation: str


#: The datapaths :func:`compare` costs the same network's operations on.
DATAPATHS = {
    "binary": Datapath("binary", 1, 1, False, "xnor_popcount_bit + accumulator add share"),
    "bitserial2": Datapath("bitserial2", 2, 2, False,
                           "4 AND-popcount passes + accumulator add share per pass"),
    "bitserial4": Datapath("bitserial4", 4, 4, False,
                           "16 AND-popcount passes + accumulator add share per pass"),
    "lns8": Datapath("lns8", 8, 8, False, "lns_product + lns_dot share"),
    "int8": Datapath("int8", 8, 8, True, "int_mul_8 + int_add(32) (hypothetical)"),
    "fp32": Datapath("fp32", 32, 32, True, "fp_mul_32 + fp_add_32 (hypothetical)"),
}


def mac_energy(tech, datapath, config=None, k=256):
    """Energy of one MAC on ``datapath`` (a :class:`Datapath` or its name), pJ: the
    per-dot-product finish (LNS) and the array's accumulator add (one per ``word`` bits
    of a pass) shared over ``k`` and ``word`` MACs."""
    config = AcceleratorConfig() if config is None else config
    dp = DATAPATHS[datapath] if isinstance(datapath, str) else datapath
    word, array, lns = config.word, config.xnor_array, config.lns_mac
    if dp.name == "fp32":
        return tech["fp_mul_32"] + tech["fp_add_32"]
    if dp.name == "int8":
        return tech["int_mul_8"] + tech["int_add_32"]
    if dp.name == "lns8":
        return (tech.lns_product(lns.code_bits, lns.accumulator_width, lns.gamma)
                + tech.lns_dot(lns.gamma, lns.lut_width, lns.accumulator_width,
                               lns.total_width) / k)
    passes = dp.act_bits * dp.weight_bits
    return passes * (tech.xnor_popcount_bit + tech.int_add(array.accumulator_width) / word)


def _datapath_norm(tech, dp, config, mode):
    # Energy per norm value on a datapath: fp32 batch norm (inference: x * a + b, folded),
    # int8 requantisation (16-bit multiply, 32-bit add), else the norm unit as built.
    if dp.name == "fp32":
        return tech["fp_mul_32"] + tech["fp_add_32"]
    if dp.name == "int8":
        return tech.int_mul(16) + tech["int_add_32"]
    return action_energy(tech, config)[f"norm_values_{mode}"][0]


def compare(program, tech=None, datapaths=None):
    """Energy per inference of ``program``'s network on other datapaths: name ->
    ``{"total_pj", "compute_pj", "memory_pj", "host_pj", "hypothetical"}``.

    Every datapath does the program's logical MACs (``m n k`` per GEMM) at its own MAC
    energy (:func:`mac_energy`), and moves the program's buffer words and host bytes with
    the operand traffic scaled to its operand width: activation-buffer traffic and input
    loads by ``datapath act bits / the layer's act bits``, weight-buffer traffic and weight
    loads by the weight bits likewise (threshold parameters scale with them: a slight
    overestimate), output-buffer traffic, results and instructions unchanged (32-bit
    accumulators in every datapath). Norm values cost an fp32 batch norm on ``fp32``, an
    integer requantisation on ``int8`` and the norm unit as built on the others. fp32 and
    int8 are hypothetical: lowbit builds no such datapath, their table entries cost the same
    operation counts.
    """
    tech = default_technology() if tech is None else tech
    datapaths = DATAPATHS if datapaths is None else datapaths
    config = program.config
    est = estimate(program, tech)
    counts = count_program(program)
    energy = est.energy
    out = {}
    for name, dp in datapaths.items():
        compute = memory = host = 0.0
        for layer in layers(program):
            ab, wb = layer.act_bits, layer.weight_bits
            ab = 8 if ab == "lns" else (ab or dp.act_bits)
            wb = 8 if wb == "lns" else (wb or dp.weight_bits)
            sa, sw = dp.act_bits / ab, dp.weight_bits / wb
            for i in layer.instructions:
                instr, a = program.instructions[i], counts[i]
                op = instr["opcode"]
                macs = a["xnor_macs"] + a["lns_macs"]
                compute += macs * mac_energy(tech, dp, config, k=instr.get("k", 256))
                for mode in NormMode:
                    values = a[f"norm_values_{mode.name.lower()}"]
                    compute += values * _datapath_norm(tech, dp, config, mode.name.lower())
                compute += a["maxpool_words"] * energy["maxpool_words"][0] * sa
                scale = {"act": sa, "weight": sw, "out": 1.0}
                if op == Opcode.NORM:
                    # Parameters stay one word each; the outputs are the next activations.
                    scale["weight"] = 1.0
                    scale["act"] = dp.act_bits / config.lightnorm.levels
                for buffer in ("act", "weight", "out"):
                    for rw in ("reads", "writes"):
                        key = f"{buffer}_{rw}"
                        memory += a[key] * energy[key][0] * scale[buffer]
                moved = a["host_bytes_in"] + a["host_bytes_out"]
                if op == Opcode.LOAD:
                    # A LOAD's data words cross the link at the datapath's operand width.
                    data = instr["count"] * config.word // 8
                    moved += data * (scale[Buffer(instr["buffer"]).name.lower()] - 1)
                host += moved * tech.host_byte
        total = compute + memory + host
        out[name] = {"total_pj": total / est.batch, "compute_pj": compute / est.batch,
                     "memory_pj": memory / est.batch, "host_pj": host / est.batch,
                     "hypothetical": dp.hypothetical}
    return out


def compare_norm(program, tech=None):
    """The program's batch-norm work on LightNorm's BFP range batch norm and on an fp32
    batch norm, per inference (pJ): ``{"values", "as_built_pj", "lightnorm_bfp_pj",
    "fp32_pj", "lightnorm_statistics_pj", "fp32_statistics_pj"}``.

    ``values`` are the norm unit's inputs (rows x channels of every ``NORM``). Applying:
    as built (the program's modes), LightNorm BFP (``bfp_mul + bfp_add`` per value), fp32
    batch norm folded to ``x * a + b`` (``fp_mul_32 + fp_add_32``). Statistics of the same
    values: range batch norm (a sum add and two max/min compares per value, integer) and
    fp32 batch norm (``fp_add_32`` for the sum, ``fp_mul_32 + fp_add_32`` for the sum of
    squares; the per-channel square root and division are left out of both).
    """
    tech = default_technology() if tech is None else tech
    config, est = program.config, estimate(program, tech)
    energy = action_energy(tech, config)
    values = as_built = 0
    for a in count_program(program):
        for mode in NormMode:
            key = f"norm_values_{mode.name.lower()}"
            values += a[key]
            as_built += a[key] * energy[key][0]
    b = est.batch
    fp_stats = tech["fp_add_32"] * 2 + tech["fp_mul_32"]
    return {"values": values / b, "as_built_pj": as_built / b,
            "lightnorm_bfp_pj": values * energy["norm_values_normalise"][0] / b,
            "fp32_pj": values * (tech["fp_mul_32"] + tech["fp_add_32"]) / b,
            "lightnorm_statistics_pj": values * energy["norm_values_statistics"][0] / b,
            "fp32_statistics_pj": values * fp_stats / b}


def per_inference(program, config=None, tech=None):
    """``(total_pj, fp32_pj)``: the energy per inference of ``program`` on the accelerator
    as built, and of the same network on a hypothetical fp32 datapath (:func:`compare`).
    ``config``, when given, must be the program's configuration."""
    if config is not None and config != program.config:
        raise ValueError("program was built for another accelerator configuration")
    tech = default_technology() if tech is None else tech
    return estimate(program, tech).total_pj, compare(program, tech)["fp32"]["total_pj"]
