"""The ``lowbit`` command: generate Verilog, simulate, synthesise, run the demo.

Every unit subcommand takes the unit's name (``lowbit verilog xnor-array``) and
``--set key=value`` overrides of its configuration; invalid values are reported with the
configuration's own message and exit status 2.
"""

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from . import toolenv
from .units import UNITS, get_unit

__all__ = ["main"]


def _load_config(cls, path):
    """The configuration in the JSON file ``path``: :meth:`load` where the class has one
    (:class:`~lowbit.config.accelerator.AcceleratorConfig`), else an object whose keys are
    the constructor's parameters (and an optional ``"type"`` naming the class)."""
    if hasattr(cls, "load"):
        return cls.load(path)
    with open(path, encoding="utf-8") as file:
        text = file.read()
    try:
        values = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not a JSON {cls.__name__}: {error}") from None
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a JSON object of {cls.__name__} parameters, "
                         f"not {type(values).__name__}")
    values = dict(values)
    kind = values.pop("type", cls.__name__)
    if kind != cls.__name__:
        raise ValueError(f"{path}: type must be {cls.__name__!r}, not {kind!r}")
    names = {field.name for field in dataclasses.fields(cls) if field.init}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"{path}: {cls.__name__} has no parameter(s) "
                         f"{', '.join(map(repr, unknown))} (known: {', '.join(sorted(names))})")
    try:
        return cls(**values)
    except (TypeError, ValueError) as error:
        raise type(error)(f"{path}: {error}") from None


def _apply_overrides(config, overrides):
    """``--set key=value`` on ``config``; ``unit.key=value`` reaches into a nested unit
    configuration (``xnor_array.rows=2`` of an accelerator). ``True``/``False`` are taken
    as JSON ``true``/``false``."""
    flat, nested = [], {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if sep and value.strip() in ("True", "False"):
            item = f"{key}={value.strip().lower()}"
        if "." in key:
            owner, _, field = key.partition(".")
            nested.setdefault(owner.strip().replace("-", "_"), []).append(
                f"{field}{item[len(key):]}")
        else:
            flat.append(item)
    changes = {}
    for owner, items in nested.items():
        inner = getattr(config, owner, None) if dataclasses.is_dataclass(config) else None
        if not dataclasses.is_dataclass(inner):
            raise ValueError(f"{type(config).__name__} has no unit configuration {owner!r} "
                             f"(in --set {owner}.{items[0]})")
        changes[owner] = type(inner).from_overrides(items, base=inner)
    if changes:
        config = dataclasses.replace(config, **changes)
    return type(config).from_overrides(flat, base=config)


def _config(parser, unit, args):
    """The unit's configuration: ``--config FILE`` (or the defaults), then ``--set``."""
    cls = unit.config_class
    config = None
    try:
        if getattr(args, "config", None):
            try:
                config = _load_config(cls, args.config)
            except OSError as error:
                parser.error(f"cannot read {args.config}: {error.strerror or error}")
        config = _apply_overrides(cls() if config is None else config, args.set or [])
        # What the gateware itself refuses (the accelerator's cross-unit checks), reported
        # here like a bad value; this probe is never elaborated.
        unit.make_component(config)._MustUse__silence = True
    except (TypeError, ValueError) as error:
        parser.error(str(error))
    return config


def cmd_verilog(parser, args):
    from .verilog import generate

    unit = get_unit(args.unit)
    config = _config(parser, unit, args)
    text = generate(unit.make_component(config), unit.toplevel)
    if args.output in (None, "-"):
        sys.stdout.write(text)
    else:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text)
        print(f"wrote {args.output} ({unit.toplevel}, {len(text.splitlines())} lines)",
              file=sys.stderr)
    return 0


def cmd_sim(parser, args):
    from .sim.runner import SimulationFailed, run_cocotb

    unit = get_unit(args.unit)
    config = _config(parser, unit, args)
    if args.simulator == "icarus" and not toolenv.icarus_available():
        parser.error("Icarus Verilog is not installed (Debian: apt-get install iverilog)")
    try:
        result = run_cocotb(unit, config, simulator=args.simulator, waves=args.waves,
                            test_dir=args.dir)
    except SimulationFailed as error:
        print(f"lowbit: FAIL: {error}", file=sys.stderr)
        return 1
    print(f"{unit.name} on {args.simulator}: {result['tests']} cocotb tests passed "
          f"(log: {result['log']})")
    if args.waves:
        print(f"waves: {result.get('waves')}")
    return 0


def cmd_synth(parser, args):
    from .synth import DoesNotFit, SynthesisError, synthesize

    unit = get_unit(args.unit)
    config = _config(parser, unit, args)
    try:
        result = synthesize(unit, config, args.target, freq_mhz=args.freq)
    except DoesNotFit as error:
        # What the design needs is still worth printing; the exit status says it failed.
        result = error.result
    except SynthesisError as error:
        print(f"lowbit: synthesis failed: {error}", file=sys.stderr)
        return 1
    if args.json:
        # The accelerator's binary MACs per cycle beside its figures, also in a result
        # that lacks them (a design that does not fit).
        if unit.name == "accelerator" and "macs_per_cycle" not in result:
            result = {**result, "macs_per_cycle": config.macs}
        print(json.dumps(result))
    else:
        print(format_synth(result))
    return 0 if result.get("fits", True) else 1


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
    from .demo import run_demo

    return run_demo(out_dir=Path(args.output), synth=args.synth)


def cmd_run(parser, args):
    """``lowbit run``: run a program file on the ISS or the RTL through the runtime.

    The output file is one 1-D ``uint64`` array: the words of every ``STORE``, concatenated
    in order (the stats JSON lists each ``STORE``'s length under ``stores``).
    """
    import numpy as np

    from .config.accelerator import AcceleratorConfig
    from .iss import ISSError
    from .program import Program
    from .runtime import AcceleratorError, ProtocolError, Runtime, TransportError

    def fail(message):
        # A clear line and status 2, as argparse gives for bad arguments; no traceback.
        print(f"lowbit run: error: {message}", file=sys.stderr)
        raise SystemExit(2)

    def read(path, load):
        try:
            return load(path)
        except OSError as error:
            fail(f"cannot read {path}: {error.strerror or error}")

    config = AcceleratorConfig()
    if args.config:
        try:
            config = read(args.config, AcceleratorConfig.load)
        except (TypeError, ValueError) as error:
            fail(str(error))
    try:
        program = read(args.program, lambda path: Program.load(path, config))
    except ValueError as error:  # ProgramError
        fail(f"{args.program}: {error}")
    if program.metadata.get("kind") == "lowbit-model":
        from .cli_model import run_compiled

        transport = _transport(args, config, fail)
        try:
            return run_compiled(args, config, program, transport, fail)
        except (TypeError, ValueError, AcceleratorError, ProtocolError, TransportError,
                ISSError) as error:
            fail(str(error))
    inputs = ()
    if args.input:
        try:
            inputs = read(args.input, lambda path: np.load(path, allow_pickle=False))
        except (ValueError, EOFError) as error:
            fail(f"{args.input} is not a .npy array: {error}")
    if args.backend == "rtl" and args.simulator == "icarus" and \
            not toolenv.icarus_available():
        fail("Icarus Verilog is not installed (Debian: apt-get install iverilog)")
    try:
        transport = _transport(args, config, fail)
        with transport:
            result = Runtime(config, transport).run(program, inputs)
    except (TypeError, ValueError, AcceleratorError, ProtocolError, TransportError,
            ISSError) as error:
        fail(str(error))
    words = (np.concatenate(result.outputs) if result.outputs
             else np.zeros(0, dtype=np.uint64))
    from .cli_model import usage_stats, write_results

    stats = {"backend": args.backend, "status": result.status,
             "stores": [int(o.size) for o in result.outputs], **result.stats}
    macs = program.metadata.get("macs")
    stats.update(usage_stats(stats, macs if isinstance(macs, int) else None))
    if args.backend == "rtl":
        stats["simulator"] = args.simulator

    write_results(args.output, words, args.stats, stats, fail)
    count = result.stats["instructions"]
    line = (f"{Path(args.program).name} on {args.backend}: HALT status {result.status}, "
            f"{count} instruction{'s' if count != 1 else ''}, {result.stats['cycles']} cycles")
    if args.output:
        stores = len(result.outputs)
        line += (f"; wrote {args.output} ({words.size} words from {stores} "
                 f"STORE{'s' if stores != 1 else ''})")
    print(line)
    return 0


def _transport(args, config, fail):
    """The transport of ``lowbit run --backend``: the ISS, the RTL, or a board."""
    from .runtime import ISSTransport, RTLTransport

    if args.backend == "board":
        from .cli_boards import board_transport

        return board_transport(args, config, fail)
    return ISSTransport(config) if args.backend == "iss" else RTLTransport(config,
                                                                          args.simulator)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="lowbit", description="Generator of exact accelerators for binarized and "
        "quantized neural networks.")
    sub = parser.add_subparsers(dest="command", required=True)
    units = sorted(UNITS)

    def unit_command(name, help_text):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("unit", choices=units, help="which generator")
        p.add_argument("--config", metavar="FILE",
                       help="configuration JSON (an AcceleratorConfig file, or an object of "
                       "the unit's parameters); --set applies on top")
        p.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="override a configuration parameter (repeatable; UNIT.KEY=VALUE "
                       "for a unit inside the accelerator, e.g. xnor_array.rows=2)")
        return p

    p = unit_command("verilog", "write the unit's Verilog")
    p.add_argument("-o", "--output", help="output file (default: standard output)")
    p.set_defaults(func=cmd_verilog)

    p = unit_command("sim", "run the unit's cocotb testbench on its generated Verilog")
    p.add_argument("--simulator", choices=["verilator", "icarus"], default="verilator")
    p.add_argument("--waves", action="store_true", help="write an FST/VCD waveform file")
    p.add_argument("--dir", help="folder for logs, results and waves (default: a temp dir)")
    p.set_defaults(func=cmd_sim)

    p = unit_command("synth", "synthesise, place and route the unit with YoWASP tools")
    p.add_argument("--target", choices=["ice40", "ecp5"], default="ice40")
    p.add_argument("--freq", type=float, help="target clock in MHz")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("run", help="run an accelerator program on the ISS or the RTL")
    p.add_argument("program", help="program file (lowbit.program format)")
    p.add_argument("--input", metavar="X.npy",
                   help="a compiled model's inputs in the model's own domain (n, *shape); "
                   "for other programs, the words of the INPUT loads in order (flattened)")
    p.add_argument("--backend", choices=["iss", "rtl", "board"], default="iss",
                   help="the instruction-set simulator, the generated Verilog under cocotb, "
                   "or a board on --port")
    p.add_argument("--port", help="serial device of the board backend (e.g. /dev/ttyUSB1)")
    p.add_argument("--baud", type=int, default=3_000_000,
                   help="baud rate of the board backend (the bitstream's)")
    p.add_argument("--simulator", choices=["verilator", "icarus"], default="verilator",
                   help="simulator of the rtl backend")
    p.add_argument("--config", metavar="FILE",
                   help="accelerator configuration JSON (default: AcceleratorConfig())")
    p.add_argument("-o", "--output", metavar="Y.npy",
                   help="a compiled model's class scores (n, classes); for other programs the "
                   "STORE words, concatenated, as one uint64 array")
    p.add_argument("--stats", metavar="FILE", help="write the run's statistics as JSON")
    p.set_defaults(func=cmd_run)

    from .cli_model import add_model_commands

    add_model_commands(sub)

    from .cli_boards import add_board_commands

    add_board_commands(sub)

    from .cli_energy import add_energy_command

    add_energy_command(sub)

    from .cli_explore import add_explore_command

    add_explore_command(sub)

    p = sub.add_parser("demo", help="the main job: train, compile, simulate, synthesise")
    p.add_argument("-o", "--output", default="build/demo", help="output folder")
    p.add_argument("--synth", action="store_true",
                   help="also synthesise the accelerator for ECP5-85F (long) for images/s")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv=None):
    """Entry point of the ``lowbit`` console script."""
    toolenv.setup()
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.func(parser, args)


if __name__ == "__main__":
    sys.exit(main())
