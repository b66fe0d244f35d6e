"""The accelerator's gateware on Amaranth's simulator, as a :class:`lowbit.runtime.Transport`.

The fast path for unit tests: the same :class:`~lowbit.runtime.Runtime` host code that runs
the ISS, the Verilog under cocotb and a board runs the Amaranth design directly, with
optional random idle cycles on the input and back-pressure on the output. The simulation
persists across reads (so do the buffers, as on the hardware); a read that does not get
its bytes within ``max_cycles`` cycles raises :class:`~lowbit.runtime.TransportError`
(the gateware must never hang).
"""

import collections
import random

from amaranth.sim import Simulator

from ..hw.accelerator import Accelerator
from ..runtime import Transport, TransportError

__all__ = ["AmaranthTransport"]

#: Simulated time per clock cycle (seconds); only ratios matter.
PERIOD = 1e-6


class AmaranthTransport(Transport):
    """Transport to an :class:`~lowbit.hw.accelerator.Accelerator` on Amaranth's simulator.

    Parameters
    ----------
    config : AcceleratorConfig
    idle, stall : float
        Probability of an idle input cycle before a beat / of dropping ``o_stream.ready``
        in a cycle.
    seed : int
        Seed of the idle and stall choices.
    max_cycles : int
        Cycles a read may wait for its bytes.
    vcd : str or None
        Write a waveform of the whole session here (closed with the transport).
    """

    def __init__(self, config, *, idle=0.0, stall=0.0, seed=0, max_cycles=200_000,
                 vcd=None):
        self.config = config
        self.dut = Accelerator(config)
        self.max_cycles = max_cycles
        self.cycles = 0
        self._rng = random.Random(seed)
        self._idle, self._stall = idle, stall
        self._in = collections.deque()
        self._out = bytearray()
        self._beat_bytes = config.host_link_bits // 8
        self._peek = None
        self._sim = Simulator(self._design())
        self._sim.add_clock(PERIOD)
        self._sim.add_testbench(self._link, background=True)
        self._time = 0.0
        self._vcd = None
        if vcd:
            self._vcd = self._sim.write_vcd(vcd)
            self._vcd.__enter__()

    def _design(self):
        """What the simulator runs: the accelerator (a subclass may elaborate it first, to
        watch the very submodules that are simulated)."""
        return self.dut

    async def _link(self, ctx):
        dut, rng = self.dut, self._rng
        while True:
            if self._peek is not None:
                data = self._peek
                self._peek = [ctx.get(data[i]) for i in range(data.depth)]
            beat = None
            if len(self._in) >= self._beat_bytes and rng.random() >= self._idle:
                beat = bytes(self._in[i] for i in range(self._beat_bytes))
                ctx.set(dut.i_stream.payload, int.from_bytes(beat, "little"))
            ctx.set(dut.i_stream.valid, beat is not None)
            ctx.set(dut.o_stream.ready, rng.random() >= self._stall)
            _, _, i_ready, o_valid, o_ready, o_payload = await ctx.tick().sample(
                dut.i_stream.ready, dut.o_stream.valid, dut.o_stream.ready,
                dut.o_stream.payload)
            self.cycles += 1
            if beat is not None and i_ready:
                for _ in range(self._beat_bytes):
                    self._in.popleft()
            if o_valid and o_ready:
                self._out += o_payload.to_bytes(self._beat_bytes, "little")

    def write(self, data):
        self._check_open()
        data = bytes(data)
        if len(data) % self._beat_bytes:
            raise ValueError(f"a {self.config.host_link_bits}-bit link sends whole beats: "
                             f"{len(data)} bytes is not a multiple of {self._beat_bytes}")
        self._in.extend(data)

    def read(self, n):
        self._check_open(n)
        waited = 0
        while len(self._out) < n:
            if waited >= self.max_cycles:
                raise TransportError(f"the gateware sent {len(self._out)} of the {n} bytes "
                                     f"the host waits for in {self.max_cycles} cycles")
            step = 256
            self._time += step * PERIOD
            self._sim.run_until(self._time)
            waited += step
        out = bytes(self._out[:n])
        del self._out[:n]
        return out

    def wait(self, cycles):
        """Let the gateware run ``cycles`` cycles with nothing new on the link (after an
        error it discards input until the link has been quiet for ``timeout_cycles``)."""
        self._check_open()
        self._time += cycles * PERIOD
        self._sim.run_until(self._time)

    def memory(self, name):
        """The contents of the gateware's memory ``name`` now, as a ``(depth, lanes)`` array
        of ``uint64`` (the ISS's :attr:`~lowbit.iss.ISS.memories` form)."""
        import numpy as np

        self._check_open()
        self._peek = self.dut.memories[name].data
        self.wait(1)
        values, self._peek = self._peek, None
        lanes, word = self.config.lanes(name), self.config.word
        return np.array([[(v >> (word * j)) & ((1 << word) - 1) for j in range(lanes)]
                         for v in values], dtype=np.uint64)

    def close(self):
        if self._vcd is not None and not self.closed:
            self._vcd.__exit__(None, None, None)
        super().close()
