"""The host runtime (``lowbit.runtime``): the host-link byte stream (LOAD data as count x
lanes words), records parsed through the ``lowbit.isa`` layouts, every error path with its
exact message, the ISS, stream, socket and serial transports, the ``lowbit run`` command,
and the RTL transport's bridge on a loopback design."""

import json
import socket
import sys
import threading

import numpy as np
import pytest
from amaranth import Module, Signal
from amaranth.lib import fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from lowbit.cli import main
from lowbit.config.accelerator import AcceleratorConfig
from lowbit.isa import STATUS_COUNTERS, Opcode, Status, instruction_set
from lowbit.iss import ISS
from lowbit.layout import pack_act, pack_weights, plane_words, tiles, unpack_scores
from lowbit.program import Program, ProgramError
from lowbit.runtime import (DATA, RECORD_HEADER, STATUS, STATUS_BYTES, AcceleratorError,
                            ISSTransport, ProtocolError, RTLTransport, Runtime,
                            SerialTransport, SocketTransport, StreamTransport, Transport,
                            TransportError)
from lowbit.runtime import STATUS_COUNTERS as RUNTIME_COUNTERS
from lowbit.sim import accelerator_programs as P
from lowbit.units import Unit

from conftest import simulator_params

CONFIG = AcceleratorConfig()   # 12-byte instructions, 8 lanes of 32 bits in every memory
HALT = P.halt()


# Programs ---------------------------------------------------------------------------------


def matmul_program(config=CONFIG, *, m=3, n=5, k=40, seed=1, status=0):
    """A binary layer: weights from the constants, activations from the inputs, the whole
    score tile stored, then its first memory word again (a second STORE). Returns
    (program, inputs, x @ w.T)."""
    rng = np.random.default_rng(seed)
    x, w = rng.choice([-1, 1], (m, k)), rng.choice([-1, 1], (n, k))
    xw, ww = pack_act(x, 1, config, bipolar=True), pack_weights(w, config)
    mt, nt = tiles(m, config.rows), tiles(n, config.cols)
    program = Program(config, [
        P.load("WEIGHT", "CONST", 0, len(ww)),
        P.load("IN", "INPUT", 0, len(xw)),
        P.gemm(a_buffer="IN", a_addr=0, b_addr=0, planes=1, words=plane_words(k, config.word),
               m_tiles=mt, n_tiles=nt, mode="SCORES", dst_addr=0),
        P.store(0, mt * config.rows * nt),
        P.store(0, 1),
        P.halt(status),
    ], constants=ww.reshape(-1))
    return program, xw.reshape(-1), x @ w.T


def word_bytes(config, word):
    return word.to_bytes(instruction_set(config).bytes, "little")


def raw_word(config, opcode, **fields):
    """An instruction word with any field values, built through the instruction set's raw
    layouts: no bit positions here."""
    isa = instruction_set(config)
    operands = 0
    if opcode in {op.value for op in Opcode}:
        operands = isa.raw_operands[Opcode(opcode)].const(fields).as_bits()
    return isa.raw_layout.const({"opcode": opcode, "operands": operands,
                                 "reserved": 0}).as_bits()


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


def status_record(code=0, halt=0, index=0, counters=(0, 0, 0)):
    # docs/host_link.md by hand: kind, code, halt, 0, index (u32), three u32 counters.
    return (bytes([STATUS, code, halt, 0]) + index.to_bytes(4, "little")
            + b"".join(c.to_bytes(4, "little") for c in counters))


def data_record(words, word=32):
    return (bytes([DATA, 0, 0, 0]) + len(words).to_bytes(4, "little")
            + b"".join(int(w).to_bytes(word // 8, "little") for w in words))


def test_record_constants():
    assert (DATA, STATUS, RECORD_HEADER, STATUS_BYTES) == (1, 2, 8, 20)
    assert RUNTIME_COUNTERS is STATUS_COUNTERS
    assert len(status_record()) == STATUS_BYTES


# The host-link byte stream ----------------------------------------------------------------


def test_serialise_interleaves_load_data_with_instructions():
    program, inputs, _ = matmul_program()
    assert program.constants.size == 2 * 8 and inputs.size == 2 * 8   # words x lanes
    data = Runtime(CONFIG, Canned(b"")).serialise(program, inputs)
    words = program.words()
    expected = (word_bytes(CONFIG, words[0]) + program.constants.astype("<u4").tobytes()
                + word_bytes(CONFIG, words[1]) + inputs.astype("<u4").tobytes()
                + b"".join(word_bytes(CONFIG, w) for w in words[2:]))
    assert data == expected


def test_serialise_wide_words_and_link():
    config = P.small_config(host_link_bits=16)   # 16-bit words, 4 weight lanes, 2 in lanes
    program, inputs, _ = matmul_program(config, k=20)
    data = Runtime(config, Canned(b"")).serialise(program, inputs)
    isa = instruction_set(config)
    assert len(data) == len(program) * isa.bytes + (program.constants.size + inputs.size) * 2
    assert program.constants.size == 2 * 2 * 4 and inputs.size == 2 * 2 * 2
    assert data[isa.bytes:isa.bytes + 2] == int(program.constants[0]).to_bytes(2, "little")


# The ISS transport end to end -------------------------------------------------------------


@pytest.mark.parametrize("name, program, inputs, expected", P.programs(CONFIG),
                         ids=[e[0] for e in P.programs(CONFIG)])
def test_iss_transport_runs_the_suite(name, program, inputs, expected):
    want = ISS(CONFIG).run(program, inputs)
    with ISSTransport(CONFIG) as link:
        result = Runtime(CONFIG, link).run(program, inputs)
    assert len(result.outputs) == len(expected)
    for got, words in zip(result.outputs, expected):
        assert got.dtype == np.uint64 and np.array_equal(got, words)
    assert result.status == want.status
    stats = result.stats
    assert stats["instructions"] == want.instructions == len(program)
    assert {k: stats[k] for k in STATUS_COUNTERS} == want.counters
    assert stats["bytes_in"] == want.bytes_in
    assert stats["bytes_out"] == want.bytes_out == sum(
        8 + o.size * 4 for o in expected) + 20


def test_iss_transport_computes_the_product():
    program, inputs, dots = matmul_program(status=9)
    with ISSTransport(CONFIG) as link:
        result = Runtime(CONFIG, link).run(program, inputs)
    tile, first = result.outputs
    assert len(tile) == 8 * 8 and np.array_equal(first, tile[:8])
    acc = unpack_scores(tile.reshape(-1, 8), 3, 5, CONFIG)
    assert np.array_equal(2 * acc - 40, dots)
    assert result.status == 9


def test_memories_persist_between_programs():
    program, inputs, dots = matmul_program()
    first = Program(CONFIG, [program.instructions[0], P.halt(1)], program.constants)
    second = Program(CONFIG, [*program.instructions[1:4], P.halt(2)])
    with ISSTransport(CONFIG) as link:
        runtime = Runtime(CONFIG, link)
        assert runtime.run(first).status == 1
        result = runtime.run(second, inputs)
    (tile,) = result.outputs
    assert np.array_equal(2 * unpack_scores(tile.reshape(-1, 8), 3, 5, CONFIG) - 40, dots)
    assert result.status == 2 and result.stats["instructions"] == 4


def test_inputs_as_python_ints_and_any_shape():
    program, inputs, _ = matmul_program()
    with ISSTransport(CONFIG) as link:
        runtime = Runtime(CONFIG, link)
        a = runtime.run(program, [int(v) for v in inputs])
        b = runtime.run(program, inputs.reshape(-1, 2).astype(np.int64))
    assert all(np.array_equal(x, y) for x, y in zip(a.outputs, b.outputs))


# Errors: the program and its inputs -------------------------------------------------------


def test_program_for_another_configuration_is_refused():
    other = AcceleratorConfig(queue_depth=2)
    program, inputs, _ = matmul_program(other)
    runtime = Runtime(CONFIG, ISSTransport(CONFIG))
    with pytest.raises(ProgramError) as info:
        runtime.run(program, inputs)
    assert str(info.value) == (f"program was built for accelerator configuration "
                               f"{other.fingerprint()}, this accelerator is "
                               f"{CONFIG.fingerprint()}")


@pytest.mark.parametrize("change, error, message", [
    (lambda x: x[:-1], ValueError, "the program's INPUT loads take 16 words, 15 given"),
    (lambda x: np.append(x, np.uint64(1)), ValueError,
     "the program's INPUT loads take 16 words, 17 given"),
    (lambda x: (), ValueError, "the program's INPUT loads take 16 words, 0 given"),
    (lambda x: np.where(np.arange(16) == 2, -1, x.astype(np.int64)), ValueError,
     "input word 2 is -1, which does not fit a 32-bit word"),
    (lambda x: np.where(np.arange(16) == 4, 2 ** 32, x), ValueError,
     "input word 4 is 4294967296, which does not fit a 32-bit word"),
    (lambda x: [1, 2, 2 ** 40] + [0] * 13, ValueError,
     "input word 2 is 1099511627776, which does not fit a 32-bit word"),
    (lambda x: x.astype(float), TypeError, "inputs must be integer words, not float64"),
    (lambda x: [1, 2, "3"] + [0] * 13, TypeError, "inputs must be integer words, not <U21"),
    (lambda x: np.array([1, 2, None] + [0] * 13), TypeError, "inputs must be integer words"),
])
def test_bad_inputs(change, error, message):
    program, inputs, _ = matmul_program()
    assert inputs.size == 16
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
    load_bytes = instruction_set(CONFIG).bytes + 16 * 4
    # A STORE of a score word (still zero), then an unknown opcode where the second LOAD
    # was.
    store = word_bytes(CONFIG, instruction_set(CONFIG).encode(P.store(0, 1)))
    data = good[:load_bytes] + store + word_bytes(CONFIG, raw_word(CONFIG, 9))
    with pytest.raises(AcceleratorError) as info:
        runtime.run_raw(data)
    error = info.value
    assert error.code is Status.ILLEGAL and error.index == 2 and error.opcode == "opcode 9"
    assert str(error) == ("accelerator stopped with status ILLEGAL at instruction 2 "
                          "(opcode 9): not a legal instruction for this accelerator")
    (stored,) = error.outputs
    assert stored.tolist() == [0] * 8
    assert error.stats["instructions"] == 3 and error.stats["bytes_in"] == len(data)
    # After the error the accelerator takes the next program.
    assert runtime.run(program, inputs).status == 0


def test_nonzero_unused_bits_are_illegal():
    isa = instruction_set(CONFIG)
    bad = isa.raw_layout.const({"opcode": 0, "operands": 0, "reserved": 1}).as_bits()
    assert bad != isa.encode(HALT)
    with pytest.raises(AcceleratorError, match=r"status ILLEGAL at instruction 0 \(HALT\)"):
        Runtime(CONFIG, ISSTransport(CONFIG)).run_raw(word_bytes(CONFIG, bad))


def test_a_region_past_the_end_wraps():
    # The accelerator takes addresses modulo the memory's depth; only the host refuses
    # such a program (Program checks regions).
    data = (word_bytes(CONFIG, raw_word(CONFIG, Opcode.STORE.value, buffer=4, addr=511,
                                        count=2, unwritten=0))
            + word_bytes(CONFIG, instruction_set(CONFIG).encode(HALT)))
    with ISSTransport(CONFIG) as link:
        link.iss.memories["score"][[511, 0]] = [[1] * 8, [2] * 8]
        (out,) = Runtime(CONFIG, link).run_raw(data).outputs
    assert out.tolist() == [1] * 8 + [2] * 8


def test_address_status_from_the_accelerator():
    store = word_bytes(CONFIG, instruction_set(CONFIG).encode(P.store(0, 1)))
    with pytest.raises(AcceleratorError) as info:
        Runtime(CONFIG, Canned(status_record(code=2))).run_raw(store)
    assert info.value.code is Status.ADDRESS and info.value.index == 0
    assert str(info.value) == ("accelerator stopped with status ADDRESS at instruction 0 "
                               "(STORE): a region outside its memory")


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


@pytest.mark.parametrize("name, data, code, index", P.faulty_streams(CONFIG),
                         ids=[e[0] for e in P.faulty_streams(CONFIG)])
def test_faulty_streams_on_the_iss(name, data, code, index):
    opcode = {"unknown opcode": "opcode 4", "load into act": "LOAD", "unused bits": "HALT",
              "truncated load data": "LOAD", "truncated word": None, "no halt": None}[name]
    with pytest.raises(AcceleratorError) as info:
        Runtime(CONFIG, ISSTransport(CONFIG)).run_raw(data)
    assert (info.value.code, info.value.index, info.value.opcode) == (code, index, opcode)


# Errors: malformed records ----------------------------------------------------------------


@pytest.mark.parametrize("reply, message", [
    (b"\x07" + bytes(30), "byte 0 is 0x07, not a record kind (DATA 0x01 or STATUS 0x02)"),
    (data_record([5] * 8) + b"\x00" + bytes(30),
     "byte 40 is 0x00, not a record kind (DATA 0x01 or STATUS 0x02)"),
    (bytes([DATA, 0, 4, 0, 8, 0, 0, 0]) + bytes(40),
     "byte 2 is 0x04, a reserved byte of a DATA record header, which must be zero"),
    (data_record(range(8)) + bytes([STATUS, 0, 0, 0x80]) + bytes(16),
     "byte 43 is 0x80, a reserved byte of a STATUS record, which must be zero"),
    (status_record(code=5), "byte 1 is 0x05, not a status code (0..3)"),
    (bytes([DATA, 0, 0, 0, 0, 0, 0, 0]) + bytes(30),
     "byte 4 is 0x00, the start of a DATA record's count 0, which no STORE sends "
     "(multiples of 8 up to 4096 words)"),
    (bytes([DATA, 0, 0, 0, 12, 0, 0, 0]) + bytes(60),
     "byte 4 is 0x0c, the start of a DATA record's count 12, which no STORE sends "
     "(multiples of 8 up to 4096 words)"),
    (bytes([DATA, 0, 0, 0, 8, 0x10, 0, 0]) + bytes(30),
     "byte 4 is 0x08, the start of a DATA record's count 4104, which no STORE sends "
     "(multiples of 8 up to 4096 words)"),
])
def test_malformed_records(reply, message):
    runtime = Runtime(CONFIG, Canned(reply))
    with pytest.raises(ProtocolError) as info:
        runtime.run_raw(b"\x00" * 12)
    assert str(info.value) == f"malformed record from the accelerator: {message}"
    assert info.value.offset == int(message.split()[1])


def test_a_malformed_status_record_is_reported_before_its_counters():
    # Only the first 8 bytes came: the fault is still a ProtocolError, not a timeout.
    with pytest.raises(ProtocolError, match="byte 3 is 0x01"):
        Runtime(CONFIG, Canned(bytes([STATUS, 0, 0, 1]) + bytes(4))).run_raw(b"")


def test_hand_made_records_parse():
    counters = (1234, 56, 7)
    reply = data_record(list(range(7)) + [2 ** 32 - 1]) + data_record([9] * 8) + \
        status_record(halt=3, index=41, counters=counters)
    link = Canned(reply)
    result = Runtime(CONFIG, link).run_raw(b"anything")
    assert [list(o) for o in result.outputs] == [list(range(7)) + [2 ** 32 - 1], [9] * 8]
    assert result.status == 3
    assert result.stats == dict(cycles=1234, array_beats=56, tile_holds=7, instructions=42,
                                bytes_in=8, bytes_out=len(reply))
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


class FakeChannel:
    """A byte channel as StreamTransport wants one: reads give what is queued (b"" for
    none this poll), then EOFError once closed by the peer; failures on demand."""

    def __init__(self, chunks, *, fail_write=False, fail_read=False):
        self.chunks = list(chunks)
        self.written = b""
        self.fail_write, self.fail_read = fail_write, fail_read
        self.closed = 0

    def read(self, n):
        if self.fail_read:
            raise OSError("device unplugged")
        if not self.chunks:
            raise EOFError
        chunk = self.chunks.pop(0)
        self.chunks[:0] = [chunk[n:]] if len(chunk) > n else []
        return chunk[:n]

    def write(self, data):
        if self.fail_write:
            raise OSError("broken pipe")
        self.written += data

    def close(self):
        self.closed += 1


def test_stream_transport_over_a_fake_channel():
    channel = FakeChannel([b"ab", b"", b"cdef", b"", b"g"])
    link = StreamTransport(channel, timeout=1, name="the fake")
    link.write(b"xyz")
    assert channel.written == b"xyz"
    assert link.read(3) == b"abc" and link.read(3) == b"def" and link.read(1) == b"g"
    with pytest.raises(TransportError, match="^the fake closed the link after sending 0 of "
                                             "the 2 bytes the host waits for$"):
        link.read(2)
    link.close()
    link.close()
    assert channel.closed == 1
    with pytest.raises(TransportError, match="^StreamTransport is closed$"):
        link.read(1)
    with pytest.raises(TransportError, match="^cannot send to the fake: broken pipe$"):
        StreamTransport(FakeChannel([], fail_write=True), name="the fake").write(b"x")
    with pytest.raises(TransportError, match="^cannot receive from the fake: device "
                                             "unplugged$"):
        StreamTransport(FakeChannel([], fail_read=True), name="the fake").read(1)


def test_runtime_over_a_fake_channel():
    # The whole reply of the ISS in chunks of 3 bytes with empty polls between them.
    program, inputs, _ = matmul_program()
    data = Runtime(CONFIG, Canned(b"")).serialise(program, inputs)
    reply = ISS(CONFIG).run_stream(data)
    chunks = [piece for i in range(0, len(reply), 3) for piece in (reply[i:i + 3], b"")]
    channel = FakeChannel(chunks)
    result = Runtime(CONFIG, StreamTransport(channel, timeout=1)).run(program, inputs)
    assert channel.written == data
    assert result.stats["bytes_out"] == len(reply)
    assert all(np.array_equal(a, b) for a, b in
               zip(result.outputs, ISS(CONFIG).run(program, inputs).outputs))


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
    assert len(result.outputs) == 2
    assert all(np.array_equal(x, y) for x, y in zip(result.outputs, expected.outputs))
    assert result.stats["cycles"] == expected.cycles


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
    np.save(tmp_path / "x.npy", inputs.astype(np.uint32).reshape(2, 8))
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
    assert report["stores"] == [64, 8]
    assert report["instructions"] == len(program)
    assert {*STATUS_COUNTERS, "bytes_in", "bytes_out"} <= set(report)
    printed = capsys.readouterr().out
    assert printed.startswith(f"{path.name} on iss: HALT status 0, 6 instructions, "
                              f"{expected.cycles} cycles")
    assert f"wrote {out} (72 words from 2 STOREs)" in printed


def test_cli_run_with_a_config_file(tmp_path):
    config = P.small_config()
    program, inputs, dots = matmul_program(config, m=3, n=5, k=20)
    program.save(tmp_path / "p.lowbit")
    config.save(tmp_path / "accel.json")
    np.save(tmp_path / "x.npy", inputs)
    assert main(["run", str(tmp_path / "p.lowbit"), "--input", str(tmp_path / "x.npy"),
                 "--config", str(tmp_path / "accel.json"), "-o",
                 str(tmp_path / "y.npy")]) == 0
    y = np.load(tmp_path / "y.npy")
    # 2 row tiles x 2 rows x 2 column tiles x 4 lanes, then one memory word again.
    assert y.size == 32 + 4
    acc = unpack_scores(y[:32].reshape(-1, 4), 4, 5, config)[:3]
    assert np.array_equal(2 * acc - 20, dots)


def test_cli_run_without_inputs_or_outputs(tmp_path, capsys):
    Program(CONFIG, [P.halt(4)]).save(tmp_path / "halt.lowbit")
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
        "lowbit run: error: the program's INPUT loads take 16 words, 0 given"
    np.save(tmp_path / "f.npy", np.zeros(16))
    assert run_error(["run", str(path), "--input", str(tmp_path / "f.npy")], capsys) == \
        "lowbit run: error: inputs must be integer words, not float64"
    (tmp_path / "junk.npy").write_bytes(b"junk")
    assert run_error(["run", str(path), "--input", str(tmp_path / "junk.npy")],
                     capsys).startswith(f"lowbit run: error: {tmp_path / 'junk.npy'} is not "
                                        f"a .npy array: ")
    other = AcceleratorConfig(queue_depth=2)
    other.save(tmp_path / "other.json")
    assert run_error(["run", str(path), "--input", x, "--config",
                      str(tmp_path / "other.json")], capsys) == \
        (f"lowbit run: error: {path} was built for accelerator configuration "
         f"{CONFIG.fingerprint()}, --config {tmp_path / 'other.json'} gives "
         f"{other.fingerprint()} (the program's vs yours: queue_depth: 4 vs 2)")
    (tmp_path / "bad.json").write_text('{"in_depth": 12}')
    assert run_error(["run", str(path), "--config", str(tmp_path / "bad.json")], capsys) == \
        (f"lowbit run: error: {tmp_path / 'bad.json'}: AcceleratorConfig in_depth must be a "
         f"power of two, not 12")
    assert run_error(["run", str(path), "--config", str(tmp_path / "none.json")], capsys) == \
        f"lowbit run: error: cannot read {tmp_path / 'none.json'}: No such file or directory"
    assert run_error(["run", str(path), "--input", x, "-o",
                      str(tmp_path / "no" / "dir" / "y.npy")], capsys).startswith(
        f"lowbit run: error: cannot write {tmp_path / 'no' / 'dir' / 'y.npy'}: ")


def test_cli_run_reports_accelerator_errors(program_files, tmp_path, capsys, monkeypatch):
    # A valid program cannot fail on a correct accelerator; make the accelerator fail.
    program, inputs, path = program_files

    def failing(self, program, inputs=()):
        raise AcceleratorError(Status.ADDRESS, 3, "GEMM")

    monkeypatch.setattr(Runtime, "run", failing)
    assert run_error(["run", str(path), "--input", str(tmp_path / "x.npy")], capsys) == \
        ("lowbit run: error: accelerator stopped with status ADDRESS at instruction 3 "
         "(GEMM): a region outside its memory")


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
