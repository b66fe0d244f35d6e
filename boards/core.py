"""What every board runs: UART receiver and transmitter, the framing bridge, the accelerator.

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
from ..hw.accelerator import Accelerator
from ..hw.uart import UARTRx, UARTTx, baud_divisor
from ..hw.uart_bridge import UARTBridge

__all__ = ["DEFAULT_BAUD", "BoardCore", "bridge_timing", "SIM_CLK_HZ", "SIM_BAUD",
           "SimBoard", "sim_unit"]

#: The baud rate of bitstreams unless ``lowbit bitstream --baud`` says otherwise.
DEFAULT_BAUD = 115_200


def bridge_timing(clk_freq, baud, *, resend_s=0.25):
    """The bridge's cycle counts for a clock and baud rate: ``gap_cycles`` 32 byte times
    (a host's frame arrives back to back; USB-serial adapters leave only short gaps),
    ``flush_cycles`` two byte times (accelerator output comes in bursts of a cycle or so
    per byte), ``resend_cycles`` ``resend_s`` seconds (above a USB-serial round trip)."""
    byte = 10 * baud_divisor(clk_freq, baud)
    return {"gap_cycles": 32 * byte, "flush_cycles": 2 * byte,
            "resend_cycles": max(int(clk_freq * resend_s), 64 * byte)}


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
    resend_cycles : int, optional
        Override of :func:`bridge_timing`'s value (the simulation uses a shorter one).

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

    def __init__(self, config, *, clk_freq, baud=DEFAULT_BAUD, resend_cycles=None):
        try:
            if not isinstance(config, AcceleratorConfig):
                raise TypeError(f"config must be an AcceleratorConfig, not {config!r}")
            if config.host_link_bits != 8:
                raise ValueError(f"a board's UART carries bytes: host_link_bits must be 8, "
                                 f"not {config.host_link_bits}")
            self.timing = bridge_timing(clk_freq, baud)
        except (TypeError, ValueError):
            self._MustUse__silence = True  # never built: no "created but never used"
            raise
        self.config = config
        self.clk_freq = clk_freq
        self.baud = baud
        if resend_cycles is not None:
            self.timing["resend_cycles"] = resend_cycles
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.uart_rx = rx = UARTRx(clk_freq=self.clk_freq, baud=self.baud)
        m.submodules.uart_tx = tx = UARTTx(clk_freq=self.clk_freq, baud=self.baud)
        m.submodules.bridge = bridge = UARTBridge(**self.timing)
        accelerator = Accelerator(self.config)
        m.submodules.accelerator = ResetInserter(bridge.accel_reset)(accelerator)
        wiring.connect(m, rx.o_stream, bridge.rx)
        wiring.connect(m, bridge.tx, tx.i_stream)
        wiring.connect(m, bridge.to_accel, accelerator.i_stream)
        wiring.connect(m, accelerator.o_stream, bridge.from_accel)
        m.d.comb += [rx.rx.eq(self.rx), self.tx.eq(tx.tx), bridge.rx_error.eq(rx.error),
                     self.bad_frame.eq(bridge.bad_frame)]
        return m


#: The simulated board: a 100 MHz clock (10 ns, as lowbit's cocotb benches) and 8 clock
#: cycles per bit, so a byte takes 80 cycles.
SIM_CLK_HZ = 100_000_000
SIM_BAUD = SIM_CLK_HZ // 8
#: The simulated bridge resends unacknowledged output after this many cycles (the board's
#: quarter second would be 25 million simulated cycles).
SIM_RESEND_CYCLES = 200_000


class SimBoard(BoardCore):
    """:class:`BoardCore` at the simulation's clock and baud rate, built from the
    configuration alone (what :func:`lowbit.sim.runner.run_cocotb` needs)."""

    def __init__(self, config):
        super().__init__(config, clk_freq=SIM_CLK_HZ, baud=SIM_BAUD,
                         resend_cycles=SIM_RESEND_CYCLES)


def sim_unit():
    """The simulated board as a :class:`lowbit.units.Unit` for the cocotb runner (not in
    the CLI's unit registry: it is a test target, not a generator)."""
    from ..units import Unit

    return Unit("board", "lowbit.config.accelerator:AcceleratorConfig",
                "lowbit.boards.core:SimBoard", "lowbit.sim.board_bridge", "board")
