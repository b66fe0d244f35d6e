"""The cycle model (``lowbit.timing``) on its own: what the ISS reports is the model stepped
over the program, beats and holds add up per GEMM, waits and full queues only ever delay,
and the queue bound. The closed forms on hand-computed programs are in tests/test_iss.py;
the comparison with the gateware's own counter is the core's RTL tests'."""

import numpy as np
import pytest

from lowbit.isa import NO_WAIT, Opcode, instruction_set
from lowbit.iss import ISS
from lowbit.program import Program
from lowbit.sim import accelerator_programs as P
from lowbit.timing import Timing

CONFIG = P.small_config()
SUITE = P.programs(CONFIG)


def stepped(config, program):
    timing = Timing(config)
    for instr in program.instructions:
        timing.step(instr)
    return timing


@pytest.mark.parametrize("name, program, inputs, expected", SUITE,
                         ids=[e[0] for e in SUITE])
def test_the_iss_reports_the_model(name, program, inputs, expected):
    result = ISS(CONFIG).run(program, inputs)
    timing = stepped(CONFIG, program)
    assert result.counters == {"cycles": timing.cycles, "array_beats": timing.beats,
                               "tile_holds": timing.holds}
    assert result.trace == timing.trace
    gemms = [i for i in program.instructions if i["opcode"] == Opcode.GEMM]
    assert timing.beats == sum(g["m_tiles"] * g["n_tiles"] * g["planes"] * g["words"]
                               for g in gemms)
    assert sum(g.beats for g in timing.gemms) == timing.beats
    assert sum(g.holds for g in timing.gemms) == timing.holds
    for g in timing.gemms:
        assert g.pushed < g.popped < g.first_tile <= g.read < g.written < timing.cycles
    # The front end runs instructions in order, each after the last.
    assert all(a["end"] == b["start"] for a, b in zip(timing.trace, timing.trace[1:]))


def _strict(program):
    # Every wait at its tightest: each stage waits for everything before it.
    instrs = []
    for instr in program.instructions:
        instr = dict(instr)
        for key in ("unread", "unwritten", "unsent"):
            if key in instr:
                instr[key] = 0
        if "sync" in instr:
            instr["sync"] = 1
        instrs.append(instr)
    return Program(program.config, instrs, program.constants)


@pytest.mark.parametrize("name, program, inputs, expected", SUITE,
                         ids=[e[0] for e in SUITE])
def test_tighter_waits_only_delay(name, program, inputs, expected):
    loose = ISS(CONFIG).run(program, inputs)
    strict = ISS(CONFIG).run(_strict(program), inputs)
    assert strict.cycles >= loose.cycles
    assert strict.counters["array_beats"] == loose.counters["array_beats"]
    # Waits change when things happen, never what is computed.
    assert all(np.array_equal(a, b) for a, b in zip(strict.outputs, loose.outputs))


def test_pipelining_pays_off():
    (program, inputs) = [(p, x) for n, p, x, _ in SUITE if n == "pipelined"][0]
    assert ISS(CONFIG).run(program, inputs).cycles < \
        ISS(CONFIG).run(_strict(program), inputs).cycles


def _gemms(count, **changes):
    fields = dict(a_buffer="IN", a_addr=0, b_addr=0, planes=2, words=3, m_tiles=3,
                  n_tiles=2, mode="SCORES", dst_addr=0)
    fields.update(changes)
    return [P.gemm(**fields) for _ in range(count)]


@pytest.mark.parametrize("queue", [1, 2, 4])
def test_a_full_queue_holds_the_front_end(queue):
    config = P.small_config(queue_depth=queue)
    timing = stepped(config, Program(config, [*_gemms(6), P.halt()]))
    for j, g in enumerate(timing.gemms):
        if j >= queue:
            # Pushed only once the GEMM `queue` places ahead has left the queue.
            assert g.pushed >= timing.gemms[j - queue].popped + 1
        if j:
            # One execute stage: a GEMM starts once the one before has issued its beats.
            before = timing.gemms[j - 1]
            assert g.first_tile > before.read
    # At most queue + 2 GEMMs outstanding when the front end pushes one, well under
    # NO_WAIT.
    for j, g in enumerate(timing.gemms):
        outstanding = sum(1 for h in timing.gemms[:j] if h.written >= g.pushed)
        assert outstanding <= queue + 2 < NO_WAIT


def test_reset_starts_a_new_program():
    timing = stepped(CONFIG, Program(CONFIG, [*_gemms(2), P.halt()]))
    first = timing.cycles
    timing.reset()
    assert (timing.cycles, timing.beats, timing.holds, timing.trace) == (0, 0, 0, [])
    for instr in Program(CONFIG, [*_gemms(2), P.halt()]).instructions:
        timing.step(instr)
    assert timing.cycles == first


def test_link_width_sets_the_fetch_and_data_beats():
    # 96-bit instructions: 12 beats on an 8-bit link, 6 on 16 bits; a LOAD's lanes 2 or 1
    # beats each.
    for link, fetch, lane in [(8, 12, 2), (16, 6, 1)]:
        config = P.small_config(host_link_bits=link)
        timing = Timing(config)
        assert (timing.fetch_beats, timing.lane_beats, timing.header_beats) == \
            (fetch, lane, 64 // link)
        assert instruction_set(config).width == 96


def test_timing_needs_a_config():
    with pytest.raises(TypeError, match="^config must be an AcceleratorConfig, not 'x'$"):
        Timing("x")
