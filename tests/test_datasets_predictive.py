"""The shipped digits loader and the predictive metrics for classifiers."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sgmcmc.datasets import load_digits
from sgmcmc.datasets.digits import _raw
from sgmcmc.diagnostics.predictive import (
    accuracy,
    brier_score,
    expected_calibration_error,
    nll,
    posterior_predictive_probs,
)

REPO = Path(__file__).resolve().parents[1]


# -- datasets ------------------------------------------------------------------
def test_digits_shapes_and_dtypes():
    d = load_digits()
    assert d.x_train.shape == (1347, 64) and d.x_test.shape == (450, 64)
    assert d.y_train.shape == (1347,) and d.y_test.shape == (450,)
    assert d.x_train.dtype == np.float32 and d.x_test.dtype == np.float32
    assert d.y_train.dtype == np.int32 and d.y_test.dtype == np.int32
    assert set(np.unique(d.y_train)) == set(range(10)) == set(np.unique(d.y_test))
    assert load_digits(dtype=np.float64).x_train.dtype == np.float64
    raw = load_digits(standardize=False)
    assert raw.x_train.min() == 0 and raw.x_train.max() == 16
    assert np.array_equal(raw.x_train, np.round(raw.x_train))


def test_digits_split_is_deterministic_stratified_and_a_partition():
    a, b = load_digits(seed=3), load_digits(seed=3)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    c = load_digits(seed=4)
    assert not np.array_equal(a.y_test, c.y_test)

    x_all, y_all = _raw()
    counts = np.bincount(y_all, minlength=10)
    np.testing.assert_array_equal(np.bincount(a.y_test, minlength=10), np.round(0.25 * counts))
    np.testing.assert_array_equal(np.bincount(a.y_train, minlength=10) + np.bincount(a.y_test, minlength=10), counts)

    # Train + test is exactly the data set (as a multiset of labelled rows): nothing lost or duplicated.
    raw = load_digits(seed=3, standardize=False)
    rows = np.concatenate([np.column_stack([raw.x_train, raw.y_train]), np.column_stack([raw.x_test, raw.y_test])])
    full = np.column_stack([x_all, y_all]).astype(rows.dtype)
    np.testing.assert_array_equal(rows[np.lexsort(rows.T)], full[np.lexsort(full.T)])

    small = load_digits(test_fraction=0.1)
    assert abs(len(small.y_test) - 180) <= 5


def test_digits_standardisation_uses_training_statistics_only():
    raw = load_digits(seed=1, standardize=False, dtype=np.float64)
    std = load_digits(seed=1, dtype=np.float64)
    mean = raw.x_train.mean(axis=0)
    scale = np.sqrt(raw.x_train.var(axis=0).mean())
    np.testing.assert_allclose(std.x_train, (raw.x_train - mean) / scale, atol=1e-12)
    np.testing.assert_allclose(std.x_test, (raw.x_test - mean) / scale, atol=1e-12)
    # Training features: mean 0, average variance 1; the test set is not re-centred on itself.
    np.testing.assert_allclose(std.x_train.mean(axis=0), 0.0, atol=1e-12)
    assert std.x_train.var(axis=0).mean() == pytest.approx(1.0)
    assert np.abs(std.x_test.mean(axis=0)).max() > 1e-3
    # Changing the test images would not change the training features.
    both = np.concatenate([raw.x_train, raw.x_test])
    assert not np.allclose(both.mean(axis=0), mean)
    # Rare pixels are not blown up.
    assert np.abs(std.x_train).max() < 5


@pytest.mark.parametrize(
    "kwargs", [{"test_fraction": 0.0}, {"test_fraction": 1.0}, {"test_fraction": -0.1}, {"dtype": np.int32}]
)
def test_digits_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        load_digits(**kwargs)


def test_digits_loads_without_scikit_learn():
    code = (
        "import sys; sys.modules['sklearn'] = None\n"
        "from sgmcmc.datasets import load_digits\n"
        "d = load_digits(); assert d.x_train.shape == (1347, 64)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, env={"PYTHONPATH": str(REPO), "PATH": ""})


# -- predictive metrics ------------------------------------------------------------
# Four examples, two classes; confidences 0.95, 0.75, 0.65, 0.55 (none on a bin edge for 5 bins).
SMALL_PROBS = np.array([[0.95, 0.05], [0.25, 0.75], [0.65, 0.35], [0.45, 0.55]])
SMALL_Y = np.array([0, 0, 0, 1])


def test_perfect_classifier():
    y = np.array([0, 3, 2, 1, 3])
    probs = np.eye(4)[y]
    assert float(accuracy(probs, y)) == 1.0
    assert float(expected_calibration_error(probs, y)) == 0.0
    assert float(nll(probs, y)) == 0.0
    assert float(brier_score(probs, y)) == 0.0


def test_uniform_probabilities():
    y = np.arange(20) % 10
    probs = np.full((20, 10), 0.1, np.float32)
    assert float(nll(probs, y)) == pytest.approx(math.log(10), rel=1e-6)
    assert float(brier_score(probs, y)) == pytest.approx(0.9, rel=1e-6)
    assert float(accuracy(probs, y)) == pytest.approx(0.1)  # ties go to class 0
    # All in bin (1/15, 2/15]: |0.1 - 0.1|.
    assert float(expected_calibration_error(probs, y)) == pytest.approx(0.0, abs=1e-6)


def test_small_example_by_hand():
    # Bins of width 0.2: (0.8, 1] holds {0.95 correct}: gap 0.05, weight 1/4;
    # (0.6, 0.8] holds {0.75 wrong, 0.65 correct}: accuracy 0.5, confidence 0.7, weight 2/4;
    # (0.4, 0.6] holds {0.55 correct}: gap 0.45, weight 1/4.
    ece = 0.25 * 0.05 + 0.5 * 0.2 + 0.25 * 0.45
    assert float(expected_calibration_error(SMALL_PROBS, SMALL_Y, num_bins=5)) == pytest.approx(ece)
    brier = (0.005 + 1.125 + 0.245 + 0.405) / 4
    assert float(brier_score(SMALL_PROBS, SMALL_Y)) == pytest.approx(brier)
    assert float(accuracy(SMALL_PROBS, SMALL_Y)) == 0.75
    assert float(nll(SMALL_PROBS, SMALL_Y)) == pytest.approx(-np.mean(np.log([0.95, 0.25, 0.65, 0.55])), rel=1e-6)


def _ece_loop(probs, y, num_bins):
    conf, pred = probs.max(1), probs.argmax(1)
    total = 0.0
    for m in range(num_bins):
        in_bin = (conf > m / num_bins) & (conf <= (m + 1) / num_bins)
        if in_bin.any():
            total += in_bin.mean() * abs((pred[in_bin] == y[in_bin]).mean() - conf[in_bin].mean())
    return total


def test_ece_matches_a_plain_loop():
    rng = np.random.default_rng(0)
    logits = 3 * rng.normal(size=(500, 10))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y = rng.integers(0, 10, size=500)
    for num_bins in (1, 10, 15):
        assert float(expected_calibration_error(probs, y, num_bins)) == pytest.approx(_ece_loop(probs, y, num_bins))


def test_posterior_predictive_probs():
    logits = jnp.asarray(5 * np.random.default_rng(0).normal(size=(3, 5, 7, 4)), jnp.float32)
    expected = jnp.mean(jax.nn.softmax(logits, axis=-1), axis=(0, 1))
    np.testing.assert_allclose(posterior_predictive_probs(logits, axis=(0, 1)), expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(
        posterior_predictive_probs(logits[0]), jnp.mean(jax.nn.softmax(logits[0], -1), 0), rtol=1e-5, atol=1e-7
    )
    # Huge logits: no overflow, still probabilities. Draw 1 is certain of class 0, draw 2 of class 1.
    huge = jnp.array([[[1e4, 0.0]], [[0.0, 1e4]]])
    np.testing.assert_allclose(posterior_predictive_probs(huge), [[0.5, 0.5]])
    with pytest.raises(ValueError):
        posterior_predictive_probs(jnp.zeros((4,)))
    with pytest.raises(ValueError):
        posterior_predictive_probs(jnp.zeros((2, 3, 4)), axis=-1)  # the class axis
    with pytest.raises(ValueError):
        posterior_predictive_probs(jnp.zeros((2, 3, 4)), axis=5)


@pytest.mark.parametrize(
    "probs, y, match",
    [
        (SMALL_PROBS[:3], SMALL_Y, "rows"),
        (SMALL_PROBS, SMALL_Y[:, None], "shape"),
        (SMALL_PROBS[0], SMALL_Y, "shape"),
        (SMALL_PROBS, np.array([0, 1, 2, 0]), "labels"),
        (SMALL_PROBS, np.array([0, -1, 1, 0]), "labels"),
        (SMALL_PROBS, SMALL_Y.astype(float), "integer"),
        (SMALL_PROBS * 0.5, SMALL_Y, "sum to 1"),
        (np.log(SMALL_PROBS), SMALL_Y, r"\[0, 1\]"),
        (np.full((4, 2), np.nan), SMALL_Y, "non-finite"),
    ],
)
def test_metrics_reject_bad_input(probs, y, match):
    for metric in (accuracy, nll, expected_calibration_error, brier_score):
        with pytest.raises(ValueError, match=match):
            metric(probs, y)


def test_ece_rejects_bad_bins_and_metrics_work_under_jit():
    with pytest.raises(ValueError):
        expected_calibration_error(SMALL_PROBS, SMALL_Y, num_bins=0)
    probs, y = jnp.asarray(SMALL_PROBS, jnp.float32), jnp.asarray(SMALL_Y)
    for metric in (accuracy, nll, brier_score):
        assert float(jax.jit(metric)(probs, y)) == pytest.approx(float(metric(probs, y)), rel=1e-6)
    jitted = jax.jit(expected_calibration_error, static_argnums=2)
    assert float(jitted(probs, y, 5)) == pytest.approx(0.225, rel=1e-5)
