"""The model half of the command line: ``lowbit train``, ``lowbit compile``, and ``lowbit
run`` on a compiled model (inputs in the model's own domain, class scores out).
:mod:`lowbit.cli` registers these commands."""

import json
import sys
import time
from pathlib import Path

__all__ = ["add_model_commands", "run_compiled", "write_results", "usage_stats"]


def _fail(command, message):
    # A clear line and status 2, as argparse gives for bad arguments; no traceback.
    print(f"lowbit {command}: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def write_results(output, array, stats_path, stats, fail):
    """``lowbit run``'s files: ``array`` to the ``.npy`` file ``output`` and ``stats`` as
    JSON to ``stats_path`` (each when given); ``fail`` reports a write error."""
    import numpy as np

    for path, write in ((output, lambda p: np.save(p, array)),
                        (stats_path, lambda p: Path(p).write_text(
                            json.dumps(stats, indent=2) + "\n"))):
        if path:
            try:
                write(path)
            except OSError as error:
                fail(f"cannot write {path}: {error.strerror or error}")


def _is_onnx(path):
    """Whether ``path`` names an ONNX file: its suffix, or (for another suffix) bytes that
    are not a zip archive, as every lowbit model file is."""
    if str(path).lower().endswith(".onnx"):
        return True
    if str(path).lower().endswith(".npz"):
        return False
    try:
        with open(path, "rb") as file:
            return file.read(4) != b"PK\x03\x04"
    except OSError:
        return False


def usage_stats(stats, macs):
    """What ``lowbit run --stats`` adds to a run's counters: ``array_beats`` (cycles in
    which the array took a beat), ``macs`` (the network's useful binary MACs, ``None`` when
    the program does not say) and ``utilisation``, ``array_beats / cycles`` (``None`` for
    a run of no cycles)."""
    beats, cycles = stats.get("array_beats"), stats.get("cycles")
    return {"array_beats": beats, "macs": macs,
            "utilisation": beats / cycles if beats is not None and cycles else None}


def cmd_compile(parser, args):
    """``lowbit compile MODEL [--config FILE] [--batch N] [--resident|--stream] -o PROGRAM``;
    ``MODEL`` is a lowbit model file or an ONNX file, imported first (the input options as
    for ``lowbit import``)."""
    from .compiler import CompileError, compile_model
    from .config.accelerator import AcceleratorConfig
    from .model import QuantModel
    from .onnx_import import import_for_cli, input_transform

    onnx_given = _is_onnx(args.model)
    try:
        config = AcceleratorConfig.load(args.config) if args.config else AcceleratorConfig()
        if onnx_given:
            model = import_for_cli("compile", args.model, args)
        else:
            if any(getattr(args, name, None) is not None for name in
                   ("input_datatype", "input_scale", "input_bits", "input_step")):
                _fail("compile", "the input options describe an ONNX model's input; "
                      f"{args.model} is a lowbit model file")
            model = QuantModel.load(args.model)
    except OSError as error:
        _fail("compile", f"cannot read {error.filename}: {error.strerror or error}")
    except (TypeError, ValueError) as error:
        _fail("compile", str(error))
    start = time.perf_counter()
    try:
        program = compile_model(model, config, batch=args.batch, resident=args.weights)
    except (CompileError, ValueError) as error:
        _fail("compile", f"{args.model}: {error}")
    seconds = time.perf_counter() - start
    try:
        program.save(args.output)
    except OSError as error:
        _fail("compile", f"cannot write {args.output}: {error.strerror or error}")
    weights = "resident" if program.metadata["resident"] else "streamed with each batch"
    print(f"{Path(args.model).name} -> {args.output}: {len(program)} instructions, "
          f"{len(program.constants)} constant words ({weights}), batch {args.batch}, for "
          f"accelerator {config.fingerprint()} ({seconds:.2f} s)")
    if onnx_given and input_transform(model) is not None:
        print(f"note: the program takes the model's inputs; the graph's raw inputs become "
              f"them through its input transform ({input_transform(model).levels} thresholds "
              f"per input, lowbit.onnx_import.prepare_input)")
    return 0


def run_compiled(args, config, program, transport, fail):
    """``lowbit run`` on a compiled model: ``--input`` holds model-domain inputs (an
    ``(n, *input_shape)`` array, e.g. rows of ``load_digits().data``); ``-o`` gets the
    ``(n, classes)`` float class scores (argmax = prediction)."""
    import numpy as np

    from .compiler import run_model
    from .runtime import Runtime

    if not args.input:
        fail("a compiled model needs --input X.npy (inputs in the model's own domain)")
    try:
        x = np.load(args.input, allow_pickle=False)
    except OSError as error:
        fail(f"cannot read {args.input}: {error.strerror or error}")
    except (ValueError, EOFError) as error:
        fail(f"{args.input} is not a .npy array: {error}")
    with transport:
        scores, stats = run_model(program, Runtime(config, transport), x)
    meta = program.metadata
    images = len(scores)
    stats.update(backend=args.backend, model=meta["model"], inputs=images,
                 cycles_per_input=stats["cycles"] / (stats["runs"] * meta["batch"]))
    macs = stats.get("macs")
    stats.update(usage_stats(stats, macs if isinstance(macs, int) else None))
    write_results(args.output, scores, args.stats, stats, fail)
    line = (f"{meta['model']} on {args.backend}: {images} input{'s' if images != 1 else ''} "
            f"in {stats['runs']} run{'s' if stats['runs'] != 1 else ''}, "
            f"{stats['cycles_per_input']:,.0f} cycles per input")
    if args.output:
        line += f"; wrote {args.output} ({images} x {scores.shape[1]} class scores)"
    print(line)
    return 0


def add_model_commands(sub):
    """Register ``train``, ``import`` and ``compile`` on the CLI's subparsers."""
    from .onnx_import import add_import_command, add_input_arguments
    from .train import add_train_command

    add_train_command(sub)
    add_import_command(sub)
    p = sub.add_parser("compile", help="compile a quantized model to an accelerator program")
    p.add_argument("model", help="model file (lowbit.model format, e.g. from lowbit train), "
                   "or an ONNX/QONNX/FINN-ONNX file, imported first as lowbit import does")
    p.add_argument("--config", metavar="FILE",
                   help="accelerator configuration JSON (default: AcceleratorConfig())")
    p.add_argument("--batch", type=int, default=16, help="inputs per program run")
    weights = p.add_mutually_exclusive_group()
    weights.add_argument("--resident", dest="weights", action="store_const", const=True,
                         default=None, help="keep the weights in the weight buffer, sent once "
                         "per run call (default when they fit)")
    weights.add_argument("--stream", dest="weights", action="store_const", const=False,
                         help="send the weights with each batch, overlapping compute")
    p.add_argument("-o", "--output", required=True, metavar="PROGRAM",
                   help="program file to write")
    add_input_arguments(p)
    p.set_defaults(func=cmd_compile)
