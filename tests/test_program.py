"""Program files: round trip, version 4 (embedded configuration, CRC-32), refusal of
other configurations, and malformed, corrupted and truncated files with exact messages."""

import binascii
import json
import re

import numpy as np
import pytest

from lowbit.config.accelerator import AcceleratorConfig
from lowbit.isa import NO_WAIT, Buffer, Opcode, Source, instruction_set
from lowbit.program import HEADER, MAGIC, VERSION, Program, ProgramError
from lowbit.sim import accelerator_programs as P

CONFIG = AcceleratorConfig()   # 96-bit (12-byte) instructions, 8 lanes of 32 bits
OTHER = AcceleratorConfig(queue_depth=2)
HALT = dict(opcode="HALT", status=0)
WEIGHTS = [1, 2 ** 32 - 1, 0x12345678, 4, 5, 6, 7, 8]   # one weight memory word


def load(buffer="WEIGHT", source="CONST", count=1):
    return dict(opcode="LOAD", buffer=buffer, source=source, addr=0, count=count,
                unread=NO_WAIT, unwritten=NO_WAIT)


def make_program(config=CONFIG):
    return Program(config, [
        load(),
        load("IN", "INPUT"),
        dict(opcode="GEMM", a_buffer="IN", a_addr=0, b_addr=0, planes=1, words=1, m_tiles=1,
             n_tiles=1, mode="SCORES", out_bits=1, dst_addr=0, thr_addr=0, sync=0,
             unsent=NO_WAIT),
        dict(opcode="STORE", buffer="SCORE", addr=0, count=8, unwritten=0),
        HALT,
    ], constants=WEIGHTS)


def test_round_trip(tmp_path):
    program = make_program()
    path = tmp_path / "p.lowbit"
    program.save(path)
    loaded = Program.load(path, CONFIG)
    assert loaded.instructions == program.instructions
    assert loaded.constants.tolist() == WEIGHTS
    assert loaded.words() == program.words()
    assert loaded.to_bytes() == path.read_bytes()
    assert loaded.instructions[0]["buffer"] == Buffer.WEIGHT
    assert loaded.instructions[0]["source"] == Source.CONST
    assert len(loaded) == 5


@pytest.mark.parametrize("name, program", [(n, p) for n, p, _, _ in P.programs()],
                         ids=[n for n, _, _, _ in P.programs()])
def test_round_trip_of_the_suite(name, program):
    config = program.config
    again = Program.from_bytes(program.to_bytes(), config)
    assert again.instructions == program.instructions
    assert np.array_equal(again.constants, program.constants)


def _sections(blob):
    header = HEADER.unpack_from(blob)
    count, const_len, config_len, meta_len = header[4:]
    isa_bytes = header[2]
    start = HEADER.size + count * isa_bytes
    return header, start, const_len, config_len, meta_len


def test_file_layout():
    program = make_program()
    blob = program.to_bytes()
    isa = instruction_set(CONFIG)
    magic, version, instr_bytes, fingerprint, count, const_len, config_len, meta_len = \
        HEADER.unpack_from(blob)
    assert (magic, version, meta_len) == (MAGIC, VERSION, 0)
    assert magic == b"LOWBIT\0\0" and VERSION == 4 and HEADER.size == 44
    assert instr_bytes == isa.bytes == 12 and fingerprint == CONFIG.fingerprint().encode()
    assert count == 5 and const_len == 8 * 4
    assert len(blob) == HEADER.size + 5 * 12 + 32 + config_len + 4
    first = int.from_bytes(blob[HEADER.size:HEADER.size + 12], "little")
    assert isa.layout.from_bits(first).opcode == Opcode.LOAD
    const = HEADER.size + 5 * 12
    assert blob[const:const + 4] == (1).to_bytes(4, "little")
    assert blob[const + 8:const + 12] == (0x12345678).to_bytes(4, "little")
    # The configuration, as JSON, then the CRC-32 of everything before it (binascii's
    # CRC-32: a second implementation of zlib's).
    text = blob[const + 32:const + 32 + config_len].decode()
    assert AcceleratorConfig.from_dict(json.loads(text)) == CONFIG
    assert blob[-4:] == binascii.crc32(blob[:-4]).to_bytes(4, "little")


def test_a_file_needs_no_configuration(tmp_path):
    path = tmp_path / "p.lowbit"
    make_program(OTHER).save(path)
    loaded = Program.load(path)
    assert loaded.config == OTHER and loaded.words() == make_program(OTHER).words()


def test_refuses_another_configuration(tmp_path):
    path = tmp_path / "p.lowbit"
    make_program().save(path)
    with pytest.raises(ProgramError, match=re.escape(
            f"{path}: program was built for accelerator configuration {CONFIG.fingerprint()}, "
            f"this accelerator is {OTHER.fingerprint()} (the program's vs this: "
            f"queue_depth: 4 vs 2)")):
        Program.load(path, OTHER)


def _patched(offset, data, crc=True):
    """The test program with ``data`` at ``offset``; with ``crc`` its checksum made right
    again (binascii's CRC-32), so a check behind the checksum's is reached."""
    blob = bytearray(make_program().to_bytes())
    blob[offset:offset + len(data)] = data
    if crc:
        blob[-4:] = binascii.crc32(bytes(blob[:-4])).to_bytes(4, "little")
    return bytes(blob)


def test_bad_magic():
    with pytest.raises(ProgramError, match=re.escape(
            "not a lowbit program: bad magic b'NOTLOWBI'")):
        Program.from_bytes(_patched(0, b"NOTLOWBI"), CONFIG)


def test_unsupported_version():
    with pytest.raises(ProgramError, match=re.escape(
            "unsupported program format version 3 (this lowbit reads version 4)")):
        Program.from_bytes(_patched(8, (3).to_bytes(2, "little")), CONFIG)


def test_instruction_size_mismatch():
    # 24-byte instructions and a file that holds them: half the instructions.
    with pytest.raises(ProgramError, match=re.escape(
            "program instructions are 24 bytes, its accelerator's are 12")):
        blob = bytearray(_patched(10, (24).to_bytes(2, "little"), crc=False))
        blob[28:32] = (2).to_bytes(4, "little")
        blob = blob[:HEADER.size + 48] + blob[HEADER.size + 60:]
        blob[-4:] = binascii.crc32(bytes(blob[:-4])).to_bytes(4, "little")
        Program.from_bytes(bytes(blob), CONFIG)


def test_truncated_header():
    with pytest.raises(ProgramError, match=re.escape(
            "truncated program: the header and checksum need 48 bytes, the file has 10")):
        Program.from_bytes(make_program().to_bytes()[:10], CONFIG)


def test_truncated_body():
    blob = make_program().to_bytes()
    (*_, config_len, _), size = HEADER.unpack_from(blob), len(blob)
    assert size == 44 + 5 * 12 + 32 + config_len + 4
    with pytest.raises(ProgramError, match=re.escape(
            f"truncated or corrupted program: its header describes 5 instructions, 32 bytes "
            f"of constant data, {config_len} of configuration and 0 of metadata, {size} "
            f"bytes in all; the file has {size - 2}")):
        Program.from_bytes(blob[:-2], CONFIG)


def test_trailing_bytes():
    blob = make_program().to_bytes()
    with pytest.raises(ProgramError, match=re.escape(
            f"{len(blob)} bytes in all; the file has {len(blob) + 3}")):
        Program.from_bytes(blob + b"xyz", CONFIG)


@pytest.mark.parametrize("offset", [12, 30, 44, 44 + 60, 44 + 60 + 31, -5, -1])
def test_any_flipped_byte_is_refused(offset):
    # Header, instructions, constants, configuration, checksum: one flipped bit anywhere.
    blob = bytearray(make_program().to_bytes())
    blob[offset] ^= 0x10
    with pytest.raises(ProgramError, match="corrupted program"):
        Program.from_bytes(bytes(blob), CONFIG)


def test_partial_constant_word():
    blob = bytearray(make_program().to_bytes())
    _, start, const_len, config_len, _ = _sections(blob)
    blob = blob[:start + 10] + blob[start + const_len:]
    blob[32:36] = (10).to_bytes(4, "little")
    blob[-4:] = binascii.crc32(bytes(blob[:-4])).to_bytes(4, "little")
    with pytest.raises(ProgramError, match=re.escape(
            "constant data of 10 bytes is not a whole number of 32-bit words")):
        Program.from_bytes(bytes(blob), CONFIG)


def test_bad_embedded_configuration():
    blob = make_program().to_bytes()
    _, start, const_len, config_len, _ = _sections(blob)
    at = start + const_len
    text = blob[at:at + config_len].replace(b'"queue_depth": 4', b'"queue_depth": 0')
    patched = bytearray(blob[:at] + text + blob[at + config_len:])
    patched[-4:] = binascii.crc32(bytes(patched[:-4])).to_bytes(4, "little")
    with pytest.raises(ProgramError, match=re.escape(
            "program's embedded configuration is invalid: AcceleratorConfig queue_depth must "
            "be at least 1, not 0")):
        Program.from_bytes(bytes(patched))


def test_bad_instruction_in_file():
    isa = instruction_set(CONFIG)
    unused = max(op.value for op in Opcode) + 1
    word = isa.raw_layout.const({"opcode": unused}).as_bits()
    offset = HEADER.size + 2 * isa.bytes
    with pytest.raises(ProgramError, match=re.escape(f"instruction 2: unknown opcode {unused}")):
        Program.from_bytes(_patched(offset, word.to_bytes(isa.bytes, "little")), CONFIG)


def test_region_outside_its_memory_in_file():
    # A STORE past the end of the score memory: the gateware would wrap, a file is refused.
    isa = instruction_set(CONFIG)
    op = Opcode.STORE
    fields = dict(buffer=Buffer.SCORE, addr=500, count=20, unwritten=0)
    word = isa.layout.const({"opcode": op, "operands": {"store": fields}}).as_bits()
    offset = HEADER.size + 3 * isa.bytes
    with pytest.raises(ProgramError, match=re.escape(
            "instruction 3: STORE region of 20 words at 500 runs past the end of the score "
            "memory (512 words)")):
        Program.from_bytes(_patched(offset, word.to_bytes(isa.bytes, "little")), CONFIG)


def test_invalid_instruction():
    with pytest.raises(ProgramError, match=re.escape(
            "instruction 1: STORE count must be at least 1, not 0")):
        Program(CONFIG, [HALT, dict(opcode="STORE", buffer="SCORE", addr=0, count=0,
                                    unwritten=0)])
    with pytest.raises(ProgramError, match=re.escape(
            "instruction 0: LOAD cannot write the act memory (only in, weight, thresh)")):
        Program(CONFIG, [load("ACT"), HALT])


def test_constants_must_match_the_loads():
    # A LOAD of one memory word takes a word per lane.
    with pytest.raises(ProgramError, match=re.escape(
            "program loads 8 constant words but carries 3")):
        Program(CONFIG, [load(), HALT], constants=[1, 2, 3])
    with pytest.raises(ProgramError, match=re.escape(
            "program loads 0 constant words but carries 1")):
        Program(CONFIG, [load("IN", "INPUT"), HALT], constants=[1])


def test_constants_must_fit_a_word():
    with pytest.raises(ProgramError, match=re.escape(
            "constant 4294967296 does not fit a 32-bit word")):
        Program(CONFIG, [load(), HALT], constants=[2 ** 32] + WEIGHTS[1:])


def test_constants_accept_numpy_words():
    program = Program(CONFIG, [load(), HALT],
                      constants=np.array(WEIGHTS, dtype=np.uint64).reshape(8, 1))
    assert program.constants.tolist() == WEIGHTS
    assert program.constants.dtype == np.uint64


def test_needs_a_config():
    with pytest.raises(TypeError, match=re.escape(
            "config must be an AcceleratorConfig, not None")):
        Program(None, [])
    with pytest.raises(TypeError, match=re.escape(
            "config must be an AcceleratorConfig, not 'x'")):
        Program.from_bytes(b"", "x")


def test_metadata_round_trip_and_errors():
    meta = {"kind": "model", "batch": 4, "scale": [0.5, 1.5]}
    program = Program(CONFIG, [HALT], metadata=meta)
    blob = program.to_bytes()
    assert Program.from_bytes(blob, CONFIG).metadata == meta
    assert Program(CONFIG, [HALT]).metadata == {}
    with pytest.raises(ProgramError, match=re.escape(
            "program metadata is not JSON-serialisable: Object of type set is not JSON "
            "serializable")):
        Program(CONFIG, [HALT], metadata={"x": {1}})
    with pytest.raises(ProgramError, match="program metadata is not valid JSON"):
        patched = bytearray(blob[:-5] + b"!" + blob[-4:])
        patched[-4:] = binascii.crc32(bytes(patched[:-4])).to_bytes(4, "little")
        Program.from_bytes(bytes(patched), CONFIG)
    with pytest.raises(ProgramError, match="truncated or corrupted program: .* and 50 of "
                                           "metadata"):
        Program.from_bytes(blob[:-1], CONFIG)
    with pytest.raises(ProgramError, match=re.escape("program metadata must be a dict, not [1]")):
        Program(CONFIG, [HALT], metadata=[1])
