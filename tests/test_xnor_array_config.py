"""XNORArrayConfig: validation messages and derived widths."""

import re

import pytest

from lowbit.config.xnor_array import XNORArrayConfig


@pytest.mark.parametrize("kwargs, error, message", [
    ({"rows": 0}, ValueError, "XNORArrayConfig rows must be at least 1, not 0"),
    ({"cols": 65}, ValueError, "XNORArrayConfig cols must be at most 64, not 65"),
    ({"word": 0}, ValueError, "XNORArrayConfig word must be at least 1, not 0"),
    ({"word": -3}, ValueError, "XNORArrayConfig word must be at least 1, not -3"),
    ({"rows": "4"}, TypeError, "XNORArrayConfig rows must be an integer, not '4'"),
    ({"word": 2.0}, TypeError, "XNORArrayConfig word must be an integer, not 2.0"),
    ({"cols": True}, TypeError, "XNORArrayConfig cols must be an integer, not True"),
    ({"max_act_bits": 9}, ValueError, "XNORArrayConfig max_act_bits must be at most 8, not 9"),
    ({"pipeline": 4}, ValueError, "XNORArrayConfig pipeline must be at most 3, not 4"),
    ({"dataflow": "row-stationary"}, ValueError,
     "XNORArrayConfig dataflow must be one of 'output-stationary', not 'row-stationary'"),
    ({"dataflow": "weight-stationary"}, ValueError,
     "XNORArrayConfig dataflow 'weight-stationary' is not supported: holding weights in the "
     "PEs costs one iCE40 cell per weight bit; use 'output-stationary'"),
    ({"acc_width": 26}, ValueError,
     "XNORArrayConfig acc_width 26 could overflow: reductions of up to 1024 elements at "
     "8-bit activations and 8-bit weights need 27 bits"),
    ({"acc_width": "wide"}, TypeError, "XNORArrayConfig acc_width must be an integer, not 'wide'"),
])
def test_bad_configurations(kwargs, error, message):
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        XNORArrayConfig(**kwargs)


def test_accumulator_width_bounds_every_schedule():
    # Binary only: 2 * popcount over the padded bits; 1024 bits -> 2048 -> 12 bits + sign.
    assert XNORArrayConfig(max_k=1024, word=64, max_act_bits=1,
                           max_weight_bits=1).required_acc_width == 13
    # 8x8 bits: 1024 * 255 * 255 = 66,585,600 < 2^26 -> 27 bits with the sign.
    assert XNORArrayConfig(max_k=1024, word=64).required_acc_width == 27
    # Padding counts: 65 elements in 64-bit words process 128 bit positions.
    assert XNORArrayConfig(max_k=65, word=64, max_act_bits=1,
                           max_weight_bits=1).required_acc_width == 10
    assert XNORArrayConfig(acc_width=32).accumulator_width == 32


def test_overrides_parse_cli_values():
    config = XNORArrayConfig.from_overrides(["rows=2", "word=256", "dataflow=output-stationary"])
    assert (config.rows, config.word) == (2, 256)
    with pytest.raises(ValueError, match=re.escape("expected key=value, not 'rows'")):
        XNORArrayConfig.from_overrides(["rows"])
    with pytest.raises(ValueError, match="has no parameter 'depth'"):
        XNORArrayConfig.from_overrides(["depth=3"])


def test_config_is_frozen_and_fingerprinted():
    config = XNORArrayConfig()
    with pytest.raises(AttributeError):
        config.rows = 3
    assert config.fingerprint() == XNORArrayConfig().fingerprint()
    assert config.fingerprint() != config.replace(rows=3).fingerprint()
