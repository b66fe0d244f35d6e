"""STATS, the statistics unit's instruction: range batch-norm statistics of score words in the
core's store stage. A hand-derived case through the ISS and the gateware, random layers
against numpy's own split of the accumulators (with a slow, stalling link), the record's
layout and the accumulator-to-dot conversion, and the errors of the configuration, the
instruction, the record and the race check. (Random programs with STATS run in
tests/test_accelerator.py and, on the Verilog, in tests/test_accelerator_cocotb.py: the
first small configuration has a statistics unit.)"""

import numpy as np
import pytest

from lowbit import layout
from lowbit.config.accelerator import AcceleratorConfig
from lowbit.golden.lightnorm import LightNorm
from lowbit.isa import NO_WAIT, InstructionError, Opcode, Status, instruction_set
from lowbit.iss import ISS
from lowbit.program import Program, ProgramError
from lowbit.races import check_races
from lowbit.sim.accelerator_programs import gemm, halt, load, reference_acc, run_both, store
from lowbit.sim.random_programs import small_configs

#: 2x2 array of 32-bit words, an 8-bit link, a statistics unit of 4 groups in 4 chunks.
CONFIG = small_configs()[0]


def stats(addr, groups, samples, unwritten=0):
    return dict(opcode="STATS", addr=addr, groups=groups, samples=samples,
                unwritten=unwritten)


def split_stats(values, chunks):
    """Sum and range spread per column, straight from numpy.array_split."""
    parts = [p for p in np.array_split(values, chunks, axis=0) if len(p)]
    spread = sum(p.max(axis=0) for p in parts) - sum(p.min(axis=0) for p in parts)
    return values.sum(axis=0), spread


def test_config_and_layout():
    assert CONFIG.statistics and CONFIG.norm_groups == 4 and CONFIG.norm_chunks == 4
    norm = CONFIG.norm
    assert (norm.block, norm.channels, norm.chunks) == (2, 8, 4)
    assert norm.input_width == CONFIG.acc_bits + 1 == 13
    assert norm.max_batch == CONFIG.score_depth
    assert norm.sum_bits == 13 + 6 <= CONFIG.word
    # A configuration without the unit keeps its fingerprint's fields as they were.
    plain = CONFIG.replace(norm_channels=0)
    assert "norm_channels" not in plain.to_dict() and "norm_chunks" not in plain.to_dict()
    assert AcceleratorConfig.from_dict(CONFIG.to_dict()) == CONFIG
    assert instruction_set(CONFIG).width == instruction_set(plain).width


def test_hand_derived_statistics_on_the_iss_and_the_gateware():
    """Six samples, one channel group (2 channels), 1-plane activations, K = 4 chunks.

    Weights: channel 0 all ones, so acc = popcount(a); channel 1 all zeros, so acc = 32 -
    popcount(a). Popcounts 3, 10, 7, 0, 32, 5; numpy.array_split makes chunks of 2, 2, 1
    and 1 samples: [3, 10], [7, 0], [32], [5].
    Channel 0: sum 57; chunk maxima 10 + 7 + 32 + 5 = 54, minima 3 + 0 + 32 + 5 = 40:
    spread 14. Channel 1: 29, 22, 25, 32, 0, 27: sum 135; maxima 29 + 32 + 0 + 27 = 88,
    minima 22 + 25 + 0 + 27 = 74: spread 14.
    """
    pops = [3, 10, 7, 0, 32, 5]
    rows = [(1 << p) - 1 for p in pops]           # a word with p ones
    program = Program(CONFIG, [
        load("IN", "INPUT", 0, 3), load("WEIGHT", "CONST", 0, 1),
        gemm(a_buffer="IN", a_addr=0, b_addr=0, planes=1, words=1, m_tiles=3, n_tiles=1,
             mode="SCORES", dst_addr=0),
        stats(0, 1, 6), store(0, 3), halt()],
        constants=np.array([0xFFFFFFFF, 0], dtype=np.uint64))
    iss, expected, got = run_both(CONFIG, program, np.array(rows, dtype=np.uint64))
    assert got == expected
    assert iss.results[0].code == Status.OK
    record, scores = iss.results[0].outputs
    assert record.tolist() == [57, 135, 14, 14]     # sums of the group, then its spreads
    assert scores.tolist() == [3, 29, 10, 22, 7, 25]
    total, spread = layout.unpack_stats(record, 2, CONFIG)
    assert total.tolist() == [57, 135] and spread.tolist() == [14, 14]


@pytest.mark.parametrize("samples, n, planes, bipolar", [
    (13, 7, 3, False), (1, 8, 1, True), (3, 2, 4, False), (24, 3, 1, True)])
def test_random_layers_equal_numpy_with_a_stalling_link(samples, n, planes, bipolar):
    """A SCORES GEMM of random activations and weights, then STATS of its valid samples
    and every channel group: the record equals numpy's split of the reference
    accumulators (padding channels included), on the ISS and on the gateware whose link
    takes a beat only half the time (the unit's back-pressure). 3 samples or 1 are fewer
    than the 4 chunks (a chunk per sample)."""
    rng = np.random.default_rng(samples * 7 + n)
    k = 50
    m_tiles = -(-samples // CONFIG.rows)
    if bipolar:
        a = rng.choice([-1, 1], (m_tiles * CONFIG.rows, k))
    else:
        a = rng.integers(0, 1 << planes, (m_tiles * CONFIG.rows, k))
    w = rng.choice([-1, 1], (n, k))
    groups = layout.tiles(n, CONFIG.cols)
    words = layout.plane_words(k, CONFIG.word)
    act = layout.pack_act(a, 1 if bipolar else planes, CONFIG, bipolar=bipolar).reshape(-1)
    wts = layout.pack_weights(w, CONFIG).reshape(-1)
    program = Program(CONFIG, [
        load("IN", "INPUT", 0, act.size // CONFIG.rows),
        load("WEIGHT", "CONST", 0, wts.size // CONFIG.cols),
        gemm(a_buffer="IN", a_addr=0, b_addr=0, planes=1 if bipolar else planes,
             words=words, m_tiles=m_tiles, n_tiles=groups, mode="SCORES", dst_addr=0),
        stats(0, groups, samples), halt()], constants=wts)
    iss, expected, got = run_both(CONFIG, program, act, stall=0.5)
    counters = 12
    assert got[:-counters] == expected[:-counters]
    acc = reference_acc(a, w, 1 if bipolar else planes, CONFIG, bipolar=bipolar)
    want_sum, want_spread = split_stats(acc[:samples], CONFIG.norm_chunks)
    total, spread = layout.unpack_stats(iss.results[0].outputs[0], groups * CONFIG.cols,
                                        CONFIG)
    assert np.array_equal(total, want_sum) and np.array_equal(spread, want_spread)
    # The dot products' statistics, converted on the host, are those of x @ w.T.
    dot = a[:samples] @ w.T
    d_sum, d_spread = layout.stats_from_acc(total[:n], spread[:n], samples, w,
                                            planes, bipolar=bipolar)
    want_sum, want_spread = split_stats(dot, CONFIG.norm_chunks)
    assert np.array_equal(d_sum, want_sum) and np.array_equal(d_spread, want_spread)


def test_statistics_match_the_lightnorm_beats():
    """The ISS's record is what the LightNorm golden model's STAT beats give, beat by beat,
    for the same words (the unit's own model, not its vectorised shortcut)."""
    rng = np.random.default_rng(3)
    samples, groups = 11, 3
    acc = rng.integers(0, 1 << CONFIG.acc_bits, (samples, groups * CONFIG.cols))
    norm = LightNorm(CONFIG.norm)
    x = np.pad(acc, ((0, 0), (0, CONFIG.norm_channels - acc.shape[1])))
    results = norm.run(norm.stat_beats(x))
    beats = {r["group"]: r["data"]["stats"] for r in results}
    iss = ISS(CONFIG)
    iss.memories["score"][:samples * groups] = acc.reshape(-1, CONFIG.cols).astype(np.uint64)
    result = iss.run(Program(CONFIG, [stats(0, groups, samples, NO_WAIT), halt()]))
    record = result.outputs[0].reshape(groups, 2, CONFIG.cols)
    for g in range(groups):
        assert record[g, 0].tolist() == [s["sum"] for s in beats[g]]
        assert record[g, 1].tolist() == [s["spread"] for s in beats[g]]


def test_errors():
    base = small_configs()[0].replace(norm_channels=0)
    with pytest.raises(ValueError, match=r"^AcceleratorConfig norm_channels 6 must be a "
                       r"multiple of cols 4: a score word is cols channels$"):
        small_configs()[1].replace(norm_channels=6)
    with pytest.raises(ValueError, match=r"^AcceleratorConfig norm_chunks must be a power "
                       r"of two \(the gateware splits a batch by shifts\), not 6$"):
        base.replace(norm_channels=8, norm_chunks=6)
    with pytest.raises(ValueError, match=r"norm_channels must be at most 1024"):
        base.replace(norm_channels=2048)
    with pytest.raises(ValueError, match=r"^AcceleratorConfig the statistics' 18-bit sums "
                       r"\(11-bit scores over up to score_depth 64 samples\) do not fit a "
                       r"16-bit lane$"):
        small_configs()[1].replace(norm_channels=8)
    wide = base.xnor_array.replace(word=64, max_k=2 ** 24, max_act_bits=8)
    with pytest.raises(ValueError, match=r"^AcceleratorConfig a statistics unit takes scores "
                       r"of at most 31 bits; the 32-bit accumulators \(max_k 16777216, "
                       r"max_act_bits 8\) are wider$"):
        base.replace(xnor_array=wide, latent_depth=0, norm_channels=2)
    with pytest.raises(InstructionError, match=r"^STATS needs a statistics unit "
                       r"\(norm_channels > 0\); this accelerator has none$"):
        instruction_set(base).encode(stats(0, 1, 1))
    isa = instruction_set(CONFIG)
    with pytest.raises(InstructionError, match=r"^STATS groups must be at most 4, not 5$"):
        isa.encode(stats(0, 5, 1))
    with pytest.raises(InstructionError, match=r"^STATS region of 66 words at 0 runs past "
                       r"the end of the score memory \(64 words\)$") as error:
        isa.encode(stats(0, 3, 22))
    assert error.value.code == Status.ADDRESS
    with pytest.raises(ValueError, match=r"^a STATS record of 5 channels needs 12 words, "
                       r"not 8$"):
        layout.unpack_stats(np.zeros(8, dtype=np.uint64), 5, CONFIG)
    program = Program(CONFIG, [
        gemm(a_buffer="IN", a_addr=0, b_addr=0, planes=1, words=1, m_tiles=2, n_tiles=1,
             mode="SCORES", dst_addr=0),
        stats(2, 1, 2, unwritten=NO_WAIT), halt()])
    with pytest.raises(ProgramError, match=r"^race: instruction 1 \(STATS\) may read words "
                       r"2\.\.3 of the score memory while instruction 0 \(GEMM\) may still "
                       r"write them \(give the STATS unwritten at most 0\)$"):
        check_races(program)
    assert Opcode.STATS in isa.opcodes


@pytest.mark.parametrize("rows, cols, word, link", [(1, 1, 32, 32), (2, 4, 64, 8),
                                                     (3, 8, 32, 16)])
def test_cycles_are_the_cycle_model_on_other_shapes(rows, cols, word, link):
    """A SCORES GEMM, STATS of several sample counts and group counts (one sample, fewer
    samples than chunks, more) and a STORE behind them, on arrays whose record words take
    1 to 16 link beats: the gateware's reply, its cycle count included, is the ISS's."""
    base = small_configs()[0]
    config = base.replace(
        xnor_array=base.xnor_array.replace(rows=rows, cols=cols, word=word, max_k=4 * word),
        host_link_bits=link, norm_channels=4 * cols, norm_chunks=4, latent_depth=0)
    rng = np.random.default_rng(rows * 100 + cols)
    m_tiles, n_tiles = -(-9 // rows), 4
    a = rng.integers(0, 4, (m_tiles * rows, 2 * word))
    w = rng.choice([-1, 1], (n_tiles * cols, 2 * word))
    act = layout.pack_act(a, 2, config).reshape(-1)
    wts = layout.pack_weights(w, config).reshape(-1)
    program = Program(config, [
        load("IN", "INPUT", 0, act.size // rows), load("WEIGHT", "CONST", 0, wts.size // cols),
        gemm(a_buffer="IN", a_addr=0, b_addr=0, planes=2, words=2, m_tiles=m_tiles,
             n_tiles=n_tiles, mode="SCORES", dst_addr=0),
        stats(0, 4, 9), stats(4, 1, 1), stats(0, 2, 3), store(0, 3), stats(8, 3, 7),
        halt()], constants=wts)
    iss, expected, got = run_both(config, program, act)
    assert got == expected
    assert iss.results[0].code == Status.OK
    acc = reference_acc(a, w, 2, config)
    total, spread = layout.unpack_stats(iss.results[0].outputs[0], 4 * cols, config)
    want_sum, want_spread = split_stats(acc[:9], 4)
    assert np.array_equal(total, want_sum) and np.array_equal(spread, want_spread)
