"""Numpy golden models: what each gateware block computes, bit for bit."""
