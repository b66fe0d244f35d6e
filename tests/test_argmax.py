"""ARGMAX, the argmax unit's instruction: each sample's predicted class, one byte, from its
score words and a rank table. A hand-derived case through the ISS and the gateware, random
score words against numpy's own argmax of the ranks (a stalling link, and cycle for cycle
with an ideal one on shapes whose word queue fills), the rank table against numpy's argmax
of float scores with ties, and the errors. (Random programs with ARGMAX run in
tests/test_accelerator.py and, on the Verilog, tests/test_accelerator_cocotb.py: the second
and third small configurations have an argmax unit.)"""

import numpy as np
import pytest

from lowbit import layout
from lowbit.config.accelerator import AcceleratorConfig
from lowbit.config.xnor_array import XNORArrayConfig
from lowbit.isa import NO_WAIT, InstructionError, Status, instruction_set
from lowbit.program import Program, ProgramError
from lowbit.races import check_races
from lowbit.sim.accelerator_programs import gemm, halt, load, run_both, store
from lowbit.sim.amaranth_transport import AmaranthTransport
from lowbit.sim.random_programs import small_configs

#: 1x4 array of 16-bit words, a 16-bit link, a 64-word rank memory (6-bit ranks).
CONFIG = small_configs()[1]


def argmax(addr, groups, samples, classes, rank_addr, stride, unwritten=0):
    return dict(opcode="ARGMAX", addr=addr, groups=groups, samples=samples, classes=classes,
                rank_addr=rank_addr, stride=stride, unwritten=unwritten)


def test_hand_derived_classes_on_the_iss_and_the_gateware():
    """Nine samples, one score word each (4 lanes, 3 classes), 1-plane 16-bit rows.

    Weights: lanes 0 and 2 all ones (acc = p, the row's popcount), lanes 1 and 3 all zeros
    (acc = 16 - p). Ranks (table at 5, stride 17): class 0 rank p, class 1 rank
    2 (16 - p), class 2 rank 12 whatever p (its words carry high bits the 6-bit memory
    drops); lane 3 is not a class, and every word it could reach holds the largest rank.
    p = 0: ranks 0, 32, 12 -> 1. p = 16: 16, 0, 12 -> 0. p = 5: 5, 22, 12 -> 1. p = 11:
    11, 10, 12 -> 2. p = 10: 10, 12, 12 -> 1 (a tie: the first). p = 12: 12, 8, 12 -> 0
    (a tie). p = 13: 13, 6, 12 -> 0. p = 3: 3, 26, 12 -> 1. p = 11 -> 2.
    Record: 8 class bytes a word (4 lanes of 16 bits), the second word padded with zeros.
    """
    pops = [0, 16, 5, 11, 10, 12, 13, 3, 11]
    rows = [(1 << p) - 1 for p in pops]
    ranks = np.full(64, 63, dtype=np.uint64)
    ranks[5:22] = np.arange(17)
    ranks[22:39] = 2 * np.arange(17)
    ranks[39:56] = 0xFF00 | 12
    weights = np.array([0xFFFF, 0, 0xFFFF, 0], dtype=np.uint64)
    program = Program(CONFIG, [
        load("IN", "INPUT", 0, 9), load("WEIGHT", "CONST", 0, 1),
        load("RANK", "CONST", 0, 64),
        gemm(a_buffer="IN", a_addr=0, b_addr=0, planes=1, words=1, m_tiles=9, n_tiles=1,
             mode="SCORES", dst_addr=0),
        argmax(0, 1, 9, 3, 5, 17), store(0, 2), halt()],
        constants=np.concatenate([weights, ranks]))
    iss, expected, got = run_both(CONFIG, program, np.array(rows, dtype=np.uint64))
    assert got == expected
    assert iss.results[0].code == Status.OK
    record, scores = iss.results[0].outputs
    assert scores.tolist() == [0, 16, 0, 16, 16, 0, 16, 0]
    assert record.tolist() == [0x0001, 0x0201, 0x0001, 0x0100, 0x0002, 0, 0, 0]
    assert layout.unpack_argmax(record, 9, CONFIG).tolist() == [1, 0, 1, 2, 1, 0, 0, 1, 2]
    # The data record: kind 1, count 8 words, then the words, little-endian.
    header = bytes([1, 0, 0, 0, 8, 0, 0, 0])
    assert header + b"".join(int(w).to_bytes(2, "little") for w in record) in got


def _random_argmax_program(config, rng, samples, groups, classes, stride, rank_addr):
    """Random score words (as LOAD cannot write the score memory, a SCORES GEMM of random
    operands makes them), a random rank table, one ARGMAX and a STORE of the scores."""
    words = 2
    a = rng.integers(0, 1 << config.word, (samples * 2 * words, config.rows), dtype=np.uint64)
    m_tiles = -(-samples // config.rows)
    a = a[:m_tiles * 2 * words]
    b = rng.integers(0, 1 << config.word, (groups * words, config.cols), dtype=np.uint64)
    ranks = rng.integers(0, 1 << config.word, config.rank_depth, dtype=np.uint64)
    # Few distinct ranks: ties between classes are common.
    ranks[rng.random(config.rank_depth) < 0.5] &= np.uint64(3)
    n_scores = m_tiles * config.rows * groups
    program = Program(config, [
        load("IN", "INPUT", 0, len(a)), load("WEIGHT", "CONST", 0, len(b)),
        load("RANK", "CONST", 0, config.rank_depth),
        gemm(a_buffer="IN", a_addr=0, b_addr=0, planes=2, words=words, m_tiles=m_tiles,
             n_tiles=groups, mode="SCORES", dst_addr=0),
        argmax(0, groups, samples, classes, rank_addr, stride),
        store(0, n_scores), halt()],
        constants=np.concatenate([b.reshape(-1), ranks]))
    return program, a.reshape(-1), ranks


def _expected_classes(config, scores, samples, groups, classes, stride, rank_addr, ranks):
    lanes = scores.reshape(-1, groups * config.cols)[:samples]
    n = min(classes, groups * config.cols)
    index = (rank_addr + np.arange(n)[None, :] * stride + lanes[:, :n].astype(np.int64))
    r = ranks[index % config.rank_depth] & np.uint64((1 << config.rank_bits) - 1)
    return np.argmax(r, axis=1)


@pytest.mark.parametrize("index, samples, groups, classes, stride, rank_addr, stall", [
    (1, 13, 3, 10, 5, 3, 0.5), (1, 8, 1, 6, 9, 0, 0.7), (2, 15, 4, 3, 7, 2, 0.5),
    (2, 5, 1, 1, 32, 0, 0.0)])
def test_random_scores_equal_numpy_with_a_stalling_link(index, samples, groups, classes,
                                                        stride, rank_addr, stall):
    """The record's classes are numpy's first argmax of the ranks the table gives each
    lane, on the ISS and on the gateware whose link takes a beat only part of the time."""
    config = small_configs()[index]
    rng = np.random.default_rng(samples + groups)
    program, inputs, ranks = _random_argmax_program(config, rng, samples, groups, classes,
                                                    stride, rank_addr)
    iss, expected, got = run_both(config, program, inputs, stall=stall)
    counters = 12
    assert got[:-counters] == expected[:-counters]
    if stall == 0.0:
        assert got == expected
    record, scores = iss.results[0].outputs
    want = _expected_classes(config, scores, samples, groups, classes, stride, rank_addr,
                             ranks)
    assert np.array_equal(layout.unpack_argmax(record, samples, config), want)
    per = layout.argmax_bytes(config)
    padding = layout.unpack_argmax(record, len(record) * config.word // 8, config)
    assert not padding[samples:].any() and len(padding) % per == 0


@pytest.mark.parametrize("rows, cols, word, link", [(1, 1, 8, 8), (2, 4, 32, 8),
                                                     (1, 2, 16, 16), (2, 1, 32, 32)])
def test_cycles_are_the_cycle_model_on_other_shapes(rows, cols, word, link):
    """Two ARGMAXes of many samples and a STORE behind them, with an ideal host: the
    status record (cycles included) is the cycle model's. With one-byte record words
    (1 lane of 8 bits) a word is ready every step while its header takes 8 beats, so the
    unit waits for the word queue; with long words it never does."""
    config = AcceleratorConfig(
        xnor_array=XNORArrayConfig(rows=rows, cols=cols, word=word, max_k=4 * word,
                                   max_act_bits=2, max_weight_bits=1, pipeline=1),
        max_out_bits=1, max_pool=1, in_depth=128, act_depth=16, weight_depth=16,
        thresh_depth=16, score_depth=64, queue_depth=2, host_link_bits=link,
        timeout_cycles=64, rank_depth=256)
    rng = np.random.default_rng(rows * cols + word)
    groups = 1 if cols == 1 else 2
    samples = min(64 // groups, 32) // rows * rows
    program, inputs, ranks = _random_argmax_program(config, rng, samples, groups, 3, 40, 7)
    instrs = program.instructions
    program = Program(config, instrs[:-2] + [argmax(0, groups, 5, 2, 0, 100, NO_WAIT)]
                      + instrs[-2:], program.constants)
    iss, expected, got = run_both(config, program, inputs)
    assert got == expected
    first, second, scores = iss.results[0].outputs
    want = _expected_classes(config, scores, samples, groups, 3, 40, 7, ranks)
    assert np.array_equal(layout.unpack_argmax(first, samples, config), want)
    want = _expected_classes(config, scores, 5, groups, 2, 100, 0, ranks)
    assert np.array_equal(layout.unpack_argmax(second, 5, config), want)


def test_rank_table_is_numpys_argmax_of_the_scores():
    """Every accumulator combination of three classes (0..6 each): the first class of
    largest rank is numpy's argmax of the float scores, including exact ties (class 1's
    scores equal class 0's at even accumulators) and negative scales."""
    scale = np.array([0.5, 0.25, -0.125])
    offset = np.array([0.0, 0.0, 0.75])

    def scores(acc):
        return acc * scale + offset

    table = layout.rank_table(scores, 3, 7)
    assert table.shape == (21,)
    grid = np.stack(np.meshgrid(*[np.arange(7)] * 3, indexing="ij"), -1).reshape(-1, 3)
    ranks = table[np.arange(3)[None, :] * 7 + grid]
    assert np.array_equal(np.argmax(ranks, axis=1), np.argmax(scores(grid), axis=1))
    # Equal scores, equal ranks: class 0 at 1 (0.5) and class 1 at 2 (0.5).
    assert table[1] == table[7 + 2]
    with pytest.raises(ValueError, match=r"^the scores to rank must be finite$"):
        layout.rank_table(lambda acc: np.where(acc > 1, np.inf, 0.0), 2, 3)


def test_errors():
    base = small_configs()[0]
    with pytest.raises(ValueError, match=r"^AcceleratorConfig rank_depth must be 0 or a power "
                       r"of two, not 100$"):
        base.replace(rank_depth=100)
    with pytest.raises(ValueError, match=r"rank_depth must be at most 65536"):
        base.replace(rank_depth=1 << 17)
    eight = base.xnor_array.replace(word=8, max_k=64, max_act_bits=2)
    with pytest.raises(ValueError, match=r"^AcceleratorConfig rank_depth 512 needs 9-bit "
                       r"ranks; a LOAD writes a rank memory word from one 8-bit word$"):
        base.replace(xnor_array=eight, latent_depth=0, norm_channels=0, rank_depth=512)
    assert base.replace(xnor_array=eight, latent_depth=0, norm_channels=0,
                        rank_depth=256).rank_bits == 8
    # A configuration without the unit keeps its fingerprint's fields as they were.
    assert "rank_depth" not in base.to_dict() and "rank_depth" in CONFIG.to_dict()
    assert AcceleratorConfig.from_dict(CONFIG.to_dict()) == CONFIG
    with pytest.raises(InstructionError, match=r"^ARGMAX needs an argmax unit \(rank_depth > "
                       r"0\); this accelerator has none$"):
        instruction_set(base).encode(argmax(0, 1, 1, 1, 0, 1))
    with pytest.raises(InstructionError, match=r"^LOAD cannot write the rank memory"):
        instruction_set(base).encode(load("RANK", "CONST", 0, 1))
    isa = instruction_set(CONFIG)
    with pytest.raises(InstructionError, match=r"^ARGMAX classes must be at most 256, not "
                       r"257$"):
        isa.encode(argmax(0, 1, 1, 257, 0, 1))
    with pytest.raises(InstructionError, match=r"^ARGMAX region of 66 words at 0 runs past "
                       r"the end of the score memory \(64 words\)$") as error:
        isa.encode(argmax(0, 3, 22, 2, 0, 1))
    assert error.value.code == Status.ADDRESS
    with pytest.raises(InstructionError, match=r"^ARGMAX region of 60 words at 5 runs past "
                       r"the end of the rank memory \(64 words\)$") as error:
        isa.encode(argmax(0, 1, 1, 3, 5, 20))
    assert error.value.code == Status.ADDRESS
    with pytest.raises(ValueError, match=r"^an ARGMAX record of 9 samples needs 8 words, "
                       r"not 4$"):
        layout.unpack_argmax(np.zeros(4, dtype=np.uint64), 9, CONFIG)
    program = Program(CONFIG, [
        gemm(a_buffer="IN", a_addr=0, b_addr=0, planes=1, words=1, m_tiles=2, n_tiles=1,
             mode="SCORES", dst_addr=0),
        argmax(1, 1, 1, 2, 0, 2, unwritten=NO_WAIT), halt()])
    with pytest.raises(ProgramError, match=r"^race: instruction 1 \(ARGMAX\) may read words "
                       r"1\.\.1 of the score memory while instruction 0 \(GEMM\) may still write "
                       r"them \(give the ARGMAX unwritten at most 0\)$"):
        check_races(program)


# The compiler's argmax result -------------------------------------------------------------


def _model_and_config(act=1, rank_depth=256):
    from test_compiler import config_for, model

    m = model(3, widths=(40, 24, 10), act=act, input_bits=2)
    config = config_for(rows=2, cols=2, word=16, max_k=64, max_act_bits=2, in_depth=64,
                        act_depth=64, weight_depth=256, thresh_depth=64, score_depth=64,
                        rank_depth=rank_depth)
    return m, config


@pytest.mark.parametrize("act, rank_depth", [(1, 256), (2, 1024)])
def test_compiled_argmax_is_the_hosts_argmax_of_the_scores(act, rank_depth):
    """A random MLP (a host affine, batch norms with gamma < 0 and == 0) compiled twice:
    the classes the argmax program sends are numpy's argmax of the scores program's float
    scores, on the ISS and on the gateware (cycles included), for 1-plane bipolar and
    2-plane unsigned last-layer inputs (K = 24: 25 or 73 accumulator values a class)."""
    from lowbit.compiler import compile_model, run_model
    from lowbit.runtime import ISSTransport, Runtime
    from test_compiler import inputs

    m, config = _model_and_config(act, rank_depth)
    x = inputs(5, 11, 40, 3)
    scores_program = compile_model(m, config, batch=3)
    program = compile_model(m, config, batch=3, result="argmax")
    assert program.metadata["result"] == "argmax"
    assert program.metadata["rank"]["stride"] == (25 if act == 1 else 73)
    with ISSTransport(config) as link:
        scores, _ = run_model(scores_program, Runtime(config, link), x)
        classes, iss_stats = run_model(program, Runtime(config, link), x)
    assert np.array_equal(classes, np.argmax(scores, axis=1))
    assert np.array_equal(classes, m.predict(x))
    with AmaranthTransport(config) as rtl:
        got, rtl_stats = run_model(program, Runtime(config, rtl), x)
    assert np.array_equal(got, classes)
    assert rtl_stats["cycles"] == iss_stats["cycles"]


def test_compiled_argmax_errors():
    from lowbit.compiler import CompileError, compile_model

    m, config = _model_and_config()
    with pytest.raises(CompileError, match=r"^result 'argmax' needs an argmax unit "
                       r"\(rank_depth > 0\); this configuration has none$"):
        compile_model(m, config.replace(rank_depth=0), batch=3, result="argmax")
    with pytest.raises(CompileError, match=r"^result 'argmax' needs 250 rank words \(10 "
                       r"classes x 25 accumulator values\), the rank memory holds 128: use "
                       r"result 'scores' or a larger rank_depth$"):
        compile_model(m, config.replace(rank_depth=128), batch=3, result="argmax")
    with pytest.raises(ValueError, match=r"^result must be one of scores, argmax, not 'top1'$"):
        compile_model(m, config, batch=3, result="top1")
