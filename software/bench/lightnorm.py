"""LightNorm benchmark: BFP range batch norm's error against float batch norm, and the area
and Fmax of :class:`~lowbit.hw.lightnorm.LightNorm` against the conventional unit
:class:`~lowbit.hw.bn_conventional.BNConventional` on iCE40 and ECP5.

Run ``python -m lowbit.bench.lightnorm`` (``--no-synth`` for the error table only); it
prints Markdown tables, the same ones ``docs/lightnorm.md`` shows.
"""

import argparse
import sys
import time

import numpy as np

__all__ = ["digits_preactivations", "error_table", "area_table", "main"]

MANTISSAS = tuple(range(4, 11))
BLOCKS = (4, 8, 16, 32)


def digits_preactivations(channels=64, seed=0):
    """Pre-activations of a binary layer on scikit-learn's digits: inputs binarised with
    ``pixel >= 8``, random +-1 weights (64 inputs, ``channels`` outputs). Integers in
    ``[-64, 64]``, shape ``(1797, channels)``: what the XNOR array feeds the norm unit."""
    from sklearn.datasets import load_digits

    pixels = load_digits().data
    x = np.where(pixels >= 8, 1, -1).astype(np.int64)
    w = np.random.default_rng(seed).choice([-1, 1], size=(channels, x.shape[1]))
    return x @ w.T


def bn_parameters(channels, seed=1):
    """Per-channel ``gamma`` (both signs, magnitude 0.5..2) and ``beta`` (normal, 0.5)."""
    rng = np.random.default_rng(seed)
    gamma = rng.uniform(0.5, 2.0, channels) * rng.choice([-1.0, 1.0], channels)
    return gamma, rng.normal(0.0, 0.5, channels)


def _relative_rms(y, reference):
    return float(np.sqrt(np.mean((y - reference) ** 2)) / np.sqrt(np.mean(reference ** 2)))


def error_table(mantissas=MANTISSAS, blocks=BLOCKS, batch=1024, channels=64,
                rounding="nearest-even"):
    """Relative RMS error of the unit's BFP range batch norm on digits pre-activations.

    Statistics are taken over the first ``batch`` samples (exactly, as the unit's ``STAT``
    mode does), folded into BFP scale/offset on the host and applied to the same samples.
    Returns ``{(block, mantissa): (vs_range, vs_true)}``: the error against float range
    batch norm (what BFP adds) and against float batch norm with the true variance, plus
    ``("range", None)``: float range batch norm's own error against true batch norm.
    """
    from ..config.lightnorm import LightNormConfig
    from ..golden.bfp import dequantize
    from ..golden.lightnorm import LightNorm, batchnorm, range_batchnorm

    x = digits_preactivations(channels)[:batch]
    gamma, beta = bn_parameters(channels)
    y_range = range_batchnorm(x, gamma, beta)
    y_true = batchnorm(x, gamma, beta)
    table = {("range", None): (0.0, _relative_rms(y_range, y_true))}
    for block in blocks:
        for mantissa in mantissas:
            config = LightNormConfig(channels=channels, block=block, mantissa=mantissa,
                                     input_width=8, rounding=rounding, max_batch=batch)
            model = LightNorm(config)
            total, spread = model.statistics(x)
            params, _, _ = model.fold_affine(total, spread, batch, gamma, beta)
            y = dequantize(model.apply(x, params), model.format).reshape(batch, channels)
            table[block, mantissa] = (_relative_rms(y, y_range), _relative_rms(y, y_true))
    return table


def sign_agreement(batch=1024, channels=64):
    """Fraction of +-1 outputs of the fused threshold path (thresholds folded from the unit's
    range statistics) equal to ``sign(batchnorm(x))`` with the true variance, on digits
    pre-activations; and the mean ratio ``C(n) * range / sigma`` (range BN's bias)."""
    from ..config.lightnorm import LightNormConfig
    from ..golden.lightnorm import LightNorm, batchnorm, fold_thresholds, range_scale

    x = digits_preactivations(channels)[:batch]
    gamma, beta = bn_parameters(channels)
    config = LightNormConfig(channels=channels, block=16, input_width=8, output="sign",
                             max_batch=batch)
    model = LightNorm(config)
    total, spread = model.statistics(x)
    sigma = range_scale(batch, config.chunks) * spread / config.chunks
    t, flip = fold_thresholds(total / batch, sigma + 1e-5, gamma, beta, [0.0], 8)
    bits = model.apply(x, model.threshold_params(t, flip))
    agree = float(np.mean(bits == (batchnorm(x, gamma, beta) >= 0)))
    return agree, float(np.mean(sigma / x.std(axis=0)))


def error_markdown(table, mantissas=MANTISSAS, blocks=BLOCKS):
    """The error table as Markdown: rows are blocks, columns mantissa widths."""
    head = "| block \\ mantissa | " + " | ".join(str(m) for m in mantissas) + " |"
    lines = [head, "|---" * (len(mantissas) + 1) + "|"]
    for block in blocks:
        cells = [f"{table[block, m][0]:.4f} / {table[block, m][1]:.3f}" for m in mantissas]
        lines.append(f"| {block} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# Lanes (channels per beat = channels) compared on each target: the iCE40UP5K's 5280 logic
# cells hold about two lanes of the conventional unit's LUT multipliers; ECP5 runs four.
AREA_LANES = {"ice40": 2, "ecp5": 4}


def area_configs(lanes):
    """The units compared at ``lanes`` channels, one block of ``lanes`` channels per cycle
    (same channel count and throughput), 16-bit inputs: LightNorm with BFP output, LightNorm
    with fused sign output, and the conventional unit."""
    from ..config.bn_conventional import BNConventionalConfig
    from ..config.lightnorm import LightNormConfig

    ln = LightNormConfig(channels=lanes, block=lanes, input_width=16)
    return [("lightnorm", "bfp, m=8, e=6", ln),
            ("lightnorm", "sign", ln.replace(output="sign")),
            ("bn-conventional", "16-bit fixed point", BNConventionalConfig(
                channels=lanes, block=lanes, input_width=16))]


def area_table(targets=("ice40", "ecp5"), lanes=None):
    """Synthesis figures of the compared units on each target: a list of result dicts (a
    design that does not fit gets ``fits: False`` and the cells it needed, if reported)."""
    import hashlib
    import json
    import re

    from .. import toolenv
    from ..synth import SynthesisError, synthesize
    from ..units import get_unit
    from ..verilog import generate

    rows = []
    for target in targets:
        count = AREA_LANES[target] if lanes is None else lanes
        for name, label, config in area_configs(count):
            unit = get_unit(name)
            # synthesize() caches results, not failures; a design that does not fit takes as
            # long to fail as to succeed, so remember the failure by its Verilog.
            verilog = generate(unit.make_component(config), unit.toplevel)
            key = hashlib.sha256(f"{verilog}\n{target}".encode()).hexdigest()[:16]
            failed = toolenv.cache_dir("synth-failed") / f"{name}-{target}-{key}.json"
            if failed.exists():
                result = json.loads(failed.read_text())
            else:
                try:
                    result = synthesize(unit, config, target)
                    result["fits"] = True
                except SynthesisError as error:
                    needed = re.search(r"of (\d+) ICESTORM_LCs", str(error))
                    result = {"unit": name, "target": target, "fits": False,
                              "lc": int(needed.group(1)) if needed else None,
                              "error": str(error)[-500:]}
                    if needed:  # a tool crash may be fixed by the next run: don't keep it
                        failed.write_text(json.dumps(result))
            result.update({"label": label, "lanes": count})
            rows.append(result)
    return rows


def area_markdown(rows):
    """Synthesis figures as Markdown."""
    lines = ["| target | lanes | unit | variant | logic cells | LUT4 | FF | carry | DSP | BRAM "
             "| harness bits | Fmax (MHz) |", "|---" * 12 + "|"]
    for r in rows:
        if not r.get("fits", True):
            error = r.get("error") or "?"
            if r.get("lc"):
                why = f"does not fit ({r['lc']} cells needed)"
            elif "call stack exhausted" in error:
                why = "Yosys's ABC crashed (WebAssembly call stack exhausted)"
            else:
                why = "Yosys failed: " + error.splitlines()[0]
            lines.append(f"| {r['target']} | {r['lanes']} | {r['unit']} | {r['label']} | "
                         f"{why} | | | | | | | |")
            continue
        lines.append(f"| {r['target']} | {r['lanes']} | {r['unit']} | {r['label']} | "
                     f"{r['lc']} | {r['lut4']} | {r['ff']} | {r['carry']} | {r['dsp']} | "
                     f"{r['bram']} | {r['harness_bits']} | {r['fmax_mhz']} |")
    return "\n".join(lines)


def main(argv=None):
    """Print the error table and (unless ``--no-synth``) the area table."""
    parser = argparse.ArgumentParser(prog="python -m lowbit.bench.lightnorm",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--no-synth", action="store_true", help="skip synthesis")
    parser.add_argument("--targets", default="ice40,ecp5")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    table = error_table()
    print("Relative RMS error of BFP range BN on digits pre-activations "
          "(vs float range BN / vs float true BN), nearest-even, guard_bits 8:\n")
    print(error_markdown(table))
    print(f"\nFloat range BN vs float true BN: {table['range', None][1]:.3f}")
    trunc = error_table(mantissas=(8,), blocks=(16,), rounding="truncate")
    print(f"Truncate rounding, block 16, mantissa 8: {trunc[16, 8][0]:.4f} / "
          f"{trunc[16, 8][1]:.3f}")
    agree, ratio = sign_agreement()
    print(f"Fused sign output vs sign(true BN): {100 * agree:.2f}% equal; "
          f"mean C(n) * range / sigma = {ratio:.2f}")
    if not args.no_synth:
        print()
        print(area_markdown(area_table(tuple(args.targets.split(",")))))
    print(f"\n({time.perf_counter() - start:.1f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
