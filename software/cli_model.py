"""The model half of the command line: ``lowbit train``, ``lowbit import``, ``lowbit
compile``, and ``lowbit run`` on a compiled model (inputs in the model's own domain, class
scores out).
:mod:`lowbit.cli` registers these commands."""

import json
import time
from pathlib import Path

from .errors import UserError, reading, refusing, writing

__all__ = ["add_model_commands", "run_compiled", "write_results", "usage_stats"]


def write_results(output, array, stats_path, stats):
    """``lowbit run``'s files: ``array`` to the ``.npy`` file ``output`` and ``stats`` as
    JSON to ``stats_path`` (each when given)."""
    import numpy as np

    for path, write in ((output, lambda p: np.save(p, array)),
                        (stats_path, lambda p: Path(p).write_text(
                            json.dumps(stats, indent=2) + "\n"))):
        if path:
            with writing(path):
                write(path)


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


def _input_options(args):
    from .onnx_import import input_description_from_args

    with refusing():
        return input_description_from_args(args)


def _import(path, args):
    """The model of ``lowbit import``/``lowbit compile`` from an ONNX file, with the input
    options."""
    from .onnx_import import load_onnx

    quantizer, description = _input_options(args)
    with reading(path), refusing():  # the importer's messages name the node at fault
        return load_onnx(path, input_quantizer=quantizer, input_description=description)


def cmd_import(parser, args):
    """``lowbit import MODEL.onnx -o MODEL.npz [--input-datatype T --input-scale S]``."""
    from .onnx_import import input_transform

    model = _import(args.model, args)
    with writing(args.output):
        model.save(args.output)
    print(model.summary())
    if input_transform(model) is not None:
        transform = input_transform(model)
        print(f"input transform: the host counts {transform.levels} thresholds per input "
              f"(lowbit.onnx_import.prepare_input)")
    print(f"wrote {args.output}")
    return 0


def cmd_train(parser, args):
    """``lowbit train``: train, save, print the report."""
    from .train import train

    device = args.backend is not None
    given = [flag for dest, flag in (HOST_FLAGS if device else DEVICE_FLAGS)
             if _given(getattr(args, dest, None))]
    if given:
        trainer = ("the host trainer (without --backend)" if device
                   else "the trainer on the accelerator (with --backend)")
        raise UserError(f"{', '.join(given)}: an option of {trainer} only")
    if device:
        return _train_on_device(parser, args)
    with refusing(ValueError, TypeError, NotImplementedError):
        model, report = train(args.dataset, args.arch, args.precision, args.hidden,
                              args.epochs, args.seed,
                              progress=not (args.no_progress or args.quietness),
                              batch_size=HOST_BATCH if args.batch_size is None
                              else args.batch_size,
                              lr=HOST_LR if args.lr is None else args.lr,
                              twin=not args.no_twin,
                              channels=HOST_CHANNELS if args.channels is None else args.channels)
    return _save_model(args, model, report)


def _given(value):
    """Whether an option whose default is ``None``, ``False`` (a flag) or ``[]`` (repeated)
    was given: by identity, so a given ``0`` counts."""
    return not (value is None or value is False or (isinstance(value, list) and not value))


def _save_model(args, model, report):
    """Write the trained model to ``-o`` and print its report."""
    with writing(args.output):
        model.save(args.output)
    for line in report.lines():
        print(line)
    print(f"wrote {args.output}")
    return 0


#: ``lowbit train`` without ``--backend``: batch, Adam learning rate and CNN channels.
HOST_BATCH = 64
HOST_LR = 0.01
HOST_CHANNELS = (32,)
#: Options of one trainer only, as (argument destination, flag): their defaults are ``None``,
#: ``False`` or ``[]``, so any other value was given, and the other trainer refuses it.
HOST_FLAGS = (("lr", "--lr"), ("no_twin", "--no-twin"), ("channels", "--channels"))
DEVICE_FLAGS = (("config", "--config"), ("set", "--set"), ("grad_bits", "--grad-bits"),
                ("port", "--port"), ("baud", "--baud"), ("simulator", "--simulator"))


#: ``lowbit train --backend``: epochs and batch of the integer training step by default.
DEVICE_EPOCHS = 15
DEVICE_BATCH = 32
DEVICE_GRAD_BITS = 8
#: Its learning-rate exponent (the largest gradient moves a weight 2^e LNS codes): 4 reached
#: 96.4% on digits in 15 epochs where 3 oscillated around 94-95% (docs/training.md).
DEVICE_LR_EXPONENT = 4


def _train_on_device(parser, args):
    """``lowbit train --backend iss|rtl|board``: the integer training step with its products
    on the accelerator (lowbit.device_training)."""
    from . import datasets, toolenv
    from .cli import _transport, configuration
    from .config.accelerator import AcceleratorConfig
    from .device_training import export_model, train_on_device
    from .device_update import with_latent_memory, with_statistics_unit
    from .golden.training import TrainingConfig
    from .iss import ISSError
    from .runtime import AcceleratorError, ProtocolError, Runtime, TransportError

    import numpy as np

    if args.arch != "mlp" or args.precision != "w1a1":
        raise UserError("--backend trains the binarized MLP only (--arch mlp --precision "
                        "w1a1)")
    if args.backend == "rtl":
        toolenv.require("lowbit train --backend rtl", "sim")
    from .framing import DEFAULT_BAUD

    # _transport reads these as `lowbit run` gives them.
    args.baud = DEFAULT_BAUD if args.baud is None else args.baud
    args.simulator = "verilator" if args.simulator is None else args.simulator
    hidden = tuple(args.hidden) if args.hidden else TrainingConfig().sizes[1:-1]
    grad_bits = DEVICE_GRAD_BITS if args.grad_bits is None else args.grad_bits
    with refusing(ValueError, TypeError):
        data = datasets.load(args.dataset)
        features = int(np.prod(data.input_shape))
        training = TrainingConfig(sizes=(features, *hidden, data.classes),
                                  input_bits=data.input_quantizer.bits,
                                  grad_bits=(grad_bits,) * (len(hidden) + 1),
                                  batch=DEVICE_BATCH if args.batch_size is None
                                  else args.batch_size,
                                  lr_exponent=DEVICE_LR_EXPONENT, seed=args.seed)
    epochs = DEVICE_EPOCHS if args.epochs is None else args.epochs
    # Without --config: the default accelerator with a latent memory for this network, so
    # the update runs there too (a configuration without one updates on the host).
    with refusing(ValueError, TypeError):
        base = with_latent_memory(AcceleratorConfig(), training)
    config = configuration(args, AcceleratorConfig, base=base)
    # ... and a statistics unit for its norms, fitted after --set (which may change what
    # the unit must hold), unless --config or --set chose the unit themselves.
    chosen = any(item.split("=", 1)[0].strip() in ("norm_channels", "norm_chunks")
                 for item in (args.set or []))
    if not (args.config or chosen):
        config = with_statistics_unit(config, training)

    def report(epoch, loss, accuracy):
        if not (args.no_progress or args.quietness):
            print(f"epoch {epoch}/{epochs}: loss {loss:.4f}, test accuracy "
                  f"{100 * accuracy:.2f}%", flush=True)

    with refusing(TypeError, ValueError, AcceleratorError, ProtocolError, TransportError,
                  ISSError):
        with _transport(args, config) as transport:
            step, result = train_on_device(data, training, runtime=Runtime(config, transport),
                                           epochs=epochs, seed=args.seed, progress=report,
                                           backend=args.backend)
    q = data.input_quantizer
    model = export_model(step, q.quantize(data.x_train), name=f"{args.dataset}-device",
                         dataset=data.name, input_quantizer=q)
    result.model_accuracy = float((model.predict(data.x_test) == data.y_test).mean())
    return _save_model(args, model, result)


def cmd_compile(parser, args):
    """``lowbit compile MODEL [--config FILE] [--set K=V] [--batch N] [--resident|--stream]
    [--result scores|argmax] -o PROGRAM``; ``MODEL`` is a lowbit model file or an ONNX
    file, imported first (the input options as for ``lowbit import``)."""
    from .cli import configuration
    from .compiler import CompileError, compile_model
    from .config.accelerator import AcceleratorConfig
    from .model import QuantModel
    from .onnx_import import input_transform

    config = configuration(args, AcceleratorConfig)
    if args.batch < 1:
        raise UserError(f"--batch must be at least 1, not {args.batch}")
    onnx_given = _is_onnx(args.model)
    if onnx_given:
        model = _import(args.model, args)
    else:
        if any(getattr(args, name, None) is not None for name in
               ("input_datatype", "input_scale", "input_bits", "input_step")):
            raise UserError("the input options describe an ONNX model's input; "
                            f"{args.model} is a lowbit model file")
        with reading(args.model), refusing():
            model = QuantModel.load(args.model)
    start = time.perf_counter()
    with refusing(CompileError, ValueError, prefix=f"{args.model}: "):
        program = compile_model(model, config, batch=args.batch, resident=args.weights,
                                result=args.result)
    seconds = time.perf_counter() - start
    with writing(args.output):
        program.save(args.output)
    weights = "resident" if program.metadata["resident"] else "streamed with each batch"
    print(f"{Path(args.model).name} -> {args.output}: {len(program)} instructions, "
          f"{len(program.constants)} constant words ({weights}), batch {args.batch}, "
          f"{args.result} back, for "
          f"accelerator {config.fingerprint()} ({seconds:.2f} s)")
    if onnx_given and input_transform(model) is not None:
        print(f"note: the program takes the model's inputs; the graph's raw inputs become "
              f"them through its input transform ({input_transform(model).levels} thresholds "
              f"per input, lowbit.onnx_import.prepare_input)")
    return 0


#: What ``lowbit run`` reads from a compiled model's metadata (:mod:`lowbit.compiler`).
MODEL_KEYS = ("model", "batch", "classes", "input_shape", "input_quantizer", "input_planes",
              "input_bipolar", "scores", "scale", "offset", "schedule", "layers")


def run_compiled(args, config, program, transport):
    """``lowbit run`` on a compiled model: ``--input`` holds model-domain inputs (an
    ``(n, *input_shape)`` array, e.g. rows of ``load_digits().data``); ``-o`` gets the
    ``(n, classes)`` float class scores (argmax = prediction), or for a program compiled
    with ``--result argmax`` the ``(n,)`` predicted classes the accelerator sent."""
    import numpy as np

    from .compiler import run_model
    from .runtime import Runtime

    meta = program.metadata
    missing = [key for key in MODEL_KEYS if key not in meta]
    if missing:
        raise UserError(f"{args.program}: the program's model metadata lacks "
                        f"{', '.join(map(repr, missing))} (recompile it with lowbit compile)")
    if not args.input:
        raise UserError("a compiled model needs --input X.npy (inputs in the model's own "
                        "domain)")
    with reading(args.input), refusing(ValueError, EOFError,
                                       prefix=f"{args.input} is not a .npy array: "):
        x = np.load(args.input, allow_pickle=False)
    from .progress import bar

    try:
        with bar(None, f"{meta['model']} on {args.backend}",
                 not getattr(args, "quietness", 0)) as progress, transport:
            scores, stats = run_model(program, Runtime(config, transport), x,
                                      progress=progress.steps)
    except (KeyError, IndexError) as error:
        raise UserError(f"{args.program}: malformed model metadata ({type(error).__name__}: "
                        f"{error})") from None
    images = len(scores)
    stats.update(backend=args.backend, model=meta["model"], inputs=images,
                 cycles_per_input=stats["cycles"] / (stats["runs"] * meta["batch"]))
    macs = stats.get("macs")
    stats.update(usage_stats(stats, macs if isinstance(macs, int) else None))
    write_results(args.output, scores, args.stats, stats)
    line = (f"{meta['model']} on {args.backend}: {images} input{'s' if images != 1 else ''} "
            f"in {stats['runs']} run{'s' if stats['runs'] != 1 else ''}, "
            f"{stats['cycles_per_input']:,.0f} cycles per input")
    if args.output and scores.ndim == 1:
        line += f"; wrote {args.output} ({images} predicted classes, from the accelerator)"
    elif args.output:
        line += f"; wrote {args.output} ({images} x {scores.shape[1]} class scores)"
    print(line)
    return 0


def add_model_commands(sub):
    """Register ``train``, ``import`` and ``compile`` on the CLI's subparsers."""
    from .cli import add_config_arguments
    from .onnx_import import add_input_arguments

    _add_train_command(sub)
    p = sub.add_parser(
        "import", help="import an ONNX/QONNX/FINN-ONNX quantized MLP or CNN into lowbit's "
        "model format",
        description="Import an ONNX, QONNX (Brevitas) or FINN-ONNX quantized MLP or CNN and "
        "save it in lowbit's model format (docs/onnx_import.md).")
    p.add_argument("model", metavar="MODEL.onnx", help="ONNX file to read")
    p.add_argument("-o", "--output", required=True, metavar="MODEL.npz",
                   help="model file to write (.npz, lowbit model format)")
    add_input_arguments(p)
    p.set_defaults(func=cmd_import)

    from .compiler import RESULTS

    p = sub.add_parser("compile", help="compile a quantized model to an accelerator program")
    p.add_argument("model", help="model file (lowbit.model format, e.g. from lowbit train), "
                   "or an ONNX/QONNX/FINN-ONNX file, imported first as lowbit import does")
    add_config_arguments(p, "the accelerator configuration", "AcceleratorConfig()")
    p.add_argument("--batch", type=int, default=16, help="inputs per program run")
    weights = p.add_mutually_exclusive_group()
    weights.add_argument("--resident", dest="weights", action="store_const", const=True,
                         default=None, help="keep the weights in the weight buffer, sent once "
                         "per run call (default when they fit)")
    weights.add_argument("--stream", dest="weights", action="store_const", const=False,
                         help="send the weights with each batch, overlapping compute")
    p.add_argument("--result", choices=RESULTS, default="scores",
                   help="what the accelerator sends back per input: the class scores, or "
                   "the predicted class, one byte (a configuration with an argmax unit, "
                   "rank_depth > 0)")
    p.add_argument("-o", "--output", required=True, metavar="PROGRAM",
                   help="program file to write")
    add_input_arguments(p)
    p.set_defaults(func=cmd_compile)


def _widths(text):
    import argparse

    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated widths, not {text!r}")
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"widths must be positive, not {text!r}")
    return values


def _add_train_command(sub):
    from . import datasets
    from .train import ARCHS, PRECISIONS

    p = sub.add_parser(
        "train", help="train a quantized network (numpy, straight-through estimator)",
        description="Train a quantized MLP or CNN with the straight-through estimator (numpy "
        "only) and save it in lowbit's model format (docs/model.md).")
    p.add_argument("--dataset", choices=datasets.NAMES, default="digits")
    p.add_argument("--arch", choices=ARCHS, default="mlp")
    p.add_argument("--precision", choices=tuple(PRECISIONS), default="w1a1",
                   help="weight and activation bits (a1: sign, +-1)")
    p.add_argument("--hidden", type=_widths, default=None, metavar="N,N",
                   help="hidden dense layer widths (default: 256,256 for mlp, 256 for cnn; "
                   "128,128 with --backend)")
    p.add_argument("--channels", type=_widths, default=None, metavar="N,N",
                   help="cnn: output channels of each 3x3 convolution stage (default: 32)")
    p.add_argument("--epochs", type=int, default=None,
                   help="training epochs (default: 60 for digits, 10 for mnist)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=None,
                   help="batch size (default: 64; 32 with --backend)")
    p.add_argument("--lr", type=float, default=None,
                   help="Adam's initial learning rate (default: 0.01)")
    p.add_argument("--no-twin", action="store_true",
                   help="skip the unquantized twin (no float reference accuracy)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("-o", "--output", required=True, metavar="MODEL",
                   help="model file to write (.npz, lowbit model format)")
    device = p.add_argument_group(
        "training on the accelerator", "with --backend the integer training step "
        "(docs/training.md) runs with its products, and on a training configuration its "
        "LNS-Madam update, on the accelerator; without it the host trainer above runs")
    device.add_argument("--backend", choices=["iss", "rtl", "board"], default=None,
                        help="where the step's GEMMs (and update) run")
    from .cli import add_config_arguments

    add_config_arguments(device, "the accelerator configuration",
                         "AcceleratorConfig() with a latent memory for the network")
    device.add_argument("--grad-bits", type=int, default=None,
                        help="signed gradient bits of every layer (2..8, default 8)")
    device.add_argument("--port", help="serial device of the board backend")
    device.add_argument("--baud", type=int, default=None,
                        help="baud rate of the board backend (default: the bitstream's, "
                        "3,000,000)")
    device.add_argument("--simulator", choices=["verilator", "icarus"], default=None,
                        help="simulator of the rtl backend (default: verilator)")
    p.set_defaults(func=cmd_train)
    return p
