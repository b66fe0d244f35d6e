"""Frozen, validated configuration objects, one per generator."""
