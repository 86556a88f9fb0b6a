"""Agreement / total variation, equal-mass ECE, regression metrics, and the cached NUTS reference predictive."""

from __future__ import annotations

import hashlib
import json
import math
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import sgmcmc
from sgmcmc.diagnostics import (
    agreement,
    expected_calibration_error,
    interval_coverage,
    predictive_log_density,
    rmse,
    total_variation,
)
from sgmcmc.reference import ReferencePredictive, ceiling, reference_predictive, reference_settings

P = np.array([[0.95, 0.05], [0.25, 0.75], [0.65, 0.35], [0.45, 0.55]])
Q = np.array([[0.60, 0.40], [0.50, 0.50], [0.30, 0.70], [0.10, 0.90]])
Y = np.array([0, 0, 0, 1])


# -- agreement and total variation --------------------------------------------------------
def test_agreement_and_total_variation_by_hand():
    # argmax P = 0, 1, 0, 1; argmax Q = 0, 0 (tie -> lowest index), 1, 1.
    assert float(agreement(P, Q)) == 0.5
    # 1/2 sum_k |p - q| per row = |p_0 - q_0| for two classes: 0.35, 0.25, 0.35, 0.35.
    assert float(total_variation(P, Q)) == pytest.approx((0.35 + 0.25 + 0.35 + 0.35) / 4)
    assert float(total_variation(P, Q)) == pytest.approx(float(total_variation(Q, P)))
    assert float(agreement(P, P)) == 1.0 and float(total_variation(P, P)) == 0.0
    one_hot = np.eye(3)[[0, 1, 2]]
    assert float(total_variation(one_hot, np.eye(3)[[1, 2, 0]])) == 1.0  # disjoint supports
    assert float(agreement(one_hot, np.eye(3)[[1, 2, 0]])) == 0.0
    probs, ref = jnp.asarray(P, jnp.float32), jnp.asarray(Q, jnp.float32)
    assert float(jax.jit(agreement)(probs, ref)) == 0.5
    assert float(jax.jit(total_variation)(probs, ref)) == pytest.approx(0.325, rel=1e-6)


@pytest.mark.parametrize(
    "probs, ref, match",
    [
        (P, Q[:3], "must match"),
        (np.full((4, 3), 1 / 3), Q, "must match"),  # (4, 3) against (4, 2)
        (P[0], Q[0], "shape"),
        (P, Q * 2, r"ref_probs must lie in \[0, 1\]"),
        (P * 0.5, Q, "sum to 1"),
        (np.full((4, 2), np.nan), Q, "non-finite"),
        (P.astype(np.int32), Q, "floating"),
        (np.ones((4, 1)), np.ones((4, 1)), "2 classes"),
        (np.zeros((0, 2)), np.zeros((0, 2)), "empty"),
    ],
)
def test_agreement_and_total_variation_reject_bad_input(probs, ref, match):
    for metric in (agreement, total_variation):
        with pytest.raises(ValueError, match=match):
            metric(probs, ref)


# -- ECE binnings ------------------------------------------------------------------------------
def _ece_equal_mass_loop(probs, y, num_bins):
    """Equal-mass ECE by a plain loop over the documented bin edges."""
    conf, correct = probs.max(1), probs.argmax(1) == y
    n = len(conf)
    edges = [np.sort(conf)[math.ceil(m * n / num_bins) - 1] for m in range(1, num_bins)]
    lower = [-np.inf, *edges]
    upper = [*edges, np.inf]
    total = 0.0
    for lo, hi in zip(lower, upper):
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            total += in_bin.mean() * abs(correct[in_bin].mean() - conf[in_bin].mean())
    return total


def _random_probs(seed, n, k, scale=3.0):
    rng = np.random.default_rng(seed)
    logits = scale * rng.normal(size=(n, k))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return probs, rng.integers(0, k, size=n)


def test_equal_width_is_the_default_and_unchanged():
    probs, y = _random_probs(0, 300, 10)
    for num_bins in (1, 7, 15):
        default = float(expected_calibration_error(probs, y, num_bins))
        assert float(expected_calibration_error(probs, y, num_bins, binning="equal_width")) == default
    # Hand-computed in test_datasets_predictive: 0.225 for 5 equal-width bins.
    assert float(expected_calibration_error(P, Y, 5)) == pytest.approx(0.225)


def test_equal_mass_ece_by_hand_and_against_a_loop():
    # Confidences 0.55 (correct), 0.65 (correct), 0.75 (wrong), 0.95 (correct).
    # Five bins over four examples: every example alone, gaps 0.45, 0.35, 0.75, 0.05.
    assert float(expected_calibration_error(P, Y, 5, binning="equal_mass")) == pytest.approx(1.6 / 4)
    # Two bins: {0.55, 0.65} both correct (gap sum 0.8), {0.75 wrong, 0.95 correct} (|-0.75 + 0.05|).
    assert float(expected_calibration_error(P, Y, 2, binning="equal_mass")) == pytest.approx(1.5 / 4)
    # One bin is one bin whatever the binning.
    one = float(expected_calibration_error(P, Y, 1, binning="equal_mass"))
    assert one == pytest.approx(float(expected_calibration_error(P, Y, 1)))
    for n, num_bins in ((300, 15), (301, 7), (10, 3), (5, 12)):
        probs, y = _random_probs(n, n, 4)
        got = float(expected_calibration_error(probs, y, num_bins, binning="equal_mass"))
        assert got == pytest.approx(_ece_equal_mass_loop(probs, y, num_bins), rel=1e-5, abs=1e-7)


def test_equal_mass_bins_keep_ties_together():
    # Four examples tie at confidence 0.6 (two right, two wrong), two at 0.9 (both right).
    probs = np.array([[0.6, 0.4]] * 4 + [[0.9, 0.1]] * 2)
    y = np.array([0, 1, 0, 1, 0, 0])
    # Three bins: edges are the 2nd and 4th smallest confidences, both 0.6, so the ties share
    # the first bin {0.6 x 4}: |0.5 - 0.6|; the second bin is empty; the third {0.9 x 2}: |1 - 0.9|.
    expected = (4 * 0.1 + 2 * 0.1) / 6
    ece = float(expected_calibration_error(probs, y, 3, binning="equal_mass"))
    assert ece == pytest.approx(expected)
    # The order of the examples does not matter (it would if ties were split by rank).
    for seed in range(3):
        perm = np.random.default_rng(seed).permutation(6)
        assert float(expected_calibration_error(probs[perm], y[perm], 3, binning="equal_mass")) == pytest.approx(ece)
    # All confidences equal: a single bin.
    flat = np.full((5, 2), 0.5)
    assert float(expected_calibration_error(flat, np.array([0, 0, 1, 1, 1]), 4, binning="equal_mass")) == (
        pytest.approx(0.1)
    )


@pytest.mark.parametrize("binning", ["equal_width", "equal_mass"])
def test_ece_of_a_calibrated_predictor_is_near_zero(binning):
    # Binary predictor whose confidence c ~ U(0.5, 1) is right with probability c.
    rng = np.random.default_rng(1)
    n = 20000
    conf = rng.uniform(0.5, 1.0, size=n)
    probs = np.stack([conf, 1 - conf], axis=1)
    y = np.where(rng.uniform(size=n) < conf, 0, 1)
    # Each of 15 bins holds ~1300 examples: the binomial noise of a bin's accuracy is ~0.01.
    assert float(expected_calibration_error(probs, y, 15, binning=binning)) < 0.02
    # A predictor that claims 0.95 on all of them is off by the average gap.
    over = np.stack([np.full(n, 0.95), np.full(n, 0.05)], axis=1)
    assert float(expected_calibration_error(over, y, 15, binning=binning)) == pytest.approx(0.2, abs=0.02)


def test_ece_binning_errors_and_jit():
    with pytest.raises(ValueError, match="binning"):
        expected_calibration_error(P, Y, 5, binning="quantile")
    with pytest.raises(ValueError, match="num_bins"):
        expected_calibration_error(P, Y, 0, binning="equal_mass")
    jitted = jax.jit(expected_calibration_error, static_argnums=(2,), static_argnames=("binning",))
    got = jitted(jnp.asarray(P, jnp.float32), jnp.asarray(Y), 2, binning="equal_mass")
    assert float(got) == pytest.approx(0.375, rel=1e-5)


# -- regression ------------------------------------------------------------------------------
def test_regression_metrics_by_hand():
    y = np.array([0.0, 1.0, 3.0])
    mu = np.array([0.0, 2.0, 1.0])
    sigma = 2.0
    expected = np.mean(stats.norm.logpdf(y, mu, sigma))
    assert float(predictive_log_density(mu, sigma, y)) == pytest.approx(expected, rel=1e-6)
    assert float(rmse(mu, y)) == pytest.approx(math.sqrt((0 + 1 + 4) / 3), rel=1e-6)
    # A two-draw mixture with per-draw noise (S, 1), against scipy.
    means = np.array([[0.0, 2.0, 1.0], [1.0, 0.0, 3.5]])
    scales = np.array([[1.0], [0.5]])
    mix = np.log(0.5 * stats.norm.pdf(y, means[0], 1.0) + 0.5 * stats.norm.pdf(y, means[1], 0.5))
    assert float(predictive_log_density(means, scales, y)) == pytest.approx(mix.mean(), rel=1e-6)
    # The RMSE is that of the mean over draws: (0.5, 1, 2.25) against y.
    assert float(rmse(means, y)) == pytest.approx(math.sqrt((0.25 + 0 + 0.5625) / 3), rel=1e-6)
    # Draw axes may be (chain, draw): the same as flattening them.
    stacked = np.stack([means, means[::-1]])  # (2, 2, 3)
    assert float(predictive_log_density(stacked, 0.7, y)) == pytest.approx(
        float(predictive_log_density(stacked.reshape(4, 3), 0.7, y)), rel=1e-6
    )
    # Coverage: the mixture CDF at y decides; y_0 = 0 sits at the mixture's ~0.42 quantile.
    assert float(interval_coverage(mu, sigma, y, level=0.5)) == pytest.approx(
        np.mean(np.abs(stats.norm.cdf(y, mu, sigma) - 0.5) <= 0.25)
    )
    # Far-off draws make the log density very negative but finite (log-space mixture).
    assert np.isfinite(float(predictive_log_density(mu + 1e3, 0.01, y)))


@pytest.mark.parametrize("level", [0.5, 0.9, 0.95])
def test_coverage_of_a_calibrated_gaussian_is_the_level(level):
    rng = np.random.default_rng(2)
    n = 4000
    mu = rng.normal(size=n)
    sigma = rng.uniform(0.5, 2.0, size=n)
    y = mu + sigma * rng.normal(size=n)
    tol = 4 * math.sqrt(level * (1 - level) / n)  # 4 binomial standard errors
    assert abs(float(interval_coverage(mu, sigma, y, level)) - level) < tol
    # A mixture over draws (a posterior over the mean): y drawn from the mixture is covered at the level.
    draws = mu + 0.7 * rng.normal(size=(30, n))
    which = rng.integers(0, 30, size=n)
    y_mix = draws[which, np.arange(n)] + 0.5 * rng.normal(size=n)
    assert abs(float(interval_coverage(draws, 0.5, y_mix, level)) - level) < tol
    # Ignoring the spread of the draws (the averaged mean with the noise alone) undercovers.
    assert float(interval_coverage(draws.mean(0), 0.5, y_mix, level)) < level - tol


@pytest.mark.parametrize(
    "args, match",
    [
        ((np.zeros(3), 1.0, np.zeros(4)), "must match"),
        ((np.zeros(()), 1.0, np.zeros(1)), "shape"),
        ((np.zeros(3), 1.0, np.zeros((3, 1))), "y must have shape"),
        ((np.zeros((2, 3)), np.ones(2), np.zeros(3)), "broadcast"),
        ((np.zeros(3), np.ones((2, 3)), np.zeros(3)), "more entries"),
        ((np.zeros(3), 0.0, np.zeros(3)), "positive"),
        ((np.zeros(3), -1.0, np.zeros(3)), "positive"),
        ((np.array([0.0, np.nan, 1.0]), 1.0, np.zeros(3)), "non-finite"),
        ((np.zeros(3), 1.0, np.array([0.0, np.inf, 1.0])), "non-finite"),
        ((np.zeros((0, 3)), 1.0, np.zeros(3)), "empty"),
        ((np.array(["a", "b"]), 1.0, np.zeros(2)), "real numbers"),
    ],
)
def test_regression_metrics_reject_bad_input(args, match):
    means, scales, y = args
    with pytest.raises(ValueError, match=match):
        predictive_log_density(means, scales, y)
    with pytest.raises(ValueError, match=match):
        interval_coverage(means, scales, y)
    if match not in ("broadcast", "more entries", "positive"):  # rmse takes no scales
        with pytest.raises(ValueError, match=match):
            rmse(means, y)


def test_coverage_rejects_bad_levels_and_metrics_work_under_jit():
    for level in (0.0, 1.0, 1.5, -0.1, True, "0.9"):
        with pytest.raises(ValueError, match="level"):
            interval_coverage(np.zeros(3), 1.0, np.zeros(3), level)
    means = jnp.asarray(np.random.default_rng(3).normal(size=(5, 8)), jnp.float32)
    y = jnp.linspace(-1.0, 1.0, 8)
    eager = float(predictive_log_density(means, 0.8, y))
    assert float(jax.jit(predictive_log_density)(means, 0.8, y)) == pytest.approx(eager, rel=1e-6)
    assert float(jax.jit(rmse)(means, y)) == pytest.approx(float(rmse(means, y)), rel=1e-6)
    cover = jax.jit(interval_coverage, static_argnums=3)(means, 0.8, y, 0.9)
    assert float(cover) == float(interval_coverage(means, 0.8, y, 0.9))


# -- the reference predictive --------------------------------------------------------------
def test_ceiling_by_hand():
    same = np.stack([P, P, P])
    agree, tv = ceiling(same)
    np.testing.assert_array_equal(agree, 1.0)
    np.testing.assert_allclose(tv, 0.0, atol=1e-12)
    # Two chains: each is compared with the other.
    agree, tv = ceiling(np.stack([P, Q]))
    np.testing.assert_allclose(agree, [0.5, 0.5])
    np.testing.assert_allclose(tv, [0.325, 0.325])
    # Three chains: chain 0 against the mean of chains 1 and 2.
    chains = np.stack([P, Q, np.full_like(P, 0.5)])
    agree, tv = ceiling(chains)
    assert agree[0] == float(agreement(P, (Q + 0.5) / 2))
    assert tv[0] == pytest.approx(float(total_variation(P, (Q + 0.5) / 2)))
    with pytest.raises(ValueError, match="chains >= 2"):
        ceiling(P[None])


def _tiny_problem(prior_scale: float = 1.0):
    """A 2-3-3 tanh network on 24 points in three blobs (21 parameters)."""
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 1.5], [1.3, -0.8], [-1.3, -0.8]])
    y = np.arange(24) % 3
    x = (centres[y] + 0.9 * rng.normal(size=(24, 2))).astype(np.float32)
    x_test = (centres[np.arange(12) % 3] + 0.9 * rng.normal(size=(12, 2))).astype(np.float32)

    def logits_fn(params, x):
        return jnp.tanh(x @ params["w1"] + params["b1"]) @ params["w2"] + params["b2"]

    def logprior(params):
        return sum(-0.5 * jnp.sum(w**2) / prior_scale**2 for w in jax.tree.leaves(params))

    def loglik(params, batch):
        log_probs = jax.nn.log_softmax(logits_fn(params, batch["x"]), -1)
        return jnp.take_along_axis(log_probs, batch["y"][:, None], -1)[:, 0]

    init = {"w1": jnp.zeros((2, 3)), "b1": jnp.zeros(3), "w2": jnp.zeros((3, 3)), "b2": jnp.zeros(3)}
    target = sgmcmc.Target.from_data(logprior, loglik, {"x": x, "y": y.astype(np.int32)}, init, name="tiny")

    def random_init(key):
        leaves, treedef = jax.tree.flatten(init)
        keys = jax.random.split(key, len(leaves))
        return jax.tree.unflatten(treedef, [0.5 * jax.random.normal(k, w.shape) for k, w in zip(keys, leaves)])

    return target, logits_fn, x_test, random_init


SHORT = {"num_chains": 2, "num_warmup": 40, "num_samples": 20, "seed": 0, "map_steps": 20}


def test_reference_predictive_caches_reuses_and_invalidates(tmp_path):
    target, logits_fn, x_test, random_init = _tiny_problem()
    path = tmp_path / "ref.npz"
    ref = reference_predictive(target, logits_fn, x_test, init=random_init, cache=path, **SHORT)
    assert isinstance(ref, ReferencePredictive) and not ref.from_cache and path.exists()
    assert ref.probs.shape == (12, 3) and ref.chain_probs.shape == (2, 12, 3)
    np.testing.assert_allclose(ref.probs.sum(-1), 1.0, atol=1e-6)
    np.testing.assert_allclose(ref.probs, ref.chain_probs.mean(0))
    assert 0 <= ref.ceiling_agreement <= 1 and 0 <= ref.ceiling_tv <= 1
    assert ref.ceiling_agreement == pytest.approx(ref.chain_agreement.mean())
    assert ref.result is not None and ref.result.num_samples == 20
    diag = ref.diagnostics
    assert {"num_divergent", "step_size", "mean_tree_depth", "lp", "function_space", "timing"} <= set(diag)
    assert len(diag["step_size"]) == 2 and diag["timing"]["wall_s"] == ref.wall_time_s
    json.dumps(diag)  # JSON values only
    assert ref.settings["init"].startswith("init(key_c)") and ref.settings["num_params"] == 21
    metrics = ref.metrics(np.arange(12) % 3)
    assert set(metrics) == {"accuracy", "nll", "ece", "brier"} and 0 <= metrics["accuracy"] <= 1
    cmp = ref.compare(ref.chain_probs[0])
    assert 0 <= cmp["agreement"] <= 1 and cmp["ceiling_tv"] == ref.ceiling_tv

    # Same settings: loaded, nothing sampled, the same numbers.
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = reference_predictive(target, logits_fn, x_test, init=random_init, cache=path, **SHORT)
    assert again.from_cache and again.result is None and again.key == ref.key
    assert time.perf_counter() - start < 5
    np.testing.assert_array_equal(again.probs, ref.probs)
    np.testing.assert_array_equal(again.chain_probs, ref.chain_probs)
    assert (again.ceiling_agreement, again.ceiling_tv) == (ref.ceiling_agreement, ref.ceiling_tv)
    assert again.settings == ref.settings and again.diagnostics == ref.diagnostics

    # A changed setting: a warning naming it, a new run, the file overwritten.
    with pytest.warns(UserWarning, match="changed: num_samples"):
        longer = reference_predictive(
            target, logits_fn, x_test, init=random_init, cache=path, **{**SHORT, "num_samples": 24}
        )
    assert not longer.from_cache and longer.result.num_samples == 24 and longer.key != ref.key
    assert reference_predictive(
        target, logits_fn, x_test, init=random_init, cache=path, **{**SHORT, "num_samples": 24}
    ).from_cache

    # What else is in the key, checked without sampling: another prior (same data, same starting
    # points) is seen through the log-density fingerprint; other test inputs, data or starting points
    # through their bytes.
    base = reference_settings(target, logits_fn, x_test, init=random_init, **{**SHORT, "num_samples": 24})
    assert base == longer.settings
    assert hashlib.sha256(json.dumps(base, sort_keys=True).encode()).hexdigest() == longer.key
    other_prior, *_ = _tiny_problem(prior_scale=0.5)
    variants = {
        "function_fingerprint": reference_settings(other_prior, logits_fn, x_test, init=random_init, **SHORT),
        "x_test_sha256": reference_settings(target, logits_fn, x_test + 1e-3, init=random_init, **SHORT),
        "init_sha256": reference_settings(target, logits_fn, x_test, init=random_init, **{**SHORT, "seed": 1}),
        "data_sha256": reference_settings(
            target.with_data({**target.data, "x": target.data["x"][::-1]}), logits_fn, x_test, init=random_init, **SHORT
        ),
    }
    for name, settings in variants.items():
        assert settings[name] != ref.settings[name], name
    assert variants["function_fingerprint"]["init_sha256"] == ref.settings["init_sha256"]


def test_reference_predictive_rejects_bad_input():
    target, logits_fn, x_test, _ = _tiny_problem()
    with pytest.raises(ValueError, match="num_chains"):
        reference_predictive(target, logits_fn, x_test, num_chains=1)
    with pytest.raises(ValueError, match="nuts_options"):
        reference_predictive(target, logits_fn, x_test, nuts_options={"num_steps": 3})
    with pytest.raises(ValueError, match=r"\(n, K\)"):
        reference_predictive(target, lambda p, x: logits_fn(p, x)[:, 0], x_test)
    with pytest.raises(ValueError, match="x_test"):
        reference_predictive(target, logits_fn, np.full((3, 2), np.nan))
    with pytest.raises(ValueError, match="map_learning_rate"):
        reference_predictive(target, logits_fn, x_test, map_steps=5, map_learning_rate=-1.0)
    with pytest.raises(TypeError, match="Target"):
        reference_predictive(object(), logits_fn, x_test)
