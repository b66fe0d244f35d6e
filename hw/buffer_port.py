"""The port an engine of the accelerator uses to reach one on-chip buffer.

Every buffer is a single-ported memory (what an iCE40 SPRAM is): one address, a read or a
write per cycle. An engine raises ``re`` or ``we``; the access happens in that cycle only if
``grant`` is high (the host-link front end has priority), and read data appears on
``rdata`` the cycle after a granted read.
"""

from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["BufferPort", "Engine"]


class BufferPort(wiring.Signature):
    """Signature of an engine's port to a buffer of ``depth`` words of ``word`` bits
    (as seen from the engine)."""

    def __init__(self, depth, word):
        self.depth, self.word = depth, word
        super().__init__({
            "addr": Out(range(depth)),
            "re": Out(1),
            "we": Out(1),
            "wdata": Out(word),
            "grant": In(1),
            "rdata": In(word),
        })

    def __eq__(self, other):
        return (isinstance(other, BufferPort) and (self.depth, self.word)
                == (other.depth, other.word))

    def __hash__(self):
        return hash((BufferPort, self.depth, self.word))


class Engine(wiring.Component):
    """Base of the accelerator's engines: one instruction at a time, on some buffers.

    Subclasses set ``opcode`` (an :class:`~lowbit.isa.Opcode`), ``buffers`` (the names of
    the buffers they use, of ``act``, ``weight``, ``out``) and ``counts_beats`` (whether
    they have a unit whose accepted beats the accelerator counts).

    Attributes
    ----------
    start : In(1)
        Pulse with ``instr`` valid: latch the instruction and run it.
    instr : In(the opcode's operand layout)
        The instruction's fields, from the instruction set's layout.
    busy : Out(1)
        High from the cycle after ``start`` until the instruction's last write.
    beat : Out(1)
        The engine's unit accepted a beat this cycle (``counts_beats`` only).
    act, weight, out : Out(BufferPort)
        Ports to the buffers the engine uses.
    """

    opcode = None
    buffers = ("act", "weight", "out")
    counts_beats = True

    def __init__(self, config):
        from ..isa import instruction_set  # the ISA module imports config, not hw

        self.config = config
        self.layout = instruction_set(config).operands[self.opcode]
        sizes = config.buffer_words
        members = {"start": In(1), "instr": In(self.layout), "busy": Out(1)}
        if self.counts_beats:
            members["beat"] = Out(1)
        for name in self.buffers:
            members[name] = Out(BufferPort(sizes[name], config.word))
        super().__init__(members)
