"""One memory of the accelerator: ``depth`` words of ``width`` bits (all lanes of a word),
one write port and one read port, each with a single user.

Reads are synchronous: the word addressed in cycle ``t`` is on ``rdata`` in cycle ``t + 1``
and stays there until the next read. Addresses are taken modulo ``depth`` (a power of two):
the ports are exactly ``log2(depth)`` bits wide and wider values are truncated.

``single_port=True`` builds the memory from single-ported RAM
(:class:`~lowbit.hw.buffer_memory.BufferMemory`, an iCE40UP5K SPRAM under the synthesis
flow); a write then takes the port for that cycle, and the accelerator guarantees that no
read is wanted then (a weight ``LOAD`` waits until no ``GEMM`` reads weights).

``lanes > 1`` gives the write port one enable per lane (``width / lanes`` bits each): a
training configuration's ``UPDATE`` writes one lane of a weight word.
"""

from amaranth import Module, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .buffer_memory import BufferMemory

__all__ = ["CoreMemory"]


class CoreMemory(wiring.Component):
    """A ``depth x width`` memory with a write port and a read port.

    Parameters
    ----------
    depth : int
        Words, a power of two.
    width : int
        Bits per word.
    single_port : bool
        Build from single-ported RAM (reads and writes never in the same cycle).
    lanes : int
        Write enables of the write port (one per ``width / lanes``-bit lane); not with
        ``single_port``.

    Attributes
    ----------
    waddr, we, wdata : In
        Write ``wdata`` at ``waddr`` when ``we`` (lane ``i`` of it when ``we[i]``).
    raddr, re : In
        Read the word at ``raddr`` when ``re``.
    rdata : Out(width)
        The word read in the previous read cycle.
    """

    def __init__(self, depth, width, *, single_port=False, lanes=1):
        if depth < 1 or depth & (depth - 1):
            raise ValueError(f"CoreMemory depth must be a power of two, not {depth}")
        if lanes < 1 or width % lanes or (lanes > 1 and single_port):
            raise ValueError(f"CoreMemory of {width} bits cannot have {lanes} write lanes"
                             f"{' (single-ported)' if single_port else ''}")
        self.depth, self.width, self.single_port = depth, width, single_port
        self.lanes = lanes
        self.ram = None
        abits = max(1, (depth - 1).bit_length())
        super().__init__({
            "waddr": In(abits), "we": In(lanes), "wdata": In(width),
            "raddr": In(abits), "re": In(1), "rdata": Out(width),
        })

    @property
    def data(self):
        """The contents (``MemoryData``) a simulation reads, once elaborated."""
        return self.ram.data

    def elaborate(self, platform):
        m = Module()
        if self.single_port:
            m.submodules.ram = ram = BufferMemory(self.depth, self.width)
            m.d.comb += [
                ram.addr.eq(self.raddr), ram.re.eq(self.re), ram.we.eq(self.we),
                ram.wdata.eq(self.wdata), self.rdata.eq(ram.rdata),
            ]
            with m.If(self.we):
                m.d.comb += ram.addr.eq(self.waddr)
            self.ram = ram
            return m
        # no_rw_check: a read and a write of one address in one cycle is a race the host's
        # race check refuses, so the RAM need not define it. Without it Yosys emulates the
        # read-first behaviour around every EBR/DP16KD (a registered write word, an address
        # comparator and a bypass multiplexer per bit: ~140 logic cells per 64 bits).
        m.submodules.mem = mem = Memory(shape=unsigned(self.width), depth=self.depth, init=[],
                                        attrs={"no_rw_check": 1})
        self.ram = mem
        rport = mem.read_port()
        wport = mem.write_port(granularity=self.width // self.lanes if self.lanes > 1
                               else None)
        m.d.comb += [
            rport.addr.eq(self.raddr), rport.en.eq(self.re), self.rdata.eq(rport.data),
            wport.addr.eq(self.waddr), wport.en.eq(self.we), wport.data.eq(self.wdata),
        ]
        return m
