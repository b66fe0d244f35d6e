"""The LNS MAC and int8 MAC gateware against their golden models on Amaranth's simulator,
bit for bit, with random idle input cycles and output back-pressure."""

import gc
import re

import numpy as np
import pytest

from lowbit.config.int8_mac import Int8MacConfig
from lowbit.config.lns import LNSMacConfig
from lowbit.hw.int8_mac import Int8Mac
from lowbit.hw.lns_mac import LNSMac
from lowbit.sim.amaranth_streams import run_stream_test
from lowbit.sim.lns_mac_vectors import (beats_for, edge_int8_jobs, edge_jobs, int8_beats_for,
                                        random_int8_jobs, random_jobs)

CONFIGS = {
    "default-2-lanes": LNSMacConfig(lanes=2, max_k=24),
    "b6-gamma4-floor": LNSMacConfig(lanes=3, bits=6, gamma=4, max_k=20, rounding="floor"),
    "gamma1-one-lane": LNSMacConfig(lanes=1, bits=5, gamma=1, max_k=9, out_shift=0),
    "gamma16-small-shift": LNSMacConfig(lanes=2, bits=8, gamma=16, shift=3, lut_frac=5,
                                        max_k=16, out_shift=2),
    "b10-wide": LNSMacConfig(lanes=4, bits=10, gamma=8, max_k=32, lut_frac=12,
                             acc_width=30),
}


def simulate(config, dut, beats, n_out, **kwargs):
    payloads = [config.beat_layout.const(beat).as_bits() for beat in beats]
    raw, cycles = run_stream_test(dut, payloads, n_out, **kwargs)
    return [config.result_layout.from_bits(bits).dot for bits in raw], cycles


@pytest.mark.parametrize("name", CONFIGS)
def test_random_and_edge_dot_products_with_stalls(name):
    config = CONFIGS[name]
    jobs = random_jobs(config, np.random.default_rng(7), 14) + edge_jobs(config)
    beats, expected = beats_for(config, jobs)
    got, _ = simulate(config, LNSMac(config), beats, len(expected), seed=3, idle=0.3,
                      stall=0.4)
    assert got == expected


def test_output_stall_holds_results():
    config = CONFIGS["default-2-lanes"]
    beats, expected = beats_for(config, random_jobs(config, np.random.default_rng(9), 8))
    got, _ = simulate(config, LNSMac(config), beats, len(expected), seed=5, stall=0.9)
    assert got == expected


def test_long_dot_products_stream_without_bubbles():
    # Dot products of >= gamma + 2 beats: one beat per cycle; only the final latency adds.
    config = LNSMacConfig(lanes=2, max_k=64)
    jobs = random_jobs(config, np.random.default_rng(4), 8, max_len=64)
    jobs = [(a, b) for a, b in jobs if a.shape[0] > 2 * (config.gamma + 2)]
    beats, expected = beats_for(config, jobs)
    dut = LNSMac(config)
    got, cycles = simulate(config, dut, beats, len(expected))
    assert got == expected
    assert cycles <= len(beats) + dut.latency + 2


def test_short_dot_products_wait_for_the_finaliser():
    # One-beat dot products: one result per gamma + 2 cycles, nothing lost.
    config = LNSMacConfig(lanes=4, gamma=8, max_k=4)
    jobs = random_jobs(config, np.random.default_rng(5), 12, max_len=4)
    beats, expected = beats_for(config, jobs)
    dut = LNSMac(config)
    got, cycles = simulate(config, dut, beats, len(expected))
    assert got == expected
    assert cycles <= len(expected) * (config.gamma + 2) + dut.latency + 2


def test_overflow_wraps_like_the_golden_model():
    # Past max_k the registers wrap; the golden model wraps at the same widths.
    config = LNSMacConfig(lanes=2, bits=6, gamma=4, max_k=2, out_shift=0)
    jobs = edge_jobs(config.replace(max_k=9))[:2]
    beats, expected = beats_for(config, jobs)
    got, _ = simulate(config, LNSMac(config), beats, len(expected), seed=1, idle=0.2)
    assert got == expected
    assert expected[0] != 9 * (config.lut[0] << config.frac_shift)  # it did wrap


@pytest.mark.parametrize("lanes", [1, 3])
def test_int8_mac_matches_golden_with_stalls(lanes):
    config = Int8MacConfig(lanes=lanes, max_k=20)
    jobs = random_int8_jobs(config, np.random.default_rng(lanes), 12) + edge_int8_jobs(config)
    beats, expected = int8_beats_for(config, jobs)
    assert expected[:len(jobs)] == [int(np.dot(a, b)) for a, b in jobs]
    got, _ = simulate(config, Int8Mac(config), beats, len(expected), seed=2, idle=0.3,
                      stall=0.4)
    assert got == expected


def test_int8_mac_streams_one_beat_per_cycle():
    config = Int8MacConfig(lanes=2, max_k=16)
    beats, expected = int8_beats_for(config, random_int8_jobs(config,
                                                              np.random.default_rng(8), 10))
    dut = Int8Mac(config)
    got, cycles = simulate(config, dut, beats, len(expected))
    assert got == expected and cycles <= len(beats) + dut.latency + 2


def test_components_reject_other_configs():
    with pytest.raises(TypeError, match=re.escape("config must be an LNSMacConfig, not 3")):
        LNSMac(3)
    with pytest.raises(TypeError, match=re.escape("config must be an Int8MacConfig, not 'x'")):
        Int8Mac("x")


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")  # inspected only
def test_ports_follow_the_configuration():
    config = LNSMacConfig(lanes=3, bits=7)
    dut = LNSMac(config)
    assert len(dut.i_stream.payload.as_value()) == 2 * 3 * 7 + 2
    assert len(dut.o_stream.payload.as_value()) == config.out_width
    del dut
    gc.collect()  # the unelaborated component goes here, where its warning is expected
