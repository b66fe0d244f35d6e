"""Pipelined popcount adder trees."""

from amaranth import Cat, Signal

__all__ = ["popcount_tree"]


def popcount_tree(m, bits, *, stages=0, enable=1, name="pop"):
    """Add up the bits of ``bits`` in a balanced adder tree; return ``(count, latency)``.

    The first level adds bit pairs as ``(x0 ^ x1, x0 & x1)`` so that the synthesiser folds
    the XNOR/AND in front of it into the same 4-input LUTs; later levels are ``+`` and map
    to carry chains. ``stages`` registers (enabled by ``enable``) are spread evenly over the
    tree's levels; ``latency`` is the number of clock cycles from ``bits`` to ``count``.
    """
    n = len(bits)
    values = []
    for t in range(0, n - 1, 2):
        pair = Signal(2, name=f"{name}_l0_{t // 2}")
        m.d.comb += pair.eq(Cat(bits[t] ^ bits[t + 1], bits[t] & bits[t + 1]))
        values.append(pair)
    if n % 2:
        values.append(bits[n - 1])
    levels = max(1, (n - 1).bit_length())  # levels after the pair level, plus the pair level
    cut = {round((s + 1) * levels / (stages + 1)) for s in range(stages)}
    level, latency = 1, 0
    while True:
        if level in cut:
            registered = []
            for k, value in enumerate(values):
                reg = Signal(len(value), name=f"{name}_r{level}_{k}")
                with m.If(enable):
                    m.d.sync += reg.eq(value)
                registered.append(reg)
            values, latency = registered, latency + 1
            cut.discard(level)
        if len(values) == 1 and not cut:
            break
        if len(values) > 1:
            summed = []
            for k in range(0, len(values) - 1, 2):
                width = max(len(values[k]), len(values[k + 1])) + 1
                total = Signal(width, name=f"{name}_l{level}_{k // 2}")
                m.d.comb += total.eq(values[k] + values[k + 1])
                summed.append(total)
            if len(values) % 2:
                summed.append(values[-1])
            values = summed
        level += 1
    return values[0], latency
