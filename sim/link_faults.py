"""A byte channel that corrupts and drops bytes: what a noisy serial line does, on demand.

:class:`FaultyChannel` wraps any channel of :class:`lowbit.runtime.StreamTransport`'s kind
(``read(n)``, ``write(data)``, ``close()``) and damages chosen bytes in either direction,
so the framed host link (:mod:`lowbit.framing`) can be tested against the real gateware.
"""

import random

__all__ = ["FaultyChannel"]


class FaultyChannel:
    """Damage bytes between the host and a channel.

    Parameters
    ----------
    channel :
        The channel to wrap.
    flip_out, drop_out : set of int
        Positions (0-based, counting every byte the host writes) of bytes to corrupt (XOR
        with a random nonzero value) or to drop on the way to the board.
    flip_in, drop_in : set of int
        The same for bytes coming from the board.
    rate : float
        Besides those, the probability that any byte in either direction is corrupted,
        and (the same again) that it is dropped.
    seed : int
        Seed of the random choices.

    Attributes
    ----------
    damaged : dict
        How many bytes were ``flipped`` and ``dropped`` in each direction (``out``, ``in``).
    """

    def __init__(self, channel, *, flip_out=(), drop_out=(), flip_in=(), drop_in=(),
                 rate=0.0, seed=0):
        self.channel = channel
        self._faults = {"out": (set(flip_out), set(drop_out)),
                        "in": (set(flip_in), set(drop_in))}
        self._count = {"out": 0, "in": 0}
        self.rate = rate
        self._rng = random.Random(seed)
        self.damaged = {"out": {"flipped": 0, "dropped": 0},
                        "in": {"flipped": 0, "dropped": 0}}

    def _damage(self, direction, data):
        flips, drops = self._faults[direction]
        out = bytearray()
        for byte in data:
            pos = self._count[direction]
            self._count[direction] += 1
            if pos in drops or self._rng.random() < self.rate:
                self.damaged[direction]["dropped"] += 1
                continue
            if pos in flips or self._rng.random() < self.rate:
                byte ^= self._rng.randrange(1, 256)
                self.damaged[direction]["flipped"] += 1
            out.append(byte)
        return bytes(out)

    def write(self, data):
        self.channel.write(self._damage("out", data))

    def read(self, n):
        return self._damage("in", self.channel.read(n))

    def close(self):
        self.channel.close()
