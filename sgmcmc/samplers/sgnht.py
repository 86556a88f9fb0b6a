"""Stochastic-gradient Nosé-Hoover thermostat (SGNHT). Approximate.

Algorithm (Ding, Fang, Babbush, Chen, Skeel & Neven 2014, "Bayesian sampling
using stochastic gradient thermostats", NeurIPS, Algorithm 1): SGHMC whose
friction ``xi`` is a dynamic variable, a thermostat that rises when the
kinetic energy is above its target and falls when it is below, so that the
unknown minibatch noise is absorbed without estimating it. Written in the
same SGD-with-momentum units as :mod:`sgmcmc.samplers.sghmc` (learning rate
``eta``, velocity ``v``, per-step friction ``xi``), with ``D`` the number of
parameters and ``g_hat`` the sum-scaled gradient estimate:

    v'     = (1 - xi) v + eta * g_hat(theta) + sqrt(2 A eta T) * z,    z ~ N(0, I)
    theta' = theta + v'
    xi'    = xi + (|v'|^2 / D - eta T)

Ding et al.'s step ``h``, momentum ``p``, thermostat and diffusion ``A`` are
``h = sqrt(eta)``, ``p = v / h``, ``xi_Ding = xi / h`` and ``A_Ding = A / h``;
their algorithm is this one at ``T = 1``. The temperature enters twice: in the
injected noise and in the kinetic energy the thermostat aims at (the
continuous dynamics leave ``pi^(1/T)(theta) N(p; 0, T) N(xi_Ding; A_Ding, T/D)``
invariant). ``diffusion`` is ``A`` in ``(0, 1]``: the friction the thermostat
starts from and settles near when the gradient is exact. At ``T = 0`` there is
no noise and the thermostat damps all motion: SGD with an adaptive momentum.

Bias. There is no Metropolis test, and this Euler scheme has an O(eta)
bias that SGHMC's does not, because the thermostat holds the kinetic energy of
the *staggered* velocity ``v'`` (half a step off the position) at ``eta T``
instead of that of the true velocity. For a Gaussian with variances ``s_i^2``,
treating ``xi`` as constant at its mean (its fluctuations are of order
``sqrt(eta T / D)``), the SGHMC formulas with ``alpha = xi`` and noise
``2 A eta T`` give

    Var(theta_i) = T s_i^2 (A / xi) / (1 - eta / (2 s_i^2 (2 - xi))),

where ``xi`` solves ``mean_i (A / xi) / (1 - xi / 2 - eta / (4 s_i^2)) = 1``
(the stationarity of ``xi``: ``E|v'|^2 / D = eta T``, exactly). So the
position variance is about ``T s^2 (1 - A / 2)``: a few percent low for
``A ~ 0.1``. Against long runs on a 10-d Gaussian (8 x 400,000 steps) this
mean-field prediction was within 1%.

Non-finite steps are rejected and reported as in :mod:`sgmcmc.samplers.sgld`;
``info.thermostat`` is ``xi`` after the step.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from sgmcmc import noise
from sgmcmc._tree import PyTree, tree_size
from sgmcmc.samplers.base import Sampler, register
from sgmcmc.samplers.sg_common import (
    Temperature,
    check_real,
    check_temperature,
    current_temperature,
    has_noise,
    make_gradient_estimator,
    reject_non_finite,
)
from sgmcmc.samplers.step_size import StepSize, check_step_size, current_step_size, initial_step_size
from sgmcmc.target import Target

__all__ = ["SGNHTState", "SGNHTInfo", "sgnht"]


class SGNHTState(NamedTuple):
    """State of an SGNHT chain: velocity ``momentum`` and per-step friction ``thermostat``."""

    position: PyTree
    momentum: PyTree
    thermostat: jax.Array
    step_size: jax.Array
    count: jax.Array


class SGNHTInfo(NamedTuple):
    """The shared stochastic-gradient statistics plus the thermostat after the step."""

    acceptance_rate: jax.Array
    is_divergent: jax.Array
    step_size: jax.Array
    num_grad_evals: jax.Array
    logdensity: jax.Array
    thermostat: jax.Array


@register("sgnht")
def sgnht(
    target: Target,
    step_size: StepSize = 1e-4,
    *,
    diffusion: float = 0.1,
    batch_size: int | None = None,
    temperature: Temperature = 1.0,
) -> Sampler:
    """Stochastic-gradient Nosé-Hoover thermostat (approximate; see module docstring).

    Args:
        target: the :class:`~sgmcmc.Target` to sample.
        step_size: the learning rate ``eta`` on the summed log posterior, a
            positive float or a schedule ``count -> eta``.
        diffusion: ``A`` in ``(0, 1]``: injected noise ``2 A eta T`` and the
            thermostat's initial value.
        batch_size: minibatch size n; ``None`` uses the full-batch gradient.
        temperature: ``T >= 0`` or a schedule ``count -> T``.
    """
    step_size = check_step_size(step_size)
    temperature = check_temperature(temperature)
    diffusion = check_real(diffusion, "diffusion", low=0.0, high=1.0, low_open=True)
    return _build(target, step_size, diffusion, batch_size, temperature)


def _build(target, step_size, diffusion, batch_size, temperature) -> Sampler:
    estimator = make_gradient_estimator(target, batch_size)
    noisy = has_noise(temperature)
    dim = tree_size(target.initial_position)

    def init(position: PyTree) -> SGNHTState:
        flat, _ = ravel_pytree(position)
        momentum = jax.tree.map(jnp.zeros_like, position)
        return SGNHTState(
            position,
            momentum,
            jnp.asarray(diffusion, flat.dtype),
            initial_step_size(step_size, flat.dtype),
            jnp.zeros((), jnp.int32),
        )

    def step(key: jax.Array, state: SGNHTState, batch=None) -> tuple[SGNHTState, SGNHTInfo]:
        estimate = estimator.estimate(key, state.position, batch)
        eta = current_step_size(step_size, state.step_size, state.count)
        decay = 1.0 - state.thermostat
        if noisy:
            temp = current_temperature(temperature, state.count, eta.dtype)
            scale = jnp.sqrt(2.0 * diffusion * eta * temp)
            xi = noise.normal_like(key, state.position)
            momentum = jax.tree.map(lambda v, g, z: decay * v + eta * g + scale * z, state.momentum, estimate.grad, xi)
        else:
            temp = jnp.zeros((), eta.dtype)
            momentum = jax.tree.map(lambda v, g: decay * v + eta * g, state.momentum, estimate.grad)
        position = jax.tree.map(jnp.add, state.position, momentum)
        kinetic = sum(jnp.sum(v * v) for v in jax.tree.leaves(momentum)) / dim
        thermostat = state.thermostat + (kinetic - eta * temp)
        # theta' = theta + v' is non-finite whenever v' is; the thermostat is a scalar.
        finite, (position, momentum, thermostat) = reject_non_finite(
            estimate.value,
            (position, momentum, thermostat),
            (state.position, state.momentum, state.thermostat),
            check=(position, thermostat),
        )
        new_state = SGNHTState(position, momentum, thermostat, state.step_size, state.count + 1)
        info = SGNHTInfo(
            acceptance_rate=jnp.ones((), eta.dtype),
            is_divergent=~finite,
            step_size=eta,
            num_grad_evals=estimate.num_grad_evals,
            logdensity=estimate.value,
            thermostat=thermostat,
        )
        return new_state, info

    def rebuild(new_target: Target) -> Sampler:
        return _build(new_target, step_size, diffusion, batch_size, temperature)

    return Sampler(init, step, target, rebuild, "sgnht", False)
