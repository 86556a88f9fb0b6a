"""SWAG / MultiSWAG (Maddox et al. 2019) and iterate averaging on a Gaussian linear regression."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sgmcmc
from sgmcmc.swag_posterior import SWAGPosterior

K = 20


def correlated_regression(num_data=1000, seed=0):
    """``y = x . w + sigma(x) eps`` fitted by ``y ~ N(x . w, 1)``, ``w ~ N(0, 100 I)``; chains start at the mode.

    The noise grows with ``|x . v|^3`` along a random direction ``v``, so the per-example gradient
    covariance ``BB^T`` is ~7x larger along ``v`` than across it, and so is the covariance of
    constant-SGD iterates (``~ (eps / 2S) A^-1 BB^T`` with ``A ~ I``): a well-separated top direction.
    """
    rng = np.random.default_rng(seed)
    v = rng.normal(size=6)
    v /= np.linalg.norm(v)
    x = rng.normal(size=(num_data, 6))
    y = x @ rng.normal(size=6) + (0.3 + 2.0 * np.abs(x @ v) ** 3) * rng.normal(size=num_data)
    mode = np.linalg.solve(x.T @ x + np.eye(6) / 100.0, x.T @ y)

    def logprior(w):
        return -0.5 * jnp.sum(w**2) / 100.0

    def loglik(w, batch):
        return -0.5 * (batch["y"] - batch["x"] @ w) ** 2

    data = {"x": jnp.asarray(x, jnp.float32), "y": jnp.asarray(y, jnp.float32)}
    return x, y, sgmcmc.Target.from_data(logprior, loglik, data, jnp.asarray(mode, jnp.float32))


@pytest.fixture(scope="module")
def swag_run():
    x, y, target = correlated_regression()
    sampler = sgmcmc.swag(target, 0.1, batch_size=32, collect_every=30, max_rank=K)
    result = sgmcmc.sample(sampler, num_samples=6000, num_warmup=600, num_chains=2, seed=1, progress=False)
    return x, y, target, result


def test_swag_recovers_the_mean_and_top_directions_of_the_iterates(swag_run):
    _, _, _, result = swag_run
    post = sgmcmc.fit_swag(result)
    assert isinstance(post, SWAGPosterior)
    assert post.num_collected == 6000 // 30 and post.rank == K
    iterates = np.asarray(result.position, np.float64)
    for c in range(result.num_chains):
        chain = iterates[c]
        cov = np.cov(chain.T)
        evals, evecs = np.linalg.eigh(cov)
        # The SWA mean is the average of the collected iterates (every 30th): within a few standard
        # errors of the chain's mean along the widest direction (~35 effective draws, generous).
        se = np.sqrt(evals[-1] / 35)
        assert np.max(np.abs(post.mean[c] - chain.mean(0))) < 4 * se
        # The low-rank part D D^T / (K - 1) finds the top direction. For K independent Gaussian
        # deviations the squared sine between the sample and true top eigenvectors is about
        # sum_{j>1} lam_1 lam_j / (lam_1 - lam_j)^2 / (K - 1) (first-order perturbation); allow 5x.
        dev = post.deviations[c].astype(np.float64)
        low_vals, low_vecs = np.linalg.eigh(dev.T @ dev / (K - 1))
        expected_sin2 = np.sum(evals[-1] * evals[:-1] / (evals[-1] - evals[:-1]) ** 2) / (K - 1)
        sin2 = 1.0 - (evecs[:, -1] @ low_vecs[:, -1]) ** 2
        assert sin2 < 5 * expected_sin2 and expected_sin2 < 0.15, (c, sin2, expected_sin2)
        # Its top eigenvalue has the right size: a variance from 20 draws (chi-square with 19 dof:
        # 99.9% of ratios in [0.31, 2.2] for Gaussian deviations; these have heavier tails).
        assert 0.25 < low_vals[-1] / evals[-1] < 2.5
        # Sigma_diag is the variance of the collected iterates.
        np.testing.assert_allclose(post.variance[c], np.diag(cov), rtol=0.35)


def test_swag_draws_follow_the_fitted_gaussian_and_export_to_arviz(swag_run):
    _, _, target, result = swag_run
    post = sgmcmc.fit_swag(result)
    draws = post.sample(jax.random.key(0), 4000)
    assert draws.num_chains == 2 and draws.num_samples == 4000
    flat = np.asarray(draws.position, np.float64)
    for c in range(2):
        np.testing.assert_allclose(flat[c].mean(0), post.mean[c], atol=4 * np.sqrt(post.covariance(c).max() / 4000))
        # Sample covariance of 4000 draws against the published 1/2 (diag + D D^T / (K - 1)).
        want = post.covariance(c)
        got = np.cov(flat[c].T)
        scale = np.sqrt(np.outer(np.diag(want), np.diag(want)))
        assert np.max(np.abs(got - want) / scale) < 0.15
    np.testing.assert_allclose(
        np.cov(np.asarray(post.sample(jax.random.key(1), 4000, low_rank=False).position)[0].T),
        np.diag(post.variance[0]),
        atol=0.15 * post.variance[0].max(),
    )
    # Full-data log density of each draw, and ArviZ like any MCMC result.
    lp = jax.vmap(target.logdensity)(jnp.asarray(draws.position[0, :5]))
    np.testing.assert_allclose(draws.info.logdensity[0, :5], lp, rtol=1e-5)
    idata = draws.to_arviz()
    assert idata.posterior.sizes["chain"] == 2 and idata.posterior.sizes["draw"] == 4000
    assert "log_likelihood" in idata.groups()
    # MultiSWAG: one Gaussian per chain; the deep-ensemble view is the SWA means.
    ens = post.swa_means()
    np.testing.assert_allclose(np.asarray(ens), post.mean)


def test_refresh_hook_sees_every_draw(swag_run):
    _, _, _, result = swag_run
    post = sgmcmc.fit_swag(result)
    draws = post.sample(jax.random.key(0), 10, refresh=lambda p, key: p.at[0].set(7.0), logdensity=False)
    assert np.all(np.asarray(draws.position)[..., 0] == 7.0)


def test_iterate_average_estimates_the_posterior_mean(swag_run):
    x, y, _, result = swag_run
    avg = sgmcmc.iterate_average(result, covariance="full")
    precision = x.T @ x + np.eye(x.shape[1]) / 100.0
    mode = np.linalg.solve(precision, x.T @ y)
    z = (avg.flat_mean - mode) / avg.standard_error
    assert np.max(np.abs(z)) < 4.5, z
    assert avg.covariance.shape == (x.shape[1],) * 2 and avg.num_iterates == 12000
    diag = sgmcmc.iterate_average(result)
    np.testing.assert_allclose(diag.covariance, np.diag(avg.covariance))


def test_collection_starts_after_warmup_and_every_collect_every_steps():
    _, _, target = correlated_regression()
    sampler = sgmcmc.swag(target, 0.01, batch_size=32, collect_every=7, max_rank=3)
    result = sgmcmc.sample(sampler, num_samples=50, num_warmup=30, num_chains=1, seed=0, progress=False)
    moments = result.last_state.moments
    assert int(moments.num_collected[0]) == 50 // 7
    iterates = np.asarray(result.position[0], np.float64)
    collected = iterates[6::7][: 50 // 7]
    np.testing.assert_allclose(moments.mean[0], collected.mean(0), rtol=1e-5, atol=1e-6)
    # Ring buffer of the last K = 3 deviations from the running mean.
    running = np.cumsum(collected, 0) / np.arange(1, len(collected) + 1)[:, None]
    last = (collected - running)[-3:]
    rows = np.asarray(moments.deviations[0])
    for dev in last:
        assert np.min(np.max(np.abs(rows - dev), axis=1)) < 1e-5


def test_bad_input():
    _, _, target = correlated_regression()
    with pytest.raises(ValueError, match="max_rank"):
        sgmcmc.swag(target, 0.01, batch_size=32, max_rank=1)
    with pytest.raises(ValueError, match="learning_rate"):
        sgmcmc.swag(target, 0.0, batch_size=32)
    with pytest.raises(ValueError, match="collect_every"):
        sgmcmc.swag(target, 0.01, batch_size=32, collect_every=0)
    with pytest.raises(ValueError, match="num_warmup"):
        sgmcmc.sample(sgmcmc.swag(target, "optimal", batch_size=32), num_samples=5, seed=0, progress=False)
    short = sgmcmc.sample(
        sgmcmc.swag(target, 0.01, batch_size=32, collect_every=100), num_samples=50, seed=0, progress=False
    )
    with pytest.raises(ValueError, match="at least 2"):
        sgmcmc.fit_swag(short)
    sgd = sgmcmc.sample(sgmcmc.constant_sgd(target, 0.01, batch_size=32), num_samples=5, seed=0, progress=False)
    with pytest.raises(ValueError, match=r"sgmcmc\.swag"):
        sgmcmc.fit_swag(sgd)
    post = sgmcmc.fit_swag(
        sgmcmc.sample(sgmcmc.swag(target, 0.01, batch_size=32, collect_every=1), num_samples=5, seed=0, progress=False)
    )
    with pytest.raises(ValueError, match="num_samples"):
        post.sample(jax.random.key(0), 0)
    with pytest.raises(ValueError, match="scale"):
        post.sample(jax.random.key(0), 5, scale=-1.0)
    with pytest.raises(ValueError, match="covariance"):
        sgmcmc.iterate_average(sgd, covariance="dense")
