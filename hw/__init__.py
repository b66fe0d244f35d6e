"""Amaranth gateware of lowbit: each block is a ``wiring.Component`` built from a config."""
