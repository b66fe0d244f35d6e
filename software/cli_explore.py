"""``lowbit explore SPACE.toml``: the design-space exploration command (:mod:`lowbit.explore`).
:mod:`lowbit.cli` registers it."""

__all__ = ["add_explore_command", "cmd_explore"]


def add_explore_command(sub):
    """Add ``lowbit explore`` to the ``argparse`` subparsers ``sub``."""
    p = sub.add_parser("explore", help="sweep accelerator configurations on Dask: synthesis, "
                       "cycles, accuracy, energy; CSV, table and Pareto plots")
    p.add_argument("space", metavar="SPACE.toml",
                   help="the space file: base configuration, axes, network, batch "
                   "(docs/explore.md)")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="a running Dask scheduler (tcp://host:8786); default: a LocalCluster "
                   "of worker processes on this machine")
    p.add_argument("-o", "--output", metavar="DIR",
                   help="output folder (default: build/explore/<space file name>); its "
                   "points/ folder caches finished points")
    p.add_argument("--workers", type=int, default=2, metavar="N",
                   help="worker processes of the LocalCluster (default 2; one thread each)")
    p.add_argument("--json", action="store_true",
                   help="print the results as one JSON list instead of the table")
    p.set_defaults(func=cmd_explore)
    return p


def cmd_explore(parser, args):
    """Run the sweep; exit status 0 when every point ran (failed points are results too),
    2 for a bad space file or arguments."""
    import json
    from pathlib import Path

    from . import toolenv
    from .errors import UserError, reading, refusing
    from .explore import SpaceError, explore, load_space

    if args.workers < 1:
        raise UserError(f"--workers must be at least 1, not {args.workers}")
    with reading(args.space), refusing(SpaceError):
        space = load_space(args.space)
    toolenv.require("lowbit explore", "explore", ["dask", "distributed"])
    out = Path(args.output) if args.output else Path("build/explore") / Path(args.space).stem
    # A scheduler that cannot be reached, an output folder that cannot be written.
    with refusing(OSError):
        sweep = explore(space, out, scheduler=args.scheduler, workers=args.workers,
                        progress=not args.quietness)
    if args.json:
        print(json.dumps(sweep.results, indent=1))
    else:
        _print_table(sweep.results)
        print(f"\n{sweep.summary()}")
    return 0


def _print_table(results):
    """The sweep's results as a rich table (the columns of :data:`lowbit.explore.COLUMNS`)."""
    from rich.console import Console
    from rich.table import Table

    from .explore import table_rows

    headers, rows = table_rows(results)
    table = Table(box=None, pad_edge=False, header_style="bold")
    for n, header in enumerate(headers):
        table.add_column(header, justify="left" if n == 0 else "right")
    for row in rows:
        table.add_row(*row)
    Console(highlight=False, soft_wrap=True).print(table)
