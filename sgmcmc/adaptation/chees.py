"""ChEES warmup: shared step size, trajectory length and diagonal metric across chains.

Hoffman, Radul & Sountsov (2021), "An adaptive MCMC scheme for setting
trajectory lengths in Hamiltonian Monte Carlo" (AISTATS). Every warmup step
runs one jittered HMC transition in every chain, then:

* **step size**: dual averaging (:mod:`~sgmcmc.adaptation.dual_averaging`)
  of the *harmonic mean* of the chains' acceptance probabilities toward
  ``target_accept`` (a chain stuck with tiny acceptance pulls it down);
* **trajectory length** ``T``: one Adam step (``b1 = 0``, ``b2 = 0.95``,
  learning rate decaying linearly over warmup to 5% of its start) on
  ``log T`` along the ChEES gradient estimate

      g = sum_m a_m * u_m T * (|x'_m - mean x'|^2 - |x_m - mean x|^2) * (x'_m - mean x') . v'_m / sum_m a_m

  (``x`` the start, ``x'`` the end of the trajectory before the Metropolis
  test, ``v'`` its velocity, ``a`` the acceptance probability, all in the
  coordinates whitened by the current metric), i.e. gradient ascent
  on the expected change in squared distance from the cross-chain mean;
  ``log T`` is then averaged with weights ``t^-0.75`` like dual averaging
  (``criterion="esjd"`` ascends the expected squared jump distance instead,
  with ``(x' - x) . v'`` in place of the product above; see :data:`CRITERIA`);
* **metric**: an inverse mass matrix from all chains' draws pooled, in Stan's
  doubling windows (:func:`~sgmcmc.adaptation.window.window_schedule`):
  the variances (``metric="diag"``), the covariance (``"dense"``), or
  (``"auto"``) the covariance where its correlations hold up on held-out
  draws (each half of the window whitened by the other half's estimate:
  :func:`~sgmcmc.adaptation.mass_matrix.prefers_dense`) and the chains
  agree (:data:`AUTO_DENSE_MAX_SPREAD`), its diagonal otherwise; after each
  update the step size is searched again and dual averaging and the ``T``
  average restart.

As in :func:`~sgmcmc.adaptation.window_adaptation`, the final buffer refines
the step size by a Robbins-Monro recursion on the same harmonic mean, so the
sampling phase meets ``target_accept`` rather than overshooting it; the step
size kept is the average of its iterates over the second half of that phase.

Learning rate: with 4 chains the ChEES gradient is very noisy and, for targets
whose squared distance oscillates along trajectories (Gaussians), nearly flat
beyond the first optimum; at 0.5 (BlackJAX's hand-tuned setting) ``log T``
overshoots into that flat region and random-walks there (T 10-20x too long on
the 100-d Gaussian, measured). 0.05, decaying, settles near the first optimum
within a few hundred steps from ``T = eps``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.flatten_util import ravel_pytree

from sgmcmc import noise
from sgmcmc.adaptation.base import Warmup
from sgmcmc.adaptation.dual_averaging import (
    KAPPA,
    DualAveragingState,
    dual_averaging_init,
    dual_averaging_update,
    robbins_monro_update,
)
from sgmcmc.adaptation.mass_matrix import (
    WelfordState,
    inverse_mass_matrix_estimate,
    prefers_dense,
    welford_init,
    welford_merge,
    welford_update,
)
from sgmcmc.adaptation.window import MAX_WINDOWS, final_buffer_length, window_schedule

__all__ = ["CRITERIA", "chees_adaptation", "check_criterion", "ChEESAdaptationState"]

#: What the trajectory length ascends during warmup (all quantities in whitened coordinates,
#: weighted by the acceptance probability, the gradient not taken through it):
#:
#: * ``"chees"`` -- the change in squared distance from the cross-chain mean,
#:   ``(|x' - mean|^2 - |x - mean|^2)^2 / 4`` (Hoffman, Radul & Sountsov 2021): a
#:   *second-moment* criterion. For a unit Gaussian with jittered lengths ``uT`` it peaks
#:   at ``T = 2.25``, near the best ESS per gradient of ``x^2``, where the lag-1
#:   correlation of ``x`` is still ``sin(T)/T = 0.35``.
#: * ``"esjd"`` -- the expected squared jump distance ``|x' - x|^2`` (Pasarica & Gelman
#:   2010), the *first-moment* criterion: it peaks at ``tan T = T``, ``T = 4.49``, where
#:   the lag-1 correlation of ``x`` is ``-0.22`` (antithetic draws); bulk ESS of the means
#:   per gradient is higher, ESS of variance estimates lower (measured on the 100-d
#:   Gaussian and the logistic regression of ``benchmarks/nuts.py``; see its README).
CRITERIA = ("chees", "esjd")


#: ``metric="auto"`` goes dense only if, in every coordinate, the variance of all chains'
#: draws in the window is at most this many times their within-chain variance (R-hat^2
#: of the window's draws, about 1 + 1/ESS per chain when the chains mix). On posteriordb's
#: low_dim_gauss_mix a chain sitting in a minor mode made the pooled dense estimate span
#: both modes, and 3 of 4 seeds stuck (min bulk ESS 6).
AUTO_DENSE_MAX_SPREAD = 1.1


def check_criterion(criterion: str) -> str:
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
    return criterion


class ChEESAdaptationState(NamedTuple):
    dual_averaging: DualAveragingState
    log_length: jax.Array
    log_length_avg: jax.Array
    length_count: jax.Array
    optimizer: Any
    welford: WelfordState  # pooled over chains; with metric="auto" per chain, the window's first half
    welford_late: WelfordState  # metric="auto": per chain, the window's second half
    slow_start: jax.Array
    slow_end: jax.Array
    window_ends: jax.Array
    num_warmup: jax.Array
    final_log_step_size: jax.Array
    final_count: jax.Array
    tail_sum: jax.Array  # sum of the final phase's iterates in its second half
    tail_count: jax.Array
    search_pending: jax.Array


def _pooled_update(state: WelfordState, xs: jax.Array) -> WelfordState:
    """Welford update with a batch of draws ``xs`` (chains, D) at once (Chan et al.)."""
    n_b = jnp.asarray(xs.shape[0], state.count.dtype)
    mean_b = jnp.mean(xs, axis=0)
    centred = xs - mean_b
    count = state.count + n_b
    delta = mean_b - state.mean
    mean = state.mean + delta * n_b / count
    if state.m2.ndim == 2:  # dense: sums of cross-products
        m2 = state.m2 + centred.T @ centred + jnp.outer(delta, delta) * state.count * n_b / count
    else:
        m2 = state.m2 + jnp.sum(centred**2, axis=0) + delta**2 * state.count * n_b / count
    return WelfordState(count, mean, m2)


def _window_stats(metric: str, dim: int, dtype, step_sizes: jax.Array) -> WelfordState:
    """Empty window statistics: per chain (leading chain axis) for ``"auto"``, pooled otherwise."""
    dense = metric != "diag"
    if metric == "auto":
        return jax.vmap(lambda _: welford_init(dim, dtype, dense=dense))(step_sizes)
    return welford_init(dim, dtype, dense=dense)


def _within_chains(state: WelfordState) -> WelfordState:
    """Per-chain statistics (leading chain axis) pooled *within* chains (R-hat's W).

    Sums of squared deviations from each chain's own mean, with the count set
    so that ``m2 / (count - 1)`` divides by ``n - chains``.
    """
    num_chains = state.count.shape[0]
    count = jnp.sum(state.count) - (num_chains - 1.0)
    return WelfordState(count, jnp.mean(state.mean, axis=0), jnp.sum(state.m2, axis=0))


def _all_chains(state: WelfordState) -> WelfordState:
    """Per-chain statistics (leading chain axis) merged: those of all the chains' draws together."""
    merged = jax.tree.map(lambda x: x[0], state)
    for c in range(1, state.count.shape[0]):
        merged = welford_merge(merged, jax.tree.map(lambda x, c=c: x[c], state))
    return merged


def _chains_agree(state: WelfordState) -> jax.Array:
    """Whether the chains' draws in the window agree: total over within-chain variance at most
    :data:`AUTO_DENSE_MAX_SPREAD` in every coordinate (per-chain statistics, leading chain axis)."""
    total, within = _all_chains(state), _within_chains(state)

    def variances(w):
        m2 = jnp.diagonal(w.m2) if w.m2.ndim == 2 else w.m2
        return m2 / jnp.maximum(w.count - 1.0, 1.0)

    ratio = variances(total) / jnp.maximum(variances(within), jnp.finfo(total.m2.dtype).tiny)
    return jnp.all(ratio <= AUTO_DENSE_MAX_SPREAD)


def _whiten(inverse_mass_matrix: jax.Array, positions: jax.Array, momenta: jax.Array):
    """Positions ``L^{-1} x`` and velocities ``L^{-1} M^{-1} p = L^T p`` with ``L L^T = M^{-1}``.

    ``positions`` and ``momenta`` are (chains, D); ``inverse_mass_matrix`` is
    one chain's (a vector, or a matrix for a dense metric).
    """
    if inverse_mass_matrix.ndim == 1:
        scale = jnp.sqrt(inverse_mass_matrix)
        return positions / scale, momenta * scale
    chol = jnp.linalg.cholesky(inverse_mass_matrix)
    whitened = jax.scipy.linalg.solve_triangular(chol, positions.T, lower=True).T
    return whitened, momenta @ chol


def _whiten_both(inverse_mass_matrix: jax.Array, starts: jax.Array, proposal):
    """Whitened trajectory ends, starts and end velocities (see :func:`_whiten`)."""
    ends, velocity = _whiten(inverse_mass_matrix, proposal.position, proposal.momentum)
    begins, _ = _whiten(inverse_mass_matrix, starts, proposal.momentum)
    return ends, begins, velocity


def chees_adaptation(
    transition: Callable,
    find_step_size: Callable,
    *,
    target_accept: float = 0.651,
    learning_rate: float = 0.05,
    criterion: str = "chees",
    metric: str = "diag",
) -> Warmup:
    """The ChEES warmup for a transition ``(key, state) -> (state, info, proposal)``.

    ``criterion`` is what ``T`` ascends: ``"chees"`` (the default) or
    ``"esjd"`` (see :data:`CRITERIA`). ``metric`` is the mass matrix estimated
    from the pooled draws at the end of each window: ``"diag"`` (variances;
    the states carry vectors), ``"dense"`` (covariance) or ``"auto"`` (the
    states carry matrices; each window's estimate is kept dense where
    :func:`~sgmcmc.adaptation.mass_matrix.prefers_dense` says its correlations
    are worth it, else reduced to its diagonal).
    """
    criterion = check_criterion(criterion)
    if metric not in ("diag", "dense", "auto"):
        raise ValueError(f"metric must be 'diag', 'dense' or 'auto', got {metric!r}.")
    optimizer = optax.adam(1.0, b1=0.0, b2=0.95)

    def broadcast(states, step_size, length):
        n = states.step_size.shape[0]
        return states._replace(
            step_size=jnp.full((n,), step_size, states.step_size.dtype),
            trajectory_length=jnp.full((n,), length, states.trajectory_length.dtype),
        )

    def final_start(adapt):
        return jnp.where(adapt.slow_end > 0, adapt.slow_end, adapt.num_warmup // 2)

    def tail_start(adapt):
        start = final_start(adapt)
        return start + (adapt.num_warmup - start) // 2

    def init(states, num_warmup: int) -> tuple:
        slow_start, slow_end, ends = window_schedule(int(num_warmup), final_buffer=final_buffer_length(num_warmup))
        padded = np.full(MAX_WINDOWS, -1, np.int32)
        padded[: len(ends)] = ends
        step_size = jnp.exp(jnp.mean(jnp.log(states.step_size)))
        log_length = jnp.log(jnp.maximum(states.trajectory_length[0], step_size))
        dim = jax.vmap(lambda p: ravel_pytree(p)[0])(states.position).shape[1]
        dtype = states.step_size.dtype
        adapt = ChEESAdaptationState(
            dual_averaging=dual_averaging_init(step_size),
            log_length=log_length,
            log_length_avg=log_length,
            length_count=jnp.zeros((), dtype),
            optimizer=optimizer.init(log_length),
            welford=_window_stats(metric, dim, dtype, states.step_size),
            welford_late=_window_stats(metric, dim if metric == "auto" else 0, dtype, states.step_size),
            slow_start=jnp.int32(slow_start),
            slow_end=jnp.int32(slow_end),
            window_ends=jnp.asarray(padded),
            num_warmup=jnp.int32(num_warmup),
            final_log_step_size=jnp.log(step_size),
            final_count=jnp.zeros((), dtype),
            tail_sum=jnp.zeros((), dtype),
            tail_count=jnp.zeros((), dtype),
            search_pending=jnp.bool_(True),
        )
        return broadcast(states, step_size, jnp.exp(log_length)), adapt

    def prepare(keys, states, adapt: ChEESAdaptationState, t):
        def search(args):
            states, adapt = args
            search_keys = jax.vmap(noise.fold_in, in_axes=(0, None))(keys, 0x5EA5C4)
            sizes = jax.vmap(find_step_size)(search_keys, states)
            step_size = jnp.exp(jnp.mean(jnp.log(sizes)))  # one step size shared by all chains
            first = t == 0
            in_final = t >= final_start(adapt)
            log_length = jnp.where(first, jnp.maximum(adapt.log_length, jnp.log(step_size)), adapt.log_length)
            adapt = adapt._replace(
                dual_averaging=dual_averaging_init(step_size),
                log_length=log_length,
                log_length_avg=log_length,
                length_count=jnp.zeros_like(adapt.length_count),
                optimizer=jax.tree.map(
                    lambda new, old: jnp.where(first, new, old), optimizer.init(log_length), adapt.optimizer
                ),
                final_log_step_size=jnp.where(first | in_final, jnp.log(step_size), adapt.final_log_step_size),
                final_count=jnp.where(in_final, 0.0, adapt.final_count).astype(adapt.final_count.dtype),
                tail_sum=jnp.where(in_final, 0.0, adapt.tail_sum).astype(adapt.tail_sum.dtype),
                tail_count=jnp.where(in_final, 0.0, adapt.tail_count).astype(adapt.tail_count.dtype),
                search_pending=jnp.bool_(False),
            )
            return broadcast(states, step_size, jnp.exp(log_length)), adapt

        return lax.cond(adapt.search_pending, search, lambda a: a, (states, adapt))

    def update(keys, old_states, states, info, proposal, adapt: ChEESAdaptationState, t):
        del keys
        starts = jax.vmap(lambda p: ravel_pytree(p)[0])(old_states.position)
        in_final = t >= final_start(adapt)
        step_size = old_states.step_size[0]
        dtype = starts.dtype

        # Step size: harmonic mean of the acceptance probabilities across chains.
        accept = jnp.where(info.is_divergent, 0.0, info.acceptance_rate).astype(dtype)
        harmonic = 1.0 / jnp.mean(1.0 / jnp.maximum(accept, 1e-10))
        da = dual_averaging_update(adapt.dual_averaging, harmonic, target_accept)
        final_log, final_count = robbins_monro_update(
            adapt.final_log_step_size, adapt.final_count, harmonic, target_accept
        )
        final_log = jnp.where(in_final, final_log, adapt.final_log_step_size)
        final_count = jnp.where(in_final, final_count, adapt.final_count)

        # Trajectory length: ChEES gradient in whitened coordinates.
        # The metric is equal across chains: whiten with the first chain's.
        inverse_mass_matrix = old_states.inverse_mass_matrix[0]
        if metric == "auto":  # a matrix used as diagonal unless the states say dense
            ends, begins, velocity = lax.cond(
                old_states.dense_metric[0],
                lambda m: _whiten_both(m, starts, proposal),
                lambda m: _whiten_both(jnp.diagonal(m), starts, proposal),
                inverse_mass_matrix,
            )
        else:
            ends, begins, velocity = _whiten_both(inverse_mass_matrix, starts, proposal)
        ends_c = ends - jnp.mean(ends, axis=0)
        begins_c = begins - jnp.mean(begins, axis=0)
        used = proposal.num_steps.astype(dtype) * step_size
        if criterion == "chees":
            change = jnp.sum(ends_c**2, axis=1) - jnp.sum(begins_c**2, axis=1)
            per_chain = used * change * jnp.sum(ends_c * velocity, axis=1)
        else:  # esjd: d |x'(uT) - x|^2 / d log T = 2 u T (x' - x) . v'
            per_chain = used * 2.0 * jnp.sum((ends - begins) * velocity, axis=1)
        ok = jnp.isfinite(per_chain) & ~info.is_divergent
        weight = jnp.where(ok, accept, 0.0)
        grad_length = jnp.sum(weight * jnp.where(ok, per_chain, 0.0)) / jnp.maximum(jnp.sum(weight), 1e-10)
        # ``used`` already carries the factor u T = dT_used / dlog T: this is d criterion / d log T.
        grad_log = -grad_length  # ascent on the criterion = descent on its negative
        updates, opt_state = optimizer.update(grad_log, adapt.optimizer, adapt.log_length)
        # Adam with b1 = 0 moves log T by about the learning rate per step whatever the
        # gradient's size, so near the optimum log T random-walks; a learning rate
        # decaying linearly over warmup (to 5% of it) lets it settle.
        progress = t.astype(dtype) / jnp.maximum(adapt.num_warmup, 1).astype(dtype)
        rate = learning_rate * jnp.maximum(1.0 - progress, 0.05)
        log_length = adapt.log_length + rate * updates
        max_log = jnp.log(step_size * 1000.0)
        log_length = jnp.where(jnp.isfinite(log_length), jnp.minimum(log_length, max_log), adapt.log_length)
        length_count = adapt.length_count + 1.0
        eta = length_count ** (-KAPPA)
        log_length_avg = eta * log_length + (1.0 - eta) * adapt.log_length_avg

        # Metric: pooled (co)variance in the slow windows. With metric="auto" the window's
        # two halves are kept apart (``welford``, ``welford_late``) for prefers_dense.
        in_slow = (t >= adapt.slow_start) & (t < adapt.slow_end)
        flat = jax.vmap(lambda p: ravel_pytree(p)[0])(states.position)
        if metric == "auto":
            ends = adapt.window_ends
            window_end = jnp.min(jnp.where(ends > t, ends, adapt.slow_end))
            window_start = jnp.max(jnp.where((ends >= 0) & (ends <= t), ends, adapt.slow_start))
            late = t >= (window_start + window_end) // 2
            welford = lax.cond(in_slow & ~late, lambda w: jax.vmap(welford_update)(w, flat), lambda w: w, adapt.welford)
            welford_late = lax.cond(
                in_slow & late, lambda w: jax.vmap(welford_update)(w, flat), lambda w: w, adapt.welford_late
            )
        else:
            welford = lax.cond(in_slow, lambda w: _pooled_update(w, flat), lambda w: w, adapt.welford)
            welford_late = adapt.welford_late  # unused (empty)

        def end_window(args):
            states, welford, welford_late = args
            if metric == "auto":
                per_chain = jax.vmap(welford_merge)(welford, welford_late)
                pooled = _all_chains(per_chain)
            else:
                pooled = welford
            inv_mass = inverse_mass_matrix_estimate(pooled).astype(states.inverse_mass_matrix.dtype)
            states = states._replace(inverse_mass_matrix=jnp.broadcast_to(inv_mass, states.inverse_mass_matrix.shape))
            if metric == "auto":
                # Dense only from chains that agree (none stuck in another mode, none still
                # drifting), on correlations that hold up on held-out draws.
                use_dense = _chains_agree(per_chain) & prefers_dense(
                    _within_chains(welford), _within_chains(welford_late)
                )
                inv_mass = jnp.where(use_dense, inv_mass, jnp.diag(jnp.diagonal(inv_mass)))
                states = states._replace(
                    inverse_mass_matrix=jnp.broadcast_to(inv_mass, states.inverse_mass_matrix.shape),
                    dense_metric=jnp.full(states.dense_metric.shape, use_dense),
                )
            fresh = _window_stats(metric, inv_mass.shape[0], inv_mass.dtype, states.step_size)
            return states, fresh, (fresh if metric == "auto" else welford_late)

        is_end = jnp.any(adapt.window_ends == t + 1)
        states, welford, welford_late = lax.cond(is_end, end_window, lambda a: a, (states, welford, welford_late))
        # Entering the final phase: refine from dual averaging's average iterate
        # (when a window ends there too, the search before the next step overrides it).
        final_log = jnp.where(t + 1 == final_start(adapt), da.log_step_size_avg, final_log)
        in_tail = t >= tail_start(adapt)
        adapt = adapt._replace(
            tail_sum=jnp.where(in_tail, adapt.tail_sum + final_log, adapt.tail_sum),
            tail_count=jnp.where(in_tail, adapt.tail_count + 1.0, adapt.tail_count),
            dual_averaging=da,
            log_length=log_length,
            log_length_avg=log_length_avg,
            length_count=length_count,
            optimizer=opt_state,
            welford=welford,
            welford_late=welford_late,
            final_log_step_size=final_log,
            final_count=final_count,
            search_pending=is_end,
        )
        next_log = jnp.where(t + 1 >= final_start(adapt), final_log, da.log_step_size)
        return broadcast(states, jnp.exp(next_log), jnp.exp(log_length)), adapt

    def finalize(states, adapt: ChEESAdaptationState):
        averaged = adapt.tail_sum / jnp.maximum(adapt.tail_count, 1.0)
        step_size = jnp.exp(jnp.where(adapt.tail_count > 0, averaged, adapt.final_log_step_size))
        length = jnp.exp(adapt.log_length_avg)
        return broadcast(states, step_size, length)

    return Warmup(transition, init, prepare, update, finalize, "chees_adaptation")
