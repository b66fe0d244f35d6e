"""The race check of accelerator programs: do the wait fields order every pair of memory
accesses that the three stages could otherwise make at once?

The stages (:mod:`lowbit.isa`) run instructions in program order each, the front end
(``LOAD`` inline), the execute stage (``GEMM``) and the store stage (``STORE``), and wait
for each other only where wait fields say so. The ISS runs a program in plain program
order; the gateware computes the same only when the program is *race-free*:

* a ``LOAD`` (or an ``UPDATE``, which writes weights) must not overwrite ``in`` or
  ``weight`` words that an earlier ``GEMM`` may still be reading (``unread``, or
  ``unwritten``: a written ``GEMM`` has read everything), nor ``thresh`` words, which a
  ``GEMM`` reads until it has written its last result (``unwritten`` only);
* a ``STORE`` (or a ``STATS`` or ``ARGMAX``, which read score words in the store stage) must
  not read ``score`` words an earlier ``GEMM`` may still be writing (``unwritten``);
* a ``GEMM`` must not overwrite ``score`` words an earlier ``STORE`` may still be sending
  (``unsent``);
* a ``GEMM`` that reads ``act`` words an earlier ``GEMM`` writes must wait for it
  (``sync``), and no ``GEMM`` may read and write overlapping ``act`` words.

A wait covers more than its own instruction: the front end does not go on until a
``LOAD``'s wait holds, so every later instruction starts after it; the execute stage pops
``GEMM``\\ s in order, so a ``sync`` or ``unsent`` wait holds for every later ``GEMM``; the
store stage pops ``STORE``\\ s in order; a ``LOAD`` into single-ported weight memory waits
until no ``GEMM`` reads operands. :func:`check_races` follows these orders and no others:
it is conservative where the queues' capacity would order two accesses (a full queue
stalls the front end), and ``NO_WAIT`` is taken as never waiting however far back the
other instruction is. Some pairs need no wait at all, and are not checked: a ``GEMM``
reading what a ``LOAD`` before it wrote (the ``LOAD`` is done before the ``GEMM`` is
queued), a ``GEMM`` overwriting ``act`` words an earlier ``GEMM`` reads (its first result
comes after the earlier one's last beat) and two ``GEMM``\\ s writing the same words (one
result stage writes in order). A ``HALT`` waits for every stage.
"""

from .isa import NO_WAIT, GemmMode, Opcode, instruction_set
from .program import Program, ProgramError

__all__ = ["check_races"]


def _after(count, wait):
    # How many of the first `count` instructions a wait of `wait` guarantees done.
    return 0 if wait == NO_WAIT else max(count - wait, 0)


def _nearest(accesses, done, lo, hi):
    # The latest access (number, first, end, index) after the first `done` that overlaps
    # words lo..hi-1, or None.
    for access in reversed(accesses):
        number, first, end, _ = access
        if number < done:
            return None
        if first < hi and lo < end:
            return access
    return None


def _words(lo, hi, first, end):
    return f"words {max(lo, first)}..{min(hi, end) - 1}"


class _Checker:
    # The state of one program (up to a HALT): what each stage may still be doing.

    def __init__(self, config):
        self.config = config
        self.gemm_reads = {}   # memory -> [(gemm number, first, end, index)]
        self.thresh_reads = []
        self.gemm_writes = {}  # memory -> [(gemm number, first, end, index)]
        self.store_reads = []  # [(store number, first, end, index)]
        self.gemms = 0
        self.stores = 0
        self.front_read = 0    # GEMMs done reading, for everything after the front end
        self.front_written = 0
        self.exec_written = 0  # GEMMs written before the next GEMM pops
        self.exec_sent = 0     # STOREs sent before the next GEMM pops
        self.store_written = 0  # GEMMs written before the next STORE pops

    def load(self, index, instr, memory, lo, hi, name="LOAD"):
        g = self.gemms
        self.front_written = max(self.front_written, _after(g, instr["unwritten"]))
        self.front_read = max(self.front_read, self.front_written, _after(g, instr["unread"]))
        if memory == "weight" and self.config.weight_single_port:
            # Single-ported weight RAM: the LOAD waits until no GEMM reads operands.
            self.front_read = g
        if memory == "thresh":
            hit = _nearest(self.thresh_reads, self.front_written, lo, hi)
            advice = (f"thresholds are read until a GEMM is written: give the LOAD "
                      f"unwritten at most {{rank}}")
        else:
            hit = _nearest(self.gemm_reads.get(memory, []), self.front_read, lo, hi)
            advice = "give the LOAD unread or unwritten at most {rank}"
        if hit:
            number, first, end, other = hit
            raise ProgramError(
                f"race: instruction {index} ({name}) may overwrite "
                f"{_words(lo, hi, first, end)} of the {memory} memory while instruction "
                f"{other} (GEMM) may still read them "
                f"({advice.format(rank=g - 1 - number).replace('LOAD', name)})")

    def store(self, index, instr, memory, lo, hi, name="STORE"):
        g = self.gemms
        self.store_written = max(self.store_written, self.front_written,
                                 _after(g, instr["unwritten"]))
        hit = _nearest(self.gemm_writes.get(memory, []), self.store_written, lo, hi)
        if hit:
            number, first, end, other = hit
            raise ProgramError(
                f"race: instruction {index} ({name}) may read {_words(lo, hi, first, end)} of "
                f"the {memory} memory while instruction {other} (GEMM) may still write them "
                f"(give the {name} unwritten at most {g - 1 - number})")
        self.store_reads.append((self.stores, lo, hi, index))
        self.stores += 1

    def gemm(self, index, instr, regions):
        g, s = self.gemms, self.stores
        self.exec_written = max(self.exec_written, self.front_written,
                                g if instr["sync"] else 0)
        self.exec_sent = max(self.exec_sent, _after(s, instr["unsent"]))
        reads = [(m, lo, lo + n) for m, lo, n, access in regions if access == "r"]
        writes = [(m, lo, lo + n) for m, lo, n, access in regions if access == "w"]
        for memory, lo, hi in reads:
            for out, first, end in writes:
                if out == memory and first < hi and lo < end:
                    raise ProgramError(
                        f"race: instruction {index} (GEMM) reads and writes "
                        f"{_words(lo, hi, first, end)} of the {memory} memory")
            hit = _nearest(self.gemm_writes.get(memory, []), self.exec_written, lo, hi)
            if hit:
                _, first, end, other = hit
                raise ProgramError(
                    f"race: instruction {index} (GEMM) may read {_words(lo, hi, first, end)} "
                    f"of the {memory} memory while instruction {other} (GEMM) may still "
                    f"write them (set the GEMM's sync)")
        for memory, lo, hi in writes:
            if instr["mode"] != GemmMode.SCORES:
                continue
            hit = _nearest(self.store_reads, self.exec_sent, lo, hi)
            if hit:
                number, first, end, other = hit
                raise ProgramError(
                    f"race: instruction {index} (GEMM) may overwrite "
                    f"{_words(lo, hi, first, end)} of the {memory} memory while instruction "
                    f"{other} (STORE) may still send them (give the GEMM unsent at most "
                    f"{s - 1 - number})")
        for memory, lo, hi in reads:
            target = self.thresh_reads if memory == "thresh" else \
                self.gemm_reads.setdefault(memory, [])
            target.append((g, lo, hi, index))
        for memory, lo, hi in writes:
            self.gemm_writes.setdefault(memory, []).append((g, lo, hi, index))
        self.gemms += 1


def check_races(program):
    """Refuse a program whose wait fields leave a race (see the module docstring).

    Parameters
    ----------
    program : lowbit.program.Program

    Raises
    ------
    TypeError
        If ``program`` is not a :class:`~lowbit.program.Program`.
    lowbit.program.ProgramError
        For the first race in program order, naming both instructions, the memory, the
        words and the wait that would order them.
    """
    if not isinstance(program, Program):
        raise TypeError(f"program must be a Program, not {program!r}")
    isa = instruction_set(program.config)
    state = _Checker(program.config)
    for index, instr in enumerate(program.instructions):
        op = instr["opcode"]
        regions = isa.regions(instr)
        if op == Opcode.LOAD:
            (memory, lo, n, _), = regions
            state.load(index, instr, memory, lo, lo + n)
        elif op == Opcode.UPDATE:
            # Its weight lanes are written as a LOAD writes (the latent memory is the
            # front end's alone: an UPDATE waits for every STORE before it).
            (memory, lo, n, _), = [r for r in regions if r[0] == "weight"]
            state.load(index, instr, memory, lo, lo + n, "UPDATE")
        elif op in (Opcode.STORE, Opcode.STATS, Opcode.ARGMAX):
            # A STATS or ARGMAX reads score words in the store stage, in order with the
            # STOREs (an ARGMAX's rank memory is the store stage's alone: a LOAD into it
            # waits for every store-stage instruction before it).
            (memory, lo, n, _), = [r for r in regions if r[0] != "rank"]
            state.store(index, instr, memory, lo, lo + n, op.name)
        elif op == Opcode.GEMM:
            state.gemm(index, instr, regions)
        else:
            state = _Checker(program.config)   # HALT: every stage is idle
