"""The boards lowbit builds bitstreams for, on amaranth-boards platforms.

Each :class:`Board` names its amaranth-boards platform, its oscillator and the clock its
PLL makes from it (chosen below the accelerator's measured Fmax on the device, with
margin, and so that the link's 3 Mbaud is a whole number of cycles per bit; the build
checks the margin, :mod:`lowbit.boards.build`), its accelerator configuration file in
``boards/configs/`` (replace that file to put another configuration on the board) and how
openFPGALoader programs it. :class:`BoardTop` is the design: the PLL, the board's
USB-serial UART pins into :class:`~lowbit.boards.core.BoardCore`, and a LED that lights on
frame errors.
"""

import dataclasses
import math
from pathlib import Path

from amaranth import Elaboratable, Module, Signal
from amaranth.lib import io

from ..config.accelerator import AcceleratorConfig
from ..synth import SynthesisPlatform
from .core import DEFAULT_BAUD, BoardCore
from .pll import PLL, pll_setting

__all__ = ["Board", "BOARDS", "get_board", "BoardTop", "CLOCK_NET", "CONFIG_DIR",
           "TIMING_MARGIN"]

#: The share of the clock period that must be left as slack after place and route.
TIMING_MARGIN = 0.05

#: The PLL's output in the synthesised netlist: the top's ``sync`` clock. A constraint on
#: the PLL's own output signal (Amaranth's ``add_clock_constraint``) named a net that the
#: ECP5 netlist no longer has: nextpnr ignored it and used the clock it derives from the PLL.
CLOCK_NET = "clk"

#: Where each board's accelerator configuration lives.
CONFIG_DIR = Path(__file__).parent / "configs"


@dataclasses.dataclass(frozen=True)
class Board:
    """A board target.

    Parameters
    ----------
    name : str
        CLI name (``icebreaker``).
    title : str
        What it is, for messages.
    platform : str
        ``module:Class`` of the amaranth-boards platform.
    target : str
        ``ice40`` or ``ecp5`` (:data:`lowbit.synth.TARGETS`: device figures, SPRAM use).
    osc_mhz : float
        The board's oscillator.
    clk_resource : str
        The oscillator's platform resource.
    clock_mhz : float
        The clock the PLL makes for the design (``lowbit bitstream --clock-mhz`` overrides
        it; the PLL comes as close as its dividers allow, :mod:`lowbit.boards.pll`).
    loader_board : str
        openFPGALoader's ``-b`` name.
    bitstream : str
        The file name of the bitstream in the build folder.
    synth_opts, nextpnr_opts : str
        Extra Yosys ``synth_*`` and nextpnr options (the accelerator's own, see
        ``docs/accelerator_synthesis.md``).
    can_load_sram : bool
        Whether openFPGALoader can load the bitstream into the FPGA's configuration RAM
        (lost at power-off) instead of writing the SPI flash.
    """

    name: str
    title: str
    platform: str
    target: str
    osc_mhz: float
    clk_resource: str
    clock_mhz: float
    loader_board: str
    bitstream: str
    synth_opts: str = ""
    nextpnr_opts: str = ""
    can_load_sram: bool = False

    @property
    def config_file(self):
        return CONFIG_DIR / f"{self.name}.json"

    def pll(self, clock_mhz=None):
        """The PLL setting for ``clock_mhz`` (default: the board's :attr:`clock_mhz`)."""
        return pll_setting(self.target, self.osc_mhz, clock_mhz or self.clock_mhz)

    def load_config(self, path=None):
        """The accelerator configuration: ``path``, or the board's own file."""
        return AcceleratorConfig.load(path or self.config_file)

    def make_platform(self, *, pack=True):
        """The amaranth-boards platform, taught the synthesis flow's SPRAM rule (big
        buffers in iCE40 SPRAM, see :class:`lowbit.synth.SynthesisPlatform`). With
        ``pack`` false its build script stops after place and route (the bitstream is
        packed only once timing is checked, :func:`lowbit.boards.build.build_bitstream`)."""
        import importlib

        module, _, name = self.platform.partition(":")
        base = getattr(importlib.import_module(module), name)
        rule = SynthesisPlatform(self.target)
        members = {"use_spram": staticmethod(rule.use_spram)}
        if not pack:
            # The last command of the Lattice open-toolchain scripts is the packer.
            members["command_templates"] = property(
                lambda platform: base.command_templates.fget(platform)[:-1])
        platform_class = type(f"Lowbit{name}", (base,), members)
        return platform_class()


BOARDS = {board.name: board for board in [
    # iCE40UP5K: 27 MHz, 3 Mbaud at 9 cycles a bit (docs/boards.md). The board with the
    # 4x2x32 core and the bridge fills 94% of the device; nextpnr's router1 looped on it
    # (seeds 2 and 3 at 30 MHz, seed 1 at 27), and where it finished (seed 1, 30 MHz)
    # reached 31.22 MHz, short of the margin (31.58); router2 routes it in a minute, 31.69 /
    # 30.46 / 33.20 MHz at 27 MHz (seeds 1-3; 28.42 with the margin). -dsp puts the region
    # checker's multiplier in SB_MAC16s where it has one (as `lowbit synth accelerator`
    # does); -dff lets ABC map through flip-flops (168 LUT4 fewer).
    Board("icebreaker", "iCEBreaker (iCE40UP5K-SG48)",
          "amaranth_boards.icebreaker:ICEBreakerPlatform", "ice40", 12.0, "clk12", 27.0,
          "ice40_generic", "top.bin", synth_opts="-dsp -dff", nextpnr_opts="--router router2"),
    # ECP5: 45 MHz (the board with the default core places at 57.3 MHz; 3 Mbaud is 15
    # cycles a bit, exactly). Classic ABC LUT mapping (-noabc9; yosys 0.70's abc9
    # fails an assertion on the default accelerator) and router2 (router1 does not finish
    # it in 30 min).
    Board("ulx3s-85f", "ULX3S-85F (ECP5 LFE5U-85F)",
          "amaranth_boards.ulx3s:ULX3S_85F_Platform", "ecp5", 25.0, "clk25", 45.0, "ulx3s",
          "top.bit", synth_opts="-noabc9", nextpnr_opts="--router router2",
          can_load_sram=True),
]}


def get_board(name):
    """The board ``name``, or ``KeyError`` listing the known ones."""
    try:
        return BOARDS[name]
    except KeyError:
        raise KeyError(f"unknown board {name!r} (known: {', '.join(sorted(BOARDS))})") \
            from None


class BoardTop(Elaboratable):
    """The design of a board: the PLL, its UART pins, :class:`~lowbit.boards.core.BoardCore`,
    and LED 0 lit for a moment after each frame that failed its check.

    Parameters
    ----------
    board : Board
    config : AcceleratorConfig
    baud : int
        The UART's baud rate.
    clock_mhz : float, optional
        The PLL's target (default: the board's).

    Attributes
    ----------
    pll : lowbit.boards.pll.PLLSetting
        The PLL setting; the design runs at ``pll.out_mhz``.
    constraint_mhz : float
        The clock nextpnr is asked to meet on :data:`CLOCK_NET` (the build's constraint
        files, :func:`lowbit.boards.build.build_bitstream`): ``pll.out_mhz / (1 -
        TIMING_MARGIN)``, the slowest Fmax that leaves the margin. Placed for the PLL's
        clock itself, nextpnr stops improving once that is met: the iCEBreaker board
        reached 31.22 MHz for 30 MHz, short of the margin, where constrained at 33 MHz it
        placed at 32.5-35.4 MHz.

    Raises
    ------
    ValueError
        If the PLL cannot make the clock, or the UART the baud rate at it.
    """

    def __init__(self, board, config, *, baud=DEFAULT_BAUD, clock_mhz=None):
        self.board = board
        self.pll = board.pll(clock_mhz)
        self.constraint_mhz = self.pll.out_mhz / (1 - TIMING_MARGIN)
        self.core = BoardCore(config, clk_freq=self.pll.out_mhz * 1e6, baud=baud)

    def elaborate(self, platform):
        m = Module()
        m.submodules.pll = PLL(self.pll, self.board.clk_resource)
        m.domains += PLL.domains()
        # (the clock's constraint is the build's, on the netlist's `clk`: CLOCK_NET)
        m.submodules.core = core = self.core
        uart = platform.request("uart", 0, dir="-")
        m.submodules.rx_buffer = rx_buffer = io.Buffer("i", uart.rx)
        m.submodules.tx_buffer = tx_buffer = io.Buffer("o", uart.tx)
        m.d.comb += [core.rx.eq(rx_buffer.i), tx_buffer.o.eq(core.tx)]
        # A frame error lights LED 0 for about a tenth of a second: 2^k cycles, counted down
        # from 2^(k+1) - 1 while the top bit is set (a zero test of the whole counter was
        # the board's critical path).
        k = max(1, round(math.log2(self.pll.out_mhz * 1e5)))
        hold = Signal(k + 1)
        with m.If(core.bad_frame):
            m.d.sync += hold.eq((1 << (k + 1)) - 1)
        with m.Elif(hold[k]):
            m.d.sync += hold.eq(hold - 1)
        m.submodules.led = led = io.Buffer("o", platform.request("led", 0, dir="-"))
        m.d.comb += led.o.eq(hold[k])
        return m
