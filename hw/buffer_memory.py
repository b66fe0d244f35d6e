"""One on-chip buffer of the accelerator: a single-ported memory (one address, a read or a
write per cycle), the shape of an iCE40 SPRAM, so that synthesis can map the large
activation and weight buffers to SPRAM and the rest to block RAM.

By default (simulation, ``lowbit verilog``, ECP5 synthesis) the buffer is an Amaranth
:class:`~amaranth.lib.memory.Memory`, which Yosys maps to block RAM (iCE40 EBR, ECP5
DP16KD). Yosys cannot map it to an iCE40 SPRAM: Amaranth always initialises a memory (to
zero), and an SPRAM cannot be initialised. So when the synthesis flow asks for it through
the platform it passes to ``elaborate`` (:func:`lowbit.synth.synthesize` does, on iCE40,
for buffers of at least 64 kbit), the buffer instantiates ``SB_SPRAM256KA`` blocks
directly: ``ceil(word / 16)`` side by side, ``ceil(depth / 16384)`` banks deep. Such a
buffer powers up with undefined contents (the generic one with zeros); the accelerator
only reads what a ``LOAD`` or an engine wrote.

The platform protocol is one optional method, ``platform.use_spram(depth, word) -> bool``;
a platform without it (``None`` in simulation) gets the generic memory.
"""

from amaranth import ClockSignal, Const, Instance, Module, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

__all__ = ["BufferMemory", "SPRAM_DEPTH", "SPRAM_WIDTH", "spram_blocks"]

#: Geometry of one iCE40UP ``SB_SPRAM256KA``: 16384 words of 16 bits.
SPRAM_DEPTH, SPRAM_WIDTH = 16384, 16


def spram_blocks(depth, word):
    """``SB_SPRAM256KA`` blocks a ``depth`` x ``word`` buffer takes (lanes x banks)."""
    return -(-word // SPRAM_WIDTH) * -(-depth // SPRAM_DEPTH)


class BufferMemory(wiring.Component):
    """A ``depth`` x ``word`` single-ported memory.

    Attributes
    ----------
    addr : In(range(depth))
    re, we : In(1)
        Read (data on ``rdata`` the next cycle) or write ``wdata``. A cycle does one or the
        other: with both high, the write happens and the read does not.
    wdata : In(word)
    rdata : Out(word)
        The word read the cycle before, after a read. The generic memory holds it until the
        next read; the SPRAM one only while no write happens (a written SPRAM's output is
        undefined), so users take ``rdata`` the cycle after their read, as
        :class:`~lowbit.hw.buffer_port.BufferPort` specifies.
    """

    def __init__(self, depth, word):
        self.depth, self.word = depth, word
        super().__init__({
            "addr": In(range(depth)), "re": In(1), "we": In(1), "wdata": In(word),
            "rdata": Out(word),
        })

    def elaborate(self, platform):
        use_spram = getattr(platform, "use_spram", None)
        if use_spram is not None and use_spram(self.depth, self.word):
            return self._elaborate_spram()
        m = Module()
        m.submodules.mem = mem = Memory(shape=unsigned(self.word), depth=self.depth, init=[])
        self.data = mem.data  # what a simulation reads the contents through
        rport, wport = mem.read_port(), mem.write_port()
        m.d.comb += [
            rport.addr.eq(self.addr), rport.en.eq(self.re & ~self.we),
            self.rdata.eq(rport.data),
            wport.addr.eq(self.addr), wport.en.eq(self.we), wport.data.eq(self.wdata),
        ]
        return m

    def _elaborate_spram(self):
        """``SB_SPRAM256KA`` lanes (16 bits each) times banks (16384 words each)."""
        m = Module()
        lanes = -(-self.word // SPRAM_WIDTH)
        banks = -(-self.depth // SPRAM_DEPTH)
        wdata = Signal(lanes * SPRAM_WIDTH)
        m.d.comb += wdata.eq(self.wdata)
        low = Signal(14)  # the word within a bank (narrower addresses are zero-extended)
        m.d.comb += low.eq(self.addr)
        bank = self.addr[14:]
        outs = []
        for b in range(banks):
            selected = (bank == b) if banks > 1 else Const(1, 1)
            out = Signal(lanes * SPRAM_WIDTH, name=f"bank{b}_rdata")
            for lane in range(lanes):
                m.submodules[f"spram_b{b}_l{lane}"] = Instance(
                    "SB_SPRAM256KA",
                    i_ADDRESS=low,
                    i_DATAIN=wdata[lane * SPRAM_WIDTH:(lane + 1) * SPRAM_WIDTH],
                    i_MASKWREN=Const(0b1111, 4),
                    i_WREN=self.we,
                    i_CHIPSELECT=(self.re | self.we) & selected,
                    i_CLOCK=ClockSignal(),
                    i_STANDBY=Const(0, 1),
                    i_SLEEP=Const(0, 1),
                    i_POWEROFF=Const(1, 1),
                    o_DATAOUT=out[lane * SPRAM_WIDTH:(lane + 1) * SPRAM_WIDTH],
                )
            outs.append(out)
        if banks == 1:
            m.d.comb += self.rdata.eq(outs[0])
        else:
            # DATAOUT holds while a block is not selected: the output follows the bank of
            # the last read.
            read_bank = Signal(range(banks))
            with m.If(self.re & ~self.we):
                m.d.sync += read_bank.eq(bank)
            with m.Switch(read_bank):
                for b, out in enumerate(outs):
                    with m.Case(b):
                        m.d.comb += self.rdata.eq(out)
        return m
