"""The host runtime (``lowbit.runtime``): configuration files, the host-link byte stream,
every error path, the ``lowbit run`` command, and the same programs through the ISS and
through the generated Verilog under cocotb (RTL transport), compared bit for bit."""

import importlib
import json
import socket
import sys
import threading
import time

import numpy as np
import pytest
from amaranth import Module, Signal
from amaranth.lib import fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from lowbit.cli import main
from lowbit.config.accelerator import AcceleratorConfig
from lowbit.config.lightnorm import LightNormConfig
from lowbit.config.xnor_array import XNORArrayConfig
from lowbit.isa import Opcode, Status, instruction_set
from lowbit.iss import ISS, from_signed, pack_rows, to_signed
from lowbit.program import Program, ProgramError
from lowbit.runtime import (DATA, STATUS, AcceleratorError, ISSTransport, ProtocolError,
                            RTLTransport, Runtime, SerialTransport, SocketTransport,
                            StreamTransport, Transport, TransportError)
from lowbit.sim.accelerator_programs import small_config
from lowbit.units import Unit

from conftest import simulator_params

CONFIG = AcceleratorConfig()
# The RTL tests' accelerator: the gateware tests' small configuration (one shared build).
RTL_CONFIG = small_config()
HALT = dict(opcode="HALT", status=0)


# Programs ---------------------------------------------------------------------------------


def signs(rng, shape):
    return rng.choice(np.array([-1, 1]), size=shape)


def gemm(m, n, k, *, a_stride, b_stride, a_addr=0, b_addr=0, c_addr=0, act_bits=1,
         act_signed=0, weight_bits=1, weight_signed=0):
    return dict(opcode="GEMM_XNOR", a_addr=a_addr, b_addr=b_addr, c_addr=c_addr, m=m, n=n,
                k=k, a_stride=a_stride, b_stride=b_stride, c_stride=n, act_bits=act_bits,
                act_signed=act_signed, weight_bits=weight_bits, weight_signed=weight_signed)


def matmul_program(config=CONFIG, *, m=3, n=5, k=40, seed=1, status=0):
    """A binary layer: weights from the constants, activations from the inputs, ``A @ B.T``
    stored, plus the activations stored back (a second STORE). Returns (program, inputs,
    expected product)."""
    rng = np.random.default_rng(seed)
    a, b = signs(rng, (m, k)), signs(rng, (n, k))
    wa, wb = pack_rows(a, 1, False, config.word), pack_rows(b, 1, False, config.word)
    row = wa.shape[1]
    program = Program(config, [
        dict(opcode="LOAD", buffer="WEIGHT", source="CONST", addr=0, count=wb.size),
        dict(opcode="LOAD", buffer="ACT", source="INPUT", addr=0, count=wa.size),
        gemm(m, n, k, a_stride=row, b_stride=row),
        dict(opcode="STORE", buffer="OUT", addr=0, count=m * n),
        dict(opcode="STORE", buffer="ACT", addr=0, count=wa.size),
        dict(HALT, status=status),
    ], constants=wb.reshape(-1))
    return program, wa.reshape(-1), a @ b.T


def resident_programs(config=CONFIG, seed=2):
    """Two programs: the first loads weights and halts, the second computes with them
    (buffers keep their contents between programs)."""
    rng = np.random.default_rng(seed)
    m, n, k = 2, 6, 70
    a, b = signs(rng, (m, k)), signs(rng, (n, k))
    wa, wb = pack_rows(a, 1, False, config.word), pack_rows(b, 1, False, config.word)
    row = wa.shape[1]
    first = Program(config, [
        dict(opcode="LOAD", buffer="WEIGHT", source="CONST", addr=100, count=wb.size),
        dict(HALT, status=1)], constants=wb.reshape(-1))
    second = Program(config, [
        dict(opcode="LOAD", buffer="ACT", source="INPUT", addr=7, count=wa.size),
        gemm(m, n, k, a_addr=7, b_addr=100, c_addr=9, a_stride=row, b_stride=row),
        dict(opcode="STORE", buffer="OUT", addr=9, count=m * n),
        dict(HALT, status=2)])
    return first, second, wa.reshape(-1), a @ b.T


def bit_serial_program(config=CONFIG, seed=3):
    """Signed 3-bit activations times unsigned 2-bit weights, several array tiles."""
    rng = np.random.default_rng(seed)
    m, n, k = 5, 7, 33
    a, b = rng.integers(-4, 4, size=(m, k)), rng.integers(0, 4, size=(n, k))
    wa, wb = pack_rows(a, 3, True, config.word), pack_rows(b, 2, False, config.word)
    program = Program(config, [
        dict(opcode="LOAD", buffer="ACT", source="INPUT", addr=0, count=wa.size),
        dict(opcode="LOAD", buffer="WEIGHT", source="INPUT", addr=0, count=wb.size),
        gemm(m, n, k, a_stride=wa.shape[1], b_stride=wb.shape[1], act_bits=3, act_signed=1,
             weight_bits=2),
        dict(opcode="STORE", buffer="OUT", addr=0, count=m * n),
        HALT])
    return program, np.concatenate([wa.reshape(-1), wb.reshape(-1)]), a @ b.T


def mlp_program(config=CONFIG, seed=4):
    """Two binary layers with a NORM THRESHOLD between them (thresholds and flips as
    constants), then a MAXPOOL of the hidden activations."""
    rng = np.random.default_rng(seed)
    m, k, hidden, n = 4, 48, 12, 3
    x, w1, w2 = signs(rng, (m, k)), signs(rng, (hidden, k)), signs(rng, (n, hidden))
    thresholds = rng.integers(-6, 7, size=hidden)
    flips = rng.integers(0, 2, size=hidden)
    word = config.word
    wx, ww1, ww2 = (pack_rows(v, 1, False, word) for v in (x, w1, w2))
    params = np.concatenate([from_signed(thresholds, word), flips]).astype(np.uint64)
    p_addr = ww1.size + ww2.size
    h_addr = wx.size
    program = Program(config, [
        dict(opcode="LOAD", buffer="WEIGHT", source="CONST", addr=0, count=ww1.size),
        dict(opcode="LOAD", buffer="WEIGHT", source="CONST", addr=ww1.size, count=ww2.size),
        dict(opcode="LOAD", buffer="WEIGHT", source="CONST", addr=p_addr, count=params.size),
        dict(opcode="LOAD", buffer="ACT", source="INPUT", addr=0, count=wx.size),
        gemm(m, hidden, k, a_stride=wx.shape[1], b_stride=ww1.shape[1]),
        dict(opcode="NORM", mode="THRESHOLD", src_addr=0, dst_addr=h_addr, param_addr=p_addr,
             rows=m, channels=hidden, src_stride=hidden, dst_stride=1),
        gemm(m, n, hidden, a_addr=h_addr, b_addr=ww1.size, c_addr=100, a_stride=1,
             b_stride=1),
        dict(opcode="STORE", buffer="OUT", addr=100, count=m * n),
        dict(opcode="MAXPOOL", src_addr=h_addr, dst_addr=200, rows=2, row_words=1, window=2),
        dict(opcode="STORE", buffer="ACT", addr=h_addr, count=m),
        dict(opcode="STORE", buffer="ACT", addr=200, count=2),
        HALT,
    ], constants=np.concatenate([ww1.reshape(-1), ww2.reshape(-1), params]))
    return program, wx.reshape(-1)


def programs(config=CONFIG):
    """(name, program, inputs) of every program the backends are compared on."""
    matmul, inputs, _ = matmul_program(config)
    serial, serial_inputs, _ = bit_serial_program(config)
    mlp, mlp_inputs = mlp_program(config)
    return [("matmul", matmul, inputs), ("bit-serial", serial, serial_inputs),
            ("mlp", mlp, mlp_inputs)]


def raw_word(config, opcode, **fields):
    """An instruction word with any field values (unknown opcodes, regions past a buffer),
    built through the instruction set's raw layouts: no bit positions here."""
    isa = instruction_set(config)
    operands = 0
    if opcode in {op.value for op in Opcode}:
        operands = isa.raw_operands[Opcode(opcode)].const(fields).as_bits()
    return isa.raw_layout.const({"opcode": opcode, "operands": operands,
                                 "reserved": 0}).as_bits()


def word_bytes(config, word):
    return word.to_bytes(instruction_set(config).bytes, "little")


class Canned(Transport):
    """A transport that answers with fixed bytes: malformed records by hand."""

    def __init__(self, reply):
        self.reply = bytearray(reply)
        self.sent = bytearray()

    def write(self, data):
        self._check_open()
        self.sent += data

    def read(self, n):
        self._check_open(n)
        if len(self.reply) < n:
            raise TransportError(f"canned reply has {len(self.reply)} of {n} bytes")
        out = bytes(self.reply[:n])
        del self.reply[:n]
        return out


def status_record(code=0, halt=0, index=0, counters=(0, 0, 0, 0)):
    return (bytes([STATUS, code, halt, 0]) + index.to_bytes(4, "little")
            + b"".join(c.to_bytes(4, "little") for c in counters))


def data_record(words, word=32):
    return (bytes([DATA, 0, 0, 0]) + len(words).to_bytes(4, "little")
            + b"".join(int(w).to_bytes(word // 8, "little") for w in words))


# Accelerator configuration files ----------------------------------------------------------


@pytest.mark.parametrize("config", [
    CONFIG,
    AcceleratorConfig(has_lns_mac=False, has_xnor_array=False, word=16, act_words=100),
    AcceleratorConfig(host_link_bits=32, timeout_cycles=100,
                      xnor_array=XNORArrayConfig(rows=2, cols=3, max_k=64),
                      lightnorm=LightNormConfig(channels=32, output="multithreshold")),
], ids=["default", "absent-units", "custom"])
def test_config_round_trips_through_dict_and_json(config, tmp_path):
    d = json.loads(json.dumps(config.to_dict()))
    assert AcceleratorConfig.from_dict(d) == config
    path = tmp_path / "accel.json"
    config.save(path)
    loaded = AcceleratorConfig.load(path)
    assert loaded == config and loaded.fingerprint() == config.fingerprint()


def test_config_from_dict_keeps_defaults_for_missing_keys():
    assert AcceleratorConfig.from_dict({"word": 64}) == AcceleratorConfig(word=64)
    assert AcceleratorConfig.from_dict({"xnor_array": {"type": "XNORArrayConfig",
                                                       "rows": 2}}) == \
        AcceleratorConfig(xnor_array=XNORArrayConfig(rows=2))


@pytest.mark.parametrize("d, error, message", [
    ([], TypeError, "AcceleratorConfig.from_dict needs a dict, not []"),
    ({"colour": 1, "word": 8}, ValueError,
     "AcceleratorConfig has no parameter(s) 'colour' (known: act_words, has_lightnorm, "),
    ({"xnor_array": 4}, TypeError,
     "AcceleratorConfig xnor_array must be a dict with a 'type' key or None, not 4"),
    ({"xnor_array": {"rows": 2}}, ValueError,
     "AcceleratorConfig xnor_array has no 'type' key (expected 'XNORArrayConfig')"),
    ({"xnor_array": {"type": "LNSMacConfig"}}, ValueError,
     "AcceleratorConfig xnor_array type must be 'XNORArrayConfig', not 'LNSMacConfig'"),
    ({"lns_mac": {"type": "LNSMacConfig", "lanes": 2, "colour": 1}}, ValueError,
     "LNSMacConfig has no parameter(s) 'colour' (known: acc_width, bits, gamma, "),
    ({"lightnorm": None}, ValueError,
     "AcceleratorConfig lightnorm is None but has_lightnorm is not false"),
    ({"word": 12}, ValueError, "AcceleratorConfig word must be 8, 16, 32 or 64, not 12"),
    ({"xnor_array": {"type": "XNORArrayConfig", "rows": 0}}, ValueError,
     "XNORArrayConfig rows must be at least 1, not 0"),
])
def test_config_from_dict_errors(d, error, message):
    with pytest.raises(error) as info:
        AcceleratorConfig.from_dict(d)
    assert str(info.value).startswith(message)


def test_config_load_errors(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{word: 8")
    with pytest.raises(ValueError, match=r"bad\.json: not a JSON accelerator configuration: "):
        AcceleratorConfig.load(path)
    with pytest.raises(FileNotFoundError):
        AcceleratorConfig.load(tmp_path / "missing.json")


# The host-link byte stream ----------------------------------------------------------------


def test_serialise_interleaves_load_data_with_instructions():
    program, inputs, _ = matmul_program()
    data = Runtime(CONFIG, Canned(b"")).serialise(program, inputs)
    words = program.words()
    consts = program.constants.astype("<u4").tobytes()
    expected = (word_bytes(CONFIG, words[0]) + consts + word_bytes(CONFIG, words[1])
                + inputs.astype("<u4").tobytes()
                + b"".join(word_bytes(CONFIG, w) for w in words[2:]))
    assert data == expected


def test_serialise_narrow_words_and_wide_link():
    config = AcceleratorConfig(word=64, host_link_bits=64)
    program, inputs, _ = matmul_program(config, k=100)
    data = Runtime(config, Canned(b"")).serialise(program, inputs)
    isa = instruction_set(config)
    assert isa.bytes % 8 == 0
    assert len(data) == len(program) * isa.bytes + (program.constants.size + inputs.size) * 8
    assert data[isa.bytes:isa.bytes + 8] == int(program.constants[0]).to_bytes(8, "little")


# The ISS transport end to end -------------------------------------------------------------


@pytest.mark.parametrize("name, program, inputs", programs(), ids=lambda v: v
                         if isinstance(v, str) else "")
def test_iss_transport_matches_iss_run(name, program, inputs):
    expected = ISS(CONFIG).run(program, inputs)
    with ISSTransport(CONFIG) as link:
        result = Runtime(CONFIG, link).run(program, inputs)
    assert len(result.outputs) == len(expected.outputs)
    for got, want in zip(result.outputs, expected.outputs):
        assert got.dtype == np.uint64 and np.array_equal(got, want)
    assert result.status == expected.status
    stats = result.stats
    assert stats["instructions"] == expected.instructions == len(program)
    assert stats["xnor_busy"] == expected.unit_cycles["xnor_array"]
    assert stats["lns_busy"] == 0
    assert stats["bytes_in"] == expected.bytes_in
    # Record headers: 8 bytes per STORE, 24 for the status record.
    assert stats["bytes_out"] == expected.bytes_out + 8 * len(expected.outputs) + 24
    assert stats["cycles"] > 0


def test_iss_transport_computes_the_product():
    program, inputs, product = matmul_program(status=9)
    with ISSTransport(CONFIG) as link:
        result = Runtime(CONFIG, link).run(program, inputs)
    out, act = result.outputs
    assert np.array_equal(to_signed(out, 32).reshape(product.shape), product)
    assert np.array_equal(act, inputs)
    assert result.status == 9


def test_buffers_persist_between_programs():
    first, second, inputs, product = resident_programs()
    with ISSTransport(CONFIG) as link:
        runtime = Runtime(CONFIG, link)
        assert runtime.run(first).status == 1
        result = runtime.run(second, inputs)
    (out,) = result.outputs
    assert np.array_equal(to_signed(out, 32).reshape(product.shape), product)
    assert result.status == 2 and result.stats["instructions"] == 4


def test_inputs_as_python_ints_and_any_shape():
    program, inputs, _ = matmul_program()
    with ISSTransport(CONFIG) as link:
        runtime = Runtime(CONFIG, link)
        a = runtime.run(program, [int(v) for v in inputs])
        b = runtime.run(program, inputs.reshape(-1, 1).astype(np.int64))
    assert all(np.array_equal(x, y) for x, y in zip(a.outputs, b.outputs))


# Errors: the program and its inputs -------------------------------------------------------


def test_program_for_another_configuration_is_refused():
    other = AcceleratorConfig(out_words=512)
    program, inputs, _ = matmul_program(other)
    runtime = Runtime(CONFIG, ISSTransport(CONFIG))
    with pytest.raises(ProgramError) as info:
        runtime.run(program, inputs)
    assert str(info.value) == (f"program was built for accelerator configuration "
                               f"{other.fingerprint()}, this accelerator is "
                               f"{CONFIG.fingerprint()}")


@pytest.mark.parametrize("change, error, message", [
    (lambda x: x[:-1], ValueError, "the program's INPUT loads take 6 words, 5 given"),
    (lambda x: np.append(x, np.uint64(1)), ValueError,
     "the program's INPUT loads take 6 words, 7 given"),
    (lambda x: (), ValueError, "the program's INPUT loads take 6 words, 0 given"),
    (lambda x: np.where(np.arange(6) == 2, -1, x.astype(np.int64)), ValueError,
     "input word 2 is -1, which does not fit a 32-bit word"),
    (lambda x: np.where(np.arange(6) == 4, 2 ** 32, x), ValueError,
     "input word 4 is 4294967296, which does not fit a 32-bit word"),
    (lambda x: [1, 2, 2 ** 40, 4, 5, 6], ValueError,
     "input word 2 is 1099511627776, which does not fit a 32-bit word"),
    (lambda x: x.astype(float), TypeError, "inputs must be integer words, not float64"),
    (lambda x: [1, 2, "3", 4, 5, 6], TypeError, "inputs must be integer words, not <U21"),
    (lambda x: np.array([1, 2, None, 4, 5, 6]), TypeError, "inputs must be integer words"),
])
def test_bad_inputs(change, error, message):
    program, inputs, _ = matmul_program()
    assert inputs.size == 6
    runtime = Runtime(CONFIG, ISSTransport(CONFIG))
    with pytest.raises(error) as info:
        runtime.run(program, change(inputs))
    assert str(info.value) == message


def test_runtime_argument_types():
    with pytest.raises(TypeError, match="config must be an AcceleratorConfig, not 'x'"):
        Runtime("x", ISSTransport())
    with pytest.raises(TypeError, match="transport must be a Transport, not 3"):
        Runtime(CONFIG, 3)
    with pytest.raises(TypeError, match="program must be a Program, not b''"):
        Runtime(CONFIG, ISSTransport()).run(b"")


# Errors: status records -------------------------------------------------------------------


def test_illegal_instruction():
    program, inputs, _ = matmul_program()
    runtime = Runtime(CONFIG, ISSTransport(CONFIG))
    good = runtime.serialise(program, inputs)
    isa_bytes = instruction_set(CONFIG).bytes
    load_bytes = isa_bytes + program.constants.size * 4
    # A STORE of the weights, then an unknown opcode where the second LOAD was.
    store = word_bytes(CONFIG, instruction_set(CONFIG).encode(
        dict(opcode="STORE", buffer="WEIGHT", addr=0, count=3)))
    data = good[:load_bytes] + store + word_bytes(CONFIG, raw_word(CONFIG, 9))
    with pytest.raises(AcceleratorError) as info:
        runtime.run_raw(data)
    error = info.value
    assert error.code is Status.ILLEGAL and error.index == 2 and error.opcode == "opcode 9"
    assert str(error) == ("accelerator stopped with status ILLEGAL at instruction 2 "
                          "(opcode 9): not a legal instruction for this accelerator")
    (stored,) = error.outputs
    assert np.array_equal(stored, program.constants[:3])
    assert error.stats["instructions"] == 3 and error.stats["bytes_in"] == len(data)
    # After the error the accelerator takes the next program.
    assert runtime.run(program, inputs).status == 0


def test_nonzero_unused_bits_are_illegal():
    word = instruction_set(CONFIG).encode(HALT)
    isa = instruction_set(CONFIG)
    bad = isa.raw_layout.const({"opcode": 0, "operands": 0, "reserved": 1}).as_bits()
    assert bad != word
    with pytest.raises(AcceleratorError, match=r"status ILLEGAL at instruction 0 \(HALT\)"):
        Runtime(CONFIG, ISSTransport(CONFIG)).run_raw(word_bytes(CONFIG, bad))


def test_region_outside_its_buffer():
    data = word_bytes(CONFIG, raw_word(CONFIG, Opcode.STORE.value, buffer=2, addr=1000,
                                       count=100))
    with pytest.raises(AcceleratorError) as info:
        Runtime(CONFIG, ISSTransport(CONFIG)).run_raw(data)
    assert info.value.code is Status.ADDRESS and info.value.index == 0
    assert str(info.value) == ("accelerator stopped with status ADDRESS at instruction 0 "
                               "(STORE): a region outside its buffer or a stride shorter "
                               "than a row")


@pytest.mark.parametrize("cut, index, opcode", [
    (lambda d, i: d[:i + 10], 0, "LOAD"),           # inside the first LOAD's data
    (lambda d, i: d[:i - 3], 0, None),              # inside the first instruction word
    (lambda d, i: d[:-i], 5, None),                 # everything but the HALT
])
def test_truncated_program(cut, index, opcode):
    program, inputs, _ = matmul_program()
    runtime = Runtime(CONFIG, ISSTransport(CONFIG))
    data = cut(runtime.serialise(program, inputs), instruction_set(CONFIG).bytes)
    with pytest.raises(AcceleratorError) as info:
        runtime.run_raw(data)
    error = info.value
    assert (error.code, error.index, error.opcode) == (Status.TRUNCATED, index, opcode)
    where = f"instruction {index}" + (f" ({opcode})" if opcode else "")
    assert str(error) == (f"accelerator stopped with status TRUNCATED at {where}: the host "
                          f"stopped sending in the middle of the program")


# Errors: malformed records ----------------------------------------------------------------


@pytest.mark.parametrize("reply, message", [
    (b"\x07" + bytes(30), "byte 0 is 0x07, not a record kind (DATA 0x01 or STATUS 0x02)"),
    (data_record([5]) + b"\x00" + bytes(30),
     "byte 12 is 0x00, not a record kind (DATA 0x01 or STATUS 0x02)"),
    (bytes([DATA, 0, 4, 0, 1, 0, 0, 0]) + bytes(30),
     "byte 2 is 0x04, a reserved byte of a DATA record header, which must be zero"),
    (data_record([1, 2]) + bytes([STATUS, 0, 0, 0x80]) + bytes(20),
     "byte 19 is 0x80, a reserved byte of a STATUS record header, which must be zero"),
    (status_record(code=5), "byte 1 is 0x05, not a status code (0..3)"),
    (bytes([DATA, 0, 0, 0, 0, 0, 0, 0]) + bytes(30),
     "byte 4 is 0x00, the start of a DATA record's count 0, which no STORE sends "
     "(1..16384 words)"),
    (bytes([DATA, 0, 0, 0, 1, 0x40, 0, 0]) + bytes(30),
     "byte 4 is 0x01, the start of a DATA record's count 16385, which no STORE sends "
     "(1..16384 words)"),
])
def test_malformed_records(reply, message):
    runtime = Runtime(CONFIG, Canned(reply))
    with pytest.raises(ProtocolError) as info:
        runtime.run_raw(b"\x00" * 20)
    assert str(info.value) == f"malformed record from the accelerator: {message}"
    assert info.value.offset == int(message.split()[1])


def test_hand_made_records_parse():
    counters = (1234, 56, 7, 0)
    reply = data_record([1, 2, 2 ** 32 - 1]) + data_record([9]) + \
        status_record(halt=3, index=41, counters=counters)
    link = Canned(reply)
    result = Runtime(CONFIG, link).run_raw(b"anything")
    assert [list(o) for o in result.outputs] == [[1, 2, 2 ** 32 - 1], [9]]
    assert result.status == 3
    assert result.stats == dict(cycles=1234, xnor_busy=56, norm_busy=7, lns_busy=0,
                                instructions=42, bytes_in=8, bytes_out=len(reply))
    assert link.sent == b"anything" and not link.reply


# Errors: transports -----------------------------------------------------------------------


def test_iss_transport_errors():
    link = ISSTransport(CONFIG)
    with pytest.raises(TransportError, match="^the ISS has sent 0 of the 8 bytes the host "
                                             "waits for and has no more input to run$"):
        link.read(8)
    with pytest.raises(ValueError, match="read needs a non-negative byte count, not -1"):
        link.read(-1)
    link.close()
    with pytest.raises(TransportError, match="^ISSTransport is closed$"):
        link.write(b"\x00")
    link.close()


def test_socket_transport_closed_and_silent_peers():
    host, board = socket.socketpair()
    with SocketTransport(host, timeout=0.3, name="the board") as link:
        board.sendall(b"abc")
        with pytest.raises(TransportError, match=r"^no byte from the board for 0\.3 s: "
                                                 r"received 3 of the 8 bytes the host waits "
                                                 r"for$"):
            link.read(8)
        board.sendall(b"defgh")
        assert link.read(5) == b"defgh"
        link.write(b"xyz")
        assert board.recv(3) == b"xyz"
        board.sendall(b"12")
        board.close()
        with pytest.raises(TransportError, match="^the board closed the link after sending "
                                                 "2 of the 4 bytes the host waits for$"):
            link.read(4)


def test_socket_transport_connects_by_address():
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    link = SocketTransport(("127.0.0.1", port), timeout=1)
    peer, _ = server.accept()
    peer.sendall(b"hi")
    assert link.read(2) == b"hi"
    link.close()
    peer.close()
    server.close()
    with pytest.raises(TransportError, match=f"^cannot connect to 127.0.0.1:{port}: "):
        SocketTransport(("127.0.0.1", port), timeout=1)


def test_stream_transport_checks_its_timeout():
    with pytest.raises(ValueError, match="timeout must be a positive number of seconds, "
                                         "not 0"):
        StreamTransport(object(), timeout=0)


def test_runtime_over_a_socket_to_an_iss_board():
    """A 'board' thread answers a whole program at a time with the ISS: the runtime's
    socket path is the one the RTL transport and a serial port use."""
    program, inputs, _ = matmul_program()
    host, board = socket.socketpair()
    runtime = Runtime(CONFIG, SocketTransport(host, timeout=5, name="the board"))
    data = runtime.serialise(program, inputs)

    def serve():
        received = b""
        while len(received) < len(data):
            received += board.recv(len(data) - len(received))
        board.sendall(ISS(CONFIG).run_stream(received))

    thread = threading.Thread(target=serve)
    thread.start()
    result = runtime.run(program, inputs)
    thread.join()
    runtime.transport.close()
    board.close()
    expected = ISS(CONFIG).run(program, inputs)
    assert all(np.array_equal(x, y) for x, y in zip(result.outputs, expected.outputs))


def test_serial_transport_without_pyserial(monkeypatch):
    monkeypatch.setitem(sys.modules, "serial", None)  # import serial raises ImportError
    with pytest.raises(ImportError, match="^SerialTransport needs pyserial: pip install "
                                          "pyserial$"):
        SerialTransport("/dev/ttyUSB1")


def test_serial_transport_over_a_fake_port(monkeypatch):
    """pyserial's interface (read with a timeout, write, flush, close) is all it needs."""

    class FakeSerial:
        def __init__(self, port, baudrate, timeout):
            assert (port, baudrate, timeout) == ("/dev/fake", 9600, 0.05)
            self.incoming = bytearray(b"pong")
            self.written = b""

        def read(self, n):
            out = bytes(self.incoming[:n])
            del self.incoming[:n]
            return out

        def write(self, data):
            self.written += data

        def flush(self):
            pass

        def close(self):
            pass

    fake = type(sys)("serial")
    fake.Serial = FakeSerial
    monkeypatch.setitem(sys.modules, "serial", fake)
    with SerialTransport("/dev/fake", 9600, timeout=0.2) as link:
        link.write(b"ping")
        assert link.channel.port.written == b"ping"
        assert link.read(4) == b"pong"
        with pytest.raises(TransportError, match="^no byte from serial port /dev/fake"):
            link.read(1)


# The ``lowbit run`` command ---------------------------------------------------------------


@pytest.fixture
def program_files(tmp_path):
    program, inputs, _ = matmul_program()
    path = tmp_path / "prog.lowbit"
    program.save(path)
    np.save(tmp_path / "x.npy", inputs.astype(np.uint32).reshape(2, 3))
    return program, inputs, path


def test_cli_run_on_the_iss(program_files, tmp_path, capsys):
    program, inputs, path = program_files
    out, stats = tmp_path / "y.npy", tmp_path / "stats.json"
    assert main(["run", str(path), "--input", str(tmp_path / "x.npy"), "-o", str(out),
                 "--stats", str(stats)]) == 0
    expected = ISS(CONFIG).run(program, inputs)
    y = np.load(out)
    assert y.dtype == np.uint64 and y.ndim == 1
    assert np.array_equal(y, np.concatenate(expected.outputs))
    report = json.loads(stats.read_text())
    assert report["backend"] == "iss" and report["status"] == 0
    assert report["stores"] == [o.size for o in expected.outputs]
    assert report["instructions"] == len(program)
    assert {"cycles", "xnor_busy", "norm_busy", "lns_busy", "bytes_in", "bytes_out"} <= \
        set(report)
    printed = capsys.readouterr().out
    assert printed.startswith(f"{path.name} on iss: HALT status 0, 6 instructions, ")
    assert f"wrote {out} (21 words from 2 STOREs)" in printed


def test_cli_run_with_a_config_file(tmp_path):
    config = AcceleratorConfig(word=64, out_words=256, has_lns_mac=False)
    program, inputs, product = matmul_program(config)
    program.save(tmp_path / "p.lowbit")
    config.save(tmp_path / "accel.json")
    np.save(tmp_path / "x.npy", inputs)
    assert main(["run", str(tmp_path / "p.lowbit"), "--input", str(tmp_path / "x.npy"),
                 "--config", str(tmp_path / "accel.json"), "-o",
                 str(tmp_path / "y.npy")]) == 0
    y = np.load(tmp_path / "y.npy")
    assert np.array_equal(to_signed(y[:product.size], 64).reshape(product.shape), product)


def test_cli_run_without_inputs_or_outputs(tmp_path, capsys):
    program = Program(CONFIG, [dict(HALT, status=4)])
    program.save(tmp_path / "halt.lowbit")
    assert main(["run", str(tmp_path / "halt.lowbit")]) == 0
    assert capsys.readouterr().out.startswith("halt.lowbit on iss: HALT status 4, "
                                              "1 instruction, ")


def run_error(args, capsys):
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return captured.err.strip()


def test_cli_run_errors(program_files, tmp_path, capsys):
    program, inputs, path = program_files
    x = str(tmp_path / "x.npy")
    assert run_error(["run", str(tmp_path / "nope.lowbit"), "--input", x], capsys) == \
        f"lowbit run: error: cannot read {tmp_path / 'nope.lowbit'}: No such file or directory"
    assert run_error(["run", str(path), "--input", str(tmp_path / "nope.npy")], capsys) == \
        f"lowbit run: error: cannot read {tmp_path / 'nope.npy'}: No such file or directory"
    assert run_error(["run", str(path)], capsys) == \
        "lowbit run: error: the program's INPUT loads take 6 words, 0 given"
    np.save(tmp_path / "f.npy", np.zeros(6))
    assert run_error(["run", str(path), "--input", str(tmp_path / "f.npy")], capsys) == \
        "lowbit run: error: inputs must be integer words, not float64"
    (tmp_path / "junk.npy").write_bytes(b"junk")
    assert run_error(["run", str(path), "--input", str(tmp_path / "junk.npy")],
                     capsys).startswith(f"lowbit run: error: {tmp_path / 'junk.npy'} is not "
                                        f"a .npy array: ")
    other = AcceleratorConfig(out_words=512)
    other.save(tmp_path / "other.json")
    assert run_error(["run", str(path), "--input", x, "--config",
                      str(tmp_path / "other.json")], capsys) == \
        (f"lowbit run: error: {path}: program was built for accelerator configuration "
         f"{CONFIG.fingerprint()}, this accelerator is {other.fingerprint()}")
    (tmp_path / "bad.json").write_text('{"word": 12}')
    assert run_error(["run", str(path), "--config", str(tmp_path / "bad.json")], capsys) == \
        (f"lowbit run: error: {tmp_path / 'bad.json'}: AcceleratorConfig word must be 8, 16, "
         f"32 or 64, not 12")
    assert run_error(["run", str(path), "--config", str(tmp_path / "none.json")], capsys) == \
        f"lowbit run: error: cannot read {tmp_path / 'none.json'}: No such file or directory"
    assert run_error(["run", str(path), "--input", x, "-o",
                      str(tmp_path / "no" / "dir" / "y.npy")], capsys).startswith(
        f"lowbit run: error: cannot write {tmp_path / 'no' / 'dir' / 'y.npy'}: ")


def test_cli_run_reports_accelerator_errors(program_files, tmp_path, capsys, monkeypatch):
    # A valid program cannot fail on a correct accelerator; make the accelerator fail.
    program, inputs, path = program_files

    def failing(self, program, inputs=()):
        raise AcceleratorError(Status.ADDRESS, 3, "GEMM_XNOR")

    monkeypatch.setattr(Runtime, "run", failing)
    assert run_error(["run", str(path), "--input", str(tmp_path / "x.npy")], capsys) == \
        ("lowbit run: error: accelerator stopped with status ADDRESS at instruction 3 "
         "(GEMM_XNOR): a region outside its buffer or a stride shorter than a row")


def test_cli_run_argument_errors(capsys):
    assert "argument --backend: invalid choice: 'fpga'" in run_error(
        ["run", "p", "--backend", "fpga"], capsys)


# The RTL transport ------------------------------------------------------------------------


class Loopback(wiring.Component):
    """A stand-in with the accelerator's ports: returns each host-link beat inverted,
    through a small FIFO, taking and giving beats on a pseudo-random pattern (stalls both
    ways). Tests the bridge before the accelerator exists, and independently of it."""

    def __init__(self, config):
        self.config = config
        width = config.host_link_bits
        super().__init__({"i_stream": In(stream.Signature(width)),
                          "o_stream": Out(stream.Signature(width))})

    def elaborate(self, platform):
        m = Module()
        width = self.config.host_link_bits
        m.submodules.queue = queue = fifo.SyncFIFO(width=width, depth=8)
        lfsr = Signal(16, init=0xACE1)
        m.d.sync += lfsr.eq((lfsr << 1) | (lfsr[15] ^ lfsr[13] ^ lfsr[12] ^ lfsr[10]))
        m.d.comb += [
            queue.w_data.eq(~self.i_stream.payload),
            queue.w_en.eq(self.i_stream.valid & lfsr[0]),
            self.i_stream.ready.eq(queue.w_rdy & lfsr[0]),
            self.o_stream.payload.eq(queue.r_data),
            self.o_stream.valid.eq(queue.r_rdy & lfsr[3]),
            queue.r_en.eq(self.o_stream.ready & lfsr[3]),
        ]
        return m


LOOPBACK = Unit("runtime-loopback", "lowbit.config.accelerator:AcceleratorConfig",
                f"{__name__}:Loopback", "lowbit.sim.accelerator_bridge", "loopback")


@pytest.mark.cocotb
@pytest.mark.xdist_group("runtime-loopback")
@pytest.mark.parametrize("simulator", simulator_params())
@pytest.mark.parametrize("link_bits", [8, 32])
def test_bridge_moves_bytes_both_ways(simulator, link_bits, tmp_path):
    config = AcceleratorConfig(host_link_bits=link_bits)
    rng = np.random.default_rng(link_bits)
    with RTLTransport(config, simulator, unit=LOOPBACK, test_dir=tmp_path, timeout=60) as link:
        for size in (link_bits // 8, 3000):
            sent = rng.integers(0, 256, size=size, dtype=np.uint8).tobytes()
            link.write(sent)
            assert link.read(size) == bytes(255 - b for b in sent)
    assert link.result["tests"] == 1 and link.result["failed"] == 0
    assert "host closed the link" in (tmp_path / "sim.log").read_text()


@pytest.mark.cocotb
@pytest.mark.xdist_group("runtime-loopback")
def test_rtl_transport_reports_a_silent_simulation(tmp_path):
    """Bytes that make no whole beat never come back: the read times out, and the
    simulation still ends cleanly when the host closes."""
    config = AcceleratorConfig(host_link_bits=32)
    with RTLTransport(config, unit=LOOPBACK, test_dir=tmp_path, timeout=1) as link:
        link.write(b"\x01\x02")
        with pytest.raises(TransportError, match=r"^no byte from the RTL simulation "
                                                 r"\(runtime-loopback on verilator\) for 1 s"):
            link.read(2)
    assert link.result["failed"] == 0


def test_rtl_transport_argument_errors():
    with pytest.raises(ValueError, match="simulator must be one of verilator, icarus, not "
                                         "'xsim'"):
        RTLTransport(CONFIG, "xsim", unit=LOOPBACK)
    with pytest.raises(TypeError, match="config must be an AcceleratorConfig, not 1"):
        RTLTransport(1, unit=LOOPBACK)


def _accelerator_missing():
    try:
        importlib.import_module("lowbit.hw.accelerator")
    except ImportError as error:
        return f"the accelerator gateware (lowbit.hw.accelerator) is not there yet: {error}"
    from lowbit.units import UNITS
    if "accelerator" not in UNITS:
        return "the accelerator unit is not registered in lowbit.units yet"
    return None


needs_gateware = pytest.mark.skipif(_accelerator_missing() is not None,
                                    reason=str(_accelerator_missing()))


@pytest.fixture(scope="module", params=simulator_params())
def rtl(request, tmp_path_factory):
    """One RTL simulation per simulator for the module's comparisons (one build, cached):
    programs run one after the other on it, as on a board."""
    if _accelerator_missing():
        pytest.skip(_accelerator_missing())
    test_dir = tmp_path_factory.mktemp(f"rtl-{request.param}")
    with RTLTransport(RTL_CONFIG, request.param, test_dir=test_dir, timeout=60) as link:
        runtime = Runtime(RTL_CONFIG, link)
        # A design that does not answer at all fails here once, not in every test.
        assert runtime.run(Program(RTL_CONFIG, [dict(HALT, status=5)])).status == 5
        yield runtime


def iss_result(program, inputs, config=RTL_CONFIG):
    with ISSTransport(config) as link:
        return Runtime(config, link).run(program, inputs)


def assert_same(got, want):
    """Outputs and everything else the protocol fixes, bit for bit; the cycle count is the
    RTL's measurement against the ISS's estimate, and is not compared."""
    assert len(got.outputs) == len(want.outputs)
    for n, (g, w) in enumerate(zip(got.outputs, want.outputs)):
        assert np.array_equal(g, w), f"STORE {n}: RTL {g}, ISS {w}"
    assert got.status == want.status
    for key in ("instructions", "bytes_in", "bytes_out", "xnor_busy", "norm_busy",
                "lns_busy"):
        assert got.stats[key] == want.stats[key], (key, got.stats, want.stats)


@pytest.mark.cocotb
@pytest.mark.xdist_group("accelerator-rtl")
@needs_gateware
@pytest.mark.parametrize("name", [name for name, _, _ in programs(RTL_CONFIG)])
def test_rtl_matches_iss(rtl, name):
    (program, inputs), = [(p, x) for n, p, x in programs(RTL_CONFIG) if n == name]
    assert_same(rtl.run(program, inputs), iss_result(program, inputs))


@pytest.mark.cocotb
@pytest.mark.xdist_group("accelerator-rtl")
@needs_gateware
def test_rtl_buffers_persist_between_programs(rtl):
    first, second, inputs, product = resident_programs(RTL_CONFIG)
    assert rtl.run(first).status == 1
    result = rtl.run(second, inputs)
    (out,) = result.outputs
    assert np.array_equal(to_signed(out, 32).reshape(product.shape), product)


def faulty_streams(config):
    """(name, bytes, status) of broken program streams: an unknown opcode, a region past
    its buffer, and three ways of stopping early."""
    program, inputs, _ = matmul_program(config)
    good = Runtime(config, Canned(b"")).serialise(program, inputs)
    size = instruction_set(config).bytes
    load = size + program.constants.size * config.word // 8
    store = word_bytes(config, instruction_set(config).encode(
        dict(opcode="STORE", buffer="WEIGHT", addr=0, count=3)))
    past_end = raw_word(config, Opcode.STORE.value, buffer=2, addr=config.out_words - 10,
                        count=20)
    return [
        ("illegal", good[:load] + store + word_bytes(config, raw_word(config, 9)),
         Status.ILLEGAL),
        ("address", good[:load] + store + word_bytes(config, past_end), Status.ADDRESS),
        ("truncated-data", good[:size + 10], Status.TRUNCATED),
        ("truncated-word", good[:load + 7], Status.TRUNCATED),
        ("no-halt", good[:-size], Status.TRUNCATED),
    ]


@pytest.mark.parametrize("name, data, code", faulty_streams(CONFIG),
                         ids=[name for name, _, _ in faulty_streams(CONFIG)])
def test_faulty_streams_on_the_iss(name, data, code):
    with pytest.raises(AcceleratorError) as info:
        Runtime(CONFIG, ISSTransport(CONFIG)).run_raw(data)
    assert info.value.code is code


@pytest.mark.cocotb
@pytest.mark.xdist_group("accelerator-rtl")
@needs_gateware
def test_rtl_faults_match_iss(rtl):
    """Every faulty stream, one after the other on the same simulation: after a fault the
    accelerator discards input until the link has been idle for timeout_cycles, which the
    host waits out in wall time (the simulator runs on meanwhile)."""
    for name, data, code in faulty_streams(RTL_CONFIG):
        with pytest.raises(AcceleratorError) as rtl_info:
            rtl.run_raw(data)
        with pytest.raises(AcceleratorError) as iss_info:
            Runtime(RTL_CONFIG, ISSTransport(RTL_CONFIG)).run_raw(data)
        got, want = rtl_info.value, iss_info.value
        assert got.code is code, name
        assert (got.code, got.index, got.opcode) == (want.code, want.index, want.opcode)
        assert len(got.outputs) == len(want.outputs), name
        assert all(np.array_equal(g, w) for g, w in zip(got.outputs, want.outputs))
        time.sleep(0.2)
    # And the accelerator still runs a good program afterwards.
    program, inputs, _ = matmul_program(RTL_CONFIG)
    assert_same(rtl.run(program, inputs), iss_result(program, inputs))


@pytest.mark.cocotb
@needs_gateware
def test_cli_run_on_the_rtl(tmp_path):
    program, inputs, _ = matmul_program(RTL_CONFIG)
    program.save(tmp_path / "p.lowbit")
    RTL_CONFIG.save(tmp_path / "small.json")
    np.save(tmp_path / "x.npy", inputs)
    assert main(["run", str(tmp_path / "p.lowbit"), "--input", str(tmp_path / "x.npy"),
                 "--config", str(tmp_path / "small.json"), "--backend", "rtl",
                 "-o", str(tmp_path / "y.npy"), "--stats", str(tmp_path / "s.json")]) == 0
    expected = iss_result(program, inputs)
    assert np.array_equal(np.load(tmp_path / "y.npy"), np.concatenate(expected.outputs))
    stats = json.loads((tmp_path / "s.json").read_text())
    assert stats["backend"] == "rtl" and stats["simulator"] == "verilator"
