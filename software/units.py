"""The registry of gateware units the CLI, simulators and synthesis flow know by name.

Each :class:`Unit` ties a CLI name to its configuration class, its Amaranth component, its
cocotb testbench module and its synthesis figures. Adding a unit is one entry in ``UNITS``.
"""

import dataclasses
import importlib

__all__ = ["Unit", "UNITS", "get_unit", "DEVICES", "estimate", "check_fits"]


def _load(path):
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclasses.dataclass(frozen=True)
class Unit:
    """A generator the CLI can run.

    Parameters
    ----------
    name : str
        CLI name (``xnor-array``).
    config : str
        ``module:Class`` of the frozen configuration dataclass.
    component : str
        ``module:Class`` of the ``wiring.Component``; called with the configuration.
    testbench : str
        Module name of the cocotb tests; they read the configuration from the JSON in
        ``$LOWBIT_CONFIG`` (see :func:`lowbit.sim.runner.config_from_env`).
    toplevel : str
        Verilog module name of the generated design.
    ops_per_cycle : str or None
        ``module:function`` mapping a configuration to the operations it performs per cycle
        (binary MACs for the array), used for per-operation synthesis figures.
    synth_commands : tuple of (target, command) pairs
        Yosys synthesis commands that replace the target's default for this unit (where a
        default option crashes Yosys/ABC on the unit's netlist).
    """

    name: str
    config: str
    component: str
    testbench: str
    toplevel: str
    ops_per_cycle: str | None = None
    synth_commands: tuple = ()

    @property
    def config_class(self):
        return _load(self.config)

    def make_config(self, overrides=()):
        """The unit's configuration with ``key=value`` overrides applied (validated)."""
        return self.config_class.from_overrides(overrides)

    def make_component(self, config):
        return _load(self.component)(config)

    def ops(self, config):
        return _load(self.ops_per_cycle)(config) if self.ops_per_cycle else None


def _array_macs(config):
    return config.macs


def _accelerator_macs(config):
    return config.macs


def _lanes(config):
    return config.lanes


UNITS = {unit.name: unit for unit in [
    Unit("xnor-array", "lowbit.config.xnor_array:XNORArrayConfig",
         "lowbit.hw.xnor_array:XNORArray", "lowbit.sim.xnor_array_tb", "xnor_array",
         "lowbit.units:_array_macs"),
    Unit("lightnorm", "lowbit.config.lightnorm:LightNormConfig",
         "lowbit.hw.lightnorm:LightNorm", "lowbit.sim.lightnorm_tb", "lightnorm"),
    # ABC's -dff pass runs out of WebAssembly stack on the square-root datapath.
    Unit("bn-conventional", "lowbit.config.bn_conventional:BNConventionalConfig",
         "lowbit.hw.bn_conventional:BNConventional", "lowbit.sim.bn_conventional_tb",
         "bn_conventional", synth_commands=(("ice40", "synth_ice40"),)),
    Unit("lns-mac", "lowbit.config.lns:LNSMacConfig", "lowbit.hw.lns_mac:LNSMac",
         "lowbit.sim.lns_mac_tb", "lns_mac", "lowbit.units:_lanes"),
    # -dsp: the region checker's multiplier goes to SB_MAC16s (-dff would save ~2% of the
    # cells but takes Yosys over 30 min on the default configuration). ECP5: classic ABC
    # for LUT mapping, as abc9 fails an assertion (ABC_OPS_REINTEGRATE) on the default.
    Unit("accelerator", "lowbit.config.accelerator:AcceleratorConfig",
         "lowbit.hw.accelerator:Accelerator", "lowbit.sim.accelerator_tb", "accelerator",
         "lowbit.units:_accelerator_macs", synth_commands=(
             ("ice40", "synth_ice40 -dsp"),
             ("ecp5", "synth_ecp5 -top top -run :map_luts; "
                      "techmap -map +/lattice/latches_map.v; abc -lut 4 -dress; clean; "
                      "synth_ecp5 -run map_cells:"))),
    Unit("int8-mac", "lowbit.config.int8_mac:Int8MacConfig", "lowbit.hw.int8_mac:Int8Mac",
         "lowbit.sim.int8_mac_tb", "int8_mac", "lowbit.units:_lanes"),
    Unit("madam-update", "lowbit.config.madam:MadamUpdateConfig",
         "lowbit.hw.madam_update:MadamUpdate", "lowbit.sim.madam_update_tb", "madam_update",
         "lowbit.units:_lanes"),
]}


def get_unit(name):
    """Return the registered unit ``name`` or raise ``KeyError`` listing the known ones."""
    try:
        return UNITS[name]
    except KeyError:
        raise KeyError(f"unknown unit {name!r} (known: {', '.join(sorted(UNITS))})") from None


#: What each target's part offers: packed logic cells, and memory bits (iCE40: 30 EBRs of
#: 4 kbit and 4 SPRAMs of 256 kbit; ECP5-85F: 208 DP16KDs of 18 kbit).
DEVICES = {"ice40": {"part": "iCE40UP5K", "cells": 5280, "memory_bits": 30 * 4096 + 4 * 262144},
           "ecp5": {"part": "ECP5-85F", "cells": 83640, "memory_bits": 208 * 18432}}

#: Logic cells per lane, per channel and fixed, of the lane-parallel units, fitted to
#: figures measured with `lowbit synth` (the README's performance tables; on iCE40 also,
#: at 16 channels, lightnorm with blocks of 16, 2 and 1 (25,496, 6,145 and 4,766 cells) and
#: bn-conventional with blocks of 2 and 1 (6,346 and 4,085)). ``(unit, target, variant) ->
#: (per lane, per channel, fixed)``; a unit's lanes are its ``block`` (norm units) or
#: ``lanes``. bn-conventional keeps its statistics per channel in flip-flops; LightNorm
#: keeps them, and its parameters, in block RAM (:attr:`LightNormConfig.memory_bits`), so
#: its channels cost little logic: measured 3,946 cells at 64 channels in blocks of 2 on
#: iCE40, 20,127 at 1,024 in blocks of 16 (12-bit inputs) on ECP5. Its sign mode is
#: assumed to scale as the BFP mode does with channels (not measured since). A one-group
#: LightNorm keeps its statistics in flip-flops: :data:`_ONE_GROUP_PER_CHANNEL` applies.
_CELLS = {
    ("lightnorm", "ice40", "bfp"): (1382, 8, 649), ("lightnorm", "ecp5", "bfp"): (1258, 0, 0),
    ("lightnorm", "ice40", "sign"): (485, 8, 0), ("lightnorm", "ecp5", "sign"): (485, 8, 0),
    ("bn-conventional", "ice40", None): (2261, 120, -97),
    ("bn-conventional", "ecp5", None): (551, 0, 0),
    ("lns-mac", "ice40", None): (732, 0, 0), ("lns-mac", "ecp5", None): (754, 0, 0),
    ("int8-mac", "ice40", None): (236, 0, 0), ("int8-mac", "ecp5", None): (48, 0, 0),
}
#: Cells per channel of a one-group LightNorm, whose statistics are flip-flops (the fit of
#: the figures above from before the statistics moved to block RAM).
_ONE_GROUP_PER_CHANNEL = {("ice40", "bfp"): 171, ("ecp5", "bfp"): 167, ("ice40", "sign"): 60,
                          ("ecp5", "sign"): 60}
#: Cells per binary MAC of the XNOR array (binary-only, or 1..8-bit capable), measured.
_CELLS_PER_MAC = {("ice40", True): 4.6, ("ice40", False): 7.4, ("ecp5", True): 6.4,
                  ("ecp5", False): 8.4}
#: Refuse only what is clearly too big (the estimates are fits to a few measured points);
#: suggest only what clearly fits.
_REFUSE_ABOVE, _SUGGEST_BELOW = 1.2, 0.95


def _lanes_field(unit):
    return "block" if unit.name in ("lightnorm", "bn-conventional") else "lanes"


def estimate(unit, config, target):
    """``(logic cells, memory bits)`` that ``unit`` at ``config`` needs on ``target``,
    estimated from measured figures without running any tool (``None`` where lowbit has no
    estimate)."""
    if unit.name == "accelerator":
        bits = sum(config.depth(m) * config.lanes(m) * config.word for m in config.memories)
        return None, bits
    if unit.name == "xnor-array":
        binary = config.max_act_bits == 1 and config.max_weight_bits == 1
        return round(_CELLS_PER_MAC[target, binary] * config.macs), None
    variant = getattr(config, "output", None)
    bits = None
    if unit.name == "lightnorm":
        variant = "sign" if variant == "sign" else "bfp"
        bits = config.memory_bits
    figures = _CELLS.get((unit.name, target, variant))
    if figures is None:
        return None, bits
    per_lane, per_channel, fixed = figures
    if unit.name == "lightnorm" and config.groups == 1:
        per_channel = _ONE_GROUP_PER_CHANNEL[target, variant]
    return (per_lane * getattr(config, _lanes_field(unit))
            + per_channel * getattr(config, "channels", 0) + fixed), bits


def _smaller(unit, config, target, limit):
    """``(--set options, estimate)`` of the largest lane count (then channel count) that
    fits within ``limit`` cells, or ``None``."""
    field = _lanes_field(unit)
    tries = [{field: n} for n in range(getattr(config, field) - 1, 0, -1)]
    if hasattr(config, "channels"):
        tries += [{"channels": n, field: n} for n in range(config.channels - 1, 0, -1)]
    for changes in tries:
        try:
            smaller = config.replace(**changes)
        except (TypeError, ValueError):
            continue
        need = estimate(unit, smaller, target)[0]
        if need <= limit:
            return " ".join(f"--set {k}={v}" for k, v in changes.items()), need
    return None


def check_fits(unit, config, target):
    """Refuse (``ValueError``, before any tool runs) a configuration of ``unit`` that cannot
    fit ``target``: the message gives the estimate (:func:`estimate`), what the part has,
    and the option that changes it. ``None`` when it may fit."""
    device = DEVICES[target]
    cells, bits = estimate(unit, config, target)
    other = "ecp5" if target == "ice40" else None
    if bits is not None and bits > device["memory_bits"]:
        if unit.name != "accelerator":
            hint = "fewer --set channels=..."
        elif target == "ice40":
            hint = "--config configs/up5k.json (the iCE40UP5K's configuration: 1,114,112 bits)"
        else:
            hint = "smaller memory depths (--set weight_depth=...)"
        raise ValueError(
            f"{unit.name}: its memories hold {bits:,} bits, the {device['part']} has "
            f"{device['memory_bits']:,}; it cannot fit. Try {hint}"
            + (f", or --target {other}" if other else "") + " (--force runs the tools anyway)")
    if cells is None or cells <= _REFUSE_ABOVE * device["cells"]:
        return None
    hint = "a smaller --set rows=... --set cols=..."
    if unit.name != "xnor-array":
        found = _smaller(unit, config, target, _SUGGEST_BELOW * device["cells"])
        hint = f"{found[0]} (about {found[1]:,} cells)" if found else \
            f"a smaller --set {_lanes_field(unit)}"
    raise ValueError(
        f"{unit.name}: its configuration needs about {cells:,} logic cells (estimated from "
        f"measured figures), the {device['part']} has {device['cells']:,}; it cannot fit. "
        f"Try {hint}" + (f", or --target {other}" if other else "")
        + " (--force runs the tools anyway)")
