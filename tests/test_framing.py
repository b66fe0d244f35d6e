"""The framed host link: the frame format (CRC, layout, decoder), and the host codec
(FramedTransport) against the gateware (UARTs and UARTBridge, driven through their pins) on
Amaranth's simulator, with an echo standing in for the accelerator and bytes corrupted and
dropped in both directions (random noise on the line: tests/test_board_sim.py, on the
whole board under Verilator, which is much faster)."""

import random
import time

import pytest
from amaranth import Module
from amaranth.lib import fifo
from amaranth.sim import Simulator

from lowbit import framing
from lowbit.config.accelerator import AcceleratorConfig
from lowbit.framing import (CRC, MAX_PAYLOAD, NO_SESSION, PROTOCOL_VERSION, SYNC, TAG_BYTES,
                            BoardMismatch, Decoder, FramedTransport, Kind, crc16, encode,
                            ident)
from lowbit.hw.uart_bridge import BitCRC, SerialBridge, UARTBridge
from lowbit.runtime import TransportError
from lowbit.sim.link_faults import FaultyChannel


def test_crc_is_crc16_mcrf4xx():
    # The catalogue check value of CRC-16/MCRF4XX (reflected 0x1021 from 0xFFFF).
    assert crc16(b"123456789") == 0x6F91
    assert CRC.compute(b"123456789") == 0x6F91
    rng = random.Random(0)
    for n in (0, 1, 7, 255):
        data = bytes(rng.randrange(256) for _ in range(n))
        assert crc16(data) == CRC.compute(data)
    assert crc16(b"6789", crc16(b"12345")) == 0x6F91


def test_frame_layout():
    frame = encode(Kind.DATA, 1, b"\x10\x20")
    # SYNC, kind, seq, length, payload, then the CRC of all of that, low byte first.
    assert frame[:6] == bytes([0x5A, 0x01, 0x01, 0x02, 0x10, 0x20])
    assert frame[6:] == CRC.compute(frame[:6]).to_bytes(2, "little")
    assert crc16(frame) == 0   # the residue the gateware checks
    assert encode(Kind.ACK, 1) == bytes([SYNC, 0x02, 0x01, 0x00]) + \
        CRC.compute(bytes([SYNC, 0x02, 0x01, 0x00])).to_bytes(2, "little")
    assert ident(CONFIG) == bytes([PROTOCOL_VERSION]) + bytes.fromhex(CONFIG.fingerprint())


def test_encode_refuses():
    with pytest.raises(ValueError, match="^a frame carries at most 255 bytes, not 256$"):
        encode(Kind.DATA, 0, bytes(256))
    with pytest.raises(ValueError, match="^a ACK frame has no payload$"):
        encode(Kind.ACK, 0, b"x")


def test_decoder():
    decoder = Decoder()
    good = encode(Kind.DATA, 1, b"abc")
    frames = decoder.feed(b"\x00\x11" + good + encode(Kind.ACK, 0))
    assert [(f.kind, f.seq, f.payload) for f in frames] == [(Kind.DATA, 1, b"abc"),
                                                             (Kind.ACK, 0, b"")]
    assert decoder.skipped == 2
    bad = bytearray(good)
    bad[5] ^= 0x40
    [frame] = decoder.feed(bad)
    assert not frame.ok and frame.error == "CRC mismatch"
    assert decoder.feed(good[:4]) == []
    assert decoder.abort().error == "frame cut short (a byte was lost)"
    assert decoder.abort() is None
    assert [f.payload for f in decoder.feed(good)] == [b"abc"]


# The bridge on Amaranth's simulator ---------------------------------------------------------

DIVISOR = 4         # clock cycles per bit on the simulated line (the UART's least)
CLK_HZ = 1_000_000
CONFIG = AcceleratorConfig()


async def _cycles(ctx, n):
    # (not tick().repeat(n): a background testbench left inside it at the end of a test
    # warns as it is collected)
    for _ in range(n):
        await ctx.tick()


class BridgeChannel:
    """A channel to the serial bridge (UARTs and UARTBridge) whose accelerator is an echo
    (a FIFO from ``to_accel`` to ``from_accel``), through its pins: a line model sends the
    host's bytes as 8N1 frames of DIVISOR cycles a bit and samples the bridge's ``tx`` in
    the middle of each bit. ``read`` runs the simulation until bytes come out or 1,024
    cycles (25 byte times) pass, so an empty read inside a frame means a lost byte, as on
    a line."""

    def __init__(self, ident=None):
        self.bridge = SerialBridge(clk_freq=CLK_HZ, baud=CLK_HZ // DIVISOR,
                                   ident=ident or framing.ident(CONFIG))
        m = Module()
        m.submodules.bridge = self.bridge
        m.submodules.echo = echo = fifo.SyncFIFO(width=8, depth=16)
        m.d.comb += [echo.w_data.eq(self.bridge.to_accel.payload),
                     echo.w_en.eq(self.bridge.to_accel.valid),
                     self.bridge.to_accel.ready.eq(echo.w_rdy),
                     self.bridge.from_accel.payload.eq(echo.r_data),
                     self.bridge.from_accel.valid.eq(echo.r_rdy),
                     echo.r_en.eq(self.bridge.from_accel.ready)]
        self.incoming = bytearray()   # host -> bridge
        self.outgoing = bytearray()   # bridge -> host
        self.resets = 0
        self.time = 0.0
        self.sim = Simulator(m)
        self.sim.add_clock(1 / CLK_HZ)
        self.sim.add_testbench(self._send, background=True)
        self.sim.add_testbench(self._receive, background=True)
        self.sim.add_testbench(self._count_resets, background=True)

    async def _send(self, ctx):
        while True:
            if not self.incoming:
                await _cycles(ctx, 16 * DIVISOR)
                continue
            byte = self.incoming.pop(0)
            for bit in [0] + [(byte >> i) & 1 for i in range(8)] + [1]:
                ctx.set(self.bridge.rx, bit)
                await _cycles(ctx, DIVISOR)

    async def _receive(self, ctx):
        tx = self.bridge.tx
        while True:
            await ctx.negedge(tx)
            await _cycles(ctx, DIVISOR // 2)
            assert ctx.get(tx) == 0
            byte = 0
            for i in range(8):
                await _cycles(ctx, DIVISOR)
                byte |= ctx.get(tx) << i
            await _cycles(ctx, DIVISOR)
            assert ctx.get(tx) == 1, "the bridge sent a byte without its stop bit"
            self.outgoing.append(byte)

    async def _count_resets(self, ctx):
        while True:
            await ctx.posedge(self.bridge.accel_reset)
            self.resets += 1

    def write(self, data):
        self.incoming += data

    def read(self, n):
        for _ in range(1024 // 64):
            if self.outgoing:
                break
            self.time += 64 / CLK_HZ
            self.sim.run_until(self.time)
        out = bytes(self.outgoing[:n])
        del self.outgoing[:n]
        return out

    def close(self):
        pass


def link(channel, board=None, **options):
    # Every timeout in the simulated line's time: a loaded machine changes nothing. A
    # 255-byte frame takes 10 ms of it.
    board = board or channel
    options = {"timeout": 1.0, "resend": 0.015, "gap": 1e-6, **options}
    return FramedTransport(channel, clock=lambda: board.time, **options)


def test_bit_crc_folds_uart_bits_into_the_frame_crc():
    dut = BitCRC(0xFFFF)
    data = bytes(random.Random(3).randrange(256) for _ in range(6))
    frame = data + crc16(data).to_bytes(2, "little")
    seen = []

    async def bench(ctx):
        for k, byte in enumerate(frame):
            for i in range(8):    # LSB first, as a UART moves them
                ctx.set(dut.bit, (byte >> i) & 1)
                ctx.set(dut.valid, 1)
                await ctx.tick()
            ctx.set(dut.valid, 0)
            await ctx.tick()
            seen.append((ctx.get(dut.crc), ctx.get(dut.zero)))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert seen[len(data) - 1] == (crc16(data), 0)
    assert seen[-1] == (0, 1)   # a whole good frame folds to zero


def test_echo_through_the_bridge():
    channel = BridgeChannel()
    data = bytes(random.Random(1).randrange(256) for _ in range(300))
    with link(channel, config=CONFIG) as host:
        assert host.board_fingerprint == CONFIG.fingerprint()
        assert host.tag == bytes(TAG_BYTES)   # a board just configured holds no weights
        host.write(data)
        assert host.read(len(data)) == data
        assert host.stats["resent"] == 0 and host.stats["bad_frames"] == 0
        # 300 bytes: two frames of at most MAX_PAYLOAD each way (the echo's output leaves
        # in frames as the bridge's flush timer and buffer decide: at least two).
        assert host.stats["frames_sent"] == 2 and host.stats["frames_received"] >= 2
    assert channel.resets == 1      # the session's RESET reached the accelerator side


def test_corrupted_and_dropped_bytes_are_repaired():
    channel = BridgeChannel()
    rng = random.Random(1)
    # Damage in both directions: header, payload and CRC bytes of frames, and ACKs.
    faulty = FaultyChannel(channel, flip_out={8, 300, 301}, drop_out={140},
                           flip_in={40, 280}, drop_in={120, 300}, seed=1)
    data = bytes(rng.randrange(256) for _ in range(MAX_PAYLOAD + 17))
    with link(faulty, channel) as host:
        host.write(data[:200])
        host.write(data[200:])
        assert host.read(len(data)) == data
        stats = dict(host.stats)
    assert sum(faulty.damaged["out"].values()) == 4
    assert sum(faulty.damaged["in"].values()) == 4
    # The damage was noticed (bad frames here, silence from the bridge) and repaired by
    # resends.
    assert stats["resent"] > 0 and stats["bad_frames"] > 0


def test_a_new_session_restarts_the_sequence_numbers_and_keeps_the_tag():
    channel = BridgeChannel()
    with link(channel) as host:
        host.write(b"first session" * 3)
        assert host.read(13 * 3) == b"first session" * 3
        host.set_tag(b"weights1")
        assert host.tag == b"weights1"
    with link(channel) as host:
        assert host.tag == b"weights1"   # read back from the board
        host.write(b"second")
        assert host.read(6) == b"second"
        host.set_tag(bytes(TAG_BYTES))
    with link(channel) as host:
        assert host.tag == bytes(TAG_BYTES)
    assert channel.resets == 3


def test_a_board_of_another_configuration_or_protocol_is_refused():
    other = AcceleratorConfig(queue_depth=2)
    with pytest.raises(BoardMismatch, match=f"^the board was built for accelerator "
                                            f"configuration {CONFIG.fingerprint()}, the "
                                            f"host expects {other.fingerprint()}: flash"):
        link(BridgeChannel(), config=other)
    old = bytes([1]) + bytes.fromhex(CONFIG.fingerprint())
    with pytest.raises(BoardMismatch, match="^the board runs another lowbit link protocol"):
        link(BridgeChannel(ident=old))


def test_a_board_that_restarted_is_an_error_not_a_wrong_result():
    class Swappable:
        # The board behind the line is replaced by a freshly configured one.
        def __init__(self):
            self.board = BridgeChannel()

        def write(self, data):
            self.board.write(data)

        def read(self, n):
            return self.board.read(n)

        def close(self):
            pass

    channel = Swappable()
    host = FramedTransport(channel, clock=lambda: channel.board.time, timeout=1.0,
                           resend=0.015, gap=1e-6)
    host.write(b"before")
    assert host.read(6) == b"before"
    channel.board = BridgeChannel()
    with pytest.raises(TransportError, match="^the board restarted during the session"):
        host.write(b"after")
    # What the fresh board says to a frame outside any session.
    fresh = BridgeChannel()
    fresh.write(encode(Kind.DATA, 0, b"x"))
    decoder, frames = Decoder(), []
    for _ in range(100):
        frames += decoder.feed(fresh.read(64))
        if frames:
            break
    [answer] = frames
    assert answer.kind == Kind.RESET and answer.seq == NO_SESSION


def test_silent_board():
    class Silent:
        def write(self, data):
            pass

        def read(self, n):
            time.sleep(0.001)
            return b""

        def close(self):
            pass

    start = time.monotonic()
    with pytest.raises(TransportError, match=r"^no answer from the board for 0\.3 s: is the "
                                             r"lowbit bitstream loaded, and the baud rate "
                                             r"right\?$"):
        FramedTransport(Silent(), timeout=0.3, resend=0.1)
    assert time.monotonic() - start < 5


def test_a_link_that_stays_broken_is_an_error():
    channel = BridgeChannel()
    # Everything after the session's RESET frame (6 bytes) is lost on the way to the board.
    faulty = FaultyChannel(channel, drop_out=set(range(6, 100_000)))
    host = link(faulty, channel, max_tries=3)
    with pytest.raises(TransportError, match="^the board did not acknowledge DATA frame 0 "
                                             "after 3 sends"):
        host.write(b"lost")


def test_bridge_parameters():
    with pytest.raises(ValueError, match="^UARTBridge gap_ticks must be a positive integer, "
                                         "not 0$"):
        UARTBridge(ident=b"", tick_log2=10, gap_ticks=0, flush_ticks=1)
    with pytest.raises(ValueError, match="^UARTBridge ident takes at most 247 bytes, not "
                                         "300$"):
        UARTBridge(ident=bytes(300), tick_log2=10, gap_ticks=1, flush_ticks=1)
