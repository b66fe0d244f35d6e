"""``lowbit explore SPACE.toml``: the design-space exploration command (:mod:`lowbit.explore`).
:mod:`lowbit.cli` registers it."""

import sys

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

    from .explore import SpaceError, explore, format_table, load_space

    if args.workers < 1:
        parser.error(f"--workers must be at least 1, not {args.workers}")
    try:
        space = load_space(args.space)
    except OSError as error:
        parser.error(f"cannot read {args.space}: {error.strerror or error}")
    except SpaceError as error:
        parser.error(str(error))
    out = Path(args.output) if args.output else Path("build/explore") / Path(args.space).stem
    try:
        sweep = explore(space, out, scheduler=args.scheduler, workers=args.workers,
                        progress=True)
    except OSError as error:
        # A scheduler that cannot be reached, an output folder that cannot be written.
        print(f"lowbit explore: error: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(sweep.results, indent=1))
    else:
        print(format_table(sweep.results))
        print(f"\n{sweep.summary()}")
    return 0
