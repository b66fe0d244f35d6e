"""The XNOR array's gateware against its golden model on Amaranth's simulator."""

import gc
import re

import numpy as np
import pytest

from lowbit.config.xnor_array import XNORArrayConfig
from lowbit.hw.xnor_array import XNORArray
from lowbit.sim.amaranth_streams import run_stream_test
from lowbit.sim.xnor_array_vectors import beats_for, edge_jobs, random_jobs

CONFIGS = {
    "default-small": XNORArrayConfig(rows=2, cols=3, word=8, max_k=40),
    "binary-only": XNORArrayConfig(rows=3, cols=2, word=16, max_k=100, max_act_bits=1,
                                   max_weight_bits=1),
    "no-pipeline": XNORArrayConfig(rows=2, cols=2, word=8, max_k=40, pipeline=0,
                                   max_act_bits=4, max_weight_bits=3),
    "deep-pipeline": XNORArrayConfig(rows=1, cols=2, word=80, max_k=200, pipeline=3,
                                     max_act_bits=2, max_weight_bits=2),
    "word-1": XNORArrayConfig(rows=2, cols=1, word=1, max_k=12),
    "one-pe": XNORArrayConfig(rows=1, cols=1, word=5, max_k=16),
}


def simulate(config, jobs, **kwargs):
    beats, expected = beats_for(config, jobs)
    payloads = [config.beat_layout.const(beat).as_bits() for beat in beats]
    raw, cycles = run_stream_test(XNORArray(config), payloads, len(expected), **kwargs)
    layout = config.result_layout
    got = [[[layout.from_bits(bits)[i][j] for j in range(config.cols)]
            for i in range(config.rows)] for bits in raw]
    return got, expected, len(beats), cycles


@pytest.mark.parametrize("name", CONFIGS)
def test_random_tiles_with_stalls(name):
    config = CONFIGS[name]
    jobs = random_jobs(config, np.random.default_rng(7), 12)
    got, expected, _, _ = simulate(config, jobs, seed=3, idle=0.4, stall=0.4)
    assert got == expected


@pytest.mark.parametrize("name", CONFIGS)
def test_edge_cases_with_stalls(name):
    config = CONFIGS[name]
    got, expected, _, _ = simulate(config, edge_jobs(config), seed=4, idle=0.3, stall=0.6)
    assert got == expected


def test_back_to_back_tiles_keep_the_array_busy():
    config = CONFIGS["default-small"]
    jobs = random_jobs(config, np.random.default_rng(8), 10)
    got, expected, beats, cycles = simulate(config, jobs)
    assert got == expected
    # One beat per cycle: the only overhead is the pipeline latency of the final tile.
    assert cycles <= beats + config.pipeline + 2


def test_output_stall_holds_results():
    # A consumer that is almost never ready: results must neither drop nor repeat.
    config = CONFIGS["binary-only"]
    jobs = random_jobs(config, np.random.default_rng(9), 6)
    got, expected, _, _ = simulate(config, jobs, seed=5, stall=0.9)
    assert got == expected


def test_component_rejects_non_config():
    with pytest.raises(TypeError, match=re.escape("config must be an XNORArrayConfig, not 3")):
        XNORArray(3)


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")  # inspected only
def test_ports_follow_the_configuration():
    config = XNORArrayConfig(rows=3, cols=5, word=16)
    dut = XNORArray(config)
    assert len(dut.i_stream.payload.as_value()) == config.beat_layout.size
    assert len(dut.o_stream.payload.as_value()) == 3 * 5 * config.accumulator_width
    del dut
    gc.collect()  # the unelaborated component goes here, where its warning is expected
