"""The accelerator configuration and the instruction set: round trips over every opcode,
bit positions taken from the layouts, regions, exact error messages and their status
codes, and the host-link record layouts."""

import io
import json
import re
import tokenize
from pathlib import Path

import numpy as np
import pytest

from lowbit import program as program_module
from lowbit import races as races_module
from lowbit import runtime as runtime_module
from lowbit.config.accelerator import AcceleratorConfig
from lowbit.config.xnor_array import XNORArrayConfig
from lowbit.isa import (DATA_HEADER, LOAD_BUFFERS, NO_WAIT, STATUS_COUNTERS, STATUS_RECORD,
                        STORE_BUFFERS, Buffer, GemmMode, InstructionError, InstructionSet,
                        Opcode, Record, Source, Status, decode, encode, instruction_set)

DEFAULT = AcceleratorConfig()
# Small memories of different depths, a narrow array, a 16-bit link.
SMALL = AcceleratorConfig(
    xnor_array=XNORArrayConfig(rows=2, cols=4, word=16, max_k=100, max_act_bits=4,
                               max_weight_bits=1, pipeline=1),
    max_out_bits=3, in_depth=32, act_depth=64, weight_depth=128, thresh_depth=16,
    score_depth=8, queue_depth=2, host_link_bits=16)
# A 64-bit word, a 32-bit link, one-plane activations, 4-bit outputs.
WIDE = AcceleratorConfig(
    xnor_array=XNORArrayConfig(rows=4, cols=64, word=64, max_k=512, max_act_bits=1,
                               max_weight_bits=1),
    max_out_bits=4, host_link_bits=32, weight_single_port=True)
# A training configuration: a latent memory of 6-bit LNS words and UPDATE.
TRAIN = SMALL.replace(latent_depth=256, latent_bits=6)
# Every opcode: a latent memory and a statistics unit.
FULL = DEFAULT.replace(latent_depth=256, latent_bits=6, norm_channels=64, norm_chunks=4,
                      rank_depth=512)
CONFIGS = [DEFAULT, SMALL, WIDE, TRAIN, FULL]
IDS = ["default", "small", "wide", "train", "full"]


def update(**changes):
    instr = dict(opcode="UPDATE", source="INPUT", lat_addr=0, w_addr=0, count=4, grad_bits=8,
                 lr_exponent=3, unread=NO_WAIT, unwritten=NO_WAIT)
    instr.update(changes)
    return instr


def load(**changes):
    instr = dict(opcode="LOAD", buffer="IN", source="INPUT", addr=0, count=4,
                 unread=NO_WAIT, unwritten=NO_WAIT)
    instr.update(changes)
    return instr


def store(**changes):
    instr = dict(opcode="STORE", buffer="SCORE", addr=0, count=4, unwritten=0)
    instr.update(changes)
    return instr


def gemm(**changes):
    instr = dict(opcode="GEMM", a_buffer="IN", a_addr=0, b_addr=0, planes=1, words=2,
                 m_tiles=2, n_tiles=3, pool=1, mode="THRESHOLD", out_bits=2, dst_addr=0,
                 thr_addr=0, sync=0, unsent=NO_WAIT)
    instr.update(changes)
    return instr


HALT = dict(opcode="HALT", status=0)


# AcceleratorConfig ------------------------------------------------------------------------


def test_config_derived_quantities():
    c = DEFAULT
    assert (c.rows, c.cols, c.word) == (8, 8, 32)
    assert c.max_words == 2048 // 32
    # The largest accumulator: (2^8 - 1) * 64 words * 32 bits = 522240 < 2^19.
    assert c.acc_bits == 19 and c.never == 2 ** 19 - 1
    assert c.max_thresholds == 3
    assert [c.lanes(m) for m in ("in", "act", "weight", "thresh", "score")] == \
        [8, 8, 8, 8, 8]
    assert [SMALL.lanes(m) for m in ("in", "act", "weight", "thresh", "score")] == \
        [2, 2, 4, 4, 4]
    assert SMALL.flat_words("act") == 64 * 2 and SMALL.flat_words("weight") == 128 * 4
    assert SMALL.depth("thresh") == 16
    assert c.macs == 8 * 8 * 32


@pytest.mark.parametrize("changes, error, message", [
    (dict(xnor_array={"rows": 4}), TypeError,
     "AcceleratorConfig xnor_array must be a XNORArrayConfig, not {'rows': 4}"),
    (dict(xnor_array=XNORArrayConfig(max_weight_bits=2)), ValueError,
     "AcceleratorConfig needs +-1 weights: xnor_array.max_weight_bits must be 1, not 2"),
    (dict(xnor_array=XNORArrayConfig(word=12, max_weight_bits=1)), ValueError,
     "AcceleratorConfig xnor_array.word must be 8, 16, 32 or 64, not 12"),
    (dict(xnor_array=XNORArrayConfig(cols=3, max_weight_bits=1)), ValueError,
     "AcceleratorConfig xnor_array.cols 3 must be a power of two no larger than the word "
     "(32): a tile's outputs fill whole fields of an activation word"),
    (dict(xnor_array=XNORArrayConfig(cols=64, max_weight_bits=1)), ValueError,
     "AcceleratorConfig xnor_array.cols 64 must be a power of two no larger than the word "
     "(32)"),
    (dict(max_out_bits=5), ValueError, "AcceleratorConfig max_out_bits must be at most 4, "
                                       "not 5"),
    (dict(max_out_bits=0), ValueError, "AcceleratorConfig max_out_bits must be at least 1, "
                                       "not 0"),
    (dict(in_depth=3), ValueError, "AcceleratorConfig in_depth must be a power of two, not 3"),
    (dict(score_depth=0), ValueError, "AcceleratorConfig score_depth must be at least 1, "
                                      "not 0"),
    (dict(weight_depth=1 << 17), ValueError,
     "AcceleratorConfig weight_depth must be at most 65536, not 131072"),
    (dict(act_depth=2.0), TypeError, "AcceleratorConfig act_depth must be an integer, not 2.0"),
    (dict(weight_single_port=1), TypeError,
     "AcceleratorConfig weight_single_port must be a bool, not 1"),
    (dict(queue_depth=17), ValueError, "AcceleratorConfig queue_depth must be at most 16, "
                                       "not 17"),
    (dict(host_link_bits=12), ValueError,
     "AcceleratorConfig host_link_bits must be 8, 16 or 32, not 12"),
    (dict(host_link_bits=64), ValueError,
     "AcceleratorConfig host_link_bits must be 8, 16 or 32, not 64"),
    (dict(xnor_array=XNORArrayConfig(word=16, max_k=64, max_act_bits=2, max_weight_bits=1),
          host_link_bits=32), ValueError,
     "AcceleratorConfig host_link_bits 32 must not exceed the word (16)"),
    (dict(timeout_cycles=8), ValueError,
     "AcceleratorConfig timeout_cycles must be at least 16, not 8"),
    # (2^8 - 1) * 128 words * 16 bits = 522240 needs 19 bits.
    (dict(xnor_array=XNORArrayConfig(word=16, cols=8, max_k=2048, max_act_bits=8,
                                     max_weight_bits=1)), ValueError,
     "AcceleratorConfig the 19-bit accumulators (max_k 2048, max_act_bits 8) do not fit a "
     "16-bit threshold or score lane"),
])
def test_config_errors(changes, error, message):
    with pytest.raises(error) as info:
        AcceleratorConfig(**changes)
    assert str(info.value).startswith(message)


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_config_round_trips_through_dict_and_json(config, tmp_path):
    d = json.loads(json.dumps(config.to_dict()))
    assert d["xnor_array"]["type"] == "XNORArrayConfig"
    assert AcceleratorConfig.from_dict(d) == config
    path = tmp_path / "accel.json"
    config.save(path)
    loaded = AcceleratorConfig.load(path)
    assert loaded == config and loaded.fingerprint() == config.fingerprint()


def test_config_from_dict_keeps_defaults_for_missing_keys():
    assert AcceleratorConfig.from_dict({"queue_depth": 8}) == AcceleratorConfig(queue_depth=8)
    assert AcceleratorConfig.from_dict({"xnor_array": {"rows": 2}}).xnor_array == \
        DEFAULT.xnor_array.replace(rows=2)


@pytest.mark.parametrize("d, error, message", [
    ([], TypeError, "AcceleratorConfig.from_dict needs a dict, not []"),
    ({"colour": 1}, ValueError,
     "AcceleratorConfig has no parameter(s) 'colour' (known: act_depth, host_link_bits, "),
    ({"xnor_array": 4}, TypeError,
     "AcceleratorConfig xnor_array must be a dict with a 'type' key, not 4"),
    ({"xnor_array": {"type": "LNSMacConfig"}}, ValueError,
     "AcceleratorConfig xnor_array type must be 'XNORArrayConfig', not 'LNSMacConfig'"),
    ({"xnor_array": {"colour": 1}}, ValueError,
     "XNORArrayConfig has no parameter(s) 'colour' (known: acc_width, cols, dataflow, "),
    ({"in_depth": 12}, ValueError, "AcceleratorConfig in_depth must be a power of two, not 12"),
])
def test_config_from_dict_errors(d, error, message):
    with pytest.raises(error) as info:
        AcceleratorConfig.from_dict(d)
    assert str(info.value).startswith(message)


def test_config_load_errors(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{queue_depth: 8")
    with pytest.raises(ValueError, match=r"bad\.json: not a JSON accelerator configuration: "):
        AcceleratorConfig.load(path)
    path.write_text('{"queue_depth": 0}')
    with pytest.raises(ValueError, match=r"bad\.json: AcceleratorConfig queue_depth must be "
                                         r"at least 1, not 0$"):
        AcceleratorConfig.load(path)
    with pytest.raises(FileNotFoundError):
        AcceleratorConfig.load(tmp_path / "missing.json")


def test_config_fingerprint_covers_every_field():
    others = [DEFAULT.replace(xnor_array=DEFAULT.xnor_array.replace(rows=4)),
              DEFAULT.replace(max_out_bits=1), DEFAULT.replace(score_depth=1024),
              DEFAULT.replace(weight_single_port=True), DEFAULT.replace(queue_depth=2),
              DEFAULT.replace(host_link_bits=16), DEFAULT.replace(timeout_cycles=1000),
              DEFAULT.replace(latent_depth=64),
              DEFAULT.replace(latent_depth=64, latent_bits=6)]
    prints = {DEFAULT.fingerprint()} | {c.fingerprint() for c in others}
    assert len(prints) == len(others) + 1
    assert AcceleratorConfig().fingerprint() == DEFAULT.fingerprint()
    # An inference configuration's fingerprint leaves the latent fields out (its hardware
    # does not have them): the one it had before training configurations existed.
    assert DEFAULT.fingerprint() == "9a98a3dbb3c9c8b9"
    assert "latent_depth" not in DEFAULT.to_dict()
    assert AcceleratorConfig.from_dict(DEFAULT.replace(latent_depth=64).to_dict()) == \
        DEFAULT.replace(latent_depth=64)


# Layouts ----------------------------------------------------------------------------------


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_layout_is_fixed_width_and_defined_once(config):
    isa = instruction_set(config)
    assert isa.layout["opcode"].shape is Opcode
    assert isa.width == isa.layout.size and isa.bytes * 8 == isa.width
    assert isa.width % 32 == 0 and isa.width % config.host_link_bits == 0
    # UPDATE belongs to training configurations only, STATS to those with a statistics unit,
    # ARGMAX to those with an argmax unit.
    base = (Opcode.HALT, Opcode.LOAD, Opcode.STORE, Opcode.GEMM)
    assert isa.opcodes == base + ((Opcode.UPDATE,) if config.training else ()) \
        + ((Opcode.STATS,) if config.statistics else ()) \
        + ((Opcode.ARGMAX,) if config.argmax else ())
    assert {name for name, _ in isa.layout["operands"].shape} == \
        {op.name.lower() for op in isa.opcodes}
    # The reserved padding is less than one alignment unit.
    assert isa.layout["reserved"].width < max(32, config.host_link_bits)
    assert isa.no_wait == NO_WAIT == 31
    assert instruction_set(config) is isa


def test_field_ranges_follow_the_configuration():
    ops = instruction_set(SMALL).operands
    assert ops[Opcode.LOAD]["addr"].shape == range(128)        # the deepest loadable memory
    assert ops[Opcode.LOAD]["count"].shape == range(1, 129)
    assert ops[Opcode.STORE]["addr"].shape == range(8)
    assert ops[Opcode.GEMM]["a_addr"].shape == range(64)       # max(in 32, act 64)
    assert ops[Opcode.GEMM]["m_tiles"].shape == range(1, 65)
    assert ops[Opcode.GEMM]["n_tiles"].shape == range(1, 129)
    assert ops[Opcode.GEMM]["words"].shape == range(1, 8)      # ceil(100 / 16)
    stats = instruction_set(FULL).operands[Opcode.STATS]
    assert stats["addr"].shape == range(512)                   # score_depth
    assert stats["groups"].shape == range(1, 9)                # norm_channels 64 / cols 8
    assert stats["samples"].shape == range(1, 513)
    assert ops[Opcode.GEMM]["planes"].shape == range(1, 5)
    assert ops[Opcode.GEMM]["out_bits"].shape == range(1, 4)
    assert ops[Opcode.GEMM]["dst_addr"].shape == range(64)     # max(act 64, score 8)
    assert ops[Opcode.GEMM]["thr_addr"].shape == range(16)
    for op, wait in [(Opcode.LOAD, "unread"), (Opcode.LOAD, "unwritten"),
                     (Opcode.STORE, "unwritten"), (Opcode.GEMM, "unsent")]:
        assert ops[op][wait].shape == range(32)
    assert ops[Opcode.GEMM]["sync"].width == 1
    assert instruction_set(SMALL).width < instruction_set(DEFAULT).width


def test_instruction_set_needs_a_config():
    with pytest.raises(TypeError, match=re.escape("config must be an AcceleratorConfig, "
                                                  "not 'x'")):
        InstructionSet("x")


@pytest.mark.parametrize("module", [program_module, runtime_module, races_module])
def test_no_hand_written_bit_positions(module):
    # Fields come from the layouts: no shift operator in the code (docstrings and comments
    # are not operator tokens).
    source = Path(module.__file__).read_text()
    tokens = {tok.string for tok in tokenize.generate_tokens(io.StringIO(source).readline)
              if tok.type == tokenize.OP}
    assert not {"<<", ">>", "<<=", ">>="} & tokens


def test_bit_positions_come_from_the_layout():
    isa = instruction_set(DEFAULT)
    word = encode(load(count=5), DEFAULT)
    view = isa.layout.from_bits(word)
    assert view.opcode == Opcode.LOAD
    assert view.operands.load.count == 5 and view.operands.load.buffer == Buffer.IN
    field = isa.operands[Opcode.LOAD]["count"]
    low = isa.layout["operands"].offset + field.offset
    diff = word ^ encode(load(count=6), DEFAULT)
    assert diff and diff & (2 ** (low + field.width) - 2 ** low) == diff
    assert isa.raw_layout.from_bits(word).opcode == Opcode.LOAD.value


def test_enum_values():
    assert [op.value for op in Opcode] == [0, 1, 2, 3, 4, 5, 6]
    assert [b.value for b in Buffer] == [0, 1, 2, 3, 4, 5, 6]
    assert (Source.CONST.value, Source.INPUT.value) == (0, 1)
    assert (GemmMode.THRESHOLD.value, GemmMode.SCORES.value) == (0, 1)
    assert [s.value for s in Status] == [0, 1, 2, 3]
    assert (Record.DATA, Record.STATUS) == (0x01, 0x02)
    assert LOAD_BUFFERS == (Buffer.IN, Buffer.WEIGHT, Buffer.THRESH)
    assert STORE_BUFFERS == (Buffer.SCORE,)


def test_record_layouts():
    assert DATA_HEADER.size == 64
    assert [(name, f.offset, f.width) for name, f in DATA_HEADER] == \
        [("kind", 0, 8), ("reserved", 8, 24), ("count", 32, 32)]
    assert STATUS_COUNTERS == ("cycles", "array_beats", "tile_holds")
    assert STATUS_RECORD.size == 64 + 3 * 32
    assert [(name, f.offset, f.width) for name, f in STATUS_RECORD] == \
        [("kind", 0, 8), ("code", 8, 8), ("halt", 16, 8), ("reserved", 24, 8),
         ("index", 32, 32), ("cycles", 64, 32), ("array_beats", 96, 32),
         ("tile_holds", 128, 32)]
    record = STATUS_RECORD.const({"kind": Record.STATUS, "code": Status.TRUNCATED,
                                  "halt": 7, "index": 0x01020304, "cycles": 5,
                                  "tile_holds": 2 ** 32 - 1}).as_bits()
    raw = record.to_bytes(20, "little")
    assert raw[:8] == bytes([2, 3, 7, 0, 4, 3, 2, 1])
    assert raw[8:] == bytes([5, 0, 0, 0]) + bytes(4) + bytes([255] * 4)


# Regions ----------------------------------------------------------------------------------


def test_regions_and_link_words():
    isa = instruction_set(SMALL)   # rows 2, cols 4, word 16
    assert isa.regions(isa.check(load(buffer="WEIGHT", addr=3, count=5))) == \
        [("weight", 3, 5, "w")]
    assert isa.link_words(isa.check(load(buffer="WEIGHT", addr=3, count=5))) == 5 * 4
    assert isa.link_words(isa.check(load(buffer="IN", count=5))) == 5 * 2
    assert isa.regions(isa.check(store(addr=2, count=3))) == [("score", 2, 3, "r")]
    assert isa.link_words(isa.check(store(addr=2, count=3))) == 3 * 4
    # 2 row tiles x 3 planes x 2 words; 5 column tiles x 2 words; 5 x 3 thresholds;
    # 2 row tiles x 2 planes x ceil(5 * 4 / 16) = 2 words.
    g = isa.check(gemm(a_buffer="ACT", a_addr=1, b_addr=2, planes=3, words=2, m_tiles=2,
                       n_tiles=5, out_bits=2, dst_addr=30, thr_addr=1))
    assert isa.regions(g) == [("act", 1, 12, "r"), ("weight", 2, 10, "r"),
                              ("thresh", 1, 15, "r"), ("act", 30, 8, "w")]
    # SCORES: 2 row tiles x 1 plane x 2 words read; 2 row tiles x 2 rows x 1 column
    # tile written.
    s = isa.check(gemm(mode="SCORES", m_tiles=2, n_tiles=1, dst_addr=4))
    assert isa.regions(s) == [("in", 0, 4, "r"), ("weight", 0, 2, "r"), ("score", 4, 4, "w")]
    assert isa.regions(isa.check(HALT)) == []
    assert isa.out_words(5) == 2 and isa.out_words(4) == 1
    assert instruction_set(DEFAULT).out_words(1) == 1


# Round trips ------------------------------------------------------------------------------


def _random_fields(rng, isa, op):
    # Any in-range value of every field of `op` (enums as members, any of their values).
    fields = {}
    for name, field in isa.operands[op]:
        shape = field.shape
        if isinstance(shape, range):
            fields[name] = int(rng.integers(shape.start, shape.stop))
        elif isinstance(shape, type):
            fields[name] = list(shape)[int(rng.integers(len(shape)))]
        else:
            fields[name] = int(rng.integers(0, 2 ** field.width))
    if op == Opcode.LOAD:
        fields["buffer"] = isa.load_buffers[int(rng.integers(len(isa.load_buffers)))]
    elif op == Opcode.STORE:
        fields["buffer"] = isa.store_buffers[int(rng.integers(len(isa.store_buffers)))]
    elif op == Opcode.GEMM:
        fields["a_buffer"] = (Buffer.IN, Buffer.ACT)[int(rng.integers(2))]
        if fields["mode"] == GemmMode.SCORES:
            fields["pool"] = 1  # pooling is for thresholded outputs only
    return {"opcode": op, **fields}


def _fit(rng, isa, instr):
    # Shrink sizes and addresses until every region fits its memory (a valid instruction).
    config = isa.config
    for _ in range(64):
        bad = [(memory, first, words) for memory, first, words, _ in isa.regions(instr)
               if first + words > config.depth(memory)]
        if not bad:
            return instr
        for key in ("count", "m_tiles", "n_tiles", "pool", "words", "planes", "out_bits",
                    "groups", "samples", "classes", "stride"):
            if key in instr and instr[key] > 1:
                instr[key] = max(1, instr[key] // 2)
        for key in ("addr", "a_addr", "b_addr", "dst_addr", "thr_addr", "rank_addr"):
            if key in instr:
                instr[key] //= 2
    raise AssertionError(f"could not fit {instr}")


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
@pytest.mark.parametrize("op", list(Opcode), ids=lambda op: op.name)
def test_round_trip_of_random_valid_instructions(config, op):
    isa = instruction_set(config)
    rng = np.random.default_rng(op.value)
    if op not in isa.opcodes:
        message = {
            Opcode.UPDATE: r"^UPDATE needs a training configuration \(latent_depth > 0\); "
                           r"this accelerator has no latent memory$",
            Opcode.STATS: r"^STATS needs a statistics unit \(norm_channels > 0\); this "
                          r"accelerator has none$",
            Opcode.ARGMAX: r"^ARGMAX needs an argmax unit \(rank_depth > 0\); this "
                           r"accelerator has none$"}[op]
        with pytest.raises(InstructionError, match=message):
            isa.encode({"opcode": op})
        bits = isa.raw_layout.const({"opcode": op.value}).as_bits()
        with pytest.raises(InstructionError, match=f"^unknown opcode {op.value}$"):
            isa.decode(bits)
        return
    for _ in range(60):
        instr = _fit(rng, isa, _random_fields(rng, isa, op))
        word = isa.encode(instr)
        assert 0 <= word < 2 ** isa.width
        assert isa.decode(word) == instr
        assert word & isa.unused_mask(op) == 0
        # Names for enum members encode the same word.
        named = {k: v.name if hasattr(v, "name") else v for k, v in instr.items()}
        assert encode(named, config) == word and decode(word, config) == instr


@pytest.mark.parametrize("op", list(Opcode), ids=lambda op: op.name)
def test_decode_without_regions_takes_any_in_range_fields(op):
    # Words built through the layout itself, regions unchecked: what the gateware accepts.
    isa = instruction_set(FULL)
    rng = np.random.default_rng(10 + op.value)
    for _ in range(60):
        instr = _random_fields(rng, isa, op)
        fields = {k: v for k, v in instr.items() if k != "opcode"}
        word = isa.layout.const({"opcode": op, "operands": {op.name.lower(): fields}}) \
            .as_bits()
        assert isa.decode(word, regions=False) == instr


def test_zero_word_is_halt():
    assert decode(0, DEFAULT) == {"opcode": Opcode.HALT, "status": 0}
    assert encode(HALT, DEFAULT) == 0


def test_check_normalises_names():
    checked = instruction_set(DEFAULT).check(load(buffer="WEIGHT", source="CONST"))
    assert checked["opcode"] is Opcode.LOAD and checked["buffer"] is Buffer.WEIGHT
    assert checked["source"] is Source.CONST


# Errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize("instr, message", [
    ("HALT", "an instruction must be a dict, not 'HALT'"),
    ({"status": 0}, "instruction has no opcode"),
    (dict(opcode="FOO"), "unknown opcode 'FOO'"),
    (dict(opcode=3), "unknown opcode 3"),
    (dict(opcode="HALT"), "HALT is missing field(s) status"),
    (dict(opcode="STORE", buffer="SCORE"), "STORE is missing field(s) addr, count, unwritten"),
    (dict(HALT, colour=1, addr=0), "HALT has no field(s) addr, colour"),
    (dict(HALT, status=256), "HALT status must be at most 255, not 256"),
    (dict(HALT, status=-1), "HALT status must be at least 0, not -1"),
    (dict(HALT, status=1.0), "HALT status must be an integer, not 1.0"),
    (dict(HALT, status=True), "HALT status must be an integer, not True"),
    (load(count=0), "LOAD count must be at least 1, not 0"),
    (load(count=8193), "LOAD count must be at most 8192, not 8193"),
    (load(addr=8192), "LOAD addr must be at most 8191, not 8192"),
    (load(unread=32), "LOAD unread must be at most 31, not 32"),
    (load(buffer="OUT"),
     "LOAD buffer must be one of IN, ACT, WEIGHT, THRESH, SCORE, LATENT, RANK, not 'OUT'"),
    (load(buffer=0), "LOAD buffer must be one of IN, ACT, WEIGHT, THRESH, SCORE, LATENT, "
                     "RANK, not 0"),
    (load(source="HOST"), "LOAD source must be one of CONST, INPUT, not 'HOST'"),
    (load(buffer="ACT"), "LOAD cannot write the act memory (only in, weight, thresh)"),
    (load(buffer="SCORE"), "LOAD cannot write the score memory (only in, weight, thresh)"),
    (store(buffer="WEIGHT"), "STORE cannot read the weight memory (only score)"),
    (store(count=513), "STORE count must be at most 512, not 513"),
    (gemm(a_buffer="WEIGHT"), "GEMM a_buffer must be IN or ACT, not WEIGHT"),
    (gemm(mode="SIGN"), "GEMM mode must be one of THRESHOLD, SCORES, not 'SIGN'"),
    (gemm(planes=9), "GEMM planes must be at most 8, not 9"),
    (gemm(words=65), "GEMM words must be at most 64, not 65"),
    (gemm(out_bits=3), "GEMM out_bits must be at most 2, not 3"),
    (gemm(sync=2), "GEMM sync must be at most 1, not 2"),
    (gemm(m_tiles=0), "GEMM m_tiles must be at least 1, not 0"),
])
def test_encode_errors_are_illegal(instr, message):
    with pytest.raises(InstructionError) as info:
        encode(instr, DEFAULT)
    assert str(info.value) == message
    assert info.value.code is Status.ILLEGAL
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("instr, message", [
    (load(addr=510, count=3),
     "LOAD region of 3 words at 510 runs past the end of the in memory (512 words)"),
    (load(buffer="WEIGHT", addr=8000, count=193),
     "LOAD region of 193 words at 8000 runs past the end of the weight memory (8192 words)"),
    (load(buffer="THRESH", addr=600, count=1),
     "LOAD region of 1 words at 600 runs past the end of the thresh memory (512 words)"),
    (store(addr=500, count=13),
     "STORE region of 13 words at 500 runs past the end of the score memory (512 words)"),
    # 200 row tiles x 2 planes x 2 words = 800 words of the in memory.
    (gemm(m_tiles=200, planes=2),
     "GEMM region of 800 words at 0 runs past the end of the in memory (512 words)"),
    (gemm(a_buffer="ACT", a_addr=509),
     "GEMM region of 4 words at 509 runs past the end of the act memory (512 words)"),
    (gemm(b_addr=8190), "GEMM region of 6 words at 8190 runs past the end of the weight "
                        "memory (8192 words)"),
    (gemm(thr_addr=505), "GEMM region of 9 words at 505 runs past the end of the thresh "
                         "memory (512 words)"),
    # THRESHOLD output: 2 row tiles x 2 planes x 1 word.
    (gemm(dst_addr=509), "GEMM region of 4 words at 509 runs past the end of the act memory "
                         "(512 words)"),
    # SCORES output: 2 row tiles x 8 rows x 3 column tiles.
    (gemm(mode="SCORES", dst_addr=480), "GEMM region of 48 words at 480 runs past the end "
                                        "of the score memory (512 words)"),
])
def test_region_faults_are_address(instr, message):
    with pytest.raises(InstructionError) as info:
        encode(instr, DEFAULT)
    assert str(info.value) == message and info.value.code is Status.ADDRESS
    # The gateware takes the word: it wraps addresses instead.
    isa = instruction_set(DEFAULT)
    op = Opcode[instr["opcode"]]
    fields = {name: field.shape[instr[name]] if isinstance(instr[name], str) else instr[name]
              for name, field in isa.operands[op]}
    word = isa.layout.const({"opcode": op, "operands": {op.name.lower(): fields}}).as_bits()
    assert isa.decode(word, regions=False)["opcode"] is op
    with pytest.raises(InstructionError, match=re.escape(message)):
        isa.decode(word)


def _raw(config, opcode, **fields):
    # An instruction word with any field values, through the raw layouts.
    isa = instruction_set(config)
    operands = 0
    if opcode in {op.value for op in isa.opcodes}:
        operands = isa.raw_operands[Opcode(opcode)].const(fields).as_bits()
    return isa.raw_layout.const({"opcode": opcode, "operands": operands}).as_bits()


@pytest.mark.parametrize("opcode, fields, message", [
    (4, {}, "unknown opcode 4"),    # UPDATE: this is not a training configuration
    (5, {}, "unknown opcode 5"),
    (6, {}, "unknown opcode 6"),
    (15, {}, "unknown opcode 15"),
    (Opcode.LOAD.value, dict(buffer=7, count=1), "LOAD buffer must be one of IN, ACT, WEIGHT, "
                                                 "THRESH, SCORE, LATENT, RANK, not 7"),
    (Opcode.LOAD.value, dict(buffer=5, count=1), "LOAD cannot write the latent memory (only "
                                                 "in, weight, thresh)"),
    (Opcode.LOAD.value, dict(buffer=1, count=1), "LOAD cannot write the act memory (only in, "
                                                 "weight, thresh)"),
    (Opcode.LOAD.value, dict(count=0), "LOAD count must be at least 1, not 0"),
    (Opcode.STORE.value, dict(buffer=4, count=600), "STORE count must be at most 512, not 600"),
    (Opcode.GEMM.value, dict(a_buffer=0, planes=0, words=1, m_tiles=1, n_tiles=1, pool=1,
                             out_bits=1), "GEMM planes must be at least 1, not 0"),
    (Opcode.GEMM.value, dict(a_buffer=0, planes=1, words=1, m_tiles=1, n_tiles=1, pool=1,
                             out_bits=3), "GEMM out_bits must be at most 2, not 3"),
    (Opcode.GEMM.value, dict(a_buffer=0, planes=1, words=1, m_tiles=1, n_tiles=1, pool=0,
                             out_bits=1), "GEMM pool must be at least 1, not 0"),
    (Opcode.GEMM.value, dict(a_buffer=0, planes=1, words=1, m_tiles=1, n_tiles=1, pool=5,
                             out_bits=1), "GEMM pool must be at most 4, not 5"),
    # GemmMode.SCORES is 1.
    (Opcode.GEMM.value, dict(a_buffer=0, planes=1, words=1, m_tiles=1, n_tiles=1, pool=2,
                             mode=1, out_bits=1),
     "GEMM: a SCORES GEMM cannot pool (pool must be 1)"),
])
def test_decode_errors_are_illegal(opcode, fields, message):
    with pytest.raises(InstructionError) as info:
        decode(_raw(DEFAULT, opcode, **fields), DEFAULT)
    assert str(info.value) == message and info.value.code is Status.ILLEGAL


@pytest.mark.parametrize("word", [-1, 2 ** 96, "0", 1.0, True])
def test_decode_word_range(word):
    with pytest.raises(InstructionError) as info:
        decode(word, DEFAULT)
    assert str(info.value) == f"an instruction word must be a 96-bit unsigned integer, not " \
                              f"{word!r}"


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
@pytest.mark.parametrize("op", list(Opcode), ids=lambda op: op.name)
def test_every_unused_bit_is_illegal(config, op):
    isa = instruction_set(config)
    if op not in isa.opcodes:
        # No UPDATE without a latent memory (no STATS without a statistics unit): every
        # bit pattern of it is an unknown opcode.
        word = isa.raw_layout.const({"opcode": op.value}).as_bits()
        for bit in range(isa.layout["opcode"].width, isa.width, 7):
            with pytest.raises(InstructionError, match=f"^unknown opcode {op.value}$"):
                isa.decode(word | 1 << bit)
        return
    instr = {Opcode.HALT: HALT, Opcode.LOAD: load(count=1), Opcode.STORE: store(count=1),
             Opcode.GEMM: gemm(m_tiles=1, n_tiles=1, words=1, out_bits=1),
             Opcode.UPDATE: update(count=1),
             Opcode.STATS: dict(opcode="STATS", addr=0, groups=1, samples=1, unwritten=0),
             Opcode.ARGMAX: dict(opcode="ARGMAX", addr=0, groups=1, samples=1, classes=1,
                                 rank_addr=0, stride=1, unwritten=0)}[op]
    word = isa.encode(instr)
    mask = isa.unused_mask(op)
    # Everything but the opcode and this opcode's fields: the union's spare bits and the
    # reserved padding.
    used = isa.layout["opcode"].width + sum(f.width for _, f in isa.operands[op])
    assert bin(mask).count("1") == isa.width - used
    bits = [b for b in range(isa.width) if mask >> b & 1]
    for bit in bits:
        with pytest.raises(InstructionError) as info:
            isa.decode(word | 1 << bit)
        assert str(info.value) == f"unused bits of a {op.name} instruction are not zero"
        assert info.value.code is Status.ILLEGAL


def test_instruction_error_code():
    error = InstructionError("x")
    assert error.code is Status.ILLEGAL
    assert InstructionError("y", Status.ADDRESS).code is Status.ADDRESS
    assert InstructionError("z", 2).code is Status.ADDRESS
