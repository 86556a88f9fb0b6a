"""Small generative models for simulation-based calibration (:mod:`sgmcmc.diagnostics.sbc`).

Each function returns an :class:`~sgmcmc.diagnostics.sbc.SBCModel`: a prior
sampler over the unconstrained position the samplers move in, a simulator,
and a ``Target.from_data`` builder whose log density is exactly the prior
(with the Jacobian of the log transforms) plus the likelihood used by the
simulator. They are small so that hundreds of replications run in seconds:

* :func:`normal_model`: ``y_i ~ N(mu, sigma)``, unknown mean and scale;
* :func:`hierarchical_normal_model`: eight-schools-like, non-centred;
* :func:`logistic_regression_model`: 20 points, two features and a bias.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from sgmcmc.diagnostics.sbc import SBCModel
from sgmcmc.target import Target

__all__ = ["normal_model", "hierarchical_normal_model", "logistic_regression_model", "MODELS", "broken_mala"]

_LOG_2PI = float(np.log(2 * np.pi))


def _normal_logpdf(x, loc, scale):
    return -0.5 * ((x - loc) / scale) ** 2 - jnp.log(scale) - 0.5 * _LOG_2PI


def normal_model(num_obs: int = 10) -> SBCModel:
    """``mu ~ N(0, 1)``, ``log sigma ~ N(0, 0.5)``, ``y_i ~ N(mu, sigma)`` for ``num_obs`` points.

    Position ``{"mu": (), "log_sigma": ()}``.
    """

    def prior_sample(key):
        k1, k2 = jax.random.split(key)
        return {"mu": jax.random.normal(k1), "log_sigma": 0.5 * jax.random.normal(k2)}

    def simulate(key, p):
        return {"y": p["mu"] + jnp.exp(p["log_sigma"]) * jax.random.normal(key, (num_obs,))}

    def logprior(p):
        return _normal_logpdf(p["mu"], 0.0, 1.0) + _normal_logpdf(p["log_sigma"], 0.0, 0.5)

    def loglik(p, batch):
        return _normal_logpdf(batch["y"], p["mu"], jnp.exp(p["log_sigma"]))

    def make_target(data):
        init = {"mu": jnp.zeros(()), "log_sigma": jnp.zeros(())}
        return Target.from_data(logprior, loglik, data, init, name="sbc_normal")

    return SBCModel(prior_sample, simulate, make_target, "normal")


#: Eight schools' standard errors, divided by 4 so that the data inform tau.
EIGHT_SCHOOLS_SIGMA = np.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0]) / 4.0


def hierarchical_normal_model(num_groups: int = 8) -> SBCModel:
    """Eight-schools-like, non-centred: ``mu ~ N(0, 5)``, ``tau ~ HalfNormal(5)``, ``eta_j ~ N(0, 1)``,
    ``y_j ~ N(mu + tau eta_j, sigma_j)`` with known ``sigma_j`` (eight schools' / 4, cycled).

    Position ``{"mu": (), "log_tau": (), "eta": (num_groups,)}``; the prior
    on ``log tau`` includes the Jacobian ``tau``.
    """
    sigma = np.resize(EIGHT_SCHOOLS_SIGMA, num_groups).astype(np.float32)

    def prior_sample(key):
        k1, k2, k3 = jax.random.split(key, 3)
        tau = 5.0 * jnp.abs(jax.random.normal(k2))
        return {"mu": 5.0 * jax.random.normal(k1), "log_tau": jnp.log(tau), "eta": jax.random.normal(k3, (num_groups,))}

    def simulate(key, p):
        theta = p["mu"] + jnp.exp(p["log_tau"]) * p["eta"]
        return {"y": theta + sigma * jax.random.normal(key, (num_groups,)), "sigma": jnp.asarray(sigma)}

    def logprior(p):
        tau = jnp.exp(p["log_tau"])
        half_normal = _normal_logpdf(tau, 0.0, 5.0) + jnp.log(2.0)
        return (
            _normal_logpdf(p["mu"], 0.0, 5.0) + half_normal + p["log_tau"] + jnp.sum(_normal_logpdf(p["eta"], 0.0, 1.0))
        )

    def loglik(p, batch):
        return _normal_logpdf(batch["y"], p["mu"] + jnp.exp(p["log_tau"]) * p["eta"], batch["sigma"])

    def make_target(data):
        init = {"mu": jnp.zeros(()), "log_tau": jnp.zeros(()), "eta": jnp.zeros(num_groups)}
        return Target.from_data(logprior, loglik, data, init, name="sbc_hierarchical")

    return SBCModel(prior_sample, simulate, make_target, "hierarchical")


def logistic_regression_model(num_data: int = 20, num_features: int = 2, seed: int = 0) -> SBCModel:
    """``w ~ N(0, I)``, ``b ~ N(0, 1)``, ``y_i ~ Bernoulli(sigmoid(x_i . w + b))`` on a fixed design.

    The design ``x`` (``num_data x num_features``, standard normal from
    ``seed``) is part of the model; the data are ``{"x", "y"}``. Position
    ``{"w": (num_features,), "b": ()}``.
    """
    x = np.random.default_rng(seed).normal(size=(num_data, num_features)).astype(np.float32)

    def prior_sample(key):
        k1, k2 = jax.random.split(key)
        return {"w": jax.random.normal(k1, (num_features,)), "b": jax.random.normal(k2)}

    def simulate(key, p):
        logits = jnp.asarray(x) @ p["w"] + p["b"]
        return {"x": jnp.asarray(x), "y": jax.random.bernoulli(key, jax.nn.sigmoid(logits)).astype(jnp.float32)}

    def logprior(p):
        return jnp.sum(_normal_logpdf(p["w"], 0.0, 1.0)) + _normal_logpdf(p["b"], 0.0, 1.0)

    def loglik(p, batch):
        logits = batch["x"] @ p["w"] + p["b"]
        return batch["y"] * jax.nn.log_sigmoid(logits) + (1.0 - batch["y"]) * jax.nn.log_sigmoid(-logits)

    def make_target(data):
        init = {"w": jnp.zeros(num_features), "b": jnp.zeros(())}
        return Target.from_data(logprior, loglik, data, init, name="sbc_logistic")

    return SBCModel(prior_sample, simulate, make_target, "logistic")


#: The three SBC models by name.
MODELS = {
    "normal": normal_model,
    "hierarchical": hierarchical_normal_model,
    "logistic": logistic_regression_model,
}


def broken_mala(target: Target, step_size: float = 0.1, target_accept: float = 0.574):
    """MALA with a WRONG acceptance ratio, for checking that SBC can fail: never use it for inference.

    The proposal is MALA's (one leapfrog step from a fresh momentum), but the
    Metropolis-Hastings ratio drops the proposal densities ``q(x | x') / q(x' | x)``
    (the kinetic-energy terms of the leapfrog form): it accepts with
    ``min(1, pi(x') / pi(x))``, as if the proposal were symmetric. The chain
    is then biased. Warmup is the same windowed adaptation as
    :func:`sgmcmc.mala`, so it is tuned exactly like the correct sampler.
    """
    from jax.flatten_util import ravel_pytree

    from sgmcmc.samplers.base import Sampler
    from sgmcmc.samplers.hmc import HMCInfo, hmc_init, windowed_warmup
    from sgmcmc.samplers.integrators import IntegratorState, integrate
    from sgmcmc.samplers.phase_space import flat_view
    from sgmcmc.samplers.proposal import metropolis_hastings

    inv_mass = jnp.ones_like(ravel_pytree(target.initial_position)[0])

    def init(position):
        return hmc_init(target, position, step_size, inv_mass)

    def step(key, state, batch=None):
        flat, grad, unravel, metric, logdensity_and_grad = flat_view(state, target)
        momentum = metric.sample_momentum(key, flat)
        start = IntegratorState(flat, momentum, state.logdensity, grad)
        end = integrate(start, state.step_size, 1, logdensity_and_grad, metric)
        decision = metropolis_hastings(key, end.logdensity - state.logdensity)  # the bug: no kinetic terms
        accept = decision.is_accepted

        def pick(a, b):
            return jax.tree.map(lambda u, v: jnp.where(accept, u, v), a, b)

        new = state._replace(
            position=pick(unravel(end.position), state.position),
            logdensity=jnp.where(accept, end.logdensity, state.logdensity),
            logdensity_grad=pick(unravel(end.logdensity_grad), state.logdensity_grad),
            count=state.count + 1,
        )
        info = HMCInfo(
            decision.acceptance_rate,
            accept,
            decision.is_divergent,
            -new.logdensity,
            state.step_size,
            jnp.int32(1),
            new.logdensity,
        )
        return new, info

    def rebuild(new_target):
        return broken_mala(new_target, step_size, target_accept)

    warmup = windowed_warmup(step, target, step_size, (target_accept, "diag"))
    return Sampler(init, step, target, rebuild, "broken_mala", False, warmup)
