"""Stochastic-gradient Hamiltonian Monte Carlo (SGHMC) with friction. Approximate.

Algorithm (Chen, Fox & Guestrin 2014, "Stochastic gradient Hamiltonian Monte
Carlo", ICML, eq. 15, the "SGD with momentum" form): with learning rate
``eta``, friction ``alpha`` and the velocity ``v`` (momentum times
``eps / M``),

    v'     = (1 - alpha) v + eta * g_hat(theta) + sqrt(2 alpha eta T - eta^2 B_hat) * xi,   xi ~ N(0, I)
    theta' = theta + v'

where ``g_hat`` is the sum-scaled gradient estimate of every sgmcmc sampler.
In Chen et al.'s notation ``eta = eps^2 / M``, ``alpha = eps C / M`` and the
subtracted term is ``2 beta_hat eta`` with ``beta_hat = eta B_hat / 2``:
``B_hat`` (``gradient_noise``) is an estimate of the per-coordinate variance
of the gradient noise ``g_hat - grad log pi``, which already injects
``eta^2 B_hat`` of variance into ``v``. The subtraction does not scale with
``T`` because the minibatch noise does not; default 0.

Temperature. The stationary law of the continuous dynamics is
``pi^(1/T)(theta) N(v; 0, eta T)``: the momentum lives at temperature ``T``
and is refreshed *partially*, every step, by the friction and the injected
noise (variance ``2 alpha eta T``), never by a fresh ``N(0, I)`` draw. (A
refresh that ignores ``T`` -- BlackJAX 1.7.1 draws ``N(0, I)`` momentum at the
start of every step -- gives the wrong stationary variance at ``T != 1``.)
The momentum persists in the state; ``init`` starts it at 0, as optax's
momentum does.

``T = 0`` and ``B_hat = 0`` remove the noise: the update is then exactly
``optax.sgd(learning_rate=eta, momentum=1 - alpha)`` on the summed loss
``-log pi`` (trace ``m' = mu m + grad``, ``theta' = theta - eta m'``, with
``v = -eta m``). :func:`sgmcmc.convert.sghmc_from_sgd` maps a mean-loss
learning rate and momentum onto ``eta`` and ``alpha``.

Bias. There is no Metropolis test. For a Gaussian coordinate with variance
``s^2`` the full-batch chain is a linear recursion whose stationary variances
are (solving the 2 x 2 discrete Lyapunov equation)

    Var(theta) = T s^2 / (1 - eta / (2 s^2 (2 - alpha))),
    Var(v)     = eta T / (1 - alpha / 2 - eta / (4 s^2)),

so the position's relative bias is ``eta / (2 s^2 (2 - alpha))`` (``alpha = 1``
is SGLD with ``eps = 2 eta``), stable for ``eta < 2 s^2 (2 - alpha)``. Minibatch
noise adds ``eta^2 B`` per step to ``v`` on top of that unless ``B_hat``
removes it.

Non-finite steps are rejected and reported as in :mod:`sgmcmc.samplers.sgld`
(position and momentum both keep their last finite values).
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
    check_real,
    check_temperature,
    current_temperature,
    has_noise,
    make_gradient_estimator,
    reject_non_finite,
)
from sgmcmc.samplers.step_size import StepSize, check_step_size, current_step_size, initial_step_size
from sgmcmc.target import Target

__all__ = ["SGHMCState", "sghmc"]


class SGHMCState(NamedTuple):
    """State of an SGHMC chain: ``momentum`` is the velocity ``v`` (position units per step)."""

    position: PyTree
    momentum: PyTree
    step_size: jax.Array
    count: jax.Array


@register("sghmc")
def sghmc(
    target: Target,
    step_size: StepSize = 1e-4,
    *,
    friction: float = 0.1,
    batch_size: int | None = None,
    temperature: Temperature = 1.0,
    gradient_noise: float = 0.0,
) -> Sampler:
    """Stochastic-gradient HMC in the SGD-with-momentum form (approximate; see module docstring).

    Args:
        target: the :class:`~sgmcmc.Target` to sample.
        step_size: the learning rate ``eta`` on the summed log posterior, a
            positive float or a schedule ``count -> eta``.
        friction: ``alpha`` in ``(0, 1]``, one minus the momentum decay.
        batch_size: minibatch size n; ``None`` uses the full-batch gradient.
        temperature: ``T >= 0`` or a schedule ``count -> T``.
        gradient_noise: ``B_hat >= 0``, the estimated per-coordinate variance
            of the gradient noise; the injected variance is
            ``max(2 alpha eta T - eta^2 B_hat, 0)``.
    """
    step_size = check_step_size(step_size)
    temperature = check_temperature(temperature)
    friction = check_real(friction, "friction", low=0.0, high=1.0, low_open=True)
    gradient_noise = check_real(gradient_noise, "gradient_noise", low=0.0)
    if gradient_noise > 0 and not callable(step_size) and not callable(temperature):
        if step_size * gradient_noise > 2 * friction * temperature:
            raise ValueError(
                f"gradient_noise={gradient_noise} exceeds what the step injects: eta * B_hat = "
                f"{step_size * gradient_noise:.3g} > 2 alpha T = {2 * friction * temperature:.3g}; "
                "lower the step size or raise the friction."
            )
    return _build(target, step_size, friction, batch_size, temperature, gradient_noise)


def _build(target, step_size, friction, batch_size, temperature, gradient_noise) -> Sampler:
    estimator = make_gradient_estimator(target, batch_size)
    noisy = has_noise(temperature)
    decay = 1.0 - friction

    def init(position: PyTree) -> SGHMCState:
        flat, _ = ravel_pytree(position)
        momentum = jax.tree.map(jnp.zeros_like, position)
        return SGHMCState(position, momentum, initial_step_size(step_size, flat.dtype), jnp.zeros((), jnp.int32))

    def step(key: jax.Array, state: SGHMCState, batch=None) -> tuple[SGHMCState, SGInfo]:
        estimate = estimator.estimate(key, state.position, batch)
        eta = current_step_size(step_size, state.step_size, state.count)
        if noisy:
            temp = current_temperature(temperature, state.count, eta.dtype)
            variance = jnp.maximum(2.0 * friction * eta * temp - eta**2 * gradient_noise, 0.0)
            scale = jnp.sqrt(variance)
            xi = noise.normal_like(key, state.position)
            momentum = jax.tree.map(lambda v, g, z: decay * v + eta * g + scale * z, state.momentum, estimate.grad, xi)
        else:
            momentum = jax.tree.map(lambda v, g: decay * v + eta * g, state.momentum, estimate.grad)
        position = jax.tree.map(jnp.add, state.position, momentum)
        # theta' = theta + v' is non-finite whenever v' is: checking the position suffices.
        finite, (position, momentum) = reject_non_finite(
            estimate.value, (position, momentum), (state.position, state.momentum), check=position
        )
        new_state = SGHMCState(position, momentum, state.step_size, state.count + 1)
        info = SGInfo(
            acceptance_rate=jnp.ones((), eta.dtype),
            is_divergent=~finite,
            step_size=eta,
            num_grad_evals=estimate.num_grad_evals,
            logdensity=estimate.value,
        )
        return new_state, info

    def rebuild(new_target: Target) -> Sampler:
        return _build(new_target, step_size, friction, batch_size, temperature, gradient_noise)

    return Sampler(init, step, target, rebuild, "sghmc", False)
