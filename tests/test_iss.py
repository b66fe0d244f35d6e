"""The instruction-set simulator: programs built with the encoder compute what numpy does,
malformed programs give exact errors, and the provisional timing model is pinned."""

import re
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lowbit.config.accelerator import AcceleratorConfig
from lowbit.config.lightnorm import LightNormConfig
from lowbit.config.lns import LNSMacConfig
from lowbit.config.xnor_array import XNORArrayConfig
from lowbit.golden.bfp import BFP, BFPFormat, dequantize
from lowbit.golden.lightnorm import LightNorm, range_batchnorm
from lowbit.golden.lns import LNSMac, LNSTensor, quantize
from lowbit.isa import (Buffer, NormMode, Opcode, Record, Source, Status, instruction_set,
                        lns_row_words)
from lowbit.iss import (ISS, ISSError, from_signed, pack_bfp_params, pack_bfp_rows,
                        pack_lns_rows, pack_rows, to_signed, unpack_bfp_params,
                        unpack_bfp_rows, unpack_lns_rows, unpack_rows)
from lowbit.program import Program

CONFIG = AcceleratorConfig()
# Small buffers (200 act words: 8-bit address fields can point past the end) and a norm
# unit that requantises to 2 bits.
SMALL = AcceleratorConfig(xnor_array=XNORArrayConfig(max_k=64), act_words=200,
                          weight_words=300, out_words=100,
                          lightnorm=LightNormConfig(channels=32, block=16,
                                                    output="multithreshold", act_bits=2))
HALT = dict(opcode="HALT", status=0)


def gemm(m, n, k, *, a_addr=0, b_addr=0, c_addr=0, a_stride, b_stride, c_stride=None,
         act_bits=1, act_signed=0, weight_bits=1, weight_signed=0):
    return dict(opcode="GEMM_XNOR", a_addr=a_addr, b_addr=b_addr, c_addr=c_addr, m=m, n=n,
                k=k, a_stride=a_stride, b_stride=b_stride,
                c_stride=n if c_stride is None else c_stride, act_bits=act_bits,
                act_signed=act_signed, weight_bits=weight_bits, weight_signed=weight_signed)


def signs(rng, shape):
    return rng.choice(np.array([-1, 1]), size=shape)


def test_binary_matmul_program():
    rng = np.random.default_rng(1)
    m, n, k = 6, 9, 70  # more rows and columns than the 4x4 array; K not a word multiple
    a, b = signs(rng, (m, k)), signs(rng, (n, k))
    wa, wb = pack_rows(a, 1, False, 32), pack_rows(b, 1, False, 32)
    program = Program(CONFIG, [
        dict(opcode="LOAD", buffer="ACT", source="INPUT", addr=0, count=wa.size),
        dict(opcode="LOAD", buffer="WEIGHT", source="CONST", addr=0, count=wb.size),
        gemm(m, n, k, a_stride=3, b_stride=3),
        dict(opcode="STORE", buffer="OUT", addr=0, count=m * n),
        dict(HALT, status=7),
    ], constants=wb.reshape(-1))
    result = ISS(CONFIG).run(program, inputs=wa.reshape(-1))
    (out,) = result.outputs
    assert np.array_equal(to_signed(out, 32).reshape(m, n), a @ b.T)
    assert result.status == 7 and result.instructions == 5
    assert result.cycles == sum(step["cycles"] for step in result.trace)
    assert [step["opcode"] for step in result.trace] == \
        ["LOAD", "LOAD", "GEMM_XNOR", "STORE", "HALT"]
    assert result.bytes_in == 5 * 20 + (wa.size + wb.size) * 4
    assert result.bytes_out == m * n * 4
    # 2 x 3 tiles of 3 beats each (one XNOR pass over 3 words).
    assert result.unit_cycles["xnor_array"] == 2 * 3 * 3


@pytest.mark.parametrize("act, weight", [
    ((2, 0), (1, 0)), ((3, 1), (2, 1)), ((1, 0), (4, 1)), ((8, 1), (8, 1))])
def test_bit_serial_matmul_with_strides(act, weight):
    rng = np.random.default_rng(2)
    m, n, k = 5, 6, 45
    (ab, asg), (wbits, wsg) = act, weight

    def operand(bits, signed, rows):
        if bits == 1:
            return signs(rng, (rows, k))
        low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1)) if signed else (0, 2 ** bits)
        return rng.integers(low, high, size=(rows, k))

    a, b = operand(ab, asg, m), operand(wbits, wsg, n)
    wa, wb = pack_rows(a, ab, asg, 32), pack_rows(b, wbits, wsg, 32)
    # Rows one word apart more than needed, at nonzero addresses, results strided too.
    a_stride, b_stride = wa.shape[1] + 1, wb.shape[1] + 1
    a_words = np.zeros((m, a_stride), dtype=np.uint64)
    a_words[:, :wa.shape[1]] = wa
    b_words = np.zeros((n, b_stride), dtype=np.uint64)
    b_words[:, :wb.shape[1]] = wb
    program = Program(CONFIG, [
        dict(opcode="LOAD", buffer="ACT", source="INPUT", addr=10, count=a_words.size),
        dict(opcode="LOAD", buffer="WEIGHT", source="CONST", addr=20, count=b_words.size),
        gemm(m, n, k, a_addr=10, b_addr=20, c_addr=3, a_stride=a_stride, b_stride=b_stride,
             c_stride=n + 2, act_bits=ab, act_signed=asg, weight_bits=wbits,
             weight_signed=wsg),
        dict(opcode="STORE", buffer="OUT", addr=3, count=(m - 1) * (n + 2) + n),
        HALT,
    ], constants=b_words.reshape(-1))
    (out,) = ISS(CONFIG).run(program, inputs=a_words.reshape(-1)).outputs
    out = np.concatenate([to_signed(out, 32), np.zeros(2, dtype=np.int64)])
    assert np.array_equal(out.reshape(m, n + 2)[:, :n], a @ b.T)


def _threshold_layer(config, x_rows, channels, t, flip):
    """A program: LOAD x (as output-buffer values) and thresholds, NORM, STORE act rows."""
    norm = config.lightnorm
    mode = "THRESHOLD" if norm.output == "sign" else "REQUANTISE"
    dst_row = norm.levels * -(-channels // config.word)
    params = np.concatenate([from_signed(t.reshape(-1), config.word),
                             flip.astype(np.uint64)])
    rows = x_rows.shape[0]
    return Program(config, [
        dict(opcode="LOAD", buffer="OUT", source="INPUT", addr=0, count=x_rows.size),
        dict(opcode="LOAD", buffer="WEIGHT", source="CONST", addr=5, count=params.size),
        dict(opcode="NORM", mode=mode, src_addr=0, dst_addr=1, param_addr=5, rows=rows,
             channels=channels, src_stride=channels, dst_stride=dst_row),
        dict(opcode="STORE", buffer="ACT", addr=1, count=rows * dst_row),
        HALT,
    ], constants=params), from_signed(x_rows.reshape(-1), config.word), dst_row


def test_norm_threshold_gives_sign_bits():
    rng = np.random.default_rng(3)
    rows, channels = 3, 40
    x = rng.integers(-50, 50, size=(rows, channels))
    t = rng.integers(-20, 20, size=(channels, 1))
    flip = rng.integers(0, 2, size=channels)
    program, inputs, dst_row = _threshold_layer(CONFIG, x, channels, t, flip)
    (out,) = ISS(CONFIG).run(program, inputs).outputs
    got = unpack_rows(out.reshape(rows, dst_row), channels, 1, False, 32)
    expected = np.where(np.where(flip == 1, x <= t[:, 0], x >= t[:, 0]), 1, -1)
    assert np.array_equal(got, expected)


def test_norm_requantise_gives_k_bit_activations():
    rng = np.random.default_rng(4)
    rows, channels = 4, 20
    x = rng.integers(-50, 50, size=(rows, channels))
    t = np.sort(rng.integers(-30, 30, size=(channels, 3)), axis=1)
    flip = np.zeros(channels, dtype=np.int64)
    program, inputs, dst_row = _threshold_layer(SMALL, x, channels, t, flip)
    (out,) = ISS(SMALL).run(program, inputs).outputs
    got = unpack_rows(out.reshape(rows, dst_row), channels, 2, False, 32)
    expected = (x[:, :, None] >= t[None]).sum(axis=2)
    assert np.array_equal(got, expected)


def test_maxpool_ors_binary_rows():
    rng = np.random.default_rng(5)
    rows, window, k = 3, 2, 50
    x = signs(rng, (rows * window, k))
    words = pack_rows(x, 1, False, 32)
    program = Program(CONFIG, [
        dict(opcode="LOAD", buffer="ACT", source="INPUT", addr=0, count=words.size),
        dict(opcode="MAXPOOL", src_addr=0, dst_addr=100, rows=rows, row_words=2,
             window=window),
        dict(opcode="STORE", buffer="ACT", addr=100, count=rows * 2),
        HALT,
    ])
    (out,) = ISS(CONFIG).run(program, words.reshape(-1)).outputs
    got = unpack_rows(out.reshape(rows, 2), k, 1, False, 32)
    assert np.array_equal(got, x.reshape(rows, window, k).max(axis=1))


@settings(max_examples=40)
@given(bits=st.integers(1, 8), signed=st.booleans(), k=st.integers(1, 100),
       word=st.sampled_from([8, 16, 32, 64]), seed=st.integers(0, 2 ** 32 - 1))
def test_pack_unpack_round_trip(bits, signed, k, word, seed):
    signed = signed and bits > 1
    rng = np.random.default_rng(seed)
    if bits == 1:
        x = signs(rng, (3, k))
    else:
        low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1)) if signed else (0, 2 ** bits)
        x = rng.integers(low, high, size=(3, k))
    words = pack_rows(x, bits, signed, word)
    assert words.shape == (3, bits * -(-k // word))
    assert int(words.max(initial=0)) < 2 ** word
    assert np.array_equal(unpack_rows(words, k, bits, signed, word), x)


def test_front_end_cycles():
    # The controller's front end (hw/accelerator.py): a 160-bit instruction takes 20 beats
    # on the 8-bit link, then 5 check cycles (PRECHECK, three regions through the two-stage
    # region checker) and a dispatch; a LOAD waits a cycle, takes 4
    # beats a word and writes the last word a cycle later; HALT ends the count the cycle
    # after its dispatch. tests/test_timing.py checks the whole model against the RTL.
    program = Program(CONFIG, [
        dict(opcode="LOAD", buffer="ACT", source="INPUT", addr=0, count=4), HALT])
    result = ISS(CONFIG).run(program, inputs=[1, 2, 3, 4])
    assert [step["cycles"] for step in result.trace] == [20 + 8 + 16, 20 + 6]
    assert result.cycles == 20 + 8 + 16 + 20 + 6
    assert result.unit_cycles["host_link"] == 20 + 16 + 20


def test_buffers_are_configured_sizes():
    iss = ISS(SMALL)
    assert {b.name: len(v) for b, v in iss.buffers.items()} == \
        {"ACT": 200, "WEIGHT": 300, "OUT": 100}


def test_halt_stops_before_later_words():
    isa = instruction_set(CONFIG)
    bad = isa.raw_layout.const({"opcode": max(op.value for op in Opcode) + 1}).as_bits()
    result = ISS(CONFIG).run_words([isa.encode(dict(HALT, status=3)), bad])
    assert result.status == 3 and result.instructions == 1 and result.outputs == []


# Malformed programs -------------------------------------------------------------------------

def test_illegal_opcode():
    isa = instruction_set(CONFIG)
    unused = max(op.value for op in Opcode) + 1
    bad = isa.raw_layout.const({"opcode": unused}).as_bits()
    load = isa.encode(dict(opcode="LOAD", buffer="ACT", source="INPUT", addr=0, count=1))
    with pytest.raises(ISSError, match=re.escape(f"instruction 1: unknown opcode {unused}")):
        ISS(CONFIG).run_words([load, bad], inputs=[0])


def test_address_out_of_range():
    isa = instruction_set(SMALL)
    fields = isa.check(gemm(2, 2, 32, a_stride=1, b_stride=1))
    raw = {name: value for name, value in fields.items() if name != "opcode"}
    operands = isa.raw_operands[Opcode.GEMM_XNOR].const(dict(raw, a_addr=250)).as_bits()
    word = isa.raw_layout.const({"opcode": Opcode.GEMM_XNOR.value,
                                 "operands": operands}).as_bits()
    with pytest.raises(ISSError, match=re.escape(
            "instruction 0: GEMM_XNOR operand a address 250 is outside the act buffer "
            "(0..199)")):
        ISS(SMALL).run_words([word])


def test_missing_halt():
    isa = instruction_set(CONFIG)
    load = isa.encode(dict(opcode="LOAD", buffer="ACT", source="INPUT", addr=0, count=1))
    with pytest.raises(ISSError, match=re.escape(
            "program ended without HALT after 2 instructions")):
        ISS(CONFIG).run_words([load, load], inputs=[1, 2])


def test_input_underrun():
    program = Program(CONFIG, [
        dict(opcode="LOAD", buffer="ACT", source="INPUT", addr=0, count=4), HALT])
    with pytest.raises(ISSError, match=re.escape(
            "instruction 0: LOAD needs 4 INPUT words, 2 remain")):
        ISS(CONFIG).run(program, inputs=[1, 2])


def test_constant_underrun():
    isa = instruction_set(CONFIG)
    load = isa.encode(dict(opcode="LOAD", buffer="WEIGHT", source="CONST", addr=0, count=3))
    with pytest.raises(ISSError, match=re.escape(
            "instruction 0: LOAD needs 3 CONST words, 1 remain")):
        ISS(CONFIG).run_words([load], constants=[5])


def test_other_configuration():
    program = Program(SMALL, [HALT])
    with pytest.raises(ISSError, match=re.escape(
            f"program was built for accelerator configuration {SMALL.fingerprint()}, this "
            f"accelerator is {CONFIG.fingerprint()}")):
        ISS(CONFIG).run(program)


def test_norm_values_wrap_to_the_unit_fields():
    # The hardware keeps the low input_width bits of an input and the low input_width + 1
    # bits of a threshold: 2^20 + 5 reads as 5, 2^17 + 3 as threshold 3, flip 3 as 1.
    x = np.array([[2 ** 20 + 5, 2 ** 20 + 2]])
    program, inputs, _ = _threshold_layer(CONFIG, x, 2, np.array([[2 ** 17 + 3]] * 2),
                                          np.array([3, 0]))
    wrapped, inputs2, _ = _threshold_layer(CONFIG, np.array([[5, 2]]), 2,
                                           np.array([[3]] * 2), np.array([1, 0]))
    assert [o.tolist() for o in ISS(CONFIG).run(program, inputs).outputs] == \
        [o.tolist() for o in ISS(CONFIG).run(wrapped, inputs2).outputs]


def test_type_errors():
    with pytest.raises(TypeError, match=re.escape(
            "config must be an AcceleratorConfig, not 'x'")):
        ISS("x")
    with pytest.raises(TypeError, match=re.escape("program must be a Program, not [0]")):
        ISS(CONFIG).run([0])


def test_two_layer_binary_mlp():
    # GEMM -> NORM THRESHOLD -> GEMM: the norm unit's output rows are the next layer's A,
    # so two layers of a binary network are one LOAD per operand plus five instructions.
    rng = np.random.default_rng(6)
    batch, n_in, hidden, n_out = 5, 100, 40, 7
    x = signs(rng, (batch, n_in))
    w1, w2 = signs(rng, (hidden, n_in)), signs(rng, (n_out, hidden))
    t = rng.integers(-6, 7, size=(hidden, 1))
    flip = rng.integers(0, 2, size=hidden)
    wx, ww1, ww2 = (pack_rows(v, 1, False, 32) for v in (x, w1, w2))
    params = np.concatenate([from_signed(t.reshape(-1), 32), flip.astype(np.uint64)])
    w2_addr, p_addr, h_addr = ww1.size, ww1.size + ww2.size, wx.size
    constants = np.concatenate([ww1.reshape(-1), ww2.reshape(-1), params])
    program = Program(CONFIG, [
        dict(opcode="LOAD", buffer="WEIGHT", source="CONST", addr=0, count=constants.size),
        dict(opcode="LOAD", buffer="ACT", source="INPUT", addr=0, count=wx.size),
        gemm(batch, hidden, n_in, a_stride=4, b_stride=4),
        dict(opcode="NORM", mode="THRESHOLD", src_addr=0, dst_addr=h_addr, param_addr=p_addr,
             rows=batch, channels=hidden, src_stride=hidden, dst_stride=2),
        gemm(batch, n_out, hidden, a_addr=h_addr, b_addr=w2_addr, c_addr=0, a_stride=2,
             b_stride=2),
        dict(opcode="STORE", buffer="OUT", addr=0, count=batch * n_out),
        HALT,
    ], constants=constants)
    result = ISS(CONFIG).run(program, inputs=wx.reshape(-1))
    y1 = x @ w1.T
    h = np.where(np.where(flip == 1, y1 <= t[:, 0], y1 >= t[:, 0]), 1, -1)
    expected = h @ w2.T
    assert np.array_equal(to_signed(result.outputs[0], 32).reshape(batch, n_out), expected)
    # 40 channels in blocks of 16: 3 parameter LOAD beats, then 3 beats per row.
    assert result.unit_cycles["lightnorm"] == 3 + batch * 3


# The host link (run_stream) -----------------------------------------------------------------

def parse_records(blob, config):
    """A minimal host-side parser of docs/host_link.md (the real one is lowbit.runtime's):
    a list of ("DATA", words) and ("STATUS", code, halt status, index, counters)."""
    word_bytes = config.word // 8
    records, pos = [], 0
    while pos < len(blob):
        kind, b1, b2, b3, value = struct.unpack_from("<BBBBI", blob, pos)
        pos += 8
        if kind == Record.DATA:
            assert (b1, b2, b3) == (0, 0, 0)
            words = [int.from_bytes(blob[pos + i * word_bytes:pos + (i + 1) * word_bytes],
                                    "little") for i in range(value)]
            assert len(blob) >= pos + value * word_bytes
            pos += value * word_bytes
            records.append(("DATA", np.array(words, dtype=np.uint64)))
        else:
            assert kind == Record.STATUS and b3 == 0
            counters = dict(zip(("cycles", "xnor_busy", "norm_busy", "lns_busy"),
                                struct.unpack_from("<IIII", blob, pos)))
            pos += 16
            records.append(("STATUS", Status(b1), b2, value, counters))
    return records


def host_bytes(program, inputs=()):
    """What the host sends for `program`: each instruction word, every LOAD followed by its
    words from the constants or the inputs (docs/host_link.md)."""
    isa = instruction_set(program.config)
    word_bytes = program.config.word // 8
    sources = {Source.CONST: list(program.constants), Source.INPUT: list(inputs)}
    out = bytearray()
    for instr, word in zip(program.instructions, program.words()):
        out += word.to_bytes(isa.bytes, "little")
        if instr["opcode"] == Opcode.LOAD:
            source = sources[instr["source"]]
            for value in source[:instr["count"]]:
                out += int(value).to_bytes(word_bytes, "little")
            del source[:instr["count"]]
    return bytes(out)


def _matmul_program(status=7):
    rng = np.random.default_rng(1)
    m, n, k = 6, 9, 70
    a, b = signs(rng, (m, k)), signs(rng, (n, k))
    wa, wb = pack_rows(a, 1, False, 32), pack_rows(b, 1, False, 32)
    program = Program(CONFIG, [
        dict(opcode="LOAD", buffer="ACT", source="INPUT", addr=0, count=wa.size),
        dict(opcode="LOAD", buffer="WEIGHT", source="CONST", addr=0, count=wb.size),
        gemm(m, n, k, a_stride=3, b_stride=3),
        dict(opcode="STORE", buffer="OUT", addr=0, count=m * n),
        dict(HALT, status=status),
    ], constants=wb.reshape(-1))
    return program, wa.reshape(-1), a @ b.T


def test_stream_runs_a_program_like_run():
    program, inputs, expected = _matmul_program()
    result = ISS(CONFIG).run(program, inputs)
    iss = ISS(CONFIG)
    records = parse_records(iss.run_stream(host_bytes(program, inputs)), CONFIG)
    assert [r[0] for r in records] == ["DATA", "STATUS"]
    assert np.array_equal(to_signed(records[0][1], 32).reshape(expected.shape), expected)
    _, code, status, index, counters = records[1]
    assert (code, status, index) == (Status.OK, 7, 4)
    # The counters are the ISS's estimates, the same as run's.
    assert counters == {"cycles": result.cycles,
                        "xnor_busy": result.unit_cycles["xnor_array"],
                        "norm_busy": 0, "lns_busy": 0}
    assert counters["xnor_busy"] == 2 * 3 * 3
    (streamed,) = iss.results
    assert streamed.cycles == result.cycles and streamed.trace == result.trace
    assert streamed.bytes_in == result.bytes_in and streamed.bytes_out == result.bytes_out


def test_stream_counters_count_norm_beats():
    rng = np.random.default_rng(3)
    x = rng.integers(-50, 50, size=(3, 40))
    program, inputs, _ = _threshold_layer(CONFIG, x, 40, np.zeros((40, 1), dtype=np.int64),
                                          np.zeros(40, dtype=np.int64))
    (_, (_, code, _, _, counters)) = parse_records(
        ISS(CONFIG).run_stream(host_bytes(program, inputs)), CONFIG)
    assert code is Status.OK
    assert counters["norm_busy"] == 3 + 3 * 3 and counters["xnor_busy"] == 0
    assert counters["cycles"] == ISS(CONFIG).run(program, inputs).cycles


def _word(config, instr):
    return instruction_set(config).encode(instr).to_bytes(instruction_set(config).bytes,
                                                          "little")


def test_stream_illegal_instruction_stops_the_program():
    isa = instruction_set(CONFIG)
    unused = max(op.value for op in Opcode) + 1
    bad = isa.raw_layout.const({"opcode": unused}).as_bits().to_bytes(isa.bytes, "little")
    load = dict(opcode="LOAD", buffer="ACT", source="INPUT", addr=0, count=1)
    store = dict(opcode="STORE", buffer="ACT", addr=0, count=1)
    data = (_word(CONFIG, load) + (5).to_bytes(4, "little") + _word(CONFIG, store) + bad
            + _word(CONFIG, store) + _word(CONFIG, HALT)
            # The next program is discarded with the rest of the input.
            + _word(CONFIG, HALT))
    records = parse_records(ISS(CONFIG).run_stream(data), CONFIG)
    assert [r[0] for r in records] == ["DATA", "STATUS"]
    assert records[0][1].tolist() == [5]
    _, code, status, index, counters = records[1]
    assert (code, status, index) == (Status.ILLEGAL, 0, 2)
    # LOAD (fetch, checks, a 4-beat word), STORE (fetch, checks, an 8-byte header), then
    # the bad word's fetch and checks: counting stops at its dispatch.
    assert counters["cycles"] == (20 + 8 + 4) + (20 + 7 + 8) + (20 + 5)


def test_stream_illegal_norm_mode():
    # A well-formed NORM REQUANTISE word is ILLEGAL on a unit built for sign outputs.
    isa = instruction_set(CONFIG)
    norm = dict(mode=NormMode.REQUANTISE.value, src_addr=0, dst_addr=0, param_addr=0, rows=1,
                channels=16, src_stride=16, dst_stride=1)
    operands = isa.raw_operands[Opcode.NORM].const(norm).as_bits()
    word = isa.raw_layout.const({"opcode": Opcode.NORM.value, "operands": operands}).as_bits()
    records = parse_records(ISS(CONFIG).run_stream(word.to_bytes(isa.bytes, "little")), CONFIG)
    assert records[0][1:4] == (Status.ILLEGAL, 0, 0)


def test_stream_address_fault_has_no_effect():
    isa = instruction_set(SMALL)
    fields = isa.check(gemm(2, 2, 32, a_stride=1, b_stride=1))
    raw = {name: value for name, value in fields.items() if name != "opcode"}
    operands = isa.raw_operands[Opcode.GEMM_XNOR].const(dict(raw, a_addr=250)).as_bits()
    bad = isa.raw_layout.const({"opcode": Opcode.GEMM_XNOR.value,
                                "operands": operands}).as_bits().to_bytes(isa.bytes, "little")
    iss = ISS(SMALL)
    iss.buffers[Buffer.OUT][:] = 9
    records = parse_records(iss.run_stream(_word(SMALL, HALT) + bad), SMALL)
    assert [r[1:4] for r in records] == [(Status.OK, 0, 0), (Status.ADDRESS, 0, 0)]
    assert np.all(iss.buffers[Buffer.OUT] == 9)
    assert [r.code for r in iss.results] == [Status.OK, Status.ADDRESS]


def _load_store_program():
    return Program(CONFIG, [
        dict(opcode="LOAD", buffer="ACT", source="INPUT", addr=0, count=3),
        dict(opcode="STORE", buffer="ACT", addr=0, count=3),
        dict(HALT, status=1),
    ])


@pytest.mark.parametrize("cut, index, written", [
    (0, None, 0),        # nothing sent: no program, no record
    (1, 0, 0),           # inside the first instruction word
    (20, 0, 0),          # the LOAD word, none of its data
    (26, 0, 1),          # inside its second data word: the first was written
    (32, 1, 3),          # between instructions, before the STORE
    (45, 1, 3),          # inside the STORE
    (52, 2, 3),          # between instructions, after the STORE's DATA record
    (60, 2, 3),          # inside the HALT
])
def test_stream_truncated(cut, index, written):
    data = host_bytes(_load_store_program(), [11, 12, 13])
    assert len(data) == 20 + 12 + 20 + 20
    iss = ISS(CONFIG)
    records = parse_records(iss.run_stream(data[:cut]), CONFIG)
    if index is None:
        assert records == [] and iss.results == []
        return
    *rest, (_, code, status, got, counters) = records
    assert (code, status, got) == (Status.TRUNCATED, 0, index)
    assert [r[0] for r in rest] == (["DATA"] if index == 2 else [])
    # Every byte received is a counted cycle (one beat on the 8-bit link); instructions that
    # ran cost their checks and data on top (the timing model against the RTL:
    # tests/test_timing.py).
    assert counters["cycles"] >= cut
    if cut < 20:
        assert counters["cycles"] == cut
    assert iss.buffers[Buffer.ACT][:3].tolist() == [11, 12, 13][:written] + [0] * (3 - written)


def test_stream_runs_programs_in_sequence_with_resident_buffers():
    program, inputs, expected = _matmul_program(status=2)
    weights = program.constants
    # Program 1 loads the weights; programs 2 and 3 reuse them (buffers stay between
    # programs and between calls).
    load_weights = Program(CONFIG, [
        dict(opcode="LOAD", buffer="WEIGHT", source="CONST", addr=0, count=weights.size),
        dict(HALT, status=1)], constants=weights)
    compute = Program(CONFIG, [program.instructions[0], *program.instructions[2:]])
    iss = ISS(CONFIG)
    first = iss.run_stream(host_bytes(load_weights) + host_bytes(compute, inputs))
    records = parse_records(first, CONFIG)
    assert [(r[0], r[1:4] if r[0] == "STATUS" else None) for r in records] == [
        ("STATUS", (Status.OK, 1, 1)), ("DATA", None), ("STATUS", (Status.OK, 2, 3))]
    assert np.array_equal(to_signed(records[1][1], 32).reshape(expected.shape), expected)
    assert len(iss.results) == 2
    # Counters restart with each program.
    assert records[0][4]["xnor_busy"] == 0 and records[2][4]["xnor_busy"] == 18
    again = parse_records(iss.run_stream(host_bytes(compute, inputs)), CONFIG)
    assert np.array_equal(again[0][1], records[1][1])
    iss.reset()
    cleared = parse_records(iss.run_stream(host_bytes(compute, inputs)), CONFIG)
    assert not np.array_equal(cleared[0][1], records[1][1])


def test_stream_needs_bytes():
    with pytest.raises(TypeError, match=re.escape("data must be bytes, not [0]")):
        ISS(CONFIG).run_stream([0])
    assert ISS(CONFIG).run_stream(b"") == b""


# GEMM_LNS ----------------------------------------------------------------------------------

# A second LNS format: 5-bit words (6 per 32-bit buffer word, 2 bits left over), 3 lanes.
LNS_SMALL = AcceleratorConfig(lns_mac=LNSMacConfig(lanes=3, bits=5, gamma=4, max_k=40),
                              has_xnor_array=False)


def lns_rows(rng, shape, lns):
    """Random LNS rows of every kind: real data, zeros with either sign, the largest code."""
    t = quantize(rng.standard_normal(shape) * rng.choice([0.0, 1.0], p=[0.1, 0.9],
                                                         size=shape),
                 bits=lns.bits, gamma=lns.gamma)
    code = np.where(rng.random(shape) < 0.1, lns.c_max, t.code)
    sign = np.where(code == 0, rng.integers(0, 2, size=shape), t.sign)  # zero is zero
    return LNSTensor(sign, code, 0, lns.bits, lns.gamma)


def _lns_program(config, a, b, *, a_addr=0, b_addr=0, c_addr=0, pad=0):
    """LOAD A (input) and B (constants) with `pad` spare words per row, GEMM_LNS, STORE C.
    Returns (program, inputs, c_stride)."""
    lns, word = config.lns_mac, config.word
    (m, k), n = a.shape, b.shape[0]
    row = lns_row_words(k, lns.bits, word)
    stride = row + pad
    words = {}
    for name, t in (("a", a), ("b", b)):
        packed = np.zeros((t.shape[0], stride), dtype=np.uint64)
        packed[:, :row] = pack_lns_rows(t, lns, word)
        words[name] = packed.reshape(-1)
    c_stride = n + pad
    program = Program(config, [
        dict(opcode="LOAD", buffer="ACT", source="INPUT", addr=a_addr, count=words["a"].size),
        dict(opcode="LOAD", buffer="WEIGHT", source="CONST", addr=b_addr,
             count=words["b"].size),
        dict(opcode="GEMM_LNS", a_addr=a_addr, b_addr=b_addr, c_addr=c_addr, m=m, n=n, k=k,
             a_stride=stride, b_stride=stride, c_stride=c_stride),
        dict(opcode="STORE", buffer="OUT", addr=c_addr, count=(m - 1) * c_stride + n),
        HALT,
    ], constants=words["b"])
    return program, words["a"], c_stride


def _golden_dots(lns, a, b):
    # The unit's beat-level golden model, one dot product at a time.
    unit = LNSMac(lns)
    return np.array([[unit.dot(a[i], b[j]) for j in range(b.shape[0])]
                     for i in range(a.shape[0])], dtype=np.int64)


@pytest.mark.parametrize("config, m, n, k, pad", [
    (CONFIG, 5, 6, 37, 0),         # K not a multiple of 4 LNS words per buffer word
    (CONFIG, 3, 2, 1, 2),          # one product, strided rows
    (CONFIG, 2, 3, 256, 1),        # K = max_k
    (LNS_SMALL, 4, 5, 40, 3),      # 6 LNS words per buffer word, 2 spare bits
    (LNS_SMALL, 1, 1, 7, 0),
])
def test_gemm_lns_matches_the_golden_unit(config, m, n, k, pad):
    rng = np.random.default_rng(m * 100 + k)
    lns = config.lns_mac
    a, b = lns_rows(rng, (m, k), lns), lns_rows(rng, (n, k), lns)
    program, inputs, c_stride = _lns_program(config, a, b, a_addr=7, b_addr=3, c_addr=2,
                                             pad=pad)
    result = ISS(config).run(program, inputs)
    (out,) = result.outputs
    out = np.concatenate([to_signed(out, config.word), np.zeros(pad, dtype=np.int64)])
    assert np.array_equal(out.reshape(m, c_stride)[:, :n], _golden_dots(lns, a, b))
    beats = -(-k // lns.lanes)
    assert result.unit_cycles["lns_mac"] == m * n * beats


def test_gemm_lns_extremes():
    # The largest dot products either way (every product +-1 at full scale, K = max_k), and
    # all-zero rows (zero codes of either sign).
    lns = CONFIG.lns_mac
    k = lns.max_k
    full = np.full((1, k), lns.c_max)
    a = LNSTensor(np.array([[0] * k, [1] * k, [1] * k]), np.concatenate(
        [full, full, np.zeros((1, k), dtype=np.int64)]), 0, lns.bits, lns.gamma)
    b = LNSTensor(np.zeros((2, k), dtype=np.int64), np.concatenate([full, full]), 0,
                  lns.bits, lns.gamma)
    program, inputs, _ = _lns_program(CONFIG, a, b)
    (out,) = ISS(CONFIG).run(program, inputs).outputs
    expected = _golden_dots(lns, a, b)
    assert np.array_equal(to_signed(out, 32).reshape(3, 2), expected)
    assert expected[0, 0] == -expected[1, 0] > 0 and np.all(expected[2] == 0)
    assert abs(int(expected[0, 0])) < 2 ** (lns.out_width - 1)


def test_gemm_lns_ignores_spare_slots_and_bits():
    # Slots past K in a row's last word, and the bits past the last slot, are not read.
    rng = np.random.default_rng(8)
    lns = LNS_SMALL.lns_mac
    k = 8  # two words of 6 slots: 4 spare slots and 2 spare bits in the second
    a, b = lns_rows(rng, (2, k), lns), lns_rows(rng, (2, k), lns)
    program, inputs, _ = _lns_program(LNS_SMALL, a, b)
    clean = ISS(LNS_SMALL).run(program, inputs).outputs[0]
    dirty = inputs.copy()
    dirty[1::2] |= np.uint64(2 ** 32 - 2 ** 10)  # slots 2..5 and the spare bits
    assert np.array_equal(ISS(LNS_SMALL).run(program, dirty).outputs[0], clean)


def test_lns_rows_layout():
    # Element t in bits (t % per_word) * bits of word t // per_word, each LNS word as the
    # unit's word_layout (code low, sign on top): Amaranth's ArrayLayout of word_layout.
    from amaranth.lib import data
    lns = CONFIG.lns_mac
    rng = np.random.default_rng(9)
    t = lns_rows(rng, (3, 10), lns)
    words = pack_lns_rows(t, lns, 32)
    assert words.shape == (3, 3)
    layout = data.ArrayLayout(lns.word_layout, 4)
    for r in range(3):
        elements = t[r].words(lns) + [{"code": 0, "sign": 0}] * 2
        for w in range(3):
            assert int(words[r, w]) == layout.const(elements[4 * w:4 * w + 4]).as_bits()
    back = unpack_lns_rows(words, 10, lns, 32)
    assert np.array_equal(back.code, t.code) and np.array_equal(back.sign, t.sign)


@settings(max_examples=30)
@given(bits=st.integers(3, 12), k=st.integers(1, 50), word=st.sampled_from([16, 32, 64]),
       seed=st.integers(0, 2 ** 32 - 1))
def test_lns_pack_unpack_round_trip(bits, k, word, seed):
    lns = LNSMacConfig(bits=bits, gamma=2)
    if bits > word:
        return
    rng = np.random.default_rng(seed)
    t = LNSTensor(rng.integers(0, 2, size=(2, k)), rng.integers(0, lns.c_max + 1,
                                                                 size=(2, k)), 0, bits, 2)
    words = pack_lns_rows(t, lns, word)
    assert words.shape == (2, -(-k // (word // bits)))
    assert int(words.max(initial=0)) < 2 ** (word // bits * bits)
    back = unpack_lns_rows(words, k, lns, word)
    assert np.array_equal(back.code, t.code) and np.array_equal(back.sign, t.sign)


def test_pack_lns_rows_errors():
    lns = CONFIG.lns_mac
    with pytest.raises(TypeError, match=re.escape("rows must be an LNSTensor, not [1]")):
        pack_lns_rows([1], lns, 32)
    other = LNSTensor(np.zeros((1, 2), dtype=np.int64), np.ones((1, 2), dtype=np.int64), 0,
                      6, 8)
    with pytest.raises(ValueError, match=re.escape(
            "rows are 6-bit gamma=8, the unit 8-bit gamma=8")):
        pack_lns_rows(other, lns, 32)
    flat = LNSTensor(np.zeros(2, dtype=np.int64), np.ones(2, dtype=np.int64), 0, 8, 8)
    with pytest.raises(ValueError, match=re.escape("LNS rows must be 2-D, not of shape (2,)")):
        pack_lns_rows(flat, lns, 32)
    big = LNSTensor(np.zeros((1, 1), dtype=np.int64), np.full((1, 1), 128), 0, 8, 8)
    with pytest.raises(ValueError, match=re.escape(
            "LNS rows hold codes outside 0..127 or signs other than 0 and 1")):
        pack_lns_rows(big, lns, 32)


def test_gemm_lns_over_the_host_link():
    rng = np.random.default_rng(10)
    lns = CONFIG.lns_mac
    a, b = lns_rows(rng, (2, 9), lns), lns_rows(rng, (3, 9), lns)
    program, inputs, _ = _lns_program(CONFIG, a, b)
    records = parse_records(ISS(CONFIG).run_stream(host_bytes(program, inputs)), CONFIG)
    assert np.array_equal(to_signed(records[0][1], 32).reshape(2, 3), _golden_dots(lns, a, b))
    assert records[1][4]["lns_busy"] == 2 * 3 * 3


# NORM STATISTICS and NORMALISE --------------------------------------------------------------

# A norm unit that normalises to BFP (64 channels in blocks of 16, 8-bit mantissas, 6-bit
# exponents: 134-bit blocks, five 32-bit words), and a second BFP format (53-bit blocks in
# two words, truncating, fewer guard bits).
BFP_CONFIG = AcceleratorConfig(lightnorm=LightNormConfig(channels=64, output="bfp"),
                               has_lns_mac=False)
BFP_SMALL = AcceleratorConfig(
    lightnorm=LightNormConfig(channels=24, block=8, mantissa=6, exponent=5,
                              rounding="truncate", guard_bits=2, chunks=4, max_batch=64,
                              output="bfp"),
    has_xnor_array=False, act_words=600, weight_words=300, out_words=900)


def _golden_stats(norm, x):
    """(sum, spread) per channel of x (rows, channels) from the unit's beat-level model."""
    padded = np.zeros((x.shape[0], norm.channels), dtype=np.int64)
    padded[:, :x.shape[1]] = x
    results = LightNorm(norm).run(LightNorm(norm).stat_beats(padded))
    stats = [s for r in sorted(results, key=lambda r: r["group"])
             for s in r["data"]["stats"]][:x.shape[1]]
    return (np.array([s["sum"] for s in stats]), np.array([s["spread"] for s in stats]))


def _golden_normalise(norm, x, params):
    """BFP (exp (rows, G), man (rows, G, block)) of the unit's beat-level model: LOAD every
    group's parameters, then APPLY each row."""
    rows, channels = x.shape
    groups = -(-channels // norm.block)
    padded = np.zeros((rows, norm.channels), dtype=np.int64)
    padded[:, :channels] = x
    zero = {"scale": [0] * norm.block, "scale_exp": 0, "offset": [0] * norm.block,
            "offset_exp": 0}
    unit = LightNorm(norm)
    # The parameters of channels past `channels` are not in the weight buffer: zero.
    loads = [{key: [v if g * norm.block + i < channels else 0 for i, v in enumerate(value)]
              if key in ("scale", "offset") else value for key, value in p.items()}
             for g, p in enumerate(params[:groups])] + [zero] * (norm.groups - groups)
    results = unit.run(unit.load_beats(loads) + unit.apply_beats(padded))
    out = [r["data"]["out"] for r in results]
    exp = np.array([o["exp"] for o in out]).reshape(rows, norm.groups)[:, :groups]
    man = np.array([o["man"] for o in out]).reshape(rows, norm.groups, norm.block)
    return exp, man[:, :groups]


def _statistics_program(config, x, *, src=0, dst, pad=0, dst_stride=None):
    rows, channels = x.shape
    src_stride = channels + pad
    words = np.zeros((rows, src_stride), dtype=np.uint64)
    words[:, :channels] = from_signed(x, config.word)
    dst_stride = channels if dst_stride is None else dst_stride
    return Program(config, [
        dict(opcode="LOAD", buffer="OUT", source="INPUT", addr=src, count=words.size),
        dict(opcode="NORM", mode="STATISTICS", src_addr=src, dst_addr=dst, param_addr=0,
             rows=rows, channels=channels, src_stride=src_stride, dst_stride=dst_stride),
        dict(opcode="STORE", buffer="OUT", addr=dst, count=dst_stride + channels),
        HALT,
    ]), words.reshape(-1)


@pytest.mark.parametrize("config, rows, channels", [
    (CONFIG, 21, 40),        # 21 rows in 8 chunks of 3 or 2; a partial channel block
    (CONFIG, 3, 16),         # fewer rows than chunks: 3 chunks of one row
    (CONFIG, 1, 256),        # one row, every channel
    (SMALL, 3, 16),
    (BFP_CONFIG, 9, 64),
    (BFP_SMALL, 30, 13),
])
def test_norm_statistics_matches_the_golden_unit(config, rows, channels):
    rng = np.random.default_rng(rows * channels)
    norm = config.lightnorm
    low, high = -2 ** (norm.input_width - 1), 2 ** (norm.input_width - 1)
    x = rng.integers(low, high, size=(rows, channels))
    x[0, 0], x[-1, -1] = low, high - 1  # the extremes of the unit's inputs
    dst = config.out_words - 2 * channels - 3
    program, inputs = _statistics_program(config, x, dst=dst, pad=1, dst_stride=channels + 3)
    result = ISS(config).run(program, inputs)
    (out,) = result.outputs
    values = to_signed(out, config.word)
    total, spread = _golden_stats(norm, x)
    assert np.array_equal(values[:channels], total)
    assert np.array_equal(values[channels + 3:], spread)
    # Chunks of one sample have no spread.
    assert np.all(spread >= 0) and np.any(spread > 0) == (rows > norm.chunks)
    assert result.unit_cycles["lightnorm"] == rows * -(-channels // norm.block)


def _bfp_params(rng, norm, channels):
    """Random in-range per-group BFP parameters (every group of the unit)."""
    fmt_m, fmt_e = norm.mantissa, norm.exponent
    man = lambda: rng.integers(-2 ** (fmt_m - 1), 2 ** (fmt_m - 1), size=norm.block)  # noqa
    exp = lambda: int(rng.integers(-2 ** (fmt_e - 1), 2 ** (fmt_e - 1)))  # noqa
    return [{"scale": man().tolist(), "scale_exp": exp(), "offset": man().tolist(),
             "offset_exp": exp()} for _ in range(norm.groups)]


def _normalise_program(config, x, params, *, dst=5, param_addr=3, pad=0):
    isa = instruction_set(config)
    rows, channels = x.shape
    row = isa.norm_dst_words(NormMode.NORMALISE, channels)
    p = pack_bfp_params(params, channels, config.word)
    assert p.size == isa.norm_param_words(NormMode.NORMALISE, channels)
    program = Program(config, [
        dict(opcode="LOAD", buffer="OUT", source="INPUT", addr=0, count=x.size),
        dict(opcode="LOAD", buffer="WEIGHT", source="CONST", addr=param_addr, count=p.size),
        dict(opcode="NORM", mode="NORMALISE", src_addr=0, dst_addr=dst,
             param_addr=param_addr, rows=rows, channels=channels, src_stride=channels,
             dst_stride=row + pad),
        dict(opcode="STORE", buffer="ACT", addr=dst, count=rows * (row + pad)),
        HALT,
    ], constants=p)
    return program, from_signed(x.reshape(-1), config.word), row


@pytest.mark.parametrize("config, rows, channels, pad", [
    (BFP_CONFIG, 6, 64, 0),
    (BFP_CONFIG, 4, 37, 2),      # a partial last block, strided rows
    (BFP_SMALL, 9, 24, 1),
    (BFP_SMALL, 2, 5, 0),
])
def test_norm_normalise_matches_the_golden_unit(config, rows, channels, pad):
    rng = np.random.default_rng(rows + channels)
    norm = config.lightnorm
    x = rng.integers(-3000, 3000, size=(rows, channels))
    x[0] = 0  # an all-zero row
    params = _bfp_params(rng, norm, channels)
    program, inputs, row = _normalise_program(config, x, params, pad=pad)
    (out,) = ISS(config).run(program, inputs).outputs
    words = out.reshape(rows, row + pad)
    got = unpack_bfp_rows(words[:, :row], channels, norm, config.word)
    exp, man = _golden_normalise(norm, x, params)
    assert np.array_equal(got.exp, exp) and np.array_equal(got.man, man)
    # Channels past `channels` in the last block are zero mantissas.
    assert np.all(got.man.reshape(rows, -1)[:, channels:] == 0)


def test_bfp_row_layout():
    # Block bits are the unit's output_layout, least significant first across the words:
    # the 6-bit exponent, then 16 mantissas of 8 bits, two's complement.
    norm = BFP_CONFIG.lightnorm
    man = np.zeros((1, 1, 16), dtype=np.int64)
    man[0, 0, :2] = [1, -1]
    man[0, 0, 15] = -128
    words = pack_bfp_rows(BFP(np.array([[-3]]), man), norm, 32)
    value = (2 ** 6 - 3) + 1 * 2 ** 6 + 255 * 2 ** 14 + 128 * 2 ** (6 + 15 * 8)
    assert words.tolist() == [[(value // 2 ** (32 * i)) % 2 ** 32 for i in range(5)]]
    back = unpack_bfp_rows(words, 16, norm, 32)
    assert back.exp.tolist() == [[-3]] and np.array_equal(back.man, man)


def test_bfp_params_layout():
    norm = BFP_SMALL.lightnorm  # blocks of 8
    params = [{"scale": list(range(8)), "scale_exp": -1, "offset": [-v for v in range(8)],
               "offset_exp": 2}, {"scale": [9] * 8, "scale_exp": 3, "offset": [7] * 8,
                                  "offset_exp": -4}, {}]
    words = pack_bfp_params(params, 10, 32)
    assert to_signed(words, 32).tolist() == (list(range(8)) + [9, 9]
                                             + [-v for v in range(8)] + [7, 7]
                                             + [-1, 3] + [2, -4])
    back = unpack_bfp_params(words, 10, norm, 32)
    assert back[0] == params[0]
    assert back[1]["scale"] == [9, 9] + [0] * 6 and back[1]["offset_exp"] == -4


def test_norm_normalise_parameters_wrap_to_their_fields():
    # The hardware keeps the low 8 bits of a mantissa: 200 reads as 200 - 256 = -56.
    x = np.ones((1, 16), dtype=np.int64)
    params = _bfp_params(np.random.default_rng(0), BFP_CONFIG.lightnorm, 16)
    program, inputs, _ = _normalise_program(BFP_CONFIG, x, params)
    wide = Program(BFP_CONFIG, program.instructions,
                   np.concatenate([[200], program.constants[1:]]))
    narrow = Program(BFP_CONFIG, program.instructions,
                     np.concatenate([[2 ** 32 - 56], program.constants[1:]]))
    assert [o.tolist() for o in ISS(BFP_CONFIG).run(wide, inputs).outputs] == \
        [o.tolist() for o in ISS(BFP_CONFIG).run(narrow, inputs).outputs]


def test_range_batch_norm_over_the_host_link():
    # Two programs on one accelerator: STATISTICS of a batch resident in the output buffer,
    # the host folds them into BFP parameters, then NORMALISE of the same resident batch.
    config, rows, channels = BFP_CONFIG, 16, 48
    norm = config.lightnorm
    rng = np.random.default_rng(11)
    x = np.round(rng.normal(40, 300, size=(rows, channels))).astype(np.int64)
    iss = ISS(config)
    stats, inputs = _statistics_program(config, x, dst=rows * channels)
    records = parse_records(iss.run_stream(host_bytes(stats, inputs)), config)
    (_, words), (_, code, _, _, counters) = records
    assert code is Status.OK and counters["norm_busy"] == rows * 3
    total, spread = to_signed(words[:channels], 32), to_signed(words[channels:], 32)
    gamma, beta = rng.uniform(0.5, 2, channels), rng.uniform(-1, 1, channels)
    pad = norm.channels - channels
    params, _, _ = LightNorm(norm).fold_affine(
        np.concatenate([total, np.zeros(pad)]), np.concatenate([spread, np.ones(pad)]),
        rows, np.concatenate([gamma, np.ones(pad)]), np.concatenate([beta, np.zeros(pad)]))
    p = pack_bfp_params(params, channels, config.word)
    row = instruction_set(config).norm_dst_words(NormMode.NORMALISE, channels)
    apply = Program(config, [
        dict(opcode="LOAD", buffer="WEIGHT", source="CONST", addr=0, count=p.size),
        dict(opcode="NORM", mode="NORMALISE", src_addr=0, dst_addr=0, param_addr=0,
             rows=rows, channels=channels, src_stride=channels, dst_stride=row),
        dict(opcode="STORE", buffer="ACT", addr=0, count=rows * row),
        HALT,
    ], constants=p)
    ((_, words), _) = parse_records(iss.run_stream(host_bytes(apply)), config)
    got = unpack_bfp_rows(words.reshape(rows, row), channels, norm, config.word)
    exp, man = _golden_normalise(norm, x, params)
    assert np.array_equal(got.exp, exp) and np.array_equal(got.man, man)
    # And it is batch norm: close to the float range batch norm.
    y = dequantize(got, BFPFormat.of(norm)).reshape(rows, -1)[:, :channels]
    reference = range_batchnorm(x, gamma, beta, chunks=norm.chunks)
    assert np.max(np.abs(y - reference)) < 0.05 * np.max(np.abs(reference))
