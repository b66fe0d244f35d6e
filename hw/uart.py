"""A small UART: 8 data bits, no parity, one stop bit (8N1), LSB first, idle high.

:class:`UARTTx` sends the bytes of its ``i_stream`` on ``tx``; :class:`UARTRx` samples
``rx`` through a two-flip-flop synchroniser, checks the start bit at mid-bit, samples each
data bit in the middle of its bit time and reports a missing stop bit as a framing error.
Both take the clock frequency and the baud rate and derive the divisor (clock cycles per
bit) with :func:`baud_divisor`.

Both are built to be small (they are most of a board's serial link, ``docs/boards.md``):
every register starts at zero, because an iCE40 flip-flop powers up at zero and one that
must start at one costs an inverter on each side; so the line levels, which idle high,
are kept inverted.
"""

from amaranth import Cat, Module, Signal
from amaranth.lib import cdc, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["baud_divisor", "UARTTx", "UARTRx"]

#: Largest baud-rate error :func:`baud_divisor` accepts: a receiver samples the last bit
#: (9.5 bit times after the start edge) within its half-bit margin up to about 5% of
#: combined error; 2% leaves the other side its share.
MAX_BAUD_ERROR = 0.02


def baud_divisor(clk_freq, baud):
    """Clock cycles per bit for ``baud`` at ``clk_freq`` Hz, rounded.

    Raises
    ------
    ValueError
        If the divisor is below 4 (the receiver's mid-bit sampling needs a few cycles per
        bit) or the rounded divisor misses ``baud`` by more than 2%.
    """
    for name, value in (("clk_freq", clk_freq), ("baud", baud)):
        if not (isinstance(value, (int, float)) and not isinstance(value, bool)
                and value > 0):
            raise ValueError(f"UART {name} must be a positive number, not {value!r}")
    divisor = round(clk_freq / baud)
    if divisor < 4:
        raise ValueError(f"UART baud rate {baud} is too high for a {clk_freq / 1e6:g} MHz "
                         f"clock: at least 4 clock cycles per bit are needed")
    error = abs(clk_freq / divisor - baud) / baud
    if error > MAX_BAUD_ERROR:
        raise ValueError(f"UART baud rate {baud} is {error:.1%} off at {clk_freq / 1e6:g} "
                         f"MHz (divisor {divisor}); at most {MAX_BAUD_ERROR:.0%} is allowed")
    return divisor


def _bit_timer(m, timer, divisor, hold, hold_value):
    # A divide-by-``divisor`` counter as a table (small counters mapped as adders take a
    # carry chain whose look-up tables cannot absorb anything else); returns "the bit
    # time ends". While ``hold`` it stays at ``hold_value``.
    with m.If(hold):
        m.d.sync += timer.eq(hold_value)
    with m.Else():
        with m.Switch(timer):
            for value in range(divisor):
                with m.Case(value):
                    m.d.sync += timer.eq(value - 1 if value else divisor - 1)
    return timer == 0


class UARTTx(wiring.Component):
    """UART transmitter.

    Parameters
    ----------
    clk_freq : int or float
        Clock frequency in Hz.
    baud : int
        Bits per second.

    Attributes
    ----------
    i_stream : In(stream.Signature(8))
        Bytes to send; one is taken when the line is idle, and sent as start bit, 8 data
        bits LSB first and a stop bit.
    substitute : In(1)
        Taken with each byte: when high, the byte's data bits are not sent; instead each
        data bit time carries ``sub_bit`` as it is then. A bit-serial CRC whose next bit is
        ``sub_bit`` sends itself this way, with no byte to load
        (:class:`lowbit.hw.uart_bridge.BitCRC`).
    sub_bit : In(1)
        See ``substitute``.
    tx : Out(1)
        The line (idle high); registered, a cycle after ``bit``.
    bit, bit_valid : Out(1)
        Each data bit as it is sent (``bit_valid`` high for a cycle at the end of its bit
        time), for a CRC folded bit by bit.
    divisor : int
        Clock cycles per bit.

    Raises
    ------
    ValueError
        See :func:`baud_divisor`.
    """

    i_stream: In(stream.Signature(8))
    substitute: In(1)
    sub_bit: In(1)
    tx: Out(1, init=1)
    bit: Out(1)
    bit_valid: Out(1)

    def __new__(cls, *, clk_freq, baud):
        # Checked before the object exists: a refused one leaves no unused elaboratable.
        baud_divisor(clk_freq, baud)
        return super().__new__(cls)

    def __init__(self, *, clk_freq, baud):
        self.divisor = baud_divisor(clk_freq, baud)
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        # Stop bit, data and start bit, shifted out LSB first with zeros coming in behind:
        # all zero is idle, the stop bit alone is the last bit time, and the stop bit still
        # at the top is the start bit time; no bit counter.
        frame = Signal(10)
        # (The timer and the substitution flag need no reset: the timer is held while idle,
        # the flag taken with each byte.)
        timer = Signal(range(self.divisor), reset_less=True)
        sub = Signal(reset_less=True)
        line_low = Signal()                 # the tx register, inverted: idle is zero
        rest = frame[1:] == 0
        idle = rest & ~frame[0]
        data = ~frame[9] & ~rest
        line = Signal()
        end = _bit_timer(m, timer, self.divisor, idle, self.divisor - 1)
        m.d.comb += [line.eq(frame[0] | idle),
                     self.i_stream.ready.eq(idle),
                     self.bit.eq(line), self.bit_valid.eq(end & data),
                     self.tx.eq(~line_low)]
        with m.If(sub & data):
            m.d.comb += line.eq(self.sub_bit)
        m.d.sync += line_low.eq(~line)
        with m.If(idle):
            with m.If(self.i_stream.valid):
                m.d.sync += [frame.eq(Cat(0, self.i_stream.payload, 1)),
                             sub.eq(self.substitute)]
        with m.Elif(end):
            m.d.sync += frame.eq(frame[1:])
        return m


class UARTRx(wiring.Component):
    """UART receiver.

    Parameters
    ----------
    clk_freq : int or float
        Clock frequency in Hz.
    baud : int
        Bits per second.

    Attributes
    ----------
    rx : In(1)
        The line, asynchronous to the clock (synchronised by two flip-flops here).
    o_stream : Out(stream.Signature(8))
        Received bytes. A byte waits in ``payload`` until taken, or until the next start
        bit (the consumer must keep up: the bridge always does).
    error : Out(1)
        High for one cycle when a byte's stop bit was 0 (a framing error: noise, a wrong
        baud rate or a break); that byte is not delivered.
    bit, bit_valid : Out(1)
        Each data bit as it is sampled (``bit_valid`` high for that cycle), for a CRC
        folded bit by bit; the byte follows at its stop bit.
    divisor : int
        Clock cycles per bit.

    Raises
    ------
    ValueError
        See :func:`baud_divisor`.
    """

    rx: In(1, init=1)
    o_stream: Out(stream.Signature(8))
    error: Out(1)
    bit: Out(1)
    bit_valid: Out(1)

    def __new__(cls, *, clk_freq, baud):
        # Checked before the object exists: a refused one leaves no unused elaboratable.
        baud_divisor(clk_freq, baud)
        return super().__new__(cls)

    def __init__(self, *, clk_freq, baud):
        self.divisor = baud_divisor(clk_freq, baud)
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        # The line inverted (1: low), so that the synchroniser starts at zero.
        rx_low = Signal()
        low = Signal()
        m.d.comb += rx_low.eq(~self.rx)
        m.submodules.sync = cdc.FFSynchronizer(rx_low, low)
        timer = Signal(range(self.divisor), reset_less=True)   # held while idle
        start = Signal()                    # in the start bit
        busy = Signal()                     # in the data bits or the stop bit
        # The data bits shift in at the top behind a marker that starts there: once the
        # marker reaches the bottom the byte is in and the stop bit comes next.
        shift = Signal(9, reset_less=True)   # set at each start bit
        stop = shift[0]
        sample = _bit_timer(m, timer, self.divisor, ~start & ~busy, self.divisor // 2 - 1)
        m.d.comb += [self.o_stream.payload.eq(shift[1:]), self.bit.eq(~low),
                     self.bit_valid.eq(busy & sample & ~stop)]
        m.d.sync += self.error.eq(0)
        with m.If(self.o_stream.ready):
            m.d.sync += self.o_stream.valid.eq(0)
        with m.If(~start & ~busy):
            with m.If(low):
                m.d.sync += start.eq(1)
        with m.Elif(sample):
            with m.If(start):
                # Mid start bit: still low, or it was a glitch.
                m.d.sync += [start.eq(0), busy.eq(low), shift.eq(1 << 8)]
            with m.Elif(~stop):
                m.d.sync += shift.eq(Cat(shift[1:], ~low))
            with m.Else():
                # Back to idle at mid stop bit: the next start edge can come at once.
                m.d.sync += [busy.eq(0), self.o_stream.valid.eq(~low),
                             self.error.eq(low)]
        return m
