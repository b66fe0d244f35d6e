"""Stream drivers for Amaranth's simulator with random idle cycles and back-pressure."""

import random

from amaranth import Fragment
from amaranth.sim import Simulator

__all__ = ["send", "receive", "run_stream_test"]


async def send(ctx, port, payloads, *, rng, idle=0.0):
    """Put ``payloads`` (ints in the payload layout's bit order) on ``port`` in order,
    inserting an idle cycle before a beat with probability ``idle``."""
    for bits in payloads:
        while rng.random() < idle:
            ctx.set(port.valid, 0)
            await ctx.tick()
        ctx.set(port.payload.as_value(), bits)
        ctx.set(port.valid, 1)
        await ctx.tick().until(port.ready)
    ctx.set(port.valid, 0)


async def receive(ctx, port, count, *, rng, stall=0.0, timeout=100_000):
    """Take ``count`` payloads from ``port`` (as raw ints), deasserting ``ready`` with
    probability ``stall`` per cycle. Return ``(payloads, cycles)``; raise ``TimeoutError``
    after ``timeout`` cycles (the hardware must never hang)."""
    out, cycles = [], 0
    while len(out) < count:
        ready = rng.random() >= stall
        ctx.set(port.ready, ready)
        if ready and ctx.get(port.valid):
            out.append(ctx.get(port.payload.as_value()))
        await ctx.tick()
        cycles += 1
        if cycles > timeout:
            raise TimeoutError(f"got {len(out)} of {count} results in {timeout} cycles")
    ctx.set(port.ready, 0)
    return out, cycles


def run_stream_test(dut, inputs, n_outputs, *, seed=0, idle=0.0, stall=0.0, vcd=None,
                    timeout=100_000, platform=None):
    """Simulate ``dut`` (``i_stream``/``o_stream``) on ``inputs``; return the raw outputs
    and the number of clock cycles the run took. ``platform`` is what ``dut`` elaborates
    with (e.g. :class:`lowbit.hw.popcount.PopcountEmulation`)."""
    rng = random.Random(seed)
    result = {}
    sim = Simulator(dut if platform is None else Fragment.get(dut, platform))
    sim.add_clock(1e-6)

    async def producer(ctx):
        await send(ctx, dut.i_stream, inputs, rng=rng, idle=idle)

    async def consumer(ctx):
        result["outputs"], result["cycles"] = await receive(
            ctx, dut.o_stream, n_outputs, rng=rng, stall=stall, timeout=timeout)

    sim.add_testbench(producer, background=True)
    sim.add_testbench(consumer)
    if vcd:
        with sim.write_vcd(vcd):
            sim.run()
    else:
        sim.run()
    return result["outputs"], result["cycles"]
