"""Metropolis-adjusted Langevin algorithm (MALA). Exact.

Algorithm (Roberts & Tweedie 1996, "Exponential convergence of Langevin
distributions and their discrete approximations"; Roberts & Rosenthal 1998):
propose

    x' = x + (eps^2 / 2) M^{-1} grad log pi(x) + eps M^{-1/2} xi,   xi ~ N(0, I)

and accept with the Metropolis-Hastings ratio
``pi(x') q(x | x') / (pi(x) q(x' | x))``. This proposal and its ratio are
exactly those of one leapfrog step of HMC with a fresh momentum (Neal 2011,
section 5.5.2), which is how it is computed here: the acceptance ratio is
``exp(-(H_end - H_start))``. The Metropolis test makes the chain leave
``pi`` exactly invariant; the unadjusted version of this move is SGLD's
full-batch limit.

``step_size`` here is the leapfrog step ``eps``: the proposal's standard
deviation per unit of inverse mass (BlackJAX's MALA calls ``eps^2 / 2`` its
step size). It and the inverse mass matrix live in the state so warmup can
adapt them.
"""

from __future__ import annotations

import jax
from jax.flatten_util import ravel_pytree

from sgmcmc._tree import PyTree
from sgmcmc.adaptation.window import check_target_accept
from sgmcmc.samplers.base import Sampler, register
from sgmcmc.samplers.hmc import (
    HMCInfo,
    HMCState,
    _check_threshold,
    hamiltonian_transition,
    hmc_init,
    windowed_warmup,
)
from sgmcmc.samplers.metrics import check_inverse_mass_matrix, check_metric
from sgmcmc.samplers.step_size import StepSize, check_step_size
from sgmcmc.target import Target

__all__ = ["mala"]


@register("mala")
def mala(
    target: Target,
    step_size: StepSize = 0.1,
    *,
    inverse_mass_matrix=None,
    divergence_threshold: float = 1000.0,
    target_accept: float = 0.574,
    metric: str | None = None,
    adapt: bool = True,
) -> Sampler:
    """Metropolis-adjusted Langevin algorithm (exact).

    Args:
        target: the :class:`~sgmcmc.Target` to sample.
        step_size: ``eps`` in the proposal above, a positive float or a schedule.
        inverse_mass_matrix: vector (diagonal) or matrix (dense) preconditioner
            over the flattened position; identity by default.
        divergence_threshold: log-ratio magnitude above which a step is divergent.
        target_accept: mean acceptance warmup aims for (0.574, optimal for
            MALA in high dimension; Roberts & Rosenthal 1998).
        metric, adapt: as in :func:`sgmcmc.hmc`.

    The state and info are those of :func:`sgmcmc.hmc` (``HMCState``,
    ``HMCInfo``); each step costs one gradient evaluation.
    """
    step_size = check_step_size(step_size)
    divergence_threshold = _check_threshold(divergence_threshold)
    flat, _ = ravel_pytree(target.initial_position)
    target_accept = check_target_accept(target_accept)
    metric = check_metric(metric, inverse_mass_matrix)
    inv_mass = check_inverse_mass_matrix(inverse_mass_matrix, flat.size, flat.dtype, metric)
    adaptation = (target_accept, metric) if adapt else None
    return _build(target, step_size, inv_mass, divergence_threshold, adaptation)


def _build(
    target: Target, step_size: StepSize, inv_mass: jax.Array, divergence_threshold: float, adaptation: tuple | None
) -> Sampler:
    """The MALA sampler for already-validated settings."""

    def init(position: PyTree) -> HMCState:
        return hmc_init(target, position, step_size, inv_mass)

    def step(key: jax.Array, state: HMCState, batch=None) -> tuple[HMCState, HMCInfo]:
        if batch is not None:
            raise ValueError("MALA is a full-batch sampler; it does not take a minibatch.")
        return hamiltonian_transition(key, state, target, step_size, 1, divergence_threshold)

    def rebuild(new_target: Target) -> Sampler:
        return _build(new_target, step_size, inv_mass, divergence_threshold, adaptation)

    return Sampler(init, step, target, rebuild, "mala", True, windowed_warmup(step, target, step_size, adaptation))
