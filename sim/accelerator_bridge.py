"""cocotb module that connects the accelerator's generated Verilog to a host over a socket:
the simulation side of :class:`lowbit.runtime.RTLTransport`.

The host listens on ``127.0.0.1:$LOWBIT_BRIDGE_PORT``; this module connects, resets the
design and then moves bytes both ways until the host closes the socket:

* bytes from the host become ``i_stream`` beats (``host_link_bits`` wide, consecutive
  bytes little-endian within a beat); a beat is taken at a rising edge where ``valid`` and
  ``ready`` are both high;
* ``o_stream`` beats (``ready`` held high: the host never back-pressures) go back to the
  host byte by byte.

The socket is never waited on: it is polled between clock cycles, so the design keeps
running (and its host-link timeout keeps counting) whether or not the host has sent
anything, as on a board. When neither stream can move, the bridge lets the simulator run
freely until the design raises ``o_stream.valid`` or ``i_stream.ready``, looking at the
socket every :data:`IDLE_CYCLES` cycles, so long computations and host-link timeouts cost
simulator time only. Once nothing has moved for much longer than the design's host-link
timeout (``timeout_cycles``, and at least :data:`DEEP_IDLE_AFTER` cycles) and the host has
sent nothing more, the design is almost surely waiting for a new program: the bridge then
waits for the host a little (:data:`DEEP_IDLE_SECONDS`) every :data:`DEEP_IDLE_CYCLES`
cycles rather than spin a core.

Ports: ``clk``, ``rst`` (active high, held for two cycles), ``i_stream__payload``,
``i_stream__valid``, ``i_stream__ready``, ``o_stream__payload``, ``o_stream__valid``,
``o_stream__ready``. The configuration comes from ``$LOWBIT_CONFIG`` (an
:class:`~lowbit.config.accelerator.AcceleratorConfig` as JSON).
"""

import json
import os
import select
import socket

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import First, ReadOnly, RisingEdge, Timer
from cocotb.utils import get_sim_time

from ..config.accelerator import AcceleratorConfig
from .cocotb_streams import reset

__all__ = ["PERIOD_NS", "IDLE_CYCLES", "DEEP_IDLE_AFTER", "DEEP_IDLE_SECONDS",
           "DEEP_IDLE_CYCLES"]

#: Clock period in nanoseconds (the timescale is 1 ns / 1 ps).
PERIOD_NS = 10
#: Cycles the design runs unobserved when neither stream can move before the bridge looks
#: at the socket again.
IDLE_CYCLES = 64
#: Once no beat has moved for the design's ``timeout_cycles`` and at least this many
#: cycles, with nothing from the host to pass on, the bridge waits up to
#: DEEP_IDLE_SECONDS for host bytes every DEEP_IDLE_CYCLES cycles.
DEEP_IDLE_AFTER = 1 << 16
DEEP_IDLE_SECONDS = 0.005
DEEP_IDLE_CYCLES = 1024


class _Link:
    # The socket, non-blocking, with a receive buffer (host -> design) and a send buffer.

    def __init__(self, sock):
        sock.setblocking(False)
        self.sock = sock
        self.rx = bytearray()
        self.tx = bytearray()
        self.closed = False

    def poll(self):
        """Take whatever the host has sent and send what the design produced, without
        waiting."""
        while not self.closed:
            try:
                chunk = self.sock.recv(1 << 16)
            except BlockingIOError:
                break
            except ConnectionError:
                chunk = b""
            if not chunk:
                self.closed = True
            self.rx += chunk
        while self.tx and not self.closed:
            try:
                sent = self.sock.send(self.tx)
            except BlockingIOError:
                break  # the host is not reading yet; the bytes wait here
            except ConnectionError:
                self.closed = True
                break
            del self.tx[:sent]


@cocotb.test()
async def bridge(dut):
    """Shuttle bytes between the host's socket and the design until the host closes."""
    config = AcceleratorConfig.from_dict(json.loads(os.environ["LOWBIT_CONFIG"]))
    beat = config.host_link_bits // 8
    link = _Link(socket.create_connection(("127.0.0.1", int(os.environ["LOWBIT_BRIDGE_PORT"]))))
    cocotb.start_soon(Clock(dut.clk, PERIOD_NS, unit="ns").start())
    await reset(dut)
    dut.o_stream__ready.value = 1
    offered = False   # i_stream.valid is high with the first `beat` bytes of link.rx
    cycles = 0        # cycles stepped one by one (a beat moved)
    quiet = 0         # cycles (about) since a beat last moved either way
    try:
        while True:
            # Outside bursts the socket is looked at every cycle; within a burst every few
            # hundred cycles (the receive buffer holds up to 64 KiB).
            if len(link.rx) < 4 * beat or cycles % 256 == 0:
                link.poll()
                if link.closed:
                    break
            if not offered:
                if len(link.rx) >= beat:
                    dut.i_stream__payload.value = int.from_bytes(link.rx[:beat], "little")
                    offered = True
                dut.i_stream__valid.value = int(offered)
            await ReadOnly()
            taken = offered and dut.i_stream__ready.value == 1
            out = dut.o_stream__valid.value == 1
            if out:
                link.tx += dut.o_stream__payload.value.to_unsigned().to_bytes(beat, "little")
            if not (taken or out):
                # Nothing moves this cycle: let the design run until it has something to
                # give or take, or a few cycles pass; resume after that edge or mid-cycle,
                # where the next beat can be set up safely before the following edge.
                deep = quiet >= max(config.timeout_cycles, DEEP_IDLE_AFTER) and not link.rx
                if deep:
                    # Long past its host-link timeout, the design is almost surely waiting
                    # for a new program: wait for the host a little instead of spinning a
                    # core (an output beat still ends the wait at once).
                    select.select([link.sock], [], [], DEEP_IDLE_SECONDS)
                link.poll()
                if link.closed:
                    break
                if not offered and len(link.rx) >= beat:
                    skip = 1
                else:
                    skip = DEEP_IDLE_CYCLES if deep else IDLE_CYCLES
                quiet += skip
                now = round(get_sim_time("ps"))
                period = PERIOD_NS * 1000
                wake = (now // period + skip) * period + period // 2
                triggers = [RisingEdge(dut.o_stream__valid), Timer(wake - now, unit="ps")]
                if offered:
                    triggers.append(RisingEdge(dut.i_stream__ready))
                await First(*triggers)
                continue
            await RisingEdge(dut.clk)
            cycles += 1
            quiet = 0
            if taken:
                del link.rx[:beat]
                offered = False
    finally:
        link.poll()
        link.sock.close()
    dut._log.info("host closed the link at %.0f ns", get_sim_time("ns"))
