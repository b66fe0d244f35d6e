"""Training with the products on the accelerator (lowbit.device_matmul,
lowbit.device_training, ``lowbit train --backend``): every product equals numpy's integer
``a @ b.T``; whole steps on the ISS and the generated Verilog equal the host golden step bit
for bit; the trained state exports to a model that compiles and runs."""

import dataclasses

import numpy as np
import pytest

from lowbit import datasets
from lowbit.cli import main
from lowbit.compiler import compile_model, run_model
from lowbit.config.accelerator import AcceleratorConfig
from lowbit.config.xnor_array import XNORArrayConfig
from lowbit.device_matmul import DeviceMatmul
from lowbit.device_training import (export_model, lr_exponent, memory_per_sample,
                                    step_energy, train_on_device, training_macs)
from lowbit.golden.training import TrainingConfig, TrainingStep
from lowbit.training_energy import fp32_operations, host_operations, operations_energy
from lowbit.golden.xnor_array import Precision
from lowbit.runtime import ISSTransport, Runtime
from lowbit.device_update import DeviceUpdate, latent_depth_for, training_accelerator

from conftest import simulator_params

#: Small memories and 4 planes a pass: products split into blocks of rows, of K and of
#: planes. The configuration of the compiler's convolution tests (one Verilator build).
SMALL = AcceleratorConfig(
    xnor_array=XNORArrayConfig(rows=2, cols=2, word=16, max_k=256, max_act_bits=4,
                               max_weight_bits=1, pipeline=2),
    in_depth=256, act_depth=128, weight_depth=256, thresh_depth=64, score_depth=64)

#: A three-layer net: an input layer (5-bit inputs), a hidden layer and the output layer.
NET = TrainingConfig(sizes=(64, 16, 16, 10), grad_bits=(6, 8, 8), batch=16)
SHAPES = [(16, 64), (16, 16), (10, 16)]
#: SMALL with a latent memory for NET: the update runs on the accelerator too.
SMALL_TRAIN = SMALL.replace(latent_depth=latent_depth_for(SHAPES, SMALL))
#: 32-bit words and 8 planes a pass, a latent memory and a statistics unit for NET: every
#: forward product's norm statistics come from STATS.
STATS_TRAIN = training_accelerator(
    SMALL.replace(xnor_array=SMALL.xnor_array.replace(word=32, max_act_bits=8),
                  score_depth=128), NET)


def draw(rng, precision, shape):
    p = Precision.parse(precision)
    if p.kind == "binary":
        return rng.choice([-1, 1], shape)
    low, high = p.range
    return rng.integers(low, high + 1, shape)


PAIRS = [("binary", "binary", (13, 70, 9)), ("uint5", "binary", (32, 64, 40)),
         ("int8", "binary", (16, 48, 64)), ("int8", "uint5", (40, 16, 64)),
         ("int6", "binary", (40, 32, 70)), ("uint3", "int4", (5, 600, 7)),
         ("binary", "int2", (3, 17, 5))]


@pytest.mark.parametrize("config", [AcceleratorConfig(), SMALL], ids=["default", "small"])
@pytest.mark.parametrize("a_prec, b_prec, shape", PAIRS, ids=[f"{a}x{b}" for a, b, _ in PAIRS])
def test_products_are_numpys_integer_products(config, a_prec, b_prec, shape):
    m, k, n = shape
    rng = np.random.default_rng(m * k + n)
    a, b = draw(rng, a_prec, (m, k)), draw(rng, b_prec, (n, k))
    with ISSTransport(config) as link:
        matmul = DeviceMatmul(Runtime(config, link))
        got = matmul(a, b, a_prec, b_prec)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, a @ b.T)
    assert matmul.stats["gemms"] >= 1 and matmul.stats["array_beats"] > 0


def test_products_are_split_into_blocks_on_small_memories():
    # 600 elements of K at 16 bits a word and 16 words a GEMM: 3 blocks of K; an int8 left
    # operand at 4 planes a pass: 2 chunks; 130 rows of weights, 32 tiles a block: 3 blocks.
    rng = np.random.default_rng(3)
    a, b = draw(rng, "int8", (9, 600)), draw(rng, "binary", (130, 600))
    with ISSTransport(SMALL) as link:
        matmul = DeviceMatmul(Runtime(SMALL, link))
        np.testing.assert_array_equal(matmul(a, b, "int8", "binary"), a @ b.T)
    assert SMALL.max_words * SMALL.word < 600
    # By hand, per chunk of 4 of the int8's 8 planes (2 chunks): K in blocks of 16 words
    # (256, 256, 88 elements: 16, 16, 6 words). A 16-word block holds 256 // 16 = 16 tiles
    # of weights (32 rows: 4 blocks and one of 2 rows); 16 tiles of scores leave
    # 64 // 32 = 2 row tiles (4 rows: 3 blocks), one tile leaves 4 (8 rows: 2 blocks):
    # 4 * 3 + 2 = 14. The 6-word block: 32 tiles (64 rows: 2 blocks of 1 row tile, 5 blocks
    # each, and one of 2 rows, 1 block): 11.
    assert matmul.stats["gemms"] == 2 * (14 + 14 + 11)


#: Memories far smaller than an operand's row: 2 words of weights, 4 of inputs and scores.
TINY = dataclasses.replace(SMALL, in_depth=4, weight_depth=2, act_depth=4, thresh_depth=4,
                           score_depth=4)


@pytest.mark.parametrize("left", ["int8", "binary"])
def test_products_fit_memories_shallower_than_a_row(left):
    rng = np.random.default_rng(5)
    a, b = draw(rng, left, (5, 100)), draw(rng, "int4", (3, 100))
    with ISSTransport(TINY) as link:
        matmul = DeviceMatmul(Runtime(TINY, link))
        np.testing.assert_array_equal(matmul(a, b, left, "int4"), a @ b.T)


def test_products_refuse_a_score_memory_below_a_row_tile():
    config = dataclasses.replace(TINY, score_depth=1)
    with ISSTransport(config) as link:
        with pytest.raises(ValueError, match=r"score_depth >= rows \(2\) to store one row "
                           r"tile's scores, not 1"):
            DeviceMatmul(Runtime(config, link))


def test_products_refuse_bad_operands():
    with ISSTransport(SMALL) as link:
        matmul = DeviceMatmul(Runtime(SMALL, link))
        with pytest.raises(ValueError, match=r"operands must be \(M, K\) and \(N, K\)"):
            matmul(np.ones((2, 3)), np.ones((2, 4)), "binary", "binary")
        with pytest.raises(ValueError, match="left operand"):
            matmul(np.full((2, 3), 9), np.ones((2, 3)), "uint3", "binary")


def _batches(config, steps, seed=0):
    data = datasets.load("digits")
    x = data.input_quantizer.quantize(data.x_train)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        index = rng.choice(len(x), config.batch, replace=False)
        yield x[index], data.y_train[index]


def _same_step(gold, dev):
    for g, d in zip(gold.weights, dev.weights):
        np.testing.assert_array_equal(g.code, d.code)
        np.testing.assert_array_equal(g.sign, d.sign)


def _check_steps(runtime, steps):
    update = (DeviceUpdate(runtime, SHAPES, NET.weight_bits) if runtime.config.training
              else None)
    gold = TrainingStep(NET)
    matmul = DeviceMatmul(runtime)
    dev = TrainingStep(NET, matmul=matmul, update=update,
                       statistics=matmul.statistics if runtime.config.statistics else None)
    flips = 0
    for x, y in _batches(NET, steps):
        ours, theirs = gold.step(x, y), dev.step(x, y)
        for g, d in zip(ours.dw, theirs.dw):
            np.testing.assert_array_equal(g.man, d.man)
            assert g.exp == d.exp
        for g, d in zip(ours.forward.z, theirs.forward.z):
            np.testing.assert_array_equal(g, d)
        _same_step(gold, dev)
        flips += ours.flips
    assert flips > 0  # the steps changed binary weights: the comparison is not vacuous
    # With a statistics unit every layer's forward product fits one program with STATS.
    assert matmul.stats["statistics"] == (steps * NET.layers if runtime.config.statistics
                                          else 0)
    if update is not None:
        assert update.stats["programs"] == steps + 1   # one load, an update a step
        return {**dev.matmul.stats, "update_cycles": update.stats["cycles"]}
    return dev.matmul.stats


@pytest.mark.parametrize("config", [AcceleratorConfig(), SMALL, SMALL_TRAIN, STATS_TRAIN],
                         ids=["default", "small", "small-train", "stats-train"])
def test_steps_on_the_iss_are_the_golden_steps(config):
    with ISSTransport(config) as link:
        stats = _check_steps(Runtime(config, link), 3)
    assert stats["cycles"] > 0


@pytest.mark.cocotb
@pytest.mark.parametrize("simulator", simulator_params())
def test_a_step_on_the_generated_verilog_is_the_golden_step(simulator, tmp_path):
    # One whole step, every kind of layer (5-bit input layer, hidden, output), its products,
    # its norm statistics (STATS) and its update (UPDATE on the latent memory) on the
    # Verilog of a small training configuration; the ISS's cycle counts on the same
    # programs.
    from lowbit.runtime import RTLTransport

    with RTLTransport(STATS_TRAIN, simulator, test_dir=tmp_path, timeout=120) as rtl:
        rtl_stats = _check_steps(Runtime(STATS_TRAIN, rtl), 1)
    with ISSTransport(STATS_TRAIN) as link:
        iss_stats = _check_steps(Runtime(STATS_TRAIN, link), 1)
    assert rtl_stats == iss_stats and rtl_stats["update_cycles"] > 0


def test_device_update_reloads_weights_it_did_not_return():
    """A caller that replaces the weights between steps (here: the initial ones again) gets
    the update of those, not of what the latent memory held."""
    with ISSTransport(SMALL_TRAIN) as link:
        update = DeviceUpdate(Runtime(SMALL_TRAIN, link), SHAPES, NET.weight_bits)
        start = TrainingStep(NET).weights
        grads = [np.ones(s, dtype=np.int64) * 5 for s in SHAPES]
        first = update(start, grads, NET.grad_bits, 3)
        again = update(start, grads, NET.grad_bits, 3)
        for a, b in zip(first, again):
            np.testing.assert_array_equal(a.code, b.code)
        assert update.stats["programs"] == 4      # two loads, two updates
        update(again, grads, NET.grad_bits, 3)    # its last result: no reload
        assert update.stats["programs"] == 5


@pytest.mark.parametrize("config, bits, message", [
    (SMALL, 8, "the update on the accelerator needs a training configuration: latent_depth "
               "is 0 (no latent memory)"),
    (SMALL_TRAIN, 6, "the training step's latent weights are 6-bit LNS words; the "
                     "accelerator's latent_bits is 8"),
    (SMALL.replace(latent_depth=64), 8, "the latent weights of layers [(16, 64), (16, 16), "
                                        "(10, 16)] take 90 latent words; latent_depth is 64 "
                                        "(at least 128 needed)"),
])
def test_device_update_refuses_configurations_that_cannot_hold_it(config, bits, message):
    with ISSTransport(config) as link:
        with pytest.raises(ValueError) as info:
            DeviceUpdate(Runtime(config, link), SHAPES, bits)
    assert str(info.value) == message


def test_training_learns_and_exports_a_model_that_compiles():
    data = datasets.load("digits")
    config = dataclasses.replace(NET, sizes=(64, 32, 32, 10), batch=32)
    with ISSTransport(AcceleratorConfig()) as link:
        step, report = train_on_device(data, config, runtime=Runtime(AcceleratorConfig(), link),
                                       epochs=2)
    assert report.steps == 2 * (len(data.x_train) // config.batch)
    assert report.device["gemms"] > 0 and len(report.losses) == 2
    assert report.device["energy_pj_per_step"] > 0 and report.device["fp32_mac_pj_per_step"] > 0
    assert report.accuracy >= 0.6  # two epochs of a small net; 10% is chance
    q = data.input_quantizer
    model = export_model(step, q.quantize(data.x_train), name="t", dataset="digits",
                         input_quantizer=q)
    program = compile_model(model, AcceleratorConfig(), batch=16)
    with ISSTransport(AcceleratorConfig()) as link:
        scores, _ = run_model(program, Runtime(AcceleratorConfig(), link), data.x_test)
    compiled = float((scores.argmax(1) == data.y_test).mean())
    # The compiled thresholds are exact on the exported float norms; the step rounds the
    # norm's input to BFP first, so a few images near a boundary may differ.
    assert abs(compiled - report.accuracy) <= 0.03
    assert compiled == float((model.predict(data.x_test) == data.y_test).mean())
    # The schedule lowered the step's exponent while training; the step comes back with the
    # caller's configuration.
    assert step.config == config
    assert report.train_seconds > 0 and report.images_per_second > 0


def test_learning_rate_schedule_hand_case():
    # 10 epochs: 0-5 keep e (6 < 0.6 * 10), 6-8 drop one (8 < 8.5), 9 drops two.
    assert [lr_exponent(4, e, 10) for e in range(10)] == [4] * 6 + [3] * 3 + [2]
    # Never below 0; a single epoch keeps e.
    assert [lr_exponent(1, e, 10) for e in (0, 6, 9)] == [1, 0, 0]
    assert lr_exponent(3, 0, 1) == 3


def test_training_counts_hand_case():
    # 64-16-16-10: forward and dW of every layer (1,024 + 256 + 160 MACs a sample each),
    # dX of the upper two (256 + 160).
    assert training_macs(NET) == 2 * (64 * 16 + 16 * 16 + 16 * 10) + 16 * 16 + 16 * 10
    # 64 5-bit inputs and 2 bits for each of 32 hidden activations; float32: 106 values.
    assert memory_per_sample(NET) == ((64 * 5 + 2 * 32) / 8, 4 * 106)


def test_training_energy_hand_case():
    # NET: 64-16-16-10, batch 16; 1,440 weights. The 45 nm table: int_add_8 0.03 pJ,
    # fp_mul_32 3.7, fp_add_32 0.9.
    host = operations_energy(host_operations(NET))
    assert host["update"] == pytest.approx(3 * 0.03 * 1440)   # 8-bit LNS codes: 3 adds
    fp32 = operations_energy(fp32_operations(NET))
    assert fp32["update"] == pytest.approx(1440 * (3.7 + 0.9))
    assert fp32["products"] == pytest.approx(16 * training_macs(NET) * (3.7 + 0.9))
    # Softmax: per logit an 8-bit and a 32-bit multiply (0.2 + 3.1) and a 32-bit add (0.1).
    assert host["softmax"] == pytest.approx(16 * 10 * (0.2 + 3.1 + 0.1))
    # Requantisation, a 16-bit add (0.05) per value, weight and dX: layer 0 256 + 1,024;
    # layer 1 256 + 256 + 256; layer 2 160 + 160 + 256: 2,624.
    assert host["requantisation"] == pytest.approx(2624 * 0.05)
    # The norm's backward product: an 8-bit multiply and a 32-bit add per value, 672 values.
    assert host["norm backward"] == pytest.approx(672 * (0.2 + 0.1))
    # Statistics: a sum_bits-wide add and two input-width compares per value. Layer 0: input
    # width 12 (peak 64 x 31 = 1,984, 11 bits and a sign), sum 12 + 16 = 28 bits (batches up
    # to 2^16); adds interpolate linearly: 28 bits 0.0875, 12 bits 0.04. Layers 1 and 2:
    # width 6 (peak 16), sum 22 bits: 0.06875 and 6 x 0.03 / 8 = 0.0225.
    assert host["statistics"] == pytest.approx(
        256 * (0.0875 + 2 * 0.04) + (256 + 160) * (0.06875 + 2 * 0.0225))
    # The update on the accelerator: left out of the host's part.
    assert "update" not in operations_energy(host_operations(NET, update=False))
    with ISSTransport(AcceleratorConfig()) as link:
        matmul = DeviceMatmul(Runtime(AcceleratorConfig(), link))
        a, b = np.ones((2, 64), dtype=np.int64), np.ones((3, 64), dtype=np.int64)
        matmul(a, b, "binary", "binary")
    energy = step_energy(NET, AcceleratorConfig(), matmul.actions, 1)
    assert energy["host_pj_per_step"] == pytest.approx(sum(host.values()))
    assert energy["fp32_step_pj"] == pytest.approx(sum(fp32.values()))


def test_training_refuses_a_data_set_of_other_inputs():
    data = datasets.load("digits")
    with pytest.raises(ValueError, match="the digits data set has 64 5-bit inputs; the "
                                         "training configuration expects 32 of 5 bits"):
        train_on_device(data, TrainingConfig(sizes=(32, 16, 10), grad_bits=(8, 8)))
    with pytest.raises(ValueError, match="epochs must be a positive integer, not 0"):
        train_on_device(data, NET, epochs=0)
    big = dataclasses.replace(NET, batch=2000)
    with pytest.raises(ValueError, match="a batch of 2000 needs at least that many training "
                                         "images; the digits data set has 1437"):
        train_on_device(data, big)


def test_cli_trains_on_the_iss_and_the_model_runs(tmp_path, capsys):
    out = tmp_path / "m.npz"
    assert main(["train", "--backend", "iss", "--epochs", "1", "--hidden", "32,32",
                 "--batch-size", "16", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "epoch 1/1: loss" in text and "trained 64-32-32-10 on the iss" in text
    assert "GEMM programs" in text and "uJ a step" in text and f"wrote {out}" in text
    assert "LNS-Madam update on the accelerator (latent weights resident" in text
    assert ("LightNorm batch statistics: the accelerator's statistics unit (STATS) for "
            "layer(s) 0, 1, 2 of 3") in text
    program = tmp_path / "m.lbp"
    assert main(["compile", str(out), "-o", str(program)]) == 0


def test_cli_fits_the_statistics_unit_after_set(tmp_path, capsys):
    # A score memory of 8192 words makes 33-bit sums, wider than a lane: no statistics
    # unit is added (the statistics stay on the host), rather than a refused --set.
    out = tmp_path / "m.npz"
    assert main(["train", "--backend", "iss", "--epochs", "1", "--hidden", "16,16",
                 "--set", "score_depth=8192", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert ("LightNorm batch statistics: the host for layer(s) 0, 1, 2 (the configuration "
            "has no statistics unit)") in text


@pytest.mark.parametrize("argv, message", [
    (["--arch", "cnn"], "--backend trains the binarized MLP only"),
    (["--grad-bits", "9"], "grad_bits"),
    (["--backend", "board"], "--backend board needs --port"),
    (["--epochs", "0"], "epochs must be a positive integer, not 0"),
    (["--batch-size", "0"], "batch"),
    (["--lr", "0.1", "--no-twin"], "--lr, --no-twin: an option of the host trainer (without "
                                   "--backend) only"),
    (["--lr", "0"], "--lr: an option of the host trainer"),   # a given 0 counts
    (["--set", "latent_depth=48"], "AcceleratorConfig latent_depth must be 0 or a power of "
                                   "two, not 48"),
    (["--set", "latent_bits=6"], "the training step's latent weights are 8-bit LNS words; "
                                 "the accelerator's latent_bits is 6"),
    (["--set", "norm_chunks=6"], "AcceleratorConfig norm_chunks must be a power of two (the "
                                 "gateware splits a batch by shifts), not 6"),
    (["--set", "norm_channels=12"], "AcceleratorConfig norm_channels 12 must be a multiple "
                                    "of cols 8: a score word is cols channels"),
])
def test_cli_refuses_bad_training_requests(tmp_path, capsys, argv, message):
    argv = ["train", "--backend", "iss", "--epochs", "1", *argv, "-o", str(tmp_path / "m.npz")]
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize("argv, message", [
    (["--grad-bits", "6"], "--grad-bits"),
    (["--set", "xnor_array.rows=2", "--port", "/dev/null"], "--set, --port"),
    (["--simulator", "icarus"], "--simulator"),
    (["--grad-bits", "0", "--baud", "0"], "--grad-bits, --baud"),
])
def test_cli_refuses_device_options_for_the_host_trainer(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as info:
        main(["train", "--epochs", "1", *argv, "-o", str(tmp_path / "m.npz")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert (f"{message}: an option of the trainer on the accelerator (with --backend) only"
            in err)


def test_statistics_stay_on_the_host_when_the_unit_cannot_take_them():
    # The same products as STATS_TRAIN's, with a unit of 4 chunks for a norm of 8, a unit
    # of 2 channels for 16, and a configuration without one: None and the reason.
    gold = TrainingStep(NET)
    x = np.random.default_rng(0).integers(0, 32, (NET.batch, 64))
    w = gold.binary()[0]
    norm = gold.norms[0]
    for config, reason in [
            (STATS_TRAIN.replace(norm_chunks=4), "the norm has 8 chunks, the statistics unit 4"),
            (STATS_TRAIN.replace(norm_channels=2), "16 channels are more than the statistics "
                                                   "unit's 2"),
            (SMALL_TRAIN, "the configuration has no statistics unit (norm_channels 0)")]:
        with ISSTransport(config) as link:
            matmul = DeviceMatmul(Runtime(config, link))
            assert matmul.statistics(x, w, "uint5", norm) is None
        assert matmul.statistics_refused == reason
    with ISSTransport(STATS_TRAIN) as link:
        z, total, spread = DeviceMatmul(Runtime(STATS_TRAIN, link)).statistics(
            x, w, "uint5", norm)
    want = norm.statistics(x @ w.T)
    assert np.array_equal(z, x @ w.T)
    assert np.array_equal(total, want[0]) and np.array_equal(spread, want[1])


def test_statistics_of_some_layers_on_the_core_are_reported_and_charged_per_layer():
    # 4 planes a GEMM: the 5-bit input layer's product takes two, so its statistics stay
    # on the host; the binary layers' come from STATS. Four steps of digits.
    config = training_accelerator(
        SMALL.replace(xnor_array=SMALL.xnor_array.replace(word=32), score_depth=128), NET)
    data = datasets.load("digits")
    data = dataclasses.replace(data, x_train=data.x_train[:64], y_train=data.y_train[:64],
                               x_test=data.x_test[:32], y_test=data.y_test[:32])
    with ISSTransport(config) as link:
        _, report = train_on_device(data, NET, runtime=Runtime(config, link), epochs=1)
    d = report.device
    assert report.steps == 4 and d["statistics"] == 8 and d["statistics_layers"] == [1, 2]
    assert d["statistics_refused"] == "a uint5 left operand takes more than one GEMM"
    text = "\n".join(report.lines())
    assert ("LightNorm batch statistics: the accelerator's statistics unit (STATS) for "
            "layer(s) 1, 2 of 3, 8 forward products; the host for layer(s) 0 (a uint5 left "
            "operand takes more than one GEMM)") in text
    # The host's part keeps layer 0's statistics only: 16 samples x 16 channels, a sum and
    # two compares each.
    ops = host_operations(NET, update=False, stats_on_chip=(1, 2))
    stats = {op: n for (part, op), n in ops.items() if part == "statistics"}
    sum_bits = NET.norm_config(0).sum_bits
    width = NET.norm_config(0).input_width
    assert stats == {("int_add", sum_bits): 256, ("int_add", width): 512}
