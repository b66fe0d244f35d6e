"""UPDATE, the training configuration's instruction: LNS-Madam on the latent memory and the
new signs into the weight memory. A hand-derived case through the ISS and the gateware, the
golden rule on random words at every link width, truncated gradient data, the latent
memory's layout, and the errors of the configuration, the instruction and the race check.
(Random programs with UPDATEs run in tests/test_accelerator.py and, on the Verilog, in
tests/test_accelerator_cocotb.py: the first small configuration is a training one.)"""

import numpy as np
import pytest

from lowbit import layout
from lowbit.config.accelerator import AcceleratorConfig
from lowbit.golden.lns import LNSTensor
from lowbit.golden.training import madam_update
from lowbit.isa import NO_WAIT, STATUS_COUNTERS, InstructionError, Status, instruction_set
from lowbit.iss import ISS
from lowbit.program import Program, ProgramError
from lowbit.sim.accelerator_programs import small_config
from lowbit.sim.amaranth_transport import AmaranthTransport
from lowbit.sim.random_programs import stream

#: 2x4 array of 16-bit words, an 8-bit link, 8-bit latent words (c_max 127).
CONFIG = small_config(latent_depth=64)


def update(**fields):
    instr = dict(opcode="UPDATE", source="INPUT", lat_addr=0, w_addr=0, count=4, grad_bits=8,
                 lr_exponent=3, unread=NO_WAIT, unwritten=NO_WAIT)
    return {**instr, **fields}


def load_latent(count, addr=0):
    return dict(opcode="LOAD", buffer="LATENT", source="CONST", addr=addr, count=count,
                unread=NO_WAIT, unwritten=NO_WAIT)


def store_latent(count, addr=0):
    return dict(opcode="STORE", buffer="LATENT", addr=addr, count=count, unwritten=NO_WAIT)


HALT = dict(opcode="HALT", status=0)


def run_both(config, program, inputs, *, idle=0.0, stall=0.0):
    """The ISS's and the gateware's replies and memories for one program."""
    data = stream(program, inputs)
    iss = ISS(config)
    expected = iss.run_stream(data)
    with AmaranthTransport(config, idle=idle, stall=stall, seed=3, max_cycles=200_000) as rtl:
        rtl.write(data)
        got = rtl.read(len(expected))
        memories = {name: rtl.memory(name) for name in config.memories}
    return iss, expected, got, memories


def test_hand_derived_updates_on_the_iss_and_the_gateware():
    """One output channel of four weights (sign, code): (0, 10), (1, 10), (0, 2), (0, 127).

    First UPDATE, grad_bits 8, lr 3: step = round(d * g / 2^(7 - 3)), ties to even, d = -1
    for a negative weight. Gradients 40, 40, 56, -24:
    w0: 40/16 = 2.5 -> 2, code 8; w1: -40/16 = -2.5 -> -2, code 12; w2: 56/16 = 3.5 -> 4,
    2 - 4 < 1 crosses zero: sign 1, code 1; w3: -24/16 = -1.5 -> -2, 129 saturates at 127.
    Second UPDATE, grad_bits 4, lr 1 (shift 4 - 1 - 1 = 2), gradients 5, -6, 2, 7:
    w0: 5/4 -> 1, code 7; w1: 6/4 = 1.5 -> 2, code 10; w2: -2/4 = -0.5 -> 0, stays (1, 1);
    w3: 7/4 -> 2, code 125.
    Signs 0, 1, 1, 0: weight bits 0 and 3 set, the 12 padding elements 1: lane 0xFFF9; the
    three padding channels (lanes 1..3) stay 0.
    """
    sign = np.array([[0, 1, 0, 0]])
    code = np.array([[10, 10, 2, 127]])
    words = layout.latent_words(sign.shape, CONFIG)
    assert words == 4     # one column tile of 4 lanes, one 16-bit word each
    g1 = layout.pack_gradients(np.array([[40, 40, 56, -24]]), CONFIG)
    g2 = layout.pack_gradients(np.array([[5, -6, 2, 7]]), CONFIG)
    program = Program(CONFIG, [
        load_latent(words), update(count=words),
        update(count=words, grad_bits=4, lr_exponent=1), store_latent(words), HALT],
        constants=layout.pack_latent(sign, code, CONFIG).reshape(-1))
    iss, expected, got, memories = run_both(CONFIG, program, np.concatenate([g1, g2]))
    assert got == expected
    assert iss.results[0].code == Status.OK
    new_sign, new_code = layout.unpack_latent(iss.results[0].outputs[0], sign.shape, CONFIG)
    assert new_sign.tolist() == [[0, 1, 1, 0]]
    assert new_code.tolist() == [[7, 10, 1, 125]]
    assert memories["weight"][0].tolist() == [0xFFF9, 0, 0, 0]
    assert iss.memories["weight"][0].tolist() == [0xFFF9, 0, 0, 0]
    for name in CONFIG.memories:
        assert np.array_equal(memories[name], iss.memories[name]), name


@pytest.mark.parametrize("link, latent_bits", [(8, 8), (16, 5), (32, 11)])
def test_random_updates_equal_the_golden_rule(link, latent_bits):
    """Random latent weights and byte gradients of a (6, 40) layer, every grad_bits and a
    learning-rate exponent each: the ISS and the gateware (with idle input cycles) equal
    :func:`madam_update` applied to the unpacked weights, and the weight memory holds the
    signs in pack_weights' layout. The status record's counters are left out: the cycle
    model is that of an ideal host (the tests without idle cycles compare them)."""
    config = small_config(latent_depth=64, latent_bits=latent_bits, host_link_bits=link,
                          xnor_array=small_config().xnor_array.replace(word=32, max_k=256))
    rng = np.random.default_rng(link)
    shape = (6, 40)
    words = layout.latent_words(shape, config)
    c_max = (1 << (latent_bits - 1)) - 1
    sign = rng.integers(0, 2, shape)
    code = rng.integers(0, c_max + 1, shape)
    instrs, grads, expected = [load_latent(words)], [], LNSTensor(sign, code, 0, latent_bits)
    for grad_bits in range(2, 9):
        lr = int(rng.integers(0, config.max_update_lr + 1))
        g = rng.integers(-128, 128, shape)
        instrs.append(update(count=words, grad_bits=grad_bits, lr_exponent=lr, w_addr=4))
        grads.append(layout.pack_gradients(g, config))
        expected = madam_update(expected, g, grad_bits, lr)
    program = Program(config, instrs + [store_latent(words), HALT],
                      constants=layout.pack_latent(sign, code, config).reshape(-1))
    iss, reply, got, memories = run_both(config, program, np.concatenate(grads),
                                         idle=0.3)
    counters = 4 * len(STATUS_COUNTERS)
    assert got[:-counters] == reply[:-counters]
    new_sign, new_code = layout.unpack_latent(iss.results[0].outputs[0], shape, config)
    assert np.array_equal(new_sign, expected.sign) and np.array_equal(new_code, expected.code)
    signs = layout.signs_of_latent(expected.sign, config).reshape(-1)
    flat = memories["weight"].reshape(-1)
    assert np.array_equal(flat[4:4 + len(signs)], signs)
    assert not flat[:4].any()         # lanes before w_addr are not touched
    for name in config.memories:
        assert np.array_equal(memories[name], iss.memories[name]), name


def test_update_cycles_are_the_cycle_model():
    """An UPDATE of n latent words takes wait + 1 + n * (beats + 5) front-end cycles
    (lowbit.timing), beats = word bytes over the link: 16 * 8 / 8 = 16 here."""
    program = Program(CONFIG, [update(count=3), HALT])
    iss = ISS(CONFIG)
    result = iss.run(program, np.zeros(3 * 8, dtype=np.uint64))
    start, end = result.trace[0]["start"], result.trace[0]["end"]
    fetch = instruction_set(CONFIG).width // 8
    # Fetch, check, decode (d), the wait checked from d + 1 and acted on at d + 2.
    assert end - start == fetch + 1 + 2 + 1 + 3 * (16 + 5)
    _, reply, got, _ = run_both(CONFIG, program, np.zeros(3 * 8, dtype=np.uint64))
    assert got == reply


def test_truncated_gradients_update_the_whole_words_only():
    """The host stops inside the third latent word's gradients: the first two words are
    updated (and their signs written), the third is not; both sides report TRUNCATED."""
    rng = np.random.default_rng(5)
    shape = (4, 12)
    words = layout.latent_words(shape, CONFIG)
    sign, code = rng.integers(0, 2, shape), rng.integers(1, 128, shape)
    program = Program(CONFIG, [load_latent(words), update(count=words), HALT],
                      constants=layout.pack_latent(sign, code, CONFIG).reshape(-1))
    grads = layout.pack_gradients(rng.integers(-128, 128, shape), CONFIG)
    data = stream(program, grads)
    cut = len(data) - instruction_set(CONFIG).bytes - (words - 2) * 16 - 5
    iss = ISS(CONFIG)
    expected = iss.run_stream(data[:cut])
    assert iss.results[0].code == Status.TRUNCATED
    before = layout.pack_latent(sign, code, CONFIG)
    assert not np.array_equal(iss.memories["latent"][:2], before[:2])
    assert np.array_equal(iss.memories["latent"][2:words], before[2:])
    # After the timeout a whole UPDATE runs as it should (nothing of the cut word is left).
    again = Program(CONFIG, [update(count=words), HALT])
    more = stream(again, grads)
    with AmaranthTransport(CONFIG, max_cycles=200_000) as rtl:
        rtl.write(data[:cut])
        assert rtl.read(len(expected))[:8] == expected[:8]   # kind, code, index
        for name in CONFIG.memories:
            assert np.array_equal(rtl.memory(name), iss.memories[name]), name
        rtl.wait(CONFIG.timeout_cycles + 8)    # the gateware discards until quiet
        reply = iss.run_stream(more)
        rtl.write(more)
        assert rtl.read(len(reply)) == reply
        for name in CONFIG.memories:
            assert np.array_equal(rtl.memory(name), iss.memories[name]), name


def test_latent_layout_round_trip_and_padding():
    config = small_config(latent_depth=64, latent_bits=6)
    rng = np.random.default_rng(1)
    sign, code = rng.integers(0, 2, (5, 20)), rng.integers(0, 32, (5, 20))
    words = layout.pack_latent(sign, code, config)
    assert words.shape == (layout.latent_words((5, 20), config), 6)
    back = layout.unpack_latent(words, (5, 20), config)
    assert np.array_equal(back[0], sign) and np.array_equal(back[1], code)
    # Lane word 9 = (tile 1 * 2 k-words + 0) * 4 lanes + lane 1: channel 5, a padding
    # channel: sign plane all ones (binary 0), code 1 in every position.
    assert words[9, 0] == 0xFFFF and words[9, 1] == 0xFFFF and not words[9, 2:].any()
    # Lane word 4: channel 0, k-word 1 (elements 16..19 real, 20..31 padding: sign 0).
    assert int(words[4, 0]) >> 4 == 0 and int(words[4, 1]) >> 4 == 0xFFF
    with pytest.raises(ValueError, match="latent codes must be within 0..31"):
        layout.pack_latent(sign, code + 1, config)
    with pytest.raises(ValueError, match=r"gradient mantissas must be within -128..127"):
        layout.pack_gradients(np.array([[128]]), config)


# Errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize("changes, error, message", [
    (dict(latent_depth=48), ValueError,
     "AcceleratorConfig latent_depth must be 0 or a power of two, not 48"),
    (dict(latent_depth=-1), ValueError, "AcceleratorConfig latent_depth must be at least 0, "
                                        "not -1"),
    (dict(latent_bits=3), ValueError, "AcceleratorConfig latent_bits must be at least 4, "
                                      "not 3"),
    (dict(latent_depth=64, weight_single_port=True), ValueError,
     "AcceleratorConfig latent_depth > 0 needs a dual-ported weight memory: UPDATE writes one "
     "lane of a weight word (weight_single_port must be False)"),
    (dict(latent_depth=True), TypeError, "AcceleratorConfig latent_depth must be an integer, "
                                         "not True"),
])
def test_configuration_errors(changes, error, message):
    with pytest.raises(error) as info:
        AcceleratorConfig(**changes)
    assert str(info.value) == message


@pytest.mark.parametrize("instr, message, code", [
    (update(grad_bits=1), "UPDATE grad_bits must be at least 2, not 1", Status.ILLEGAL),
    (update(grad_bits=9), "UPDATE grad_bits must be at most 8, not 9", Status.ILLEGAL),
    (update(lr_exponent=7), "UPDATE lr_exponent must be at most 6, not 7", Status.ILLEGAL),
    (update(count=0), "UPDATE count must be at least 1, not 0", Status.ILLEGAL),
    (update(lat_addr=62), "UPDATE region of 4 words at 62 runs past the end of the latent "
                          "memory (64 words)", Status.ADDRESS),
    (update(w_addr=4 * 256 - 2), "UPDATE region of 2 words at 255 runs past the end of the "
                                 "weight memory (256 words)", Status.ADDRESS),
    (dict(opcode="STORE", buffer="WEIGHT", addr=0, count=1, unwritten=0),
     "STORE cannot read the weight memory (only score, latent)", Status.ILLEGAL),
])
def test_instruction_errors(instr, message, code):
    with pytest.raises(InstructionError) as info:
        instruction_set(CONFIG).encode(instr)
    assert str(info.value) == message and info.value.code == code


def test_update_is_refused_without_a_latent_memory():
    with pytest.raises(ProgramError, match=r"^instruction 0: UPDATE needs a training "
                       r"configuration \(latent_depth > 0\); this accelerator has no latent "
                       r"memory$"):
        Program(small_config(), [update(), HALT])
    with pytest.raises(ProgramError, match=r"^instruction 0: LOAD cannot write the latent "
                       r"memory \(only in, weight, thresh\)$"):
        Program(small_config(), [load_latent(1), HALT], constants=np.zeros(8))


def test_race_of_an_update_with_a_gemm_reading_its_weights():
    gemm = dict(opcode="GEMM", a_buffer="IN", a_addr=0, b_addr=0, planes=1, words=1,
                m_tiles=1, n_tiles=1, mode="SCORES", out_bits=1, dst_addr=0, thr_addr=0,
                sync=0, unsent=NO_WAIT)
    racy = Program(CONFIG, [gemm, update(count=4, w_addr=0), HALT])
    with pytest.raises(ProgramError, match=r"^race: instruction 1 \(UPDATE\) may overwrite "
                       r"words 0..0 of the weight memory while instruction 0 \(GEMM\) may "
                       r"still read them \(give the UPDATE unread or unwritten at most 0\)$"):
        racy.check_races()
    Program(CONFIG, [gemm, update(count=4, w_addr=0, unread=0), HALT]).check_races()
    Program(CONFIG, [gemm, update(count=4, w_addr=4), HALT]).check_races()  # other words


def test_energy_model_counts_an_update():
    """UPDATE of 3 latent words on 16-bit words: 3 latent reads and writes, 3 weight-lane
    writes (charged as word writes), 48 weights updated, the instruction and 3 x 16
    gradient bytes in; an update costs three latent_bits-wide adds."""
    from lowbit import energy

    isa = instruction_set(CONFIG)
    a = energy.count_instruction(isa.check(update(count=3)), CONFIG)
    assert (a["latent_reads"], a["latent_writes"], a["weight_writes"]) == (3, 3, 3)
    assert a["lns_updates"] == 48 and a["host_bytes_in"] == isa.bytes + 48
    tech = energy.default_technology()
    e = energy.action_energy(tech, CONFIG)
    assert e["lns_updates"][0] == pytest.approx(3 * tech.int_add(8))
    assert e["latent_reads"][0] == pytest.approx(tech.sram_access(64, 8 * 16))
    # An inference configuration: no latent memory, nothing charged for one.
    assert energy.action_energy(tech, small_config())["latent_reads"][0] == 0.0


def test_an_update_invalidates_resident_weights():
    """A transport that keeps weights between runs (a board's) must send an inference
    program's weights again after an UPDATE rewrote weight lanes: the same program and
    inputs give the same scores before and after."""
    from lowbit.runtime import ISSTransport, Runtime

    class Keeping(ISSTransport):
        keeps_weights = True      # as a board's link, which keeps the tag in the bridge

    waits = dict(unread=NO_WAIT, unwritten=NO_WAIT)
    rng = np.random.default_rng(0)
    a = rng.integers(0, 1 << 16, 2, dtype=np.uint64)      # one in word (rows = 2)
    b = rng.integers(0, 1 << 16, 4, dtype=np.uint64)      # one weight word (cols = 4)
    infer = Program(CONFIG, [
        dict(opcode="LOAD", buffer="WEIGHT", source="CONST", addr=0, count=1, **waits),
        dict(opcode="LOAD", buffer="IN", source="INPUT", addr=0, count=1, **waits),
        dict(opcode="GEMM", a_buffer="IN", a_addr=0, b_addr=0, planes=1, words=1, m_tiles=1,
             n_tiles=1, mode="SCORES", out_bits=1, dst_addr=0, thr_addr=0, sync=0,
             unsent=NO_WAIT),
        dict(opcode="STORE", buffer="SCORE", addr=0, count=2, unwritten=0), HALT],
        constants=b)
    runtime = Runtime(CONFIG, Keeping(CONFIG))
    first = runtime.run(infer, a)
    runtime.run(Program(CONFIG, [update(count=4, lr_exponent=0), HALT]),
                np.zeros(4 * 8, dtype=np.uint64))    # rewrites weight lanes 0..3
    again = runtime.run(infer, a)
    assert again.stats["weights_sent"]
    assert np.array_equal(first.outputs[0], again.outputs[0])
