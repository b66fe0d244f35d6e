"""Program files: round trip, refusal of other configurations, and malformed files with
exact messages."""

import re

import numpy as np
import pytest

from lowbit.config.accelerator import AcceleratorConfig
from lowbit.config.xnor_array import XNORArrayConfig
from lowbit.isa import Buffer, Opcode, Source, instruction_set
from lowbit.program import HEADER, MAGIC, VERSION, Program, ProgramError

CONFIG = AcceleratorConfig()
OTHER = AcceleratorConfig(xnor_array=XNORArrayConfig(rows=8))


def make_program(config=CONFIG):
    return Program(config, [
        dict(opcode="LOAD", buffer="WEIGHT", source="CONST", addr=0, count=3),
        dict(opcode="LOAD", buffer="ACT", source="INPUT", addr=0, count=2),
        dict(opcode="GEMM_XNOR", a_addr=0, b_addr=0, c_addr=0, m=2, n=3, k=32, a_stride=1,
             b_stride=1, c_stride=3, act_bits=1, act_signed=0, weight_bits=1,
             weight_signed=0),
        dict(opcode="STORE", buffer="OUT", addr=0, count=6),
        dict(opcode="HALT", status=0),
    ], constants=[1, 2 ** 32 - 1, 0x12345678])


def test_round_trip(tmp_path):
    program = make_program()
    path = tmp_path / "p.lowbit"
    program.save(path)
    loaded = Program.load(path, CONFIG)
    assert loaded.instructions == program.instructions
    assert loaded.constants.tolist() == [1, 2 ** 32 - 1, 0x12345678]
    assert loaded.words() == program.words()
    assert loaded.to_bytes() == path.read_bytes()
    assert loaded.instructions[0]["buffer"] == Buffer.WEIGHT
    assert loaded.instructions[0]["source"] == Source.CONST
    assert len(loaded) == 5


def test_file_layout():
    program = make_program()
    blob = program.to_bytes()
    isa = instruction_set(CONFIG)
    magic, version, instr_bytes, fingerprint, count, const_len, reserved = \
        HEADER.unpack_from(blob)
    assert (magic, version, reserved) == (MAGIC, VERSION, 0)
    assert magic == b"LOWBIT\0\0" and HEADER.size == 40
    assert instr_bytes == isa.bytes and fingerprint == CONFIG.fingerprint().encode()
    assert count == 5 and const_len == 12
    assert len(blob) == HEADER.size + 5 * isa.bytes + 12
    first = int.from_bytes(blob[HEADER.size:HEADER.size + isa.bytes], "little")
    assert isa.layout.from_bits(first).opcode == Opcode.LOAD
    assert blob[-4:] == (0x12345678).to_bytes(4, "little")


def test_refuses_another_configuration(tmp_path):
    path = tmp_path / "p.lowbit"
    make_program().save(path)
    with pytest.raises(ProgramError, match=re.escape(
            f"program was built for accelerator configuration {CONFIG.fingerprint()}, "
            f"this accelerator is {OTHER.fingerprint()}")):
        Program.load(path, OTHER)


def _patched(offset, data):
    blob = bytearray(make_program().to_bytes())
    blob[offset:offset + len(data)] = data
    return bytes(blob)


def test_bad_magic():
    with pytest.raises(ProgramError, match=re.escape(
            "not a lowbit program: bad magic b'NOTLOWBI'")):
        Program.from_bytes(_patched(0, b"NOTLOWBI"), CONFIG)


def test_unsupported_version():
    with pytest.raises(ProgramError, match=re.escape(
            "unsupported program format version 1 (this lowbit reads version 2)")):
        Program.from_bytes(_patched(8, (1).to_bytes(2, "little")), CONFIG)


def test_instruction_size_mismatch():
    with pytest.raises(ProgramError, match=re.escape(
            "program instructions are 24 bytes, this accelerator's are 20")):
        Program.from_bytes(_patched(10, (24).to_bytes(2, "little")), CONFIG)


def test_truncated_header():
    with pytest.raises(ProgramError, match=re.escape(
            "truncated program: the header needs 40 bytes, the file has 10")):
        Program.from_bytes(make_program().to_bytes()[:10], CONFIG)


def test_truncated_body():
    blob = make_program().to_bytes()
    with pytest.raises(ProgramError, match=re.escape(
            "truncated program: 5 instructions and 12 bytes of constant data need 152 "
            "bytes, the file has 150")):
        Program.from_bytes(blob[:-2], CONFIG)


def test_trailing_bytes():
    with pytest.raises(ProgramError, match=re.escape(
            "program file has 3 bytes after its constant data")):
        Program.from_bytes(make_program().to_bytes() + b"xyz", CONFIG)


def test_partial_constant_word():
    blob = bytearray(make_program().to_bytes()[:-12] + b"\0" * 10)
    blob[32:36] = (10).to_bytes(4, "little")
    with pytest.raises(ProgramError, match=re.escape(
            "constant data of 10 bytes is not a whole number of 32-bit words")):
        Program.from_bytes(bytes(blob), CONFIG)


def test_bad_instruction_in_file():
    isa = instruction_set(CONFIG)
    unused = max(op.value for op in Opcode) + 1
    word = isa.raw_layout.const({"opcode": unused}).as_bits()
    offset = HEADER.size + 2 * isa.bytes
    with pytest.raises(ProgramError, match=re.escape(f"instruction 2: unknown opcode {unused}")):
        Program.from_bytes(_patched(offset, word.to_bytes(isa.bytes, "little")), CONFIG)


def test_invalid_instruction():
    with pytest.raises(ProgramError, match=re.escape(
            "instruction 1: STORE count must be at least 1, not 0")):
        Program(CONFIG, [dict(opcode="HALT", status=0),
                         dict(opcode="STORE", buffer="OUT", addr=0, count=0)])


def test_constants_must_match_the_loads():
    with pytest.raises(ProgramError, match=re.escape(
            "program loads 4 constant words but carries 3")):
        Program(CONFIG, [dict(opcode="LOAD", buffer="ACT", source="CONST", addr=0, count=4),
                         dict(opcode="HALT", status=0)], constants=[1, 2, 3])


def test_constants_must_fit_a_word():
    with pytest.raises(ProgramError, match=re.escape(
            "constant 4294967296 does not fit a 32-bit word")):
        Program(CONFIG, [dict(opcode="LOAD", buffer="ACT", source="CONST", addr=0, count=1),
                         dict(opcode="HALT", status=0)], constants=[2 ** 32])


def test_constants_accept_numpy_words():
    program = Program(CONFIG, [dict(opcode="LOAD", buffer="ACT", source="CONST", addr=0,
                                    count=2), dict(opcode="HALT", status=0)],
                      constants=np.array([[7], [2 ** 32 - 1]], dtype=np.uint64))
    assert program.constants.tolist() == [7, 2 ** 32 - 1]


def test_needs_a_config():
    with pytest.raises(TypeError, match=re.escape(
            "config must be an AcceleratorConfig, not None")):
        Program(None, [])
    with pytest.raises(TypeError, match=re.escape(
            "config must be an AcceleratorConfig, not None")):
        Program.from_bytes(b"", None)


def test_metadata_round_trip_and_errors():
    meta = {"kind": "model", "batch": 4, "scale": [0.5, 1.5]}
    program = Program(CONFIG, [dict(opcode="HALT", status=0)], metadata=meta)
    blob = program.to_bytes()
    assert Program.from_bytes(blob, CONFIG).metadata == meta
    assert Program(CONFIG, [dict(opcode="HALT", status=0)]).metadata == {}
    with pytest.raises(ProgramError, match=re.escape(
            "program metadata is not JSON-serialisable: Object of type set is not JSON "
            "serializable")):
        Program(CONFIG, [dict(opcode="HALT", status=0)], metadata={"x": {1}})
    with pytest.raises(ProgramError, match="program metadata is not valid JSON"):
        Program.from_bytes(blob[:-1] + b"!", CONFIG)
    with pytest.raises(ProgramError, match=re.escape(
            "and 50 bytes of metadata need 110 bytes, the file has 109")):
        Program.from_bytes(blob[:-1], CONFIG)
