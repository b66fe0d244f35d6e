"""The whole board (UART, framing bridge, accelerator) as generated Verilog under cocotb
(Verilator), with a UART model on its pins at 9 clock cycles a bit (the iCEBreaker's
ratio), driven by the real serial runtime code (FramedTransport, the board
transport's codec, over the simulation's socket instead of a serial port): a compiled
digits BNN gives the ISS's scores on a clean line, with bytes corrupted and dropped in both
directions and with random noise, with its weights resident across calls; a board of
another configuration, one that stops answering and a wrong baud rate are clear errors. One
Verilator build serves every check."""

import numpy as np
import pytest
from sklearn.datasets import load_digits

from lowbit.boards.core import SIM_BAUD, sim_unit
from lowbit.compiler import compile_model, run_model
from lowbit.config.accelerator import AcceleratorConfig
from lowbit.config.xnor_array import XNORArrayConfig
from lowbit.framing import BoardMismatch, FramedTransport
from lowbit.runtime import AcceleratorError, ISSTransport, RTLTransport, Runtime, TransportError
from lowbit.sim.link_faults import FaultyChannel
from lowbit.train import train

pytestmark = pytest.mark.cocotb

# A small accelerator; the board's host link stalls for resends, so its TRUNCATED timeout
# is long (docs/boards.md).
CONFIG = AcceleratorConfig(
    xnor_array=XNORArrayConfig(rows=2, cols=2, max_k=128, max_act_bits=5, max_weight_bits=1),
    max_out_bits=1, in_depth=128, act_depth=64, weight_depth=512, thresh_depth=64,
    score_depth=128, queue_depth=2, timeout_cycles=1 << 26, rank_depth=1024)


class _Shared:
    """A channel that a session's close leaves open (several sessions on one simulation)."""

    def __init__(self, channel):
        self.channel = channel

    def read(self, n):
        return self.channel.read(n)

    def write(self, data):
        self.channel.write(data)

    def close(self):
        pass


def session(channel, **options):
    # Generous wall-clock limits: simulated bytes take a fraction of a millisecond each.
    options = {"timeout": 120.0, "resend": 3.0, "gap": 0.5, "config": CONFIG, **options}
    return FramedTransport(_Shared(channel), **options)


@pytest.fixture(scope="module")
def compiled():
    model, _ = train("digits", precision="w1a1", hidden=(64,), epochs=3, seed=0,
                     progress=False)
    program = compile_model(model, CONFIG, batch=8)
    x = load_digits().data[:16]
    with ISSTransport(CONFIG) as iss:
        expected, _ = run_model(program, Runtime(CONFIG, iss), x)
    return program, x, expected, compile_model(model, CONFIG, batch=8, result="argmax")


def test_board_runs_a_digits_bnn_like_the_iss(compiled, tmp_path):
    program, x, expected, argmax_program = compiled
    rtl = RTLTransport(CONFIG, unit=sim_unit(), test_module="lowbit.sim.board_bridge",
                       test_dir=tmp_path / "sim")
    with rtl:
        # A clean line; the weights go once, then stay resident across calls and
        # sessions, as long as the board keeps its tag.
        with session(rtl.channel) as link:
            scores, stats = run_model(program, Runtime(CONFIG, link), x)
            clean = dict(link.stats)
            assert stats["weights_sent"]
            again, again_stats = run_model(program, Runtime(CONFIG, link), x)
        assert np.array_equal(scores, expected) and np.array_equal(again, expected)
        assert stats["runs"] == 2 and not again_stats["weights_sent"]
        assert again_stats["bytes_in"] < stats["bytes_in"]
        assert clean["resent"] == 0 and clean["bad_frames"] == 0
        with session(rtl.channel) as link:
            scores, stats = run_model(program, Runtime(CONFIG, link), x)
        assert np.array_equal(scores, expected) and not stats["weights_sent"]

        # A noisy line: bytes flipped and dropped both ways, in frame headers, payloads,
        # CRCs and acknowledgements, then random noise (0.2% of bytes flipped and 0.2%
        # dropped each way); the weights go again (another program clears the tag first).
        faulty = FaultyChannel(rtl.channel, flip_out={3, 20, 700, 1500, 1501},
                               drop_out={9, 400, 2100}, flip_in={2, 50, 300},
                               drop_in={30, 150, 420}, seed=5)
        with session(faulty) as link:
            link.set_tag(bytes(8))
            scores, _ = run_model(program, Runtime(CONFIG, link), x)
            noisy = dict(link.stats)
        assert np.array_equal(scores, expected)
        assert sum(faulty.damaged["out"].values()) == 8
        assert sum(faulty.damaged["in"].values()) == 6
        assert noisy["resent"] > 0 and noisy["bad_frames"] > 0
        noise = FaultyChannel(rtl.channel, rate=0.002, seed=7)
        with session(noise, max_tries=40) as link:
            link.set_tag(bytes(8))
            scores, _ = run_model(program, Runtime(CONFIG, link), x)
        assert np.array_equal(scores, expected)
        assert sum(noise.damaged["out"].values()) + sum(noise.damaged["in"].values()) > 0

        # The predicted classes instead of the scores (the argmax unit, its rank table
        # resident with the weights): the host's argmax of the scores, on a clean line
        # and on a noisy one, a byte an image back.
        with session(rtl.channel) as link:
            classes, first = run_model(argmax_program, Runtime(CONFIG, link), x)
            again, second = run_model(argmax_program, Runtime(CONFIG, link), x)
        assert np.array_equal(classes, np.argmax(expected, axis=1))
        assert np.array_equal(again, classes)
        assert first["weights_sent"] and not second["weights_sent"]
        assert second["bytes_out"] < again_stats["bytes_out"]
        noise = FaultyChannel(rtl.channel, rate=0.002, seed=9)
        with session(noise, max_tries=40) as link:
            link.set_tag(bytes(8))
            classes, _ = run_model(argmax_program, Runtime(CONFIG, link), x)
        assert np.array_equal(classes, np.argmax(expected, axis=1))
        assert sum(noise.damaged["out"].values()) + sum(noise.damaged["in"].values()) > 0

        # The accelerator's own errors still come through the framed link.
        with session(rtl.channel) as link:
            runtime = Runtime(CONFIG, link)
            with pytest.raises(AcceleratorError, match="status ILLEGAL at instruction 0"):
                runtime.run_raw(bytes([0xFF] * runtime.isa.bytes))

        # A host that expects another configuration is refused before anything is sent.
        other = AcceleratorConfig(xnor_array=CONFIG.xnor_array, max_out_bits=1,
                                  in_depth=128, act_depth=64, weight_depth=512,
                                  thresh_depth=64, score_depth=128, queue_depth=2)
        with pytest.raises(BoardMismatch, match=f"was built for accelerator configuration "
                                                f"{CONFIG.fingerprint()}, the host expects "
                                                f"{other.fingerprint()}"):
            session(rtl.channel, config=other)

        # A board that stops answering in the middle of a run: an error, not a result.
        silent = FaultyChannel(rtl.channel, drop_in=set(range(40, 10 ** 6)))
        with session(silent, timeout=5.0, resend=1.0, max_tries=4) as link:
            link.set_tag(bytes(8))
            with pytest.raises(TransportError, match="^no answer from the board|^the "
                                                     "board did not acknowledge|^no byte"):
                run_model(program, Runtime(CONFIG, link), x)


def test_a_wrong_baud_rate_is_a_clear_error(tmp_path, monkeypatch):
    # The adapter at half the bitstream's rate: the board sees only framing errors and
    # bad frames, the host only garbage, and the session never starts.
    monkeypatch.setenv("LOWBIT_LINE_BAUD", str(SIM_BAUD // 2))
    rtl = RTLTransport(CONFIG, unit=sim_unit(), test_module="lowbit.sim.board_bridge",
                       test_dir=tmp_path / "sim")
    with rtl:
        with pytest.raises(TransportError, match=r"^no answer from the board for 10 s: is "
                                                 r"the lowbit bitstream loaded, and the baud "
                                                 r"rate right\?$"):
            session(rtl.channel, timeout=10.0, resend=1.0)


def test_icebreaker_configuration_runs_the_digits_bnn_bit_exactly(tmp_path):
    # The iCEBreaker's own configuration (4x2x32, weights in one 16,384-word memory) and a
    # 64-256-256-10 BNN, the widest its K takes, through the whole board: the ISS's scores
    # on both calls, the weights sent once.
    from lowbit.boards.targets import get_board

    config = get_board("icebreaker").load_config()
    model, _ = train("digits", precision="w1a1", hidden=(256, 256), epochs=1, seed=0,
                     progress=False)
    program = compile_model(model, config, batch=16)
    x = load_digits().data[-16:]
    with ISSTransport(config) as iss:
        expected, _ = run_model(program, Runtime(config, iss), x)
    rtl = RTLTransport(config, unit=sim_unit(), test_module="lowbit.sim.board_bridge",
                       test_dir=tmp_path / "sim")
    with rtl:
        with session(rtl.channel, config=config) as link:
            scores, first = run_model(program, Runtime(config, link), x)
            again, second = run_model(program, Runtime(config, link), x)
            assert link.stats["resent"] == 0
    assert np.array_equal(scores, expected) and np.array_equal(again, expected)
    assert first["weights_sent"] and not second["weights_sent"]
    # The weights: 64 x 256 + 256 x 256 + 256 x 10 bits, in 32-bit words with headers.
    assert first["bytes_in"] - second["bytes_in"] > (64 * 256 + 256 * 256 + 256 * 10) // 8
