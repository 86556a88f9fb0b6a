"""SGLD-CV: control variates, chunked full-data gradients, SVRG refreshes, stationary laws.

Tolerances.

* Gaussian-mean model (x_i ~ N(mu, diag(sigma^2)), flat-ish prior): every example's
  log-likelihood has the same Hessian, so the control variate cancels the minibatch
  noise exactly and SGLD-CV is full-batch SGLD on a Gaussian posterior with variances
  s_i^2: its stationary variance is T s^2 / (1 - eps / (4 s^2)) (AR(1), see test_sgld),
  checked within 4 Monte Carlo standard errors (ESS-based), as SGLD's.
* Linear regression: the update is linear with a random minibatch matrix, and the
  stationary covariance of SGLD-CV around a centre solves a linear system
  (``minibatch_sgld_covariance`` in conftest); the gradient variances of both estimators
  are also known in closed form: (N^2 / n) Cov_i(grad log p(x_i | theta)) for the plain
  estimator and (N^2 / n) Cov_i(X_i (theta - theta_hat)) for the control variate.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import (
    S2_10D,
    assert_stationary_variance,
    linear_regression_arrays,
    linear_regression_posterior,
    mean_z,
    minibatch_sgld_covariance,
    variance_se,
)

import sgmcmc
from sgmcmc.gradients import control_variate, control_variate_centre, full_data_gradient, minibatch

PRIOR_VAR = 100.0


def gaussian_mean_target(num_data: int = 100):
    """x_i ~ N(mu, diag(sigma^2)), mu ~ N(0, 100 I): posterior variances exactly S2_10D."""
    sigma2 = num_data / (1.0 / S2_10D - 1.0 / PRIOR_VAR)
    rng = np.random.default_rng(1)
    x = (1.5 + np.sqrt(sigma2) * rng.normal(size=(num_data, 10))).astype(np.float32)
    sigma2_j = jnp.asarray(sigma2, jnp.float32)

    def logprior(p):
        return -0.5 * jnp.sum(p["mu"] ** 2) / PRIOR_VAR

    def loglik(p, batch):
        return -0.5 * jnp.sum((batch["x"] - p["mu"]) ** 2 / sigma2_j, axis=-1)

    post_mean = (x.astype(np.float64).sum(0) / sigma2) * S2_10D
    target = sgmcmc.Target.from_data(logprior, loglik, {"x": x}, {"mu": jnp.zeros(10)}, name="gaussian_mean")
    return target, post_mean


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_sgld_cv_is_full_batch_sgld_on_a_gaussian_mean(temperature):
    target, post_mean = gaussian_mean_target()
    eps = 0.05
    centre = {"mu": jnp.asarray(post_mean, jnp.float32)}
    # chunk_size 32 does not divide N = 100: the last chunk is masked.
    sampler = sgmcmc.sgld_cv(target, eps, batch_size=10, centre=centre, chunk_size=32, temperature=temperature)
    result = sgmcmc.sample(sampler, num_samples=40000, num_warmup=500, num_chains=4, seed=12, progress=False)
    draws = np.asarray(result.samples["mu"])
    tempered = temperature * S2_10D
    assert_stationary_variance(draws, tempered / (1 - eps / (4 * S2_10D)), tempered, label=f"SGLD-CV T={temperature}")
    for i in range(10):
        assert abs(mean_z(draws[..., i], post_mean[i])) < 4, i
    assert np.all(np.asarray(result.info.num_grad_evals) == 2)


def test_full_data_gradient_in_chunks(linear_regression_target):
    target = linear_regression_target
    position = {"w": jnp.array([0.3, -0.2, 0.1]), "bias": {"b": jnp.array(0.4)}}
    value, grad = jax.value_and_grad(target.logdensity)(position)
    for chunk_size in (None, 10, 64, 1000):  # 7 chunks with a masked remainder, one chunk, N < chunk
        est = jax.jit(lambda p, c=chunk_size: full_data_gradient(target, p, chunk_size=c))(position)
        np.testing.assert_allclose(est.value, value, rtol=1e-5)
        for a, b in zip(jax.tree.leaves(est.grad), jax.tree.leaves(grad)):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    # Under vmap, chains whose `active` is false get the prior only; the loop runs while any is active.
    positions = jax.tree.map(lambda x: jnp.stack([x, x]), position)
    active = jnp.array([True, False])
    est = jax.jit(jax.vmap(lambda p, a: full_data_gradient(target, p, chunk_size=10, active=a)))(positions, active)
    np.testing.assert_allclose(est.value[0], value, rtol=1e-5)
    np.testing.assert_allclose(est.value[1], target.logprior_fn(position), rtol=1e-6)


def test_control_variate_is_unbiased_and_has_lower_variance(linear_regression_target):
    """Measured gradient variances of both estimators match their closed forms; CV's is far lower."""
    target = linear_regression_target
    design, y, noise_var = linear_regression_arrays(target)
    mean, cov = linear_regression_posterior(target)
    centre = {"w": jnp.asarray(mean[:3], jnp.float32), "bias": {"b": jnp.asarray(mean[3], jnp.float32)}}
    cv = jax.jit(lambda p: control_variate_centre(target, p, chunk_size=16))(centre)
    batch_size, num_keys = 8, 20000
    plain_est, cv_est = minibatch(target, batch_size), control_variate(target, batch_size, cv)
    # A point one posterior sd away from the centre in every coordinate.
    theta = mean + np.sqrt(np.diag(cov))
    position = {"w": jnp.asarray(theta[:3], jnp.float32), "bias": {"b": jnp.asarray(theta[3], jnp.float32)}}
    keys = jax.random.split(jax.random.key(0), num_keys)

    def flat(tree):
        return jnp.concatenate([tree["w"], tree["bias"]["b"][..., None]], axis=-1)

    exact = np.asarray(flat(jax.grad(target.logdensity)(position)), np.float64)
    per_example = design * ((y - design @ theta) / noise_var)[:, None]
    closed = {
        "plain": design.shape[0] ** 2 / batch_size * np.var(per_example, axis=0),
        "cv": design.shape[0] ** 2
        / batch_size
        * np.var(design * (design @ (theta - mean))[:, None] / noise_var, axis=0),
    }
    measured = {}
    for name, est in (("plain", plain_est), ("cv", cv_est)):
        grads = np.asarray(jax.jit(jax.vmap(lambda k, e=est: flat(e.estimate(k, position).grad)))(keys), np.float64)
        se = grads.std(0) / np.sqrt(num_keys)
        assert np.all(np.abs(grads.mean(0) - exact) < 4 * se + 1e-4 * np.abs(exact)), name  # unbiased
        measured[name] = grads.var(0)
        # The sample variance of 20,000 draws is within 4 x sqrt(2 / n) (x kurtosis slack 2) of the truth.
        np.testing.assert_allclose(measured[name], closed[name], rtol=8 * math.sqrt(2 / num_keys) * 2)
    ratio = measured["cv"].sum() / measured["plain"].sum()
    assert ratio < 0.1, ratio  # measured ~0.02 here: one sd from the mode, at n = 8


def test_sgld_cv_linear_regression_matches_closed_form(linear_regression_target):
    target = linear_regression_target
    eps, batch_size = 2e-3, 16
    mean, _ = linear_regression_posterior(target)
    centre_np = mean + 0.05  # a centre slightly off the mode: the CV noise is small but not zero
    centre = {"w": jnp.asarray(centre_np[:3], jnp.float32), "bias": {"b": jnp.asarray(centre_np[3], jnp.float32)}}
    _, cov_cv = minibatch_sgld_covariance(target, eps, batch_size, centre=centre_np)
    _, cov_plain = minibatch_sgld_covariance(target, eps, batch_size)
    _, post_cov = linear_regression_posterior(target)
    sampler = sgmcmc.sgld_cv(target, eps, batch_size=batch_size, centre=centre)
    result = sgmcmc.sample(sampler, num_samples=20000, num_warmup=1000, num_chains=4, seed=2, progress=False)
    draws = np.concatenate(
        [np.asarray(result.samples["w"]), np.asarray(result.samples["bias"]["b"])[..., None]], axis=-1
    )
    for i in range(4):
        assert abs(mean_z(draws[..., i], mean[i])) < 4, i
    assert_stationary_variance(draws, np.diag(cov_cv), np.diag(post_cov), label="SGLD-CV")
    # Control variates remove most of the minibatch inflation that plain SGLD has at these settings
    # (what remains is mostly the discretisation bias): the draws are measurably below plain SGLD's law.
    for i in range(4):
        x = draws[..., i]
        assert x.var() + 4 * variance_se(x) < cov_plain[i, i], i


def test_svrg_refresh_moves_the_centre(linear_regression_target):
    target = linear_regression_target
    batch_size, every = 16, 5
    sampler = sgmcmc.sgld_cv(target, 1e-3, batch_size=batch_size, refresh_every=every, chunk_size=20)
    state = sampler.init(target.initial_position)  # centre at the initial position
    np.testing.assert_allclose(state.control_variate.logdensity, target.logdensity(target.initial_position), rtol=1e-5)
    step = jax.jit(sampler.step)
    full_pass = math.ceil(target.num_data / batch_size)
    for t in range(12):
        before = state.position
        state, info = step(jax.random.key(t), state)
        refreshed = t > 0 and t % every == 0
        assert int(info.num_grad_evals) == 2 + (full_pass if refreshed else 0), t
        if refreshed:
            centre = state.control_variate.centre
            for a, b in zip(jax.tree.leaves(centre), jax.tree.leaves(before)):
                np.testing.assert_array_equal(a, b)
            value, grad = jax.value_and_grad(target.logdensity)(before)
            np.testing.assert_allclose(state.control_variate.logdensity, value, rtol=1e-5)
            for a, b in zip(jax.tree.leaves(state.control_variate.grad), jax.tree.leaves(grad)):
                np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-3)
    # Vmapped chains refresh on the same steps and agree with their unbatched runs.
    result = sgmcmc.sample(sampler, num_samples=12, num_chains=3, seed=0, progress=False)
    assert np.asarray(result.info.num_grad_evals).sum(axis=1).tolist() == [12 * 2 + 2 * full_pass] * 3
