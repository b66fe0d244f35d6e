"""``make demo``: the main job on the default configuration.

Until the compiler and the whole accelerator exist, the demo generates the Verilog of the
default XNOR array, checks it against the golden model in cocotb (Verilator, and Icarus
when installed) and prints its synthesis figures on the iCE40UP5K and the ECP5-85F.
"""

import sys
from pathlib import Path

from . import toolenv
from .units import get_unit

__all__ = ["run_demo"]


def run_demo(out_dir=Path("build/demo")):
    from .cli import format_synth
    from .sim.runner import run_cocotb
    from .synth import synthesize
    from .verilog import generate

    unit = get_unit("xnor-array")
    config = unit.make_config()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{unit.toplevel}.v"
    path.write_text(generate(unit.make_component(config), unit.toplevel))
    print(f"[1/3] Verilog of the default array ({config.rows}x{config.cols} PEs, "
          f"{config.word}-bit words, {config.accumulator_width}-bit accumulators): {path}")
    simulators = ["verilator"] + (["icarus"] if toolenv.icarus_available() else [])
    if len(simulators) == 1:
        print("      (Icarus Verilog not installed: simulating with Verilator only)")
    for n, simulator in enumerate(simulators):
        result = run_cocotb(unit, config, simulator=simulator, test_dir=out_dir / simulator)
        print(f"[2/3] cocotb on {simulator}: {result['tests']} tests bit-exact against the "
              f"golden model (log: {result['log']})")
    for target in ("ice40", "ecp5"):
        print(f"[3/3] synthesis and place-and-route, {target} (first use compiles the YoWASP "
              "tools, about a minute)...", flush=True)
        print(format_synth(synthesize(unit, config, target)))
    return 0


if __name__ == "__main__":
    sys.exit(run_demo())
