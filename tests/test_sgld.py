"""SGLD's stationary variance matches theory at temperatures 1 and 2.

Tolerance. SGLD has no Metropolis test, so with a fixed step size it is biased,
and for a Gaussian target the bias is known in closed form. For
log pi(x) = -x^2 / (2 s^2) the full-batch update is the AR(1) recursion

    x' = (1 - a) x + sqrt(eps T) xi,    a = eps / (2 s^2),

whose stationary variance is v = eps T / (1 - (1 - a)^2) = T s^2 / (1 - eps / (4 s^2)).
So the discretisation bias relative to the tempered target T s^2 is
eps / (4 s^2) / (1 - eps / (4 s^2)) (about 2.6% for the step sizes below), and its
autocorrelation is rho = 1 - a, giving an ESS of about n (1 - rho) / (1 + rho).

Each test checks (1) the empirical variance against the exact discretised value v within
4 Monte Carlo standard errors (ESS-based), which would fail if the noise scale, the
temperature or the gradient scaling were wrong, and (2) that it is within the
predicted bias plus 4 MCSE of T s^2, i.e. that SGLD is close to pi^(1/T).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import (
    assert_stationary_variance,
    linear_regression_posterior,
    mean_z,
    minibatch_sgld_covariance,
    var_z,
)

import sgmcmc


def stationary_variance(s2, eps, temperature):
    return temperature * s2 / (1.0 - eps / (4.0 * s2))


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_sgld_1d_gaussian(temperature):
    s2, eps = 2.0, 0.2
    target = sgmcmc.Target.from_logdensity(lambda x: -0.5 * x**2 / s2, jnp.zeros(()))
    sampler = sgmcmc.sgld(target, eps, temperature=temperature)
    result = sgmcmc.sample(sampler, num_samples=20000, num_warmup=500, num_chains=4, seed=5, progress=False)
    draws = np.asarray(result.samples)
    v = stationary_variance(s2, eps, temperature)
    assert abs(mean_z(draws, 0.0)) < 4
    assert abs(var_z(draws, v)) < 4
    # Close to the tempered target: the relative bias is eps / (4 s^2) / (1 - eps / (4 s^2)).
    assert abs(var_z(draws, temperature * s2 * (1 + (eps / (4 * s2)) / (1 - eps / (4 * s2))))) < 4
    assert abs(draws.var() / (temperature * s2) - 1) < 0.08


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_sgld_10d_gaussian(temperature):
    s2 = jnp.linspace(0.5, 2.0, 10)
    eps = 0.05
    target = sgmcmc.Target.from_logdensity(lambda p: -0.5 * jnp.sum(p["x"] ** 2 / s2), {"x": jnp.zeros(10)})
    sampler = sgmcmc.sgld(target, eps, temperature=temperature)
    result = sgmcmc.sample(sampler, num_samples=10000, num_warmup=500, num_chains=4, thin=2, seed=6, progress=False)
    draws = np.asarray(result.samples["x"])
    for i in range(10):
        v = stationary_variance(float(s2[i]), eps, temperature)
        assert abs(mean_z(draws[..., i], 0.0)) < 4, i
        assert abs(var_z(draws[..., i], v)) < 4, i


def test_sgld_temperature_zero_is_gradient_ascent():
    target = sgmcmc.Target.from_logdensity(lambda x: -0.5 * jnp.sum((x - 3.0) ** 2), jnp.zeros(2))
    result = sgmcmc.sample(
        sgmcmc.sgld(target, 0.1, temperature=0.0), num_samples=300, num_chains=1, seed=0, progress=False
    )
    np.testing.assert_allclose(result.samples[0, -1], [3.0, 3.0], atol=1e-3)


def test_sgld_minibatch_linear_regression_matches_closed_form(linear_regression_target):
    """Minibatch SGLD on a linear regression with a known Gaussian posterior.

    Tolerance: the update is linear in theta with a random (minibatch) matrix, so the
    chain's stationary law is known exactly (``minibatch_sgld_covariance`` in conftest):
    its mean is the posterior mean (no bias), and its covariance solves a linear system
    that includes both the discretisation bias and the minibatch noise. The draws must
    match that within 4 Monte Carlo standard errors (ESS-based), and so be within that
    known bias plus 4 MCSE of the exact posterior variance.
    """
    target = linear_regression_target
    eps, batch_size = 2e-3, 16
    mean, cov = minibatch_sgld_covariance(target, eps, batch_size)
    _, post_cov = linear_regression_posterior(target)
    sampler = sgmcmc.sgld(target, eps, batch_size=batch_size)
    result = sgmcmc.sample(sampler, num_samples=20000, num_warmup=1000, num_chains=4, seed=2, progress=False)
    draws = np.concatenate(
        [np.asarray(result.samples["w"]), np.asarray(result.samples["bias"]["b"])[..., None]], axis=-1
    )
    for i in range(4):
        assert abs(mean_z(draws[..., i], mean[i])) < 4, i
    assert_stationary_variance(draws, np.diag(cov), np.diag(post_cov), label="minibatch SGLD")
    # The minibatch noise inflates the variance (here by 50-120%): the test can tell.
    assert np.all(np.diag(cov) > 1.1 * np.diag(post_cov))


def test_sgld_temperature_zero_equals_optax_sgd(linear_regression_target):
    """T = 0: SGLD with step size eps is optax.sgd(eps / 2) on -log pi, same minibatches."""
    import jax
    import optax

    from sgmcmc import noise

    target = linear_regression_target
    eps, batch_size, num_steps = 1e-3, 8, 50
    sampler = sgmcmc.sgld(target, eps, batch_size=batch_size, temperature=0.0)
    keys = jax.random.split(jax.random.key(11), num_steps)
    scale = target.num_data / batch_size

    def loss(params, batch):
        return -(target.logprior_fn(params) + scale * jnp.sum(target.loglik_fn(params, batch)))

    optimizer = optax.sgd(eps / 2)

    @jax.jit
    def run(params):
        def body(carry, key):
            state, params, opt_state = carry
            state, _ = sampler.step(key, state)
            idx = noise.uniform_indices(key, batch_size, target.num_data)
            batch = jax.tree.map(lambda x: x[idx], target.data)
            updates, opt_state = optimizer.update(jax.grad(loss)(params, batch), opt_state)
            params = optax.apply_updates(params, updates)
            return (state, params, opt_state), (state.position, params)

        init = (sampler.init(params), params, optimizer.init(params))
        return jax.lax.scan(body, init, keys)[1]

    ours, theirs = run(target.initial_position)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert float(jnp.abs(ours["w"][-1] - ours["w"][0]).max()) > 0.1  # it moved


def test_sgld_schedule_step_size():
    import optax

    target = sgmcmc.Target.from_logdensity(lambda x: -0.5 * x**2, jnp.zeros(()))
    schedule = optax.polynomial_schedule(0.5, 0.01, power=1.0, transition_steps=100)
    result = sgmcmc.sample(sgmcmc.sgld(target, schedule), num_samples=150, num_chains=1, seed=0, progress=False)
    steps = np.asarray(result.info.step_size[0])
    np.testing.assert_allclose(steps[0], float(schedule(0)), rtol=1e-6)
    np.testing.assert_allclose(steps[50], float(schedule(50)), rtol=1e-6)
    np.testing.assert_allclose(steps[-1], 0.01, rtol=1e-5)
