"""Weights that stay in the accelerator's memories from one run to the next.

A compiled model's stream starts with a **preamble**: ``LOAD`` s of constant weights and
thresholds (``docs/compiler.md``). A transport whose far side keeps its memories and a tag
saying what they hold (``Transport.keeps_weights``: a board, whose tag lives in its bridge,
:mod:`lowbit.framing`) lets :class:`lowbit.runtime.Runtime` send that preamble only when
the tag is not the preamble's own :func:`weights_tag`:

* the tag matches: the stream goes without its preamble (the weights are there);
* it does not: the tag is cleared first, the whole stream is sent, and once the program
  ended ``OK`` the tag is set to the preamble's. A program that loads weights anywhere
  else clears the tag too.

So the tag names the memories' weights only while they hold exactly those: a run that
failed half-way, another program, or a board that lost its configuration (its tag resets
to zeros) all make the next run send the weights again.
"""

import hashlib

from .isa import Buffer, Opcode, Source, instruction_set
from .program import Program

__all__ = ["NO_TAG", "TAG_BYTES", "split_preamble", "weights_tag", "loads_weights",
           "without_preamble"]

#: Bytes of a tag (the board keeps as many, ``lowbit.framing.TAG_BYTES``).
TAG_BYTES = 8
#: The tag of memories whose weights nobody vouches for.
NO_TAG = bytes(TAG_BYTES)

#: The memories a preamble fills: weights, thresholds and an argmax unit's rank table.
_WEIGHTS = (Buffer.WEIGHT, Buffer.THRESH, Buffer.RANK)


def _is_weight_load(instr):
    return instr["opcode"] == Opcode.LOAD and instr["buffer"] in _WEIGHTS


def split_preamble(program):
    """``(instructions, constants)``: how many leading instructions of ``program`` are
    ``LOAD`` s of constants into the weight, thresh and rank memories, and how many constant
    words they take."""
    isa = instruction_set(program.config)
    count = words = 0
    for instr in program.instructions:
        if not (_is_weight_load(instr) and instr["source"] == Source.CONST):
            break
        count += 1
        words += isa.link_words(instr)
    return count, words


def loads_weights(instructions):
    """Whether any of ``instructions`` writes the weight, thresh or rank memory: a ``LOAD`` of
    them, or an ``UPDATE`` (it writes the new signs into weight lanes)."""
    return any(_is_weight_load(instr) or instr["opcode"] == Opcode.UPDATE
               for instr in instructions)


def weights_tag(program, preamble=None):
    """The tag of ``program``'s preamble: a hash of the configuration, the preamble's
    instruction words and its constants (never :data:`NO_TAG`)."""
    count, words = preamble or split_preamble(program)
    digest = hashlib.sha256(program.config.fingerprint().encode())
    for word in program.words()[:count]:
        digest.update(int(word).to_bytes(16, "little"))
    digest.update(program.constants[:words].astype("<u8").tobytes())
    tag = digest.digest()[:TAG_BYTES]
    return tag if tag != NO_TAG else b"\x01" + tag[1:]


def without_preamble(program, preamble=None):
    """``program`` less its preamble (what runs when the weights are resident)."""
    count, words = preamble or split_preamble(program)
    return Program(program.config, program.instructions[count:], program.constants[words:])
