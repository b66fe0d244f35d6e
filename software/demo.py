"""``make demo``: the main job, end to end on the embedded default data.

Trains a binarized MLP on scikit-learn's digits (numpy, straight-through estimator),
compiles it for the default full-rate core, generates the accelerator's Verilog, runs the
whole test set on the instruction-set simulator and 50 test images on the RTL (Verilator,
through the same runtime a board uses), and prints a report: float vs quantized vs hardware
accuracy, ISS/RTL agreement, cycles per image, the array's utilisation (beats per cycle)
and MACs per cycle, the energy per image (``lowbit.energy``) and images per second at the
configuration's Fmax when it has been synthesised on this machine (``lowbit synth
accelerator --target ecp5``; the demo reads the cached result). With ``synth=True``
(``lowbit demo --synth``) it runs that synthesis itself: ECP5 place-and-route takes far
longer than the demo's five minutes (``docs/accelerator_synthesis.md``).
"""

import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["run_demo", "run_train_demo"]

RTL_IMAGES = 50


def _run(program, runtime, x, label):
    from .compiler import run_model

    from .progress import bar

    start = time.perf_counter()
    with bar(None, f"      {label}") as progress:
        scores, totals = run_model(program, runtime, x, progress=progress.steps)
    return scores, totals, time.perf_counter() - start


def _speed(config, synth):
    """``(fmax_mhz, where)`` of this configuration: measured now with ``synth`` (ECP5-85F,
    long), else an ECP5-85F result already cached on this machine, else ``None``."""
    from .synth import cached_result, synthesize
    from .units import get_unit

    unit = get_unit("accelerator")
    if synth:
        print("[6/6] synthesis and place-and-route of the accelerator, ECP5-85F (cached after "
              "the first run)", flush=True)
        try:
            result = synthesize(unit, config, "ecp5")
            return result["fmax_mhz"], "just measured on the ECP5-85F"
        except Exception as error:  # report and go on: the other figures stand
            print(f"      synthesis failed: {str(error).splitlines()[0]}")
            return None
    # The exact design (its Verilog) looked up in the synthesis cache: about 10 s. The
    # default configuration does not fit the iCE40UP5K, so ECP5 only.
    result = cached_result(unit, config, "ecp5")
    if result and result.get("fits", True) and result.get("fmax_mhz"):
        return result["fmax_mhz"], ("measured on the ECP5-85F by `lowbit synth accelerator "
                                    "--target ecp5` (cached result)")
    return None


def run_demo(out_dir=Path("build/demo"), *, epochs=40, synth=False, rtl=True):
    """Run the demo; return 0 when the RTL gives the ISS's scores bit for bit (with
    ``rtl=False`` the RTL step is left out and 0 returned)."""
    from . import datasets, toolenv
    from .compiler import compile_model
    from .config.accelerator import AcceleratorConfig
    from .energy import per_inference
    from .hw.accelerator import Accelerator
    from .runtime import ISSTransport, RTLTransport, Runtime
    from .train import train
    from .verilog import generate

    toolenv.setup()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    data = datasets.load("digits")
    print(f"[1/5] training a binarized MLP (w1a1, 64-256-256-10) on scikit-learn's digits "
          f"({len(data.x_train)} train / {len(data.x_test)} test images)", flush=True)
    model, report = train("digits", precision="w1a1", epochs=epochs, seed=0)
    model_path = out_dir / "digits-w1a1.npz"
    model.save(model_path)
    print(f"      float twin {100 * report.float_accuracy:.2f}%, quantized "
          f"{100 * report.integer_accuracy:.2f}% on the test set -> {model_path}")

    config = AcceleratorConfig()
    array = config.xnor_array
    start = time.perf_counter()
    program = compile_model(model, config, batch=16)
    program_path = out_dir / "digits-w1a1.lbp"
    program.save(program_path)
    print(f"[2/5] compiled for the default full-rate core ({config.fingerprint()}): "
          f"{len(program)} instructions, {len(program.constants)} constant words in "
          f"{time.perf_counter() - start:.2f} s -> {program_path}")

    verilog_path = out_dir / "accelerator.v"
    verilog_path.write_text(generate(Accelerator(config), "accelerator"))
    print(f"[3/5] Verilog of the accelerator ({array.rows}x{array.cols}x{array.word} XNOR "
          f"array, {config.max_out_bits}-bit thresholded outputs) -> {verilog_path}")

    print("[4/5] the whole test set on the instruction-set simulator", flush=True)
    with ISSTransport(config) as link:
        iss_scores, iss_stats, _ = _run(program, Runtime(config, link), data.x_test, "ISS")
    iss_pred = iss_scores.argmax(1)
    iss_acc = float(np.mean(iss_pred == data.y_test))
    float_pred = model.predict(data.x_test, backend="float")
    images = len(data.x_test)
    cycles_per_image = iss_stats["cycles"] / images
    utilisation = iss_stats["array_beats"] / iss_stats["cycles"]
    macs_per_cycle = iss_stats["macs"] / iss_stats["cycles"]

    rtl_line = agree = None
    if rtl:
        print(f"[5/5] {RTL_IMAGES} test images on the RTL (Verilator; the first build takes "
              f"about a minute)", flush=True)
        x_rtl = data.x_test[:RTL_IMAGES]
        with RTLTransport(config) as link:
            rtl_scores, rtl_stats, seconds = _run(program, Runtime(config, link), x_rtl, "RTL")
        agree = bool(np.array_equal(rtl_scores, iss_scores[:RTL_IMAGES]))
        with ISSTransport(config) as link:  # the ISS's cycle model on the same run
            _, model_stats, _ = _run(program, Runtime(config, link), x_rtl, "ISS")
        rtl_acc = float(np.mean(rtl_scores.argmax(1) == data.y_test[:RTL_IMAGES]))
        rtl_line = (f"RTL {100 * rtl_acc:.2f}% ({RTL_IMAGES} images)",
                    f"on the {RTL_IMAGES} RTL images: RTL {rtl_stats['cycles']:,} cycles, ISS "
                    f"model {model_stats['cycles']:,} "
                    f"({100 * (model_stats['cycles'] / rtl_stats['cycles'] - 1):+.1f}%)",
                    f"  RTL simulation {rtl_stats['cycles'] / seconds:,.0f} cycles/s; ")

    speed = _speed(config, synth)
    print()
    print("lowbit demo: digits BNN end to end")
    print(f"  accuracy   float twin {100 * report.float_accuracy:.2f}%  quantized (numpy) "
          f"{100 * float(np.mean(float_pred == data.y_test)):.2f}%  ISS "
          f"{100 * iss_acc:.2f}% ({images} images)"
          + (f"  {rtl_line[0]}" if rtl_line else ""))
    print(f"  agreement  "
          + (f"ISS vs RTL scores bit for bit: {agree}; " if rtl_line else "")
          + f"ISS vs numpy predictions: {int(np.sum(iss_pred == float_pred))}/{images}")
    weights = ("weights resident (sent once per run)" if program.metadata["resident"] else
               "weights streamed with each batch")
    print(f"  cycles     {cycles_per_image:,.0f} per image ({iss_stats['cycles']:,} for "
          f"{images} images in one stream at batch 16), {weights}, over the "
          f"{config.host_link_bits}-bit host link"
          + (f"; {rtl_line[1]}" if rtl_line else ""))
    print(f"  array      utilisation {utilisation:.3f} (array beats / cycles), "
          f"{macs_per_cycle:,.0f} useful binary MACs per cycle of the "
          f"{config.macs:,} the {array.rows}x{array.cols}x{array.word} array peaks at")
    if speed:
        fmax, where = speed
        print(f"  speed      {fmax * 1e6 / cycles_per_image:,.0f} images/s at {fmax:.1f} MHz, "
              f"the Fmax {where}")
    else:
        print(f"  speed      {1e6 / cycles_per_image * 20:,.0f} images/s at 20 MHz, "
              f"{1e6 / cycles_per_image * 40:,.0f} at 40 MHz; this configuration has not "
              f"been synthesised here: `lowbit synth accelerator --target ecp5 --json` "
              f"measures it (docs/accelerator_synthesis.md), and the demo then uses it")
    energy, fp32 = per_inference(program, config)
    print(f"  energy     {energy / 1e3:,.0f} nJ per image (45 nm action model, `lowbit energy "
          f"{program_path}`); the same network on an fp32 datapath {fp32 / 1e3:,.0f} nJ, "
          f"{fp32 / energy:.0f}x more")
    print((rtl_line[2] if rtl_line else "  ") + f"whole demo "
          f"{time.perf_counter() - t0:.0f} s")
    print(f"  files      {out_dir}/ (model, program, accelerator.v)")
    return 0 if agree or not rtl else 1


def run_train_demo(out_dir=Path("build/demo-train"), *, epochs=15, rtl=True):
    """``lowbit demo --train``: train the digits BNN with its products and its update on the
    accelerator (ISS, a training configuration), check one whole step on the RTL against
    the golden step, export, compile and run the trained model. Returns 0 when the RTL step
    is the golden one bit for bit."""
    from . import datasets, toolenv
    from .compiler import compile_model
    from .config.accelerator import AcceleratorConfig
    from .device_matmul import DeviceMatmul
    from .device_training import export_model, train_on_device
    from .device_update import DeviceUpdate, training_accelerator
    from .golden.training import TrainingConfig, TrainingStep
    from .runtime import ISSTransport, RTLTransport, Runtime

    toolenv.setup()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    data = datasets.load("digits")
    config = TrainingConfig(lr_exponent=4)
    accel = training_accelerator(AcceleratorConfig(), config)
    q = data.input_quantizer
    status = 0
    if rtl:
        print("[1/3] one training step with its products, statistics and update on the RTL "
              "(Verilator; the first build takes about a minute) against the golden step",
              flush=True)
        x, y = q.quantize(data.x_train[:config.batch]), data.y_train[:config.batch]
        gold = TrainingStep(config)
        gold.step(x, y)
        with RTLTransport(accel) as link:
            runtime = Runtime(accel, link)
            matmul = DeviceMatmul(runtime)
            dev = TrainingStep(config, matmul=matmul,
                               update=DeviceUpdate(runtime, config.shapes, config.weight_bits),
                               statistics=matmul.statistics)
            dev.step(x, y)
        same = all(np.array_equal(a.code, b.code) and np.array_equal(a.sign, b.sign)
                   for a, b in zip(gold.weights, dev.weights))
        print(f"      {dev.matmul.stats['gemms']} GEMM programs "
              f"({dev.matmul.stats['statistics']} with the norm statistics by STATS), "
              f"{dev.matmul.stats['cycles']:,} cycles, the update "
              f"{dev.update.stats['cycles']:,} cycles: latent weights "
              f"{'equal to' if same else 'DIFFERENT from'} the golden step's")
        status = 0 if same else 1
    print(f"[2/3] training {'-'.join(map(str, config.sizes))} on the ISS: {epochs} epochs of "
          f"batch {config.batch}, products, statistics and update on the accelerator", flush=True)

    def progress(epoch, loss, accuracy):
        print(f"      epoch {epoch}/{epochs}: loss {loss:.4f}, test accuracy "
              f"{100 * accuracy:.2f}%", flush=True)

    with ISSTransport(accel) as link:
        step, report = train_on_device(data, config, runtime=Runtime(accel, link),
                                       epochs=epochs, progress=progress, backend="iss")
    for line in report.lines():
        print(f"      {line}")
    model = export_model(step, q.quantize(data.x_train), name="digits-device",
                         dataset=data.name, input_quantizer=q)
    model_path = out_dir / "digits-device.npz"
    model.save(model_path)
    print("[3/3] the trained model compiled and run on the ISS", flush=True)
    program = compile_model(model, accel, batch=16)
    with ISSTransport(accel) as link:
        scores, stats, _ = _run(program, Runtime(accel, link), data.x_test, "ISS")
    accuracy = float(np.mean(scores.argmax(1) == data.y_test))
    print(f"      {100 * accuracy:.2f}% on the {len(data.x_test)} test images -> {model_path}; "
          f"whole demo {time.perf_counter() - t0:.0f} s")
    return status


if __name__ == "__main__":
    sys.exit(run_demo())
