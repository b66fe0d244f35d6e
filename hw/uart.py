"""A small UART: 8 data bits, no parity, one stop bit (8N1), LSB first, idle high.

:class:`UARTTx` sends the bytes of its ``i_stream`` on ``tx``; :class:`UARTRx` samples
``rx`` through a two-flip-flop synchroniser, checks the start bit at mid-bit, samples each
data bit in the middle of its bit time and reports a missing stop bit as a framing error.
Both take the clock frequency and the baud rate and derive the divisor (clock cycles per
bit) with :func:`baud_divisor`.
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
    tx : Out(1)
        The line (idle high).
    bit, bit_valid : Out(1)
        Each data bit as it has been sent (``bit_valid`` high for a cycle at the end of its
        bit time), for a CRC folded bit by bit (:class:`lowbit.hw.uart_bridge.BitCRC`).
    divisor : int
        Clock cycles per bit.

    Raises
    ------
    ValueError
        See :func:`baud_divisor`.
    """

    i_stream: In(stream.Signature(8))
    tx: Out(1, init=1)
    bit: Out(1)
    bit_valid: Out(1)

    def __init__(self, *, clk_freq, baud):
        try:
            self.divisor = baud_divisor(clk_freq, baud)
        except ValueError:
            self._MustUse__silence = True  # never built: no "created but never used"
            raise
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        # Start bit, data, stop bit, shifted out LSB first; the line idles high.
        shift = Signal(10, init=0x3FF)
        bits = Signal(range(11))            # bits still to send (0: idle)
        timer = Signal(range(self.divisor))
        m.d.comb += [self.tx.eq(shift[0]), self.i_stream.ready.eq(bits == 0),
                     self.bit.eq(shift[0]),
                     # bits 9..2: data bits 0..7 on the line (10: start, 1: stop).
                     self.bit_valid.eq((timer == 0) & (bits >= 2) & (bits <= 9))]
        with m.If(bits == 0):
            with m.If(self.i_stream.valid):
                m.d.sync += [shift.eq(Cat(0, self.i_stream.payload, 1)), bits.eq(10),
                             timer.eq(self.divisor - 1)]
        with m.Elif(timer == 0):
            m.d.sync += [shift.eq(Cat(shift[1:], 1)), bits.eq(bits - 1),
                         timer.eq(self.divisor - 1)]
        with m.Else():
            m.d.sync += timer.eq(timer - 1)
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
        Received bytes. A byte waits in ``payload`` until taken; one that arrives before
        the previous one was taken replaces it (the consumer must keep up: the bridge
        always does).
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

    def __init__(self, *, clk_freq, baud):
        try:
            self.divisor = baud_divisor(clk_freq, baud)
        except ValueError:
            self._MustUse__silence = True  # never built: no "created but never used"
            raise
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        line = Signal(init=1)
        m.submodules.sync = cdc.FFSynchronizer(self.rx, line, init=1)
        timer = Signal(range(self.divisor))
        bits = Signal(range(9))
        data = Signal(8)
        m.d.comb += [self.o_stream.payload.eq(data), self.bit.eq(line)]
        m.d.sync += self.error.eq(0)
        with m.If(self.o_stream.ready):
            m.d.sync += self.o_stream.valid.eq(0)
        with m.FSM():
            with m.State("IDLE"):
                with m.If(~line):
                    # Half a bit to the middle of the start bit.
                    m.d.sync += timer.eq(self.divisor // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Elif(line):
                    m.next = "IDLE"     # a glitch, not a start bit
                with m.Else():
                    m.d.sync += [timer.eq(self.divisor - 1), bits.eq(8)]
                    m.next = "DATA"
            with m.State("DATA"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Else():
                    m.d.comb += self.bit_valid.eq(1)
                    m.d.sync += [data.eq(Cat(data[1:], line)), bits.eq(bits - 1),
                                 timer.eq(self.divisor - 1)]
                    with m.If(bits == 1):
                        m.next = "STOP"
            with m.State("STOP"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Else():
                    with m.If(line):
                        m.d.sync += self.o_stream.valid.eq(1)
                    with m.Else():
                        m.d.sync += self.error.eq(1)
                    # Back to IDLE at mid stop bit: the next start edge can come at once.
                    m.next = "IDLE"
        return m
