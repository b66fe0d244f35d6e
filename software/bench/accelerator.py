"""Benchmark of the full-rate accelerator (``python -m lowbit.bench.accelerator``).

Measures, on the ISS and (``--rtl``) on the generated Verilog under Verilator:

* a 1024 -> 1024 binary layer at batch 16 with resident weights, ``--batches`` batches in
  one program, each batch's input loaded while the previous one computes: array
  utilisation (array beats / cycles) and MACs per cycle;
* the compiled digits BNN (64-256-256-10, w1a1, trained briefly) over scikit-learn's 360
  test images at batch 16, on the default configuration and on ``configs/up5k.json``:
  cycles per image and utilisation, the first batch (weights arriving over the link)
  included and in steady state;
* the digits CNN (a first-layer convolution with max-pooling) at batch 8 on the ISS, over an
  8- and a 32-bit host link;
* the synthesis figures of the default configuration and ``configs/up5k.json`` where
  ``lowbit synth`` has cached them on this machine.

Figures go to stdout and, with ``--json FILE``, to a file. Nothing here is timed: cycles
come from the cycle model (the ISS) or the gateware's own status counter.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from .. import layout
from ..config.accelerator import AcceleratorConfig
from ..isa import NO_WAIT
from ..program import Program
from ..runtime import ISSTransport, Runtime

__all__ = ["layer_program", "main"]


def layer_program(config, k=1024, n=1024, batch=16, batches=8, seed=0):
    """A ``k -> n`` binary layer (+-1 inputs, thresholds to +-1) run on ``batches`` batches
    of ``batch`` rows with resident weights: ``(preamble, program, inputs)``. The preamble
    loads the weights and thresholds; the program loads batch ``b + 2``'s inputs into a
    third of the input memory while batch ``b`` computes (batch ``b - 1``'s third is free
    by then)."""
    rng = np.random.default_rng(seed)
    weights = layout.pack_weights(rng.choice([-1, 1], (n, k)), config)
    thresholds = layout.pack_thresholds(rng.integers(k // 2 - 8, k // 2 + 8, (n, 1)), config)
    preamble = Program(config, [
        dict(opcode="LOAD", buffer="WEIGHT", source="CONST", addr=0, count=len(weights),
             unread=NO_WAIT, unwritten=NO_WAIT),
        dict(opcode="LOAD", buffer="THRESH", source="CONST", addr=0, count=len(thresholds),
             unread=NO_WAIT, unwritten=NO_WAIT),
        dict(opcode="HALT", status=0)],
        np.concatenate([weights.reshape(-1), thresholds.reshape(-1)]))
    m_tiles, n_tiles = layout.tiles(batch, config.rows), layout.tiles(n, config.cols)
    words = layout.plane_words(k, config.word)
    block = m_tiles * words
    out = m_tiles * -(-n_tiles * config.cols // config.word)
    inputs = [layout.pack_act(rng.choice([-1, 1], (batch, k)), 1, config, bipolar=True)
              for _ in range(batches)]

    def load(b):
        # Region b % 3 was last read by batch b - 3's GEMM; batch b - 2's may still run.
        return dict(opcode="LOAD", buffer="IN", source="INPUT", addr=(b % 3) * block,
                    count=block, unread=1 if b >= 3 else NO_WAIT, unwritten=NO_WAIT)

    instrs = [load(0), load(1)][:batches]
    for b in range(batches):
        instrs.append(dict(opcode="GEMM", a_buffer="IN", a_addr=(b % 3) * block, b_addr=0,
                           planes=1, words=words, m_tiles=m_tiles, n_tiles=n_tiles,
                           mode="THRESHOLD", out_bits=1, dst_addr=(b % 2) * out,
                           thr_addr=0, sync=0, unsent=NO_WAIT))
        if b + 2 < batches:
            instrs.append(load(b + 2))
    instrs.append(dict(opcode="HALT", status=0))
    program = Program(config, instrs, ())
    program.check_races()
    return preamble, program, np.concatenate([x.reshape(-1) for x in inputs])


def _run(config, programs, backend):
    if backend == "iss":
        transport = ISSTransport(config)
    else:
        from ..runtime import RTLTransport
        transport = RTLTransport(config)
    with transport:
        runtime = Runtime(config, transport)
        return [runtime.run(program, inputs).stats for program, inputs in programs]


def layer_figures(config, backend, batches):
    preamble, program, inputs = layer_program(config, batches=batches)
    _, stats = _run(config, [(preamble, ()), (program, inputs)], backend)
    macs = 1024 * 1024 * 16 * batches
    return {"backend": backend, "batches": batches, "cycles": stats["cycles"],
            "array_beats": stats["array_beats"],
            "utilisation": round(stats["array_beats"] / stats["cycles"], 4),
            "macs_per_cycle": round(macs / stats["cycles"], 1)}


def digits_figures(config, backend, images):
    from ..compiler import compile_model, run_model
    from ..datasets import load
    from ..train import train

    data = load("digits")
    model, _ = train(data, precision="w1a1", hidden=(256, 256), epochs=3, seed=0,
                     progress=False, twin=False)
    program = compile_model(model, config, batch=16)
    x = data.x_test[:images]
    transport = ISSTransport(config)
    if backend == "rtl":
        from ..runtime import RTLTransport
        transport = RTLTransport(config)
    with transport:
        runtime = Runtime(config, transport)
        scores, stats = run_model(program, runtime, x)
        # Steady state (weights resident, the pipeline full): what the batches after the
        # first add, from a second run of one batch fewer.
        _, fewer = run_model(program, runtime, x[:len(x) - 16])
    accuracy = float(np.mean(np.argmax(scores, axis=1) == data.y_test[:images]))
    cycles, beats = stats["cycles"] - fewer["cycles"], stats["array_beats"] - fewer["array_beats"]
    return {"backend": backend, "images": len(x), "accuracy": round(accuracy, 4),
            "cycles": stats["cycles"], "cycles_per_image": round(stats["cycles"] / len(x), 1),
            "array_beats": stats["array_beats"],
            "utilisation": round(stats["array_beats"] / stats["cycles"], 4),
            "macs_per_cycle": round(stats["macs"] / stats["cycles"], 1),
            "steady_cycles_per_image": round(cycles / 16, 1),
            "steady_utilisation": round(beats / cycles, 4)}


def cnn_figures(config, images, link_bits=(8, 32)):
    """The digits CNN (3x3 convolution to 32 channels, 2x2 max-pooling, then 256 and 10
    dense, w1a1, trained briefly) at batch 8 on the ISS, for host links of ``link_bits``:
    its first layer's im2col rows come over the link, so the link bounds it."""
    from ..compiler import compile_model, run_model
    from ..datasets import load
    from ..train import train

    data = load("digits")
    model, _ = train(data, arch="cnn", precision="w1a1", epochs=3, seed=0, progress=False,
                     twin=False)
    x = data.x_test[:images]
    rows = []
    for bits in link_bits:
        cfg = config.replace(host_link_bits=bits)
        program = compile_model(model, cfg, batch=8)
        with ISSTransport(cfg) as transport:
            scores, stats = run_model(program, Runtime(cfg, transport), x)
        exact = bool(np.array_equal(scores, model.integer_scores(x)))
        in_bytes = program.metadata["regions"]["in"] * cfg.rows * cfg.word // 8
        rows.append({"host_link_bits": bits, "images": len(x), "exact": exact,
                     "accuracy": round(float(np.mean(np.argmax(scores, axis=1)
                                                     == data.y_test[:images])), 4),
                     "cycles_per_image": round(stats["cycles"] / len(x), 1),
                     "utilisation": round(stats["array_beats"] / stats["cycles"], 4),
                     "input_bytes_per_image": in_bytes // 8})
    return rows


def synthesis_figures():
    from ..synth import cached_result
    from ..units import get_unit

    unit = get_unit("accelerator")
    # The same in one call over a 32-bit host link: the 8-bit link carries the weights and
    # the inputs (about 27,000 bytes) while the array has about 27,000 beats of work.
    wide = config.replace(host_link_bits=32)
    row = digits_figures(wide, "iss", args.images)
    out["digits_link32"] = row
    print(f"digits BNN 64-256-256-10, {row['images']} images at batch 16 (iss, 32-bit "
          f"link): {row['cycles_per_image']} cycles/image, utilisation "
          f"{100 * row['utilisation']:.1f}%", flush=True)
    up5k = AcceleratorConfig.load(Path(__file__).resolve().parents[2] / "configs" / "up5k.json")
    rows = []
    for name, config, target in (("default", AcceleratorConfig(), "ecp5"),
                                 ("default", AcceleratorConfig(), "ice40"),
                                 ("configs/up5k.json", up5k, "ice40"),
                                 ("configs/up5k.json", up5k, "ecp5")):
        result = cached_result(unit, config, target)
        if result is None:
            rows.append({"config": name, "target": target, "measured": False})
            continue
        rows.append({"config": name, "target": target, "measured": True,
                     "lc": result["lc"], "ff": result["ff"], "bram": result["bram"],
                     "fits": result["fits"], "fmax_mhz": result["fmax_mhz"],
                     "macs_per_cycle": config.macs,
                     "density": round(2 * config.macs / result["lc"], 3)})
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m lowbit.bench.accelerator",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--rtl", action="store_true",
                        help="also run on the Verilog under Verilator")
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--images", type=int, default=360)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)
    config = AcceleratorConfig()
    backends = ["iss", "rtl"] if args.rtl else ["iss"]
    out = {"config": config.to_dict(), "layer": [], "digits": [],
           "synthesis": synthesis_figures()}
    for backend in backends:
        row = layer_figures(config, backend, args.batches)
        out["layer"].append(row)
        print(f"1024x1024 binary layer, batch 16 x {args.batches}, resident weights "
              f"({backend}): {row['cycles']} cycles, utilisation "
              f"{100 * row['utilisation']:.1f}%, {row['macs_per_cycle']} MACs/cycle",
              flush=True)
    for backend in backends:
        images = args.images if backend == "iss" else min(args.images, 64)
        row = digits_figures(config, backend, images)
        out["digits"].append(row)
        print(f"digits BNN 64-256-256-10, {row['images']} images at batch 16 ({backend}): "
              f"{row['cycles_per_image']} cycles/image, utilisation "
              f"{100 * row['utilisation']:.1f}%, {row['macs_per_cycle']} MACs/cycle, "
              f"accuracy {100 * row['accuracy']:.2f}%; steady state (weights resident) "
              f"{row['steady_cycles_per_image']} cycles/image, utilisation "
              f"{100 * row['steady_utilisation']:.1f}%", flush=True)
    up5k = AcceleratorConfig.load(Path(__file__).resolve().parents[2] / "configs" / "up5k.json")
    row = digits_figures(up5k, "iss", args.images)
    out["digits_up5k"] = row
    print(f"digits BNN on configs/up5k.json ({up5k.rows}x{up5k.cols}x{up5k.word}), "
          f"{row['images']} images (iss): {row['cycles_per_image']} cycles/image, "
          f"utilisation {100 * row['utilisation']:.1f}%; steady state "
          f"{row['steady_cycles_per_image']} cycles/image, "
          f"{100 * row['steady_utilisation']:.1f}%", flush=True)
    out["cnn"] = cnn_figures(config, args.images)
    for row in out["cnn"]:
        print(f"digits CNN conv3x3x32-pool2-256-10, {row['images']} images at batch 8 (iss, "
              f"{row['host_link_bits']}-bit link): {row['cycles_per_image']} cycles/image, "
              f"utilisation {100 * row['utilisation']:.1f}%, accuracy "
              f"{100 * row['accuracy']:.2f}%, equal to the integer model {row['exact']}; "
              f"{row['input_bytes_per_image']} bytes of im2col rows per image", flush=True)
    for row in out["synthesis"]:
        if not row["measured"]:
            print(f"synthesis {row['config']} on {row['target']}: not measured here (run "
                  f"lowbit synth accelerator --target {row['target']} --json)")
        else:
            print(f"synthesis {row['config']} on {row['target']}: {row['lc']} LC/LUT4, "
                  f"{row['bram']} BRAM, fits {row['fits']}, Fmax {row['fmax_mhz']} MHz, "
                  f"{row['macs_per_cycle']} MACs/cycle, 2 x MACs / LC {row['density']}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
