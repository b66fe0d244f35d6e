"""The compiler: quantized models to accelerator programs. The ISS must give exactly the
model's integer scores (lowbit.model's integer form, computed independently in numpy), the
RTL exactly the ISS's; layers that cannot run get errors naming them."""

import dataclasses
import math

import numpy as np
import pytest

from lowbit.compiler import CompileError, compile_model, run_model
from lowbit.config.accelerator import AcceleratorConfig
from lowbit.config.lightnorm import LightNormConfig
from lowbit.config.xnor_array import XNORArrayConfig
from lowbit.model import (BatchNorm, Conv2D, Dense, Flatten, InputQuantizer, MaxPool2D,
                          MultiThreshold, OutputAffine, QuantModel, Sign)
from lowbit.program import Program
from lowbit.runtime import ISSTransport, Runtime
from lowbit.sim.amaranth_transport import AmaranthTransport


def model(seed, widths=(64, 48, 40, 10), weight_bits=(1, 1, 1), act=1, input_bits=5):
    """A random quantized MLP with batch norms (some gamma < 0) and a host affine."""
    rng = np.random.default_rng(seed)
    layers = []
    for i, (k, n) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(Dense(rng.normal(size=(n, k)), weight_bits=weight_bits[i]))
        gamma = rng.normal(size=n)
        layers.append(BatchNorm(gamma, rng.normal(size=n), rng.normal(size=n) * math.sqrt(k),
                                rng.uniform(0.5, 2.0, n) * 3 * k))
        if i < len(widths) - 2:
            layers.append(Sign() if act == 1 else MultiThreshold.uniform(act))
    return QuantModel(name=f"m{seed}", dataset="digits",
                      input_quantizer=InputQuantizer(input_bits, 1.0),
                      input_shape=(widths[0],), layers=layers,
                      output=OutputAffine(rng.uniform(0.5, 2, widths[-1]),
                                          rng.normal(size=widths[-1])))


def config_for(act=1, **overrides):
    norm = LightNormConfig(channels=64, block=4, output="sign") if act == 1 else \
        LightNormConfig(channels=64, block=4, output="multithreshold", act_bits=act)
    base = dict(xnor_array=XNORArrayConfig(rows=2, cols=2, max_k=128), lightnorm=norm,
                has_lns_mac=False, act_words=1024, weight_words=2048, out_words=256)
    base.update(overrides)
    return AcceleratorConfig(**base)


def inputs(seed, n, features=64, high=16):
    return np.random.default_rng(seed).integers(0, high + 1, (n, features)).astype(float)


@pytest.mark.parametrize("weight_bits,act", [((1, 1, 1), 1), ((1, 1, 1), 2), ((2, 2, 2), 2),
                                              ((4, 1, 2), 3), ((4, 4, 4), 4)])
def test_iss_gives_the_integer_scores_exactly(weight_bits, act):
    m = model(sum(weight_bits) + act, weight_bits=weight_bits, act=act)
    config = config_for(act)
    program = compile_model(m, config, batch=8)
    x = inputs(act, 21)  # three runs, the last one padded
    with ISSTransport(config) as link:
        scores, stats = run_model(program, Runtime(config, link), x)
    expected = m.integer_form().scores(m.quantize_input(x))
    assert np.array_equal(scores, expected)
    assert stats["runs"] == 3
    # The float reference predicts the same classes (no input sits on a threshold here).
    assert np.array_equal(scores.argmax(1), m.predict(x, backend="float"))


def test_channel_chunks_double_buffered_weights():
    # 200 binary channels in chunks of 32 through a small weight buffer: several chunks,
    # loads scheduled into alternate halves while the array computes.
    m = model(7, widths=(64, 200, 96, 10))
    config = config_for(1, weight_words=512, lightnorm=LightNormConfig(channels=256, block=4,
                                                                        output="sign"),
                        xnor_array=XNORArrayConfig(rows=2, cols=2, max_k=256))
    program = compile_model(m, config, batch=4)
    addrs = {i["addr"] for i in program.instructions
             if i["opcode"].name == "LOAD" and i["buffer"].name == "WEIGHT"}
    assert min(addrs) == 0 and max(addrs) >= 256
    x = inputs(2, 4)
    with ISSTransport(config) as link:
        scores, _ = run_model(program, Runtime(config, link), x)
    assert np.array_equal(scores, m.integer_form().scores(m.quantize_input(x)))


@pytest.mark.parametrize("resident", [True, False])
def test_rtl_runs_the_compiled_model_like_the_iss(resident):
    m = model(3, widths=(64, 24, 16, 10), weight_bits=(1, 1, 1))
    config = config_for(1, act_words=256, weight_words=256, out_words=64)
    program = compile_model(m, config, batch=4, resident=resident)
    assert bool(program.metadata["resident"]) == resident
    x = inputs(5, 4)
    with ISSTransport(config) as iss, AmaranthTransport(config) as rtl:
        expected, iss_stats = run_model(program, Runtime(config, iss), x)
        got, rtl_stats = run_model(program, Runtime(config, rtl), x)
    assert np.array_equal(got, expected)
    assert abs(got.shape[0] - 4) == 0
    assert abs(iss_stats["cycles"] - rtl_stats["cycles"]) <= 0.05 * rtl_stats["cycles"]


def test_program_file_keeps_what_the_host_needs(tmp_path):
    m = model(4)
    config = config_for()
    program = compile_model(m, config, batch=4)
    program.save(tmp_path / "m.lbp")
    loaded = Program.load(tmp_path / "m.lbp", config)
    x = inputs(1, 5)
    with ISSTransport(config) as link:
        scores, _ = run_model(loaded, Runtime(config, link), x)
    assert np.array_equal(scores, m.integer_form().scores(m.quantize_input(x)))
    assert loaded.metadata["input_quantizer"] == {"bits": 5, "step": 1.0}


def test_errors_name_the_layer_and_reason():
    config = config_for(1)
    with pytest.raises(CompileError, match=r"layer 0 \(first dense 64 -> 48\): uint5 inputs "
                                           r"need max_act_bits >= 5, the XNOR array has 1"):
        compile_model(model(1), config.replace(xnor_array=XNORArrayConfig(
            rows=2, cols=2, max_k=128, max_act_bits=1, max_weight_bits=1)))
    with pytest.raises(CompileError, match=r"layer 0 \(first dense 64 -> 48\): uint2 "
                                           r"activations need the norm unit built for "
                                           r"output=multithreshold act_bits=2, it is built "
                                           r"for output=sign"):
        compile_model(model(1, act=2), config)
    with pytest.raises(CompileError, match=r"layer 0 \(first dense 64 -> 48\): 64 inputs "
                                           r"exceed the XNOR array's max_k 32"):
        compile_model(model(1), config.replace(xnor_array=XNORArrayConfig(
            rows=2, cols=2, max_k=32)))
    with pytest.raises(CompileError, match=r"a batch of 64 needs"):
        compile_model(model(1), config.replace(act_words=64), batch=64)
    with pytest.raises(TypeError, match="model must be a QuantModel"):
        compile_model("model.npz", config)
    with pytest.raises(ValueError, match="batch must be a positive integer, not 0"):
        compile_model(model(1), config, batch=0)


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


def test_cli_compile_and_run_a_model(tmp_path, capsys):
    from lowbit.cli import main

    m = model(11)
    m.save(tmp_path / "m.npz")
    config = config_for()
    config.save(tmp_path / "acc.json")
    assert main(["compile", str(tmp_path / "m.npz"), "--config", str(tmp_path / "acc.json"),
                 "--batch", "4", "-o", str(tmp_path / "m.lbp")]) == 0
    x = inputs(3, 6)
    np.save(tmp_path / "x.npy", x)
    assert main(["run", str(tmp_path / "m.lbp"), "--config", str(tmp_path / "acc.json"),
                 "--input", str(tmp_path / "x.npy"), "-o", str(tmp_path / "y.npy"),
                 "--stats", str(tmp_path / "s.json")]) == 0
    scores = np.load(tmp_path / "y.npy")
    assert np.array_equal(scores, m.integer_form().scores(m.quantize_input(x)))
    assert "6 inputs in 2 runs" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        main(["compile", str(tmp_path / "m.npz"), "--config", str(tmp_path / "acc.json"),
              "--batch", "4096", "-o", str(tmp_path / "big.lbp")])
    assert info.value.code == 2
    assert "m.npz: a batch of 4096 needs" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["run", str(tmp_path / "m.lbp"), "--config", str(tmp_path / "acc.json")])
    assert "a compiled model needs --input X.npy" in capsys.readouterr().err


@pytest.mark.cocotb
@pytest.mark.xdist_group("accelerator-rtl")
def test_compiled_model_on_the_verilog_matches_iss_and_model(tmp_path):
    # The float model, the ISS and the generated Verilog (Verilator, through the runtime a
    # board uses) on the same inputs: ISS and RTL bit for bit, the model's own predictions.
    from lowbit.runtime import RTLTransport
    from lowbit.sim.accelerator_programs import small_config

    config = small_config()  # the RTL tests' configuration: one shared, cached build
    m = model(21, widths=(64, 16, 16, 10))
    program = compile_model(m, config, batch=4)
    x = inputs(8, 10)
    with ISSTransport(config) as iss:
        expected, _ = run_model(program, Runtime(config, iss), x)
    with RTLTransport(config, test_dir=tmp_path, timeout=120) as link:
        got, stats = run_model(program, Runtime(config, link), x)
    assert np.array_equal(got, expected)
    assert np.array_equal(got, m.integer_form().scores(m.quantize_input(x)))
    assert np.array_equal(got.argmax(1), m.predict(x, backend="float"))
    assert stats["runs"] == 3


# Convolutions ---------------------------------------------------------------------------

def cnn(seed, side=4, channels=32, hidden=16, pool=2, stride=1, padding=1, input_bits=5):
    """A random binarized CNN: 3x3 conv (zero padding around the pixels), batch norm, sign,
    max pool, flatten, a hidden dense layer and the scores."""
    rng = np.random.default_rng(seed)
    conv = Conv2D(rng.normal(size=(channels, 1, 3, 3)), stride=stride, padding=padding)
    out = conv.output_shape((1, side, side))
    # batch norm statistics near the real ones (pixels average 8), so that outputs vary
    mean = 8 * conv.integer_weight().sum(axis=1) + rng.normal(size=channels) * 5
    layers = [conv, BatchNorm(rng.normal(size=channels), rng.normal(size=channels) * 0.2,
                              mean, rng.uniform(0.5, 2, channels) * 200), Sign()]
    features = channels * out[1] * out[2]
    if pool:
        layers.append(MaxPool2D(pool))
        features = channels * (out[1] // pool) * (out[2] // pool)
    layers += [Flatten(), Dense(rng.normal(size=(hidden, features))),
               BatchNorm(rng.normal(size=hidden), rng.normal(size=hidden) * 0.2,
                         rng.normal(size=hidden) * 4, np.full(hidden, 1.0 * features)),
               Sign(), Dense(rng.normal(size=(10, hidden)))]
    return QuantModel(name=f"cnn{seed}", dataset="digits",
                      input_quantizer=InputQuantizer(input_bits, 1.0),
                      input_shape=(1, side, side), layers=layers)


@pytest.mark.parametrize("kw", [{}, {"side": 6, "pool": 3}, {"pool": None, "padding": 0},
                                {"stride": 2, "pool": None, "side": 3}])
def test_cnn_iss_gives_the_integer_scores_exactly(kw):
    m = cnn(3, **kw)
    config = config_for(1, act_words=4096)
    program = compile_model(m, config, batch=4)
    side = m.input_shape[1]
    x = inputs(4, 6, features=side * side)  # flat rows, as load_digits() gives them
    with ISSTransport(config) as link:
        scores, stats = run_model(program, Runtime(config, link), x)
    assert np.array_equal(scores, m.integer_form().scores(m.quantize_input(x)))
    assert np.array_equal(scores.argmax(1), m.predict(x, backend="float"))
    ops = {i["opcode"].name for i in program.instructions}
    assert ("MAXPOOL" in ops) == bool(m.integer_form().layers[0].conv.pool)


def test_cnn_border_follows_the_declared_zero_padding():
    # The border taps hold 0 (the model's pad_value): the integer form equals a direct
    # convolution over an explicitly zero-padded image, the accelerator's scores equal the
    # integer form's, and a wrong border (+1) would change these scores.
    m = cnn(5, pool=None)
    config = config_for(1, act_words=4096, xnor_array=XNORArrayConfig(rows=2, cols=2,
                                                                       max_k=512))
    program = compile_model(m, config, batch=3)
    x = inputs(9, 3, features=16)
    with ISSTransport(config) as link:
        scores, _ = run_model(program, Runtime(config, link), x)
    form = m.integer_form()
    layer0 = form.layers[0]
    xi = m.quantize_input(x).reshape(3, 4, 4)
    padded = np.pad(xi, ((0, 0), (1, 1), (1, 1)))
    w = layer0.weight.reshape(-1, 3, 3)
    direct = np.zeros((3, 32, 4, 4), dtype=np.int64)
    for y in range(4):
        for x_ in range(4):
            direct[:, :, y, x_] = np.einsum("nij,cij->nc", padded[:, y:y + 3, x_:x_ + 3], w)
    acc = layer0.accumulate(xi.reshape(3, -1)).reshape(3, 4, 4, 32).transpose(0, 3, 1, 2)
    assert np.array_equal(acc, direct)
    xq = m.quantize_input(x)
    assert np.array_equal(scores, form.scores(xq))
    wrong = dataclasses.replace(layer0, conv=dataclasses.replace(layer0.conv, pad=1))
    wrong_form = dataclasses.replace(form, layers=(wrong, *form.layers[1:]))
    assert not np.array_equal(wrong_form.scores(xq), scores)


def test_cnn_rtl_matches_iss():
    m = cnn(6, side=4)
    config = config_for(1, act_words=2048, weight_words=1024, out_words=128)
    program = compile_model(m, config, batch=2)
    x = inputs(2, 2, features=16)
    with ISSTransport(config) as iss, AmaranthTransport(config) as rtl:
        expected, iss_stats = run_model(program, Runtime(config, iss), x)
        got, rtl_stats = run_model(program, Runtime(config, rtl), x)
    assert np.array_equal(got, expected)
    assert np.array_equal(got, m.integer_form().scores(m.quantize_input(x)))
    assert abs(iss_stats["cycles"] - rtl_stats["cycles"]) <= 0.05 * rtl_stats["cycles"]


def test_cnn_errors_name_the_layer_and_reason():
    config = config_for(1, act_words=4096)
    with pytest.raises(CompileError, match=r"layer 0 \(first conv 9 -> 16\): its 16 channels "
                                           r"must be a multiple of the 32-bit word"):
        compile_model(cnn(1, channels=16), config)
    with pytest.raises(CompileError, match=r"layer 0 \(first conv 9 -> 32\): its 5x5 output "
                                           r"does not divide into 2x2 pooling windows"):
        compile_model(cnn(1, side=5), config)


@pytest.mark.cocotb
@pytest.mark.xdist_group("accelerator-rtl")
def test_compiled_cnn_on_the_verilog_matches_iss(tmp_path):
    # A first-layer convolution with max pooling on the generated Verilog (Verilator): the
    # small RTL configuration with a 32-channel norm unit (one more cached build).
    from lowbit.runtime import RTLTransport
    from lowbit.sim.accelerator_programs import small_config

    config = small_config(lightnorm=LightNormConfig(channels=32, block=4, output="sign"),
                          act_words=1024)
    m = cnn(8, side=4)
    program = compile_model(m, config, batch=2)
    x = inputs(3, 3, features=16)
    with ISSTransport(config) as iss:
        expected, _ = run_model(program, Runtime(config, iss), x)
    with RTLTransport(config, test_dir=tmp_path, timeout=120) as link:
        got, stats = run_model(program, Runtime(config, link), x)
    assert np.array_equal(got, expected)
    assert np.array_equal(got, m.integer_form().scores(m.quantize_input(x)))
    assert stats["runs"] == 2


def test_resident_weights_are_sent_once_per_call():
    m = model(12, widths=(64, 40, 24, 10))
    config = config_for(1)
    resident = compile_model(m, config, batch=4)
    streamed = compile_model(m, config, batch=4, resident=False)
    pre = resident.metadata["resident"]["instructions"]
    consts = resident.metadata["resident"]["constants"]
    assert pre > 0 and consts == len(resident.constants) == len(streamed.constants)
    # the preamble holds every CONST load, the rest none
    loads = [(i, instr["source"].name) for i, instr in enumerate(resident.instructions)
             if instr["opcode"].name == "LOAD"]
    assert all(src == "CONST" for i, src in loads if i < pre)
    assert all(src == "INPUT" for i, src in loads if i >= pre)
    x = inputs(4, 10)  # three batches
    with ISSTransport(config) as link:
        got, stats = run_model(resident, Runtime(config, link), x)
    with ISSTransport(config) as link:
        expected, stream_stats = run_model(streamed, Runtime(config, link), x)
    assert np.array_equal(got, expected)
    assert np.array_equal(got, m.integer_form().scores(m.quantize_input(x)))
    assert stats["runs"] == stream_stats["runs"] == 3
    # the weights crossed the link once instead of three times
    assert stream_stats["bytes_in"] - stats["bytes_in"] >= 2 * consts * config.word // 8
    assert stats["cycles"] < stream_stats["cycles"]
    # per inference, the energy model leaves out the preamble (it runs once per call)
    from lowbit.energy import estimate

    assert estimate(resident).total_pj < estimate(streamed).total_pj
    with pytest.raises(CompileError, match=r"the weights and thresholds take \d+ words, the "
                                           r"weight buffer has 128: they cannot stay resident"):
        compile_model(m, config.replace(weight_words=128), batch=4, resident=True)


def cnn2(seed, pad_value=1.0, stride=1, pool2=2, side=8, pool1=2):
    """Two binarized conv stages: the second over on-chip +-1 activations with a +-1 border."""
    rng = np.random.default_rng(seed)
    first = cnn(seed, side=side, pool=pool1)
    conv = Conv2D(rng.normal(size=(32, 32, 3, 3)), stride=stride, padding=1,
                  pad_value=pad_value)
    inner = side // pool1 if pool1 else side
    out = conv.output_shape((32, inner, inner))
    layers = [*first.layers[:4 if pool1 else 3], conv,
              BatchNorm(rng.normal(size=32), rng.normal(size=32) * 0.2,
                        rng.normal(size=32) * 4, rng.uniform(0.5, 2, 32) * 288), Sign()]
    features = 32 * out[1] * out[2]
    if pool2:
        layers.append(MaxPool2D(pool2))
        features = 32 * (out[1] // pool2) * (out[2] // pool2)
    layers += [Flatten(), Dense(rng.normal(size=(10, features)))]
    return QuantModel(name=f"cnn2-{seed}", dataset="digits",
                      input_quantizer=InputQuantizer(5, 1.0), input_shape=(1, side, side),
                      layers=layers)


@pytest.mark.parametrize("kw", [{}, {"pad_value": -1.0}, {"stride": 2, "pool2": None}])
def test_second_convolution_runs_on_chip_im2col(kw):
    m = cnn2(4, **kw)
    config = config_for(1, act_words=8192, weight_words=16384,
                        xnor_array=XNORArrayConfig(rows=2, cols=2, max_k=512))
    program = compile_model(m, config, batch=2)
    x = inputs(6, 3, features=64)
    with ISSTransport(config) as link:
        scores, _ = run_model(program, Runtime(config, link), x)
    assert np.array_equal(scores, m.integer_form().scores(m.quantize_input(x)))
    assert np.array_equal(scores.argmax(1), m.predict(x, backend="float"))
    copies = [i for i in program.instructions
              if i["opcode"].name == "MAXPOOL" and i["window"] == 1]
    assert copies


def test_second_convolution_on_the_rtl():
    m = cnn2(5, side=4, pool2=None)
    config = config_for(1, act_words=4096, weight_words=4096, out_words=128,
                        xnor_array=XNORArrayConfig(rows=2, cols=2, max_k=512))
    program = compile_model(m, config, batch=1)
    x = inputs(7, 1, features=16)
    with ISSTransport(config) as iss, AmaranthTransport(config) as rtl:
        expected, _ = run_model(program, Runtime(config, iss), x)
        got, _ = run_model(program, Runtime(config, rtl), x)
    assert np.array_equal(got, expected)
    assert np.array_equal(got, m.integer_form().scores(m.quantize_input(x)))


def test_second_convolution_errors():
    config = config_for(1, act_words=8192, weight_words=16384,
                        xnor_array=XNORArrayConfig(rows=2, cols=2, max_k=512))
    with pytest.raises(CompileError, match=r"layer 1 \(hidden conv 288 -> 32\): \+-1 data "
                                           r"cannot hold the zero border the model declares"):
        compile_model(cnn2(1, pad_value=0.0), config)
    with pytest.raises(CompileError, match=r"layer 1 \(hidden conv 288 -> 32\): a convolution "
                                           r"over on-chip activations copies its im2col rows "
                                           r"with MAXPOOL"):
        compile_model(cnn2(1, pool1=None, pool2=None, side=4),
                      config.replace(has_maxpool=False))
    with pytest.raises(CompileError, match=r"layer 0 \(first conv 9 -> 32\): its max pool "
                                           r"needs MAXPOOL, which this accelerator does not have"):
        compile_model(cnn2(1), config.replace(has_maxpool=False))
