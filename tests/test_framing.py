"""The framed host link: the frame format (CRC, layout, decoder), and the host codec
(FramedTransport) against the gateware bridge (UARTBridge) on Amaranth's simulator, with an
echo standing in for the accelerator and bytes corrupted and dropped in both directions."""

import random
import time

import pytest
from amaranth import Module
from amaranth.lib import fifo
from amaranth.sim import Simulator

from lowbit.framing import (CRC, MAX_PAYLOAD, SYNC, Decoder, FramedTransport, Kind, crc16,
                            encode)
from lowbit.hw.uart_bridge import UARTBridge
from lowbit.runtime import TransportError
from lowbit.sim.link_faults import FaultyChannel


def test_crc_is_crc16_ccitt_false():
    # The catalogue check value of CRC-16/CCITT-FALSE (CRC-16/IBM-3740).
    assert crc16(b"123456789") == 0x29B1
    assert CRC.compute(b"123456789") == 0x29B1
    rng = random.Random(0)
    for n in (0, 1, 7, 255):
        data = bytes(rng.randrange(256) for _ in range(n))
        assert crc16(data) == CRC.compute(data)


def test_frame_layout():
    frame = encode(Kind.DATA, 0x107, b"\x10\x20")
    # SYNC, kind, seq (mod 256), length, payload, CRC high byte first.
    assert frame[:6] == bytes([0x5A, 0x01, 0x07, 0x02, 0x10, 0x20])
    assert frame[6:] == CRC.compute(frame[1:6]).to_bytes(2, "big")
    assert crc16(frame[1:]) == 0   # the residue the gateware checks
    assert encode(Kind.NAK, 3)[:4] == bytes([SYNC, 0x03, 0x03, 0x00])


def test_encode_refuses():
    with pytest.raises(ValueError, match="^a frame carries at most 255 bytes, not 256$"):
        encode(Kind.DATA, 0, bytes(256))
    with pytest.raises(ValueError, match="^a ACK frame has no payload$"):
        encode(Kind.ACK, 0, b"x")


def test_decoder():
    decoder = Decoder()
    good = encode(Kind.DATA, 5, b"abc")
    frames = decoder.feed(b"\x00\x11" + good + encode(Kind.ACK, 9))
    assert [(f.kind, f.seq, f.payload) for f in frames] == [(Kind.DATA, 5, b"abc"),
                                                             (Kind.ACK, 9, b"")]
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

BYTE_CYCLES = 4     # the simulated line carries a byte every 4 cycles each way
GAP = 64


class BridgeChannel:
    """A channel to a UARTBridge whose accelerator is an echo (a FIFO from ``to_accel`` to
    ``from_accel``): bytes move at most every BYTE_CYCLES cycles each way; ``read`` runs
    the simulation until bytes come out or 4 * GAP cycles pass (so a read that returns
    nothing in the middle of a frame means a lost byte, as on a line)."""

    def __init__(self, resend_cycles=20_000):
        self.bridge = UARTBridge(gap_cycles=GAP, flush_cycles=32, resend_cycles=resend_cycles)
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
        self.sim.add_clock(1e-6)
        self.sim.add_testbench(self._line, background=True)

    async def _line(self, ctx):
        b = self.bridge
        cycle = 0
        while True:
            slot = cycle % BYTE_CYCLES == 0
            offer = slot and bool(self.incoming)
            if offer:
                ctx.set(b.rx.payload, self.incoming[0])
            ctx.set(b.rx.valid, offer)
            ctx.set(b.tx.ready, slot)
            _, _, rx_ready, tx_valid, tx_payload, reset = await ctx.tick().sample(
                b.rx.ready, b.tx.valid, b.tx.payload, b.accel_reset)
            if offer and rx_ready:
                del self.incoming[0]
            if slot and tx_valid:
                self.outgoing.append(tx_payload)
            self.resets += reset
            cycle += 1

    def write(self, data):
        self.incoming += data

    def read(self, n):
        for _ in range(4 * GAP // 16):
            if self.outgoing:
                break
            self.time += 16e-6
            self.sim.run_until(self.time)
        out = bytes(self.outgoing[:n])
        del self.outgoing[:n]
        return out

    def close(self):
        pass


def link(channel, **options):
    options = {"timeout": 30.0, "resend": 2.0, "gap": 1e-6, **options}
    return FramedTransport(channel, **options)


def test_echo_through_the_bridge():
    channel = BridgeChannel()
    data = bytes(random.Random(1).randrange(256) for _ in range(700))
    # A long resend timeout: on a loaded machine a slow simulation must not look lost.
    with link(channel, resend=10.0) as host:
        host.write(data)
        assert host.read(len(data)) == data
        assert host.stats["resent"] == 0 and host.stats["bad_frames"] == 0
        # 700 bytes: three frames of at most MAX_PAYLOAD each way (the echo's output
        # leaves in frames as the bridge's flush timer and buffer decide: at least three).
        assert host.stats["frames_sent"] == 3 and host.stats["frames_received"] >= 3
    assert channel.resets == 1      # the session's RESET reached the accelerator side


@pytest.mark.parametrize("seed", [1, 2])
def test_corrupted_and_dropped_bytes_are_repaired(seed):
    channel = BridgeChannel()
    rng = random.Random(seed)
    # Damage in both directions: header, payload and CRC bytes of frames, and ACKs.
    faulty = FaultyChannel(channel, flip_out={10, 300, 301, 555}, drop_out={140, 700},
                           flip_in={40, 280}, drop_in={120, 420}, seed=seed)
    data = bytes(rng.randrange(256) for _ in range(3 * MAX_PAYLOAD + 17))
    with link(faulty) as host:
        host.write(data[:500])
        host.write(data[500:])
        assert host.read(len(data)) == data
        stats = dict(host.stats)
    assert sum(faulty.damaged["out"].values()) == 6
    assert sum(faulty.damaged["in"].values()) == 4
    # The damage was noticed (NAKs from the bridge, bad frames here) and repaired by resends.
    assert stats["resent"] > 0 and stats["bad_frames"] > 0 and stats["naks_received"] > 0


@pytest.mark.parametrize("seed", [0, 2])
def test_random_noise_never_delivers_wrong_bytes(seed):
    # 0.2% of bytes flipped and 0.2% dropped, each way: about two frames in three damaged.
    # A damaged frame's tail must not keep swallowing the resends (the NAK waits for a quiet
    # line and a receiver hunting for SYNC).
    channel = BridgeChannel(resend_cycles=5000)
    faulty = FaultyChannel(channel, rate=0.002, seed=100 + seed)
    data = bytes(random.Random(seed).randrange(256) for _ in range(2000))
    with link(faulty, max_tries=30) as host:
        for start in range(0, len(data), 500):
            host.write(data[start:start + 500])
            assert host.read(500) == data[start:start + 500]
        assert host.stats["naks_received"] > 0 and host.stats["bad_frames"] > 0
    assert faulty.damaged["out"]["flipped"] + faulty.damaged["in"]["flipped"] > 10
    assert faulty.damaged["out"]["dropped"] + faulty.damaged["in"]["dropped"] > 10


def test_a_new_session_restarts_the_sequence_numbers():
    channel = BridgeChannel()
    with link(channel) as host:
        host.write(b"first session" * 30)
        assert host.read(13 * 30) == b"first session" * 30
    with link(channel) as host:
        host.write(b"second")
        assert host.read(6) == b"second"
    assert channel.resets == 2


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
    host = link(faulty, resend=0.05, max_tries=3)
    with pytest.raises(TransportError, match="^the board did not acknowledge DATA frame 0 "
                                             "after 3 sends"):
        host.write(b"lost")


def test_bridge_parameters():
    with pytest.raises(ValueError, match="^UARTBridge gap_cycles must be a positive integer, "
                                         "not 0$"):
        UARTBridge(gap_cycles=0, flush_cycles=1, resend_cycles=1)
