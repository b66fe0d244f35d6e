"""The compiler for the full-rate core: the ISS must give exactly the model's integer scores
(lowbit.model's integer form, computed independently in numpy), the schedule must be
race-free, and what cannot run gets errors naming the layer."""

import dataclasses
import math

import numpy as np
import pytest

from lowbit.compiler import CompileError, assemble, batch_stream, compile_model, run_model
from lowbit.config.accelerator import AcceleratorConfig
from lowbit.config.xnor_array import XNORArrayConfig
from lowbit.golden.xnor_array import Precision
from lowbit.isa import NO_WAIT, Opcode
from lowbit.iss import ISS
from lowbit.layout import unpack_act
from lowbit.model import (BatchNorm, Conv2D, Dense, Flatten, InputQuantizer, MultiThreshold,
                          MaxPool2D, OutputAffine, QuantModel, Sign)
from lowbit.program import Program, ProgramError
from lowbit.runtime import ISSTransport, Runtime

from conftest import simulator_params


def model(seed, widths=(64, 48, 40, 10), act=1, input_bits=5, step=1.0):
    """A random +-1-weight MLP with batch norms (some gamma < 0, some gamma == 0) and a
    host affine."""
    rng = np.random.default_rng(seed)
    layers = []
    for i, (k, n) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(Dense(rng.normal(size=(n, k)), weight_bits=1))
        gamma = rng.normal(size=n)
        gamma[::5] = 0.0   # constant channels: thresholds that always or never pass
        beta = rng.normal(size=n)
        mean = rng.normal(size=n) * math.sqrt(k) * (1 << input_bits if i == 0 else 1)
        layers.append(BatchNorm(gamma, beta, mean, rng.uniform(0.5, 2.0, n) * 3 * k))
        if i < len(widths) - 2:
            layers.append(Sign() if act == 1 else MultiThreshold.uniform(act))
    return QuantModel(name=f"m{seed}", dataset="digits",
                      input_quantizer=InputQuantizer(input_bits, step),
                      input_shape=(widths[0],), layers=layers,
                      output=OutputAffine(rng.uniform(0.5, 2, widths[-1]),
                                          rng.normal(size=widths[-1])))


def config_for(rows=2, cols=2, word=32, max_k=128, max_act_bits=5, **overrides):
    array = XNORArrayConfig(rows=rows, cols=cols, word=word, max_k=max_k,
                            max_act_bits=max_act_bits, max_weight_bits=1, pipeline=2)
    return AcceleratorConfig(xnor_array=array, **overrides)


def inputs(seed, n, features=64, high=16):
    return np.random.default_rng(seed).integers(0, high + 1, (n, features)).astype(float)


class DirectISS:
    """A runtime on the ISS without the host link: the same program and input words, the
    ISS's memories left to inspect."""

    def __init__(self, config):
        self.iss = ISS(config)

    def run(self, program, inputs=()):
        result = self.iss.run(program, inputs)
        return dataclasses.make_dataclass("Result", ["outputs", "status", "stats"])(
            result.outputs, result.status, dict(result.counters))


def run_iss(program, config, x):
    with ISSTransport(config) as link:
        return run_model(program, Runtime(config, link), x)


def check_rtl(m, program, config, rtl, x):
    """The gateware through transport ``rtl`` against the ISS: the same scores, the model's
    integer scores, and the cycle model's counts exactly."""
    got, rtl_stats = run_model(program, Runtime(config, rtl), x)
    expected, iss_stats = run_iss(program, config, x)
    assert np.array_equal(got, expected)
    assert np.array_equal(got, m.integer_form().scores(m.quantize_input(x)))
    assert {k: rtl_stats[k] for k in ("cycles", "array_beats", "tile_holds")} == \
        {k: iss_stats[k] for k in ("cycles", "array_beats", "tile_holds")}


def stream(program, batches):
    return batch_stream(program, batches).instructions


CASES = [
    # (array and memories, model widths, activation bits, input bits, batch)
    (dict(rows=1, cols=1, word=8, max_k=64, max_act_bits=2), (37, 23, 13, 5), 1, 2, 3),
    (dict(rows=3, cols=2, word=16, max_k=256, queue_depth=1), (50, 37, 29, 10), 1, 5, 7),
    (dict(rows=4, cols=4, word=32), (64, 48, 40, 10), 2, 5, 5),
    (dict(rows=2, cols=4, word=16, max_k=96), (70, 33, 10), 2, 4, 9),
    (dict(rows=4, cols=2, word=32, max_out_bits=3), (64, 20, 18, 6), 3, 5, 8),
    (dict(rows=2, cols=2, word=32, weight_single_port=True), (64, 48, 10), 1, 5, 4),
    (dict(rows=2, cols=4, word=16), (64, 10), 1, 5, 6),     # the last layer alone
]


@pytest.mark.parametrize("resident", [None, False])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_iss_gives_the_integer_scores_exactly(case, resident):
    # K not a multiple of the word, N not a multiple of the columns, batches not a multiple
    # of the rows, 1..4 rows and columns, 8-, 16- and 32-bit words, 1- to 3-bit outputs.
    array, widths, act, input_bits, batch = CASES[case]
    m = model(case, widths=widths, act=act, input_bits=input_bits)
    config = config_for(**array)
    program = compile_model(m, config, batch=batch, resident=resident)
    assert bool(program.metadata["resident"]) == (resident is None)
    x = inputs(case, 3 * batch - 1, widths[0], (1 << input_bits) - 1)  # last one padded
    scores, stats = run_iss(program, config, x)
    expected = m.integer_form().scores(m.quantize_input(x))
    assert np.array_equal(scores, expected)
    assert stats["runs"] == 3
    planes = [input_bits] + [act] * (len(widths) - 2)
    assert stats["macs"] == len(x) * sum(k * n * p for k, n, p in
                                         zip(widths[:-1], widths[1:], planes))
    for batches in (1, 2, 3, 5):
        batch_stream(program, batches).check_races()


def test_float_reference_agrees_on_classes():
    # The float semantics predict the same classes where no input sits on a threshold.
    m = model(11, act=2)
    config = config_for()
    x = inputs(3, 40)
    scores, _ = run_iss(compile_model(m, config, batch=8), config, x)
    same = scores.argmax(1) == m.predict(x, backend="float")
    assert same.mean() >= 0.9


def test_one_bit_unsigned_inputs():
    # 0/1 inputs are one unsigned plane (acc = dot + (K - popcount(b)) on the array).
    m = model(5, widths=(40, 24, 10), input_bits=1, step=8.0)
    config = config_for(rows=2, cols=4, max_act_bits=1)
    program = compile_model(m, config, batch=6)
    assert program.metadata["input_planes"] == 1
    assert program.metadata["input_bipolar"] is False
    x = inputs(9, 13, 40)
    assert set(np.unique(m.quantize_input(x))) == {0, 1}
    scores, _ = run_iss(program, config, x)
    assert np.array_equal(scores, m.integer_form().scores(m.quantize_input(x)))


def test_streamed_whole_memories():
    # No layer fits half the weight or thresh memory: every load waits for every earlier
    # GEMM (a slow schedule, but a correct one).
    m = model(6)
    config = config_for(weight_depth=64, thresh_depth=32)
    program = compile_model(m, config, batch=4)
    assert program.metadata["resident"] is None
    addrs = {(i["buffer"].name, i["addr"]) for i in program.instructions
             if i["opcode"] == Opcode.LOAD and i["buffer"].name != "IN"}
    assert addrs == {("WEIGHT", 0), ("THRESH", 0)}
    x = inputs(4, 11)
    scores, _ = run_iss(program, config, x)
    assert np.array_equal(scores, m.integer_form().scores(m.quantize_input(x)))
    batch_stream(program, 4).check_races()


def test_streamed_and_resident_agree_and_resident_is_faster():
    m = model(7)
    config = config_for()
    x = inputs(5, 40)
    resident, r_stats = run_iss(compile_model(m, config, batch=8), config, x)
    streamed, s_stats = run_iss(compile_model(m, config, batch=8, resident=False), config, x)
    assert np.array_equal(resident, streamed)
    assert r_stats["array_beats"] == s_stats["array_beats"]
    assert r_stats["cycles"] < s_stats["cycles"]


def hand_form_model(thresholds, flip):
    """A model whose first layer's integer form is replaced: 8 inputs, 4 channels with the
    given thresholds on the dot product, then a 4 -> 3 last layer."""
    rng = np.random.default_rng(1)
    m = QuantModel(name="hand", dataset="digits", input_quantizer=InputQuantizer(3, 1.0),
                   input_shape=(8,),
                   layers=[Dense(rng.normal(size=(4, 8))), Sign(), Dense(rng.normal(size=(3, 4)))])
    form = m.integer_form()
    first = dataclasses.replace(form.layers[0], thresholds=np.array(thresholds)[:, None],
                                flip=np.array(flip))
    return m, dataclasses.replace(form, layers=(first, form.layers[1]))


def test_zero_and_never_thresholds_behave(monkeypatch):
    # Thresholds on the dot product far below (always passes: clipped to 0) and far above
    # (never passes: clipped to `never`), plain and flipped.
    m, form = hand_form_model([-10 ** 7, 10 ** 7, 3, -2], [False, False, True, True])
    monkeypatch.setattr(QuantModel, "integer_form", lambda self: form)
    config = config_for(rows=2, cols=4, max_act_bits=3)
    program = compile_model(m, config, batch=4)
    runtime = DirectISS(config)
    x = np.random.default_rng(2).integers(0, 8, (4, 8)).astype(float)
    scores, _ = run_model(program, runtime, x)
    memories = runtime.iss.memories
    thresholds = memories["thresh"][0].astype(np.int64)   # word 0: channels 0..3, T = 1
    assert thresholds[0] == 0 and thresholds[1] == config.never
    hidden = form.layers[0].forward(x.astype(np.int64))
    assert np.all(hidden[:, 0] == 1) and np.all(hidden[:, 1] == -1)
    act = program.metadata["regions"]["act"]
    got = unpack_act(memories["act"][act:2 * act], 4, 4, 1, config, bipolar=True)
    assert np.array_equal(got, hidden)
    assert np.array_equal(scores, form.layers[1].host_scores(form.layers[1].forward(hidden)))


def test_flipped_channels_have_negated_weights(monkeypatch):
    m, form = hand_form_model([0, 0, 0, 0], [False, True, False, True])
    monkeypatch.setattr(QuantModel, "integer_form", lambda self: form)
    config = config_for(rows=2, cols=4, max_act_bits=3)
    program = compile_model(m, config, batch=2)
    runtime = DirectISS(config)
    x = np.random.default_rng(3).integers(0, 8, (2, 8)).astype(float)
    run_model(program, runtime, x)
    weights = runtime.iss.memories["weight"][0].astype(np.int64)  # one word: 8 elements
    bits = np.array([[(int(w) >> t) & 1 for t in range(8)] for w in weights])
    sign = np.where(bits == 1, 1, -1)
    expected = form.layers[0].weight * np.array([1, -1, 1, -1])[:, None]
    assert np.array_equal(sign, expected)


def test_multithreshold_rows_flipped():
    # 2-bit outputs with gamma < 0: three thresholds per channel, counted as acc <= t.
    m = model(8, widths=(64, 24, 10), act=2)
    form = m.integer_form()
    assert form.layers[0].flip.any() and not form.layers[0].flip.all()
    config = config_for(rows=4, cols=4)
    x = inputs(8, 30)
    scores, _ = run_iss(compile_model(m, config, batch=8), config, x)
    assert np.array_equal(scores, form.scores(m.quantize_input(x)))


# The schedule -------------------------------------------------------------------------------


def test_schedule_layout_and_waits():
    m = model(9)
    config = config_for()
    program = compile_model(m, config, batch=4)
    pieces = program.metadata["schedule"]
    ins = program.instructions
    loads = [ins[i] for i in pieces["loads"]]
    regions = program.metadata["regions"]
    assert [(l["buffer"].name, l["source"].name, l["addr"], l["count"]) for l in loads] == \
        [("IN", "INPUT", 0, regions["in"]), ("IN", "INPUT", regions["in"], regions["in"])]
    for parity, (start, stop) in enumerate(pieces["bodies"]):
        body = ins[start:stop]
        gemms = [i for i in body if i["opcode"] == Opcode.GEMM]
        assert [g["sync"] for g in gemms] == [0, 1, 1]
        assert [g["unsent"] for g in gemms] == [NO_WAIT, NO_WAIT, 1]
        assert gemms[0]["a_addr"] == parity * regions["in"]
        assert [g["a_addr"] for g in gemms[1:]] == [regions["act"], 0]
        assert [g["dst_addr"] for g in gemms] == [regions["act"], 0, parity * regions["score"]]
        assert body[-1]["opcode"] == Opcode.STORE and body[-1]["unwritten"] == 0
        assert body[-1]["addr"] == parity * regions["score"]
    assert ins[pieces["halt"]]["opcode"] == Opcode.HALT
    # The next batch's load waits for the previous batch's first GEMM: the other layers of
    # that batch and this batch's GEMMs before the load may still read.
    before = sum(1 for i in ins[pieces["bodies"][0][0]:][:pieces["load_at"]]
                 if i["opcode"] == Opcode.GEMM)
    assert all(l["unread"] == 2 + before for l in loads)
    # The stored program is itself a two-batch run.
    assert program.metadata["batches"] == 2
    program.check_races()


def test_stream_has_one_preamble_and_alternates_regions():
    m = model(10)
    config = config_for()
    program = compile_model(m, config, batch=4)
    s = stream(program, 5)
    preamble = program.metadata["resident"]["instructions"]
    const_loads = [i for i in s if i["opcode"] == Opcode.LOAD and i["source"].name == "CONST"]
    assert len(const_loads) == preamble == 5          # 3 weight and 2 threshold loads, once
    in_loads = [i["addr"] for i in s if i["opcode"] == Opcode.LOAD and i["buffer"].name == "IN"]
    size = program.metadata["regions"]["in"]
    assert in_loads == [0, size, 0, size, 0]
    stores = [i["addr"] for i in s if i["opcode"] == Opcode.STORE]
    size = program.metadata["regions"]["score"]
    assert stores == [0, size, 0, size, 0]
    assert s[-1]["opcode"] == Opcode.HALT and sum(i["opcode"] == Opcode.HALT for i in s) == 1


def tampered(program, batches, change):
    runs = batch_stream(program, batches)
    instrs = [dict(i) for i in runs.instructions]
    change(instrs)
    return Program(program.config, instrs, runs.constants)


def test_races_are_refused():
    # Each wait the schedule sets, taken away, leaves a race that lowbit.races finds.
    m = model(12)
    config = config_for()
    resident = compile_model(m, config, batch=4)
    streamed = compile_model(m, config, batch=4, resident=False)

    def nth(instrs, pred, n):
        return [i for i in instrs if pred(i)][n]

    def in_load(instrs):   # the input load of batch 2 (it reuses batch 0's region)
        nth(instrs, lambda i: i["opcode"] == Opcode.LOAD and i["buffer"].name == "IN",
            2)["unread"] = NO_WAIT

    def store(instrs):
        nth(instrs, lambda i: i["opcode"] == Opcode.STORE, 1)["unwritten"] = NO_WAIT

    def sync(instrs):
        nth(instrs, lambda i: i["opcode"] == Opcode.GEMM, 4)["sync"] = 0

    def unsent(instrs):
        nth(instrs, lambda i: i["opcode"] == Opcode.GEMM and i["mode"].name == "SCORES",
            2)["unsent"] = NO_WAIT

    def thresh(instrs):   # streamed: the thresholds of batch 1's first layer, early
        nth(instrs, lambda i: i["opcode"] == Opcode.LOAD and i["buffer"].name == "THRESH",
            2)["unwritten"] = NO_WAIT

    def weight(instrs):
        nth(instrs, lambda i: i["opcode"] == Opcode.LOAD and i["buffer"].name == "WEIGHT",
            2)["unread"] = NO_WAIT

    cases = [(resident, in_load, r"\(LOAD\) may overwrite words 0\.\.\d+ of the in memory"),
             (resident, store, r"\(STORE\) may read words \d+\.\.\d+ of the score memory"),
             (resident, sync, r"\(GEMM\) may read words \d+\.\.\d+ of the act memory"),
             (resident, unsent, r"\(GEMM\) may overwrite words 0\.\.\d+ of the score memory"),
             (streamed, thresh, r"\(LOAD\) may overwrite words \d+\.\.\d+ of the thresh"),
             (streamed, weight, r"\(LOAD\) may overwrite words \d+\.\.\d+ of the weight")]
    for program, change, message in cases:
        tampered(program, 3, lambda i: None).check_races()
        with pytest.raises(ProgramError, match=message):
            tampered(program, 3, change).check_races()


@pytest.mark.parametrize("resident", [None, False])
def test_rtl_runs_the_compiled_model_like_the_iss(resident):
    # The gateware (Amaranth simulation) on a whole compiled stream: the same scores, and
    # the cycle model's count exactly.
    from lowbit.sim.amaranth_transport import AmaranthTransport

    m = model(3, widths=(40, 24, 10), input_bits=2)
    config = config_for(rows=2, cols=2, word=16, max_k=64, max_act_bits=2, in_depth=64,
                        act_depth=64, weight_depth=256, thresh_depth=64, score_depth=64)
    program = compile_model(m, config, batch=3, resident=resident)
    x = inputs(5, 7, 40, 3)
    with AmaranthTransport(config) as rtl:
        check_rtl(m, program, config, rtl, x)


# Throughput -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_bnn():
    from lowbit.datasets import load
    from lowbit.train import train

    m, _ = train("digits", precision="w1a1", epochs=3, seed=0, progress=False, twin=False)
    return m, load("digits")


def test_digits_bnn_on_the_default_core(digits_bnn):
    m, data = digits_bnn
    config = AcceleratorConfig()
    program = compile_model(m, config, batch=16)
    x = data.x_test[:360]
    scores, stats = run_iss(program, config, x)
    assert np.array_equal(scores, m.integer_scores(x))
    assert np.mean(scores.argmax(1) == data.y_test[:360]) > 0.85
    per_image = 64 * 256 * 5 + 256 * 256 + 256 * 10
    assert stats["macs"] == 360 * per_image
    # Array beats: 23 batches of 16 rows (the last one half padding) in 2 row tiles; per
    # tile planes x words beats: 5 x 2 (32 column tiles), 1 x 8 (32), 1 x 8 (2).
    assert stats["array_beats"] == 23 * 2 * (32 * 10 + 32 * 8 + 2 * 8)
    whole = stats["array_beats"] / stats["cycles"]
    # The steady state: what one more batch costs.
    _, one = run_iss(program, config, x[:16])
    marginal = (stats["array_beats"] - one["array_beats"]) / (stats["cycles"] - one["cycles"])
    print(f"\ndigits BNN, 360 images at batch 16 on the default core (ISS): "
          f"{stats['cycles']:,} cycles, {stats['cycles'] / 360:,.0f} per image, array "
          f"utilisation {whole:.3f} ({marginal:.3f} per extra batch), "
          f"{stats['macs'] / stats['cycles']:,.0f} MACs/cycle")
    # The weights (12.8 kB with thresholds) cross the 8-bit host link once per call before
    # the array can run the second layer: no schedule gets below that plus the array's work
    # minus the first layer's share of it (docs/compiler.md).
    assert marginal >= 0.95
    assert whole >= 0.62


def test_streamed_weights_are_correct_on_the_digits_bnn(digits_bnn):
    m, data = digits_bnn
    config = AcceleratorConfig()
    program = compile_model(m, config, batch=16, resident=False)
    x = data.x_test[:40]
    scores, _ = run_iss(program, config, x)
    assert np.array_equal(scores, m.integer_scores(x))


# Program files, metadata, errors --------------------------------------------------------------


def test_program_file_keeps_what_the_host_needs(tmp_path):
    m = model(4)
    config = config_for()
    program = compile_model(m, config, batch=4)
    program.save(tmp_path / "m.lbp")
    loaded = Program.load(tmp_path / "m.lbp", config)
    x = inputs(1, 9)
    scores, _ = run_iss(loaded, config, x)
    assert np.array_equal(scores, m.integer_form().scores(m.quantize_input(x)))
    meta = loaded.metadata
    assert meta["input_quantizer"] == {"bits": 5, "step": 1.0}
    assert [layer["name"] for layer in meta["layers"]] == [
        "first dense 64 -> 48", "hidden dense 48 -> 40", "last dense 40 -> 10"]
    owned = sorted(j for layer in meta["layers"] for j in layer["instructions"])
    assert owned == list(range(len(loaded)))
    assert meta["resident"] == {"instructions": 5,
                                "constants": meta["schedule"]["preamble_constants"][1]}


def test_errors_name_the_layer_and_reason(monkeypatch):
    config = config_for()
    where = r"layer 0 \(first dense 64 -> 48\)"
    with pytest.raises(CompileError, match=rf"^{where}: uint5 inputs need max_act_bits >= 5, "
                                           rf"the XNOR array has 4$"):
        compile_model(model(1), config_for(max_act_bits=4))
    with pytest.raises(CompileError, match=rf"^{where}: uint2 outputs need max_out_bits >= 2, "
                                           rf"the accelerator has 1$"):
        compile_model(model(1, act=2), config.replace(max_out_bits=1))
    with pytest.raises(CompileError, match=rf"^{where}: 64 inputs exceed the XNOR array's "
                                           rf"max_k 32$"):
        compile_model(model(1), config_for(max_k=32))
    two_bit = QuantModel(name="w2", dataset="digits", input_quantizer=InputQuantizer(5, 1.0),
                         input_shape=(64,), layers=[Dense(np.ones((10, 64)), weight_bits=2)])
    with pytest.raises(CompileError, match=r"^layer 0 \(last dense 64 -> 10\): int2 weights "
                                           r"are not supported \(the full-rate core's weights "
                                           r"are \+-1\)$"):
        compile_model(two_bit, config)
    def cnn(*layers):
        return QuantModel(name="cnn", dataset="digits", input_quantizer=InputQuantizer(5, 1.0),
                          input_shape=(1, 8, 8), layers=list(layers))

    two_convs = cnn(Conv2D(np.ones((4, 1, 3, 3))), Sign(), Conv2D(np.ones((4, 4, 3, 3))),
                    Sign(), Flatten(), Dense(np.ones((10, 64))))
    with pytest.raises(CompileError, match=r"^layer 1 \(hidden conv 36 -> 4\): only the first "
                                           r"layer may be a convolution"):
        compile_model(two_convs, config)
    pooled = cnn(Conv2D(np.ones((4, 1, 3, 3))), Sign(), MaxPool2D(3), Flatten(),
                 Dense(np.ones((10, 16))))
    with pytest.raises(CompileError, match=r"^layer 0 \(first conv 9 -> 4\): its 3x3 "
                                           r"max-pooling needs max_pool >= 9, the accelerator "
                                           r"has 4$"):
        compile_model(pooled, config)
    two_bit_out = cnn(Conv2D(np.ones((4, 1, 3, 3))), MultiThreshold.uniform(2), Flatten(),
                      Dense(np.ones((10, 144))))
    with pytest.raises(CompileError, match=r"^layer 0 \(first conv 9 -> 4\): its uint2 "
                                           r"outputs at 36 positions cannot be flattened"):
        compile_model(two_bit_out, config)
    m = model(1)
    form = m.integer_form()
    signed = dataclasses.replace(form, layers=(dataclasses.replace(
        form.layers[0], input_precision=Precision("signed", 4)), *form.layers[1:]))
    with monkeypatch.context() as patch:
        patch.setattr(QuantModel, "integer_form", lambda self: signed)
        with pytest.raises(CompileError, match=rf"^{where}: signed inputs are not supported "
                                               rf"\(the model's inputs are int4\)$"):
            compile_model(m, config)
    # One region of the in memory when two do not fit (the next input load then waits for
    # the first layer); none is an error.
    with pytest.raises(CompileError, match=r"^a batch of 128 needs 640 words of the in memory, "
                                           r"it has 512: use a smaller batch$"):
        compile_model(m, config.replace(score_depth=4096, act_depth=1024), batch=128)
    with pytest.raises(CompileError, match=r"^a batch of 64 needs 128 words of the act memory "
                                           r"\(two regions of 64\), it has 64: use a smaller "
                                           r"batch$"):
        compile_model(m, config.replace(act_depth=64, in_depth=1024), batch=64)
    with pytest.raises(CompileError, match=r"^a batch of 8 needs 80 words of the score memory "
                                           r"\(two regions of 40\), it has 64: use a smaller "
                                           r"batch$"):
        compile_model(m, config.replace(score_depth=64), batch=8)
    with pytest.raises(CompileError, match=r"^the weights and thresholds take 98 words of the "
                                           r"weight memory \(64\) and 44 of the thresh memory "
                                           r"\(512\): they cannot stay resident$"):
        compile_model(m, config.replace(weight_depth=64), resident=True)
    with pytest.raises(CompileError, match=r"^layer 0 \(first dense 64 -> 48\): its weights "
                                           r"take 48 words, the weight memory has 32$"):
        compile_model(m, config.replace(weight_depth=32))
    with pytest.raises(CompileError, match=r"^layer 0 \(first dense 64 -> 48\): its "
                                           r"thresholds take 24 words, the thresh memory has "
                                           r"16$"):
        compile_model(m, config.replace(thresh_depth=16))
    with pytest.raises(TypeError, match="model must be a QuantModel"):
        compile_model("model.npz", config)
    with pytest.raises(ValueError, match="batch must be a positive integer, not 0"):
        compile_model(m, config, batch=0)
    with pytest.raises(TypeError, match="resident must be True, False or None, not 1"):
        compile_model(m, config, resident=1)


def test_run_model_checks_its_inputs():
    m = model(2)
    config = config_for()
    program = compile_model(m, config, batch=4)
    with ISSTransport(config) as link:
        runtime = Runtime(config, link)
        with pytest.raises(ValueError, match=r"inputs must have shape \(n, 64\), not \(3, 5\)"):
            run_model(program, runtime, np.zeros((3, 5)))
        with pytest.raises(ValueError, match="inputs must be finite real numbers"):
            run_model(program, runtime, np.full((1, 64), np.nan))
        plain = Program(config, [dict(opcode="HALT", status=0)])
        with pytest.raises(ValueError, match="the program is not a compiled model"):
            run_model(plain, runtime, np.zeros((1, 64)))


def test_assemble_orders_the_pieces():
    pieces = {"preamble": [0, 2], "loads": [2, 3], "bodies": [[4, 7], [7, 10]],
              "load_at": 1, "halt": 10, "preamble_constants": [0, 5],
              "body_constants": [[5, 6], [6, 7]]}
    ranges, consts = assemble(pieces, 3)
    assert ranges == [(0, 2), (2, 3), (4, 5), (3, 4), (5, 7), (7, 8), (2, 3), (8, 10),
                      (4, 5), (5, 7), (10, 11)]
    assert consts == [(0, 5), (5, 6), (6, 7), (5, 6)]
    with pytest.raises(ValueError, match="batches must be at least 1, not 0"):
        assemble(pieces, 0)


# Convolutions -----------------------------------------------------------------------------


def cnn(seed, channels=8, side=8, kernel=3, padding=1, pool=2, input_bits=4, hidden=None):
    """A random first-layer convolution (+-1 weights, batch norm with gammas of both signs,
    Sign, optional max-pooling), flattened into +-1 dense layers."""
    rng = np.random.default_rng(seed)
    layers = [Conv2D(rng.normal(size=(channels, 1, kernel, kernel)), padding=padding),
              BatchNorm(rng.normal(size=channels), rng.normal(size=channels),
                        rng.normal(size=channels) * (1 << input_bits),
                        rng.uniform(0.5, 2.0, channels) * kernel * kernel * 16), Sign()]
    out = side + 2 * padding - kernel + 1
    if pool:
        layers.append(MaxPool2D(pool))
        out //= pool
    layers.append(Flatten())
    k = channels * out * out
    for n in ([hidden] if hidden else []):
        layers += [Dense(rng.normal(size=(n, k))),
                   BatchNorm(rng.normal(size=n), rng.normal(size=n), rng.normal(size=n),
                             rng.uniform(0.5, 2.0, n) * k), Sign()]
        k = n
    layers.append(Dense(rng.normal(size=(10, k))))
    return QuantModel(name=f"cnn{seed}", dataset="digits",
                      input_quantizer=InputQuantizer(input_bits, 1.0),
                      input_shape=(1, side, side), layers=layers)


def images(seed, n, side=8, high=15):
    return np.random.default_rng(seed).integers(0, high + 1, (n, side * side)).astype(float)


@pytest.mark.parametrize("case", [
    # (model, array and memories, batch, conv positions computed, dense inputs)
    (dict(), dict(rows=2, cols=2, max_k=512), 3, 64, 8 * 16),
    (dict(channels=12, pool=None, padding=0), dict(rows=3, cols=4, word=16, max_k=576), 4,
     36, 12 * 36),
    (dict(channels=20, hidden=24), dict(rows=4, cols=8, word=16, max_k=512), 5, 64, 20 * 16),
    (dict(channels=5, side=7, pool=2), dict(rows=2, cols=1, word=16, max_k=256), 2, 36,
     5 * 9),
])
def test_first_layer_convolutions_give_the_integer_scores(case):
    # Channels not a multiple of the columns or the word, no pooling, a pooling window that
    # drops the last row and column (7x7 -> 3x3), a hidden dense layer, batches not a
    # multiple of the rows. The expected scores are the model's integer form (im2col and
    # max-pooling in numpy, no accelerator layout).
    shape, array, batch, positions, features = case
    m = cnn(7, **shape)
    config = config_for(in_depth=4096, act_depth=1024, max_act_bits=4, **array)
    program = compile_model(m, config, batch=batch)
    x = images(3, 2 * batch + 1, side=shape.get("side", 8))
    scores, stats = run_iss(program, config, x)
    assert np.array_equal(scores, m.integer_form().scores(m.quantize_input(x)))
    # Useful MACs: 4-bit 3x3 patches at every computed position, then the dense layers.
    channels, hidden = shape.get("channels", 8), shape.get("hidden")
    dense = features * hidden + hidden * 10 if hidden else features * 10
    assert stats["macs"] == len(x) * (positions * 9 * channels * 4 + dense)


def test_a_convolution_on_the_rtl_is_the_iss():
    # Amaranth's simulation of the gateware on a compiled CNN: scores and cycles.
    from lowbit.sim.amaranth_transport import AmaranthTransport

    m = cnn(11, channels=6)
    config = config_for(rows=2, cols=2, word=16, max_k=256, max_act_bits=4, in_depth=256,
                        act_depth=128, weight_depth=256, thresh_depth=64, score_depth=64)
    program = compile_model(m, config, batch=2)
    # One input region (the next batch's load waits for the convolution): 64 positions x 4
    # planes of 1 word, the whole in memory.
    assert program.metadata["regions"]["in"] == 256
    x = images(5, 5)
    with AmaranthTransport(config) as rtl:
        check_rtl(m, program, config, rtl, x)


@pytest.mark.cocotb
@pytest.mark.parametrize("simulator", simulator_params())
def test_a_convolution_on_the_generated_verilog_is_the_iss(simulator, tmp_path):
    # The same CNN through the generated Verilog (cocotb, the runtime's RTL transport).
    from lowbit.runtime import RTLTransport

    m = cnn(13, channels=6)
    config = config_for(rows=2, cols=2, word=16, max_k=256, max_act_bits=4, in_depth=256,
                        act_depth=128, weight_depth=256, thresh_depth=64, score_depth=64)
    program = compile_model(m, config, batch=2)
    x = images(8, 3)
    with RTLTransport(config, simulator, test_dir=tmp_path, timeout=120) as rtl:
        check_rtl(m, program, config, rtl, x)
