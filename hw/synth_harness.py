"""A pin-frugal wrapper that lets a wide component be placed and timed on a real FPGA.

A standalone array has thousands of port bits, more than any package has pins. The harness
feeds every input bit from a shift register (serial in) and captures every output bit into
a parallel-load shift register (serial out), so the component's ports are registered as a
real producer and consumer would register them. Each such bit costs one logic cell; the
synthesis report lists these harness bits so figures can be given with and without them.
"""

from amaranth import Cat, Elaboratable, Module, Signal, Value
from amaranth.lib import wiring

__all__ = ["SerialHarness"]


class SerialHarness(Elaboratable):
    """Wrap ``dut`` (a ``wiring.Component``) behind pins ``sin``, ``capture``, ``sout``.

    Attributes
    ----------
    in_bits, out_bits : int
        Bits of the component's input and output ports (the harness registers them).
    """

    def __init__(self, dut):
        self.dut = dut
        self.sin = Signal()
        self.capture = Signal()
        self.sout = Signal()
        inputs, outputs = [], []
        for path, member, value in dut.signature.flatten(dut):
            (inputs if member.flow == wiring.In else outputs).append(Value.cast(value))
        self._inputs, self._outputs = inputs, outputs
        self.in_bits = sum(len(v) for v in inputs)
        self.out_bits = sum(len(v) for v in outputs)

    @property
    def ports(self):
        return [self.sin, self.capture, self.sout]

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = self.dut
        chain = Signal(self.in_bits, reset_less=True)
        m.d.sync += chain.eq(Cat(self.sin, chain[:-1]))
        m.d.comb += Cat(*self._inputs).eq(chain)
        captured = Signal(self.out_bits, reset_less=True)
        with m.If(self.capture):
            m.d.sync += captured.eq(Cat(*self._outputs))
        with m.Else():
            m.d.sync += captured.eq(captured >> 1)
        m.d.comb += self.sout.eq(captured[0])
        return m
