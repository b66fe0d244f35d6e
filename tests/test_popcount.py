"""The popcount trees on Amaranth's simulator: exact counts, and the iCE40 cell tree's wiring
(its ``"emulate"`` mode) inside the arrays against their golden models."""

import numpy as np
import pytest
from amaranth import ClockDomain, Fragment, Instance, Module, Mux, Signal
from amaranth.sim import Simulator

from lowbit.config.accelerator import AcceleratorConfig
from lowbit.config.xnor_array import XNORArrayConfig
from lowbit.golden.pe_array import PEArray as GoldenPEArray
from lowbit.hw.pe_array import PEArray
from lowbit.hw.popcount import PopcountEmulation, popcount_primitives, popcount_tree
from lowbit.hw.xnor_array import XNORArray
from lowbit.sim.amaranth_streams import run_stream_test
from lowbit.sim.xnor_array_vectors import beats_for, edge_jobs, random_jobs
from lowbit.synth import SynthesisPlatform

# Every width up to 64 (where the trees' shapes change most), a fixed sample of widths up
# to 300 and 1024; split over a few tests, each building one circuit per width. (All of
# 1..300 in both modes takes about ten minutes on the simulator.)
WIDTHS = (list(range(1, 65))
          + sorted(np.random.default_rng(300).choice(np.arange(65, 301), 30, replace=False)
                   .tolist()) + [256, 1024])
CHUNKS = [WIDTHS[k:k + 24] for k in range(0, len(WIDTHS), 24)]


def _words(rng, n, count):
    """``count`` random ``n``-bit integers, with an all-ones and an all-zeros word."""
    raw = rng.integers(0, 256, (count, (n + 7) // 8), dtype=np.uint8)
    raw[0], raw[1] = 0xFF, 0
    mask = (1 << n) - 1
    return [int.from_bytes(row.tobytes(), "little") & mask for row in raw]


def _expected(n, a, b, s):
    """numpy's count of the PE's bit function: AND when ``s``, else XNOR."""
    def bits(v):
        return np.unpackbits(np.frombuffer(v.to_bytes((n + 7) // 8, "little"), np.uint8),
                             bitorder="little")[:n]
    x = bits(a) & bits(b) if s else 1 - (bits(a) ^ bits(b))
    return int(x.sum())


def _count(n, stages, primitives, select, vectors):
    """Counts of a ``stages``-stage tree for ``vectors`` of ``(a, b, sel)``."""
    m = Module()
    m.domains.sync = ClockDomain()  # a combinational tree (stages=0) still gets a clock
    a, b, s = Signal(n), Signal(n), Signal()
    x = Signal(n)
    m.d.comb += x.eq(Mux(s, a & b, ~(a ^ b)) if select else ~(a ^ b))
    operands = (a, b, s) if select else (a, b)
    count, latency = popcount_tree(m, x, stages=stages, primitives=primitives,
                                   operands=operands)
    assert latency == stages
    got = []
    sim = Simulator(m)
    sim.add_clock(1e-6)

    async def bench(ctx):
        # One vector a cycle: the pipeline is full after `stages` cycles.
        for k in range(len(vectors) + stages):
            if k < len(vectors):
                av, bv, sv = vectors[k]
                ctx.set(a, av)
                ctx.set(b, bv)
                ctx.set(s, sv)
            if k >= stages:
                got.append(ctx.get(count))
            await ctx.tick()

    sim.add_testbench(bench)
    sim.run()
    return got


@pytest.mark.parametrize("primitives", [False, "emulate"])
@pytest.mark.parametrize("select", [False, True], ids=["xnor", "xnor-and"])
@pytest.mark.parametrize("chunk", range(len(CHUNKS)))
def test_counts_are_exact(chunk, select, primitives):
    rng = np.random.default_rng(1000 + chunk)
    for n in CHUNKS[chunk]:
        stages = int(rng.integers(0, 4)) if n % 4 else n % 16 // 4  # every stage count
        a, b = _words(rng, n, 6), _words(rng, n, 6)
        sel = [int(v) for v in rng.integers(0, 2, 6)] if select else [0] * 6
        vectors = list(zip(a, b, sel))
        expected = [_expected(n, *v) for v in vectors]
        assert _count(n, stages, primitives, select, vectors) == expected, (n, stages)


@pytest.mark.parametrize("stages", range(4))
def test_every_stage_count_at_256(stages):
    rng = np.random.default_rng(stages)
    vectors = list(zip(_words(rng, 256, 5), _words(rng, 256, 5), [0, 1, 1, 0, 1]))
    expected = [_expected(256, *v) for v in vectors]
    assert _count(256, stages, "emulate", True, vectors) == expected


def test_the_platform_selects_the_tree():
    assert popcount_primitives(None) is False
    assert popcount_primitives(SynthesisPlatform("ice40")) is True
    assert popcount_primitives(SynthesisPlatform("ecp5")) is False
    assert popcount_primitives(PopcountEmulation()) == "emulate"


def _instances(platform, config):
    fragment = Fragment.get(PEArray(config), platform)
    return sum(1 for _ in _walk(fragment))


def _walk(fragment):
    for sub, _name, _src in fragment.subfragments:
        if isinstance(sub, Instance):
            yield sub
        else:
            yield from _walk(sub)


def test_cells_are_instantiated_only_for_ice40():
    config = AcceleratorConfig.from_dict(
        {"xnor_array": {"rows": 1, "cols": 1, "word": 16, "max_act_bits": 1,
                        "max_weight_bits": 1, "pipeline": 1}})
    assert _instances(SynthesisPlatform("ice40"), config) > 16
    assert _instances(SynthesisPlatform("ecp5"), config) == 0
    assert _instances(None, config) == 0


def test_pe_array_in_emulate_mode_matches_its_golden_model():
    config = AcceleratorConfig.from_dict(
        {"xnor_array": {"rows": 2, "cols": 2, "word": 32, "max_act_bits": 2,
                        "max_weight_bits": 1, "pipeline": 3}})
    rng = np.random.default_rng(5)
    planes, words = 2, 3
    a = rng.integers(0, 1 << 32, (1, planes, words, 2), dtype=np.uint64)
    b = rng.integers(0, 1 << 32, (1, words, 2), dtype=np.uint64)
    expected = GoldenPEArray(config).tiles(a, b)[0, 0]
    dut = PEArray(config)
    sim = Simulator(Fragment.get(dut, PopcountEmulation()))
    sim.add_clock(1e-6)
    got = {}

    async def bench(ctx):
        ctx.set(dut.valid, 1)
        for p in range(planes):
            for w in range(words):
                ctx.set(dut.first, int(p == 0 and w == 0))
                ctx.set(dut.dbl, int(p > 0 and w == 0))
                ctx.set(dut.last, int(p == planes - 1 and w == words - 1))
                for i in range(2):
                    ctx.set(dut.a[i], int(a[0, p, w, i]))
                    ctx.set(dut.b[i], int(b[0, w, i]))
                await ctx.tick()
        ctx.set(dut.valid, 0)
        for _ in range(dut.latency + 2):
            if ctx.get(dut.capture):
                await ctx.tick()
                got["tile"] = [[ctx.get(dut.tile[i][j]) for j in range(2)] for i in range(2)]
                return
            await ctx.tick()

    sim.add_testbench(bench)
    sim.run()
    assert np.array_equal(np.array(got["tile"]), expected)


@pytest.mark.parametrize("config", [
    XNORArrayConfig(rows=2, cols=2, word=20, max_k=60, pipeline=3),
    XNORArrayConfig(rows=1, cols=2, word=33, max_k=99, max_act_bits=1, max_weight_bits=1,
                    pipeline=2),
], ids=["bit-serial", "binary-only"])
def test_xnor_array_in_emulate_mode_matches_its_golden_model(config):
    jobs = random_jobs(config, np.random.default_rng(12), 6) + edge_jobs(config)
    beats, expected = beats_for(config, jobs)
    payloads = [config.beat_layout.const(beat).as_bits() for beat in beats]
    raw, _ = run_stream_test(XNORArray(config), payloads, len(expected), seed=6, idle=0.3,
                             stall=0.3, platform=PopcountEmulation())
    layout = config.result_layout
    got = [[[layout.from_bits(bits)[i][j] for j in range(config.cols)]
            for i in range(config.rows)] for bits in raw]
    assert got == expected
