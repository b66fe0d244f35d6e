"""cocotb testbench of the generated accelerator Verilog against the ISS.

Random race-free programs (:mod:`lowbit.sim.random_programs`) go in with an ideal host (a
beat every cycle, every output beat taken): the reply must be the ISS's byte for byte,
cycles and counters included. A few more go in with random idle input cycles and output
back-pressure: then everything but the cycle count must match. Random raw instruction
words follow (status, outputs). Run it through :func:`lowbit.sim.runner.run_cocotb`, which
passes the configuration in ``$LOWBIT_CONFIG``; ``$LOWBIT_PROGRAMS`` and ``$LOWBIT_WORDS``
set the numbers of random programs and words.
"""

import json
import os
import random
import time

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge

from ..config.accelerator import AcceleratorConfig
from ..isa import STATUS_RECORD, Status
from ..iss import ISS
from ..runtime import Transport, TransportError
from .cocotb_streams import reset
from .random_programs import random_program, stream, word_stream

__all__ = []


class _Replay(Transport):
    """The bytes a simulation produced, read back by the Runtime's record parser."""

    def __init__(self, data):
        self._data = bytearray(data)

    def write(self, data):
        pass

    def read(self, n):
        if len(self._data) < n:
            raise TransportError(f"the design sent {len(self._data)} more bytes, the host "
                                 f"waits for {n}")
        out = bytes(self._data[:n])
        del self._data[:n]
        return out


class Link:
    """Drives one byte stream through the DUT and collects its reply."""

    def __init__(self, dut, config, rng, idle, stall):
        self.dut, self.config, self.rng = dut, config, rng
        self.idle, self.stall = idle, stall
        self.beat = config.host_link_bits // 8
        self.cycles = 0

    async def exchange(self, data, quiet=400, limit=400_000, expect=None):
        """Send ``data``; return the bytes received until ``expect`` bytes have arrived
        and the link has been quiet for ``quiet`` cycles after the last input beat. Fails
        after ``limit`` cycles (a hang)."""
        dut, rng = self.dut, self.rng
        out = bytearray()
        pos, silent, cycles = 0, 0, 0
        while pos < len(data) or silent < quiet or (expect and len(out) < expect):
            offer = pos < len(data) and rng.random() >= self.idle
            if offer:
                chunk = data[pos:pos + self.beat]
                dut.i_stream__payload.value = int.from_bytes(chunk, "little")
            dut.i_stream__valid.value = int(offer)
            ready = rng.random() >= self.stall
            dut.o_stream__ready.value = int(ready)
            await ReadOnly()
            taken = offer and dut.i_stream__ready.value == 1
            sent = ready and dut.o_stream__valid.value == 1
            if sent:
                out += dut.o_stream__payload.value.to_unsigned().to_bytes(self.beat, "little")
            await RisingEdge(dut.clk)
            cycles += 1
            if taken:
                pos += self.beat
            silent = 0 if (sent or pos < len(data)) else silent + 1
            assert cycles <= limit, f"hang: {cycles} cycles, {pos} of {len(data)} bytes sent"
        dut.i_stream__valid.value = 0
        self.cycles += cycles
        return bytes(out)


async def _start(dut, seed, idle=0.0, stall=0.0):
    config = AcceleratorConfig.from_dict(json.loads(os.environ["LOWBIT_CONFIG"]))
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    await reset(dut)
    return config, Link(dut, config, random.Random(seed), idle, stall)


def _without_timing(reply):
    # The reply with the status record's cycle and tile-hold counts zeroed: both depend on
    # when the host's beats arrive (a GEMM that a slow host delays may find the result
    # stage already free); the array's beats do not.
    size = STATUS_RECORD.size // 8
    record = int.from_bytes(reply[-size:], "little")
    for name in ("cycles", "tile_holds"):
        field = STATUS_RECORD[name]
        record &= ~(((1 << field.width) - 1) << field.offset)
    return reply[:-size] + record.to_bytes(size, "little")


@cocotb.test()
async def raw_words_match_the_iss(dut):
    """Random raw instruction words, each a program with HALT: the ISS's reply (cycles for
    OK and ILLEGAL), never a hang; after an error the next program runs cleanly. Runs
    first: the ISS starts from zeroed memories, and so must the design."""
    config, link = await _start(dut, seed=2)
    rng = np.random.default_rng(2)
    iss = ISS(config)
    for i in range(int(os.environ.get("LOWBIT_WORDS", "300"))):
        word, data = word_stream(config, rng)
        expected = iss.run_stream(data)
        reply = await link.exchange(data, quiet=config.timeout_cycles + 8,
                                    expect=len(expected))
        assert reply == expected, f"word {i}: {word:#x}"


@cocotb.test()
async def programs_match_the_iss(dut):
    """Random race-free programs: the ISS's reply byte for byte, cycles included."""
    config, link = await _start(dut, seed=1)
    rng = np.random.default_rng(1)
    iss = ISS(config)
    start = time.perf_counter()
    count = int(os.environ.get("LOWBIT_PROGRAMS", "200"))
    for i in range(count):
        program, inputs = random_program(config, rng, instructions=int(rng.integers(6, 18)))
        data = stream(program, inputs)
        expected = iss.run_stream(data)
        assert iss.results[0].code == Status.OK
        reply = await link.exchange(data, quiet=16, expect=len(expected))
        assert reply == expected, f"program {i}"
    # With idle input cycles and output back-pressure: all but the timing counters.
    link.idle = link.stall = 0.2
    for i in range(max(count // 20, 2)):
        program, inputs = random_program(config, rng)
        data = stream(program, inputs)
        expected = iss.run_stream(data)
        reply = await link.exchange(data, quiet=16, expect=len(expected))
        assert _without_timing(reply) == _without_timing(expected), f"stalled program {i}"
    elapsed = time.perf_counter() - start
    dut._log.info("%d programs, %d cycles, %.0f cycles/s", count, link.cycles,
                  link.cycles / max(elapsed, 1e-9))
