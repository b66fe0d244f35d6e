"""The accelerator's gateware on Amaranth's simulator against the ISS, through the same
Runtime host code: hand-written programs per instruction, layer sequences, random valid
programs, corrupted streams, and load/compute overlap."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lowbit.config.lightnorm import LightNormConfig
from lowbit.config.lns import LNSMacConfig
from lowbit.config.xnor_array import XNORArrayConfig
from lowbit.hw.accelerator import Accelerator
from lowbit.isa import Status
from lowbit.iss import to_signed
from lowbit.program import Program
from lowbit.runtime import AcceleratorError, ISSTransport, Runtime
from lowbit.sim import accelerator_programs as P
from lowbit.sim.amaranth_transport import AmaranthTransport

CONFIG = P.small_config()


def run_both(config, program, inputs, **link):
    """Run on the ISS and on the gateware; assert equal outputs and status; return both
    results."""
    with ISSTransport(config) as iss, AmaranthTransport(config, **link) as rtl:
        expected = Runtime(config, iss).run(program, inputs)
        got = Runtime(config, rtl).run(program, inputs)
    assert got.status == expected.status
    assert len(got.outputs) == len(expected.outputs)
    for g, e in zip(got.outputs, expected.outputs):
        assert g.tolist() == e.tolist()
    for name in ("xnor_busy", "norm_busy", "lns_busy", "instructions", "bytes_out"):
        assert got.stats[name] == expected.stats[name], name
    return expected, got


def fault_both(config, data):
    """Send a corrupt stream to both; return the two AcceleratorErrors."""
    errors = []
    for make in (lambda: ISSTransport(config), lambda: AmaranthTransport(config)):
        with make() as link:
            with pytest.raises(AcceleratorError) as info:
                Runtime(config, link).run_raw(data)
            errors.append(info.value)
    return errors


def test_config_checks():
    with pytest.raises(TypeError, match="config must be an AcceleratorConfig, not 3"):
        Accelerator(3)
    with pytest.raises(ValueError, match=r"the XNOR array's word \(16\) must equal the "
                                         r"buffer word \(32\)"):
        Accelerator(CONFIG.replace(xnor_array=XNORArrayConfig(word=16)))
    with pytest.raises(ValueError, match=r"the norm unit's block \(12\) must divide the "
                                         r"buffer word \(32\)"):
        Accelerator(CONFIG.replace(lightnorm=LightNormConfig(channels=24, block=12,
                                                              output="sign")))


def test_load_store_every_buffer():
    rng = np.random.default_rng(0)
    for _ in range(3):
        run_both(CONFIG, *P.load_store(CONFIG, rng), idle=0.3, stall=0.3, seed=1)


@pytest.mark.parametrize("m,n,k,ab,asg,wb,wsg", [
    (3, 3, 40, 1, 0, 1, 0),     # binary, two words, partial tiles
    (2, 2, 32, 1, 0, 1, 0),     # one exact word
    (1, 1, 1, 1, 0, 1, 0),      # K = 1
    (3, 5, 70, 2, 0, 1, 0),     # uint2 x binary
    (2, 3, 33, 1, 0, 3, 1),     # binary x int3
    (5, 2, 64, 4, 1, 2, 0),     # int4 x uint2
    (1, 1, 9, 8, 1, 8, 1),      # int8 x int8
    (4, 4, 100, 8, 0, 1, 0),    # uint8 x binary (a first layer)
])
def test_gemm_xnor_matches_iss_and_numpy(m, n, k, ab, asg, wb, wsg):
    rng = np.random.default_rng(m * 100 + k)
    program, inputs, reference = P.gemm(CONFIG, rng, m, n, k, ab, asg, wb, wsg, a_pad=1,
                                        c_pad=1, a_addr=3, b_addr=2, c_addr=1)
    _, got = run_both(CONFIG, program, inputs, idle=0.2, stall=0.2, seed=k)
    values = to_signed(np.stack(got.outputs), CONFIG.word)
    assert values.tolist() == reference.tolist()


def test_norm_threshold_sign():
    rng = np.random.default_rng(2)
    run_both(CONFIG, *P.norm_threshold(CONFIG, rng, 3, 16), idle=0.2, stall=0.2)
    run_both(CONFIG, *P.norm_threshold(CONFIG, rng, 2, 5, src_pad=1, dst_pad=1))


def test_norm_requantise_multithreshold():
    config = CONFIG.replace(lightnorm=LightNormConfig(channels=16, block=4,
                                                      output="multithreshold", act_bits=2))
    rng = np.random.default_rng(3)
    run_both(config, *P.norm_threshold(config, rng, 2, 13), stall=0.3)


@pytest.mark.parametrize("rows,channels", [(1, 3), (5, 16), (12, 5), (20, 4)])
def test_norm_statistics(rows, channels):
    # Fewer rows than chunks, uneven chunks (numpy.array_split), partial groups.
    rng = np.random.default_rng(rows)
    run_both(CONFIG, *P.norm_statistics(CONFIG, rng, rows, channels, src_pad=1, dst_pad=2),
             idle=0.1, stall=0.2)


BFP_CONFIG = CONFIG.replace(lightnorm=LightNormConfig(channels=16, block=4, output="bfp"))


@pytest.mark.parametrize("rows,channels", [(2, 16), (3, 7)])
def test_norm_normalise_bfp(rows, channels):
    rng = np.random.default_rng(channels)
    run_both(BFP_CONFIG, *P.norm_normalise(BFP_CONFIG, rng, rows, channels, dst_pad=1),
             stall=0.2)


def test_norm_statistics_on_a_bfp_unit():
    rng = np.random.default_rng(8)
    run_both(BFP_CONFIG, *P.norm_statistics(BFP_CONFIG, rng, 9, 11))


def test_maxpool():
    rng = np.random.default_rng(4)
    run_both(CONFIG, *P.maxpool(CONFIG, rng, 2, 2, 3), idle=0.2)
    run_both(CONFIG, *P.maxpool(CONFIG, rng, 3, 1, 1))


def test_binary_mlp_layers_chain():
    rng = np.random.default_rng(5)
    run_both(CONFIG, *P.binary_mlp(CONFIG, rng, 3, [64, 16, 16, 10]), idle=0.1, stall=0.1)


@settings(max_examples=6)
@given(st.integers(0, 2 ** 32 - 1))
def test_random_valid_programs_agree(seed):
    rng = np.random.default_rng(seed)
    run_both(CONFIG, *P.random_program(CONFIG, rng), idle=0.1, stall=0.1, seed=seed)


def test_faults_report_the_same_status_and_index():
    for data, code, index in [(P.bad_opcode(CONFIG), Status.ILLEGAL, 1),
                              (P.bad_address(CONFIG), Status.ADDRESS, 1),
                              (P.bad_unused_bits(CONFIG), Status.ILLEGAL, 0)]:
        iss, rtl = fault_both(CONFIG, data)
        assert (iss.code, iss.index) == (rtl.code, rtl.index) == (code, index)
        assert [o.tolist() for o in iss.outputs] == [o.tolist() for o in rtl.outputs]


@settings(max_examples=6)
@given(st.integers(0, 2 ** 32 - 1), st.integers(1, 60))
def test_truncated_streams_never_hang(seed, cut):
    rng = np.random.default_rng(seed)
    program, inputs = P.load_store(CONFIG, rng)
    with ISSTransport(CONFIG) as link:
        data = Runtime(CONFIG, link).serialise(program, inputs)
    cut = min(cut, len(data) - 1)
    iss, rtl = fault_both(CONFIG, data[:len(data) - cut])
    assert iss.code == rtl.code == Status.TRUNCATED
    assert iss.index == rtl.index
    assert [o.tolist() for o in iss.outputs] == [o.tolist() for o in rtl.outputs]


def test_recovers_after_a_fault():
    # After an error and a quiet link, the next program runs normally (buffers kept).
    rng = np.random.default_rng(6)
    program, inputs = P.load_store(CONFIG, rng)
    with ISSTransport(CONFIG) as iss, AmaranthTransport(CONFIG) as rtl:
        for link in (iss, rtl):
            with pytest.raises(AcceleratorError):
                Runtime(CONFIG, link).run_raw(P.bad_opcode(CONFIG))
        expected = Runtime(CONFIG, iss).run(program, inputs)
        got = Runtime(CONFIG, rtl).run(program, inputs)
    assert [o.tolist() for o in got.outputs] == [o.tolist() for o in expected.outputs]


def _overlap_program(config, rng, overlap):
    # A long GEMM, then a LOAD of 24 weight words that either avoids the GEMM's operands
    # (it may run during the GEMM) or overwrites them (it must wait), then the results.
    program, inputs, _ = P.gemm(config, rng, 4, 4, 256)
    instrs = program.instructions
    gemm_at = [i["opcode"].name for i in instrs].index("GEMM_XNOR")
    addr = 0 if overlap else 256
    load = dict(opcode="LOAD", buffer="WEIGHT", source="CONST", addr=addr, count=24)
    consts = np.concatenate([program.constants, np.arange(24, dtype=np.uint64)])
    instrs = instrs[:gemm_at + 1] + [load] + instrs[gemm_at + 1:]
    return Program(config, instrs, consts), inputs


def test_loads_overlap_compute_unless_they_conflict():
    rng = np.random.default_rng(7)
    free = run_both(CONFIG, *_overlap_program(CONFIG, rng, overlap=False))[1]
    rng = np.random.default_rng(7)
    waits = run_both(CONFIG, *_overlap_program(CONFIG, rng, overlap=True))[1]
    # Same work; the conflicting LOAD waits for the GEMM (its results are those of the
    # old weights, which the comparison with the ISS above checks).
    assert free.stats["cycles"] < waits.stats["cycles"]


LNS_CONFIG = CONFIG.replace(has_lns_mac=True)


@pytest.mark.parametrize("m,n,k", [(2, 3, 17), (1, 1, 1), (3, 2, 64), (2, 2, 8)])
def test_gemm_lns_matches_iss(m, n, k):
    rng = np.random.default_rng(k)
    run_both(LNS_CONFIG, *P.gemm_lns(LNS_CONFIG, rng, m, n, k, a_pad=1, c_pad=1, c_addr=2),
             idle=0.2, stall=0.2, seed=m)


def test_gemm_lns_one_lane():
    config = LNS_CONFIG.replace(lns_mac=LNSMacConfig(lanes=1))
    rng = np.random.default_rng(9)
    run_both(config, *P.gemm_lns(config, rng, 2, 2, 11))


def test_lns_lanes_must_divide_a_word():
    with pytest.raises(ValueError, match=r"the LNS MAC's lanes \(3\) must divide the LNS "
                                         r"words per buffer word \(4 = 32 // 8\)"):
        Accelerator(LNS_CONFIG.replace(lns_mac=LNSMacConfig(lanes=3)))


@settings(max_examples=4)
@given(st.integers(0, 2 ** 32 - 1))
def test_random_programs_with_every_unit(seed):
    rng = np.random.default_rng(seed)
    run_both(LNS_CONFIG, *P.random_program(LNS_CONFIG, rng, blocks=4), stall=0.1, seed=seed)


def test_norm_unit_without_statistics_refuses_statistics():
    # An inference-only norm unit (no statistics registers) runs thresholds as before and
    # refuses NORM STATISTICS as ILLEGAL, in the ISS and in the gateware alike.
    config = CONFIG.replace(lightnorm=LightNormConfig(channels=16, block=4, output="sign",
                                                      statistics=False))
    rng = np.random.default_rng(12)
    run_both(config, *P.norm_threshold(config, rng, 2, 16))
    program, inputs = P.norm_statistics(CONFIG, rng, 3, 4)
    with ISSTransport(CONFIG) as link:
        data = Runtime(CONFIG, link).serialise(program, inputs)
    iss, rtl = fault_both(config, data)
    assert (iss.code, iss.index) == (rtl.code, rtl.index) == (Status.ILLEGAL, 1)


def test_accelerator_without_maxpool_refuses_maxpool():
    # has_maxpool=False (an MLP's accelerator on an iCE40UP5K) builds no MAXPOOL engine:
    # the other instructions run as before, MAXPOOL is ILLEGAL in the ISS and the gateware.
    config = CONFIG.replace(has_maxpool=False)
    rng = np.random.default_rng(13)
    run_both(config, *P.norm_threshold(config, rng, 2, 16))
    program, inputs = P.maxpool(CONFIG, rng, 2, 3, 2)
    with ISSTransport(CONFIG) as link:
        data = Runtime(CONFIG, link).serialise(program, inputs)
    iss, rtl = fault_both(config, data)
    assert (iss.code, iss.index) == (rtl.code, rtl.index) == (Status.ILLEGAL, 1)
