"""``lowbit energy``: energy estimates of a program (:mod:`lowbit.energy`), as a per-layer
table, a datapath comparison, a stacked-bar plot and JSON. :mod:`lowbit.cli` registers the
command."""

import json

from .errors import UserError, refusing, writing

__all__ = ["add_energy_command", "cmd_energy", "report", "plot"]


def add_energy_command(sub):
    """Add ``lowbit energy`` to the ``argparse`` subparsers ``sub``."""
    p = sub.add_parser("energy", help="estimate the energy of a program per layer and "
                       "inference (45 nm table, or --tech FILE)")
    from .cli import add_config_arguments

    p.add_argument("program", help="program file (lowbit.program format)")
    add_config_arguments(p, "the accelerator configuration, checked against the one the "
                         "program embeds", "the program's own")
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


def _table(*headers):
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    for n, header in enumerate(headers):
        table.add_column(header, justify="left" if n == 0 else "right")
    return table


def _print_text(rep, path):
    from rich.console import Console

    from .energy import KINDS

    out = Console(highlight=False, soft_wrap=True)
    out.print(f"{path}: {_pj(rep['total_pj'])} per inference (batch {rep['batch']}), "
              f"technology {rep['technology']['name']}", markup=False)
    table = _table("layer", "instr", "precision", "compute", "memory", "host", "total")
    for layer in rep["per_layer"]:
        comps = layer["components"]
        kinds = {k: sum(comps[c] for c in names) for k, names in KINDS.items()}
        bits = f"a{layer['act_bits']}w{layer['weight_bits']}" if layer["act_bits"] else "-"
        table.add_row(layer["name"], str(len(layer["instructions"])), bits,
                      _pj(kinds["compute"]), _pj(kinds["memory"]), _pj(kinds["host"]),
                      _pj(layer["total_pj"]))
    out.print(table)
    shares = {k: f"{v:.1%}" if v >= 0.001 or not v else "<0.1%"
              for k, v in rep["shares"].items()}
    out.print(f"shares: compute {shares['compute']}, memory {shares['memory']}, host "
              f"transfer {shares['host']}", markup=False)
    out.print("components: " + ", ".join(f"{k} {_pj(v)}" for k, v in
                                         rep["components"].items() if v), markup=False)
    if "compare" in rep:
        fp32 = rep["compare"]["fp32"]
        out.print("\nthe same network on other datapaths (per inference; hypothetical: "
                  "costed with the table, not built):")
        table = _table("datapath", "compute", "memory", "host", "total", "vs fp32", "")
        for name, d in rep["compare_detail"].items():
            table.add_row(name, _pj(d["compute_pj"]), _pj(d["memory_pj"]), _pj(d["host_pj"]),
                          _pj(d["total_pj"]), f"{d['total_pj'] / fp32:.3f}",
                          "(hypothetical)" if d["hypothetical"] else "")
        out.print(table)


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
    """``lowbit energy PROGRAM [--config FILE] [--set K=V] [--tech FILE] [--compare]
    [--plot FILE] [--json]``; the program file embeds its accelerator configuration."""
    from . import toolenv
    from .cli import load_program
    from .energy import TechError, Technology, default_technology

    program, _ = load_program(args)
    with refusing(TechError):
        tech = Technology.load(args.tech) if args.tech else default_technology()
    if args.plot and not args.plot.lower().endswith((".png", ".svg")):
        raise UserError(f"--plot needs a .png or .svg file name, not {args.plot!r}")
    if args.plot:
        toolenv.require("lowbit energy --plot", "explore", ["matplotlib"])
    with refusing(ValueError, prefix=f"{args.program}: "):  # malformed metadata layers
        rep = report(program, tech, args.compare)
    if args.plot:
        with writing(args.plot):
            plot(rep, args.plot)
    if args.json:
        print(json.dumps(rep))
    else:
        _print_text(rep, args.program)
        if args.plot:
            print(f"wrote {args.plot}")
    return 0
