"""One on-chip buffer of the accelerator: a single-ported memory (one address, a read or a
write per cycle), the shape of an iCE40 SPRAM, so that synthesis can map the large
activation and weight buffers to SPRAM and the rest to block RAM."""

from amaranth import Module, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

__all__ = ["BufferMemory"]


class BufferMemory(wiring.Component):
    """A ``depth`` x ``word`` single-ported memory.

    Attributes
    ----------
    addr : In(range(depth))
    re, we : In(1)
        Read (data on ``rdata`` the next cycle, held otherwise) or write ``wdata``.
    wdata : In(word)
    rdata : Out(word)
    """

    def __init__(self, depth, word):
        self.depth, self.word = depth, word
        super().__init__({
            "addr": In(range(depth)), "re": In(1), "we": In(1), "wdata": In(word),
            "rdata": Out(word),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.mem = mem = Memory(shape=unsigned(self.word), depth=self.depth, init=[])
        rport, wport = mem.read_port(), mem.write_port()
        m.d.comb += [
            rport.addr.eq(self.addr), rport.en.eq(self.re), self.rdata.eq(rport.data),
            wport.addr.eq(self.addr), wport.en.eq(self.we), wport.data.eq(self.wdata),
        ]
        return m
