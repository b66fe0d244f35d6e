"""The host side of the accelerator's host link (``docs/host_link.md``), in one place.

A :class:`Runtime` turns a :class:`~lowbit.program.Program` and its input words into the
byte stream the accelerator consumes, sends it through a :class:`Transport` and parses the
records that come back, laid out by :data:`lowbit.isa.DATA_HEADER` and
:data:`lowbit.isa.STATUS_RECORD`. The same runtime drives every accelerator, so the host
code a board runs is the code the tests run:

* :class:`ISSTransport`: the instruction-set simulator (:meth:`lowbit.iss.ISS.run_stream`);
* :class:`RTLTransport`: the generated Verilog under cocotb (Verilator or Icarus), bridged
  to a local socket by :mod:`lowbit.sim.accelerator_bridge`;
* :class:`SerialTransport`: a raw serial port (:mod:`lowbit.framing` adds frames with a CRC
  for a board's UART);
* :class:`StreamTransport` / :class:`SocketTransport`: any byte channel; the RTL and serial
  transports are this same code over a socket and a serial port.

Usage::

    with ISSTransport(config) as link:
        result = Runtime(config, link).run(program, inputs)
    result.outputs      # one uint64 array per STORE
    result.stats        # cycles, array beats, tile holds, instructions, bytes moved

Faults are exceptions: :class:`AcceleratorError` for a non-``OK`` status record (its
``code`` is a :class:`lowbit.isa.Status`), :class:`ProtocolError` for bytes that are not a
record, :class:`TransportError` for a link that times out or closes.
"""

import abc
import dataclasses
import numbers
import os
import socket
import tempfile
import threading
import time

import numpy as np

from .config.accelerator import AcceleratorConfig
from .isa import (DATA_HEADER, STATUS_COUNTERS, STATUS_RECORD,
                  InstructionError, Opcode, Record, Source, Status, instruction_set)
from .program import Program, ProgramError

__all__ = ["DATA", "STATUS", "RECORD_HEADER", "STATUS_BYTES", "STATUS_COUNTERS",
           "TransportError",
           "ProtocolError", "AcceleratorError", "Transport", "ISSTransport",
           "StreamTransport", "SocketTransport", "SerialTransport", "RTLTransport",
           "RunResult", "Runtime"]

#: Record kinds (the first byte of a record, ``docs/host_link.md``).
DATA = Record.DATA.value
STATUS = Record.STATUS.value
#: Bytes of a ``DATA`` record's header (the words follow it).
RECORD_HEADER = DATA_HEADER.size // 8
#: Bytes of a whole ``STATUS`` record.
STATUS_BYTES = STATUS_RECORD.size // 8

# What each non-OK status means, for AcceleratorError's message.
_MEANING = {
    Status.ILLEGAL: "not a legal instruction for this accelerator",
    Status.ADDRESS: "a region outside its memory",
    Status.TRUNCATED: "the host stopped sending in the middle of the program",
}


class TransportError(Exception):
    """The link failed: no bytes within the timeout, the other end closed, or the transport
    is closed."""


class ProtocolError(Exception):
    """Bytes from the accelerator that are not a record of ``docs/host_link.md``.

    Attributes
    ----------
    offset : int
        Position of the offending byte in the run's output stream (0: the first byte the
        accelerator sent for this run).
    byte : int
        Its value.
    """

    def __init__(self, offset, byte, what):
        super().__init__(f"malformed record from the accelerator: byte {offset} is "
                         f"0x{byte:02x}, {what}")
        self.offset = offset
        self.byte = byte


class AcceleratorError(Exception):
    """The accelerator ended a program with a non-``OK`` status record.

    Attributes
    ----------
    code : lowbit.isa.Status
        ``ILLEGAL``, ``ADDRESS`` or ``TRUNCATED``.
    index : int
        Index of the failing instruction in the program (``HALT`` counts too).
    opcode : str or None
        Name of that instruction's opcode when the host can tell (``None`` when the word
        was cut short, ``"opcode 9"`` for an unknown one).
    outputs : list of numpy.ndarray
        The ``STORE`` data received before the failure.
    stats : dict
        The status record's counters and the bytes moved, as in :attr:`RunResult.stats`.
    """

    def __init__(self, code, index, opcode=None, outputs=(), stats=None):
        where = f"instruction {index}" + (f" ({opcode})" if opcode else "")
        super().__init__(f"accelerator stopped with status {code.name} at {where}: "
                         f"{_MEANING[code]}")
        self.code = code
        self.index = index
        self.opcode = opcode
        self.outputs = list(outputs)
        self.stats = dict(stats or {})


# Transports -------------------------------------------------------------------------------


class Transport(abc.ABC):
    """A byte link to an accelerator. Subclasses implement :meth:`write` and :meth:`read`;
    a transport is a context manager that closes itself.

    ``keeps_weights``: whether :class:`Runtime` keeps weights resident on the far side
    between runs, by its tag (``tag``, :meth:`set_tag`, :mod:`lowbit.resident`); a board's
    link does, and any transport may be told to (its tag then lives here)."""

    closed = False
    keeps_weights = False
    tag = bytes(8)

    def set_tag(self, tag):
        """Record which weights the far side's memories hold (:mod:`lowbit.resident`)."""
        self.tag = bytes(tag)

    @abc.abstractmethod
    def write(self, data):
        """Send ``data`` (bytes) to the accelerator."""

    @abc.abstractmethod
    def read(self, n):
        """Return exactly ``n`` bytes from the accelerator; raise :class:`TransportError`
        if they do not come (timeout, closed link)."""

    def close(self):
        """Release the link. Closing twice is harmless."""
        self.closed = True

    def _check_open(self, n=None):
        if self.closed:
            raise TransportError(f"{type(self).__name__} is closed")
        if n is not None and (not isinstance(n, numbers.Integral) or isinstance(n, bool)
                              or n < 0):
            raise ValueError(f"read needs a non-negative byte count, not {n!r}")

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        try:
            self.close()
        except TransportError:
            # Do not hide the exception that ended the with block behind a close failure.
            if exc_type is None:
                raise
        return False


class ISSTransport(Transport):
    """The instruction-set simulator as an accelerator.

    Written bytes are buffered; a read that needs more than the ISS has produced hands all
    of them to :meth:`lowbit.iss.ISS.run_stream`. So what the host wrote before it starts
    reading is one burst of input, and input that ends in the middle of a program is a
    truncated program (the link then goes idle). The ISS's buffers persist, as the
    accelerator's do.

    Parameters
    ----------
    config : AcceleratorConfig, optional
        The accelerator (default: ``AcceleratorConfig()``).
    """

    def __init__(self, config=None):
        from .iss import ISS  # the golden models load only when an ISS is used

        self.iss = ISS(config)
        self.config = self.iss.config
        self._pending = bytearray()
        self._out = bytearray()

    def write(self, data):
        self._check_open()
        self._pending += bytes(data)

    def read(self, n):
        self._check_open(n)
        if len(self._out) < n and self._pending:
            data, self._pending = bytes(self._pending), bytearray()
            self._out += self.iss.run_stream(data)
        if len(self._out) < n:
            raise TransportError(f"the ISS has sent {len(self._out)} of the {n} bytes the "
                                 f"host waits for and has no more input to run")
        out = bytes(self._out[:n])
        del self._out[:n]
        return out


class StreamTransport(Transport):
    """A transport over a byte channel (socket, serial port).

    Parameters
    ----------
    channel :
        An object with ``read(n)``, which returns up to ``n`` bytes, ``b""`` when none
        arrived within its own short poll interval, and raises ``EOFError`` once the other
        end has closed; ``write(data)``, which sends all of ``data``; and ``close()``.
        Its ``OSError`` becomes :class:`TransportError`.
    timeout : float
        Seconds without a single byte after which :meth:`read` gives up. It bounds the
        silence, not the whole read: a long program keeps its link alive as long as bytes
        keep coming.
    name : str
        What the link is, for messages (``"the RTL simulation"``).
    """

    def __init__(self, channel, *, timeout=10.0, name="the link"):
        if not (isinstance(timeout, numbers.Real) and timeout > 0):
            raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
        self.channel = channel
        self.timeout = float(timeout)
        self.name = name

    def write(self, data):
        self._check_open()
        try:
            self.channel.write(bytes(data))
        except OSError as error:
            raise TransportError(f"cannot send to {self.name}: {error}") from error

    def read(self, n):
        self._check_open(n)
        out = bytearray()
        last = time.monotonic()
        while len(out) < n:
            try:
                chunk = self.channel.read(n - len(out))
            except EOFError:
                raise TransportError(f"{self.name} closed the link after sending {len(out)} "
                                     f"of the {n} bytes the host waits for") from None
            except OSError as error:
                raise TransportError(f"cannot receive from {self.name}: {error}") from error
            if chunk:
                out += chunk
                last = time.monotonic()
            elif time.monotonic() - last > self.timeout:
                raise TransportError(f"no byte from {self.name} for {self.timeout:g} s: "
                                     f"received {len(out)} of the {n} bytes the host waits "
                                     f"for")
        return bytes(out)

    def close(self):
        if not self.closed:
            self.closed = True
            try:
                self.channel.close()
            except OSError:
                pass  # already gone: closing is all we wanted


class _SocketChannel:
    # A connected socket as a StreamTransport channel: short recv timeouts, EOF as EOFError.

    def __init__(self, sock, poll=0.05, send_timeout=60.0):
        self.sock = sock
        self.poll = poll
        self.send_timeout = send_timeout

    def read(self, n):
        self.sock.settimeout(self.poll)
        try:
            data = self.sock.recv(n)
        except TimeoutError:
            return b""
        if not data:
            raise EOFError
        return data

    def write(self, data):
        self.sock.settimeout(self.send_timeout)
        self.sock.sendall(data)

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # the peer may have closed first
        self.sock.close()


class SocketTransport(StreamTransport):
    """A :class:`StreamTransport` over a TCP socket.

    Parameters
    ----------
    sock : socket.socket or (host, port)
        A connected socket, or the address to connect to.
    timeout : float
        As for :class:`StreamTransport`.
    name : str
        What is at the other end, for messages.
    """

    def __init__(self, sock, *, timeout=10.0, name=None):
        if isinstance(sock, tuple):
            name = name or f"{sock[0]}:{sock[1]}"
            try:
                sock = socket.create_connection(sock, timeout=timeout)
            except OSError as error:
                raise TransportError(f"cannot connect to {name}: {error}") from error
        if not isinstance(sock, socket.socket):
            raise TypeError(f"sock must be a socket or a (host, port) pair, not {sock!r}")
        super().__init__(_SocketChannel(sock), timeout=timeout, name=name or "the socket")


class _SerialChannel:
    # A pyserial port as a StreamTransport channel (its read timeout is the poll interval).

    def __init__(self, port):
        self.port = port

    def read(self, n):
        return self.port.read(n)

    def write(self, data):
        self.port.write(data)
        self.port.flush()

    def close(self):
        self.port.close()


class SerialTransport(StreamTransport):
    """A :class:`StreamTransport` over a serial port (a board's UART), through pyserial.

    Parameters
    ----------
    port : str
        The device (``/dev/ttyUSB1``, ``COM3``).
    baudrate : int
        Bits per second.
    timeout : float
        As for :class:`StreamTransport`.

    Raises
    ------
    ImportError
        If pyserial is not installed (``pip install pyserial``).
    TransportError
        If the port cannot be opened.
    """

    def __init__(self, port, baudrate=115200, *, timeout=10.0):
        try:
            import serial
        except ImportError:
            raise ImportError("SerialTransport needs pyserial: pip install pyserial") from None
        try:
            handle = serial.Serial(port, baudrate, timeout=0.05)
        except (OSError, ValueError) as error:  # SerialException is an OSError
            raise TransportError(f"cannot open serial port {port}: {error}") from error
        super().__init__(_SerialChannel(handle), timeout=timeout, name=f"serial port {port}")


class RTLTransport(StreamTransport):
    """The accelerator's generated Verilog under cocotb, as a transport.

    The host listens on a local TCP port and runs the cocotb module
    :mod:`lowbit.sim.accelerator_bridge` on the accelerator's (cached) Verilator or Icarus
    build in a background thread; the bridge connects and moves bytes between the socket
    and the design's ``i_stream`` / ``o_stream``. Everything above the socket is the
    :class:`StreamTransport` a serial port uses. Closing the transport ends the simulation.

    Parameters
    ----------
    config : AcceleratorConfig, optional
        The accelerator to build (default: ``AcceleratorConfig()``).
    simulator : str
        ``"verilator"`` or ``"icarus"``.
    timeout : float
        Seconds without a byte from the simulation before a read gives up (simulated cycles
        are slow: a long instruction produces no output for a while).
    waves : bool
        Record a waveform file (see :func:`lowbit.sim.runner.run_cocotb`).
    test_dir : path, optional
        Folder for the simulation's log (``sim.log``), results and waves (default: a new
        temporary folder, kept for inspection).
    unit : lowbit.units.Unit, optional
        The design to simulate (default: the registered ``accelerator`` unit); tests put a
        stand-in with the same ports here.
    test_module : str, optional
        The cocotb module that bridges the socket to the design (default
        :mod:`lowbit.sim.accelerator_bridge`; a simulated board uses
        :mod:`lowbit.sim.board_bridge`, which drives its UART pins).

    Raises
    ------
    TransportError
        If the accelerator unit is not available, or the simulation ends before it
        connects (the message names its log).
    """

    def __init__(self, config=None, simulator="verilator", *, timeout=120.0, waves=False,
                 test_dir=None, unit=None, test_module="lowbit.sim.accelerator_bridge"):
        from .sim.runner import SIMULATORS
        from .units import get_unit

        config = AcceleratorConfig() if config is None else config
        if not isinstance(config, AcceleratorConfig):
            raise TypeError(f"config must be an AcceleratorConfig, not {config!r}")
        if simulator not in SIMULATORS:
            raise ValueError(f"simulator must be one of {', '.join(SIMULATORS)}, not "
                             f"{simulator!r}")
        if unit is None:
            try:
                unit = get_unit("accelerator")
            except KeyError as error:
                raise TransportError(f"cannot simulate the accelerator: {error.args[0]}") \
                    from None
        self.config = config
        self.simulator = simulator
        self.unit = unit
        self.test_module = test_module
        self.test_dir = os.path.abspath(test_dir or tempfile.mkdtemp(prefix="lowbit-rtl-"))
        self.log = os.path.join(self.test_dir, "sim.log")
        self.result = None
        self._error = None
        self._listener = socket.create_server(("127.0.0.1", 0))
        port = self._listener.getsockname()[1]
        self._thread = threading.Thread(
            target=self._simulate, name=f"lowbit-rtl-{port}", daemon=True,
            kwargs=dict(waves=waves, extra_env={"LOWBIT_BRIDGE_PORT": str(port)}))
        self._thread.start()
        name = f"the RTL simulation ({unit.name} on {simulator})"
        try:
            sock = self._accept()
        except BaseException:
            self._listener.close()
            raise
        super().__init__(_SocketChannel(sock), timeout=timeout, name=name)

    def _simulate(self, **kwargs):
        from .sim.runner import run_cocotb

        try:
            self.result = run_cocotb(self.unit, self.config, simulator=self.simulator,
                                     test_module=self.test_module,
                                     test_dir=self.test_dir, **kwargs)
        except BaseException as error:  # noqa: BLE001 - cocotb's runner exits under pytest
            self._error = error

    def _accept(self):
        # The build (cached, but minutes the first time) and the simulator's start come
        # first: wait as long as the simulation thread lives.
        self._listener.settimeout(0.2)
        while True:
            try:
                sock, _ = self._listener.accept()
                return sock
            except TimeoutError:
                if not self._thread.is_alive():
                    raise TransportError(f"the RTL simulation ended before connecting to "
                                         f"the host: {self._failure()}") from None

    def _failure(self):
        what = f"{type(self._error).__name__}: {self._error}" if self._error is not None \
            else "it reported no error"
        return f"{what} (log: {self.log})"

    def read(self, n):
        try:
            return super().read(n)
        except TransportError as error:
            if self._thread.is_alive():
                raise
            raise TransportError(f"{error}; the simulation has ended: {self._failure()}") \
                from None

    def close(self):
        """Close the socket, which ends the cocotb test, and wait for the simulator.

        Raises :class:`TransportError` if the simulation failed or does not end.
        """
        if self.closed:
            return
        super().close()
        self._listener.close()
        self._thread.join(timeout=120)
        if self._thread.is_alive():
            raise TransportError(f"the RTL simulation did not end within 120 s of the host "
                                 f"closing the link (log: {self.log})")
        if self._error is not None:
            raise TransportError(f"the RTL simulation failed: {self._failure()}")


# The runtime ------------------------------------------------------------------------------


@dataclasses.dataclass
class RunResult:
    """What a program run produced.

    Attributes
    ----------
    outputs : list of numpy.ndarray
        The ``word``-bit words of each ``STORE``, in order (``uint64``; ``count * lanes``
        words, lane 0 of a memory word first).
    status : int
        The ``HALT`` instruction's status byte.
    stats : dict
        The status record's counters (:data:`lowbit.isa.STATUS_COUNTERS`: ``cycles``,
        ``array_beats``, ``tile_holds``), ``instructions`` (executed, ``HALT`` included),
        ``bytes_in`` and ``bytes_out`` (bytes moved over the link by this run, records
        included).
    """

    outputs: list
    status: int
    stats: dict


def _field_bytes(layout, name):
    # (first byte, bytes) of a byte-aligned field of a record layout.
    field = layout[name]
    return field.offset // 8, field.width // 8


class Runtime:
    """Runs programs on an accelerator through a transport.

    Parameters
    ----------
    config : AcceleratorConfig
        The accelerator behind the transport.
    transport : Transport
        The link to it.

    Raises
    ------
    TypeError
        If ``config`` or ``transport`` has the wrong type.
    """

    def __init__(self, config, transport):
        if not isinstance(config, AcceleratorConfig):
            raise TypeError(f"config must be an AcceleratorConfig, not {config!r}")
        if not isinstance(transport, Transport):
            raise TypeError(f"transport must be a Transport, not {transport!r}")
        self.config = config
        self.transport = transport
        self.isa = instruction_set(config)

    # Host to accelerator --------------------------------------------------------------

    def _input_words(self, inputs):
        # The run's input words as a flat uint64 array, each checked to fit a word.
        word = self.config.word
        flat = np.asarray(inputs).reshape(-1)
        if flat.size == 0:
            return np.zeros(0, dtype=np.uint64)
        if flat.dtype.kind == "O":
            if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool)
                       for v in flat):
                raise TypeError("inputs must be integer words")
            bad = np.array([not 0 <= v < 2 ** word for v in flat], dtype=bool)
        elif flat.dtype.kind in "ui":
            # Compare in a 64-bit type of the same signedness: lossless for any integer.
            flat = flat.astype(np.int64 if flat.dtype.kind == "i" else np.uint64)
            bad = flat < 0
            if word < 64:
                bad |= flat >= 2 ** word
        else:
            raise TypeError(f"inputs must be integer words, not {flat.dtype}")
        if np.any(bad):
            i = int(np.argmax(bad))
            raise ValueError(f"input word {i} is {int(flat[i])}, which does not fit a "
                             f"{word}-bit word")
        return flat.astype(np.uint64)

    def serialise(self, program, inputs=()):
        """The bytes that run ``program`` with ``inputs`` (``docs/host_link.md``): each
        instruction word, and after a ``LOAD`` its ``count * lanes`` words
        (:meth:`lowbit.isa.InstructionSet.link_words`) from the constants (``CONST``) or
        the inputs (``INPUT``), each consumed in order.

        Raises
        ------
        lowbit.program.ProgramError
            If ``program`` was built for another accelerator configuration.
        ValueError
            If ``inputs`` holds more or fewer words than the ``INPUT`` loads take, or a
            value that does not fit a word.
        """
        if not isinstance(program, Program):
            raise TypeError(f"program must be a Program, not {program!r}")
        ours, theirs = self.config.fingerprint(), program.config.fingerprint()
        if theirs != ours:
            raise ProgramError(f"program was built for accelerator configuration {theirs}, "
                               f"this accelerator is {ours}")
        streams = {Source.CONST: program.constants, Source.INPUT: self._input_words(inputs)}
        wanted = sum(self.isa.link_words(i) for i in program.instructions
                     if self.isa.takes_data(i) and i["source"] == Source.INPUT)
        given = len(streams[Source.INPUT])
        if given != wanted:
            raise ValueError(f"the program's INPUT loads take {wanted} words, {given} "
                             f"given")
        dtype = f"<u{self.config.word // 8}"
        pos = {Source.CONST: 0, Source.INPUT: 0}
        parts = []
        for instr, word in zip(program.instructions, program.words()):
            parts.append(word.to_bytes(self.isa.bytes, "little"))
            if self.isa.takes_data(instr):
                source, count = instr["source"], self.isa.link_words(instr)
                words = streams[source][pos[source]:pos[source] + count]
                parts.append(words.astype(dtype).tobytes())
                pos[source] += count
        return b"".join(parts)

    # Running --------------------------------------------------------------------------

    def run(self, program, inputs=()):
        """Run ``program`` with input words ``inputs``; return a :class:`RunResult`.

        Raises
        ------
        lowbit.program.ProgramError, ValueError
            See :meth:`serialise`.
        AcceleratorError
            If the accelerator reports a non-``OK`` status.
        ProtocolError, TransportError
            For a malformed reply or a failed link.
        """
        if not self.transport.keeps_weights:
            return self.run_raw(self.serialise(program, inputs))
        from .resident import NO_TAG, loads_weights, split_preamble, weights_tag, \
            without_preamble

        preamble = split_preamble(program)
        resident = preamble[0] and not loads_weights(program.instructions[preamble[0]:])
        tag = weights_tag(program, preamble) if resident else None
        if tag is not None and self.transport.tag == tag:
            result = self.run_raw(self.serialise(without_preamble(program, preamble),
                                                 inputs))
            result.stats["weights_sent"] = False
            return result
        if (preamble[0] or loads_weights(program.instructions)) and \
                self.transport.tag != NO_TAG:
            self.transport.set_tag(NO_TAG)  # the memories are about to change
        result = self.run_raw(self.serialise(program, inputs))
        if tag is not None:
            self.transport.set_tag(tag)
        result.stats["weights_sent"] = bool(preamble[0])
        return result

    def run_raw(self, data):
        """Send ``data`` as it is (a program stream, possibly corrupt or cut short) and
        read records up to the status record; as :meth:`run` otherwise."""
        data = bytes(data)
        self.transport.write(data)
        outputs, status, stats = self._records()
        stats["bytes_in"] = len(data)
        code, halt, index = status
        if code != Status.OK:
            raise AcceleratorError(code, index, self._opcode_at(data, index), outputs, stats)
        return RunResult(outputs=outputs, status=halt, stats=stats)

    # Accelerator to host --------------------------------------------------------------

    def _reserved(self, layout, bits, offset, what):
        # A ProtocolError at the first nonzero byte of a record's reserved field.
        first, size = _field_bytes(layout, "reserved")
        raw = bits.to_bytes(layout.size // 8, "little")
        for i in range(first, first + size):
            if raw[i]:
                raise ProtocolError(offset + i, raw[i], f"a reserved byte of a {what}, which "
                                    f"must be zero")

    def _store_counts(self):
        # (lanes, most words) of each memory a STORE reads: a DATA record's count is a
        # whole number of memory words.
        return [(self.config.lanes(b.name.lower()), self.config.flat_words(b.name.lower()))
                for b in self.isa.store_buffers]

    def _records(self):
        # Read DATA records up to the STATUS record: (outputs, (code, halt, index), stats).
        word_bytes = self.config.word // 8
        _, kind_bytes = _field_bytes(DATA_HEADER, "kind")
        counters_at = STATUS_RECORD[STATUS_COUNTERS[0]].offset // 8
        outputs, offset = [], 0
        while True:
            head = self.transport.read(kind_bytes)
            kind = int.from_bytes(head, "little")
            if kind == DATA:
                head += self.transport.read(RECORD_HEADER - kind_bytes)
                bits = int.from_bytes(head, "little")
                self._reserved(DATA_HEADER, bits, offset, "DATA record header")
                count = DATA_HEADER.from_bits(bits).count
                stores = self._store_counts()
                if not any(count % lanes == 0 and 0 < count <= most
                           for lanes, most in stores):
                    at, _ = _field_bytes(DATA_HEADER, "count")
                    sends = " or ".join(f"multiples of {lanes} up to {most} words"
                                        for lanes, most in stores)
                    raise ProtocolError(offset + at, head[at], f"the start of a DATA "
                                        f"record's count {count}, which no STORE sends "
                                        f"({sends})")
                body = self.transport.read(count * word_bytes)
                outputs.append(np.frombuffer(body, dtype=f"<u{word_bytes}")
                               .astype(np.uint64))
                offset += RECORD_HEADER + len(body)
            elif kind == STATUS:
                # The fields before the counters first: a malformed record is reported
                # even when the counters never come.
                head += self.transport.read(counters_at - kind_bytes)
                head += bytes(STATUS_BYTES - counters_at)
                bits = int.from_bytes(head, "little")
                self._reserved(STATUS_RECORD, bits, offset, "STATUS record")
                view = STATUS_RECORD.from_bits(bits)
                if view.code not in {s.value for s in Status}:
                    at, _ = _field_bytes(STATUS_RECORD, "code")
                    raise ProtocolError(offset + at, view.code, f"not a status code "
                                        f"(0..{max(Status).value})")
                counters = self.transport.read(STATUS_BYTES - counters_at)
                view = STATUS_RECORD.from_bits(int.from_bytes(head[:counters_at] + counters,
                                                              "little"))
                stats = {name: int(view[name]) for name in STATUS_COUNTERS}
                stats["instructions"] = int(view.index) + 1
                stats["bytes_out"] = offset + STATUS_BYTES
                return outputs, (Status(view.code), int(view.halt), int(view.index)), stats
            else:
                raise ProtocolError(offset, kind, f"not a record kind (DATA 0x{DATA:02x} or "
                                    f"STATUS 0x{STATUS:02x})")

    def _opcode_at(self, data, index):
        # The opcode name of instruction `index` of a stream, found as the accelerator finds
        # it (decoding each word and skipping each LOAD's data); None where the stream
        # cannot be followed that far.
        isa, word_bytes = self.isa, self.config.word // 8
        pos = 0
        for i in range(index + 1):
            if pos + isa.bytes > len(data):
                return None
            bits = int.from_bytes(data[pos:pos + isa.bytes], "little")
            pos += isa.bytes
            if i == index:
                number = isa.raw_layout.from_bits(bits).opcode
                if number not in {op.value for op in isa.opcodes}:
                    return f"opcode {number}"
                return Opcode(number).name
            try:
                instr = isa.decode(bits, regions=False)
            except InstructionError:
                return None  # the accelerator would have stopped here
            if isa.takes_data(instr):
                pos += isa.link_words(instr) * word_bytes
        return None
