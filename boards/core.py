"""What every board runs: the serial link (UART receiver and transmitter, framing bridge) and
the accelerator.

:class:`BoardCore` has two pins, ``rx`` and ``tx``; a board top connects them to the
board's USB-serial UART (:mod:`lowbit.boards.targets`), and the simulation test drives them
with a UART model (:mod:`lowbit.sim.board_bridge`). The accelerator sits behind
:class:`~lowbit.hw.uart_bridge.UARTBridge` and is reset by a host ``RESET`` frame (its
buffers keep their contents).
"""

from amaranth import Module, ResetInserter
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..config.accelerator import AcceleratorConfig
from ..framing import DEFAULT_BAUD, ident
from ..hw.accelerator import Accelerator
from ..hw.uart_bridge import SerialBridge, bridge_timing

__all__ = ["DEFAULT_BAUD", "BoardCore", "SIM_CLK_HZ", "SIM_BAUD", "SimBoard", "sim_unit"]


class BoardCore(wiring.Component):
    """UART pins to accelerator.

    Parameters
    ----------
    config : AcceleratorConfig
        The accelerator; its ``host_link_bits`` must be 8 (a UART carries bytes).
    clk_freq : int or float
        Clock frequency in Hz.
    baud : int
        Baud rate of the UART.

    Attributes
    ----------
    rx : In(1)
        UART line from the host (asynchronous).
    tx : Out(1)
        UART line to the host.
    bad_frame : Out(1)
        Pulses when a frame from the host fails its check (a LED shows link trouble).

    Raises
    ------
    ValueError
        If ``host_link_bits`` is not 8, or the baud rate does not suit the clock.
    """

    rx: In(1, init=1)
    tx: Out(1, init=1)
    bad_frame: Out(1)

    def __new__(cls, config, *, clk_freq, baud=DEFAULT_BAUD):
        # Checked before the object exists: a refused one leaves no unused elaboratable.
        if not isinstance(config, AcceleratorConfig):
            raise TypeError(f"config must be an AcceleratorConfig, not {config!r}")
        if config.host_link_bits != 8:
            raise ValueError(f"a board's UART carries bytes: host_link_bits must be 8, "
                             f"not {config.host_link_bits}")
        bridge_timing(clk_freq, baud)
        return super().__new__(cls)

    def __init__(self, config, *, clk_freq, baud=DEFAULT_BAUD):
        self.link = SerialBridge(clk_freq=clk_freq, baud=baud, ident=ident(config))
        self.config = config
        self.clk_freq = clk_freq
        self.baud = baud
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.link = link = self.link
        accelerator = Accelerator(self.config)
        m.submodules.accelerator = ResetInserter(link.accel_reset)(accelerator)
        wiring.connect(m, link.to_accel, accelerator.i_stream)
        wiring.connect(m, accelerator.o_stream, link.from_accel)
        m.d.comb += [link.rx.eq(self.rx), self.tx.eq(link.tx),
                     self.bad_frame.eq(link.bad_frame)]
        return m


#: The simulated board: a 100 MHz clock (10 ns, as lowbit's cocotb benches) and 9 clock
#: cycles per bit, the iCEBreaker's ratio (27 MHz at the link's 3 Mbaud).
SIM_CLK_HZ = 100_000_000
SIM_BAUD = round(SIM_CLK_HZ / 9)


class SimBoard(BoardCore):
    """:class:`BoardCore` at the simulation's clock and baud rate, built from the
    configuration alone (what :func:`lowbit.sim.runner.run_cocotb` needs)."""

    def __new__(cls, config):
        return super().__new__(cls, config, clk_freq=SIM_CLK_HZ, baud=SIM_BAUD)

    def __init__(self, config):
        super().__init__(config, clk_freq=SIM_CLK_HZ, baud=SIM_BAUD)


def sim_unit():
    """The simulated board as a :class:`lowbit.units.Unit` for the cocotb runner (not in
    the CLI's unit registry: it is a test target, not a generator)."""
    from ..units import Unit

    return Unit("board", "lowbit.config.accelerator:AcceleratorConfig",
                "lowbit.boards.core:SimBoard", "lowbit.sim.board_bridge", "board")
