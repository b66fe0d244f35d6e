"""FPGA board targets (iCEBreaker, ULX3S) built on amaranth-boards platforms."""
