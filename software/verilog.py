"""Verilog generation from lowbit's Amaranth components."""

from amaranth.back import verilog as amaranth_verilog

from . import toolenv

__all__ = ["generate"]


def generate(component, name):
    """Return the Verilog of ``component`` with top-level module ``name``.

    Port names follow Amaranth's interface paths joined by ``__``
    (``i_stream__payload``, ``i_stream__valid``, ``o_stream__ready``...).
    """
    toolenv.setup()
    return amaranth_verilog.convert(component, name=name, emit_src=False)
