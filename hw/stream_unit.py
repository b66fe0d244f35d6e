"""The common shape of lowbit's gateware units: a component built from one configuration
object, with an ``i_stream`` and an ``o_stream`` whose payloads the configuration defines."""

from amaranth import Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["StreamUnit"]


class StreamUnit(wiring.Component):
    """Base of a unit with stream ports laid out by its configuration.

    Subclasses set ``config_class`` (a frozen configuration dataclass with ``beat_layout``
    and ``result_layout``) and ``config_article`` (``"a"`` or ``"an"``, for the message).

    Raises
    ------
    TypeError
        ``config must be a/an <ConfigClass>, not <value>`` for anything else.
    """

    config_class = None
    config_article = "a"

    def __new__(cls, config=None):
        # Checked before the object exists: a refused one leaves no unused elaboratable.
        if config is not None and not isinstance(config, cls.config_class):
            raise TypeError(f"config must be {cls.config_article} "
                            f"{cls.config_class.__name__}, not {config!r}")
        return super().__new__(cls)

    def __init__(self, config=None):
        config = self.config_class() if config is None else config
        self.config = config
        super().__init__({
            "i_stream": In(stream.Signature(config.beat_layout)),
            "o_stream": Out(stream.Signature(config.result_layout)),
        })

    def advance(self, m, hold=None):
        """The pipeline's advance signal, driving ``i_stream.ready``: every stage moves on
        when the output register is empty or being taken (and ``hold`` is low), so
        back-pressure holds every beat in place."""
        advance = Signal()
        go = ~self.o_stream.valid | self.o_stream.ready
        m.d.comb += [advance.eq(go if hold is None else go & ~hold),
                     self.i_stream.ready.eq(advance)]
        return advance
