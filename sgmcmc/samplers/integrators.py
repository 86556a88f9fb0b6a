"""The leapfrog (velocity Verlet) integrator for Hamiltonian dynamics.

A symplectic, time-reversible integrator of order 2 (Neal 2011, section
5.2.3): half a momentum step, a full position step, half a momentum step.
Volume-preserving and reversible, so a Metropolis test on the energy error
makes an HMC transition exact. Works on flat position vectors; the caller
ravels pytrees.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
from jax import lax

from sgmcmc.samplers.metrics import Metric

__all__ = ["IntegratorState", "leapfrog", "integrate"]


class IntegratorState(NamedTuple):
    """A point in phase space with the log density and its gradient there."""

    position: jax.Array
    momentum: jax.Array
    logdensity: jax.Array
    logdensity_grad: jax.Array


def leapfrog(
    state: IntegratorState,
    step_size: jax.Array,
    logdensity_and_grad: Callable[[jax.Array], tuple[jax.Array, jax.Array]],
    metric: Metric,
) -> IntegratorState:
    """One leapfrog step of size ``step_size`` (one gradient evaluation)."""
    momentum = state.momentum + 0.5 * step_size * state.logdensity_grad
    position = state.position + step_size * metric.velocity(momentum)
    logdensity, grad = logdensity_and_grad(position)
    momentum = momentum + 0.5 * step_size * grad
    return IntegratorState(position, momentum, logdensity, grad)


def integrate(
    state: IntegratorState,
    step_size: jax.Array,
    num_steps: int | jax.Array,
    logdensity_and_grad: Callable[[jax.Array], tuple[jax.Array, jax.Array]],
    metric: Metric,
) -> IntegratorState:
    """``num_steps`` leapfrog steps (``num_steps`` gradient evaluations)."""

    def body(_, s):
        return leapfrog(s, step_size, logdensity_and_grad, metric)

    return lax.fori_loop(0, num_steps, body, state)
