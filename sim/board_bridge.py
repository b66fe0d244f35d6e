"""cocotb module: a simulated board's UART pins connected to a host over a socket.

The board-level twin of :mod:`lowbit.sim.accelerator_bridge`. The host (a
:class:`lowbit.framing.FramedTransport` over :class:`lowbit.runtime.RTLTransport`'s
socket, i.e. the real serial runtime code) listens on ``127.0.0.1:$LOWBIT_BRIDGE_PORT``;
this module connects and plays the USB-serial adapter:

* bytes from the host are put on the design's ``rx`` pin as 8N1 frames at the simulated
  baud rate (:data:`lowbit.boards.core.SIM_BAUD`, 9 cycles a bit as on the iCEBreaker;
  ``$LOWBIT_LINE_BAUD`` sets the adapter's rate instead, to test a wrong one), back to
  back;
* the design's ``tx`` pin is watched for start bits, each bit sampled in its middle, and
  the bytes go to the host. A missing stop bit fails the test (the gateware's transmitter
  must never produce one).

Whatever damages bytes does so on the host side of the socket
(:class:`lowbit.sim.link_faults.FaultyChannel`), where a real line would. While nothing
moves, the design runs on (its timers count, as on a board); after
:data:`QUIET_CYCLES` quiet cycles the bridge waits a millisecond of real time per
:data:`IDLE_CYCLES` cycles for the host rather than spin a core.
"""

import os
import select
import socket

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, RisingEdge, Timer

from ..boards.core import SIM_BAUD, SIM_CLK_HZ
from .accelerator_bridge import _Link

__all__ = ["PERIOD_NS", "IDLE_CYCLES", "QUIET_CYCLES"]

PERIOD_NS = 1e9 / SIM_CLK_HZ
#: Cycles the design runs between looks at the socket while the host sends nothing.
IDLE_CYCLES = 256
#: Cycles without a byte either way after which the bridge also waits for the host.
QUIET_CYCLES = 200_000


class _State:
    quiet = 0           # cycles (about) since a byte last moved


async def _transmitter_to_host(dut, link, state, bit_ns):
    # Watch the design's tx pin: start bit, 8 data bits LSB first, stop bit.
    while True:
        await FallingEdge(dut.tx)
        await Timer(bit_ns / 2, unit="ns", round_mode="round")
        if dut.tx.value != 0:
            continue    # not a start bit (cannot happen with a correct transmitter)
        byte = 0
        for i in range(8):
            await Timer(bit_ns, unit="ns", round_mode="round")
            byte |= int(dut.tx.value) << i
        await Timer(bit_ns, unit="ns", round_mode="round")
        if dut.tx.value != 1:
            # At the right baud rate the design never sends this; at a wrong one the
            # adapter sees it, and passes on nothing, as a real one does.
            continue
        link.tx.append(byte)
        link.poll()
        state.quiet = 0


@cocotb.test()
async def bridge(dut):
    """Carry bytes between the host's socket and the design's UART until the host closes."""
    link = _Link(socket.create_connection(("127.0.0.1", int(os.environ["LOWBIT_BRIDGE_PORT"]))))
    cocotb.start_soon(Clock(dut.clk, PERIOD_NS, unit="ns").start())
    dut.rx.value = 1
    dut.rst.value = 1
    for _ in range(2):
        await RisingEdge(dut.clk)
    dut.rst.value = 0
    state = _State()
    # The adapter's bit time, to the simulator's step (SIM_BAUD is 9 cycles to within 1e-8).
    bit_ns = 1e9 / float(os.environ.get("LOWBIT_LINE_BAUD", SIM_BAUD))
    cocotb.start_soon(_transmitter_to_host(dut, link, state, bit_ns))
    try:
        while True:
            link.poll()
            if link.closed:
                break
            if link.rx:
                byte = link.rx.pop(0)
                for bit in [0] + [(byte >> i) & 1 for i in range(8)] + [1]:
                    dut.rx.value = bit
                    await Timer(bit_ns, unit="ns", round_mode="round")
                state.quiet = 0
                continue
            if state.quiet >= QUIET_CYCLES:
                select.select([link.sock], [], [], 0.001)
            await Timer(IDLE_CYCLES * PERIOD_NS, unit="ns")
            state.quiet += IDLE_CYCLES
    finally:
        link.poll()
        link.sock.close()
