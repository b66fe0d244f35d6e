"""The port an engine of the accelerator uses to reach one on-chip buffer.

Every buffer is a single-ported memory (what an iCE40 SPRAM is): one address, a read or a
write per cycle. An engine raises ``re`` or ``we``; the access happens in that cycle only if
``grant`` is high (the host-link front end has priority), and read data appears on
``rdata`` the cycle after a granted read.
"""

from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["BufferPort"]


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
