"""BAOAB: stationary law at temperatures 1 and 2 (exact for Gaussians), the T = 0 limit.

Tolerance. With the exact gradient of a Gaussian coordinate of variance s^2, one BAOAB
step is a linear map of (theta, p) plus Gaussian noise; solving its discrete Lyapunov
equation gives Var(theta) = T s^2 exactly, for any friction and any step size below the
stability limit h < 2 s (Leimkuhler & Matthews 2013: BAOAB samples a harmonic
potential's configurations without bias). So the prediction *is* T s^2 and the
tolerance is 4 Monte Carlo standard errors (ESS-based), at a step size h = 1.0 where
SGLD with the same per-step drift (eps = h^2) would inflate the variance by 14-100%.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import S2_10D, assert_stationary_variance, gaussian_10d_target

import sgmcmc
from sgmcmc import noise


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_baoab_stationary_variance_is_exact_for_gaussians(temperature):
    sampler = sgmcmc.baoab(gaussian_10d_target(), 1.0, friction=1.0, temperature=temperature)
    result = sgmcmc.sample(sampler, num_samples=50000, num_warmup=500, num_chains=4, seed=8, progress=False)
    draws = np.asarray(result.samples["x"])
    tempered = temperature * S2_10D
    assert_stationary_variance(draws, tempered, tempered, label=f"BAOAB T={temperature}")
    # SGLD's discretised variance at eps = h^2 = 1 is T s^2 / (1 - 1 / (4 s^2)): BAOAB is not it.
    sgld_like = tempered / (1.0 - 1.0 / (4.0 * S2_10D))
    assert np.all(np.abs(draws.var(axis=(0, 1)) - tempered) < 0.5 * np.abs(sgld_like - tempered))


def test_baoab_step_is_the_rotated_splitting():
    """One step by hand: A, O, A, then a full kick with the gradient at the new point."""
    target = gaussian_10d_target(start=1.0)
    h, gamma, temperature = 0.3, 2.0, 1.5
    sampler = sgmcmc.baoab(target, h, friction=gamma, temperature=temperature)
    state = sampler.init(target.initial_position)
    state = state._replace(momentum={"x": jnp.linspace(-1.0, 1.0, 10)})
    key = jax.random.key(2)
    new, info = sampler.step(key, state)
    c = np.exp(-gamma * h)
    z = np.asarray(noise.normal_like(key, state.position)["x"])
    p0 = np.asarray(state.momentum["x"])
    p_o = c * p0 + np.sqrt((1 - c**2) * temperature) * z
    theta = 1.0 + 0.5 * h * p0 + 0.5 * h * p_o
    p1 = p_o + h * (-theta / S2_10D)
    np.testing.assert_allclose(new.position["x"], theta, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(new.momentum["x"], p1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(info.logdensity, -0.5 * np.sum(theta**2 / S2_10D), rtol=1e-5)
    assert int(info.num_grad_evals) == 1


def test_baoab_temperature_zero_finds_the_mode():
    target = sgmcmc.Target.from_logdensity(lambda x: -0.5 * jnp.sum((x - 3.0) ** 2), jnp.zeros(2))
    result = sgmcmc.sample(
        sgmcmc.baoab(target, 0.5, friction=1.0, temperature=0.0), num_samples=300, num_chains=1, seed=0, progress=False
    )
    np.testing.assert_allclose(result.samples[0, -1], [3.0, 3.0], atol=1e-4)
