"""Hamiltonian Monte Carlo with a fixed number of leapfrog steps. Exact.

Algorithm (Duane, Kennedy, Pendleton & Roweth 1987; Neal 2011, "MCMC using
Hamiltonian dynamics"): draw a momentum ``p ~ N(0, M)``, integrate
Hamilton's equations for ``H(x, p) = -log pi(x) + p^T M^{-1} p / 2`` with
``num_integration_steps`` leapfrog steps of size ``step_size``, and accept
the end point with probability ``min(1, exp(H_0 - H_L))``. The leapfrog map
is reversible and volume-preserving, so the Metropolis test makes the chain
leave ``pi`` exactly invariant whatever the step size.

A trajectory whose energy error is not finite or exceeds
``divergence_threshold`` is a divergence: it is rejected (the chain stays at
its last finite state) and reported in ``info.is_divergent``.

The step size and the inverse mass matrix live in the state, so warmup can
adapt them per chain inside one compiled program.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from sgmcmc import noise
from sgmcmc._tree import PyTree
from sgmcmc.adaptation.window import check_target_accept, window_adaptation
from sgmcmc.samplers.base import Sampler, register
from sgmcmc.samplers.integrators import IntegratorState, integrate
from sgmcmc.samplers.metrics import check_inverse_mass_matrix, check_metric
from sgmcmc.samplers.phase_space import flat_view
from sgmcmc.samplers.proposal import metropolis_hastings
from sgmcmc.samplers.step_size import StepSize, check_step_size, current_step_size, initial_step_size
from sgmcmc.samplers.step_size_search import find_reasonable_step_size
from sgmcmc.target import Target

__all__ = ["HMCState", "HMCInfo", "hmc", "hamiltonian_transition"]


class HMCState(NamedTuple):
    """State of an HMC-family chain.

    ``inverse_mass_matrix`` is over the flattened position (``ravel_pytree``
    order): a vector for a diagonal matrix, a matrix for a dense one.
    """

    position: PyTree
    logdensity: jax.Array
    logdensity_grad: PyTree
    step_size: jax.Array
    inverse_mass_matrix: jax.Array
    count: jax.Array


class HMCInfo(NamedTuple):
    """Per-step statistics of HMC and MALA (shared names, see ``base``)."""

    acceptance_rate: jax.Array
    is_accepted: jax.Array
    is_divergent: jax.Array
    energy: jax.Array
    step_size: jax.Array
    num_grad_evals: jax.Array
    logdensity: jax.Array


def _check_steps(num_integration_steps) -> int:
    if isinstance(num_integration_steps, bool) or not isinstance(num_integration_steps, int):
        raise TypeError(f"num_integration_steps must be an int, got {num_integration_steps!r}.")
    if num_integration_steps < 1:
        raise ValueError(f"num_integration_steps must be >= 1, got {num_integration_steps}.")
    return num_integration_steps


def _check_threshold(divergence_threshold) -> float:
    value = float(divergence_threshold)
    if not value > 0:
        raise ValueError(f"divergence_threshold must be > 0, got {divergence_threshold}.")
    return value


def hmc_init(target: Target, position: PyTree, step_size: StepSize, inverse_mass_matrix: jax.Array) -> HMCState:
    """A fresh HMC-family state at ``position``."""
    logdensity, grad = jax.value_and_grad(target.logdensity)(position)
    flat, _ = ravel_pytree(position)
    return HMCState(
        position=position,
        logdensity=logdensity,
        logdensity_grad=grad,
        step_size=initial_step_size(step_size, flat.dtype),
        inverse_mass_matrix=jnp.asarray(inverse_mass_matrix, flat.dtype),
        count=jnp.zeros((), jnp.int32),
    )


def windowed_warmup(
    step, target: Target, step_size: StepSize, adaptation: tuple | None, *, adapt_min_tree_depth: bool = False
):
    """Stan's windowed adaptation of ``step`` (``adaptation = (target_accept, metric)``).

    ``adapt_min_tree_depth``: also set NUTS's ``min_tree_depth`` at the end
    (see :func:`sgmcmc.adaptation.window_adaptation`).

    ``None`` when adaptation is off or the step size is a schedule (which is
    never adapted): warmup is then plain burn-in.
    """
    if adaptation is None or callable(step_size):
        return None
    target_accept, metric = adaptation
    search = partial(find_reasonable_step_size, target=target)
    return window_adaptation(
        step, search, target_accept=target_accept, metric=metric, adapt_min_tree_depth=adapt_min_tree_depth
    )


def hamiltonian_transition(
    key: jax.Array,
    state: HMCState,
    target: Target,
    step_size: StepSize,
    num_integration_steps: int,
    divergence_threshold: float,
) -> tuple[HMCState, HMCInfo]:
    """One Metropolis-adjusted leapfrog trajectory of ``num_integration_steps`` steps.

    The momentum (``noise.normal``) and the Metropolis uniform
    (``noise.uniform``) are independent streams of ``key``: no split needed.
    """
    flat, flat_grad, unravel, metric, logdensity_and_grad = flat_view(state, target)
    eps = current_step_size(step_size, state.step_size, state.count)

    momentum = metric.sample_momentum(key, flat)
    start = IntegratorState(flat, momentum, state.logdensity, flat_grad)
    end = integrate(start, eps, num_integration_steps, logdensity_and_grad, metric)

    energy_start = -start.logdensity + metric.kinetic_energy(start.momentum)
    energy_end = -end.logdensity + metric.kinetic_energy(end.momentum)
    decision = metropolis_hastings(key, energy_start - energy_end, divergence_threshold)
    accept = decision.is_accepted

    new_position = jax.tree.map(lambda a, b: jnp.where(accept, a, b), unravel(end.position), state.position)
    new_grad = jax.tree.map(lambda a, b: jnp.where(accept, a, b), unravel(end.logdensity_grad), state.logdensity_grad)
    new_logdensity = jnp.where(accept, end.logdensity, state.logdensity)
    energy = jnp.where(accept, energy_end, energy_start)
    new_state = state._replace(
        position=new_position,
        logdensity=new_logdensity,
        logdensity_grad=new_grad,
        count=state.count + 1,
    )
    info = HMCInfo(
        acceptance_rate=decision.acceptance_rate,
        is_accepted=accept,
        is_divergent=decision.is_divergent,
        energy=energy,
        step_size=eps,
        num_grad_evals=jnp.asarray(num_integration_steps, jnp.int32),
        logdensity=new_logdensity,
    )
    return new_state, info


def local_moves(
    key: jax.Array,
    state: HMCState,
    target: Target,
    step_size: StepSize,
    num_integration_steps: int,
    num_moves: int,
    divergence_threshold: float,
) -> tuple[HMCState, jax.Array, jax.Array, jax.Array, jax.Array]:
    """``num_moves`` :func:`hamiltonian_transition` s in a row (MALA when ``num_integration_steps == 1``).

    The local half of a mixed kernel (flow-MH, A-NICE-MC): move ``i`` uses
    ``noise.fold_in(key, i)``. Returns the state and, for the info record, the
    last move's acceptance rate and decision, whether any move diverged, and the
    step size used (the state's when ``num_moves == 0``), in the log density's dtype.
    """
    dtype = state.logdensity.dtype
    rate, accepted, divergent = jnp.ones((), dtype), jnp.ones((), bool), jnp.zeros((), bool)
    eps = state.step_size
    for i in range(num_moves):
        state, info = hamiltonian_transition(
            noise.fold_in(key, i), state, target, step_size, num_integration_steps, divergence_threshold
        )
        rate, accepted, divergent, eps = (
            info.acceptance_rate,
            info.is_accepted,
            divergent | info.is_divergent,
            info.step_size,
        )
    return state, rate, accepted, divergent, jnp.asarray(eps, dtype)


@register("hmc")
def hmc(
    target: Target,
    step_size: StepSize = 0.1,
    num_integration_steps: int = 10,
    *,
    inverse_mass_matrix=None,
    divergence_threshold: float = 1000.0,
    target_accept: float = 0.8,
    metric: str | None = None,
    adapt: bool = True,
) -> Sampler:
    """Hamiltonian Monte Carlo with a fixed trajectory (exact).

    Args:
        target: the :class:`~sgmcmc.Target` to sample.
        step_size: leapfrog step size, a positive float or a schedule.
        num_integration_steps: leapfrog steps per trajectory (trajectory
            length = ``step_size * num_integration_steps``).
        inverse_mass_matrix: vector (diagonal) or matrix (dense) over the
            flattened position; identity by default.
        divergence_threshold: energy error above which a step is divergent.
        target_accept: mean acceptance probability warmup aims for.
        metric: ``"diag"`` or ``"dense"``, the mass matrix warmup adapts
            (default: the form of ``inverse_mass_matrix``, else diagonal).
        adapt: with ``num_warmup > 0`` in :func:`sgmcmc.sample`, run Stan's
            windowed adaptation of the step size and mass matrix
            (:func:`sgmcmc.adaptation.window_adaptation`); ``False`` makes
            warmup plain burn-in. A schedule step size is never adapted.

    Reference: Neal (2011), "MCMC using Hamiltonian dynamics", Handbook of
    Markov Chain Monte Carlo, ch. 5.
    """
    step_size = check_step_size(step_size)
    num_integration_steps = _check_steps(num_integration_steps)
    divergence_threshold = _check_threshold(divergence_threshold)
    flat, _ = ravel_pytree(target.initial_position)
    target_accept = check_target_accept(target_accept)
    metric = check_metric(metric, inverse_mass_matrix)
    inv_mass = check_inverse_mass_matrix(inverse_mass_matrix, flat.size, flat.dtype, metric)
    adaptation = (target_accept, metric) if adapt else None
    return _build(target, step_size, num_integration_steps, inv_mass, divergence_threshold, adaptation)


def _build(
    target: Target,
    step_size: StepSize,
    num_integration_steps: int,
    inv_mass: jax.Array,
    divergence_threshold: float,
    adaptation: tuple | None,
) -> Sampler:
    """The HMC sampler for already-validated settings."""

    def init(position: PyTree) -> HMCState:
        return hmc_init(target, position, step_size, inv_mass)

    def step(key: jax.Array, state: HMCState, batch=None) -> tuple[HMCState, HMCInfo]:
        if batch is not None:
            raise ValueError("HMC is a full-batch sampler; it does not take a minibatch.")
        return hamiltonian_transition(key, state, target, step_size, num_integration_steps, divergence_threshold)

    def rebuild(new_target: Target) -> Sampler:
        return _build(new_target, step_size, num_integration_steps, inv_mass, divergence_threshold, adaptation)

    return Sampler(init, step, target, rebuild, "hmc", True, windowed_warmup(step, target, step_size, adaptation))
