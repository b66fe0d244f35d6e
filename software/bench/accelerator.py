"""Benchmark of the accelerator: a 3-layer binary MLP (784-1024-1024-1024-10) on the
default configuration, on the ISS and on the RTL (Verilator), with and without load/compute
overlap; XNOR-array busy fraction and MACs per cycle on the hidden layers (weights resident
or streamed from the host, over batch sizes); RTL simulation speed.

Run: ``python -m lowbit.bench.accelerator [--quick] [--json FILE]`` (``make bench``).
"""

import argparse
import json
import sys
import time

import numpy as np

from ..config.accelerator import AcceleratorConfig
from ..iss import from_signed, pack_rows, to_signed
from ..program import Program
from ..runtime import ISSTransport, Runtime

__all__ = ["mlp_program", "layer_program", "run", "main"]

SIZES = (784, 1024, 1024, 1024, 10)


def _words(k, word):
    return -(-k // word)


def _chunk(config, k, batch_rows, hidden):
    """Output channels per GEMM instruction: a multiple of the word (NORM writes whole
    words), within the norm unit, half the weight buffer (double buffering) and the output
    buffer."""
    word = config.word
    row = _words(k, word)
    half = config.weight_words // 2
    limit = min(config.lightnorm.channels if hidden else 1 << 30,
                half // (row + 2), config.out_words // batch_rows)
    return max(word, limit // word * word) if hidden else limit


def mlp_program(config, sizes=SIZES, batch=16, *, double_buffer=True, seed=0,
                resident_weights=False):
    """A binary MLP of layer ``sizes`` on ``batch`` inputs: per layer and per chunk of output
    channels, LOAD the weights (and thresholds) from the host, GEMM_XNOR per block of at most
    32 inputs, NORM THRESHOLD into the next layer's activations; the scores are stored.

    ``double_buffer`` alternates two halves of the weight buffer, so a chunk's weights load
    while the previous chunk computes; without it every LOAD overwrites the weights the
    running GEMM reads and must wait for it. Returns ``(program, inputs, expected scores)``
    with the scores computed independently in numpy.
    """
    rng = np.random.default_rng(seed)
    word = config.word
    x = rng.choice([-1, 1], (batch, sizes[0]))
    acts = [x]
    instrs, consts = [], []
    rows_per_gemm = min(batch, 32)
    regions = [0, batch * max(_words(n, word) for n in sizes)]
    xw = pack_rows(x, 1, False, word)
    instrs.append(dict(opcode="LOAD", buffer="ACT", source="INPUT", addr=0, count=xw.size))
    half = config.weight_words // 2
    chunk_index = 0
    scores = []
    for layer, (k, n) in enumerate(zip(sizes[:-1], sizes[1:])):
        hidden = layer < len(sizes) - 2
        w = rng.choice([-1, 1], (n, k))
        t = rng.integers(-8, 9, (n, 1))
        flip = rng.integers(0, 2, n)
        y = acts[-1] @ w.T
        if hidden:
            acts.append(np.where(np.where(flip == 1, y <= t[:, 0], y >= t[:, 0]), 1, -1))
        row = _words(k, word)
        nc = _chunk(config, k, rows_per_gemm, hidden)
        src, dst = regions[layer % 2], regions[(layer + 1) % 2]
        dst_row = _words(n, word)
        # Software pipelining (as a compiler schedules it): the next chunk's LOADs go
        # right after this chunk's GEMMs, before its NORMs, so that (double-buffered)
        # they stream in while the array computes.
        chunks = []
        for c0 in range(0, n, nc):
            cn = min(nc, n - c0)
            w_addr = (chunk_index % 2) * half if double_buffer else 0
            chunk_index += 1
            ww = pack_rows(w[c0:c0 + cn], 1, False, word)
            loads = [dict(opcode="LOAD", buffer="WEIGHT", source="CONST", addr=w_addr,
                          count=ww.size)]
            data = [ww.ravel()]
            p_addr = w_addr + ww.size
            if hidden:
                params = np.concatenate([from_signed(t[c0:c0 + cn, 0], word),
                                         flip[c0:c0 + cn].astype(np.uint64)])
                loads.append(dict(opcode="LOAD", buffer="WEIGHT", source="CONST",
                                  addr=p_addr, count=params.size))
                data.append(params)
            gemms = []
            for r0 in range(0, batch, rows_per_gemm):
                rn = min(rows_per_gemm, batch - r0)
                gemms.append(dict(
                    opcode="GEMM_XNOR", a_addr=src + r0 * row, b_addr=w_addr, c_addr=0,
                    m=rn, n=cn, k=k, a_stride=row, b_stride=row, c_stride=cn, act_bits=1,
                    act_signed=0, weight_bits=1, weight_signed=0))
                if hidden:
                    gemms.append(dict(
                        opcode="NORM", mode="THRESHOLD", src_addr=0,
                        dst_addr=dst + r0 * dst_row + c0 // word, param_addr=p_addr, rows=rn,
                        channels=cn, src_stride=cn, dst_stride=dst_row))
                else:
                    gemms.append(dict(opcode="STORE", buffer="OUT", addr=0, count=rn * cn))
                    scores.append((r0, c0, rn, cn))
            chunks.append((loads, data, gemms))
        # Chunk c's loads, then for each chunk: its first GEMM, the next chunk's loads, the
        # rest of its instructions.
        # With one weight buffer the next loads must come after this chunk's NORMs (which
        # read its thresholds), so nothing overlaps.
        instrs += chunks[0][0]
        consts += chunks[0][1]
        for c, (_, _, body) in enumerate(chunks):
            split = 1 if double_buffer else len(body)
            instrs += body[:split]
            if c + 1 < len(chunks):
                instrs += chunks[c + 1][0]
                consts += chunks[c + 1][1]
            instrs += body[split:]
        if resident_weights:
            break
    instrs.append(dict(opcode="HALT", status=0))
    expected = acts[-1] @ w.T if not resident_weights else None
    program = Program(config, instrs, np.concatenate(consts))
    return program, xw.ravel(), (expected, scores)


def layer_program(config, k=1024, n=1024, batch=16, *, double_buffer=True, resident=False,
                  seed=1):
    """One hidden binary layer (``k`` -> ``n`` with NORM THRESHOLD). With ``resident``, the
    weights of one chunk are loaded by a first program and the second program only
    computes on them (weights on chip); returns ``(setup program or None, program,
    inputs)``."""
    if not resident:
        program, inputs, _ = mlp_program(config, (k, n, 10), batch,
                                         double_buffer=double_buffer, seed=seed,
                                         resident_weights=True)
        return None, program, inputs
    rng = np.random.default_rng(seed)
    word = config.word
    row = _words(k, word)
    rows = min(batch, 32)
    nc = min(config.weight_words // row, config.out_words // rows)
    w = pack_rows(rng.choice([-1, 1], (nc, k)), 1, False, word)
    setup = Program(config, [dict(opcode="LOAD", buffer="WEIGHT", source="CONST", addr=0,
                                  count=w.size), dict(opcode="HALT", status=0)], w.ravel())
    x = pack_rows(rng.choice([-1, 1], (batch, k)), 1, False, word)
    instrs = [dict(opcode="LOAD", buffer="ACT", source="INPUT", addr=0, count=x.size)]
    for r0 in range(0, batch, rows):
        instrs.append(dict(opcode="GEMM_XNOR", a_addr=r0 * row, b_addr=0, c_addr=0,
                           m=min(rows, batch - r0), n=nc, k=k, a_stride=row, b_stride=row,
                           c_stride=nc, act_bits=1, act_signed=0, weight_bits=1,
                           weight_signed=0))
    instrs.append(dict(opcode="HALT", status=0))
    return setup, Program(config, instrs), x.ravel()


def _macs(program):
    return sum(i["m"] * i["n"] * i["k"] for i in program.instructions
               if i["opcode"].name == "GEMM_XNOR")


def run(config, program, inputs, backend="iss", setup=None):
    """Run on a backend; return the stats plus MACs/cycle and the array's busy fraction."""
    if backend == "iss":
        link = ISSTransport(config)
    else:
        from ..runtime import RTLTransport
        link = RTLTransport(config, simulator=backend)
    with link:
        runtime = Runtime(config, link)
        if setup is not None:
            runtime.run(setup)
        start = time.perf_counter()
        result = runtime.run(program, inputs)
        seconds = time.perf_counter() - start
    stats = dict(result.stats)
    macs = _macs(program)
    stats.update(macs=macs, macs_per_cycle=round(macs / stats["cycles"], 2),
                 xnor_busy_fraction=round(stats["xnor_busy"] / stats["cycles"], 4),
                 seconds=round(seconds, 2))
    if backend != "iss":
        stats["sim_cycles_per_s"] = round(stats["cycles"] / seconds)
    return stats, result


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m lowbit.bench.accelerator")
    parser.add_argument("--quick", action="store_true", help="ISS only, no RTL run")
    parser.add_argument("--batch", type=int, default=16, help="batch of the MLP runs")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    config = AcceleratorConfig()
    figures = {"config": config.fingerprint()}
    print(f"Accelerator (default configuration {config.fingerprint()}): binary MLP "
          f"{'-'.join(map(str, SIZES))}, batch {args.batch}", flush=True)
    for double in (True, False):
        program, inputs, (expected, scores) = mlp_program(config, batch=args.batch,
                                                          double_buffer=double)
        stats, result = run(config, program, inputs)
        got = np.zeros_like(expected)
        for (r0, c0, rn, cn), words in zip(scores, result.outputs):
            got[r0:r0 + rn, c0:c0 + cn] = to_signed(words, config.word).reshape(rn, cn)
        stats["bit_exact_vs_numpy"] = bool(np.array_equal(got, expected))
        key = "mlp_iss_overlap" if double else "mlp_iss_serial"
        figures[key] = stats
        label = ("double-buffered weights (overlap)" if double
                 else "one weight buffer (no overlap)")
        print(f"  ISS, {label:36s} {stats['cycles']:9d} cycles, "
              f"{stats['macs_per_cycle']:6.1f} MACs/cycle, array busy "
              f"{100 * stats['xnor_busy_fraction']:.1f}%, {len(program)} instructions, "
              f"exact: {stats['bit_exact_vs_numpy']}", flush=True)
    figures["overlap_gain"] = round(figures["mlp_iss_serial"]["cycles"]
                                    / figures["mlp_iss_overlap"]["cycles"], 3)
    print(f"  overlap gain: {figures['overlap_gain']}x fewer cycles", flush=True)
    print("  hidden layer 1024 -> 1024 (ISS): array busy and MACs/cycle by batch", flush=True)
    figures["hidden_layer"] = []
    for batch in (1, 4, 16, 64, 256):
        for resident in (False, True):
            setup, program, inputs = layer_program(config, batch=batch, resident=resident)
            stats, _ = run(config, program, inputs, setup=setup)
            row = {"batch": batch, "weights": "resident" if resident else "streamed",
                   "cycles": stats["cycles"], "macs_per_cycle": stats["macs_per_cycle"],
                   "xnor_busy_fraction": stats["xnor_busy_fraction"]}
            figures["hidden_layer"].append(row)
            print(f"    batch {batch:4d}, weights {row['weights']:8s}: "
                  f"{row['macs_per_cycle']:6.1f} MACs/cycle, array busy "
                  f"{100 * row['xnor_busy_fraction']:5.1f}%", flush=True)
    if not args.quick:
        for double in (True, False):
            program, inputs, _ = mlp_program(config, batch=args.batch, double_buffer=double)
            stats, rtl = run(config, program, inputs, backend="verilator")
            iss = figures["mlp_iss_overlap" if double else "mlp_iss_serial"]
            stats["iss_error"] = round((iss["cycles"] - stats["cycles"]) / stats["cycles"], 4)
            key = "mlp_rtl_overlap" if double else "mlp_rtl_serial"
            figures[key] = stats
            print(f"  RTL (Verilator), {'overlap' if double else 'no overlap':10s} "
                  f"{stats['cycles']:9d} cycles ({100 * stats['iss_error']:+.2f}% ISS), "
                  f"{stats['macs_per_cycle']:6.1f} MACs/cycle, "
                  f"{stats['sim_cycles_per_s']} cycles/s simulated", flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(figures, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
