"""The No-U-Turn Sampler, multinomial variant with the generalised criterion. Exact.

Algorithm (Hoffman & Gelman 2014, "The No-U-Turn Sampler", JMLR 15;
Betancourt 2017, "A conceptual introduction to Hamiltonian Monte Carlo",
arXiv:1701.02434), as implemented in Stan: draw a momentum ``p ~ N(0, M)``,
build a trajectory by repeated doubling in random directions until a
sub-trajectory makes a U-turn (generalised criterion with Stan's cross-half
checks), diverges, or the maximum tree depth is reached, and sample the next
state from the trajectory's points with probabilities proportional to
``exp(-H)`` (multinomial sampling, progressive and biased toward the newer
half). The transition leaves the target exactly invariant.

Pieces: :mod:`~sgmcmc.samplers.integrators` (leapfrog),
:mod:`~sgmcmc.samplers.metrics` (diagonal or dense Euclidean metric),
:mod:`~sgmcmc.samplers.trajectory` (doubling and multinomial sampling),
:mod:`~sgmcmc.samplers.termination` (the U-turn checks). Warmup
(:func:`sgmcmc.adaptation.window_adaptation`) tunes the step size by dual
averaging toward ``target_accept`` and the mass matrix in Stan's doubling
windows; it runs inside :func:`sgmcmc.sample` when ``num_warmup > 0``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
from jax.flatten_util import ravel_pytree

from sgmcmc._tree import PyTree
from sgmcmc.adaptation.window import check_target_accept
from sgmcmc.samplers.base import Sampler, register
from sgmcmc.samplers.hmc import HMCState, _check_threshold, hmc_init, windowed_warmup
from sgmcmc.samplers.integrators import IntegratorState
from sgmcmc.samplers.metrics import check_inverse_mass_matrix, check_metric
from sgmcmc.samplers.phase_space import flat_view
from sgmcmc.samplers.step_size import StepSize, check_step_size, current_step_size
from sgmcmc.samplers.trajectory import build_trajectory
from sgmcmc.target import Target

__all__ = ["NUTSInfo", "nuts", "nuts_transition"]


class NUTSInfo(NamedTuple):
    """Per-step statistics of NUTS (shared names, see ``base``)."""

    acceptance_rate: jax.Array
    is_divergent: jax.Array
    is_turning: jax.Array
    energy: jax.Array
    step_size: jax.Array
    num_grad_evals: jax.Array
    tree_depth: jax.Array
    logdensity: jax.Array


def _check_depth(max_tree_depth) -> int:
    if isinstance(max_tree_depth, bool) or not isinstance(max_tree_depth, int):
        raise TypeError(f"max_tree_depth must be an int, got {max_tree_depth!r}.")
    if not 1 <= max_tree_depth <= 30:
        raise ValueError(f"max_tree_depth must be in [1, 30], got {max_tree_depth}.")
    return max_tree_depth


def nuts_transition(
    key: jax.Array,
    state: HMCState,
    target: Target,
    step_size: StepSize,
    max_tree_depth: int,
    divergence_threshold: float,
) -> tuple[HMCState, NUTSInfo]:
    """One NUTS transition from ``state``."""
    flat, flat_grad, unravel, metric, logdensity_and_grad = flat_view(state, target)
    eps = current_step_size(step_size, state.step_size, state.count)

    momentum = metric.sample_momentum(key, flat)
    start = IntegratorState(flat, momentum, state.logdensity, flat_grad)
    result = build_trajectory(key, start, eps, logdensity_and_grad, metric, max_tree_depth, divergence_threshold)
    new_state = state._replace(
        position=unravel(result.position),
        logdensity=result.logdensity,
        logdensity_grad=unravel(result.logdensity_grad),
        count=state.count + 1,
    )
    info = NUTSInfo(
        acceptance_rate=result.acceptance_rate,
        is_divergent=result.is_divergent,
        is_turning=result.is_turning,
        energy=result.energy,
        step_size=eps,
        num_grad_evals=result.num_steps,
        tree_depth=result.tree_depth,
        logdensity=result.logdensity,
    )
    return new_state, info


@register("nuts")
def nuts(
    target: Target,
    step_size: StepSize = 1.0,
    *,
    max_tree_depth: int = 10,
    target_accept: float = 0.8,
    metric: str | None = None,
    inverse_mass_matrix=None,
    divergence_threshold: float = 1000.0,
) -> Sampler:
    """The No-U-Turn Sampler (exact), with Stan-style warmup adaptation.

    Args:
        target: the :class:`~sgmcmc.Target` to sample.
        step_size: the leapfrog step size; with ``num_warmup > 0`` only the
            starting point of the adaptation (which first searches for a
            reasonable value as Stan does). A positive float, or a schedule
            (then it is not adapted).
        max_tree_depth: at most ``2**max_tree_depth - 1`` leapfrog steps per
            transition.
        target_accept: the mean acceptance statistic warmup aims for. Warmup
            ends with a Robbins-Monro refinement that lands on it (0.76-0.83
            realised for 0.8), whereas Stan, NumPyro and BlackJAX end on the
            dual-averaging mean, above their target (0.86-0.94 realised for
            0.8): ``0.9`` gives their step sizes. On smooth posteriors whose
            trees stop at 15 or 31 steps, 0.9 gave 1.5x the ESS per second (all
            chains take the longer tree; ``benchmarks/README.md``, NUTS section).
        metric: ``"diag"`` or ``"dense"``: the mass matrix warmup adapts
            (default: the form of ``inverse_mass_matrix``, else diagonal).
        inverse_mass_matrix: the starting inverse mass matrix (vector or
            matrix over the flattened position); identity by default. Its
            form must agree with ``metric``.
        divergence_threshold: energy error beyond which a trajectory diverges.

    Info fields: ``acceptance_rate`` (Stan's mean Metropolis probability over
    the new leaves), ``is_divergent``, ``is_turning``, ``energy``,
    ``step_size``, ``num_grad_evals`` (leapfrog steps), ``tree_depth``
    (doublings merged), ``logdensity``.
    """
    step_size = check_step_size(step_size)
    max_tree_depth = _check_depth(max_tree_depth)
    target_accept = check_target_accept(target_accept)
    metric = check_metric(metric, inverse_mass_matrix)
    divergence_threshold = _check_threshold(divergence_threshold)
    flat, _ = ravel_pytree(target.initial_position)
    inv_mass = check_inverse_mass_matrix(inverse_mass_matrix, flat.size, flat.dtype, metric)
    settings = (step_size, max_tree_depth, target_accept, metric, inv_mass, divergence_threshold)
    return _build(target, settings)


def _build(target: Target, settings: tuple) -> Sampler:
    step_size, max_tree_depth, target_accept, metric, inv_mass, divergence_threshold = settings

    def init(position: PyTree) -> HMCState:
        return hmc_init(target, position, step_size, inv_mass)

    def step(key: jax.Array, state: HMCState, batch=None) -> tuple[HMCState, NUTSInfo]:
        if batch is not None:
            raise ValueError("NUTS is a full-batch sampler; it does not take a minibatch.")
        return nuts_transition(key, state, target, step_size, max_tree_depth, divergence_threshold)

    def rebuild(new_target: Target) -> Sampler:
        return _build(new_target, settings)

    warmup = windowed_warmup(step, target, step_size, (target_accept, metric))
    return Sampler(init, step, target, rebuild, "nuts", True, warmup)
