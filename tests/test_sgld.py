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
from conftest import mean_z, var_z

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


def test_sgld_minibatch_linear_regression_close_to_posterior(linear_regression_target):
    """Minibatch SGLD lands near the exact Gaussian posterior of a linear regression.

    SGLD is approximate: its posterior mean should match within a few posterior sds,
    and its variances are inflated by the minibatch noise, not shrunk.
    """
    target = linear_regression_target
    x = np.asarray(target.data["x"], np.float64)
    design = np.concatenate([x, np.ones((x.shape[0], 1))], axis=1)
    precision = design.T @ design / 0.25 + np.eye(4)
    cov = np.linalg.inv(precision)
    mean = cov @ design.T @ np.asarray(target.data["y"], np.float64) / 0.25
    sampler = sgmcmc.sgld(target, 2e-3, batch_size=16)
    result = sgmcmc.sample(sampler, num_samples=4000, num_warmup=1000, num_chains=4, seed=2, progress=False)
    w = np.asarray(result.samples["w"]).reshape(-1, 3)
    b = np.asarray(result.samples["bias"]["b"]).reshape(-1, 1)
    draws = np.concatenate([w, b], axis=1)
    sd = np.sqrt(np.diag(cov))
    assert np.all(np.abs(draws.mean(0) - mean) < 0.5 * sd)
    ratio = draws.std(0) / sd
    assert np.all(ratio > 0.8) and np.all(ratio < 2.0), ratio


def test_sgld_schedule_step_size():
    import optax

    target = sgmcmc.Target.from_logdensity(lambda x: -0.5 * x**2, jnp.zeros(()))
    schedule = optax.polynomial_schedule(0.5, 0.01, power=1.0, transition_steps=100)
    result = sgmcmc.sample(sgmcmc.sgld(target, schedule), num_samples=150, num_chains=1, seed=0, progress=False)
    steps = np.asarray(result.info.step_size[0])
    np.testing.assert_allclose(steps[0], float(schedule(0)), rtol=1e-6)
    np.testing.assert_allclose(steps[50], float(schedule(50)), rtol=1e-6)
    np.testing.assert_allclose(steps[-1], 0.01, rtol=1e-5)
