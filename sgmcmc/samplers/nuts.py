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

One addition to Stan's algorithm: a minimum tree depth ``m`` (no U-turn check
on sub-trees of at most ``2**m`` points), still exact for a fixed ``m``, which
warmup sets per chain when the chain's trees all take one of two adjacent
depths (``min_tree_depth="auto"``, the default; ``0`` is Stan's NUTS). See
:func:`nuts`.

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
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from sgmcmc._tree import PyTree
from sgmcmc.adaptation.window import check_target_accept
from sgmcmc.samplers.base import Sampler, register
from sgmcmc.samplers.hmc import _check_threshold, hmc_init, windowed_warmup
from sgmcmc.samplers.integrators import IntegratorState
from sgmcmc.samplers.metrics import check_inverse_mass_matrix, check_metric
from sgmcmc.samplers.phase_space import flat_view
from sgmcmc.samplers.step_size import StepSize, check_step_size, current_step_size
from sgmcmc.samplers.trajectory import build_trajectory
from sgmcmc.target import Target

__all__ = ["NUTSInfo", "NUTSState", "nuts", "nuts_transition"]


class NUTSState(NamedTuple):
    """State of a NUTS chain: :class:`~sgmcmc.samplers.hmc.HMCState`'s fields and the minimum tree depth.

    ``min_tree_depth`` (int32) is ``m`` of :func:`nuts`: sub-trees of at most
    ``2**m`` points are never checked for a U-turn. 0 is Stan's NUTS.
    """

    position: PyTree
    logdensity: jax.Array
    logdensity_grad: PyTree
    step_size: jax.Array
    inverse_mass_matrix: jax.Array
    count: jax.Array
    min_tree_depth: jax.Array


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
    state: NUTSState,
    target: Target,
    step_size: StepSize,
    max_tree_depth: int,
    divergence_threshold: float,
    min_tree_depth=0,
) -> tuple[NUTSState, NUTSInfo]:
    """One NUTS transition from ``state``; ``min_tree_depth`` as in :func:`nuts` (0: Stan's NUTS).

    ``state`` needs ``HMCState``'s fields (NeuTra passes its own latent state).
    """
    flat, flat_grad, unravel, metric, logdensity_and_grad = flat_view(state, target)
    eps = current_step_size(step_size, state.step_size, state.count)

    momentum = metric.sample_momentum(key, flat)
    start = IntegratorState(flat, momentum, state.logdensity, flat_grad)
    result = build_trajectory(
        key, start, eps, logdensity_and_grad, metric, max_tree_depth, divergence_threshold, min_tree_depth
    )
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
    min_tree_depth: int | str = "auto",
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
            0.8): ``0.9`` gives their step sizes.
        metric: ``"diag"`` or ``"dense"``: the mass matrix warmup adapts
            (default: the form of ``inverse_mass_matrix``, else diagonal).
        inverse_mass_matrix: the starting inverse mass matrix (vector or
            matrix over the flattened position); identity by default. Its
            form must agree with ``metric``.
        divergence_threshold: energy error beyond which a trajectory diverges.
        min_tree_depth: ``m``: sub-trees of at most ``2**m`` points are
            not checked for a U-turn (larger ones are, with Stan's checks), so
            a trajectory that does not diverge takes at least
            ``2**(m + 1) - 1`` leapfrog steps. ``0`` is Stan's NUTS.
            ``"auto"`` (default): 0 during warmup; at its end, if at least 95% of a chain's trees in the
            final warmup phase took ``d - 1`` or ``d`` doublings (``d`` their
            upper quartile), the chain's ``m`` becomes ``d - 1``, else it
            stays 0 (see :func:`sgmcmc.adaptation.window_adaptation`); without
            warmup it stays 0. The value used is
            ``result.last_state.min_tree_depth``. An int fixes ``m`` (at most
            ``max_tree_depth - 1``).

    Minimum tree depth. NUTS stops a trajectory at the first doubling whose
    points turn back; on smooth posteriors that can happen one doubling early
    in a large share of transitions (the logistic regression of
    ``benchmarks/nuts.py`` stopped at 15 leapfrog steps in 39-50% of them
    and at 31 otherwise), and the shorter trajectories give draws much closer to
    their start. Under ``vmap`` the short trees do not even save time, as the
    chains wait for the longest tree. With ``m`` fixed the transition is
    still exact: the first ``m`` doublings build a window of ``2**m`` points
    around the current one at a uniformly random offset (the doubling
    directions are independent of the state), and the rule "no sub-tree of
    more than ``2**m`` points turns, except the whole trajectory" is a
    property of the final trajectory alone, so every point of it would have
    built it with the same probability, which is what multinomial NUTS needs
    (Betancourt 2017, appendix A.3). ``m`` chosen from warmup draws and then
    held fixed keeps the sampling phase exact.

    Info fields: ``acceptance_rate`` (Stan's mean Metropolis probability over
    the new leaves), ``is_divergent``, ``is_turning``, ``energy``,
    ``step_size``, ``num_grad_evals`` (leapfrog steps), ``tree_depth``
    (doublings merged), ``logdensity``.
    """
    step_size = check_step_size(step_size)
    max_tree_depth = _check_depth(max_tree_depth)
    min_depth = _check_min_depth(min_tree_depth, max_tree_depth)
    target_accept = check_target_accept(target_accept)
    metric = check_metric(metric, inverse_mass_matrix)
    divergence_threshold = _check_threshold(divergence_threshold)
    flat, _ = ravel_pytree(target.initial_position)
    inv_mass = check_inverse_mass_matrix(inverse_mass_matrix, flat.size, flat.dtype, metric)
    settings = (step_size, max_tree_depth, target_accept, metric, inv_mass, divergence_threshold, min_depth)
    return _build(target, settings)


def _check_min_depth(min_tree_depth, max_tree_depth: int) -> int | None:
    """``None`` for ``"auto"``, else the validated fixed minimum depth."""
    if isinstance(min_tree_depth, str):
        if min_tree_depth != "auto":
            raise ValueError(f'min_tree_depth must be "auto" or an int, got {min_tree_depth!r}.')
        return None
    if isinstance(min_tree_depth, bool) or not isinstance(min_tree_depth, int):
        raise TypeError(f'min_tree_depth must be "auto" or an int, got {min_tree_depth!r}.')
    if not 0 <= min_tree_depth < max_tree_depth:
        raise ValueError(
            f"min_tree_depth must be in [0, max_tree_depth - 1 = {max_tree_depth - 1}], got {min_tree_depth}."
        )
    return min_tree_depth


def _build(target: Target, settings: tuple) -> Sampler:
    step_size, max_tree_depth, target_accept, metric, inv_mass, divergence_threshold, min_depth = settings

    def init(position: PyTree) -> NUTSState:
        state = hmc_init(target, position, step_size, inv_mass)
        return NUTSState(*state, min_tree_depth=jnp.asarray(min_depth or 0, jnp.int32))

    def step(key: jax.Array, state: NUTSState, batch=None) -> tuple[NUTSState, NUTSInfo]:
        if batch is not None:
            raise ValueError("NUTS is a full-batch sampler; it does not take a minibatch.")
        return nuts_transition(
            key, state, target, step_size, max_tree_depth, divergence_threshold, state.min_tree_depth
        )

    def rebuild(new_target: Target) -> Sampler:
        return _build(new_target, settings)

    adapt_depth = min_depth is None
    warmup = windowed_warmup(step, target, step_size, (target_accept, metric), adapt_min_tree_depth=adapt_depth)
    return Sampler(init, step, target, rebuild, "nuts", True, warmup)
