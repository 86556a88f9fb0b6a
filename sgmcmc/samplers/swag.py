"""SWAG: a Gaussian fitted to the SGD trajectory (Maddox et al. 2019). Approximate.

Algorithm (Maddox, Izmailov, Garipov, Vetrov & Wilson 2019, "A simple
baseline for Bayesian uncertainty in deep learning", NeurIPS): run SGD with a
constant (or cyclical) learning rate and, every ``collect_every`` steps
(once per epoch by default), add the iterate ``theta_i`` to running moments

    theta_SWA = mean_i theta_i,     s = mean_i theta_i^2,     Sigma_diag = s - theta_SWA^2,

and keep the last ``K`` deviations ``D_i = theta_i - theta_SWA`` (the running
mean at collection time). The fitted posterior is

    N(theta_SWA, 1/2 (Sigma_diag + D D^T / (K - 1)))

(:class:`sgmcmc.swag_posterior.SWAGPosterior`, built from a run by
:func:`sgmcmc.swag_posterior.fit_swag`); ``MultiSWAG`` (Wilson & Izmailov
2020) is the equal-weight mixture of the SWAG Gaussians of independent runs,
which in sgmcmc are simply the chains of one :func:`sgmcmc.sample` call.

The SGD underneath is :func:`sgmcmc.constant_sgd` with every one of its
options (``learning_rate="optimal"``, momentum, the stability guard), and
collection starts when warmup ends (at step 0 without warmup). The draws
:func:`sgmcmc.sample` records are the SGD iterates themselves (constant-SGD
draws); SWAG's Gaussian is read from the final state.

How it is approximate: a single Gaussian per run whose covariance is that of
the SGD iterates (not the posterior's, unless the rate is Mandt et al.'s
optimum), rank ``K`` plus diagonal, with the factor 1/2 chosen by the
authors; MultiSWAG covers as many modes as there are runs.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.flatten_util import ravel_pytree

from sgmcmc._tree import PyTree
from sgmcmc.adaptation.base import Warmup
from sgmcmc.samplers.base import Sampler, register
from sgmcmc.samplers.constant_sgd import ConstantSGDState, SGDPreconditioner, check_sgd_settings, sgd_kernel
from sgmcmc.samplers.sg_common import SGInfo, data_scale
from sgmcmc.target import Target

__all__ = ["swag", "SWAGState", "SWAGMoments"]


class SWAGMoments(NamedTuple):
    """SWAG's running statistics over the collected iterates (flat ``(D,)`` vectors).

    ``deviations`` is a ring buffer: collection ``i`` is row ``i % K``.
    ``collecting`` is False during warmup; ``since`` counts steps since
    collection started.
    """

    mean: jax.Array
    sq_mean: jax.Array
    deviations: jax.Array
    num_collected: jax.Array
    collecting: jax.Array
    since: jax.Array


class SWAGState(NamedTuple):
    """State of a SWAG chain: the constant-SGD state's fields plus :class:`SWAGMoments`."""

    position: PyTree
    velocity: PyTree
    learning_rate: jax.Array
    preconditioner: SGDPreconditioner | None
    lambda_max: jax.Array
    count: jax.Array
    moments: SWAGMoments


def _sgd(state: SWAGState) -> ConstantSGDState:
    return ConstantSGDState(*state[:6])


def _with_sgd(state: SWAGState, sgd: ConstantSGDState) -> SWAGState:
    return SWAGState(*sgd, state.moments)


def _empty_moments(flat: jax.Array, max_rank: int, collecting: bool) -> SWAGMoments:
    zero = jnp.zeros_like(flat)
    return SWAGMoments(
        zero,
        zero,
        jnp.zeros((max_rank, flat.shape[0]), flat.dtype),
        jnp.zeros((), jnp.int32),
        jnp.asarray(collecting),
        jnp.zeros((), jnp.int32),
    )


def _collect(m: SWAGMoments, flat: jax.Array, collect_every: int) -> SWAGMoments:
    """Advance ``since`` and, every ``collect_every`` steps while collecting, add ``flat`` (branch-free)."""
    since = m.since + m.collecting.astype(jnp.int32)
    take = m.collecting & (since % collect_every == 0)
    n = m.num_collected.astype(flat.dtype)
    mean = (n * m.mean + flat) / (n + 1)
    sq_mean = (n * m.sq_mean + flat * flat) / (n + 1)
    row = m.num_collected % m.deviations.shape[0]
    old_row = lax.dynamic_index_in_dim(m.deviations, row, keepdims=False)
    deviations = lax.dynamic_update_index_in_dim(m.deviations, jnp.where(take, flat - mean, old_row), row, 0)
    return SWAGMoments(
        jnp.where(take, mean, m.mean),
        jnp.where(take, sq_mean, m.sq_mean),
        deviations,
        m.num_collected + take.astype(jnp.int32),
        m.collecting,
        since,
    )


@register("swag")
def swag(
    target: Target,
    learning_rate="optimal",
    *,
    batch_size: int | None = None,
    max_rank: int = 20,
    collect_every: int | None = None,
    **sgd_options,
) -> Sampler:
    """SWAG over constant SGD (approximate; see the module docstring).

    Args:
        target: a data-driven :class:`~sgmcmc.Target`.
        learning_rate, batch_size, **sgd_options: as :func:`sgmcmc.constant_sgd`
            (``momentum``, ``preconditioner``, ``stability``, ...).
        max_rank: ``K``, the number of deviations kept (rank of the low-rank
            part), at least 2.
        collect_every: SGD steps between collections; default one epoch,
            ``max(1, N // batch_size)``.
    """
    settings = check_sgd_settings(target, learning_rate, batch_size=batch_size, **sgd_options)
    if isinstance(max_rank, bool) or not isinstance(max_rank, int) or max_rank < 2:
        raise ValueError(f"max_rank (K, the deviations SWAG keeps) must be an integer >= 2, got {max_rank!r}.")
    if collect_every is None:
        collect_every = max(1, data_scale(target) // batch_size) if batch_size else 1
    elif isinstance(collect_every, bool) or not isinstance(collect_every, int) or collect_every < 1:
        raise ValueError(f"collect_every must be a positive integer, got {collect_every!r}.")
    return _build(target, settings, max_rank, collect_every)


def _build(target: Target, settings: dict, max_rank: int, collect_every: int) -> Sampler:
    kernel = sgd_kernel(target, settings)

    def init(position: PyTree) -> SWAGState:
        sgd = kernel.init(position)
        flat, _ = ravel_pytree(position)
        return SWAGState(*sgd, _empty_moments(flat, max_rank, True))

    def step(key: jax.Array, state: SWAGState, batch=None) -> tuple[SWAGState, SGInfo]:
        sgd, info = kernel.step(key, _sgd(state), batch)
        flat, _ = ravel_pytree(sgd.position)
        return SWAGState(*sgd, _collect(state.moments, flat, collect_every)), info

    def transition(key, state):
        new, info = step(key, state)
        return new, info, None

    inner = kernel.warmup

    def w_init(states, num_warmup: int):
        moments = states.moments._replace(collecting=jnp.zeros_like(states.moments.collecting))
        states = states._replace(moments=moments)
        if inner is None:
            return states, None
        sgd, adapt = inner.init(_sgd(states), num_warmup)
        return _with_sgd(states, sgd), adapt

    def w_prepare(keys, states, adapt, t):
        if inner is None:
            return states, adapt
        sgd, adapt = inner.prepare(keys, _sgd(states), adapt, t)
        return _with_sgd(states, sgd), adapt

    def w_update(keys, old_states, states, info, aux, adapt, t):
        if inner is None:
            return states, adapt
        sgd, adapt = inner.update(keys, _sgd(old_states), _sgd(states), info, aux, adapt, t)
        return _with_sgd(states, sgd), adapt

    def w_finalize(states, adapt):
        if inner is not None:
            states = _with_sgd(states, inner.finalize(_sgd(states), adapt))
        flat = jax.vmap(lambda p: ravel_pytree(p)[0])(states.position)
        moments = jax.vmap(lambda f: _empty_moments(f, max_rank, True))(flat)
        return states._replace(moments=moments)

    warmup = Warmup(transition, w_init, w_prepare, w_update, w_finalize, "swag")

    def rebuild(new_target: Target) -> Sampler:
        return _build(new_target, settings, max_rank, collect_every)

    return Sampler(init, step, target, rebuild, "swag", False, warmup, kernel.min_warmup)
