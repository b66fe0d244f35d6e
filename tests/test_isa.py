"""The accelerator configuration and the instruction set: round trips, bit positions taken
from the layout, and exact error messages."""

import io
import json
import re
import tokenize
from pathlib import Path

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from lowbit import isa as isa_module
from lowbit import iss as iss_module
from lowbit import program as program_module
from lowbit.config.accelerator import AcceleratorConfig
from lowbit.config.lightnorm import LightNormConfig
from lowbit.config.lns import LNSMacConfig
from lowbit.config.xnor_array import XNORArrayConfig
from lowbit.isa import (Buffer, InstructionError, InstructionSet, NormMode, Opcode, Source,
                        Status, decode, encode, instruction_set, row_words)

DEFAULT = AcceleratorConfig()
# Small buffers (not powers of two, so address fields can hold out-of-range values).
SMALL = AcceleratorConfig(xnor_array=XNORArrayConfig(max_k=64), act_words=200,
                          weight_words=300, out_words=100,
                          lightnorm=LightNormConfig(channels=32, block=16,
                                                    output="multithreshold", act_bits=2))
BINARY = AcceleratorConfig(xnor_array=XNORArrayConfig(max_act_bits=1, max_weight_bits=1),
                           has_lns_mac=False, has_lightnorm=False)
# A norm unit that normalises to BFP, an output buffer larger than the activation buffer.
NORMALISING = AcceleratorConfig(lightnorm=LightNormConfig(channels=64, output="bfp"),
                                has_lns_mac=False, act_words=300, weight_words=500,
                                out_words=400)
CONFIGS = [DEFAULT, SMALL, BINARY, NORMALISING]


def gemm(**changes):
    instr = dict(opcode="GEMM_XNOR", a_addr=0, b_addr=0, c_addr=0, m=4, n=4, k=64,
                 a_stride=2, b_stride=2, c_stride=4, act_bits=1, act_signed=0,
                 weight_bits=1, weight_signed=0)
    instr.update(changes)
    return instr


def load(**changes):
    instr = dict(opcode="LOAD", buffer="ACT", source="INPUT", addr=0, count=4)
    instr.update(changes)
    return instr


def norm(**changes):
    instr = dict(opcode="NORM", mode="STATISTICS", src_addr=0, dst_addr=100, param_addr=0,
                 rows=4, channels=16, src_stride=16, dst_stride=16)
    instr.update(changes)
    return instr


# AcceleratorConfig ------------------------------------------------------------------------

def test_config_defaults_fit_an_ice40up5k():
    cfg = AcceleratorConfig()
    # Activation and weight buffers: two 16-bit SPRAMs each; output: eight 4-kbit EBRs.
    assert cfg.word * cfg.act_words == 2 * 256 * 1024
    assert cfg.word * cfg.weight_words == 2 * 256 * 1024
    assert cfg.word * cfg.out_words == 8 * 4096
    assert cfg.host_link_bits == 8
    assert cfg.lightnorm.output == "sign"


@pytest.mark.parametrize("changes, error, message", [
    (dict(xnor_array={"rows": 4}), TypeError,
     "AcceleratorConfig xnor_array must be a XNORArrayConfig, not {'rows': 4}"),
    (dict(lns_mac=None), TypeError, "AcceleratorConfig lns_mac must be a LNSMacConfig, not None"),
    (dict(has_lightnorm=1), TypeError, "AcceleratorConfig has_lightnorm must be a bool, not 1"),
    (dict(has_xnor_array=False, has_lightnorm=False, has_lns_mac=False), ValueError,
     "AcceleratorConfig needs at least one unit: has_xnor_array, has_lightnorm and "
     "has_lns_mac are all False"),
    (dict(word=24), ValueError, "AcceleratorConfig word must be 8, 16, 32 or 64, not 24"),
    (dict(word=16), ValueError,
     "AcceleratorConfig word 16 cannot hold the XNOR array's 27-bit accumulators"),
    (dict(word=16, has_xnor_array=False), ValueError,
     "AcceleratorConfig word 16 cannot hold the LNS MAC's 26-bit dot products"),
    (dict(word=8, has_xnor_array=False, lns_mac=LNSMacConfig(bits=12)), ValueError,
     "AcceleratorConfig word 8 cannot hold the LNS MAC's 12-bit operands"),
    (dict(act_words=0), ValueError, "AcceleratorConfig act_words must be at least 1, not 0"),
    (dict(out_words=2 ** 20 + 1), ValueError,
     "AcceleratorConfig out_words must be at most 1048576, not 1048577"),
    (dict(weight_words=1.5), TypeError,
     "AcceleratorConfig weight_words must be an integer, not 1.5"),
    (dict(host_link_bits=12), ValueError,
     "AcceleratorConfig host_link_bits must be 8, 16, 32 or 64, not 12"),
    (dict(word=16, host_link_bits=32), ValueError,
     "AcceleratorConfig host_link_bits 32 must not exceed word 16"),
    (dict(timeout_cycles=8), ValueError,
     "AcceleratorConfig timeout_cycles must be at least 16, not 8"),
])
def test_config_errors(changes, error, message):
    with pytest.raises(error, match=re.escape(message)):
        AcceleratorConfig(**changes)


def test_config_fingerprint_covers_nested_configs():
    base = AcceleratorConfig()
    assert json.loads(json.dumps(base.to_dict()))["xnor_array"]["rows"] == 4
    assert base.fingerprint() == AcceleratorConfig().fingerprint()
    others = [base.replace(xnor_array=XNORArrayConfig(rows=8)),
              base.replace(lightnorm=LightNormConfig(channels=32, output="sign")),
              base.replace(lns_mac=LNSMacConfig(lanes=8)), base.replace(act_words=8192),
              base.replace(host_link_bits=16), base.replace(has_lns_mac=False)]
    prints = {base.fingerprint()} | {cfg.fingerprint() for cfg in others}
    assert len(prints) == len(others) + 1


def test_config_absent_unit_does_not_enter_the_fingerprint():
    a = AcceleratorConfig(has_lns_mac=False)
    b = AcceleratorConfig(has_lns_mac=False, lns_mac=LNSMacConfig(lanes=16))
    assert a.to_dict()["lns_mac"] is None
    assert a.fingerprint() == b.fingerprint()


# Layout -----------------------------------------------------------------------------------

@pytest.mark.parametrize("cfg", CONFIGS)
def test_layout_is_fixed_width_and_defined_once(cfg):
    isa = instruction_set(cfg)
    assert isa.layout["opcode"].shape is Opcode
    assert isa.width % 32 == 0 and isa.width == isa.layout.size
    assert set(name for name, _ in isa.layout["operands"].shape) == \
        {op.name.lower() for op in Opcode}
    assert isa.bytes * 8 == isa.width


def test_address_fields_follow_the_buffer_sizes():
    small, default = instruction_set(SMALL), instruction_set(DEFAULT)
    assert small.operands[Opcode.GEMM_XNOR]["a_addr"].width == 8  # 200 words
    assert small.operands[Opcode.GEMM_XNOR]["b_addr"].width == 9  # 300 words
    assert default.operands[Opcode.GEMM_XNOR]["a_addr"].width == 14  # 16384 words
    assert small.width < default.width


def test_norm_regions():
    isa = instruction_set(NORMALISING)
    # A BFP block: a 6-bit exponent and 16 8-bit mantissas, 134 bits, five 32-bit words.
    assert NORMALISING.lightnorm.output_layout.size == 134 and isa.norm_block_words() == 5
    assert isa.norm_dst_words(NormMode.NORMALISE, 64) == 4 * 5
    assert isa.norm_dst_words(NormMode.NORMALISE, 17) == 2 * 5
    assert isa.norm_param_words(NormMode.NORMALISE, 17) == 2 * 17 + 2 * 2
    assert isa.norm_dst_words(NormMode.STATISTICS, 17) == 17
    assert isa.norm_param_words(NormMode.STATISTICS, 17) == 0
    small = instruction_set(SMALL)  # 2-bit activations, 3 thresholds
    assert small.norm_dst_words(NormMode.REQUANTISE, 40) == 2 * 2
    assert small.norm_param_words(NormMode.REQUANTISE, 40) == 40 * 4
    # NORM destinations reach the larger of the activation and output buffers.
    assert isa.operands[Opcode.NORM]["dst_addr"].shape == range(400)
    assert isa.operands[Opcode.NORM]["dst_stride"].shape == range(1, 401)


def test_instruction_width_follows_the_host_link():
    assert instruction_set(DEFAULT.replace(word=64, host_link_bits=64)).width % 64 == 0


def test_instruction_set_needs_a_config():
    with pytest.raises(TypeError, match=re.escape(
            "config must be an AcceleratorConfig, not 'x'")):
        InstructionSet("x")


def _code_tokens(module):
    source = Path(module.__file__).read_text()
    return [tok.string for tok in tokenize.generate_tokens(io.StringIO(source).readline)
            if tok.type == tokenize.OP]


@pytest.mark.parametrize("module", [isa_module, program_module, iss_module])
def test_no_hand_written_shifts(module):
    # Bit positions come from the layouts only: no shift operator in the code (docstrings
    # and comments are not tokens of type OP).
    tokens = _code_tokens(module)
    assert not {"<<", ">>", "<<=", ">>="} & set(tokens)


def test_bit_positions_come_from_the_layout():
    isa = instruction_set(DEFAULT)
    word = encode(load(count=5), DEFAULT)
    view = isa.layout.from_bits(word)
    assert view.opcode == Opcode.LOAD
    assert view.operands.load.count == 5 and view.operands.load.buffer == Buffer.ACT
    # Changing one field changes exactly the bits the layout assigns to it.
    count = isa.layout["operands"].offset + isa.operands[Opcode.LOAD]["count"].offset
    width = isa.operands[Opcode.LOAD]["count"].width
    diff = word ^ encode(load(count=6), DEFAULT)
    assert diff & (2 ** (count + width) - 2 ** count) == diff and diff
    assert isa.raw_layout.from_bits(word).opcode == Opcode.LOAD.value


# Round trip (hypothesis) ------------------------------------------------------------------

def _rows(size, row):
    """Most rows of `row` words that fit `size` words."""
    return (size - row) // row + 1


def _region(draw, size, row, rows):
    """(stride, addr) of `rows` rows of `row` words that fit `size` words."""
    high = (size - row) // (rows - 1) if rows > 1 else size
    stride = draw(st.integers(row, min(high, row + 4, size)))
    addr = draw(st.integers(0, size - ((rows - 1) * stride + row)))
    return stride, addr


@st.composite
def instructions(draw, cfg):
    ops = [Opcode.HALT, Opcode.LOAD, Opcode.STORE] + [Opcode.MAXPOOL] * cfg.has_maxpool
    ops += [op for op, unit in ((Opcode.GEMM_XNOR, "xnor_array"), (Opcode.GEMM_LNS, "lns_mac"),
                                (Opcode.NORM, "lightnorm")) if getattr(cfg, f"has_{unit}")]
    op = draw(st.sampled_from(ops))
    sizes = {Buffer.ACT: cfg.act_words, Buffer.WEIGHT: cfg.weight_words,
             Buffer.OUT: cfg.out_words}
    if op == Opcode.HALT:
        return {"opcode": op, "status": draw(st.integers(0, 255))}
    if op in (Opcode.LOAD, Opcode.STORE):
        buffer = draw(st.sampled_from(list(Buffer)))
        addr = draw(st.integers(0, sizes[buffer] - 1))
        instr = {"opcode": op, "buffer": buffer, "addr": addr,
                 "count": draw(st.integers(1, sizes[buffer] - addr))}
        if op == Opcode.LOAD:
            instr["source"] = draw(st.sampled_from(list(Source)))
        return instr
    if op == Opcode.MAXPOOL:
        row = draw(st.integers(1, 8))
        window = draw(st.integers(1, min(16, cfg.act_words // row)))
        rows = draw(st.integers(1, cfg.act_words // (row * window)))
        return {"opcode": op, "rows": rows, "row_words": row, "window": window,
                "src_addr": draw(st.integers(0, cfg.act_words - rows * window * row)),
                "dst_addr": draw(st.integers(0, cfg.act_words - rows * row))}
    if op == Opcode.NORM:
        norm, isa = cfg.lightnorm, instruction_set(cfg)
        own = {"sign": NormMode.THRESHOLD, "multithreshold": NormMode.REQUANTISE,
               "bfp": NormMode.NORMALISE}[norm.output]
        mode = draw(st.sampled_from([NormMode.STATISTICS, own]))
        if mode == NormMode.STATISTICS:
            # Sums and spreads: two rows of `channels` words in the output buffer.
            channels = draw(st.integers(1, min(norm.channels, cfg.out_words // 2)))
            rows = draw(st.integers(1, min(_rows(cfg.out_words, channels), norm.max_batch,
                                           64)))
            src_stride, src = _region(draw, cfg.out_words, channels, rows)
            dst_stride, dst = _region(draw, cfg.out_words, channels, 2)
            param = 0
        else:
            fits = [c for c in range(1, min(norm.channels, cfg.out_words) + 1)
                    if isa.norm_param_words(mode, c) <= cfg.weight_words]
            channels = draw(st.sampled_from(fits))
            dst_row = isa.norm_dst_words(mode, channels)
            rows = draw(st.integers(1, min(_rows(cfg.out_words, channels),
                                           _rows(cfg.act_words, dst_row), 64)))
            src_stride, src = _region(draw, cfg.out_words, channels, rows)
            dst_stride, dst = _region(draw, cfg.act_words, dst_row, rows)
            param = draw(st.integers(0, cfg.weight_words - isa.norm_param_words(mode,
                                                                               channels)))
        return {"opcode": op, "mode": mode, "src_addr": src, "dst_addr": dst,
                "param_addr": param, "rows": rows, "channels": channels,
                "src_stride": src_stride, "dst_stride": dst_stride}
    if op == Opcode.GEMM_XNOR:
        array = cfg.xnor_array
        k = draw(st.integers(1, array.max_k))
        act_bits = draw(st.integers(1, array.max_act_bits))
        weight_bits = draw(st.integers(1, array.max_weight_bits))
        extra = {"act_bits": act_bits, "weight_bits": weight_bits,
                 "act_signed": draw(st.integers(0, 1)) if act_bits > 1 else 0,
                 "weight_signed": draw(st.integers(0, 1)) if weight_bits > 1 else 0}
        a_row = row_words(k, act_bits, cfg.word)
        b_row = row_words(k, weight_bits, cfg.word)
    else:
        k = draw(st.integers(1, cfg.lns_mac.max_k))
        a_row = b_row = -(-k // (cfg.word // cfg.lns_mac.bits))
        extra = {}
    n = draw(st.integers(1, min(_rows(cfg.weight_words, b_row), cfg.out_words, 64)))
    m = draw(st.integers(1, min(_rows(cfg.act_words, a_row), _rows(cfg.out_words, n), 64)))
    a_stride, a_addr = _region(draw, cfg.act_words, a_row, m)
    b_stride, b_addr = _region(draw, cfg.weight_words, b_row, n)
    c_stride, c_addr = _region(draw, cfg.out_words, n, m)
    return {"opcode": op, "a_addr": a_addr, "b_addr": b_addr, "c_addr": c_addr, "m": m,
            "n": n, "k": k, "a_stride": a_stride, "b_stride": b_stride, "c_stride": c_stride,
            **extra}


@pytest.mark.parametrize("cfg", CONFIGS, ids=["default", "small", "binary", "bfp"])
@settings(max_examples=150)
@given(data=st.data())
def test_round_trip(cfg, data):
    instr = data.draw(instructions(cfg))
    event(instr["opcode"].name)
    word = encode(instr, cfg)
    isa = instruction_set(cfg)
    assert 0 <= word < 2 ** isa.width
    decoded = decode(word, cfg)
    assert decoded == {"opcode": instr["opcode"], **{
        name: instr[name] for name, _ in isa.operands[instr["opcode"]]}}
    assert encode(decoded, cfg) == word
    # The fields sit where the layout says: read them back through an Amaranth view.
    view = isa.layout.from_bits(word)
    assert view.opcode == instr["opcode"]
    member = getattr(view.operands, instr["opcode"].name.lower())
    for name, _ in isa.operands[instr["opcode"]]:
        assert member[name] == instr[name]


def test_names_are_accepted_for_enums():
    a = encode(load(buffer="WEIGHT", source="CONST"), DEFAULT)
    b = encode(load(buffer=Buffer.WEIGHT, source=Source.CONST, opcode=Opcode.LOAD), DEFAULT)
    assert a == b


def test_zero_word_is_halt():
    assert decode(0, DEFAULT) == {"opcode": Opcode.HALT, "status": 0}


# Error messages ---------------------------------------------------------------------------

@pytest.mark.parametrize("cfg, instr, message", [
    (DEFAULT, dict(opcode="FOO"), "unknown opcode 'FOO'"),
    (DEFAULT, dict(opcode=3), "unknown opcode 3"),
    (DEFAULT, dict(buffer="ACT"), "instruction has no opcode"),
    (DEFAULT, load(count=0), "LOAD count must be at least 1, not 0"),
    (DEFAULT, load(addr=16384), "LOAD address 16384 is outside the act buffer (0..16383)"),
    (DEFAULT, load(buffer="OUT", addr=1020, count=5),
     "LOAD of 5 words at 1020 runs past the end of the out buffer (1024 words)"),
    (DEFAULT, load(count=16385), "LOAD count must be at most 16384, not 16385"),
    (DEFAULT, load(addr=-1), "LOAD address -1 is outside the act buffer (0..16383)"),
    (DEFAULT, load(count="4"), "LOAD count must be an integer, not '4'"),
    (DEFAULT, load(count=True), "LOAD count must be an integer, not True"),
    (DEFAULT, load(buffer="FLASH"),
     "LOAD buffer must be one of ACT, WEIGHT, OUT, not 'FLASH'"),
    (DEFAULT, load(buffer=0), "LOAD buffer must be one of ACT, WEIGHT, OUT, not 0"),
    (DEFAULT, {k: v for k, v in load().items() if k != "source"},
     "LOAD is missing field(s) source"),
    (DEFAULT, load(stride=1), "LOAD has no field(s) stride"),
    (DEFAULT, dict(opcode="HALT", status=256), "HALT status must be at most 255, not 256"),
    (DEFAULT, gemm(k=0), "GEMM_XNOR k must be at least 1, not 0"),
    (DEFAULT, gemm(k=1025), "GEMM_XNOR k must be at most 1024, not 1025"),
    (DEFAULT, gemm(a_addr=16384),
     "GEMM_XNOR operand a address 16384 is outside the act buffer (0..16383)"),
    (DEFAULT, gemm(c_addr=1022),
     "GEMM_XNOR result c of 4 rows of 4 words (stride 4) at 1022 runs past the end of the "
     "out buffer (1024 words)"),
    (DEFAULT, gemm(a_stride=1),
     "GEMM_XNOR operand a stride 1 is shorter than a row (2 words)"),
    (DEFAULT, gemm(act_bits=9), "GEMM_XNOR act_bits must be at most 8, not 9"),
    (DEFAULT, gemm(act_signed=1),
     "GEMM_XNOR act_signed needs act_bits >= 2 (1-bit operands are binary +-1)"),
    (BINARY, gemm(weight_bits=2, b_stride=4),
     "GEMM_XNOR weight_bits 2 exceeds the XNOR array's 1-bit weight operands"),
    (BINARY, dict(opcode="GEMM_LNS"),
     "GEMM_LNS needs the lns_mac unit, which this accelerator does not have"),
    (DEFAULT, dict(opcode="NORM", mode="REQUANTISE", src_addr=0, dst_addr=0, param_addr=0,
                   rows=1, channels=16, src_stride=16, dst_stride=1),
     "NORM mode REQUANTISE needs the norm unit in 'multithreshold' output mode, it is built "
     "for 'sign'"),
    (DEFAULT, dict(opcode="NORM", mode="THRESHOLD", src_addr=0, dst_addr=0, param_addr=0,
                   rows=1, channels=257, src_stride=257, dst_stride=9),
     "NORM channels must be at most 256, not 257"),
    (DEFAULT, norm(param_addr=5),
     "NORM mode STATISTICS takes no parameters: param_addr must be 0, not 5"),
    (DEFAULT.replace(lightnorm=LightNormConfig(channels=256, output="sign", max_batch=8)),
     norm(rows=9), "NORM mode STATISTICS rows 9 exceed the norm unit's max_batch 8"),
    (AcceleratorConfig(word=16, has_xnor_array=False, has_lns_mac=False), norm(),
     "NORM mode STATISTICS needs 28-bit buffer words for its sums, this accelerator's are "
     "16 bits"),
    (DEFAULT, norm(dst_addr=1000),
     "NORM destination of 2 rows of 16 words (stride 16) at 1000 runs past the end of the "
     "out buffer (1024 words)"),
    (DEFAULT, norm(dst_stride=15), "NORM destination stride 15 is shorter than a row (16 "
     "words)"),
    (DEFAULT, norm(dst_addr=1024), "NORM destination address 1024 is outside the out buffer "
     "(0..1023)"),
    (NORMALISING, norm(mode="NORMALISE", param_addr=480, dst_addr=0, dst_stride=5),
     "NORM parameters of 34 words at 480 runs past the end of the weight buffer (500 "
     "words)"),
    (NORMALISING, norm(mode="NORMALISE", dst_addr=0, dst_stride=4),
     "NORM destination stride 4 is shorter than a row (5 words)"),
    (NORMALISING, norm(mode="NORMALISE", channels=64, src_stride=64, rows=1, dst_addr=290,
                       dst_stride=20),
     "NORM destination of 20 words at 290 runs past the end of the act buffer (300 words)"),
    (NORMALISING, norm(mode="THRESHOLD"),
     "NORM mode THRESHOLD needs the norm unit in 'sign' output mode, it is built for 'bfp'"),
    (DEFAULT, dict(opcode="MAXPOOL", src_addr=16380, dst_addr=0, rows=2, row_words=1,
                   window=4),
     "MAXPOOL source of 8 rows of 1 words (stride 1) at 16380 runs past the end of the act "
     "buffer (16384 words)"),
])
def test_encode_errors(cfg, instr, message):
    with pytest.raises(InstructionError, match=re.escape(message)) as info:
        encode(instr, cfg)
    # Region faults are ADDRESS, everything else ILLEGAL (docs/host_link.md).
    assert info.value.code is _expected_code(message)


# The three messages of InstructionSet._region: the only ADDRESS faults.
_ADDRESS_MESSAGES = re.compile(r"address -?\d+ is outside the \w+ buffer|stride \d+ is "
                               r"shorter than a row|runs past the end of the \w+ buffer")


def _expected_code(message):
    return Status.ADDRESS if _ADDRESS_MESSAGES.search(message) else Status.ILLEGAL


def test_status_codes_are_the_host_link_bytes():
    assert [(s.name, int(s)) for s in Status] == \
        [("OK", 0), ("ILLEGAL", 1), ("ADDRESS", 2), ("TRUNCATED", 3)]
    assert isinstance(Status.OK, int)
    assert InstructionError("x").code is Status.ILLEGAL
    assert isinstance(InstructionError("x"), ValueError)


@pytest.mark.parametrize("instr, message", [
    (load(addr=16384), "LOAD address 16384 is outside the act buffer (0..16383)"),
    (gemm(a_stride=1), "GEMM_XNOR operand a stride 1 is shorter than a row (2 words)"),
    (load(buffer="OUT", addr=1020, count=5),
     "LOAD of 5 words at 1020 runs past the end of the out buffer (1024 words)"),
])
def test_region_faults_are_address(instr, message):
    with pytest.raises(InstructionError, match=re.escape(message)) as info:
        encode(instr, DEFAULT)
    assert info.value.code is Status.ADDRESS


def test_encode_needs_a_dict():
    with pytest.raises(InstructionError, match=re.escape(
            "an instruction must be a dict, not 'HALT'")) as info:
        encode("HALT", DEFAULT)
    assert info.value.code is Status.ILLEGAL


def test_decode_unknown_opcode():
    isa = instruction_set(DEFAULT)
    unused = max(op.value for op in Opcode) + 1
    word = isa.raw_layout.const({"opcode": unused}).as_bits()
    with pytest.raises(InstructionError, match=re.escape(f"unknown opcode {unused}")) as info:
        decode(word, DEFAULT)
    assert info.value.code is Status.ILLEGAL


def test_decode_bad_enum_value():
    isa = instruction_set(DEFAULT)
    operands = isa.raw_operands[Opcode.LOAD].const(
        {"buffer": len(Buffer), "addr": 0, "count": 1}).as_bits()
    word = isa.raw_layout.const({"opcode": Opcode.LOAD.value, "operands": operands}).as_bits()
    with pytest.raises(InstructionError, match=re.escape(
            "LOAD buffer must be one of ACT, WEIGHT, OUT, not 3")) as info:
        decode(word, DEFAULT)
    assert info.value.code is Status.ILLEGAL


def test_decode_address_out_of_range():
    # SMALL's act buffer has 200 words: its 8-bit address fields can say 255.
    isa = instruction_set(SMALL)
    fields = decode(encode(gemm(k=32, a_stride=1, b_stride=1), SMALL), SMALL)
    raw = {name: getattr(value, "value", value) for name, value in fields.items()
           if name != "opcode"}
    operands = isa.raw_operands[Opcode.GEMM_XNOR].const(dict(raw, a_addr=255)).as_bits()
    word = isa.raw_layout.const({"opcode": Opcode.GEMM_XNOR.value,
                                 "operands": operands}).as_bits()
    with pytest.raises(InstructionError, match=re.escape(
            "GEMM_XNOR operand a address 255 is outside the act buffer (0..199)")) as info:
        decode(word, SMALL)
    assert info.value.code is Status.ADDRESS
    # With nonzero reserved bits as well, the word is ILLEGAL (both faults: ILLEGAL wins).
    word = isa.raw_layout.const({"opcode": Opcode.GEMM_XNOR.value, "operands": operands,
                                 "reserved": 1}).as_bits()
    with pytest.raises(InstructionError, match=re.escape(
            "unused bits of a GEMM_XNOR instruction are not zero")) as info:
        decode(word, SMALL)
    assert info.value.code is Status.ILLEGAL


def test_decode_count_zero():
    isa = instruction_set(DEFAULT)
    operands = isa.raw_operands[Opcode.STORE].const({"addr": 0, "count": 0}).as_bits()
    word = isa.raw_layout.const({"opcode": Opcode.STORE.value, "operands": operands}).as_bits()
    with pytest.raises(InstructionError, match=re.escape(
            "STORE count must be at least 1, not 0")) as info:
        decode(word, DEFAULT)
    assert info.value.code is Status.ILLEGAL


def test_decode_unused_bits():
    isa = instruction_set(DEFAULT)
    # HALT uses 8 bits of the operand union; set the top one of the union.
    operands = 2 ** (isa.layout["operands"].width - 1)
    word = isa.raw_layout.const({"opcode": Opcode.HALT.value, "operands": operands}).as_bits()
    with pytest.raises(InstructionError, match=re.escape(
            "unused bits of a HALT instruction are not zero")):
        decode(word, DEFAULT)
    word = isa.raw_layout.const({"opcode": Opcode.HALT.value, "reserved": 1}).as_bits()
    with pytest.raises(InstructionError, match=re.escape(
            "unused bits of a HALT instruction are not zero")) as info:
        decode(word, DEFAULT)
    assert info.value.code is Status.ILLEGAL


@pytest.mark.parametrize("word", [-1, 2 ** 160, "0", True])
def test_decode_word_range(word):
    with pytest.raises(InstructionError, match=re.escape(
            f"an instruction word must be a 160-bit unsigned integer, not {word!r}")) as info:
        decode(word, DEFAULT)
    assert info.value.code is Status.ILLEGAL


def test_statistics_need_a_norm_unit_with_statistics():
    config = DEFAULT.replace(lightnorm=LightNormConfig(channels=256, output="sign",
                                                       statistics=False))
    with pytest.raises(InstructionError, match=re.escape(
            "NORM mode STATISTICS needs the norm unit built with statistics, it is built "
            "without")) as info:
        encode(dict(opcode="NORM", mode="STATISTICS", src_addr=0, dst_addr=0, param_addr=0,
                    rows=2, channels=4, src_stride=4, dst_stride=4), config)
    assert info.value.code == Status.ILLEGAL


def test_maxpool_needs_the_maxpool_engine():
    # has_maxpool=False: MAXPOOL neither encodes nor decodes (the gateware says ILLEGAL).
    pool = {"opcode": "MAXPOOL", "src_addr": 0, "dst_addr": 8, "rows": 2, "row_words": 2,
            "window": 2}
    word = instruction_set(AcceleratorConfig()).encode(pool)
    isa = instruction_set(AcceleratorConfig(has_maxpool=False))
    message = "MAXPOOL needs the maxpool unit, which this accelerator does not have"
    with pytest.raises(InstructionError, match=message):
        isa.encode(pool)
    with pytest.raises(InstructionError, match=message):
        isa.decode(word)
