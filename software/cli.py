"""The ``lowbit`` command: generate Verilog, simulate, synthesise, run the demo.

Every unit subcommand takes the unit's name (``lowbit verilog xnor-array``) and
``--set key=value`` overrides of its configuration; invalid values are reported with the
configuration's own message and exit status 2.
"""

import argparse
import json
import sys
from pathlib import Path

from . import toolenv
from .units import UNITS, get_unit

__all__ = ["main"]


def _config(parser, unit, overrides):
    try:
        return unit.make_config(overrides or [])
    except (TypeError, ValueError) as error:
        parser.error(str(error))


def cmd_verilog(parser, args):
    from .verilog import generate

    unit = get_unit(args.unit)
    config = _config(parser, unit, args.set)
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
    config = _config(parser, unit, args.set)
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
    from .synth import SynthesisError, synthesize

    unit = get_unit(args.unit)
    config = _config(parser, unit, args.set)
    try:
        result = synthesize(unit, config, args.target, freq_mhz=args.freq)
    except SynthesisError as error:
        print(f"lowbit: synthesis failed: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result))
    else:
        print(format_synth(result))
    return 0


def format_synth(result):
    """A short human-readable report of :func:`lowbit.synth.synthesize` figures."""
    lines = [f"{result['unit']} on {result['part']}:",
             f"  LUT4 {result['lut4']}  carry {result['carry']}  FF {result['ff']}  "
             f"logic cells {result['lc']}  BRAM {result['bram']}  DSP {result['dsp']}",
             f"  Fmax {result['fmax_mhz']} MHz (target {result['target_mhz']} MHz)",
             f"  harness registers: {result['harness_bits']} bits"]
    if "macs_per_cycle" in result:
        lines.append(f"  {result['macs_per_cycle']} MACs/cycle: "
                     f"{result['lut4_per_mac']} LUT4/MAC, {result['lc_per_mac']} cells/MAC "
                     f"({result['core_lc_per_mac']} without harness registers)")
    return "\n".join(lines)


def cmd_demo(parser, args):
    from .demo import run_demo

    return run_demo(out_dir=Path(args.output))


def cmd_run(parser, args):
    """``lowbit run``: run a program file on the ISS or the RTL through the runtime.

    The output file is one 1-D ``uint64`` array: the words of every ``STORE``, concatenated
    in order (the stats JSON lists each ``STORE``'s length under ``stores``).
    """
    import numpy as np

    from .config.accelerator import AcceleratorConfig
    from .iss import ISSError
    from .program import Program
    from .runtime import (AcceleratorError, ISSTransport, ProtocolError, RTLTransport,
                          Runtime, TransportError)

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
        transport = (ISSTransport(config) if args.backend == "iss"
                     else RTLTransport(config, args.simulator))
        with transport:
            result = Runtime(config, transport).run(program, inputs)
    except (TypeError, ValueError, AcceleratorError, ProtocolError, TransportError,
            ISSError) as error:
        fail(str(error))
    words = (np.concatenate(result.outputs) if result.outputs
             else np.zeros(0, dtype=np.uint64))
    stats = {"backend": args.backend, "status": result.status,
             "stores": [int(o.size) for o in result.outputs], **result.stats}
    if args.backend == "rtl":
        stats["simulator"] = args.simulator
    for path, write in ((args.output, lambda path: np.save(path, words)),
                        (args.stats, lambda path: Path(path).write_text(
                            json.dumps(stats, indent=2) + "\n"))):
        if path:
            try:
                write(path)
            except OSError as error:
                fail(f"cannot write {path}: {error.strerror or error}")
    count = result.stats["instructions"]
    line = (f"{Path(args.program).name} on {args.backend}: HALT status {result.status}, "
            f"{count} instruction{'s' if count != 1 else ''}, {result.stats['cycles']} cycles")
    if args.output:
        stores = len(result.outputs)
        line += (f"; wrote {args.output} ({words.size} words from {stores} "
                 f"STORE{'s' if stores != 1 else ''})")
    print(line)
    return 0


def build_parser():
    parser = argparse.ArgumentParser(
        prog="lowbit", description="Generator of exact accelerators for binarized and "
        "quantized neural networks.")
    sub = parser.add_subparsers(dest="command", required=True)
    units = sorted(UNITS)

    def unit_command(name, help_text):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("unit", choices=units, help="which generator")
        p.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="override a configuration parameter (repeatable)")
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
                   help="input words for the program's INPUT loads, in order (flattened)")
    p.add_argument("--backend", choices=["iss", "rtl"], default="iss",
                   help="the instruction-set simulator or the generated Verilog under cocotb")
    p.add_argument("--simulator", choices=["verilator", "icarus"], default="verilator",
                   help="simulator of the rtl backend")
    p.add_argument("--config", metavar="FILE",
                   help="accelerator configuration JSON (default: AcceleratorConfig())")
    p.add_argument("-o", "--output", metavar="Y.npy",
                   help="write the STORE words, concatenated, as one uint64 array")
    p.add_argument("--stats", metavar="FILE", help="write the run's statistics as JSON")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("demo", help="the main job: Verilog, simulation and synthesis figures")
    p.add_argument("-o", "--output", default="build/demo", help="output folder")
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
