"""lowbit: a generator of exact accelerators for binarized and quantized neural networks.

The package is split by what each part is:

* :mod:`lowbit.config` -- frozen, validated configuration objects, one per generator;
* :mod:`lowbit.golden` -- numpy golden models, bit-exact references for the gateware;
* :mod:`lowbit.hw` -- Amaranth gateware (``hw/`` in the source tree);
* :mod:`lowbit.sim` -- cocotb testbenches and simulator runners (``sim/``);
* :mod:`lowbit.boards` -- FPGA board targets (``boards/``);
* :mod:`lowbit.cli` -- the ``lowbit`` command.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
