"""Pipelined popcounts: a behavioural tree and, for the iCE40, a tree of hand-placed cells.

:func:`popcount_tree` builds one of two circuits with the same count and the same latency:

* the behavioural tree (``primitives=False``): flat ``sum()``\\ s over groups of bits, which
  Yosys maps itself. Simulation, ``lowbit verilog`` and the ECP5 get it.
* the iCE40 cell tree (``primitives=True``): ``SB_LUT4`` full adders on triples of operand
  bits with the XNOR (or the XNOR/AND choice) folded into the LUTs, then carry-chain adders
  (``SB_LUT4`` + ``SB_CARRY``) whose carry-ins take single bits for free. Yosys re-extracts
  and re-maps the same structure written as ``+`` (most of the saving is lost), hence the
  instances. ``primitives="emulate"`` builds the identical cell netlist from Amaranth logic
  (a LUT is a lookup in its 16-bit truth table, a carry is a majority), so the wiring can
  be checked exactly on Amaranth's simulator.

Callers derive the mode from the platform ``elaborate`` receives with
:func:`popcount_primitives`; docs/popcount_ice40.md has the measurements.
"""

import functools

from amaranth import Cat, Const, Instance, Signal

__all__ = ["popcount_tree", "popcount_primitives", "PopcountEmulation"]


def popcount_primitives(platform):
    """The ``primitives`` mode of :func:`popcount_tree` for ``platform``.

    A platform may say so itself with a ``popcount_primitives`` attribute (see
    :class:`PopcountEmulation`); otherwise the iCE40 cell tree is used when the platform
    targets an iCE40: ``lowbit.synth.SynthesisPlatform`` names it in ``target``, the
    amaranth-boards (Lattice) platforms in ``family``. ``None`` (simulation, ``lowbit
    verilog``) and every other target get the behavioural tree.
    """
    if platform is None:
        return False
    mode = getattr(platform, "popcount_primitives", None)
    if mode is not None:
        return mode
    family = getattr(platform, "target", None) or getattr(platform, "family", None)
    return str(family).lower() == "ice40"


class PopcountEmulation:
    """A platform for simulation only: elaborating with it builds the iCE40 popcount cell
    netlist from Amaranth logic (``primitives="emulate"``), so the simulator checks the
    wiring of the tree the iCE40 synthesis gets. It offers nothing else a platform does.
    """

    popcount_primitives = "emulate"


def popcount_tree(m, bits, *, stages=0, enable=1, group=8, name="pop", primitives=False,
                  operands=None, chain_cells=16, tail=1.0):
    """Count the set bits of ``bits``; return ``(count, latency)``.

    ``latency == stages``: ``stages`` register levels split the tree (registers update
    while ``enable``). ``primitives`` selects the circuit (see the module docstring and
    :func:`popcount_primitives`). The iCE40 cell tree needs to know what ``bits`` are made
    of, to fold that into its first LUTs: ``operands=(a, b)`` when
    ``bits == ~(a ^ b)``, ``operands=(a, b, sel)`` when ``bits == Mux(sel, a & b, ~(a ^ b))``
    (``sel`` one bit). Without ``operands`` the behavioural tree is built whatever
    ``primitives`` says. ``group`` is the behavioural tree's group size, ``chain_cells``
    the cell tree's longest carry chain, ``tail`` the logic depth behind the count that
    shares its last pipeline stage (the caller's accumulator), in adder levels: the cell
    tree places its registers to balance that too.
    """
    if primitives and operands is not None and len(bits):
        return _cell_tree(m, bits, operands, stages=stages, enable=enable, name=name,
                          prims=primitives, chain_cells=chain_cells, tail=tail)
    return _behavioural_tree(m, bits, stages=stages, enable=enable, group=group, name=name)


def _behavioural_tree(m, bits, *, stages, enable, group, name):
    # The count is built in levels: level 1 adds groups of `group` bits, each later level
    # adds groups of `group` counts of the level below. Each group is a flat sum(), which
    # Yosys turns into a compressor tree that absorbs the XNOR/AND in front of it into the
    # same LUT4s (2.55 LUT4 per bit at 64 bits against 3.1 for a balanced tree of `+`,
    # measured with synth_ice40). The first `stages` levels end in a register (a cell's
    # flip-flop sits behind its own LUT, so these cost no extra cells); with more stages
    # than levels the total is registered again.
    values = [bits[i] for i in range(len(bits))]
    level = latency = 0
    while len(values) > 1 or latency < stages:
        if len(values) > 1:
            summed = []
            for k in range(0, len(values), group):
                part = values[k:k + group]
                width = sum((1 << len(v)) - 1 for v in part).bit_length()
                total = Signal(width, name=f"{name}_l{level}_{k // group}")
                m.d.comb += total.eq(sum(part))
                summed.append(total)
            values = summed
        if latency < stages:
            registered = []
            for k, value in enumerate(values):
                # No reset: a cell's flip-flop packs with its LUT only when their control
                # nets match, and pipeline data never needs one.
                reg = Signal(len(value), name=f"{name}_r{level}_{k}", reset_less=True)
                with m.If(enable):
                    m.d.sync += reg.eq(value)
                registered.append(reg)
            values, latency = registered, latency + 1
        level += 1
    if not values:  # zero-width input
        return Signal(1, name=f"{name}_empty"), latency
    return values[0], latency


# The iCE40 cell tree ------------------------------------------------------------------------

def _init(fn):
    """``LUT_INIT`` of the 4-input function ``fn(i0, i1, i2, i3)``."""
    return Const(sum(1 << i for i in range(16)
                     if fn(i & 1, (i >> 1) & 1, (i >> 2) & 1, (i >> 3) & 1)), 16)


def _xnor(a, b):
    return 1 - (a ^ b)


def _op(a, b, s):
    # The PE's bit function with an operation select: AND when s, else XNOR.
    return a & b if s else _xnor(a, b)


# A carry-chain cell's sum (I1 ^ I2 ^ I3 with I3 the carry-in) and a carry-out cell's
# pass-through of its carry-in to the fabric.
_SUM = _init(lambda i0, i1, i2, i3: i1 ^ i2 ^ i3)
_PASS = _init(lambda i0, i1, i2, i3: i3)
# XNOR mode, inputs (a, b): one operand bit.
_X1 = _init(lambda a, b, _2, _3: _xnor(a, b))
# XNOR mode, full adder of (x0, x1, xnor(a2, b2)) on inputs (x0, x1, a2, b2).
_X3_S = _init(lambda x0, x1, a, b: x0 ^ x1 ^ _xnor(a, b))
_X3_C = _init(lambda x0, x1, a, b: int(x0 + x1 + _xnor(a, b) >= 2))
# Select mode, inputs (a, b, sel): one operand bit.
_S1 = _init(lambda a, b, s, _3: _op(a, b, s))
# Select mode, full adder of three operand bits (x0, x1, x2), each from an _S1 LUT (five
# inputs would be needed to fold the third one in).
_S3_S = _init(lambda x0, x1, x2, _3: x0 ^ x1 ^ x2)
_S3_C = _init(lambda x0, x1, x2, _3: int(x0 + x1 + x2 >= 2))


class _Cells:
    """Builds cells as ``SB_LUT4``/``SB_CARRY`` instances or, in ``"emulate"`` mode, as the
    Amaranth logic they compute (a LUT reads its truth table, a carry is a majority)."""

    def __init__(self, m, prims, name):
        self.m, self.emulate, self.name, self.count = m, prims == "emulate", name, 0

    def lut(self, init, ins, out):
        ins = list(ins) + [Const(0, 1)] * (4 - len(ins))
        if self.emulate:
            self.m.d.comb += out.eq(init.bit_select(Cat(*ins), 1))
        else:
            self.m.submodules[f"{self.name}_lut{self.count}"] = Instance(
                "SB_LUT4", p_LUT_INIT=init, i_I0=ins[0], i_I1=ins[1], i_I2=ins[2],
                i_I3=ins[3], o_O=out)
        self.count += 1

    def carry(self, i0, i1, ci):
        co = Signal(name=f"{self.name}_co{self.count}")
        if self.emulate:
            self.m.d.comb += co.eq((i0 & i1) | (i0 & ci) | (i1 & ci))
        else:
            self.m.submodules[f"{self.name}_carry{self.count}"] = Instance(
                "SB_CARRY", i_I0=i0, i_I1=i1, i_CI=ci, o_CO=co)
        self.count += 1
        return co


def _chain(cells, fields, name):
    """One carry chain adding ``fields``, a list of ``(a, b, ci, width)`` with ``ci`` a
    1-bit value (``None`` for the first field); returns one Signal of ``width`` per field.

    Each bit is one cell: a LUT computing the sum bit and the ``SB_CARRY`` packed with it.
    A field ends in a carry-out cell whose LUT passes the carry to the fabric; with both
    its carry inputs tied to the next field's ``ci`` it also starts that field
    (``maj(x, x, c) = x``), so a chain needs no extra cell to inject a carry-in.
    """
    outs = [Signal(w, name=f"{name}_f{f}") for f, (_, _, _, w) in enumerate(fields)]
    zero = Const(0, 1)
    carry = zero
    for f, ((a, b, _, width), o) in enumerate(zip(fields, outs)):
        k = max(len(a), len(b))
        last = f + 1 == len(fields)
        nci = zero if last else fields[f + 1][2]
        for j in range(k):
            aj = a[j] if j < len(a) else zero
            bj = b[j] if j < len(b) else zero
            cells.lut(_SUM, [zero, aj, bj, carry], o[j])
            if j + 1 < width or not last:
                carry = cells.carry(aj, bj, carry)
        if width > k:  # the carry-out cell
            cells.lut(_PASS, [zero, nci, nci, carry], o[k])
            if not last:
                carry = cells.carry(nci, nci, carry)
        else:  # no carry out (e.g. 4 + 1): _schedule ends the chain here
            assert last
    return outs


def _schedule(maxes, n_singles, chain_cells):
    """The adder tree, symbolically: ``(levels, leftover_singles, cells)``.

    ``maxes`` are the largest values of the tree's operands. Each level adds pairs of the
    smallest values (an odd one out waits for the next level); its adders are grouped into
    chains of at most ``chain_cells`` cells, and every adder of a chain but the first takes
    one of the ``n_singles`` single bits as its carry-in. A level is ``(carry_over,
    chains)``, each chain a list of ``(i, j, use_ci, width, max)`` over the level's values.
    """
    vals = list(maxes)
    levels, cells, singles = [], 0, n_singles
    while len(vals) > 1:
        order = sorted(range(len(vals)), key=lambda i: vals[i])
        chains, cur, used, co = [], [], 0, False
        start = len(order) % 2
        carry_over = [order[0]] if start else []
        for p in range(start, len(order), 2):
            i, j = order[p], order[p + 1]
            mx = vals[i] + vals[j]
            k = max(vals[i].bit_length(), vals[j].bit_length())
            # A carry-in needs the previous field's carry-out cell to start this field.
            if cur and co and singles and used + (mx + 1).bit_length() <= chain_cells:
                singles -= 1
                w = (mx + 1).bit_length()
                cur.append((i, j, True, w, mx + 1))
                used += w
            else:
                if cur:
                    chains.append(cur)
                w = mx.bit_length()
                cur, used = [(i, j, False, w, mx)], w
            co = w > k
            cells += w
        chains.append(cur)
        levels.append((carry_over, chains))
        vals = [vals[i] for i in carry_over] + [c[4] for ch in chains for c in ch]
    return levels, singles, cells


@functools.lru_cache(maxsize=None)
def _plan(n, select, chain_cells):
    """How to split ``n`` operand bits: ``(triples, ones)``, the rest being carry-ins.

    A triple is a LUT full adder (4 LUTs with the XNOR folded in, 5 in select mode), a one
    a 1-bit tree operand, a carry-in a single bit an adder takes for free; every bit not in
    a triple costs its own LUT. The plan is the cheapest with no carry-in left unused.
    """
    triple_cost = 5 if select else 4
    best = None
    for t in range(max(0, n // 3 - n // 4 - 1), n // 3 + 1):
        s = n - 3 * t
        for k in range(0, s + 1):
            if t + k == 0:
                continue
            _, left, cells = _schedule([3] * t + [1] * k, s - k, chain_cells)
            if not left:
                cost = triple_cost * t + (n - 3 * t) + cells
                if best is None or cost < best[0]:
                    best = (cost, t, k)
                break
    return best[1], best[2]


def _register_after(nlev, stages, tail=1.0):
    """Levels (0: the first LUT level, i: adder level i) to end in a register: ``stages``
    boundaries that split the logic depth most evenly."""
    # Logic depth in adder levels: the first LUT level (two LUTs deep, a LUT feeding
    # another), each adder level, and the caller's logic behind the count.
    weights = [1.5] + [1.0] * nlev + [tail]
    total = sum(weights)
    after = []
    for r in range(stages):
        target = total * (r + 1) / (stages + 1)
        best, acc = None, 0.0
        for lvl, w in enumerate(weights[:-1]):
            acc += w
            if best is None or abs(acc - target) < best[0]:
                best = (abs(acc - target), lvl)
        after.append(best[1])
    return after


def _cell_tree(m, bits, operands, *, stages, enable, name, prims, chain_cells, tail):
    n = len(bits)
    select = len(operands) == 3
    a, b = operands[0], operands[1]
    sel = operands[2] if select else None
    assert len(a) == len(b) == n
    cells = _Cells(m, prims, name)
    t, k_ones = _plan(n, select, chain_cells)

    def bit(i):
        x = Signal(name=f"{name}_x{i}")
        if select:
            cells.lut(_S1, [a[i], b[i], sel], x)
        else:
            cells.lut(_X1, [a[i], b[i]], x)
        return x

    # Level 1: LUT full adders on triples, a LUT per remaining bit.
    values = []
    for k in range(t):
        s = Signal(2, name=f"{name}_fa{k}")
        x0, x1 = bit(3 * k), bit(3 * k + 1)
        if select:
            ins, init_s, init_c = [x0, x1, bit(3 * k + 2)], _S3_S, _S3_C
        else:
            ins, init_s, init_c = [x0, x1, a[3 * k + 2], b[3 * k + 2]], _X3_S, _X3_C
        cells.lut(init_s, ins, s[0])
        cells.lut(init_c, ins, s[1])
        values.append((s, 3))
    singles = [bit(i) for i in range(3 * t, n)]
    values += [(s, 1) for s in singles[:k_ones]]
    singles = singles[k_ones:]
    levels, left, _ = _schedule([mx for _, mx in values], len(singles), chain_cells)
    assert left == 0 or not levels

    reg_after = _register_after(len(levels), stages, tail)
    latency = 0

    def register(lvl):
        # Every registered bit is a LUT output, so its flip-flop shares the LUT's cell. No
        # reset: a flip-flop packs with its LUT only when their control nets match.
        nonlocal values, singles, latency
        regs = []
        for i, (v, mx) in enumerate(values):
            reg = Signal(len(v), name=f"{name}_r{lvl}_{i}", reset_less=True)
            with m.If(enable):
                m.d.sync += reg.eq(v)
            regs.append((reg, mx))
        sregs = []
        for i, v in enumerate(singles):
            reg = Signal(name=f"{name}_rs{lvl}_{i}", reset_less=True)
            with m.If(enable):
                m.d.sync += reg.eq(v)
            sregs.append(reg)
        values, singles, latency = regs, sregs, latency + 1

    for _ in range(reg_after.count(0)):
        register(0)
    for lvl, (carry_over, chains) in enumerate(levels, 1):
        nxt = [values[i] for i in carry_over]
        for c, chain in enumerate(chains):
            fields = [(values[i][0], values[j][0], singles.pop() if use_ci else None, w)
                      for i, j, use_ci, w, _ in chain]
            outs = _chain(cells, fields, f"{name}_l{lvl}_{c}")
            nxt += [(o, f[4]) for o, f in zip(outs, chain)]
        values = nxt
        for _ in range(reg_after.count(lvl)):
            register(lvl)
    assert len(values) == 1 and not singles
    assert latency == stages
    return values[0][0], latency
