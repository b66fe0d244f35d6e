"""``lowbit energy``: energy estimates of a program (:mod:`lowbit.energy`), as a per-layer
table, a datapath comparison, a stacked-bar plot and JSON. :mod:`lowbit.cli` registers the
command."""

import json
import sys

__all__ = ["add_energy_command", "cmd_energy", "report", "plot"]


def _fail(message):
    # A clear line and status 2, as argparse gives for bad arguments; no traceback.
    print(f"lowbit energy: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def add_energy_command(sub):
    """Add ``lowbit energy`` to the ``argparse`` subparsers ``sub``."""
    p = sub.add_parser("energy", help="estimate the energy of a program per layer and "
                       "inference (45 nm table, or --tech FILE)")
    p.add_argument("program", help="program file (lowbit.program format)")
    p.add_argument("--config", metavar="FILE",
                   help="accelerator configuration JSON (default: AcceleratorConfig())")
    p.add_argument("--tech", metavar="FILE",
                   help="technology table (TOML, every key of lowbit's energy_45nm.toml)")
    p.add_argument("--compare", action="store_true",
                   help="also cost the network on binary, int8 and fp32 datapaths")
    p.add_argument("--plot", metavar="FILE",
                   help="write a stacked-bar plot (.png or .svg) of energy per layer and "
                   "component")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_energy)
    return p


def report(program, tech, with_compare):
    """The JSON-ready report of ``program``: totals per inference, per layer, per
    component, the compute/memory/host shares, the table's derived entries and (with
    ``with_compare``) the comparisons."""
    from . import energy

    est = energy.estimate(program, tech)
    b = est.batch
    out = {
        "technology": {"name": tech.name, "source": tech.source, "file": tech.path},
        "batch": b,
        "total_pj": est.total_pj,
        "total_run_pj": est.total_run_pj,
        "shares": est.shares(),
        "components": {k: v / b for k, v in est.components().items()},
        "per_layer": [{
            "name": layer["name"],
            "instructions": layer["instructions"],
            "act_bits": layer["act_bits"], "weight_bits": layer["weight_bits"],
            "total_pj": layer["total_pj"] / b,
            "components": {k: v / b for k, v in layer["components"].items()},
            "actions": layer["actions"],
        } for layer in est.per_layer],
        "per_instruction": est.per_instruction(),
        "energy_per_action_pj": {k: v[0] for k, v in est.energy.items()},
        "derived_pj": {k: {"pj": v[0], "derivation": v[1]}
                       for k, v in tech.derived(program.config).items()},
    }
    if with_compare:
        detail = energy.compare(program, tech)
        out["compare"] = {name: d["total_pj"] for name, d in detail.items()}
        out["compare_detail"] = detail
    return out


def _pj(value):
    # Energies from fJ to mJ in one readable column.
    for unit, scale in (("mJ", 1e9), ("uJ", 1e6), ("nJ", 1e3), ("pJ", 1.0)):
        if abs(value) >= scale or unit == "pJ":
            return f"{value / scale:.3g} {unit}"
    raise AssertionError(value)


def _print_text(rep, path):
    print(f"{path}: {_pj(rep['total_pj'])} per inference (batch {rep['batch']}), technology "
          f"{rep['technology']['name']}")
    width = max([10] + [len(layer["name"]) for layer in rep["per_layer"]])
    head = f"{'layer':<{width}} {'instr':>6} {'precision':>9} {'compute':>10} {'memory':>10} " \
           f"{'host':>10} {'total':>10}"
    print(head)
    print("-" * len(head))
    from .energy import KINDS
    for layer in rep["per_layer"]:
        comps = layer["components"]
        kinds = {k: sum(comps[c] for c in names) for k, names in KINDS.items()}
        first_last = str(len(layer["instructions"]))
        bits = f"a{layer['act_bits']}w{layer['weight_bits']}" if layer["act_bits"] else "-"
        print(f"{layer['name']:<{width}} {first_last:>6} {bits:>9} {_pj(kinds['compute']):>10} "
              f"{_pj(kinds['memory']):>10} {_pj(kinds['host']):>10} "
              f"{_pj(layer['total_pj']):>10}")
    shares = {k: f"{v:.1%}" if v >= 0.001 or not v else "<0.1%"
              for k, v in rep["shares"].items()}
    print(f"shares: compute {shares['compute']}, memory {shares['memory']}, host transfer "
          f"{shares['host']}")
    print("components: " + ", ".join(f"{k} {_pj(v)}" for k, v in rep["components"].items()
                                     if v))
    if "compare" in rep:
        fp32 = rep["compare"]["fp32"]
        print("\nthe same network on other datapaths (per inference; hypothetical: costed "
              "with the table, not built):")
        print(f"{'datapath':<11} {'compute':>10} {'memory':>10} {'host':>10} {'total':>10} "
              f"{'vs fp32':>8}")
        for name, d in rep["compare_detail"].items():
            mark = " (hypothetical)" if d["hypothetical"] else ""
            print(f"{name:<11} {_pj(d['compute_pj']):>10} {_pj(d['memory_pj']):>10} "
                  f"{_pj(d['host_pj']):>10} {_pj(d['total_pj']):>10} "
                  f"{d['total_pj'] / fp32:>8.3f}{mark}")


def plot(rep, path):
    """Write a stacked-bar plot of ``rep`` (from :func:`report`): energy per layer and
    component, and with a comparison, per datapath and kind. The format follows the
    suffix (``.png``, ``.svg``)."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state (Agg)

    panels = 2 if "compare" in rep else 1
    fig = Figure(figsize=(6 * panels, 4.5), layout="constrained")
    ax = fig.add_subplot(1, panels, 1)
    names = [layer["name"] for layer in rep["per_layer"]]
    bottom = [0.0] * len(names)
    for comp in rep["components"]:
        values = [layer["components"][comp] / 1e3 for layer in rep["per_layer"]]
        if any(values):
            ax.bar(names, values, bottom=bottom, label=comp)
            bottom = [b + v for b, v in zip(bottom, values)]
    ax.set_ylabel("energy per inference (nJ)")
    ax.set_title(f"per layer ({rep['technology']['name']})")
    ax.legend(fontsize="small")
    if panels == 2:
        ax = fig.add_subplot(1, panels, 2)
        detail = rep["compare_detail"]
        names = list(detail)
        bottom = [0.0] * len(names)
        for kind in ("compute", "memory", "host"):
            values = [detail[n][f"{kind}_pj"] / 1e3 for n in names]
            ax.bar(names, values, bottom=bottom, label=kind)
            bottom = [b + v for b, v in zip(bottom, values)]
        ax.set_yscale("log")
        # Stacked on a log axis: start at the smallest compute bar so every segment shows.
        low = min(detail[n]["compute_pj"] for n in names) / 1e3
        if low > 0:
            ax.set_ylim(bottom=low / 2)
        ax.set_ylabel("energy per inference (nJ, log)")
        ax.set_title("datapaths (int8, fp32 hypothetical)")
        ax.tick_params(axis="x", labelrotation=30)
        ax.legend(fontsize="small")
    fig.savefig(path)


def cmd_energy(parser, args):
    """``lowbit energy PROGRAM [--config FILE] [--tech FILE] [--compare] [--plot FILE]
    [--json]``."""
    from .config.accelerator import AcceleratorConfig
    from .energy import TechError, Technology, default_technology
    from .program import Program

    try:
        config = AcceleratorConfig.load(args.config) if args.config else AcceleratorConfig()
    except (OSError, ValueError, TypeError) as error:
        _fail(str(error))
    try:
        program = Program.load(args.program, config)
    except OSError as error:
        _fail(f"cannot read {args.program}: {error.strerror or error}")
    except ValueError as error:
        _fail(f"{args.program}: {error}")
    try:
        tech = Technology.load(args.tech) if args.tech else default_technology()
    except TechError as error:
        _fail(str(error))
    if args.plot and not args.plot.lower().endswith((".png", ".svg")):
        _fail(f"--plot needs a .png or .svg file name, not {args.plot!r}")
    try:
        rep = report(program, tech, args.compare)
    except ValueError as error:  # malformed metadata layers or batch
        _fail(f"{args.program}: {error}")
    if args.plot:
        try:
            plot(rep, args.plot)
        except OSError as error:
            _fail(f"cannot write {args.plot}: {error.strerror or error}")
    if args.json:
        print(json.dumps(rep))
    else:
        _print_text(rep, args.program)
        if args.plot:
            print(f"wrote {args.plot}")
    return 0
