"""Configuration of the int8 multiply-accumulate unit, lowbit's baseline for the LNS unit.

Same stream interface as :class:`~lowbit.config.lns.LNSMacConfig`: one beat carries
``lanes`` pairs of signed 8-bit integers with ``first``/``last`` flags, and one output beat
carries each finished dot product. Each lane multiplies (``a_i * b_i``, exact 16-bit
product); an adder tree sums the lanes into one accumulator.
"""

import dataclasses

from amaranth import signed
from amaranth.lib import data

from .base import ConfigMixin, check_int

__all__ = ["Int8MacConfig"]


@dataclasses.dataclass(frozen=True)
class Int8MacConfig(ConfigMixin):
    """Parameters of an :class:`~lowbit.hw.int8_mac.Int8Mac` and its golden model
    :class:`~lowbit.golden.int8_mac.Int8Mac`.

    Parameters
    ----------
    lanes : int
        Products per beat (1..64).
    max_k : int
        Longest dot product (products) the accumulator must hold without overflow.
    acc_width : int or None
        Accumulator width. ``None`` derives the narrowest safe width; a narrower explicit
        choice raises ``ValueError``.

    Raises
    ------
    TypeError, ValueError
        With an exact message naming the parameter, for any invalid value.
    """

    lanes: int = 4
    max_k: int = 256
    acc_width: int | None = None

    def __post_init__(self):
        owner = "Int8MacConfig"
        check_int(owner, "lanes", self.lanes, minimum=1, maximum=64)
        check_int(owner, "max_k", self.max_k, minimum=1, maximum=1 << 20)
        if self.acc_width is not None:
            check_int(owner, "acc_width", self.acc_width, minimum=2, maximum=64)
            if self.acc_width < self.required_acc_width:
                raise ValueError(
                    f"{owner} acc_width {self.acc_width} could overflow: dot products of up "
                    f"to {self.max_k} int8 products need {self.required_acc_width} bits")

    @property
    def required_acc_width(self):
        """Narrowest width no ``max_k`` products can overflow: ``|a * b| <= 2^14``."""
        return (self.max_k << 14).bit_length() + 1

    @property
    def accumulator_width(self):
        """The accumulator width in use (explicit or derived)."""
        return self.required_acc_width if self.acc_width is None else self.acc_width

    @property
    def macs(self):
        """Products per cycle."""
        return self.lanes

    @property
    def beat_layout(self):
        """Payload of one input beat: ``lanes`` int8 pairs, ``first`` and ``last`` (as in
        :attr:`lowbit.config.lns.LNSMacConfig.beat_layout`)."""
        return data.StructLayout({
            "a": data.ArrayLayout(signed(8), self.lanes),
            "b": data.ArrayLayout(signed(8), self.lanes),
            "first": 1,
            "last": 1,
        })

    @property
    def result_layout(self):
        """Payload of one output beat: the dot product."""
        return data.StructLayout({"dot": signed(self.accumulator_width)})
