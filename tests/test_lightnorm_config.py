"""LightNormConfig and BFPFormat: validation messages and derived widths."""

import re

import pytest

from lowbit.config.lightnorm import LightNormConfig
from lowbit.golden.bfp import BFPFormat


@pytest.mark.parametrize("kwargs, error, message", [
    ({"channels": 0}, ValueError, "LightNormConfig channels must be at least 1, not 0"),
    ({"channels": 2048}, ValueError, "LightNormConfig channels must be at most 1024, not 2048"),
    ({"channels": "16"}, TypeError, "LightNormConfig channels must be an integer, not '16'"),
    ({"block": 0}, ValueError, "LightNormConfig block must be at least 1, not 0"),
    ({"block": 128, "channels": 128}, ValueError,
     "LightNormConfig block must be at most 64, not 128"),
    ({"channels": 12, "block": 8}, ValueError,
     "LightNormConfig channels 12 must be a multiple of block 8"),
    ({"mantissa": 1}, ValueError, "LightNormConfig mantissa must be at least 2, not 1"),
    ({"mantissa": 17}, ValueError, "LightNormConfig mantissa must be at most 16, not 17"),
    ({"mantissa": 8.0}, TypeError, "LightNormConfig mantissa must be an integer, not 8.0"),
    ({"exponent": 1}, ValueError, "LightNormConfig exponent must be at least 2, not 1"),
    ({"exponent": 9}, ValueError, "LightNormConfig exponent must be at most 8, not 9"),
    ({"rounding": "up"}, ValueError,
     "LightNormConfig rounding must be one of 'nearest-even', 'truncate', not 'up'"),
    ({"guard_bits": -1}, ValueError, "LightNormConfig guard_bits must be at least 0, not -1"),
    ({"guard_bits": True}, TypeError, "LightNormConfig guard_bits must be an integer, not True"),
    ({"input_width": 1}, ValueError, "LightNormConfig input_width must be at least 2, not 1"),
    ({"input_width": 33}, ValueError, "LightNormConfig input_width must be at most 32, not 33"),
    ({"chunks": 0}, ValueError, "LightNormConfig chunks must be at least 1, not 0"),
    ({"chunks": 65}, ValueError, "LightNormConfig chunks must be at most 64, not 65"),
    ({"max_batch": 0}, ValueError, "LightNormConfig max_batch must be at least 1, not 0"),
    ({"output": "float"}, ValueError,
     "LightNormConfig output must be one of 'bfp', 'sign', 'multithreshold', not 'float'"),
    ({"act_bits": 5}, ValueError, "LightNormConfig act_bits must be at most 4, not 5"),
    ({"act_bits": 0}, ValueError, "LightNormConfig act_bits must be at least 1, not 0"),
    ({"sum_width": "wide"}, TypeError,
     "LightNormConfig sum_width must be an integer, not 'wide'"),
    ({"sum_width": 27}, ValueError,
     "LightNormConfig sum_width 27 could overflow: 4096 samples of 16 bits need 28 bits"),
])
def test_bad_configurations(kwargs, error, message):
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        LightNormConfig(**kwargs)


@pytest.mark.parametrize("kwargs, error, message", [
    ({"block": 0}, ValueError, "BFPFormat block must be at least 1, not 0"),
    ({"mantissa": 17}, ValueError, "BFPFormat mantissa must be at most 16, not 17"),
    ({"exponent": "6"}, TypeError, "BFPFormat exponent must be an integer, not '6'"),
    ({"rounding": "floor"}, ValueError,
     "BFPFormat rounding must be one of 'nearest-even', 'truncate', not 'floor'"),
])
def test_bad_formats(kwargs, error, message):
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        BFPFormat(**kwargs)


def test_derived_widths():
    config = LightNormConfig(channels=32, block=8, mantissa=6, exponent=5, guard_bits=4,
                             input_width=12, chunks=8, max_batch=1000, output="multithreshold",
                             act_bits=3)
    assert config.groups == 4
    assert (config.emin, config.emax) == (-16, 15)
    assert config.acc_width == 6 + 3 + 4
    assert config.required_sum_width == 12 + 10 == config.sum_bits
    assert config.extreme_bits == 12 + 3 and config.spread_bits == 16
    assert config.thresholds == 7 and config.threshold_bits == 13
    assert config.replace(output="sign").thresholds == 1
    assert config.replace(sum_width=30).sum_bits == 30
    # max_batch = 1 adds no bits to the sum.
    assert config.replace(max_batch=1).required_sum_width == 12
    # Memories, per group: 8 channels of 7 thresholds of 13 bits and a flip bit (736), and
    # the running statistics, 22 + 12 + 12 + 15 + 15 bits a channel (608); 4 groups.
    assert config.running_stats_layout.size == 8 * 76
    assert config.memory_bits == 4 * (8 * (7 * 13 + 1) + 8 * 76)
    assert config.replace(statistics=False).memory_bits == 4 * 8 * (7 * 13 + 1)
    # One group keeps its statistics in a register: only the parameters are memory.
    assert config.replace(channels=8).memory_bits == 8 * (7 * 13 + 1)


def test_overrides_and_round_trip():
    config = LightNormConfig.from_overrides(["block=8", "rounding=truncate", "output=sign"])
    assert config.block == 8 and config.rounding == "truncate" and config.output == "sign"
    assert LightNormConfig(**config.to_dict()) == config
    assert config.fingerprint() != LightNormConfig().fingerprint()
