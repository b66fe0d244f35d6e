"""The UART on Amaranth's simulator against a bit-level line model written here: bytes
sent by UARTTx are decoded from the line, bytes put on the line are received by UARTRx,
framing errors are flagged and glitches ignored."""

import random

import pytest
from amaranth.sim import Simulator

from lowbit.hw.uart import UARTRx, UARTTx, baud_divisor

CLK = 1_000_000
BAUD = 125_000          # 8 cycles per bit
DIV = 8


def test_baud_divisor():
    assert baud_divisor(12_000_000, 115_200) == 104   # 115384 baud: 0.16% fast
    assert baud_divisor(25_000_000, 115_200) == 217
    assert baud_divisor(CLK, BAUD) == DIV


@pytest.mark.parametrize("clk,baud,message", [
    (12_000_000, 4_000_000, "UART baud rate 4000000 is too high for a 12 MHz clock: at "
                            "least 4 clock cycles per bit are needed"),
    (1_000_000, 180_000, "UART baud rate 180000 is 7.4% off at 1 MHz (divisor 6); at most "
                         "2% is allowed"),
    (0, 9600, "UART clk_freq must be a positive number, not 0"),
    (1e6, True, "UART baud must be a positive number, not True"),
])
def test_baud_divisor_errors(clk, baud, message):
    with pytest.raises(ValueError) as info:
        baud_divisor(clk, baud)
    assert str(info.value) == message


def line_bits(byte, stop=1):
    """Start bit, 8 data bits LSB first, stop bit."""
    return [0] + [(byte >> i) & 1 for i in range(8)] + [stop]


def test_tx_sends_8n1_with_random_idle():
    dut = UARTTx(clk_freq=CLK, baud=BAUD)
    rng = random.Random(1)
    data = [rng.randrange(256) for _ in range(40)] + [0x00, 0xFF, 0x55]
    decoded = []

    async def producer(ctx):
        for byte in data:
            for _ in range(rng.choice([0, 0, 3, 17])):
                await ctx.tick()
            ctx.set(dut.i_stream.payload, byte)
            ctx.set(dut.i_stream.valid, 1)
            await ctx.tick().until(dut.i_stream.ready)
            ctx.set(dut.i_stream.valid, 0)

    async def line(ctx):
        # Find each start edge, then sample every bit in its middle.
        while len(decoded) < len(data):
            await ctx.tick().until(~dut.tx)
            bits = []
            for i in range(10):
                for _ in range(DIV // 2 if i == 0 else DIV):
                    await ctx.tick()
                bits.append(ctx.get(dut.tx))
            assert bits[0] == 0 and bits[9] == 1, bits
            decoded.append(sum(b << i for i, b in enumerate(bits[1:9])))
            for _ in range(DIV // 2 - 1):
                await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(producer, background=True)
    sim.add_testbench(line)
    sim.run()
    assert decoded == data
    assert dut.divisor == DIV


def run_rx(events, *, divisor=DIV, extra=40):
    """Drive ``rx`` with ``events`` (a list of line levels, one per clock cycle) and collect
    (received bytes, framing-error pulses)."""
    dut = UARTRx(clk_freq=CLK, baud=CLK // divisor)
    got, errors = [], []

    async def drive(ctx):
        for level in events + [1] * extra:
            ctx.set(dut.rx, level)
            await ctx.tick()

    async def collect(ctx):
        ctx.set(dut.o_stream.ready, 1)
        async for _, _, valid, payload, error in ctx.tick().sample(
                dut.o_stream.valid, dut.o_stream.payload, dut.error):
            if valid:
                got.append(payload)
            if error:
                errors.append(len(got))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(collect, background=True)
    sim.add_testbench(drive)
    sim.run()
    return got, errors


def waveform(frames, *, divisor=DIV, skew=0):
    """Line levels for a list of (byte, stop bit) with one idle bit between bytes; each bit
    lasts ``divisor + skew`` cycles (a sender whose baud rate is a little off)."""
    events = [1] * 5
    for byte, stop in frames:
        for bit in line_bits(byte, stop):
            events += [bit] * (divisor + skew)
        events += [1] * divisor
    return events


def test_rx_receives_bytes():
    rng = random.Random(2)
    data = [rng.randrange(256) for _ in range(30)] + [0x00, 0xFF]
    got, errors = run_rx(waveform([(b, 1) for b in data]))
    assert got == data
    assert errors == []


@pytest.mark.parametrize("skew", [-1, 1])
def test_rx_tolerates_a_slightly_wrong_baud_rate(skew):
    # 1 cycle in 32 is 3%: mid-bit sampling still lands inside every bit, stop bit included.
    data = [0x00, 0xA5, 0xFF, 0x3C]
    got, _ = run_rx(waveform([(b, 1) for b in data], divisor=32, skew=skew), divisor=32)
    assert got == data


def test_rx_flags_a_framing_error_and_drops_the_byte():
    got, errors = run_rx(waveform([(0x12, 1), (0x34, 0), (0x56, 1)]))
    assert got == [0x12, 0x56]
    assert errors == [1]            # after the first byte, before the third


def test_rx_ignores_a_glitch():
    # A low pulse shorter than half a bit is not a start bit.
    events = [1] * 5 + [0] * (DIV // 2 - 2) + [1] * (3 * DIV) + waveform([(0x81, 1)])
    got, errors = run_rx(events)
    assert got == [0x81]
    assert errors == []


def test_tx_to_rx_loopback():
    tx, rx = UARTTx(clk_freq=CLK, baud=BAUD), UARTRx(clk_freq=CLK, baud=BAUD)
    from amaranth import Module
    m = Module()
    m.submodules.tx, m.submodules.rx = tx, rx
    m.d.comb += rx.rx.eq(tx.tx)
    data = list(range(0, 256, 7))
    got = []

    async def producer(ctx):
        for byte in data:
            ctx.set(tx.i_stream.payload, byte)
            ctx.set(tx.i_stream.valid, 1)
            await ctx.tick().until(tx.i_stream.ready)
        ctx.set(tx.i_stream.valid, 0)

    async def consumer(ctx):
        ctx.set(rx.o_stream.ready, 1)
        while len(got) < len(data):
            _, _, valid, payload = await ctx.tick().sample(rx.o_stream.valid,
                                                           rx.o_stream.payload)
            if valid:
                got.append(payload)

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(producer, background=True)
    sim.add_testbench(consumer)
    sim.run()
    assert got == data


def test_components_refuse_a_bad_baud_rate():
    for component in (UARTTx, UARTRx):
        with pytest.raises(ValueError, match="^UART baud rate 4000000 is too high for a 12 MHz "
                                             "clock"):
            component(clk_freq=12_000_000, baud=4_000_000)


def fractional_waveform(data, cycles_per_bit, phase=0.0):
    """Line levels for ``data`` sent back to back by a sender whose bits last a fractional
    number of clock cycles (a baud rate that is not a whole divisor of the clock): bit k of
    the stream starts at cycle ``round(phase + k * cycles_per_bit)``."""
    bits = [bit for byte in data for bit in line_bits(byte, 1)]
    start = 10
    events = [1] * start
    for k, bit in enumerate(bits):
        end = start + round(phase + (k + 1) * cycles_per_bit)
        events += [bit] * (end - len(events))
    return events


@pytest.mark.parametrize("clk,baud,phase", [
    (24_000_000, 3_000_000, 0.0),            # 8 cycles a bit, exact (a 24 MHz iCEBreaker)
    (24_000_000, 3_000_000 * 1.02, 0.5),     # a sender 2% fast
    (24_000_000, 3_000_000 / 1.02, 0.3),     # a sender 2% slow
    (250_000_000 / 7, 3_000_000, 0.7),       # the ULX3S's 35.71 MHz: 11.9 cycles a bit
])
def test_rx_at_the_boards_ratios_with_the_divider_error(clk, baud, phase):
    # The receiver's divisor is round(clk / 3 Mbaud); the sender's bits are clk / baud
    # cycles, not a whole number: mid-bit sampling must land inside every bit of a stream
    # of back-to-back bytes (each start edge re-synchronises the receiver).
    divisor = baud_divisor(clk, 3_000_000)
    data = [0x00, 0xFF, 0x55, 0xAA, 0x5A, 0x01, 0x80] + list(range(3, 256, 17))
    dut = UARTRx(clk_freq=clk, baud=3_000_000)
    assert dut.divisor == divisor
    events = fractional_waveform(data, clk / baud, phase) + [1] * 40
    got, bits = [], []

    async def drive(ctx):
        for level in events:
            ctx.set(dut.rx, level)
            await ctx.tick()

    async def collect(ctx):
        ctx.set(dut.o_stream.ready, 1)
        async for _, _, valid, payload, bit_valid, bit in ctx.tick().sample(
                dut.o_stream.valid, dut.o_stream.payload, dut.bit_valid, dut.bit):
            if valid:
                got.append(payload)
            if bit_valid:
                bits.append(bit)

    sim = Simulator(dut)
    sim.add_clock(1 / clk)
    sim.add_testbench(collect, background=True)
    sim.add_testbench(drive)
    sim.run()
    assert got == data
    # The data bits as the CRC sees them: LSB first, start and stop bits left out.
    assert bits == [(byte >> i) & 1 for byte in data for i in range(8)]


def test_tx_reports_its_data_bits():
    dut = UARTTx(clk_freq=24_000_000, baud=3_000_000)
    data = [0x5A, 0x01, 0xFE]
    bits = []

    async def producer(ctx):
        for byte in data:
            ctx.set(dut.i_stream.payload, byte)
            ctx.set(dut.i_stream.valid, 1)
            await ctx.tick().until(dut.i_stream.ready)
        ctx.set(dut.i_stream.valid, 0)

    async def collect(ctx):
        while len(bits) < 8 * len(data):
            _, _, bit_valid, bit = await ctx.tick().sample(dut.bit_valid, dut.bit)
            if bit_valid:
                bits.append(bit)

    sim = Simulator(dut)
    sim.add_clock(1 / 24e6)
    sim.add_testbench(producer, background=True)
    sim.add_testbench(collect)
    sim.run()
    assert bits == [(byte >> i) & 1 for byte in data for i in range(8)]
