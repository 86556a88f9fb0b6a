"""Kernel Stein discrepancy and the KSD step-size tuner."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sgmcmc
from sgmcmc.diagnostics.ksd import flatten_draws, imq_stein_kernel, kernel_stein_discrepancy, scores_at
from sgmcmc.tuning import tune_step_size_ksd


def direct_ksd(x, s, c=1.0, beta=-0.5):
    """The O(n^2) double loop over the Stein kernel, in float64."""
    with jax.enable_x64(True):
        x = jnp.asarray(x, jnp.float64)
        s = jnp.asarray(s, jnp.float64)
        k = jax.vmap(lambda a, sa: jax.vmap(lambda b, sb: imq_stein_kernel(a, b, sa, sb, c, beta))(x, s))(x, s)
        return float(np.sqrt(np.mean(np.asarray(k))))


@pytest.mark.parametrize("n, d, block", [(37, 3, 8), (50, 1, 50), (64, 7, 5)])
@pytest.mark.parametrize("c, beta", [(1.0, -0.5), (0.5, -0.3)])
def test_matches_the_direct_computation(n, d, block, c, beta):
    rng = np.random.default_rng(n + d)
    x = rng.normal(size=(n, d))
    s = -x + 0.3 * rng.normal(size=(n, d))
    got = kernel_stein_discrepancy(x, s, c=c, beta=beta, block_size=block)
    assert got == pytest.approx(direct_ksd(x, s, c, beta), rel=1e-10)
    # A coordinate scale is the KSD of x / scale with scores s * scale.
    scale = np.linspace(0.5, 2.0, d)
    scaled = kernel_stein_discrepancy(x, s, c=c, beta=beta, block_size=block, scale=scale)
    assert scaled == pytest.approx(direct_ksd(x / scale, s * scale, c, beta), rel=1e-10)
    # float32 accumulation is close on well-scaled inputs.
    assert kernel_stein_discrepancy(x, s, c=c, beta=beta, float64=False) == pytest.approx(got, rel=1e-4)


def gaussian_data_target(num_data=200, dim=2, seed=0):
    """``y ~ N(X w, 1)``, ``w ~ N(0, 100 I)``: a Gaussian posterior with known moments, starting at its mode."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(num_data, dim)) * np.linspace(1.0, 2.0, dim)
    y = x @ rng.normal(size=dim) + rng.normal(size=num_data)
    precision = x.T @ x + np.eye(dim) / 100.0
    mean = np.linalg.solve(precision, x.T @ y)

    def loglik(w, batch):
        return -0.5 * (batch["y"] - batch["x"] @ w) ** 2

    target = sgmcmc.Target.from_data(
        lambda w: -0.5 * jnp.sum(w**2) / 100.0,
        loglik,
        {"x": jnp.asarray(x, jnp.float32), "y": jnp.asarray(y, jnp.float32)},
        jnp.asarray(mean, jnp.float32),
    )
    return target, mean, np.linalg.inv(precision)


def test_exact_draws_score_lower_than_biased_sgld():
    target, mean, cov = gaussian_data_target()
    n = 1000
    chol = np.linalg.cholesky(cov)
    exact = mean + np.random.default_rng(1).normal(size=(n, 2)) @ chol.T
    lam_max = 1.0 / np.linalg.eigvalsh(cov)[0]
    # SGLD with eps * lam_max = 1.6 inflates the stiff direction's variance by 1/(1 - 1.6/4) = 1.67.
    sampler = sgmcmc.sgld(target, 1.6 / lam_max, batch_size=50)
    result = sgmcmc.sample(sampler, num_samples=n, num_warmup=200, thin=5, num_chains=1, seed=0, progress=False)
    biased = flatten_draws(jax.tree.map(lambda a: a[0], result.position))
    ksd_exact = kernel_stein_discrepancy(exact, scores_at(target, jnp.asarray(exact, jnp.float32)))
    ksd_biased = kernel_stein_discrepancy(biased, scores_at(target, result.position[0]))
    assert ksd_exact < 0.5 * ksd_biased, (ksd_exact, ksd_biased)
    # Minibatch-estimated scores rank them the same way.
    key = jax.random.key(0)
    mb_exact = kernel_stein_discrepancy(
        exact, scores_at(target, jnp.asarray(exact, jnp.float32), batch_size=100, key=key)
    )
    mb_biased = kernel_stein_discrepancy(biased, scores_at(target, result.position[0], batch_size=100, key=key))
    assert mb_exact < mb_biased


def test_tuner_avoids_both_too_small_and_too_large_steps():
    target, _, cov = gaussian_data_target()
    lam_max = 1.0 / np.linalg.eigvalsh(cov)[0]
    grid = np.geomspace(1e-3, 3.0, 8) / lam_max  # eps * lam_max from 0.001 (barely moves) to 3 (heavily biased)
    sampler = sgmcmc.sgld(target, float(grid[0]), batch_size=50)
    tuned = tune_step_size_ksd(sampler, grid, num_steps=3000, num_draws=300, num_chains=2, seed=0)
    assert tuned.ksd.shape == (8,) and np.all(tuned.divergent == 0)
    best = int(np.argmin(tuned.ksd))
    assert 0 < best < 7, tuned.ksd  # neither end of the grid
    assert tuned.step_size == grid[best]
    assert tuned.ksd[best] < 0.5 * tuned.ksd[0] and tuned.ksd[best] < 0.5 * tuned.ksd[-1]
    # The kept draws of the chosen step size have about the posterior's spread.
    draws = np.asarray(tuned.draws[best])
    np.testing.assert_allclose(draws.std(0), np.sqrt(np.diag(cov)), rtol=0.5)


def test_tuner_marks_divergent_step_sizes():
    target, _, cov = gaussian_data_target()
    lam_max = 1.0 / np.linalg.eigvalsh(cov)[0]
    sampler = sgmcmc.sgld(target, 0.1 / lam_max, batch_size=50)
    tuned = tune_step_size_ksd(sampler, [0.1 / lam_max, 1e6 / lam_max], num_steps=400, num_draws=50, seed=0)
    assert np.isfinite(tuned.ksd[0]) and np.isinf(tuned.ksd[1]) and tuned.divergent[1] > 0
    assert tuned.step_size == pytest.approx(0.1 / lam_max)


def test_bad_input():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(10, 2))
    with pytest.raises(ValueError, match="scores"):
        kernel_stein_discrepancy(x, x[:, :1])
    with pytest.raises(ValueError, match="finite"):
        kernel_stein_discrepancy(np.where(x > 1, np.nan, x), x)
    with pytest.raises(ValueError, match="beta"):
        kernel_stein_discrepancy(x, x, beta=0.5)
    with pytest.raises(ValueError, match="scale"):
        kernel_stein_discrepancy(x, x, scale=[1.0, 0.0])
    with pytest.raises(ValueError, match="at least 2"):
        kernel_stein_discrepancy(x[:1], x[:1])
    target, _, _ = gaussian_data_target()
    sampler = sgmcmc.sgld(target, 1e-3, batch_size=50)
    with pytest.raises(ValueError, match="step_sizes"):
        tune_step_size_ksd(sampler, [1e-3, -1.0])
    with pytest.raises(ValueError, match="num_draws"):
        tune_step_size_ksd(sampler, [1e-3], num_steps=100, num_draws=80)
    with pytest.raises(ValueError, match="exact sampler"):
        tune_step_size_ksd(sgmcmc.nuts(target), [1e-3], num_steps=100, num_draws=10)
    with pytest.raises(ValueError, match="step_size"):
        tune_step_size_ksd(sgmcmc.constant_sgd(target, 0.1, batch_size=50), [1e-3], num_steps=100, num_draws=10)
