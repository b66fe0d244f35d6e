"""LNSMacConfig and Int8MacConfig: exact messages for every bad configuration, derived
widths, and the stream layouts the gateware, golden models and testbenches share."""

import re

import pytest

from lowbit.config.int8_mac import Int8MacConfig
from lowbit.config.lns import LNSMacConfig


@pytest.mark.parametrize("kwargs, error, message", [
    ({"lanes": 0}, ValueError, "LNSMacConfig lanes must be at least 1, not 0"),
    ({"lanes": 65}, ValueError, "LNSMacConfig lanes must be at most 64, not 65"),
    ({"lanes": 2.0}, TypeError, "LNSMacConfig lanes must be an integer, not 2.0"),
    ({"bits": 2}, ValueError, "LNSMacConfig bits must be at least 3, not 2"),
    ({"bits": 13}, ValueError, "LNSMacConfig bits must be at most 12, not 13"),
    ({"bits": "8"}, TypeError, "LNSMacConfig bits must be an integer, not '8'"),
    ({"gamma": 0}, ValueError, "LNSMacConfig gamma must be at least 1, not 0"),
    ({"gamma": 6}, ValueError, "LNSMacConfig gamma must be a power of two, not 6"),
    ({"gamma": 128, "bits": 12}, ValueError, "LNSMacConfig gamma must be at most 64, not 128"),
    ({"gamma": True}, TypeError, "LNSMacConfig gamma must be an integer, not True"),
    ({"bits": 6, "gamma": 32}, ValueError,
     "LNSMacConfig gamma 32 is too large for 6-bit words: the codes must span at least one "
     "octave (gamma <= 16)"),
    ({"lut_frac": 0}, ValueError, "LNSMacConfig lut_frac must be at least 1, not 0"),
    ({"lut_frac": 25}, ValueError, "LNSMacConfig lut_frac must be at most 24, not 25"),
    ({"max_k": 0}, ValueError, "LNSMacConfig max_k must be at least 1, not 0"),
    ({"max_k": (1 << 20) + 1}, ValueError,
     "LNSMacConfig max_k must be at most 1048576, not 1048577"),
    ({"shift": -1}, ValueError, "LNSMacConfig shift must be at least 0, not -1"),
    ({"shift": "16"}, TypeError, "LNSMacConfig shift must be an integer, not '16'"),
    ({"shift": 33}, ValueError,
     "LNSMacConfig shift must be at most 32 for bits=8, gamma=8 (the smallest product, "
     "2^-32, already lands on bit 0), not 33"),
    ({"out_shift": -1}, ValueError, "LNSMacConfig out_shift must be at least 0, not -1"),
    ({"out_shift": 25}, ValueError, "LNSMacConfig out_shift must be at most 24, not 25"),
    ({"rounding": "up"}, ValueError,
     "LNSMacConfig rounding must be one of 'floor', 'nearest', not 'up'"),
    ({"acc_width": 1}, ValueError, "LNSMacConfig acc_width must be at least 2, not 1"),
    ({"acc_width": 65}, ValueError, "LNSMacConfig acc_width must be at most 64, not 65"),
    ({"acc_width": "wide"}, TypeError,
     "LNSMacConfig acc_width must be an integer, not 'wide'"),
    ({"acc_width": 25}, ValueError,
     "LNSMacConfig acc_width 25 could overflow: dot products of up to 256 products with "
     "shift=16 need 26 bits"),
])
def test_bad_lns_configurations(kwargs, error, message):
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        LNSMacConfig(**kwargs)


@pytest.mark.parametrize("kwargs, error, message", [
    ({"lanes": 0}, ValueError, "Int8MacConfig lanes must be at least 1, not 0"),
    ({"lanes": "4"}, TypeError, "Int8MacConfig lanes must be an integer, not '4'"),
    ({"max_k": 1.5}, TypeError, "Int8MacConfig max_k must be an integer, not 1.5"),
    ({"max_k": 0}, ValueError, "Int8MacConfig max_k must be at least 1, not 0"),
    ({"acc_width": 23}, ValueError,
     "Int8MacConfig acc_width 23 could overflow: dot products of up to 256 int8 products "
     "need 24 bits"),
])
def test_bad_int8_configurations(kwargs, error, message):
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        Int8MacConfig(**kwargs)


def test_derived_widths():
    config = LNSMacConfig()
    # q_min = floor((2 - 2 * 127) / 8) = -32; the derived shift caps at 16.
    assert (config.q_min, config.frac_shift, config.output_shift) == (-32, 16, 8)
    # 256 products of at most 2^16 each: 2^24 needs 25 bits plus the sign.
    assert config.accumulator_width == 26
    # total <= 256 * 2^(16 + 8) + 2^7 -> 33 bits plus sign; the output drops 8 bits.
    assert (config.total_width, config.out_width) == (34, 26)
    assert config.lut == (256, 279, 304, 332, 362, 395, 431, 470)
    # Short formats keep every product: B = 6, gamma = 8 -> q_min = -8.
    assert LNSMacConfig(bits=6, gamma=8).frac_shift == 8
    # A small F can round LUT[gamma - 1] up to 2^(F+1): the table grows one bit.
    assert LNSMacConfig(gamma=64, lut_frac=1).lut_width == 3
    assert LNSMacConfig(rounding="floor").rounding_bias == 0
    assert LNSMacConfig(out_shift=0).rounding_bias == 0
    assert Int8MacConfig().accumulator_width == 24  # 256 * 2^14 = 2^22


def test_layouts_and_overrides():
    config = LNSMacConfig.from_overrides(["lanes=3", "bits=6", "gamma=4", "rounding=floor"])
    assert config.beat_layout.size == 2 * 3 * 6 + 2
    assert config.result_layout.size == config.out_width
    word = config.word_layout.const({"code": 5, "sign": 1}).as_bits()
    assert word == 5 | 1 << 5  # code in the low bits, sign on top
    int8 = Int8MacConfig(lanes=3)
    assert int8.beat_layout.size == 2 * 3 * 8 + 2
    with pytest.raises(ValueError, match="has no parameter 'depth'"):
        LNSMacConfig.from_overrides(["depth=3"])


def test_configs_are_frozen_and_fingerprinted():
    config = LNSMacConfig()
    with pytest.raises(AttributeError):
        config.lanes = 3
    assert config.fingerprint() == LNSMacConfig().fingerprint()
    assert config.fingerprint() != config.replace(gamma=4).fingerprint()
