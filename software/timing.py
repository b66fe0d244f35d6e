"""Cycle model of the accelerator, calibrated against the gateware (``hw/accelerator.py``).

The ISS executes instructions with the golden models; this model says when. It follows the
controller: a front end that fetches instruction words from the host link (one beat a
cycle), checks them (five cycles), runs ``LOAD`` and ``STORE`` itself and hands compute
instructions to their engine, which runs while the front end goes on. A ``LOAD`` or
``STORE`` whose region overlaps the running instruction's regions, the next compute
instruction and ``HALT`` wait for the engine. Cycle counts are those of the ``STATUS``
record's ``cycles``: the host link is assumed to keep up (the gateware does not count
cycles in which it only waits for the host).

The engine figures were measured on the gateware (``tests/test_timing.py`` checks the whole
model against the RTL within 5% on the test programs, ``docs/accelerator.md`` explains
each term):

* ``GEMM_XNOR``: a beat every ``S = max(rows, cols)`` cycles (one word per buffer per
  cycle), one cycle per skipped bit-plane pair, ``max(0, rows * cols - 1 - S)`` cycles
  between tiles (the array waits while the previous tile is written back), and
  ``5 + rows * cols`` cycles of start-up and final write-back;
* ``GEMM_LNS``: two cycles per beat, at least ``gamma + 1`` per dot product (the
  finaliser), plus ``gamma + 7``;
* ``NORM``: per channel group, one cycle per parameter word plus 1-2 to send them, and per
  row ``block + 1..2`` cycles; ``STATISTICS`` adds ``2 * block`` cycles per group to write
  sums and spreads;
* ``MAXPOOL``: ``window + 2`` cycles per output word.
"""

from .isa import NormMode, Opcode, instruction_set, lns_row_words, row_words

__all__ = ["Timing", "CHECK_CYCLES"]

#: Cycles from an instruction's last fetch beat to its dispatch (PRECHECK, 4 x CHECK: three
#: regions through a two-stage checker).
CHECK_CYCLES = 5
#: Share of front-end buffer accesses that cost a running engine a cycle, given that the
#: engine wanted the buffer then: the engines' staging registers absorb the rest
#: (measured on the MLP benchmark and the digits program, docs/accelerator.md).
STEAL = 0.75


def _ceil(a, b):
    return -(-a // b)


class Timing:
    """The cycle timeline of one program on one accelerator configuration.

    ``fe`` is the cycle in which the front end takes the next instruction's first beat
    (the program's first beat is cycle 0); ``engine_idle`` the first cycle in which no
    engine runs; ``regions`` the running instruction's buffer regions (``lo``, ``hi``) by
    buffer name.
    """

    def __init__(self, config):
        self.config = config
        self.isa = instruction_set(config)
        link = config.host_link_bits
        self.fetch = self.isa.width // link
        self.word_beats = config.word // link
        self.header_beats = 64 // link
        self.fe = 0
        self.engine_idle = 0
        self.tx_free = 0
        self.regions = {}
        self.uses = {}
        self.finished = None

    # Hazards and buffer-port sharing ---------------------------------------------------

    def _wait_hazard(self, buffer, lo, hi, ready):
        # A LOAD/STORE waits (from cycle `ready`) while it overlaps the running instruction.
        span = self.regions.get(buffer)
        if span and ready < self.engine_idle and lo < span[1] and span[0] < hi:
            return self.engine_idle
        return ready

    def _steal(self, buffer, start, words):
        # A front-end access costs the running engine a cycle when the engine was about to
        # use that buffer in that cycle: on average, its share of the engine's cycles.
        share = self.uses.get(buffer, 0)
        if share and start < self.engine_idle:
            self.engine_idle += round(words * share * STEAL)

    # Instructions ------------------------------------------------------------------------

    def dispatch(self):
        """The cycle of the current instruction's dispatch (after fetch and checks)."""
        return self.fe + self.fetch + CHECK_CYCLES

    def load(self, instr):
        buffer = instr["buffer"].name.lower()
        addr, count = instr["addr"], instr["count"]
        wait = self._wait_hazard(buffer, addr, addr + count, self.dispatch() + 1)
        start = wait + 1
        beats = count * self.word_beats
        self._steal(buffer, start, min(count, max(0, self.engine_idle - start)
                                       // self.word_beats + 1))
        self.fe = start + beats + 1

    def store(self, instr):
        buffer = instr["buffer"].name.lower()
        addr, count = instr["addr"], instr["count"]
        ready = max(self.dispatch() + 1, self.tx_free)
        header = self._wait_hazard(buffer, addr, addr + count, ready)
        period = max(self.word_beats, 3)
        last = header + self.header_beats + (count - 1) * period
        self._steal(buffer, header, count)
        self.fe = last + 1
        self.tx_free = last + self.word_beats

    def compute(self, instr, span, regions, uses=None):
        """Start ``instr``'s engine for ``span`` cycles (busy) on ``regions``; ``uses``
        gives, per buffer, the share of those cycles in which the engine accesses it (all
        of them by default)."""
        start = max(self.dispatch() + 1, self.engine_idle)
        self.engine_idle = start + span + 1
        self.regions = regions
        self.uses = {buffer: 1.0 for buffer in regions} if uses is None else uses
        self.fe = start + 1

    def halt(self):
        self.finished = max(self.dispatch() + 1, self.engine_idle)
        return self.finished

    def fault(self):
        """A refused instruction: counting stops at its dispatch."""
        self.finished = self.dispatch()
        return self.finished

    def truncated(self, received_bytes):
        """The host stopped ``received_bytes`` into an instruction (or its data)."""
        beats = received_bytes * 8 // self.config.host_link_bits
        if received_bytes >= self.isa.bytes:
            beats += CHECK_CYCLES + 2  # a LOAD whose data stopped: its checks and wait ran
        self.finished = max(self.fe + beats, self.engine_idle)
        return self.finished

    # Engine spans (busy cycles) ----------------------------------------------------------

    def span(self, instr):
        """Busy cycles of a compute instruction's engine, its buffer regions, and the
        share of its cycles that access each buffer (``None``: every cycle)."""
        result = getattr(self, f"_{instr['opcode'].name.lower()}")(instr)
        return result if len(result) == 3 else (*result, None)

    def _gemm_regions(self, instr, a_row, b_row):
        def hull(addr, rows, row, stride):
            return (addr, addr + (rows - 1) * stride + row)
        return {"act": hull(instr["a_addr"], instr["m"], a_row, instr["a_stride"]),
                "weight": hull(instr["b_addr"], instr["n"], b_row, instr["b_stride"]),
                "out": hull(instr["c_addr"], instr["m"], instr["n"], instr["c_stride"])}

    def _gemm_xnor(self, instr):
        array, word = self.config.xnor_array, self.config.word
        rows, cols = array.rows, array.cols
        s = max(rows, cols)
        m, n, k = instr["m"], instr["n"], instr["k"]
        ab, wb = instr["act_bits"], instr["weight_bits"]
        nw = _ceil(k, word)
        if ab == wb == 1:
            pairs, iterations, trailing = 1, 1, 0
        else:
            na = 2 if ab == 1 else ab
            nb = 2 if wb == 1 else wb
            top = (1 if ab == 1 else ab - 1) + (1 if wb == 1 else wb - 1)
            pairs, iterations = na * nb, (top + 1) * na
            # Group 0 has one pass: the act plane of exponent 0 (last for binary acts).
            trailing = 0 if ab == 1 else na - 1
        tiles = _ceil(m, rows) * _ceil(n, cols)
        per_tile = pairs * nw * s + iterations - pairs
        # A binary tile's results drain while the next tile computes, which waits for them;
        # a bit-serial tile's group passes hide part of the drain, from none to all of it
        # by shape: half is the fit (4x4 array: within 2.6% on seven bit-serial shapes,
        # where the full drain overestimated the digits BNN's first layer by 5%).
        drain = max(0, rows * cols - 1 - s)
        if not ab == wb == 1:
            drain //= 2
        span = tiles * per_tile - trailing + (tiles - 1) * drain + 5 + rows * cols
        # Gather cycles that read each buffer: a binary operand's ones plane is made, not
        # read, and a slot past the tile's rows or columns reads nothing.
        data_a = pairs if ab == wb == 1 else (pairs // 2 if ab == 1 else pairs)
        data_w = pairs if ab == wb == 1 else (pairs // 2 if wb == 1 else pairs)
        uses = {"act": tiles * data_a * nw * min(rows, m) / span,
                "weight": tiles * data_w * nw * min(cols, n) / span,
                "out": tiles * rows * cols / span}
        regions = self._gemm_regions(instr, row_words(k, ab, word), row_words(k, wb, word))
        return span, regions, uses

    def _gemm_lns(self, instr):
        lns = self.config.lns_mac
        beats = _ceil(instr["k"], lns.lanes)
        dots = instr["m"] * instr["n"]
        span = dots * max(2 * beats, lns.gamma + 1) + lns.gamma + 7
        row = lns_row_words(instr["k"], lns.bits, self.config.word)
        words = dots * row / span
        return span, self._gemm_regions(instr, row, row), {
            "act": words, "weight": words, "out": dots / span}

    def _norm(self, instr):
        norm, isa = self.config.lightnorm, self.isa
        b, mode = norm.block, instr["mode"]
        channels, rows = instr["channels"], instr["rows"]
        groups = _ceil(channels, b)
        # A group's last read (or, past `channels`, none) delays its send by a cycle.
        last = sum(1 for g in range(groups) if g * b + b - 1 < channels)
        data = rows * (groups * (b + 1) + last)
        dst_row = isa.norm_dst_words(mode, channels)
        regions = {"out": (instr["src_addr"], instr["src_addr"]
                           + (rows - 1) * instr["src_stride"] + channels)}
        if mode == NormMode.STATISTICS:
            span = data + 2 * b * groups + 2
            regions["out"] = (min(regions["out"][0], instr["dst_addr"]),
                              max(regions["out"][1],
                                  instr["dst_addr"] + instr["dst_stride"] + dst_row))
            return span, regions
        if mode == NormMode.NORMALISE:
            params = groups * (2 * b + 4)
            tail = 7 + isa.norm_block_words()
        else:
            params = groups * (b * (norm.thresholds + 1) + 1) + last
            tail = 3 + norm.levels
        regions["act"] = (instr["dst_addr"], instr["dst_addr"]
                          + (rows - 1) * instr["dst_stride"] + dst_row)
        regions["weight"] = (instr["param_addr"], instr["param_addr"]
                             + isa.norm_param_words(mode, channels))
        span = params + data + tail
        reads = groups * b * (norm.thresholds + 1 if mode != NormMode.NORMALISE else 2)
        return span, regions, {"weight": reads / span, "out": rows * groups * b / span,
                               "act": rows * dst_row / span}

    def _maxpool(self, instr):
        rows, row, window = instr["rows"], instr["row_words"], instr["window"]
        src, dst = instr["src_addr"], instr["dst_addr"]
        lo = min(src, dst)
        hi = max(src + rows * window * row, dst + rows * row)
        return rows * row * (window + 2) + 1, {"act": (lo, hi)}

    def instruction(self, instr):
        """Advance over one executed instruction; return the cycle it ends (``HALT``) or
        ``None``."""
        op = instr["opcode"]
        if op == Opcode.LOAD:
            self.load(instr)
        elif op == Opcode.STORE:
            self.store(instr)
        elif op == Opcode.HALT:
            return self.halt()
        else:
            span, regions, uses = self.span(instr)
            self.compute(instr, span, regions, uses)
        return None
