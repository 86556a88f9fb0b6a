"""Jittered HMC with a shared trajectory length, tuned by ChEES. Exact.

Algorithm (Hoffman, Radul & Sountsov 2021, "An adaptive MCMC scheme for
setting trajectory lengths in Hamiltonian Monte Carlo", AISTATS): HMC whose
trajectory length is ``u_t * T`` with ``u_t`` the ``t``-th point of the
base-2 van der Corput (Halton) sequence, so ``num_steps = ceil(u_t T / eps)``
leapfrog steps, followed by a Metropolis test. The jitter depends only on the
step count ``t``, which every chain shares, so vmapped chains all take the
same number of leapfrog steps: no chain waits for another, unlike NUTS under
``vmap``. Under :func:`sgmcmc.sample` the number of steps is one unbatched value
(:func:`sgmcmc.samplers.base.same_across_chains`), so the leapfrog loop runs
without ``vmap``'s per-chain masking (11 kernels per step instead of 13 on a
31-d logistic regression). For fixed ``eps``, ``T`` and metric each transition is an HMC
transition with a deterministic, state-independent number of steps, so the
chain leaves the target exactly invariant (the sequence of kernels is
non-homogeneous but each one is exact).

Warmup (:func:`sgmcmc.adaptation.chees_adaptation`) pools the chains: the
step size by dual averaging of the harmonic-mean acceptance across chains,
``T`` by Adam on the ChEES criterion (the change in squared distance from the
cross-chain mean), and a mass matrix from the pooled draws in Stan's doubling
windows: by default (``metric="auto"``, up to 64 dimensions) dense where the
draws' correlations call for it, diagonal otherwise. Afterwards all chains
share ``eps``, ``T`` and the metric; each transition is exact HMC for that
metric, whichever form it has.
"""

from __future__ import annotations

import numbers
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.flatten_util import ravel_pytree

from sgmcmc._tree import PyTree
from sgmcmc.adaptation.chees import check_criterion, chees_adaptation
from sgmcmc.adaptation.mass_matrix import AUTO_DENSE_MAX_DIM
from sgmcmc.adaptation.window import check_target_accept
from sgmcmc.samplers.base import Sampler, register, same_across_chains
from sgmcmc.samplers.hmc import HMCInfo, _check_threshold
from sgmcmc.samplers.integrators import IntegratorState, integrate
from sgmcmc.samplers.metrics import check_inverse_mass_matrix, check_metric
from sgmcmc.samplers.phase_space import flat_view
from sgmcmc.samplers.proposal import metropolis_hastings
from sgmcmc.samplers.step_size import check_step_size
from sgmcmc.samplers.step_size_search import find_reasonable_step_size
from sgmcmc.target import Target

__all__ = ["ChEESState", "chees_hmc", "halton", "chees_transition"]


class ChEESState(NamedTuple):
    """State of a jittered-HMC chain; ``count`` must be equal across chains."""

    position: PyTree
    logdensity: jax.Array
    logdensity_grad: PyTree
    step_size: jax.Array
    inverse_mass_matrix: jax.Array
    trajectory_length: jax.Array
    count: jax.Array
    dense_metric: jax.Array  # whether ``inverse_mass_matrix`` is used as dense (``metric="auto"``)


class Proposal(NamedTuple):
    """End of the trajectory before the Metropolis test (what ChEES adapts on)."""

    position: jax.Array  # flat
    momentum: jax.Array  # flat
    num_steps: jax.Array


def halton(index: jax.Array) -> jax.Array:
    """The base-2 van der Corput number of ``index + 1``, in ``(0, 1)``."""
    n = (jnp.asarray(index).astype(jnp.uint32) + jnp.uint32(1)) & jnp.uint32(0xFFFFFFFF)
    bits = jnp.arange(32, dtype=jnp.uint32)
    digits = ((n >> bits) & jnp.uint32(1)).astype(jnp.float32)
    return jnp.sum(digits * 0.5 ** (bits.astype(jnp.float32) + 1.0))


def chees_transition(
    key: jax.Array,
    state: ChEESState,
    target: Target,
    divergence_threshold: float,
    max_num_steps: int,
    metric: str = "diag",
) -> tuple[ChEESState, HMCInfo, Proposal]:
    """One jittered HMC transition; also returns the unadjusted proposal.

    With ``metric="auto"`` the state carries a matrix that warmup keeps either
    dense or diagonal; a diagonal one is integrated with the diagonal metric
    (one branch of a ``lax.cond`` taken for all chains at once under the driver).
    """
    if metric != "auto":
        return _transition(key, state, target, divergence_threshold, max_num_steps)
    matrix = state.inverse_mass_matrix
    # Neither branch returns the matrix (it is put back after): the branches' outputs
    # then hold no (D, D) array, and the diagonal branch does not read it past its diagonal.
    stripped = state._replace(inverse_mass_matrix=jnp.zeros((), matrix.dtype))

    def diagonal(key, stripped, matrix):
        as_vector = stripped._replace(inverse_mass_matrix=jnp.diagonal(matrix))
        new, info, proposal = _transition(key, as_vector, target, divergence_threshold, max_num_steps)
        return new._replace(inverse_mass_matrix=stripped.inverse_mass_matrix), info, proposal

    def dense(key, stripped, matrix):
        new, info, proposal = _transition(
            key, stripped._replace(inverse_mass_matrix=matrix), target, divergence_threshold, max_num_steps
        )
        return new._replace(inverse_mass_matrix=stripped.inverse_mass_matrix), info, proposal

    is_dense = same_across_chains(state.dense_metric.astype(jnp.int32)) > 0
    new, info, proposal = lax.cond(is_dense, dense, diagonal, key, stripped, matrix)
    return new._replace(inverse_mass_matrix=matrix), info, proposal


def _transition(
    key: jax.Array, state: ChEESState, target: Target, divergence_threshold: float, max_num_steps: int
) -> tuple[ChEESState, HMCInfo, Proposal]:
    # A dense metric is equal in every chain too: one unbatched matrix under the driver,
    # so its Cholesky factor is taken once and the velocity is one matrix product.
    if state.inverse_mass_matrix.ndim == 2:
        state_for_view = state._replace(inverse_mass_matrix=same_across_chains(state.inverse_mass_matrix))
    else:
        state_for_view = state
    flat, flat_grad, unravel, metric, logdensity_and_grad = flat_view(state_for_view, target)
    eps = state.step_size
    jitter = halton(state.count).astype(flat.dtype)
    num_steps = jnp.clip(jnp.ceil(jitter * state.trajectory_length / eps), 1, max_num_steps).astype(jnp.int32)
    # Equal in every chain (shared count, step size and length): one loop for all chains.
    num_steps = same_across_chains(num_steps)

    momentum = metric.sample_momentum(key, flat)
    start = IntegratorState(flat, momentum, state.logdensity, flat_grad)
    end = integrate(start, eps, num_steps, logdensity_and_grad, metric)
    energy_start = -start.logdensity + metric.kinetic_energy(start.momentum)
    energy_end = -end.logdensity + metric.kinetic_energy(end.momentum)
    decision = metropolis_hastings(key, energy_start - energy_end, divergence_threshold)
    accept = decision.is_accepted
    new_state = state._replace(
        position=jax.tree.map(lambda a, b: jnp.where(accept, a, b), unravel(end.position), state.position),
        logdensity=jnp.where(accept, end.logdensity, state.logdensity),
        logdensity_grad=jax.tree.map(
            lambda a, b: jnp.where(accept, a, b), unravel(end.logdensity_grad), state.logdensity_grad
        ),
        count=state.count + 1,
    )
    info = HMCInfo(
        acceptance_rate=decision.acceptance_rate,
        is_accepted=accept,
        is_divergent=decision.is_divergent,
        energy=jnp.where(accept, energy_end, energy_start),
        step_size=eps,
        num_grad_evals=num_steps,
        logdensity=new_state.logdensity,
    )
    return new_state, info, Proposal(end.position, end.momentum, num_steps)


def _metric_and_start(metric, inverse_mass_matrix, dim: int, dtype) -> tuple[str, jax.Array]:
    """The metric warmup adapts and the inverse mass matrix the chains start from.

    ``"auto"`` carries a matrix (starting from the user's, or the diagonal
    matrix of the user's vector, or the identity), except above
    ``AUTO_DENSE_MAX_DIM`` dimensions where it is ``"diag"`` (``"dense"`` if the
    user gave a matrix).
    """
    if metric != "auto":
        metric = check_metric(metric, inverse_mass_matrix)
        return metric, check_inverse_mass_matrix(inverse_mass_matrix, dim, dtype, metric)
    inv_mass = check_inverse_mass_matrix(inverse_mass_matrix, dim, dtype)
    if dim > AUTO_DENSE_MAX_DIM:
        return ("dense" if inv_mass.ndim == 2 else "diag"), inv_mass
    return "auto", (jnp.diag(inv_mass) if inv_mass.ndim == 1 else inv_mass)


def _is_dense(metric: str, inverse_mass_matrix: jax.Array) -> bool:
    """Whether the chains start with a dense metric: always for ``"dense"``, for ``"auto"``
    when the starting matrix has a nonzero off-diagonal entry."""
    if metric != "auto":
        return metric == "dense"
    matrix = np.asarray(inverse_mass_matrix)
    return bool(np.any(matrix != np.diag(np.diag(matrix))))


def _check_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)


@register("chees_hmc")
def chees_hmc(
    target: Target,
    step_size: float = 0.1,
    trajectory_length: float | None = None,
    *,
    target_accept: float = 0.651,
    inverse_mass_matrix=None,
    metric: str | None = "auto",
    learning_rate: float = 0.05,
    max_num_steps: int = 1000,
    divergence_threshold: float = 1000.0,
    criterion: str = "chees",
) -> Sampler:
    """Jittered HMC whose trajectory length is tuned across chains by ChEES (exact).

    Args:
        target: the :class:`~sgmcmc.Target` to sample.
        step_size: the leapfrog step size; with ``num_warmup > 0`` only where
            warmup starts (it first searches for a reasonable value).
        trajectory_length: ``T``; jittered lengths are ``u T`` with ``u`` in
            ``(0, 1)``. Defaults to ``step_size`` (warmup grows it).
        target_accept: the harmonic-mean acceptance across chains warmup aims
            for (0.651 as in the paper).
        inverse_mass_matrix: the inverse mass matrix to start from, a vector
            (diagonal) or a matrix (dense); identity by default. Warmup adapts it.
        metric: the mass matrix warmup estimates from the chains' pooled draws:
            ``"diag"``, ``"dense"``, or ``"auto"`` (the default): at the end of
            each of warmup's windows, the dense covariance where the correlations
            hold up on held-out draws (each half of the window, whitened by the
            other half's dense estimate, has a condition number at least 4 times
            smaller than with its diagonal; at least 10 draws per dimension:
            :func:`sgmcmc.adaptation.mass_matrix.prefers_dense`) and the
            window's chains agree (none in another mode), else its diagonal. ``"auto"`` is ``"diag"`` above
            :data:`~sgmcmc.adaptation.mass_matrix.AUTO_DENSE_MAX_DIM` (64)
            dimensions. ``None`` means the form of ``inverse_mass_matrix``. On the
            31-d logistic regression of ``benchmarks/nuts.py`` (correlation matrix
            condition number about 90) ``"auto"`` goes dense and needs 5x fewer
            gradients per effective draw; on Neal's funnel (10-d) it keeps the
            diagonal. Either way each transition is exact for its metric.
        learning_rate: Adam's learning rate on ``log T`` during warmup (with
            ``b1 = 0``, ``b2 = 0.95``, decaying linearly); see
            :func:`sgmcmc.adaptation.chees_adaptation` for why 0.05.
        max_num_steps: cap on leapfrog steps per transition.
        divergence_threshold: energy error beyond which a step is divergent.
        criterion: what warmup tunes ``T`` for: ``"chees"`` (the paper's
            criterion, good for variances) or ``"esjd"`` (expected squared jump
            distance, longer ``T``, good for means; on Neal's funnel it took 25x as many
            leapfrog steps per draw as ChEES and mixed worse); see
            :data:`sgmcmc.adaptation.chees.CRITERIA`. Either way the sampler is exact.

    Info: the fields of :func:`sgmcmc.hmc`'s ``HMCInfo``; ``num_grad_evals``
    is the jittered number of leapfrog steps, the same for every chain.

    Limitation: the trajectory-length adaptation can fall below one step size
    and stay there (every transition one leapfrog step). On posteriordb's
    kidiq, sblrc and kilpisjarvi posteriors it did, and 4 x 1000 draws did not
    converge (``benchmarks/chees_posteriordb.py``); check R-hat, or use
    :func:`sgmcmc.nuts`, which passes all nine.
    """
    step_size = check_step_size(step_size)
    if callable(step_size):
        raise ValueError("chees_hmc needs a float step size (warmup adapts it).")
    length = step_size if trajectory_length is None else check_step_size(trajectory_length, "trajectory_length")
    if callable(length):
        raise ValueError("trajectory_length must be a positive float.")
    target_accept = check_target_accept(target_accept)
    learning_rate = float(check_step_size(learning_rate, "learning_rate"))
    max_num_steps = _check_positive_int(max_num_steps, "max_num_steps")
    divergence_threshold = _check_threshold(divergence_threshold)
    criterion = check_criterion(criterion)
    flat, _ = ravel_pytree(target.initial_position)
    metric, inv_mass = _metric_and_start(metric, inverse_mass_matrix, flat.size, flat.dtype)
    settings = (
        step_size,
        length,
        target_accept,
        inv_mass,
        learning_rate,
        max_num_steps,
        divergence_threshold,
        criterion,
        metric,
    )
    return _build(target, settings)


def _build(target: Target, settings: tuple) -> Sampler:
    (
        step_size,
        length,
        target_accept,
        inv_mass,
        learning_rate,
        max_num_steps,
        divergence_threshold,
        criterion,
        metric,
    ) = settings
    starts_dense = _is_dense(metric, inv_mass)

    def init(position: PyTree) -> ChEESState:
        logdensity, grad = jax.value_and_grad(target.logdensity)(position)
        dtype = ravel_pytree(position)[0].dtype
        return ChEESState(
            position=position,
            logdensity=logdensity,
            logdensity_grad=grad,
            step_size=jnp.asarray(step_size, dtype),
            inverse_mass_matrix=jnp.asarray(inv_mass, dtype),
            trajectory_length=jnp.asarray(length, dtype),
            count=jnp.zeros((), jnp.int32),
            dense_metric=jnp.asarray(starts_dense),
        )

    transition = partial(
        chees_transition,
        target=target,
        divergence_threshold=divergence_threshold,
        max_num_steps=max_num_steps,
        metric=metric,
    )

    def step(key: jax.Array, state: ChEESState, batch=None) -> tuple[ChEESState, HMCInfo]:
        if batch is not None:
            raise ValueError("chees_hmc is a full-batch sampler; it does not take a minibatch.")
        new_state, info, _ = transition(key, state)
        return new_state, info

    def rebuild(new_target: Target) -> Sampler:
        return _build(new_target, settings)

    warmup = chees_adaptation(
        transition,
        partial(find_reasonable_step_size, target=target),
        target_accept=target_accept,
        learning_rate=learning_rate,
        criterion=criterion,
        metric=metric,
    )
    return Sampler(init, step, target, rebuild, "chees_hmc", True, warmup)
