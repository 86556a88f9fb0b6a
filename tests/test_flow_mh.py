"""Flows (NICE, RealNVP) and the flow-MH sampler: exact once the flow is frozen.

Moments and mode weights are checked against their known values within 4
Monte Carlo standard errors (ArviZ bulk ESS, see ``conftest``); seeds are
fixed, so each check is deterministic.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_moments, mean_z

import sgmcmc
from sgmcmc import flows
from sgmcmc.samplers.flow_mh import flow_mh

MODES = np.array([[-3.0, 0.0], [3.0, 0.0]], np.float32)
WEIGHTS = np.array([0.3, 0.7], np.float32)
SD_5D = np.array([0.5, 1.0, 1.5, 2.0, 0.8], np.float32)


def mixture_target():
    mu, logw = jnp.asarray(MODES), jnp.log(jnp.asarray(WEIGHTS))

    def logdensity(x):
        return jax.scipy.special.logsumexp(-0.5 * jnp.sum((x - mu) ** 2, -1) + logw)

    return sgmcmc.Target.from_logdensity(logdensity, jnp.zeros(2), name="mixture2d")


@pytest.mark.parametrize("make", [flows.realnvp, flows.nice])
def test_flow_is_a_bijection_with_the_right_log_determinant(make):
    flow = make(3, num_layers=4, hidden=(8,))
    params = flow.init(jax.random.key(0))
    params = jax.tree.map(lambda a: a + 0.3 * jax.random.normal(jax.random.key(1), a.shape), params)
    z = jnp.array([0.3, -1.0, 2.0])
    x, logdet = flow.forward(params, z)
    back, inv_logdet = flow.inverse(params, x)
    np.testing.assert_allclose(back, z, atol=1e-5)
    np.testing.assert_allclose(logdet, -inv_logdet, atol=1e-5)
    jac = jax.jacfwd(lambda v: flow.forward(params, v)[0])(z)
    np.testing.assert_allclose(logdet, np.linalg.slogdet(np.asarray(jac, np.float64))[1], atol=1e-4)
    if make is flows.nice:  # additive couplings are volume preserving: only the scaling counts
        np.testing.assert_allclose(logdet, jnp.sum(params["log_scale"]), atol=1e-5)


def test_flow_mh_mixture_weights_and_moments():
    """Flow refitted during warmup (inside the compiled program), then frozen: exact."""
    target = mixture_target()
    sampler = flow_mh(target, 0.5, flow=flows.realnvp(2, 2, (16, 16)), initial_scale=4.0, num_refits=3, train_steps=100)
    start = jnp.asarray(np.random.default_rng(0).normal(size=(4, 2)) * 3.0, jnp.float32)
    result = sgmcmc.sample(
        sampler, num_samples=3000, num_warmup=300, num_chains=4, seed=3, progress=False, initial_position=start
    )
    draws = np.asarray(result.samples)
    assert np.all(np.isfinite(draws)) and result.num_divergent == 0
    assert float(np.mean(result.info.global_acceptance_rate)) > 0.3
    right = (draws[..., 0] > 0).astype(np.float64)
    assert abs(mean_z(right, WEIGHTS[1])) < 4.0, f"mode weight {right.mean():.3f}"
    mean = WEIGHTS @ MODES
    var = 1.0 + WEIGHTS @ (MODES**2) - mean**2
    assert_moments(draws, mean, var, label="flow_mh mixture")
    idata = result.to_arviz()
    assert "global_acceptance_rate" in idata.sample_stats or "acceptance_rate" in idata.sample_stats


def test_poor_frozen_flow_is_still_exact_on_a_5d_gaussian():
    """A flow far off the target (wrong centre, too narrow, random couplings), never refitted: no bias."""
    scale = jnp.asarray(SD_5D)
    target = sgmcmc.Target.from_logdensity(lambda x: -0.5 * jnp.sum((x / scale) ** 2), jnp.zeros(5), name="gauss5d")
    flow = flows.realnvp(5, 2, (8,))
    params = flow.init(jax.random.key(1))
    params = jax.tree.map(lambda a: a + 0.2 * jax.random.normal(jax.random.key(2), a.shape), params)
    params = {**params, "loc": jnp.full((5,), 1.5), "log_scale": jnp.full((5,), jnp.log(0.3))}
    sampler = flow_mh(target, 0.4, flow=flow, flow_params=params, adapt_flow=False)
    result = sgmcmc.sample(sampler, num_samples=3000, num_warmup=200, num_chains=4, seed=5, progress=False)
    draws = np.asarray(result.samples)
    assert result.num_divergent == 0
    # It rarely accepts a global move: the flow is poor, the answer is still right.
    assert float(np.mean(result.info.global_acceptance_rate)) < 0.2
    assert_moments(draws, np.zeros(5), SD_5D**2, label="flow_mh poor flow")


def test_flow_dimension_must_match_the_target():
    target = mixture_target()
    with pytest.raises(ValueError, match="dimension 3"):
        flow_mh(target, flow=flows.realnvp(3))
    with pytest.raises(TypeError, match="Flow"):
        flow_mh(target, flow="realnvp")


def test_nonfinite_target_at_flow_draws_is_rejected_not_propagated():
    """log pi is NaN or -inf where the broad flow proposes often: those moves are rejected."""

    def logdensity(x):
        lp = -0.5 * jnp.sum(x**2)
        lp = jnp.where(x[0] > 2.0, jnp.nan, lp)
        return jnp.where(x[1] > 2.0, -jnp.inf, lp)

    target = sgmcmc.Target.from_logdensity(logdensity, jnp.zeros(2))
    flow = flows.realnvp(2, 2, (4,))
    params = {**flow.init(jax.random.key(0)), "log_scale": jnp.full((2,), jnp.log(4.0))}
    sampler = flow_mh(target, 0.3, flow=flow, flow_params=params, adapt_flow=False)
    with pytest.warns(RuntimeWarning, match="divergent"):
        result = sgmcmc.sample(sampler, num_samples=500, num_chains=2, seed=0, progress=False)
    draws = np.asarray(result.samples)
    assert np.all(np.isfinite(draws))
    assert np.all(draws[..., 0] <= 2.0) and np.all(draws[..., 1] <= 2.0)
    assert np.any(np.asarray(result.info.is_divergent))  # the NaNs are reported
    assert np.any(np.asarray(result.info.global_is_accepted))  # and the good proposals still go through
