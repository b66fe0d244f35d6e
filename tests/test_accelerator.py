"""The accelerator's gateware on Amaranth's simulator against the ISS: random race-free
programs (outputs, status and every counter, cycles included, byte for byte) and random raw
instruction words (status, outputs and the memories afterwards)."""

import numpy as np
import pytest

from lowbit.isa import Status
from lowbit.iss import ISS
from lowbit.sim.amaranth_transport import AmaranthTransport
from lowbit.sim.random_programs import random_program, small_configs, stream, word_stream


@pytest.mark.parametrize("index", range(len(small_configs())))
def test_random_programs_match_the_iss_cycle_for_cycle(index):
    config = small_configs()[index]
    rng = np.random.default_rng(100 + index)
    iss = ISS(config)
    with AmaranthTransport(config, max_cycles=50_000) as rtl:
        for _ in range(6):
            program, inputs = random_program(config, rng, instructions=14)
            data = stream(program, inputs)
            expected = iss.run_stream(data)
            assert iss.results[0].code == Status.OK
            rtl.write(data)
            assert rtl.read(len(expected)) == expected


@pytest.mark.parametrize("index", range(len(small_configs())))
def test_random_words_match_the_iss(index):
    """Each raw word runs as a program of its own (with its LOAD data), then HALT; the
    status record (cycles included for OK and ILLEGAL), every DATA record and, at the end,
    every memory word are the ISS's."""
    config = small_configs()[index]
    rng = np.random.default_rng(7 + index)
    iss = ISS(config)
    codes = set()
    with AmaranthTransport(config, max_cycles=100_000) as rtl:
        for _ in range(120):
            word, data = word_stream(config, rng)
            expected = iss.run_stream(data)
            rtl.write(data)
            got = rtl.read(len(expected))
            assert got == expected, (hex(word), iss.results[0].code)
            codes.add(iss.results[0].code)
            if iss.results[0].code != Status.OK:
                rtl.wait(config.timeout_cycles + 8)    # the gateware discards until quiet
        for name in config.memories:
            assert np.array_equal(rtl.memory(name), iss.memories[name]), name
    assert codes == {Status.OK, Status.ILLEGAL}


def test_thresholds_equal_to_the_accumulators_match_the_iss():
    """Ties (acc == threshold counts as reached): thresholds taken from the tile's own
    accumulators, so the result stage's comparison is exercised at equality."""
    from lowbit.golden.pe_array import PEArray
    from lowbit.layout import pack_thresholds
    from lowbit.program import Program

    config = small_configs()[0]
    rng = np.random.default_rng(11)
    rows, cols, word = config.rows, config.cols, config.word
    planes, words, mt, nt, bits = 2, 2, 2, 3, 2
    a = rng.integers(0, 1 << word, (mt * planes * words, rows), dtype=np.uint64)
    b = rng.integers(0, 1 << word, (nt * words, cols), dtype=np.uint64)
    acc = PEArray(config).tiles(a.reshape(mt, planes, words, rows), b.reshape(nt, words, cols))
    channels = acc.transpose(1, 3, 0, 2).reshape(nt * cols, mt * rows)
    # Per channel: row 0's accumulator, one below, one above (T = 3 thresholds).
    thr = np.stack([channels[:, 0], np.maximum(channels[:, 1] - 1, 0), channels[:, 2] + 1], 1)
    t = pack_thresholds(thr, config)
    load = dict(opcode="LOAD", source="CONST", addr=0, unread=31, unwritten=31)
    program = Program(config, [
        {**load, "buffer": "IN", "count": len(a)}, {**load, "buffer": "WEIGHT", "count": len(b)},
        {**load, "buffer": "THRESH", "count": len(t)},
        dict(opcode="GEMM", a_buffer="IN", a_addr=0, b_addr=0, planes=planes, words=words,
             m_tiles=mt, n_tiles=nt, mode="THRESHOLD", out_bits=bits, dst_addr=0,
             thr_addr=0, sync=0, unsent=31),
        dict(opcode="HALT", status=0)],
        np.concatenate([a.reshape(-1), b.reshape(-1), t.reshape(-1)]))
    data = stream(program, ())
    iss = ISS(config)
    expected = iss.run_stream(data)
    with AmaranthTransport(config) as rtl:
        rtl.write(data)
        assert rtl.read(len(expected)) == expected
        assert np.array_equal(rtl.memory("act"), iss.memories["act"])
