"""The 8x8 handwritten digits, shipped inside the package.

1797 grey-scale images of the digits 0-9, each 8x8 pixels whose values count
the "on" pixels of a 4x4 block of the original 32x32 bitmap (integers
0..16). This is the UCI "Optical Recognition of Handwritten Digits" data
(Alpaydin & Kaynak 1998) as redistributed by scikit-learn; see
``sgmcmc/datasets/data/README.md`` for the source, licence (CC BY 4.0) and how
the file was made.

The file is read with :mod:`importlib.resources`, so the loader works from a
source tree and from an installed wheel alike, with no network and without
scikit-learn.
"""

from __future__ import annotations

import functools
import importlib.resources
import io
import numbers
from typing import NamedTuple

import numpy as np

__all__ = ["Digits", "load_digits", "NUM_CLASSES", "NUM_FEATURES"]

NUM_CLASSES = 10
NUM_FEATURES = 64
_FILE = "digits.npz"


class Digits(NamedTuple):
    """A train/test split of the digits.

    Attributes:
        x_train: ``(n_train, 64)`` features.
        y_train: ``(n_train,)`` int32 labels in ``0..9``.
        x_test: ``(n_test, 64)`` features.
        y_test: ``(n_test,)`` int32 labels in ``0..9``.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


@functools.lru_cache(maxsize=1)
def _raw() -> tuple[np.ndarray, np.ndarray]:
    """The stored uint8 arrays ``(x (1797, 64), y (1797,))``, read once per process."""
    resource = importlib.resources.files("sgmcmc.datasets").joinpath("data", _FILE)
    # Read the bytes first: a resource inside a zipped install is not always a seekable file.
    with np.load(io.BytesIO(resource.read_bytes())) as npz:
        x, y = npz["x"], npz["y"]
    if x.shape != (1797, NUM_FEATURES) or y.shape != (1797,):
        raise RuntimeError(f"{_FILE} is damaged: got x {x.shape}, y {y.shape}, expected (1797, 64) and (1797,).")
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def _stratified_split(y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train and test indices holding ``test_fraction`` of every class in the test set.

    Each class's indices are permuted with ``numpy.random.default_rng(seed)``
    and the first ``round(test_fraction * n_class)`` go to the test set; both
    index sets are then shuffled, so the classes are interleaved.
    """
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in range(NUM_CLASSES):
        members = rng.permutation(np.flatnonzero(y == label))
        num_test = round(test_fraction * members.size)
        test.append(members[:num_test])
        train.append(members[num_test:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


def _standardize(x_train: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre every pixel by its training mean and divide all pixels by one common training scale.

    The scale is ``sqrt(mean_j var_j)``, the root mean per-pixel variance of
    the training images, so the training features have mean 0 and average
    variance 1. One scale for all pixels, rather than per-pixel z-scores,
    because the pixels share a unit (ink count 0..16): dividing each pixel by
    its own standard deviation would blow up pixels that are almost always
    blank (a pixel inked in one training image becomes a feature of about 37)
    and make the weights on them, which the data hardly constrain, dominate
    the predictions on the few test images where they are inked. The test
    images never enter the statistics.
    """
    mean = x_train.mean(axis=0)
    scale = np.sqrt(np.mean(x_train.var(axis=0)))
    return (x_train - mean) / scale, (x_test - mean) / scale


def load_digits(
    *,
    test_fraction: float = 0.25,
    seed: int = 0,
    standardize: bool = True,
    dtype: np.dtype | type = np.float32,
) -> Digits:
    """Load the 8x8 handwritten digits with a stratified, seeded train/test split.

    Parameters
    ----------
    test_fraction
        Fraction of each class put in the test set, in (0, 1). With the
        default 0.25 the split is 1347 training and 450 test images (each
        class's test count is rounded to the nearest integer).
    seed
        Seed of the split (``numpy.random.default_rng``). Same seed, same split.
    standardize
        If True, every pixel is centred by its mean over the *training*
        images, and all pixels are divided by one common scale, the root mean
        per-pixel variance of the training images, so the training features
        have mean 0 and average variance 1 (see ``_standardize`` for why one
        scale rather than per-pixel z-scores). The test images are transformed
        with the same training statistics: nothing about them leaks into
        training. If False, the features are the raw pixel counts 0..16.
    dtype
        Floating dtype of the features. Labels are always int32.

    Returns
    -------
    Digits
        NamedTuple ``(x_train, y_train, x_test, y_test)`` of NumPy arrays,
        features of shape ``(n, 64)`` and labels of shape ``(n,)``.

    Examples
    --------
    >>> from sgmcmc.datasets import load_digits
    >>> x_train, y_train, x_test, y_test = load_digits(seed=0)
    >>> x_train.shape, x_test.shape
    ((1347, 64), (450, 64))
    """
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, numbers.Real):
        raise TypeError(f"test_fraction must be a number in (0, 1), got {test_fraction!r}.")
    if not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}.")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an integer, got {seed!r}.")
    dtype = np.dtype(dtype)
    if not np.issubdtype(dtype, np.floating):
        raise ValueError(f"dtype must be a floating dtype, got {dtype}.")

    x, y = _raw()
    train, test = _stratified_split(y, float(test_fraction), int(seed))
    if train.size == 0 or test.size == 0:
        raise ValueError(f"test_fraction={test_fraction} leaves an empty train or test set.")
    x_train, x_test = x[train].astype(np.float64), x[test].astype(np.float64)
    if standardize:
        x_train, x_test = _standardize(x_train, x_test)
    return Digits(
        x_train=x_train.astype(dtype),
        y_train=y[train].astype(np.int32),
        x_test=x_test.astype(dtype),
        y_test=y[test].astype(np.int32),
    )
