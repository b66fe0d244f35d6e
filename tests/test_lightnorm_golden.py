"""LightNorm golden models: BFP exactly as pinned, range batch norm against float, threshold
folding exact against sign(batchnorm(x)), beat-level model against the vectorised one, and
exact messages for out-of-range parameters."""

import math
import re
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lowbit.bench.lightnorm import BLOCKS, MANTISSAS, digits_preactivations, error_table
from lowbit.config.lightnorm import LightNormConfig, Op
from lowbit.golden import bfp
from lowbit.golden.lightnorm import (LightNorm, batchnorm, chunk_starts, fold_thresholds,
                                     range_batchnorm, range_scale, threshold_reference)

FMT = bfp.BFPFormat(block=4, mantissa=5, exponent=4)


# BFP -----------------------------------------------------------------------------------

def test_quantize_pinned_examples():
    # max |v| = 12 -> E = 3; M = round(v * 2^(3 - 3)) with m = 5.
    block = bfp.quantize(np.array([12, -5, 0, 1]), FMT)
    assert block.exp == 3 and block.man.tolist() == [12, -5, 0, 1]
    # E = 5: v * 2^(3 - 5) = v / 4; 10 / 4 = 2.5 -> 2 (even), -6 / 4 = -1.5 -> -2, 45/4 -> 11.
    block = bfp.quantize(np.array([45, 10, -6, 2]), FMT)
    assert block.exp == 5 and block.man.tolist() == [11, 2, -2, 0]
    trunc = bfp.quantize(np.array([45, 10, -6, 2]), FMT.replace(rounding="truncate"))
    assert trunc.man.tolist() == [11, 2, -1, 0]
    # Rounding up to 2^(m-1) clips: 63 / 4 = 15.75 -> 16 -> 15.
    assert bfp.quantize(np.array([63, 0, 0, 0]), FMT).man.tolist() == [15, 0, 0, 0]
    # All zero: E = emin; exponent clamps at emax = 7 (so 1000 clips) and at emin = -8.
    zero = bfp.quantize(np.zeros(4, dtype=np.int64), FMT)
    assert zero.exp == -8 and zero.man.tolist() == [0] * 4
    assert bfp.quantize(np.array([1000, -1000, 0, 0]), FMT).man.tolist() == [15, -16, 0, 0]
    tiny = bfp.quantize(np.array([2.0 ** -12, 0.0, 0.0, 0.0]), FMT)
    assert tiny.exp == -8 and tiny.man.tolist() == [0, 0, 0, 0]
    assert bfp.dequantize(bfp.quantize(np.array([0.75, -0.5, 0.0, 0.125]), FMT),
                          FMT).tolist() == [0.75, -0.5, 0.0, 0.125]


def _exact_round(value, rounding):
    floor = math.floor(value)
    if rounding == "truncate":
        return math.trunc(value)
    if value - floor > Fraction(1, 2) or (value - floor == Fraction(1, 2) and floor % 2):
        return floor + 1
    return floor


@settings(deadline=None)  # the profile's count (tests/conftest.py)
@given(st.integers(-(1 << 40), 1 << 40), st.integers(-20, 50),
       st.sampled_from(["nearest-even", "truncate", "floor"]))
def test_round_shift_is_exact(value, shift, rounding):
    exact = Fraction(value, 1) / Fraction(2) ** shift
    expected = math.floor(exact) if rounding == "floor" else _exact_round(exact, rounding)
    assert int(bfp.round_shift(value, shift, rounding)) == expected


def test_round_shift_ties():
    # Exact halves are rare among random values: check every tie of small values directly.
    for shift in range(1, 5):
        for k in range(-6, 7):
            value = k * (1 << shift) + (1 << (shift - 1))
            exact = Fraction(value, 1 << shift)
            for rounding in ("nearest-even", "truncate"):
                assert int(bfp.round_shift(value, shift, rounding)) == _exact_round(exact,
                                                                                    rounding)
    assert bfp.round_shift([1, 3, 5, -1, -3, -5], 1, "nearest-even").tolist() == [0, 2, 2, 0,
                                                                                  -2, -2]
    with pytest.raises(ValueError, match=re.escape(
            "rounding must be 'nearest-even', 'truncate' or 'floor', not 'up'")):
        bfp.round_shift(1, 1, "up")


@settings(deadline=None)  # the profile's count
@given(st.lists(st.integers(-(1 << 15), (1 << 15) - 1), min_size=8, max_size=8),
       st.sampled_from([2, 4, 7, 10]), st.sampled_from(["nearest-even", "truncate"]))
def test_integer_and_float_paths_agree_with_the_definition(values, mantissa, rounding):
    fmt = bfp.BFPFormat(block=8, mantissa=mantissa, exponent=5, rounding=rounding)
    ints = bfp.quantize(np.array(values), fmt)
    floats = bfp.quantize(np.array(values, dtype=np.float64), fmt)
    assert ints.exp == floats.exp and ints.man.tolist() == floats.man.tolist()
    nonzero = [abs(v) for v in values if v]
    exp = min(max(max(nonzero).bit_length() - 1, fmt.emin), fmt.emax) if nonzero else fmt.emin
    assert ints.exp == exp
    for v, man in zip(values, ints.man):
        expected = _exact_round(Fraction(v) * Fraction(2) ** (mantissa - 2 - exp), rounding)
        assert man == min(max(expected, fmt.mmin), fmt.mmax)


@settings(deadline=None)  # the profile's count
@given(st.lists(st.floats(-1e3, 1e3, allow_subnormal=False), min_size=4, max_size=4),
       st.lists(st.floats(-4, 4, allow_subnormal=False), min_size=4, max_size=4),
       st.lists(st.floats(-1e3, 1e3, allow_subnormal=False), min_size=4, max_size=4),
       st.sampled_from([0, 4, 8]))
def test_affine_is_within_its_bound(x, s, o, guard):
    fmt = bfp.BFPFormat(block=4, mantissa=8, exponent=6)
    qx, qs, qo = (bfp.quantize(np.array(v), fmt) for v in (x, s, o))
    y = bfp.affine(qx, qs, qo, fmt, guard)
    exact = bfp.dequantize(qs, fmt) * bfp.dequantize(qx, fmt) + bfp.dequantize(qo, fmt)
    got = bfp.dequantize(y, fmt)
    # One output rounding (half an output LSB) plus two floor steps of one accumulator LSB.
    top = max(int(qx.exp) + int(qs.exp), int(qo.exp))
    acc_lsb = 2.0 ** (top + 1 - fmt.mantissa - guard)
    out_lsb = 2.0 ** (int(y.exp) - (fmt.mantissa - 2))
    clipped = (y.man == fmt.mmax) | (y.man == fmt.mmin)
    bound = out_lsb / 2 + 2 * acc_lsb + 1e-12
    assert np.all((np.abs(got - exact) <= bound) | clipped)
    assert int(y.exp) <= fmt.emax


def test_multiply_add_compare():
    fmt = bfp.BFPFormat(block=4, mantissa=6, exponent=5)
    a = bfp.quantize(np.array([1.5, -2.0, 0.25, 3.0]), fmt)
    b = bfp.quantize(np.array([0.5, 0.5, -1.0, 3.0]), fmt)
    # 9.0 sets E = 3, so the output LSB is 0.5: 0.75 and -0.25 round to even.
    assert bfp.dequantize(bfp.multiply(a, b, fmt), fmt).tolist() == [1.0, -1.0, 0.0, 9.0]
    small = bfp.quantize(np.array([1.5, -2.0, 0.25, 1.0]), fmt)
    assert bfp.dequantize(bfp.multiply(small, b, fmt), fmt).tolist() == [0.75, -1.0, -0.25,
                                                                          3.0]
    assert bfp.dequantize(bfp.add(a, b, fmt), fmt).tolist() == [2.0, -1.5, -0.75, 6.0]
    assert bfp.compare(a, b, fmt).tolist() == [1, -1, 1, 0]
    assert bfp.dequantize(bfp.one(fmt), fmt).tolist() == [1.0] * 4


# Range batch norm --------------------------------------------------------------------------

def test_chunk_rule_and_scale():
    assert chunk_starts(16, 8) == list(range(0, 16, 2))
    # 19 = 8 * 2 + 3: the first three chunks take 3 samples, the other five take 2.
    assert chunk_starts(19, 8) == [0, 3, 6, 9, 11, 13, 15, 17]
    assert chunk_starts(3, 8) == [0, 1, 2]
    assert range_scale(8 * 64, 8) == pytest.approx(1 / math.sqrt(2 * math.log(64)))
    with pytest.raises(ValueError, match=re.escape(
            "range batch norm needs more samples than chunks: n=8, chunks=8")):
        range_scale(8, 8)


@pytest.mark.parametrize("n", [16, 19, 37, 64])
def test_statistics_beats_match_vectorised_and_float(n):
    config = LightNormConfig(channels=8, block=4, input_width=8, max_batch=64)
    model = LightNorm(config)
    x = np.random.default_rng(n).integers(-128, 128, size=(n, 8))
    results = model.run(model.stat_beats(x))
    assert [r["group"] for r in results] == [0, 1]
    total, spread = model.statistics(x)
    got_sum = [s["sum"] for r in results for s in r["data"]["stats"]]
    got_spread = [s["spread"] for r in results for s in r["data"]["stats"]]
    assert got_sum == total.tolist() == x.sum(axis=0).tolist()
    chunks = np.array_split(x, 8)
    expected = sum(c.max(axis=0) for c in chunks) - sum(c.min(axis=0) for c in chunks)
    assert got_spread == spread.tolist() == expected.tolist()
    # The folded affine form equals float range batch norm before quantisation.
    gamma, beta = np.linspace(-2, 2, 8), np.linspace(-1, 1, 8)
    _, scale, offset = model.fold_affine(total, spread, n, gamma, beta)
    assert np.allclose(scale * x + offset, range_batchnorm(x, gamma, beta, 8))


def test_error_against_float_batchnorm():
    """The error table of docs/lightnorm.md, with its bounds: BFP adds at most
    1.5 * 2^(2 - m) relative RMS error to float range BN (about halving per mantissa bit),
    and range BN with the pinned C(n) differs from true BN by a fixed factor on sigma."""
    table = error_table()
    range_vs_true = table["range", None][1]
    assert 0.2 < range_vs_true < 0.45
    for block in BLOCKS:
        for m in MANTISSAS:
            vs_range, vs_true = table[block, m]
            assert vs_range <= 1.5 * 2.0 ** (2 - m), (block, m, vs_range)
            assert abs(vs_true - range_vs_true) <= vs_range + 1e-9
        # Wider mantissas never hurt by more than noise.
        errors = [table[block, m][0] for m in MANTISSAS]
        assert all(b < a for a, b in zip(errors, errors[1:]))
    # Larger blocks share one exponent over more values: never better at m = 8.
    assert table[32, 8][0] >= table[4, 8][0]


def test_range_batchnorm_sigma_ratio():
    # Why range BN differs from true BN: on these activations C(n) * range estimates sigma
    # with a fixed ratio per channel (close to constant across channels), which training with
    # range BN absorbs into gamma.
    x = digits_preactivations(16)[:1024]
    model = LightNorm(LightNormConfig(channels=16, block=16, input_width=8, max_batch=1024))
    _, spread = model.statistics(x)
    ratio = range_scale(1024, 8) * spread / 8 / x.std(axis=0)
    assert np.all((ratio > 1.2) & (ratio < 2.2))


# Thresholds --------------------------------------------------------------------------------

def test_threshold_folding_pinned_cases():
    # gamma > 0: tau = mu - beta * sigma / gamma = 3 - 1 * 2 / 1 = 1 -> +1 iff x >= 1;
    # equality (x = 1 gives bn = 0) maps to +1.
    t, flip = fold_thresholds(3.0, 2.0, 1.0, 1.0, [0.0], 8)
    assert t.tolist() == [[1]] and flip.tolist() == [0]
    # gamma < 0: +1 iff x <= tau = 3 + 2 = 5 (equality again +1).
    t, flip = fold_thresholds(3.0, 2.0, -1.0, 1.0, [0.0], 8)
    assert t.tolist() == [[5]] and flip.tolist() == [1]
    # Non-integer tau: ceil for >=, floor for <=.
    assert fold_thresholds(0.5, 1.0, 1.0, 0.0, [0.0], 8)[0].tolist() == [[1]]
    assert fold_thresholds(0.5, 1.0, -1.0, 0.0, [0.0], 8)[0].tolist() == [[0]]
    # gamma == 0: constant, +1 iff beta >= 0 (always / never passed thresholds).
    assert fold_thresholds(0.0, 1.0, 0.0, 0.0, [0.0], 8)[0].tolist() == [[-128]]
    assert fold_thresholds(0.0, 1.0, 0.0, -0.5, [0.0], 8)[0].tolist() == [[128]]
    # Clamping keeps far thresholds inside input_width + 1 bits.
    assert fold_thresholds(1e6, 1.0, 1.0, 0.0, [0.0], 8)[0].tolist() == [[128]]
    assert fold_thresholds(1e6, 1.0, -1.0, 0.0, [0.0], 8)[0].tolist() == [[127]]
    assert fold_thresholds(-1e6, 1.0, -1.0, 0.0, [0.0], 8)[0].tolist() == [[-129]]


def test_sign_thresholds_match_sign_of_batchnorm_exactly():
    rng = np.random.default_rng(7)
    channels = 16
    config = LightNormConfig(channels=channels, block=4, output="sign", input_width=8)
    model = LightNorm(config)
    # Dyadic parameters put many x exactly on tau (bn(x) == 0 in float too), both signs
    # of gamma and gamma == 0 included.
    mu = rng.integers(-20, 20, channels) + rng.choice([0, 0.5, 0.25], channels)
    sigma = rng.choice([0.5, 1.0, 2.0, 4.0], channels)
    gamma = rng.choice([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0], channels)
    gamma[:3] = [1.0, -1.0, 0.0]
    beta = rng.choice([-1.0, -0.5, 0.0, 0.5, 1.0], channels)
    x = rng.integers(-40, 40, size=(300, channels))
    t, flip = fold_thresholds(mu, sigma, gamma, beta, [0.0], 8)
    out = model.apply(x, model.threshold_params(t, flip))
    y = gamma * (x - mu) / sigma + beta
    assert np.any(y == 0), "no equality case exercised"
    assert np.array_equal(out, (y >= 0).astype(int))
    assert np.array_equal(out, threshold_reference(x, mu, sigma, gamma, beta, [0.0]))
    # Against numpy float batch norm with true statistics (random, no exact ties).
    xf = rng.integers(-50, 50, size=(200, channels))
    g, b = rng.normal(0, 1, channels), rng.normal(0, 1, channels)
    ref = batchnorm(xf, g, b) >= 0
    t, flip = fold_thresholds(xf.mean(axis=0), np.sqrt(xf.var(axis=0) + 1e-5), g, b, [0.0], 8)
    assert np.array_equal(model.apply(xf, model.threshold_params(t, flip)), ref.astype(int))


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2 ** 32 - 1))
def test_multithreshold_requantisation(seed):
    rng = np.random.default_rng(seed)
    config = LightNormConfig(channels=4, block=4, output="multithreshold", act_bits=2,
                             input_width=8)
    model = LightNorm(config)
    mu, sigma = rng.normal(0, 10, 4), rng.uniform(0.5, 20, 4)
    gamma, beta = rng.normal(0, 1, 4), rng.normal(0, 1, 4)
    gamma[0] = 0.0 if seed % 3 == 0 else gamma[0]
    step = 0.5
    levels = [(j - 0.5) * step for j in range(1, 4)]  # round-half-up of y / step, 0..3
    t, flip = fold_thresholds(mu, sigma, gamma, beta, levels, 8)
    x = rng.integers(-128, 128, size=(64, 4))
    out = model.apply(x, model.threshold_params(t, flip))
    assert np.array_equal(out, threshold_reference(x, mu, sigma, gamma, beta, levels))
    y = gamma * (x - mu) / sigma + beta
    assert np.all(np.abs(out - np.clip(np.floor(y / step + 0.5), 0, 3)) <= (y % step == 0))


# Beat level --------------------------------------------------------------------------------

@pytest.mark.parametrize("output", ["bfp", "sign", "multithreshold"])
def test_beats_match_vectorised_model(output):
    config = LightNormConfig(channels=8, block=4, mantissa=6, output=output, input_width=10,
                             max_batch=64)
    model = LightNorm(config)
    rng = np.random.default_rng(3)
    x = rng.integers(-512, 512, size=(40, 8))
    if output == "bfp":
        total, spread = model.statistics(x)
        params, _, _ = model.fold_affine(total, spread, 40, rng.normal(0, 1, 8),
                                         rng.normal(0, 1, 8))
    else:
        t = np.sort(rng.integers(-513, 513, size=(8, config.thresholds)), axis=1)
        params = model.threshold_params(t, rng.integers(0, 2, 8))
    results = model.run(model.load_beats(params) + model.apply_beats(x))
    assert len(results) == 80 and all(r["op"] == Op.APPLY for r in results)
    expected = model.apply(x, params)
    for i, r in enumerate(results):
        n, g = divmod(i, 2)
        if output == "bfp":
            assert r["data"]["out"] == {"exp": int(expected.exp[n, g]),
                                        "man": expected.man[n, g].tolist()}
        else:
            assert r["data"]["out"] == expected[n, 4 * g:4 * g + 4].tolist()
        assert model.decode(model.config.result_layout.const(r).as_bits()) == r


# Errors ------------------------------------------------------------------------------------

def _bfp_model():
    return LightNorm(LightNormConfig(channels=8, block=4, mantissa=6, exponent=4,
                                     input_width=8, max_batch=32))


@pytest.mark.parametrize("change, error, message", [
    ({"scale": [32, 0, 0, 0]}, ValueError,
     "LightNorm scale holds 32, outside the 6-bit signed range [-32, 31]"),
    ({"offset": [0, -33, 0, 0]}, ValueError,
     "LightNorm offset holds -33, outside the 6-bit signed range [-32, 31]"),
    ({"scale_exp": 8}, ValueError,
     "LightNorm scale_exp holds 8, outside the 4-bit signed range [-8, 7]"),
    ({"offset_exp": -9}, ValueError,
     "LightNorm offset_exp holds -9, outside the 4-bit signed range [-8, 7]"),
    ({"scale": [0, 0, 0]}, ValueError, "LightNorm scale needs 4 mantissas, not shape (3,)"),
    ({"scale": [0.5, 0, 0, 0]}, TypeError, "LightNorm scale must hold integers, not float64"),
])
def test_bad_affine_parameters(change, error, message):
    model = _bfp_model()
    params = {"scale": [1, 2, 3, 4], "scale_exp": 0, "offset": [0] * 4, "offset_exp": 0}
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        model.load_beats([{**params, **change}, params])


def test_bad_threshold_parameters_and_inputs():
    model = LightNorm(LightNormConfig(channels=4, block=4, output="multithreshold",
                                      act_bits=2, input_width=8, max_batch=32))
    good = {"t": [[0, 1, 2]] * 4, "flip": [0, 1, 0, 1]}
    for change, message in [
            ({"t": [[0, 1, 2]] * 3 + [[0, 1, 256]]},
             "LightNorm thresholds holds 256, outside the 9-bit signed range [-256, 255]"),
            ({"t": [[0, 1]] * 4}, "LightNorm thresholds need shape (4, 3), not (4, 2)"),
            ({"flip": [0, 2, 0, 0]},
             "LightNorm flip holds 2, outside the 1-bit unsigned range [0, 1]")]:
        with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
            model.load_beats([{**good, **change}])
    with pytest.raises(ValueError, match=re.escape("LightNorm needs parameters for 1 groups, "
                                                   "not 2")):
        model.load_beats([good, good])
    with pytest.raises(ValueError, match=re.escape(
            "LightNorm input holds 128, outside the 8-bit signed range [-128, 127]")):
        model.apply_beats(np.full((1, 4), 128))
    with pytest.raises(ValueError, match=re.escape("LightNorm inputs must be (n, 4), not (2, 3)")):
        model.apply_beats(np.zeros((2, 3), dtype=int))
    with pytest.raises(ValueError, match=re.escape(
            "LightNorm batch of 33 samples is outside 1..max_batch=32")):
        model.stat_beats(np.zeros((33, 4), dtype=int))
    with pytest.raises(ValueError, match=re.escape("LightNorm group 1 is outside 0..0")):
        model.step({"op": Op.APPLY, "group": 1, "data": {"x": [0] * 4}})
    with pytest.raises(ValueError, match=re.escape(
            "range batch norm needs at least 2 samples per chunk: n=15, chunks=8")):
        _bfp_model().fold_affine(np.zeros(8), np.ones(8), 15, 1.0, 0.0)
    with pytest.raises(TypeError, match=re.escape("config must be a LightNormConfig, not 3")):
        LightNorm(3)
