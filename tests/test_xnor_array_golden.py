"""The XNOR array's golden model against plain integer numpy matmul."""

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lowbit.config.xnor_array import XNORArrayConfig
from lowbit.golden.xnor_array import (Precision, XNORArray, binarize, bit_planes,
                                      pack_words, wrap)
from lowbit.sim.xnor_array_vectors import random_operands

PRECISION_PAIRS = [("binary", "binary"), ("uint2", "binary"), ("binary", "int2"),
                   ("uint2", "int2"), ("uint8", "binary"), ("uint8", "int8"),
                   ("uint1", "int3"), ("int4", "int4"), ("uint3", "uint5")]


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), pair=st.sampled_from(PRECISION_PAIRS),
       m=st.integers(1, 9), n=st.integers(1, 9), k=st.integers(1, 150),
       word=st.sampled_from([1, 3, 8, 16, 32, 64]), rows=st.integers(1, 4),
       cols=st.integers(1, 4))
def test_matmul_matches_numpy(seed, pair, m, n, k, word, rows, cols):
    rng = np.random.default_rng(seed)
    act, weight = pair
    a = random_operands(rng, act, (m, k))
    b = random_operands(rng, weight, (n, k))
    config = XNORArrayConfig(rows=rows, cols=cols, word=word, max_k=150)
    assert np.array_equal(XNORArray(config).matmul(a, b, act, weight), a @ b.T)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), k=st.integers(1, 200), word=st.sampled_from([4, 64]))
def test_binary_only_array_runs_bnn_layers(seed, k, word):
    rng = np.random.default_rng(seed)
    a, b = random_operands(rng, "binary", (5, k)), random_operands(rng, "binary", (3, k))
    config = XNORArrayConfig(rows=2, cols=2, word=word, max_k=200, max_act_bits=1,
                             max_weight_bits=1)
    assert np.array_equal(XNORArray(config).matmul(a, b), a @ b.T)


def test_reference_formula_and_sign_of_zero():
    # dot = 2 * popcount(XNOR) - N = N - 2 * popcount(XOR) on +-1 vectors (docs/arithmetic.md, 1.2).
    x = np.array([0.0, -0.0, 0.5, -2.0, 3.0])
    assert binarize(x).tolist() == [1, 1, 1, -1, 1]
    a, b = binarize(x)[None, :], np.array([[1, -1, -1, -1, 1]])
    words = pack_words(a > 0, 8)[0][0], pack_words(b > 0, 8)[0][0]
    xnor = (~(words[0] ^ words[1])) & 0b11111
    dot = int((a @ b.T)[0, 0])
    assert 2 * xnor.bit_count() - 5 == dot == 5 - 2 * (words[0] ^ words[1]).bit_count()


def test_padding_is_not_counted():
    config = XNORArrayConfig(rows=1, cols=1, word=8, max_k=9, max_act_bits=1, max_weight_bits=1)
    golden = XNORArray(config)
    beats = golden.schedule(np.ones((1, 9), int), -np.ones((1, 9), int))
    # 9 elements in two 8-bit words: 16 positions, offset 9 - 2 * 16.
    assert [b["offset"] for b in beats] == [-23, 0]
    assert golden.run(beats) == [[[-9]]]


def test_bit_planes_reassemble_values():
    rng = np.random.default_rng(0)
    for text in ["binary", "uint1", "uint8", "int2", "int8"]:
        precision = Precision.parse(text)
        values = random_operands(rng, precision, (50,))
        total = sum(sign * (1 << exp) * bits.astype(int)
                    for bits, exp, sign in bit_planes(values, precision))
        assert np.array_equal(total, values)


def test_accumulators_wrap_like_registers():
    assert wrap(2**12, 13) == -(2**12)
    assert wrap(-(2**12) - 1, 13) == 2**12 - 1


@pytest.mark.parametrize("call, error, message", [
    (lambda g: g.schedule(np.ones((2, 3)), np.ones((2, 4))), ValueError,
     "operand tiles must be (r, K) and (c, K), not (2, 3) and (2, 4)"),
    (lambda g: g.schedule(np.ones((3, 3), int), np.ones((1, 3), int)), ValueError,
     "tile 3x1 does not fit a 2x2 array"),
    (lambda g: g.schedule(np.ones((1, 70), int), np.ones((1, 70), int)), ValueError,
     "reduction length 70 is outside 1..max_k=64"),
    (lambda g: g.schedule(np.ones((1, 3), int), np.ones((1, 3), int), "uint4", "int4"),
     ValueError, "activation precision uint4 exceeds the array's 2 bits"),
    (lambda g: g.schedule(np.array([[1, 0, 1]]), np.ones((1, 3), int)), ValueError,
     "activations holds 0, outside binary"),
    (lambda g: g.schedule(np.ones((1, 3), int), np.full((1, 3), 2), "binary", "int2"),
     ValueError, "weights holds 2, outside int2"),
    (lambda g: g.schedule(np.ones((1, 3)), np.ones((1, 3))), TypeError,
     "activations must hold integers, not float64"),
    (lambda g: Precision.parse("float8"), ValueError,
     "precision must be 'binary', 'uintK' or 'intK', not 'float8'"),
    (lambda g: Precision("signed", 1), ValueError, "signed precision needs 2..8 bits, not 1"),
    (lambda g: XNORArray("big"), TypeError, "config must be an XNORArrayConfig, not 'big'"),
])
def test_bad_operands(call, error, message):
    golden = XNORArray(XNORArrayConfig(rows=2, cols=2, word=8, max_k=64, max_act_bits=2,
                                       max_weight_bits=2))
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        call(golden)


def test_binary_only_array_refuses_multibit_layers():
    golden = XNORArray(XNORArrayConfig(max_act_bits=1, max_weight_bits=1))
    with pytest.raises(ValueError, match=re.escape("exceeds the array's 1 bits")):
        golden.schedule(np.ones((1, 3), int), np.ones((1, 3), int), "uint2", "binary")
