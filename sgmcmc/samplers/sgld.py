"""Stochastic-gradient Langevin dynamics (SGLD). Approximate.

Algorithm (Welling & Teh 2011, "Bayesian learning via stochastic gradient
Langevin dynamics", ICML): the Euler-Maruyama discretisation of the Langevin
diffusion ``d theta = (1/2) grad log pi(theta) dt + sqrt(T) dW``, whose
stationary law is ``pi^(1/T)``, with the gradient replaced by an unbiased
minibatch estimate:

    theta' = theta + (eps / 2) * g_hat(theta) + sqrt(eps * T) * xi,   xi ~ N(0, I)

where ``g_hat = grad log p(theta) + (N/n) sum_batch grad log p(x_i|theta)``.
``T = 1`` targets the Bayesian posterior; ``T < 1`` a cold posterior;
``T = 0`` is gradient ascent on the log posterior (SGD with learning rate
``eps / 2`` on the summed loss; ``optax.sgd(eta)`` on a mean loss is
``eps = 2 eta / N``, see :mod:`sgmcmc.convert`). Step size and temperature
each take a float or a schedule ``count -> value`` (optax's, or
:mod:`sgmcmc.schedules`).

There is no Metropolis test, so the chain is biased: with a fixed step size
the stationary distribution differs from ``pi^(1/T)`` by O(eps) (for a
Gaussian with variance s^2 the full-batch chain has variance
``T s^2 / (1 - eps / (4 s^2))``), plus the extra variance the minibatch noise
adds. Decreasing step sizes (any schedule ``count -> eps``, e.g. from optax)
remove the bias asymptotically (Teh, Thiery & Vollmer 2016).

A step whose gradient estimate, log-density estimate or new position is not
finite is rejected (the chain keeps its last finite state) and reported in
``info.is_divergent``. SGLD never evaluates the density at the point it moves
to, so it can step into a region where the density is not finite; every step
from there is then flagged as divergent and the chain stays put: the run is
reported as broken, it never carries a NaN.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from sgmcmc import noise
from sgmcmc._tree import PyTree
from sgmcmc.samplers.base import Sampler, register
from sgmcmc.samplers.sg_common import (
    SGInfo,
    Temperature,
    check_temperature,
    current_temperature,
    has_noise,
    make_gradient_estimator,
    reject_non_finite,
)
from sgmcmc.samplers.step_size import StepSize, check_step_size, current_step_size, initial_step_size
from sgmcmc.target import Target

__all__ = ["SGLDState", "SGLDInfo", "sgld", "langevin_proposal"]


class SGLDState(NamedTuple):
    """State of an SGLD chain."""

    position: PyTree
    step_size: jax.Array
    count: jax.Array


#: SGLD's per-step statistics: the shared stochastic-gradient info record.
SGLDInfo = SGInfo

# Re-exported for code that imported them from here before they were shared.
__all__ += ["check_temperature", "make_gradient_estimator"]


def langevin_proposal(key, position: PyTree, grad: PyTree, eps, temperature, count, noisy: bool) -> PyTree:
    """The SGLD move ``theta + (eps / 2) g + sqrt(eps T) xi`` (no noise when ``noisy`` is False).

    Shared by SGLD and SGLD-CV; ``temperature`` is a constant or a schedule
    evaluated at ``count``.
    """
    half_eps = 0.5 * eps
    if not noisy:
        return jax.tree.map(lambda x, g: x + half_eps * g, position, grad)
    noise_scale = jnp.sqrt(eps * current_temperature(temperature, count, eps.dtype))
    xi = noise.normal_like(key, position)
    return jax.tree.map(lambda x, g, z: x + half_eps * g + noise_scale * z, position, grad, xi)


@register("sgld")
def sgld(
    target: Target,
    step_size: StepSize = 1e-4,
    *,
    batch_size: int | None = None,
    temperature: Temperature = 1.0,
) -> Sampler:
    """Stochastic-gradient Langevin dynamics (approximate; see module docstring).

    Args:
        target: the :class:`~sgmcmc.Target` to sample.
        step_size: ``eps``, a positive float or a schedule ``count -> eps``.
        batch_size: minibatch size n for data-driven targets; ``None`` uses the
            full-batch gradient.
        temperature: ``T >= 0`` or a schedule ``count -> T``; the chain targets
            ``pi^(1/T)``.
    """
    step_size = check_step_size(step_size)
    temperature = check_temperature(temperature)
    return _build(target, step_size, batch_size, temperature)


def _build(target: Target, step_size: StepSize, batch_size: int | None, temperature: Temperature) -> Sampler:
    """The SGLD sampler for already-validated settings."""
    estimator = make_gradient_estimator(target, batch_size)
    noisy = has_noise(temperature)

    def init(position: PyTree) -> SGLDState:
        flat, _ = ravel_pytree(position)
        return SGLDState(position, initial_step_size(step_size, flat.dtype), jnp.zeros((), jnp.int32))

    def step(key: jax.Array, state: SGLDState, batch=None) -> tuple[SGLDState, SGInfo]:
        # One key serves both the minibatch indices and the noise: sgmcmc.noise draws
        # them from separate counter streams of the key, so they are independent.
        estimate = estimator.estimate(key, state.position, batch)
        eps = current_step_size(step_size, state.step_size, state.count)
        proposed = langevin_proposal(key, state.position, estimate.grad, eps, temperature, state.count, noisy)
        finite, position = reject_non_finite(estimate.value, proposed, state.position)
        new_state = SGLDState(position, state.step_size, state.count + 1)
        info = SGInfo(
            acceptance_rate=jnp.ones((), eps.dtype),
            is_divergent=~finite,
            step_size=eps,
            num_grad_evals=estimate.num_grad_evals,
            logdensity=estimate.value,
        )
        return new_state, info

    def rebuild(new_target: Target) -> Sampler:
        return _build(new_target, step_size, batch_size, temperature)

    return Sampler(init, step, target, rebuild, "sgld", False)
