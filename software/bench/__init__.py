"""Benchmarks: `make bench` runs every unit's figures (see README, Performance)."""
