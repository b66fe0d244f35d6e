"""Golden model of the int8 multiply-accumulate unit, :class:`lowbit.hw.int8_mac.Int8Mac`,
and the int8 quantiser the LNS comparison uses.

Quantiser (pinned): symmetric, per tensor, ``scale = max |x| / 127`` (1 for an all-zero
tensor), ``q = clip(rint(x / scale), -127, 127)`` with numpy's ``rint`` (ties to even).
This is the usual int8 choice and int8's best case against LNS's power-of-two scale: the
full code range is used. The unit itself accepts any int8 pair, ``-128`` included.
"""

import dataclasses

import numpy as np

from ..config.int8_mac import Int8MacConfig
from .lns import wrap

__all__ = ["Int8Tensor", "Int8Mac", "quantize_int8"]


@dataclasses.dataclass(frozen=True)
class Int8Tensor:
    """Symmetric int8 values ``q`` and their real ``scale`` (``x ~ q * scale``)."""

    q: np.ndarray
    scale: float

    def __getitem__(self, index):
        return dataclasses.replace(self, q=self.q[index])

    def value(self):
        return self.q * self.scale


def quantize_int8(x):
    """Quantise real values to :class:`Int8Tensor` (rule in the module docstring)."""
    x = np.asarray(x, dtype=np.float64)
    top = float(np.max(np.abs(x))) if x.size else 0.0
    scale = top / 127 if top > 0 else 1.0
    return Int8Tensor(np.clip(np.rint(x / scale), -127, 127).astype(np.int64), scale)


class Int8Mac:
    """Beat-level golden model of :class:`lowbit.hw.int8_mac.Int8Mac`.

    Parameters
    ----------
    config : Int8MacConfig
        The same configuration object the gateware is built from. The accumulator wraps at
        ``config.accumulator_width`` bits, as the register does.
    """

    def __init__(self, config=None):
        config = Int8MacConfig() if config is None else config
        if not isinstance(config, Int8MacConfig):
            raise TypeError(f"config must be an Int8MacConfig, not {config!r}")
        self.config = config
        self.reset()

    def reset(self):
        """Clear the accumulator, as the gateware's reset does."""
        self.acc = 0

    def step(self, beat):
        """Consume one beat (``beat_layout`` dict); return the dot product after a
        ``last`` beat, else ``None``."""
        total = sum(int(a) * int(b) for a, b in zip(beat["a"], beat["b"]))
        base = 0 if beat["first"] else self.acc
        self.acc = wrap(base + total, self.config.accumulator_width)
        return self.acc if beat["last"] else None

    def run(self, beats):
        """Consume beats in order; return the dot products they produce."""
        out = []
        for beat in beats:
            result = self.step(beat)
            if result is not None:
                out.append(result)
        return out

    def schedule(self, a, b):
        """Beats of the dot product of two equal-length 1-D int8 arrays, zero-padded."""
        a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
        if a.ndim != 1 or a.shape != b.shape or a.shape[0] < 1:
            raise ValueError(f"operands must be 1-D of one nonzero length, not {a.shape} and "
                             f"{b.shape}")
        if a.min() < -128 or a.max() > 127 or b.min() < -128 or b.max() > 127:
            raise ValueError("operands must be int8 (-128..127)")
        lanes = self.config.lanes
        beats = []
        for start in range(0, len(a), lanes):
            chunk_a = [int(v) for v in a[start:start + lanes]]
            chunk_b = [int(v) for v in b[start:start + lanes]]
            chunk_a += [0] * (lanes - len(chunk_a))
            chunk_b += [0] * (lanes - len(chunk_b))
            beats.append({"a": chunk_a, "b": chunk_b, "first": int(start == 0), "last": 0})
        beats[-1]["last"] = 1
        return beats

    def dot(self, a, b):
        """The unit's output for one dot product (through the beat-level model)."""
        (out,) = Int8Mac(self.config).run(self.schedule(a, b))
        return out
