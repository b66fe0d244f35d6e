"""Benchmark of a board: a digits BNN through the simulated board (UART, framing bridge,
accelerator under Verilator, driven by the real framed serial codec), against the ISS.

Prints the RTL's cycles per image, the host-link bytes per image each way, the frames,
and what they imply on a board: images/s bound by the accelerator at the board clock, and
bound by the UART (8N1: 10 line bits per byte; frame headers, CRCs and acknowledgements
counted) at a baud rate. These are derived figures (measured cycles and bytes, divided by
clock and baud), not a timed board.

Run: ``python -m lowbit.bench.boards [--hidden 256,256] [--images 32] [--config FILE]
[--json FILE]``.
"""

import argparse
import json
import sys
import tempfile

import numpy as np

from ..config.accelerator import AcceleratorConfig
from ..config.lightnorm import LightNormConfig
from ..config.xnor_array import XNORArrayConfig

__all__ = ["BOARD_SIM_CONFIG", "run", "main"]

#: A small accelerator with the norm unit (a BNN needs thresholds between layers), as the
#: board simulation test uses; the iCEBreaker's configuration has no norm unit yet.
BOARD_SIM_CONFIG = AcceleratorConfig(
    xnor_array=XNORArrayConfig(rows=2, cols=2, max_k=256),
    lightnorm=LightNormConfig(channels=256, block=4, output="sign"), has_lns_mac=False,
    act_words=1024, weight_words=4096, out_words=1024, timeout_cycles=1 << 26)


def run(hidden=(256, 256), images=32, batch=16, epochs=5, config=BOARD_SIM_CONFIG):
    """Train and compile a digits BNN, run ``images`` test images on the ISS and on the
    simulated board; return the figures as a dict."""
    from sklearn.datasets import load_digits

    from ..boards.core import SIM_BAUD, SIM_CLK_HZ, sim_unit
    from ..compiler import compile_model, run_model
    from ..framing import FramedTransport
    from ..runtime import ISSTransport, RTLTransport, Runtime
    from ..train import train

    model, _ = train("digits", precision="w1a1", hidden=tuple(hidden), epochs=epochs,
                     seed=0, progress=False)
    program = compile_model(model, config, batch=batch)
    x = load_digits().data[-images:]
    with ISSTransport(config) as iss:
        expected, _ = run_model(program, Runtime(config, iss), x)
    with tempfile.TemporaryDirectory(prefix="lowbit-bench-board-") as folder:
        rtl = RTLTransport(config, unit=sim_unit(), test_module="lowbit.sim.board_bridge",
                           test_dir=folder)
        with rtl:
            link = FramedTransport(rtl.channel, timeout=300.0, resend=5.0, gap=1.0)
            scores, stats = run_model(program, Runtime(config, link), x)
            frames = dict(link.stats)
    # Bytes on the line: payload plus 6 framing bytes per DATA frame, 6-byte ACKs back.
    line_in = stats["bytes_in"] + 6 * frames["frames_sent"] + 6 * frames["frames_received"]
    line_out = stats["bytes_out"] + 6 * frames["frames_received"] + 6 * frames["frames_sent"]
    result = {
        "model": f"digits 64-{'-'.join(map(str, hidden))}-10 w1a1", "images": images,
        "batch": batch, "agrees_with_iss": bool(np.array_equal(scores, expected)),
        "cycles_per_image": stats["cycles"] / images,
        "bytes_in_per_image": stats["bytes_in"] / images,
        "bytes_out_per_image": stats["bytes_out"] / images,
        "line_bytes_in_per_image": line_in / images,
        "line_bytes_out_per_image": line_out / images,
        "frames": frames, "sim_clk_hz": SIM_CLK_HZ, "sim_baud": SIM_BAUD,
        "config": config.to_dict(),
    }
    for mhz in (12, 25):
        result[f"images_per_s_compute_{mhz}mhz"] = mhz * 1e6 / result["cycles_per_image"]
    for baud in (115_200, 1_000_000):
        worst = max(line_in, line_out) / images
        result[f"images_per_s_uart_{baud}"] = baud / 10 / worst
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", default="256,256", help="hidden layer widths")
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--config", metavar="FILE",
                        help="accelerator configuration JSON (default: BOARD_SIM_CONFIG)")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    config = AcceleratorConfig.load(args.config) if args.config else BOARD_SIM_CONFIG
    result = run(hidden=[int(h) for h in args.hidden.split(",")], images=args.images,
                 config=config)
    for key, value in result.items():
        if key != "config":
            print(f"{key}: {value:,.1f}" if isinstance(value, float) else f"{key}: {value}")
    if args.json:
        with open(args.json, "w") as file:
            json.dump(result, file, indent=1)
    return 0 if result["agrees_with_iss"] else 1


if __name__ == "__main__":
    sys.exit(main())
