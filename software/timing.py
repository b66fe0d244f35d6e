"""The accelerator's cycle model: the gateware's schedule, exactly, for an ideal host.

The gateware (``docs/accelerator.md``) has three stages that run at once: the front end
(instruction fetch and ``LOAD``), the execute stage (``GEMM``, behind a queue) and the store
stage (``STORE``, behind a queue of its own). Nothing arbitrates at run time: each memory
port has one user, and the stages wait for each other only where an instruction's wait
fields (or a full queue) say so. So the cycle at which every event happens follows from
the program alone, instruction by instruction in program order, with the closed forms
below; :class:`Timing` computes them and is what the ISS reports. ``tests/`` check it
against the gateware's own count, cycle for cycle.

"Ideal host": a host-link beat is available every cycle the accelerator wants one, and
every beat it sends is taken at once (what the testbenches do). Over a real link the
accelerator waits for the host and its ``cycles`` counter leaves out the cycles in which
it did nothing else.

Per instruction (``IB`` beats per instruction word, ``WB = word / link`` beats per lane,
``HB = 64 / link`` beats per ``DATA`` header, cycle 0 the first beat of the program):

* every instruction: ``IB`` fetch cycles, a check cycle (the instruction check's verdict is
  registered), then a decode cycle ``d``;
* ``GEMM`` / ``STORE``: pushed into its queue at ``d``, or once the queue has room;
* ``LOAD``: checks its wait fields from ``d + 1`` and starts the cycle after they hold (at
  ``d + 2`` at the earliest), then ``count * lanes * WB`` beats;
* ``UPDATE``: waits as a ``LOAD`` does, and until every earlier ``STORE`` is sent; then per
  latent word a read, a latch, ``word * 8 / link`` gradient beats, two cycles of the update
  pipeline, a collect cycle and the write: ``beats + 5`` cycles a word;
* ``HALT``: waits from ``d + 1`` until every stage has been idle for a cycle (the verdict
  is registered); the program's ``cycles`` end there.

The execute stage pops a ``GEMM`` once it is idle, the ``GEMM`` was pushed two cycles
before or earlier and its waits held in the previous cycle (the verdict is registered); its
tiles (``m_tiles x n_tiles``, ``B = planes * words`` beats each, ``m_tiles x pool x n_tiles``
when pooling) start when their beats can go and the result stage will be free when they
finish: tile ``i``'s last accumulation lands ``K = B + 1 + pipeline`` cycles after its start, and
the result stage then needs it for ``D`` cycles (``T + out_bits - 1`` for ``THRESHOLD``,
``T = 2^out_bits - 1`` compares and room for the plane writes; ``rows`` for ``SCORES``), so
tiles start every ``max(B, D)`` cycles and a ``GEMM``'s first tile no earlier than
``D + K`` after the previous tile minus its own ``K``. The store stage pops a ``STORE``
once it is idle, two cycles after its push at the earliest, and a cycle after its wait
holds, then sends a ``HB``-beat header and ``count * cols * WB`` data beats.
"""

import dataclasses

from .config.accelerator import AcceleratorConfig
from .isa import Buffer, GemmMode, Opcode, argmax_bytes, instruction_set

__all__ = ["Timing", "GemmTiming"]

NEVER = -(1 << 60)
#: Cycles from an ``ARGMAX`` lane step to the cycle its record word is in the word queue:
#: the rank read, the comparison and the byte's write, the queue's write.
ARGMAX_LATENCY = 3
#: Cycles of an ``UPDATE`` word besides its gradient beats: the latent read, its latch,
#: the update unit's two stages, the collect cycle and the write.
UPDATE_OVERHEAD = 5
#: Cycles from a ``STATS``'s pop to the cycle its first record word could be sent, when
#: that word is the first beat's (one sample): the score read, the beat queue, the
#: statistics unit's two stages and the word queue.
STATS_LATENCY = 5


@dataclasses.dataclass
class GemmTiming:
    """When one ``GEMM``'s events happen (cycles of the program)."""

    pushed: int
    popped: int
    first_tile: int
    read: int      #: last beat issued (operands all read)
    written: int   #: last result written
    beats: int
    holds: int


class Timing:
    """The cycle model of one configuration, fed instruction by instruction.

    Parameters
    ----------
    config : AcceleratorConfig

    Call :meth:`step` with each instruction dict in program order (``HALT`` last); then
    :attr:`cycles`, :attr:`beats` and :attr:`holds` are those of the status record.
    """

    def __init__(self, config):
        if not isinstance(config, AcceleratorConfig):
            raise TypeError(f"config must be an AcceleratorConfig, not {config!r}")
        self.config = config
        self.isa = isa = instruction_set(config)
        link = config.host_link_bits
        self.fetch_beats = isa.width // link
        #: Cycles from an instruction's first fetch beat to its decode: the fetch beats and
        #: the cycle in which the instruction check's verdict is registered.
        self.decode_delay = self.fetch_beats + 1
        self.lane_beats = config.word // link
        self.header_beats = 64 // link
        #: Gradient beats of one latent word (``word`` bytes).
        self.update_beats = config.word * 8 // link
        self.reset()

    def reset(self):
        """Start a new program (its first beat is cycle 0)."""
        self.t = 0                 # cycle of the next instruction's first beat
        self.gemms = []            # GemmTiming per GEMM, program order
        self.store_pop = []
        self.store_end = []
        self.exec_idle = 0         # first cycle the execute stage is idle
        self.store_idle = 0
        self.res_end = NEVER       # first cycle the result stage can take a capture
        self.cycles = 0
        self.beats = 0
        self.holds = 0
        self.trace = []

    def illegal(self):
        """The program ends at the next instruction, which the gateware refuses: it stops
        counting cycles at that instruction's decode."""
        self.cycles = self.t + self.decode_delay

    # Helpers: the cycle from which a counter shows that event n-1 (0-based) happened.
    def _read_by(self, n):
        return self.gemms[n - 1].read + 1 if n > 0 else NEVER

    def _written_by(self, n):
        return self.gemms[n - 1].written + 1 if n > 0 else NEVER

    def _stored_by(self, n):
        return self.store_end[n - 1] + 1 if n > 0 else NEVER

    def step(self, instr):
        """Advance over one instruction; return the cycle its front-end work ends."""
        cfg, op = self.config, instr["opcode"]
        start = self.t
        d = self.t + self.decode_delay
        q = cfg.queue_depth
        if op == Opcode.GEMM:
            j = len(self.gemms)
            push = d if j < q else max(d, self.gemms[j - q].popped + 1)
            self._gemm(instr, push, len(self.store_end))
            self.t = push + 1
        elif op == Opcode.STORE:
            k = len(self.store_end)
            push = d if k < q else max(d, self.store_pop[k - q] + 1)
            self._store(instr, push, len(self.gemms))
            self.t = push + 1
        elif op in (Opcode.STATS, Opcode.ARGMAX):
            k = len(self.store_end)
            push = d if k < q else max(d, self.store_pop[k - q] + 1)
            if op == Opcode.STATS:
                self._stats(instr, push, len(self.gemms))
            else:
                self._argmax(instr, push, len(self.gemms))
            self.t = push + 1
        elif op == Opcode.LOAD:
            g = len(self.gemms)
            # The waits are checked from d + 1 and acted on a cycle after they hold.
            wait = max(d + 2, self._read_by(g - instr["unread"]) + 1,
                       self._written_by(g - instr["unwritten"]) + 1)
            if instr["buffer"] == Buffer.WEIGHT and cfg.weight_single_port:
                wait = max(wait, self._read_by(g) + 1)
            if instr["buffer"] in (Buffer.LATENT, Buffer.RANK):
                # The latent memory's read port serves STORE, the rank memory's ARGMAX:
                # their writers wait for every store-stage instruction.
                wait = max(wait, self._stored_by(len(self.store_end)) + 1)
            beats = self.isa.link_words(instr) * self.lane_beats
            self.t = wait + beats + 1
        elif op == Opcode.UPDATE:
            g = len(self.gemms)
            wait = max(d + 2, self._read_by(g - instr["unread"]) + 1,
                       self._written_by(g - instr["unwritten"]) + 1,
                       self._stored_by(len(self.store_end)) + 1)
            per_word = self.update_beats + UPDATE_OVERHEAD
            self.t = wait + 1 + instr["count"] * per_word
        elif op == Opcode.HALT:
            # The stages' idleness is registered: seen a cycle after it begins.
            end = max(d + 1, self._written_by(len(self.gemms)) + 1,
                      self._stored_by(len(self.store_end)) + 1)
            self.cycles = end
            self.t = end
        self.trace.append({"opcode": op.name, "start": start, "end": self.t})
        return self.t

    def _gemm(self, instr, push, stores_before):
        cfg = self.config
        # The execute stage checks the queue head's waits a cycle before it pops: the entry
        # is visible from push + 1, its waits' events from the cycle after them.
        popped = max(push + 2, self.exec_idle)
        if instr["sync"]:
            popped = max(popped, self._written_by(len(self.gemms)) + 1)
        popped = max(popped, self._stored_by(stores_before - instr["unsent"]) + 1)
        beats = instr["planes"] * instr["words"]
        threshold = instr["mode"] == GemmMode.THRESHOLD
        # THRESHOLD: T compare cycles, and the next tile's compares must not end before
        # this one's out_bits plane writes (T' >= 1): D = T + out_bits - 1.
        hold = (1 << instr["out_bits"]) + instr["out_bits"] - 2 if threshold else cfg.rows
        lead = beats + 1 + cfg.xnor_array.pipeline
        period = max(beats, hold)
        # A pooled GEMM's tiles are ordinary tiles to the schedule: the result stage
        # takes every one (it keeps the window's largest count).
        tiles = instr["m_tiles"] * instr["pool"] * instr["n_tiles"]
        # A popped GEMM's first tile starts two cycles after the pop at the earliest (the
        # hold's verdict settles for a cycle).
        first = max(popped + 2, self.res_end - lead)
        last = first + (tiles - 1) * period
        capture = last + lead
        self.res_end = capture + hold
        count = (1 << instr["out_bits"]) - 1
        # THRESHOLD: T compares, their verdicts counted a cycle later, out_bits plane writes.
        written = capture + (count + instr["out_bits"] + 1 if threshold else hold)
        holds = (first - popped - 2) + (tiles - 1) * (period - beats)
        self.exec_idle = last + beats
        self.beats += tiles * beats
        self.holds += holds
        self.gemms.append(GemmTiming(push, popped, first, last + beats - 1, written,
                                     tiles * beats, holds))

    def _store(self, instr, push, gemms_before):
        # Its wait is checked a cycle before the pop, as a GEMM's.
        popped = max(push + 2, self.store_idle,
                     self._written_by(gemms_before - instr["unwritten"]) + 1)
        beats = self.header_beats + self.isa.link_words(instr) * self.lane_beats
        end = popped + beats
        self.store_idle = end + 1
        self.store_pop.append(popped)
        self.store_end.append(end)

    def _stats(self, instr, push, gemms_before):
        # Popped as a STORE. One score word is read a cycle; a group's record word is
        # ready STATS_LATENCY cycles after the pop plus the beats before its last-sample
        # beat, and then the link sends the words back to back.
        popped = max(push + 2, self.store_idle,
                     self._written_by(gemms_before - instr["unwritten"]) + 1)
        groups, samples = instr["groups"], instr["samples"]
        ready = popped + STATS_LATENCY + (samples - 1) * groups
        start = max(popped + self.header_beats, ready)
        end = start + self.isa.link_words(instr) * self.lane_beats
        self.store_idle = end + 1
        self.store_pop.append(popped)
        self.store_end.append(end)

    def _argmax(self, instr, push, gemms_before):
        # Popped as a STORE. A cycle later the first score word is read; then one lane
        # step a cycle, groups x cols a sample. A sample's last step that completes a
        # record word waits until the word queue will have room for it (every word but the
        # last queue_depth ones taken by the sender); the sender takes each word once it
        # is queued and the previous one (or the header) has gone.
        popped = max(push + 2, self.store_idle,
                     self._written_by(gemms_before - instr["unwritten"]) + 1)
        cfg = self.config
        per = argmax_bytes(cfg)
        steps = instr["groups"] * cfg.cols
        word_beats = cfg.cols * self.lane_beats
        depth = self.isa.store_words_depth
        shift, taken = 0, []
        free = popped + self.header_beats + 1         # the first word beat
        for k in range(self.isa.argmax_words(instr["samples"])):
            sample = min((k + 1) * per, instr["samples"]) - 1
            step = popped + 2 + (sample + 1) * steps - 1 + shift
            if k >= depth:
                step = max(step, taken[k - depth] + 1)
            shift = step - (popped + 2 + (sample + 1) * steps - 1)
            take = max(step + ARGMAX_LATENCY, free)
            taken.append(take)
            free = take + word_beats
        end = free - 1
        self.store_idle = end + 1
        self.store_pop.append(popped)
        self.store_end.append(end)
