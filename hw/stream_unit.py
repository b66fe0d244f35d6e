"""The common shape of lowbit's gateware units: a component built from one configuration
object, with an ``i_stream`` and an ``o_stream`` whose payloads the configuration defines."""

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

    def __init__(self, config=None):
        cls = self.config_class
        config = cls() if config is None else config
        if not isinstance(config, cls):
            self._MustUse__silence = True  # never built: no "created but never used" warning
            raise TypeError(f"config must be {self.config_article} {cls.__name__}, "
                            f"not {config!r}")
        self.config = config
        super().__init__({
            "i_stream": In(stream.Signature(config.beat_layout)),
            "o_stream": Out(stream.Signature(config.result_layout)),
        })
