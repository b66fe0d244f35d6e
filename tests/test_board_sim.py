"""The whole board (UART, framing bridge, accelerator) as generated Verilog under cocotb
(Verilator), with a UART model on its pins, driven by the real serial runtime code
(FramedTransport, the board transport's codec, over the simulation's socket instead of a
serial port): a compiled digits BNN gives the ISS's scores, also with bytes corrupted and
dropped on the line in both directions. One Verilator build serves every check."""

import numpy as np
import pytest
from sklearn.datasets import load_digits

from lowbit.boards.core import sim_unit
from lowbit.compiler import compile_model, run_model
from lowbit.config.accelerator import AcceleratorConfig
from lowbit.config.xnor_array import XNORArrayConfig
from lowbit.framing import FramedTransport
from lowbit.runtime import AcceleratorError, ISSTransport, RTLTransport, Runtime
from lowbit.sim.link_faults import FaultyChannel
from lowbit.train import train

pytestmark = pytest.mark.cocotb

# A small accelerator; the board's host link stalls for resends, so its TRUNCATED timeout
# is long (docs/boards.md).
CONFIG = AcceleratorConfig(
    xnor_array=XNORArrayConfig(rows=2, cols=2, max_k=128, max_act_bits=5, max_weight_bits=1),
    max_out_bits=1, in_depth=128, act_depth=64, weight_depth=512, thresh_depth=64,
    score_depth=128, queue_depth=2, timeout_cycles=1 << 26)


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


def session(channel):
    # Generous wall-clock limits: simulated bytes take a fraction of a millisecond each.
    return FramedTransport(_Shared(channel), timeout=120.0, resend=3.0, gap=0.5)


def test_board_runs_a_digits_bnn_like_the_iss(tmp_path):
    model, _ = train("digits", precision="w1a1", hidden=(64,), epochs=3, seed=0,
                     progress=False)
    program = compile_model(model, CONFIG, batch=8)
    x = load_digits().data[:16]
    with ISSTransport(CONFIG) as iss:
        expected, _ = run_model(program, Runtime(CONFIG, iss), x)

    rtl = RTLTransport(CONFIG, unit=sim_unit(), test_module="lowbit.sim.board_bridge",
                       test_dir=tmp_path / "sim")
    with rtl:
        # A clean line.
        with session(rtl.channel) as link:
            scores, stats = run_model(program, Runtime(CONFIG, link), x)
            clean = dict(link.stats)
        assert np.array_equal(scores, expected)
        assert stats["runs"] == 2
        assert clean["resent"] == 0 and clean["bad_frames"] == 0

        # A noisy line: bytes flipped and dropped both ways, in frame headers, payloads,
        # CRCs and acknowledgements; a new session on the same board.
        faulty = FaultyChannel(rtl.channel, flip_out={3, 20, 700, 1500, 1501},
                               drop_out={9, 400, 2100}, flip_in={2, 50, 300},
                               drop_in={30, 150, 420}, seed=5)
        with session(faulty) as link:
            scores, _ = run_model(program, Runtime(CONFIG, link), x)
            noisy = dict(link.stats)
        assert np.array_equal(scores, expected)
        assert sum(faulty.damaged["out"].values()) == 8
        assert sum(faulty.damaged["in"].values()) == 6
        assert noisy["resent"] > 0 and noisy["bad_frames"] > 0

        # The accelerator's own errors still come through the framed link.
        with session(rtl.channel) as link:
            runtime = Runtime(CONFIG, link)
            with pytest.raises(AcceleratorError, match="status ILLEGAL at instruction 0"):
                runtime.run_raw(bytes([0xFF] * runtime.isa.bytes))
