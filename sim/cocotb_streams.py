"""cocotb drivers for lowbit's stream ports (``i_stream`` in, ``o_stream`` out), with random
idle cycles and back-pressure; shared by every unit's testbench."""

from cocotb.triggers import ReadOnly, RisingEdge

__all__ = ["reset", "drive", "collect"]


async def reset(dut):
    """Hold reset for two cycles with both stream handshakes idle."""
    dut.i_stream__valid.value = 0
    dut.o_stream__ready.value = 0
    dut.rst.value = 1
    for _ in range(2):
        await RisingEdge(dut.clk)
    dut.rst.value = 0


async def drive(dut, payloads, rng, idle):
    """Offer ``payloads`` (raw ints) on ``i_stream`` in order, idling before a beat with
    probability ``idle``. A beat counts as taken when ``ready`` was high at the edge."""
    for bits in payloads:
        while rng.random() < idle:
            dut.i_stream__valid.value = 0
            await RisingEdge(dut.clk)
        dut.i_stream__payload.value = bits
        dut.i_stream__valid.value = 1
        while True:
            await ReadOnly()
            taken = dut.i_stream__ready.value == 1
            await RisingEdge(dut.clk)
            if taken:
                break
    dut.i_stream__valid.value = 0


async def collect(dut, count, rng, stall, timeout):
    """Take ``count`` raw payloads from ``o_stream``, dropping ``ready`` with probability
    ``stall``; return ``(payloads, cycles)``. Fails after ``timeout`` cycles: the hardware
    must never hang."""
    out, cycles = [], 0
    while len(out) < count:
        ready = rng.random() >= stall
        dut.o_stream__ready.value = int(ready)
        await ReadOnly()
        if ready and dut.o_stream__valid.value == 1:
            out.append(dut.o_stream__payload.value.to_unsigned())
        await RisingEdge(dut.clk)
        cycles += 1
        assert cycles <= timeout, f"hang: {len(out)} of {count} results after {cycles} cycles"
    dut.o_stream__ready.value = 0
    return out, cycles
