"""The instruction-set simulator: GEMM results against numpy (dot products ``x @ w.T`` and
threshold counts), memories wrapping as the gateware's do, the host-link side
(``run_stream``) with its records, errors, and the cycle model's closed forms on
hand-computed programs."""

import re

import numpy as np
import pytest

from lowbit.config.accelerator import AcceleratorConfig
from lowbit.isa import (DATA_HEADER, NO_WAIT, STATUS_COUNTERS, STATUS_RECORD, Opcode, Record,
                        Source, Status, instruction_set)
from lowbit.iss import ISS, ISSError
from lowbit.layout import (acc_threshold, dot_from_acc, pack_act, pack_thresholds,
                           pack_weights, plane_words, tiles, unpack_act, unpack_scores)
from lowbit.program import Program
from lowbit.sim import accelerator_programs as P

CONFIG = P.small_config()                   # rows 2, cols 4, word 16, 8-bit link
WIDE_OUT = P.small_config(max_out_bits=4)   # up to 15 thresholds per channel
HALT = P.halt()


def operands(rng, m, n, k, planes, bipolar):
    x = rng.choice([-1, 1], (m, k)) if bipolar else rng.integers(0, 1 << planes, (m, k))
    return x, rng.choice([-1, 1], (n, k))


def layer(config, x, w, planes, bipolar, mode, *, out_bits=1, thr=None, a_addr=0, b_addr=0,
          dst_addr=0, thr_addr=0):
    """One layer: LOAD weights (and thresholds) and inputs, GEMM, and for SCORES a STORE of
    the whole output."""
    m, k = x.shape
    mt, nt = tiles(m, config.rows), tiles(w.shape[0], config.cols)
    xw, ww = pack_act(x, planes, config, bipolar=bipolar), pack_weights(w, config)
    instrs = [P.load("WEIGHT", "CONST", b_addr, len(ww)), P.load("IN", "INPUT", a_addr, len(xw))]
    consts = [ww.reshape(-1)]
    if thr is not None:
        tw = pack_thresholds(thr, config)
        instrs.append(P.load("THRESH", "CONST", thr_addr, len(tw)))
        consts.append(tw.reshape(-1))
    instrs.append(P.gemm(a_buffer="IN", a_addr=a_addr, b_addr=b_addr, planes=planes,
                         words=plane_words(k, config.word), m_tiles=mt, n_tiles=nt, mode=mode,
                         out_bits=out_bits, dst_addr=dst_addr, thr_addr=thr_addr))
    if mode == "SCORES":
        instrs.append(P.store(dst_addr, mt * config.rows * nt))
    instrs.append(HALT)
    return Program(config, instrs, np.concatenate(consts)), xw.reshape(-1)


# GEMM ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("m, n, k, planes, bipolar", [
    (1, 1, 1, 1, True),
    (2, 4, 16, 1, True),        # whole tiles and words
    (5, 9, 70, 1, True),        # padding rows, channels and elements
    (3, 5, 33, 2, False),
    (4, 7, 17, 3, False),
    (3, 3, 64, 4, False),
    (1, 6, 200, 4, False),      # 13 words a plane
])
def test_gemm_scores_are_the_dot_products(m, n, k, planes, bipolar):
    rng = np.random.default_rng(m * 100 + k)
    x, w = operands(rng, m, n, k, planes, bipolar)
    program, inputs = layer(CONFIG, x, w, planes, bipolar, "SCORES", a_addr=1, b_addr=3,
                            dst_addr=2)
    result = ISS(CONFIG).run(program, inputs)
    (words,) = result.outputs
    mt, nt = tiles(m, CONFIG.rows), tiles(n, CONFIG.cols)
    assert words.dtype == np.uint64 and len(words) == mt * CONFIG.rows * nt * CONFIG.cols
    acc = unpack_scores(words.reshape(-1, CONFIG.cols), mt * CONFIG.rows, n, CONFIG)
    assert np.array_equal(dot_from_acc(acc[:m], w, planes, bipolar=bipolar), x @ w.T)
    # Every lane, padding rows and channels included, against the definition on padded bits.
    padded = np.zeros((mt * CONFIG.rows, k), dtype=np.int64)
    padded[:m] = x
    assert np.array_equal(words, P.score_words(P.reference_acc(padded, w, planes, CONFIG,
                                                               bipolar=bipolar), CONFIG))
    assert result.status == 0 and result.code is Status.OK


def test_padding_lanes_by_hand():
    # One row of 3 elements, +1 +1 -1 against one channel +1 -1 -1 (bipolar, word 16):
    # agreements 2 -> acc 2. Padding row (all 0 bits) against the channel's bits 1 0 0 and
    # padding elements 1: agreements 2. Padding channel (all 0 bits) against the row's
    # 1 1 0 and 13 padding 0s: 14; against the padding row: 16.
    x, w = np.array([[1, 1, -1]]), np.array([[1, -1, -1]])
    program, inputs = layer(CONFIG, x, w, 1, True, "SCORES")
    (words,) = ISS(CONFIG).run(program, inputs).outputs
    assert words.tolist() == [2, 14, 14, 14, 2, 16, 16, 16]


@pytest.mark.parametrize("config, bits", [(CONFIG, 1), (CONFIG, 2), (WIDE_OUT, 3),
                                          (WIDE_OUT, 4)])
@pytest.mark.parametrize("planes, bipolar", [(1, True), (2, False), (4, False)])
def test_gemm_threshold_counts_the_thresholds_reached(config, bits, planes, bipolar):
    rng = np.random.default_rng(bits * 10 + planes)
    m, n, k = 5, 7, 40
    x, w = operands(rng, m, n, k, planes, bipolar)
    dot = x @ w.T
    count = (1 << bits) - 1
    tau = rng.integers(dot.min() - 2, dot.max() + 3, (n, count))
    tau[0] = -10 ** 6            # always reached
    tau[1] = 10 ** 6             # never reached
    thr = np.clip(acc_threshold(tau, w, planes, bipolar=bipolar), 0, config.never)
    program, inputs = layer(config, x, w, planes, bipolar, "THRESHOLD", out_bits=bits,
                            thr=thr, a_addr=2, b_addr=1, dst_addr=3, thr_addr=4)
    iss = ISS(config)
    assert iss.run(program, inputs).outputs == []
    mt = tiles(m, config.rows)
    act = iss.memories["act"][3:3 + mt * bits * instruction_set(config).out_words(2)]
    got = unpack_act(act, mt * config.rows, 2 * config.cols, bits, config)
    expected = (dot[:, :, None] >= tau[None]).sum(axis=2)
    assert np.array_equal(got[:m, :n], expected)
    assert np.all(got[:m, 0] == count) and np.all(got[:m, 1] == 0)
    assert np.all(got[:, n:] == 0)      # padding channels: thresholds never reached
    # Padding rows (all 0 bits): acc = (2^P - 1) x (the channel's -1 elements).
    pad_acc = ((1 << planes) - 1) * (w < 0).sum(axis=1)
    assert np.array_equal(got[m:, :n],
                          np.broadcast_to((pad_acc[:, None] >= thr).sum(axis=1),
                                          (mt * config.rows - m, n)))


@pytest.mark.parametrize("bits, pool", [(1, 4), (2, 3), (3, 2)])
def test_pooled_gemm_keeps_the_largest_count_of_each_window(bits, pool):
    # Row tile g of the output is the elementwise max, over the window's row tiles
    # g * pool .. g * pool + pool - 1 of the operand, of the counts of thresholds reached by
    # the dot products (numpy, per row tile).
    config = WIDE_OUT
    rng = np.random.default_rng(40 + bits)
    groups, n, k, planes = 2, 6, 21, 2
    rows = config.rows
    x, w = operands(rng, groups * pool * rows, n, k, planes, False)
    dot = x @ w.T
    tau = np.sort(rng.integers(dot.min(), dot.max() + 1, (n, (1 << bits) - 1)), axis=1)
    thr = np.clip(acc_threshold(tau, w, planes, bipolar=False), 0, config.never)
    counts = (dot[:, :, None] >= tau[None]).sum(axis=2).reshape(groups, pool, rows, n)
    expected = counts.max(axis=1).reshape(groups * rows, n)
    xw, ww, tw = pack_act(x, planes, config), pack_weights(w, config), \
        pack_thresholds(thr, config)
    nt = tiles(n, config.cols)
    program = Program(config, [
        P.load("WEIGHT", "CONST", 0, len(ww)), P.load("THRESH", "CONST", 0, len(tw)),
        P.load("IN", "INPUT", 0, len(xw)),
        P.gemm(a_buffer="IN", a_addr=0, b_addr=0, planes=planes,
               words=plane_words(k, config.word), m_tiles=groups, n_tiles=nt, pool=pool,
               mode="THRESHOLD", out_bits=bits, dst_addr=5), HALT],
        np.concatenate([ww.reshape(-1), tw.reshape(-1)]))
    iss = ISS(config)
    iss.run(program, xw.reshape(-1))
    act = iss.memories["act"][5:5 + groups * bits * instruction_set(config).out_words(nt)]
    got = unpack_act(act, groups * rows, nt * config.cols, bits, config)
    assert np.array_equal(got[:, :n], expected)
    # The windows' first tiles alone would give other outputs: the max matters.
    assert not np.array_equal(expected, counts[:, 0].reshape(groups * rows, n))


def test_threshold_lanes_use_their_low_acc_bits():
    # acc = 2 (see test_padding_lanes_by_hand); a threshold lane of 2 + 2^acc_bits is 2.
    x, w = np.array([[1, 1, -1]]), np.array([[1, -1, -1]])
    for lane, reached in [(2, 1), (3, 0), (2 + (1 << CONFIG.acc_bits), 1)]:
        instrs = [P.load("WEIGHT", "INPUT", 0, 1), P.load("IN", "INPUT", 0, 1),
                  P.load("THRESH", "INPUT", 0, 1),
                  P.gemm(a_buffer="IN", a_addr=0, b_addr=0, planes=1, words=1, m_tiles=1,
                         n_tiles=1, mode="THRESHOLD", dst_addr=0), HALT]
        data = np.concatenate([pack_weights(w, CONFIG).reshape(-1),
                               pack_act(x, 1, CONFIG, bipolar=True).reshape(-1),
                               [lane, 0, 0, 0]])
        iss = ISS(CONFIG)
        iss.run(Program(CONFIG, instrs), data)
        assert int(iss.memories["act"][0, 0]) & 1 == reached


def test_gemm_reads_act_written_by_the_previous_layer():
    for name, program, inputs, expected in P.programs(CONFIG):
        result = ISS(CONFIG).run(program, inputs)
        assert len(result.outputs) == len(expected), name
        for got, want in zip(result.outputs, expected):
            assert np.array_equal(got, want), name


# Memories wrap ------------------------------------------------------------------------------


def raw_words(config, *instrs):
    # Instruction words without region checks, as the gateware takes them.
    isa = instruction_set(config)
    out = []
    for instr in instrs:
        op = Opcode[instr["opcode"]]
        fields = {name: field.shape[instr[name]] if isinstance(instr[name], str)
                  else instr[name] for name, field in isa.operands[op]}
        out.append(isa.layout.const({"opcode": op, "operands": {op.name.lower(): fields}})
                   .as_bits())
    return out


def test_load_and_store_wrap_around_their_memories():
    depth = CONFIG.in_depth
    iss = ISS(CONFIG)
    words = raw_words(CONFIG, P.load("IN", "INPUT", depth - 1, 3), HALT)
    iss.run_words(words, inputs=[1, 2, 3, 4, 5, 6])
    assert iss.memories["in"][[depth - 1, 0, 1]].tolist() == [[1, 2], [3, 4], [5, 6]]
    # A region longer than the memory: the later words win.
    iss.run_words(raw_words(CONFIG, P.load("IN", "INPUT", 1, depth + 1), HALT),
                  inputs=np.arange(2 * depth + 2))
    assert iss.memories["in"][1].tolist() == [2 * depth, 2 * depth + 1]
    assert iss.memories["in"][2].tolist() == [2, 3]
    score = iss.memories["score"]
    score[:] = np.arange(score.size).reshape(score.shape)
    result = iss.run_words(raw_words(CONFIG, P.store(CONFIG.score_depth - 1, 2), HALT))
    (out,) = result.outputs
    assert out.tolist() == score[[-1, 0]].reshape(-1).tolist()


def test_memories_persist_until_reset():
    iss = ISS(CONFIG)
    iss.run(Program(CONFIG, [P.load("IN", "INPUT", 0, 1), HALT]), [7, 8])
    iss.run(Program(CONFIG, [HALT]))
    assert iss.memories["in"][0].tolist() == [7, 8]
    iss.reset()
    assert not iss.memories["in"].any()
    assert {name: m.shape for name, m in iss.memories.items()} == {
        "in": (64, 2), "act": (64, 2), "weight": (256, 4), "thresh": (64, 4),
        "score": (64, 4)}


# Errors -------------------------------------------------------------------------------------


def test_iss_errors():
    isa = instruction_set(CONFIG)
    unknown = isa.raw_layout.const({"opcode": 4}).as_bits()
    with pytest.raises(ISSError, match=r"^instruction 1: unknown opcode 4$"):
        ISS(CONFIG).run_words([isa.encode(P.load("IN", "INPUT", 0, 1)), unknown],
                              inputs=[1, 2])
    with pytest.raises(ISSError, match=r"^instruction 0: LOAD needs 4 INPUT words, 3 remain$"):
        ISS(CONFIG).run(Program(CONFIG, [P.load("IN", "INPUT", 0, 2), HALT]), [1, 2, 3])
    with pytest.raises(ISSError, match=r"^instruction 0: LOAD needs 4 CONST words, 0 remain$"):
        ISS(CONFIG).run_words([isa.encode(P.load("WEIGHT", "CONST", 0, 1))])
    with pytest.raises(ISSError, match=r"^program ended without HALT after 1 instructions$"):
        ISS(CONFIG).run_words([isa.encode(P.load("IN", "INPUT", 0, 1))], inputs=[1, 2])
    other = P.small_config(queue_depth=1)
    with pytest.raises(ISSError, match=re.escape(
            f"program was built for accelerator configuration {other.fingerprint()}, this "
            f"accelerator is {CONFIG.fingerprint()}")):
        ISS(CONFIG).run(Program(other, [HALT]))
    with pytest.raises(TypeError, match=r"^program must be a Program, not \[\]$"):
        ISS(CONFIG).run([])
    with pytest.raises(TypeError, match=r"^config must be an AcceleratorConfig, not 'x'$"):
        ISS("x")
    with pytest.raises(TypeError, match=re.escape("data must be bytes, not [0]")):
        ISS(CONFIG).run_stream([0])
    assert ISS().config == AcceleratorConfig()


def test_halt_stops_before_later_words():
    isa = instruction_set(CONFIG)
    unknown = isa.raw_layout.const({"opcode": 9}).as_bits()
    result = ISS(CONFIG).run_words([isa.encode(P.halt(5)), unknown])
    assert (result.status, result.instructions, result.index) == (5, 1, 0)


# The host link (run_stream) -----------------------------------------------------------------


def parse_records(blob, config):
    """A minimal host-side parser through the record layouts (the real one is
    lowbit.runtime's): ("DATA", words) and ("STATUS", code, halt, index, counters)."""
    word_bytes, header, status = config.word // 8, DATA_HEADER.size // 8, \
        STATUS_RECORD.size // 8
    records, pos = [], 0
    while pos < len(blob):
        if blob[pos] == Record.DATA:
            view = DATA_HEADER.from_bits(int.from_bytes(blob[pos:pos + header], "little"))
            assert view.reserved == 0
            pos += header
            body = blob[pos:pos + view.count * word_bytes]
            assert len(body) == view.count * word_bytes
            pos += len(body)
            records.append(("DATA", np.frombuffer(body, f"<u{word_bytes}").astype(np.uint64)))
        else:
            view = STATUS_RECORD.from_bits(int.from_bytes(blob[pos:pos + status], "little"))
            assert view.kind == Record.STATUS and view.reserved == 0
            pos += status
            records.append(("STATUS", Status(view.code), view.halt, view.index,
                            {name: view[name] for name in STATUS_COUNTERS}))
    return records


def host_bytes(program, inputs=()):
    """What the host sends: each instruction word, every LOAD followed by its count x lanes
    words from the constants or the inputs."""
    config = program.config
    isa, word_bytes = instruction_set(config), config.word // 8
    sources = {Source.CONST: list(program.constants), Source.INPUT: list(inputs)}
    out = bytearray()
    for instr, word in zip(program.instructions, program.words()):
        out += word.to_bytes(isa.bytes, "little")
        if instr["opcode"] == Opcode.LOAD:
            n = instr["count"] * config.lanes(instr["buffer"].name.lower())
            source = sources[instr["source"]]
            out += b"".join(int(v).to_bytes(word_bytes, "little") for v in source[:n])
            del source[:n]
    return bytes(out)


def test_stream_runs_a_program_like_run():
    (program, inputs, expected) = [e[1:] for e in P.programs(CONFIG) if e[0] == "reload"][0]
    result = ISS(CONFIG).run(program, inputs)
    iss = ISS(CONFIG)
    records = parse_records(iss.run_stream(host_bytes(program, inputs)), CONFIG)
    assert [r[0] for r in records] == ["DATA"] * 3 + ["STATUS"]
    for (_, words), want in zip(records, expected):
        assert np.array_equal(words, want)
    _, code, halt, index, counters = records[-1]
    assert (code, halt, index) == (Status.OK, 9, len(program) - 1)
    assert counters == result.counters
    assert counters["cycles"] == result.cycles
    (streamed,) = iss.results
    assert streamed.trace == result.trace
    assert streamed.bytes_in == result.bytes_in == len(host_bytes(program, inputs))
    assert streamed.bytes_out == result.bytes_out == len(iss.run_stream(
        host_bytes(program, inputs)))


def test_stream_illegal_instruction_stops_the_program():
    for name, data, code, index in P.faulty_streams(CONFIG):
        iss = ISS(CONFIG)
        if code is Status.ILLEGAL:
            data += instruction_set(CONFIG).encode(HALT).to_bytes(12, "little")
        records = parse_records(iss.run_stream(data), CONFIG)
        *data_records, (_, got, halt, at, _) = records
        assert (got, at, halt) == (code, index, 0), name
        if code is Status.ILLEGAL:
            # The next program is discarded with the rest of the input.
            assert len(iss.results) == 1
        # The STORE ran when it came before the fault.
        assert len(data_records) == (1 if name in ("unused bits", "no halt") else 0), name


def test_stream_truncated_mid_load_writes_the_memory_words_that_arrived():
    iss = ISS(CONFIG)
    iss.memories["weight"][5] = [90, 91, 92, 93]
    program = Program(CONFIG, [P.load("WEIGHT", "INPUT", 4, 2), HALT])
    data = host_bytes(program, [1, 2, 3, 4, 5, 6, 7, 8])
    # The LOAD word (12 bytes), then 6 of its 8 words and half of the 7th: the gateware
    # writes a memory word once its last lane has arrived, so word 5 keeps its contents.
    records = parse_records(iss.run_stream(data[:12 + 6 * 2 + 1]), CONFIG)
    assert records[0][1:4] == (Status.TRUNCATED, 0, 0)
    assert iss.memories["weight"][4].tolist() == [1, 2, 3, 4]
    assert iss.memories["weight"][5].tolist() == [90, 91, 92, 93]


@pytest.mark.parametrize("cut, index", [(1, 0), (12, 0), (19, 0), (20, 1), (28, 1), (31, 1)])
def test_stream_truncated(cut, index):
    data = host_bytes(Program(CONFIG, [P.load("IN", "INPUT", 0, 2), HALT]), [1, 2, 3, 4])
    assert len(data) == 12 + 8 + 12
    records = parse_records(ISS(CONFIG).run_stream(data[:cut]), CONFIG)
    assert [r[1:4] for r in records] == [(Status.TRUNCATED, 0, index)]


def test_stream_runs_programs_in_sequence_with_resident_memories():
    x, w = np.array([[1, 1, -1]]), np.array([[1, -1, -1]])
    weights = Program(CONFIG, [P.load("WEIGHT", "CONST", 0, 1), P.halt(1)],
                      pack_weights(w, CONFIG).reshape(-1))
    compute = Program(CONFIG, [
        P.load("IN", "INPUT", 0, 1),
        P.gemm(a_buffer="IN", a_addr=0, b_addr=0, planes=1, words=1, m_tiles=1, n_tiles=1,
               mode="SCORES", dst_addr=0),
        P.store(0, 2), P.halt(2)])
    inputs = pack_act(x, 1, CONFIG, bipolar=True).reshape(-1)
    iss = ISS(CONFIG)
    records = parse_records(iss.run_stream(host_bytes(weights) + host_bytes(compute, inputs)),
                            CONFIG)
    assert [r[0] for r in records] == ["STATUS", "DATA", "STATUS"]
    assert records[0][1:4] == (Status.OK, 1, 1) and records[2][1:4] == (Status.OK, 2, 3)
    assert records[1][1].tolist() == [2, 14, 14, 14, 2, 16, 16, 16]
    # Counters restart with each program.
    assert records[0][4]["array_beats"] == 0 and records[2][4]["array_beats"] == 1
    assert len(iss.results) == 2
    assert ISS(CONFIG).run_stream(b"") == b""


# The cycle model's closed forms -------------------------------------------------------------
#
# Small configuration, 8-bit link: IB = 96 / 8 = 12 fetch beats per instruction, then a check
# cycle and the decode cycle (an instruction alone at cycle 0 decodes at 13); WB = 16 / 8 = 2
# beats per lane, HB = 64 / 8 = 8 beats per DATA header; rows 2, cols 4, pipeline 1.

IB, WB, HB = 12, 2, 8


def cycles(config, *instrs, inputs=None):
    program = Program(config, [*instrs, HALT])
    if inputs is None:
        inputs = np.zeros(sum(instruction_set(config).link_words(i)
                              for i in program.instructions
                              if i["opcode"] == Opcode.LOAD), dtype=np.uint64)
    return ISS(config).run(program, inputs)


def big_gemm(**changes):
    # 3 x 2 tiles of 2 planes x 3 words: B = 6 beats a tile; SCORES hold D = rows = 2.
    fields = dict(a_buffer="IN", a_addr=0, b_addr=0, planes=2, words=3, m_tiles=3,
                  n_tiles=2, mode="SCORES", dst_addr=0)
    fields.update(changes)
    return P.gemm(**fields)


def test_instruction_width_of_the_small_configuration():
    assert instruction_set(CONFIG).width == 96 and CONFIG.host_link_bits == 8


def test_halt_alone():
    # Fetch, check, decode, then one cycle to see every stage idle.
    result = cycles(CONFIG)
    assert result.cycles == IB + 2
    assert result.counters == {"cycles": 14, "array_beats": 0, "tile_holds": 0}
    assert result.trace == [{"opcode": "HALT", "start": 0, "end": 14}]


def test_load():
    # LOAD of 3 in-memory words (2 lanes each): fetch, check, decode, a cycle to check its
    # waits and one to act on the verdict, 3 x 2 x WB data beats, one more; then HALT's
    # fetch, check, decode, idle check.
    result = cycles(CONFIG, P.load("IN", "INPUT", 0, 3))
    assert result.trace[0] == {"opcode": "LOAD", "start": 0, "end": 13 + 2 + 12 + 1}
    assert result.cycles == 28 + IB + 2 == 42


def test_store():
    # Pushed at decode (cycle 13), its wait checked at 14, popped 15; header and 2 x 4 lanes x
    # WB data beats: ends at 15 + 8 + 16 = 39; the stages are idle from 40, which HALT sees
    # (registered) at 41.
    result = cycles(CONFIG, P.store(0, 2))
    assert result.cycles == 41 and result.bytes_out == 8 + 2 * 4 * 2 + 20


def test_gemm_scores():
    # Pushed at 13, its waits checked at 14, popped 15, a cycle for the hold's verdict,
    # first tile 17; 6 tiles every max(B=6, D=2) = 6 cycles: last at 47; its accumulators
    # land B + 1 + pipeline = 8 later (55), written by 55 + D = 57; the counters show it at
    # 58, HALT (decoded at 27) sees the stages idle at 59.
    result = cycles(CONFIG, big_gemm())
    assert result.counters == {"cycles": 59, "array_beats": 36, "tile_holds": 0}


def test_gemm_threshold_holds_tiles_for_the_result_stage():
    # 2 x 2 tiles of one beat; the result stage needs D = T + out_bits - 1 = 3 + 2 - 1 = 4
    # cycles per tile (2-bit outputs), so tiles start every 4 cycles: 17, 21, 25, 29, each
    # after the first held 3 cycles (9 in all). The last lands at 29 + 3 = 32, is compared
    # by 32 + 3 = 35, counted a cycle later and its 2 planes written by 38; HALT at 40.
    result = cycles(CONFIG, P.gemm(a_buffer="IN", a_addr=0, b_addr=0, planes=1, words=1,
                                   m_tiles=2, n_tiles=2, mode="THRESHOLD", out_bits=2,
                                   dst_addr=0))
    assert result.counters == {"cycles": 40, "array_beats": 4, "tile_holds": 9}


@pytest.mark.parametrize("waits, load_end, total", [
    # No wait: decoded at 27, checked at 28, starts 29, 4 data beats, ends 34; HALT decodes
    # at 47, the GEMM's last write (57) shows at 58, HALT sees the stages idle at 59.
    (dict(), 34, 59),
    # unread=0: until the GEMM's last beat (47 + 6 - 1 = 52) is past: 53, acted on at 54,
    # + 4 + 1.
    (dict(unread=0), 59, 59 + IB + 2),
    # unwritten=0: until its last result (57) is written: 58, acted on at 59, + 4 + 1.
    (dict(unwritten=0), 64, 64 + IB + 2),
])
def test_load_waits_for_the_gemm(waits, load_end, total):
    result = cycles(CONFIG, big_gemm(), P.load("IN", "INPUT", 0, 1, **waits))
    assert result.trace[1]["end"] == load_end and result.cycles == total


def test_store_waits_for_the_gemm():
    # Pushed at 27 (decode after the GEMM's push), popped the cycle after its check sees the
    # GEMM written (58): 59; header and 2 x 4 x WB beats: ends 83; idle from 84, which HALT
    # sees at 85.
    assert cycles(CONFIG, big_gemm(), P.store(0, 2)).cycles == 85
    # Without its wait it is popped at 29 and ends at 53: the GEMM's 59 counts.
    assert cycles(CONFIG, big_gemm(), P.store(20, 2, unwritten=NO_WAIT)).cycles == 59


def test_gemm_sync_waits_for_the_earlier_gemm():
    small = dict(m_tiles=1, n_tiles=1, planes=1, words=1, dst_addr=20)
    # The first GEMM: last tile 47, idle from 53, captured 55, the result stage free from 57,
    # written 57. Without sync: popped once the execute stage is idle (53), first tile at
    # 55 (pop + 2; the result stage is free for a capture at 55 + B + 1 + pipeline = 58),
    # captured 58, written 58 + D = 60; HALT at 62. With sync: the last write (57) shows
    # in the counters at 58, the check sees it then and the pop follows at 59: first tile
    # 61, captured 64, written 66, HALT 68.
    assert cycles(CONFIG, big_gemm(), big_gemm(**small)).cycles == 62
    assert cycles(CONFIG, big_gemm(), big_gemm(**small, sync=1)).cycles == 68


def test_single_port_weight_load_waits_for_weight_reads():
    # 1 weight word = 4 lanes x WB = 8 beats. Dual-ported: checked at 28, ends 38, the GEMM
    # ends the program (59). Single-ported: waits until the GEMM's reads are done (53) and
    # starts at 54.
    assert cycles(CONFIG, big_gemm(), P.load("WEIGHT", "INPUT", 100, 1)).cycles == 59
    single = P.small_config(weight_single_port=True)
    result = cycles(single, big_gemm(), P.load("WEIGHT", "INPUT", 100, 1))
    assert result.trace[1]["end"] == 54 + 8 + 1 and result.cycles == 63 + IB + 2
