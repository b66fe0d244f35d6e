"""The race check (``lowbit.races``, ``Program.check_races``): each kind of race refused
with an exact message naming both instructions and the memory, the waits that order the
accesses accepted, directly or through an instruction between them, and the test suite's
pipelined programs accepted."""

import pytest

from lowbit.isa import NO_WAIT
from lowbit.program import Program, ProgramError
from lowbit.races import check_races
from lowbit.sim import accelerator_programs as P

CONFIG = P.small_config()   # rows 2, cols 4: a one-tile GEMM's scores are 2 words


def load(buffer, addr, count=1, **waits):
    return P.load(buffer, "INPUT", addr, count, **waits)


def gemm(mode="SCORES", *, a_buffer="IN", a_addr=0, b_addr=0, dst_addr=0, thr_addr=0,
         **changes):
    # One tile of one word: reads a_addr, b_addr (and thr_addr), writes one act word or two
    # score words at dst_addr.
    return P.gemm(a_buffer=a_buffer, a_addr=a_addr, b_addr=b_addr, planes=1, words=1,
                  m_tiles=1, n_tiles=1, mode=mode, dst_addr=dst_addr, thr_addr=thr_addr,
                  **changes)


def program(*instrs):
    return Program(CONFIG, [*instrs, P.halt()])


def refused(instrs, message):
    with pytest.raises(ProgramError) as info:
        program(*instrs).check_races()
    assert str(info.value) == f"race: {message}"


def accepted(*instrs):
    prog = program(*instrs)
    prog.check_races()
    check_races(prog)


# LOAD after GEMM ---------------------------------------------------------------------------


def test_load_overwriting_operands_a_gemm_reads():
    refused([load("IN", 0), gemm(), load("IN", 0, 2)],
            "instruction 2 (LOAD) may overwrite words 0..0 of the in memory while "
            "instruction 1 (GEMM) may still read them (give the LOAD unread or unwritten "
            "at most 0)")
    refused([gemm(b_addr=5), gemm(b_addr=9), load("WEIGHT", 4, 3, unread=2)],
            "instruction 2 (LOAD) may overwrite words 5..5 of the weight memory while "
            "instruction 0 (GEMM) may still read them (give the LOAD unread or unwritten "
            "at most 1)")
    accepted(gemm(b_addr=5), gemm(b_addr=9), load("WEIGHT", 4, 3, unread=1))
    # A written GEMM has read everything.
    accepted(gemm(b_addr=5), gemm(b_addr=9), load("WEIGHT", 4, 3, unwritten=1))
    accepted(gemm(), load("IN", 0, unread=0), load("WEIGHT", 0, unwritten=0))
    # Words no GEMM reads need no wait.
    accepted(gemm(a_addr=0, b_addr=0), load("IN", 1, 10), load("WEIGHT", 1, 10))


def test_single_port_weight_loads_wait_by_themselves():
    # The gateware holds a LOAD into single-ported weight RAM until no GEMM reads operands.
    single = P.small_config(weight_single_port=True)
    Program(single, [gemm(b_addr=5), load("WEIGHT", 5), load("IN", 0), P.halt()]) \
        .check_races()
    with pytest.raises(ProgramError, match=r"^race: instruction 1 \(LOAD\) may overwrite "
                                           r"words 5\.\.5 of the weight memory"):
        Program(CONFIG, [gemm(b_addr=5), load("WEIGHT", 5), P.halt()]).check_races()


def test_the_nearest_conflicting_gemm_is_named():
    refused([gemm(b_addr=0), gemm(b_addr=1), gemm(b_addr=7), load("WEIGHT", 0, 4)],
            "instruction 3 (LOAD) may overwrite words 1..1 of the weight memory while "
            "instruction 1 (GEMM) may still read them (give the LOAD unread or unwritten "
            "at most 1)")


def test_thresholds_are_read_until_the_gemm_is_written():
    refused([gemm("THRESHOLD", thr_addr=3), load("THRESH", 2, 4, unread=0)],
            "instruction 1 (LOAD) may overwrite words 3..3 of the thresh memory while "
            "instruction 0 (GEMM) may still read them (thresholds are read until a GEMM is "
            "written: give the LOAD unwritten at most 0)")
    accepted(gemm("THRESHOLD", thr_addr=3), load("THRESH", 2, 4, unwritten=0))
    accepted(gemm("THRESHOLD", thr_addr=3), load("THRESH", 4, 4))


def test_an_earlier_load_wait_covers_later_loads():
    # The front end does not pass a LOAD before its wait holds.
    accepted(gemm(a_addr=0, b_addr=0), load("WEIGHT", 100, unwritten=0), load("IN", 0),
             load("WEIGHT", 0))
    refused([gemm(a_addr=0, b_addr=0), load("WEIGHT", 100, unread=1), load("IN", 0)],
            "instruction 2 (LOAD) may overwrite words 0..0 of the in memory while "
            "instruction 0 (GEMM) may still read them (give the LOAD unread or unwritten "
            "at most 0)")


# STORE after GEMM, GEMM after STORE -------------------------------------------------------


def test_store_reading_scores_a_gemm_writes():
    refused([gemm(dst_addr=4), P.store(5, 1, unwritten=1)],
            "instruction 1 (STORE) may read words 5..5 of the score memory while "
            "instruction 0 (GEMM) may still write them (give the STORE unwritten at most 0)")
    refused([gemm(dst_addr=4), gemm(dst_addr=10), P.store(3, 2, unwritten=NO_WAIT)],
            "instruction 2 (STORE) may read words 4..4 of the score memory while "
            "instruction 0 (GEMM) may still write them (give the STORE unwritten at most 1)")
    accepted(gemm(dst_addr=4), gemm(dst_addr=10), P.store(3, 2, unwritten=1))
    accepted(gemm(dst_addr=4), P.store(6, 2, unwritten=NO_WAIT))


def test_store_waits_carry_over_in_the_store_stage_and_from_loads():
    accepted(gemm(dst_addr=4), P.store(20, 1, unwritten=0), P.store(4, 2, unwritten=NO_WAIT))
    accepted(gemm(dst_addr=4), load("IN", 30, unwritten=0), P.store(4, 2, unwritten=NO_WAIT))
    # An unread wait says nothing about results.
    refused([gemm(dst_addr=4), load("IN", 30, unread=0), P.store(4, 2, unwritten=NO_WAIT)],
            "instruction 2 (STORE) may read words 4..5 of the score memory while "
            "instruction 0 (GEMM) may still write them (give the STORE unwritten at most 0)")


def test_gemm_overwriting_scores_a_store_sends():
    refused([gemm(dst_addr=0), P.store(0, 2), gemm(dst_addr=1)],
            "instruction 2 (GEMM) may overwrite words 1..1 of the score memory while "
            "instruction 1 (STORE) may still send them (give the GEMM unsent at most 0)")
    refused([gemm(dst_addr=0), P.store(0, 2), P.store(30, 2), gemm(dst_addr=0, unsent=2)],
            "instruction 3 (GEMM) may overwrite words 0..1 of the score memory while "
            "instruction 1 (STORE) may still send them (give the GEMM unsent at most 1)")
    accepted(gemm(dst_addr=0), P.store(0, 2), P.store(30, 2), gemm(dst_addr=0, unsent=1))
    # The execute stage pops in order: an earlier GEMM's wait covers the later one.
    accepted(gemm(dst_addr=0), P.store(0, 2), gemm(dst_addr=20, unsent=0), gemm(dst_addr=0))
    # A THRESHOLD GEMM writes act words, not scores.
    accepted(gemm(dst_addr=0), P.store(0, 2), gemm("THRESHOLD", dst_addr=0))


# GEMM after GEMM ---------------------------------------------------------------------------


def test_gemm_reading_act_another_gemm_writes():
    refused([gemm("THRESHOLD", dst_addr=3), gemm(a_buffer="ACT", a_addr=3)],
            "instruction 1 (GEMM) may read words 3..3 of the act memory while instruction 0 "
            "(GEMM) may still write them (set the GEMM's sync)")
    accepted(gemm("THRESHOLD", dst_addr=3), gemm(a_buffer="ACT", a_addr=3, sync=1))
    # A sync between them, or a LOAD that waited for the results, orders them too.
    accepted(gemm("THRESHOLD", dst_addr=3), gemm(sync=1),
             gemm(a_buffer="ACT", a_addr=3, dst_addr=10))
    accepted(gemm("THRESHOLD", dst_addr=3), load("IN", 40, unwritten=0),
             gemm(a_buffer="ACT", a_addr=3))
    refused([gemm("THRESHOLD", dst_addr=3), load("IN", 40, unread=0),
             gemm(a_buffer="ACT", a_addr=3)],
            "instruction 2 (GEMM) may read words 3..3 of the act memory while instruction 0 "
            "(GEMM) may still write them (set the GEMM's sync)")
    # Reading other words, or overwriting what an earlier GEMM reads, needs nothing.
    accepted(gemm("THRESHOLD", dst_addr=3), gemm(a_buffer="ACT", a_addr=4))
    accepted(gemm(a_buffer="ACT", a_addr=3), gemm("THRESHOLD", dst_addr=3))


def test_gemm_reading_and_writing_the_same_act_words():
    refused([gemm("THRESHOLD", a_buffer="ACT", a_addr=5, dst_addr=5, sync=1)],
            "instruction 0 (GEMM) reads and writes words 5..5 of the act memory")
    # Two row tiles of two planes read words 2..5; one plane of two row tiles written at 5.
    wide = P.gemm(a_buffer="ACT", a_addr=2, b_addr=0, planes=2, words=1, m_tiles=2,
                  n_tiles=1, mode="THRESHOLD", dst_addr=5)
    refused([wide], "instruction 0 (GEMM) reads and writes words 5..5 of the act memory")
    accepted(gemm("THRESHOLD", a_buffer="ACT", a_addr=5, dst_addr=6))


def test_halt_ends_every_race():
    accepted(gemm(), P.halt(), load("IN", 0), gemm(dst_addr=0), P.halt(),
             P.store(0, 2, unwritten=NO_WAIT))


# Whole programs ----------------------------------------------------------------------------


@pytest.mark.parametrize("name, prog", [(n, p) for n, p, _, _ in P.programs()],
                         ids=[n for n, _, _, _ in P.programs()])
def test_the_suite_is_race_free(name, prog):
    prog.check_races()


def _loosen(prog, index, **changes):
    instrs = list(prog.instructions)
    instrs[index] = {**instrs[index], **changes}
    return Program(prog.config, instrs, prog.constants)


def test_the_pipelined_program_needs_each_of_its_waits():
    (prog,) = [p for n, p, _, _ in P.programs() if n == "pipelined"]
    # Weights and thresholds (3 loads), then per batch LOAD, GEMM, GEMM, STORE; a batch
    # of 3 rows of 36 elements takes 2 row tiles x 3 words of the in memory.
    batch = [3 + 4 * b for b in range(3)]
    assert [prog.instructions[i]["opcode"].name for i in range(batch[2], batch[2] + 4)] == \
        ["LOAD", "GEMM", "GEMM", "STORE"]
    with pytest.raises(ProgramError, match=rf"^race: instruction {batch[2]} \(LOAD\) may "
                                           rf"overwrite words 0\.\.5 of the in memory while "
                                           rf"instruction {batch[0] + 1} \(GEMM\)"):
        _loosen(prog, batch[2], unread=4).check_races()
    with pytest.raises(ProgramError, match=rf"^race: instruction {batch[2] + 2} \(GEMM\) may "
                                           rf"overwrite .* instruction {batch[0] + 3} \(STORE\)"):
        _loosen(prog, batch[2] + 2, unsent=2).check_races()
    with pytest.raises(ProgramError, match=rf"\(set the GEMM's sync\)$"):
        _loosen(prog, batch[1] + 2, sync=0).check_races()
    with pytest.raises(ProgramError, match=rf"^race: instruction {batch[1] + 3} \(STORE\)"):
        _loosen(prog, batch[1] + 3, unwritten=1).check_races()


def test_check_races_needs_a_program():
    with pytest.raises(TypeError, match="^program must be a Program, not 3$"):
        check_races(3)
