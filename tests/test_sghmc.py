"""SGHMC: stationary law at temperatures 1 and 2, its momentum's temperature, the T = 0 limit.

Tolerance. With the exact gradient of a Gaussian coordinate of variance s^2 (gradient
-theta / s^2), SGHMC is the linear recursion

    v' = (1 - alpha) v - (eta / s^2) theta + sqrt(2 alpha eta T) xi,    theta' = theta + v',

whose stationary covariance solves a 2 x 2 discrete Lyapunov equation:

    Var(theta) = T s^2 / (1 - eta / (2 s^2 (2 - alpha))),
    Var(v)     = eta T / (1 - alpha / 2 - eta / (4 s^2)).

At eta = 0.1, alpha = 0.5 the position's discretisation bias is 1.7-6.7% over the
coordinates (s^2 from 0.5 to 2), larger than the Monte Carlo error (about 1%), so the
test sees it: the draws must match the discretised variance within 4 MCSE (ESS-based)
and be within that bias plus 4 MCSE of T s^2.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import S2_10D, assert_stationary_variance, gaussian_10d_target

import sgmcmc
from sgmcmc import noise

ETA, ALPHA = 0.1, 0.5


def theta_variance(s2, eta, alpha, temperature):
    return temperature * s2 / (1.0 - eta / (2.0 * s2 * (2.0 - alpha)))


def momentum_variance(s2, eta, alpha, temperature):
    return eta * temperature / (1.0 - alpha / 2.0 - eta / (4.0 * s2))


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_sghmc_stationary_variance(temperature):
    sampler = sgmcmc.sghmc(gaussian_10d_target(), ETA, friction=ALPHA, temperature=temperature)
    result = sgmcmc.sample(sampler, num_samples=50000, num_warmup=500, num_chains=4, seed=3, progress=False)
    draws = np.asarray(result.samples["x"])
    assert_stationary_variance(
        draws, theta_variance(S2_10D, ETA, ALPHA, temperature), temperature * S2_10D, label=f"SGHMC T={temperature}"
    )
    assert np.all(np.abs(draws.mean(axis=(0, 1))) < 0.05 * np.sqrt(temperature * S2_10D))


def test_sghmc_momentum_lives_at_the_temperature():
    """At T = 2 the velocity's variance is 2 eta / (1 - alpha/2 - eta/(4 s^2)), not T-independent.

    1000 independent chains, 400 steps each (the slowest coordinate forgets its start
    within ~20 steps): the last states are 10,000 independent draws of
    (theta, v) / sd, whose mean square has standard error sqrt(2 / 10,000) = 1.4%.
    A momentum drawn fresh from N(0, I) -- or from N(0, eta) ignoring T -- would be off
    by 50% or more.
    """
    temperature = 2.0
    sampler = sgmcmc.sghmc(gaussian_10d_target(), ETA, friction=ALPHA, temperature=temperature)
    num_chains = 1000
    keys = jax.random.split(jax.random.key(0), num_chains)

    @jax.jit
    def run(keys):
        def chain(key):
            def body(state, t):
                return sampler.step(jax.random.fold_in(key, t), state)[0], None

            return jax.lax.scan(body, sampler.init(sampler.target.initial_position), jnp.arange(400))[0]

        return jax.vmap(chain)(keys)

    state = run(keys)
    v = np.asarray(state.momentum["x"], np.float64) / np.sqrt(momentum_variance(S2_10D, ETA, ALPHA, temperature))
    x = np.asarray(state.position["x"], np.float64) / np.sqrt(theta_variance(S2_10D, ETA, ALPHA, temperature))
    se = np.sqrt(2.0 / v.size)
    assert abs(np.mean(v**2) - 1.0) < 4 * se, np.mean(v**2)
    assert abs(np.mean(x**2) - 1.0) < 4 * se, np.mean(x**2)


def test_sghmc_temperature_zero_equals_optax_sgd_with_momentum(linear_regression_target):
    """T = 0: SGHMC(eta, alpha) is optax.sgd(eta, momentum=1 - alpha) on -log pi, same minibatches."""
    target = linear_regression_target
    eta, alpha, batch_size, num_steps = 5e-4, 0.1, 8, 60
    sampler = sgmcmc.sghmc(target, eta, friction=alpha, batch_size=batch_size, temperature=0.0)
    optimizer = optax.sgd(eta, momentum=1.0 - alpha)
    scale = target.num_data / batch_size

    def loss(params, batch):
        return -(target.logprior_fn(params) + scale * jnp.sum(target.loglik_fn(params, batch)))

    @jax.jit
    def run(params, keys):
        def body(carry, key):
            state, params, opt_state = carry
            state, _ = sampler.step(key, state)
            idx = noise.uniform_indices(key, batch_size, target.num_data)
            batch = jax.tree.map(lambda x: x[idx], target.data)
            updates, opt_state = optimizer.update(jax.grad(loss)(params, batch), opt_state)
            params = optax.apply_updates(params, updates)
            return (state, params, opt_state), (state.position, params)

        return jax.lax.scan(body, (sampler.init(params), params, optimizer.init(params)), keys)[1]

    ours, theirs = run(target.initial_position, jax.random.split(jax.random.key(5), num_steps))
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert float(jnp.abs(ours["w"][-1] - ours["w"][0]).max()) > 0.1


def test_sghmc_gradient_noise_reduces_injected_noise():
    """One step from v = 0 injects exactly sqrt(2 alpha eta T - eta^2 B_hat) times the key's normal draw."""
    target = gaussian_10d_target(start=1.0)
    eta, alpha, temperature, b_hat = 0.1, 0.5, 2.0, 3.0
    key = jax.random.key(7)
    xi = noise.normal_like(key, target.initial_position)
    grad = jax.grad(target.logdensity)(target.initial_position)
    for gradient_noise, variance in [
        (0.0, 2 * alpha * eta * temperature),
        (b_hat, 2 * alpha * eta * temperature - eta**2 * b_hat),
    ]:
        sampler = sgmcmc.sghmc(target, eta, friction=alpha, temperature=temperature, gradient_noise=gradient_noise)
        state, info = sampler.step(key, sampler.init(target.initial_position))
        expected = eta * grad["x"] + np.sqrt(variance) * xi["x"]
        np.testing.assert_allclose(state.momentum["x"], expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(state.position["x"], 1.0 + expected, rtol=1e-5, atol=1e-6)
        assert int(info.num_grad_evals) == 1 and not bool(info.is_divergent)
    with pytest.raises(ValueError, match="gradient_noise"):
        sgmcmc.sghmc(target, eta, friction=alpha, temperature=1.0, gradient_noise=20.0)
