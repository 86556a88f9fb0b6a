"""BAOAB splitting for underdamped Langevin dynamics. Approximate.

Algorithm (Leimkuhler & Matthews 2013, "Rational construction of stochastic
numerical methods for molecular sampling", AMRX; 2015 book "Molecular
Dynamics", ch. 7): underdamped Langevin dynamics with unit mass,

    d theta = p dt,   dp = grad log pi(theta) dt - gamma p dt + sqrt(2 gamma T) dW,

invariant law ``pi^(1/T)(theta) N(p; 0, T)``, split into a half kick **B**
(``p += (h/2) g``), a half drift **A** (``theta += (h/2) p``) and the exact
Ornstein-Uhlenbeck solution **O** (``p = c p + sqrt((1 - c^2) T) z`` with
``c = exp(-gamma h)``), composed as B A O A B. Consecutive steps share a
gradient: the last B of one step and the first B of the next use the same
gradient at the same point, so each step here is the rotation

    theta_1/2 = theta + (h/2) p
    p_O       = c p + sqrt((1 - c^2) T) z,     z ~ N(0, I)
    theta'    = theta_1/2 + (h/2) p_O
    p'        = p_O + h g_hat(theta')

with one gradient evaluation, at the new point. The positions are exactly
BAOAB's; the stored momentum is BAOAB's plus the next step's first half kick.
With minibatches ``g_hat`` is the sum-scaled estimate of every sgmcmc sampler,
used for both half kicks around ``theta'``. ``info.logdensity`` is the
estimate at the *returned* position.

Bias. Configurational averages have an O(h^2) error in general
(Leimkuhler & Matthews 2013), and for a Gaussian target the position's law is
exact at any step size below the stability limit ``h < 2 s_min``, for any
friction: solving the discrete Lyapunov equation of the linear recursion gives
``Var(theta) = T s^2`` and ``Var(p') = T``. Minibatch noise breaks that
(it adds ``h^2 B`` of variance to the momentum per step, with ``B`` the
gradient noise variance). ``T = 0`` gives a damped momentum method.

Non-finite steps are rejected and reported as in :mod:`sgmcmc.samplers.sgld`.
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

__all__ = ["BAOABState", "baoab"]


class BAOABState(NamedTuple):
    """State of a BAOAB chain (unit mass; ``momentum`` includes the next half kick)."""

    position: PyTree
    momentum: PyTree
    step_size: jax.Array
    count: jax.Array


@register("baoab")
def baoab(
    target: Target,
    step_size: StepSize = 1e-2,
    *,
    friction: float = 1.0,
    batch_size: int | None = None,
    temperature: Temperature = 1.0,
) -> Sampler:
    """BAOAB underdamped Langevin integrator (approximate; see module docstring).

    Args:
        target: the :class:`~sgmcmc.Target` to sample.
        step_size: the time step ``h``, a positive float or a schedule.
        friction: ``gamma > 0`` per unit time; ``c = exp(-gamma h)`` of the
            momentum survives each O step.
        batch_size: minibatch size n; ``None`` uses the full-batch gradient.
        temperature: ``T >= 0`` or a schedule ``count -> T``.
    """
    step_size = check_step_size(step_size)
    temperature = check_temperature(temperature)
    friction = check_real(friction, "friction", low=0.0, low_open=True)
    return _build(target, step_size, friction, batch_size, temperature)


def _build(target, step_size, friction, batch_size, temperature) -> Sampler:
    estimator = make_gradient_estimator(target, batch_size)
    noisy = has_noise(temperature)

    def init(position: PyTree) -> BAOABState:
        flat, _ = ravel_pytree(position)
        momentum = jax.tree.map(jnp.zeros_like, position)
        return BAOABState(position, momentum, initial_step_size(step_size, flat.dtype), jnp.zeros((), jnp.int32))

    def step(key: jax.Array, state: BAOABState, batch=None) -> tuple[BAOABState, SGInfo]:
        h = current_step_size(step_size, state.step_size, state.count)
        half_h = 0.5 * h
        c = jnp.exp(-friction * h)
        if noisy:
            temp = current_temperature(temperature, state.count, h.dtype)
            scale = jnp.sqrt((1.0 - c * c) * temp)
            z = noise.normal_like(key, state.position)
            momentum = jax.tree.map(lambda p, n: c * p + scale * n, state.momentum, z)
        else:
            momentum = jax.tree.map(lambda p: c * p, state.momentum)
        position = jax.tree.map(lambda x, p, q: x + half_h * (p + q), state.position, state.momentum, momentum)
        estimate = estimator.estimate(key, position, batch)
        momentum = jax.tree.map(lambda p, g: p + h * g, momentum, estimate.grad)
        finite, (position, momentum) = reject_non_finite(
            estimate.value, (position, momentum), (state.position, state.momentum)
        )
        new_state = BAOABState(position, momentum, state.step_size, state.count + 1)
        info = SGInfo(
            acceptance_rate=jnp.ones((), h.dtype),
            is_divergent=~finite,
            step_size=h,
            num_grad_evals=estimate.num_grad_evals,
            logdensity=estimate.value,
        )
        return new_state, info

    def rebuild(new_target: Target) -> Sampler:
        return _build(new_target, step_size, friction, batch_size, temperature)

    return Sampler(init, step, target, rebuild, "baoab", False)
