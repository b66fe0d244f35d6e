"""cocotb testbench of the generated accelerator Verilog against the ISS.

Each test drives program byte streams (serialised by the same
:class:`~lowbit.runtime.Runtime` a board uses) into ``i_stream`` with random idle cycles,
takes ``o_stream`` with random back-pressure, and parses the records with the Runtime;
outputs, status and counters must equal the ISS's. Run it through
:func:`lowbit.sim.runner.run_cocotb` (``lowbit sim accelerator``), which passes the
configuration in ``$LOWBIT_CONFIG``; ``$LOWBIT_PROGRAMS`` sets the number of random
programs.
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
from ..runtime import AcceleratorError, ISSTransport, Runtime, Transport, TransportError
from . import accelerator_programs as P
from .cocotb_streams import reset

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

    async def exchange(self, data, quiet=400, limit=400_000):
        """Send ``data``; return the bytes received until the link has been quiet for
        ``quiet`` cycles after the last input beat. Fails after ``limit`` cycles (a hang)."""
        dut, rng = self.dut, self.rng
        out = bytearray()
        pos, silent, cycles = 0, 0, 0
        while pos < len(data) or silent < quiet:
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


async def _start(dut, seed, idle=0.2, stall=0.2):
    config = AcceleratorConfig.from_dict(json.loads(os.environ["LOWBIT_CONFIG"]))
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    await reset(dut)
    return config, Link(dut, config, random.Random(seed), idle, stall)


def _same(got, expected, what):
    assert len(got.outputs) == len(expected.outputs), what
    for g, e in zip(got.outputs, expected.outputs):
        assert g.tolist() == e.tolist(), what
    assert got.status == expected.status, what
    for name in ("xnor_busy", "norm_busy", "lns_busy", "instructions", "bytes_out"):
        assert got.stats[name] == expected.stats[name], (what, name)


async def _check(link, iss, program, inputs, what):
    runtime = Runtime(link.config, iss)
    data = runtime.serialise(program, inputs)
    expected = runtime.run(program, inputs)
    reply = await link.exchange(data)
    got = Runtime(link.config, _Replay(reply)).run_raw(data)
    _same(got, expected, what)
    return got


@cocotb.test()
async def programs_match_the_iss(dut):
    """Every instruction, layer chains and random programs, with idle and back-pressure."""
    config, link = await _start(dut, seed=1)
    rng = np.random.default_rng(1)
    start = time.perf_counter()
    with ISSTransport(config) as iss:
        await _check(link, iss, *P.load_store(config, rng), "load/store")
        for shape in [(3, 3, 40, 1, 0, 1, 0), (3, 5, 70, 2, 0, 1, 0), (2, 3, 33, 1, 0, 3, 1),
                      (5, 2, 64, 4, 1, 2, 0), (1, 1, 9, 8, 1, 8, 1)]:
            program, inputs, _ = P.gemm(config, rng, *shape, a_pad=1, c_pad=1)
            await _check(link, iss, program, inputs, f"gemm {shape}")
        if config.has_lightnorm:
            await _check(link, iss, *P.norm_threshold(config, rng, 3, 16), "norm")
        await _check(link, iss, *P.maxpool(config, rng, 2, 2, 3), "maxpool")
        await _check(link, iss, *P.binary_mlp(config, rng, 3, [64, 16, 16, 10]), "mlp")
        for i in range(int(os.environ.get("LOWBIT_PROGRAMS", "6"))):
            await _check(link, iss, *P.random_program(config, rng), f"random {i}")
    elapsed = time.perf_counter() - start
    dut._log.info("%d cycles, %.0f cycles/s", link.cycles, link.cycles / max(elapsed, 1e-9))


@cocotb.test()
async def faults_match_the_iss(dut):
    """Bad opcode, address past a buffer, nonzero unused bits, truncated streams: the same
    status and instruction index as the ISS, never a hang, and a clean next program."""
    config, link = await _start(dut, seed=2)
    rng = np.random.default_rng(2)
    program, inputs = P.load_store(config, rng)
    with ISSTransport(config) as iss:
        data = Runtime(config, iss).serialise(program, inputs)
        streams = [P.bad_opcode(config), P.bad_address(config), P.bad_unused_bits(config),
                   P.truncated(config, data, 1), P.truncated(config, data, 13)]
        for stream in streams:
            with iss_error() as expected:
                Runtime(config, iss).run_raw(stream)
            reply = await link.exchange(stream, quiet=config.timeout_cycles * 3)
            with iss_error() as got:
                Runtime(config, _Replay(reply)).run_raw(stream)
            assert (got.error.code, got.error.index) == (expected.error.code,
                                                         expected.error.index)
        await _check(link, iss, program, inputs, "after faults")


class iss_error:  # noqa: N801 - used as a context manager
    """Expect an AcceleratorError in the block; keep it as ``.error``."""

    def __enter__(self):
        self.error = None
        return self

    def __exit__(self, kind, value, tb):
        assert kind is AcceleratorError, f"expected an AcceleratorError, got {kind}"
        self.error = value
        return True
