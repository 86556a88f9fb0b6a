"""Stan's windowed warmup: step size by dual averaging, mass matrix in doubling windows.

Schedule (Stan reference manual, "HMC algorithm parameters / automatic
parameter tuning"): a fast initial buffer (75 steps) where only the step size
adapts; a series of slow windows (25, 50, 100, ... steps, the last one
stretched to the end of the slow phase) at the end of each of which the
inverse mass matrix is set to the regularised (co)variance of the window's
draws, the step size is searched again and dual averaging restarts; a fast
final buffer for the step size alone: Stan's is 50 steps, ours is
``max(50, num_warmup // 4)`` (:func:`final_buffer_length`, measured to need
it). With fewer than 150 warmup
steps the buffers are 15% / 75% / 10% of them; with fewer than 100 only the
step size adapts. The final buffer (or, without windows, the second half of
warmup) refines the step size by a Robbins-Monro recursion started from dual
averaging's average iterate
(:func:`~sgmcmc.adaptation.dual_averaging.robbins_monro_update`): Stan's
average iterate alone overshoots the target acceptance (0.85-0.89 for 0.8),
which wastes leapfrog steps; the refined step size meets it. The step size
kept is the average of the recursion's (log) iterates over the second half
of the final phase (Polyak-Ruppert tail averaging): its last iterate alone
still moves by ``(t + 1)^-0.6`` per step, enough to miss the target by 0.05
on some seeds.

A divergent transition counts as acceptance 0 in both recursions: it is
evidence that the step size is too large for part of the posterior, while
its acceptance statistic (an average over the trajectory built before the
divergence) can be high. On Neal's 10-d funnel (3 seeds, 1000 + 1000, 4
chains) this cut post-warmup divergences from 25/13/87 to 13/9/4 and raised
the smallest bulk ESS from 14/17/11 to 76/17/34; targets without divergences
are unaffected.

For NUTS, the final phase also counts each chain's trees by their number of
doublings and warmup ends by setting the chain's ``min_tree_depth`` from
them (``adapt_min_tree_depth``; see :func:`sgmcmc.nuts`).

Every chain adapts independently (the per-chain parts are vmapped), in one
compiled program, through the :class:`~sgmcmc.adaptation.base.Warmup`
contract. It applies to any sampler whose state has ``step_size`` and
``inverse_mass_matrix`` (HMC, MALA, NUTS) and whose info has
``acceptance_rate``. The adaptation itself is not part of the stationary
chain: draws are only kept after it ends.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.flatten_util import ravel_pytree

from sgmcmc import noise
from sgmcmc.adaptation.base import Warmup
from sgmcmc.adaptation.dual_averaging import (
    DualAveragingState,
    dual_averaging_init,
    dual_averaging_update,
    robbins_monro_update,
)
from sgmcmc.adaptation.mass_matrix import WelfordState, inverse_mass_matrix_estimate, welford_init, welford_update

__all__ = ["window_adaptation", "window_schedule", "check_target_accept", "WindowAdaptationState"]

MAX_WINDOWS = 32
#: Bins of the histogram of NUTS tree depths (number of doublings, 0..30).
DEPTH_BINS = 32
#: NUTS's adapted ``min_tree_depth`` is ``d - 1`` with ``d`` this quantile of the
#: number of doublings of the final phase's trees, when at least
#: ``DEPTH_CONCENTRATION`` of them took ``d - 1`` or ``d`` doublings; 0 otherwise.
DEPTH_QUANTILE = 0.75
DEPTH_CONCENTRATION = 0.95
#: Below this many warmup steps only the step size adapts (Stan's threshold is 20,
#: but a final buffer of 2-10 steps leaves dual averaging with a step size far
#: too large right after its restart).
MIN_WARMUP_FOR_METRIC = 100


def check_target_accept(target_accept) -> float:
    if isinstance(target_accept, bool) or not isinstance(target_accept, numbers.Real):
        raise TypeError(f"target_accept must be a float in (0, 1), got {target_accept!r}.")
    value = float(target_accept)
    if not 0.0 < value < 1.0:
        raise ValueError(f"target_accept must be in (0, 1), got {value}.")
    return value


def final_buffer_length(num_warmup: int) -> int:
    """Steps of the final (step-size only) phase: ``max(50, num_warmup // 4)``.

    Stan's 50 steps leave the Robbins-Monro refinement too few steps to pin
    the step size down: measured on a 20-d Gaussian over 6 seeds with 500
    warmup steps, the sampling-phase acceptance of MALA (target 0.574) spread
    over 0.52-0.63 and ChEES's harmonic mean (target 0.651) over 0.56-0.66 with
    50 steps, against 0.55-0.60 and 0.64-0.67 with 150. The slow windows give
    up those steps; the last one still holds the most draws.
    """
    return max(50, int(num_warmup) // 4)


def window_schedule(
    num_warmup: int, initial_buffer: int = 75, first_window: int = 25, final_buffer: int = 50
) -> tuple[int, int, list[int]]:
    """``(slow_start, slow_end, window_ends)`` of Stan's schedule for ``num_warmup`` steps.

    The mass matrix is estimated from the draws of steps ``[start, end)`` of
    each window and set after step ``end - 1``.
    """
    if num_warmup < MIN_WARMUP_FOR_METRIC:
        return 0, 0, []
    if initial_buffer + first_window + final_buffer > num_warmup:
        initial_buffer = int(0.15 * num_warmup)
        final_buffer = int(0.1 * num_warmup)
        first_window = num_warmup - initial_buffer - final_buffer
    slow_end = num_warmup - final_buffer
    ends = []
    start, size = initial_buffer, first_window
    while True:
        end = start + size
        if end + 2 * size > slow_end:
            end = slow_end
        ends.append(end)
        if end >= slow_end:
            break
        start, size = end, 2 * size
    return initial_buffer, slow_end, ends


class ChainAdaptation(NamedTuple):
    dual_averaging: DualAveragingState
    welford: WelfordState
    final_log_step_size: jax.Array  # Robbins-Monro iterate of the final phase
    final_count: jax.Array
    tail_sum: jax.Array  # sum of the iterates in the second half of the final phase
    tail_count: jax.Array
    depth_counts: jax.Array  # (DEPTH_BINS,) int32: NUTS trees of the final phase by doublings; (0,) otherwise


class WindowAdaptationState(NamedTuple):
    """Per-chain adaptation state (leading chain axis) and the shared schedule."""

    chains: ChainAdaptation
    slow_start: jax.Array
    slow_end: jax.Array
    window_ends: jax.Array  # (MAX_WINDOWS,), padded with -1
    final_start: jax.Array  # first step of the final (Robbins-Monro) phase
    tail_start: jax.Array  # first step whose iterate enters the average
    search_pending: jax.Array  # search a step size before the next step


def window_adaptation(
    kernel_step: Callable,
    find_step_size: Callable,
    *,
    target_accept: float = 0.8,
    metric: str = "diag",
    adapt_mass_matrix: bool = True,
    adapt_min_tree_depth: bool = False,
) -> Warmup:
    """Stan's windowed adaptation of a kernel.

    Args:
        kernel_step: ``(key, state) -> (state, info)`` for one chain.
        find_step_size: ``(key, state) -> step size``, the kernel's search for
            a reasonable step size (e.g.
            :func:`sgmcmc.samplers.step_size_search.find_reasonable_step_size`),
            run before the first step and after every mass-matrix update.
        target_accept: the mean acceptance statistic to reach.
        metric: ``"diag"`` or ``"dense"``.
        adapt_mass_matrix: ``False`` adapts the step size only.
        adapt_min_tree_depth: for NUTS (a state with ``min_tree_depth``, an
            info with ``num_grad_evals``): count each chain's trees of the
            final phase by their number of doublings (the bit length of the
            leapfrog step count). With ``d`` the upper quartile of that count,
            when at least 95% of the trees took ``d - 1`` or ``d`` doublings
            (a posterior whose trajectories share one length scale, and the
            shorter trees are the U-turn check firing early), warmup ends with
            ``min_tree_depth = d - 1``, so that no tree stops before the
            chain's longer trees; otherwise (trees of many depths: the
            geometry changes across the posterior, as in a funnel) it stays
            0. On a Gaussian whose trees all take ``d`` doublings it is
            ``d - 1``, which changes only the rare trees that stopped earlier.
    """
    dense = metric == "dense"

    def transition(key, state):
        new_state, info = kernel_step(key, state)
        return new_state, info, None

    def init(states, num_warmup: int) -> tuple:
        slow_start, slow_end, ends = window_schedule(int(num_warmup), final_buffer=final_buffer_length(num_warmup))
        if not adapt_mass_matrix:
            slow_start, slow_end, ends = 0, 0, []
        if len(ends) > MAX_WINDOWS:
            raise ValueError(f"num_warmup={num_warmup} gives more than {MAX_WINDOWS} adaptation windows.")
        padded = np.full(MAX_WINDOWS, -1, np.int32)
        padded[: len(ends)] = ends
        flat0 = jax.vmap(lambda p: ravel_pytree(p)[0])(states.position)
        dim, dtype = flat0.shape[1], flat0.dtype
        step_sizes = states.step_size
        chains = ChainAdaptation(
            jax.vmap(dual_averaging_init)(step_sizes),
            jax.vmap(lambda _: welford_init(dim, dtype, dense))(flat0),
            jnp.log(step_sizes),
            jnp.zeros_like(step_sizes),
            jnp.zeros_like(step_sizes),
            jnp.zeros_like(step_sizes),
            # NUTS's tree-depth histogram; empty (nothing carried) for other kernels.
            jnp.zeros((*step_sizes.shape, DEPTH_BINS if adapt_min_tree_depth else 0), jnp.int32),
        )
        final_start = slow_end if ends else int(num_warmup) // 2
        tail_start = final_start + (int(num_warmup) - final_start) // 2
        adapt = WindowAdaptationState(
            chains,
            jnp.int32(slow_start),
            jnp.int32(slow_end),
            jnp.asarray(padded),
            jnp.int32(final_start),
            jnp.int32(tail_start),
            jnp.bool_(True),
        )
        return states, adapt

    def prepare(keys, states, adapt: WindowAdaptationState, t):
        def search(args):
            states, adapt = args
            search_keys = jax.vmap(noise.fold_in, in_axes=(0, None))(keys, 0x5EA5C4)
            step_sizes = jax.vmap(find_step_size)(search_keys, states)
            chains = adapt.chains
            # A search inside the final phase (after the last window) restarts its recursion.
            in_final = t >= adapt.final_start
            chains = chains._replace(
                dual_averaging=jax.vmap(dual_averaging_init)(step_sizes),
                final_log_step_size=jnp.where(in_final, jnp.log(step_sizes), chains.final_log_step_size),
                final_count=jnp.where(in_final, 0.0, chains.final_count).astype(chains.final_count.dtype),
                tail_sum=jnp.where(in_final, 0.0, chains.tail_sum).astype(chains.tail_sum.dtype),
                tail_count=jnp.where(in_final, 0.0, chains.tail_count).astype(chains.tail_count.dtype),
            )
            states = states._replace(step_size=step_sizes)
            return states, adapt._replace(chains=chains, search_pending=jnp.bool_(False))

        return lax.cond(adapt.search_pending, search, lambda a: a, (states, adapt))

    def update(keys, old_states, states, info, aux, adapt: WindowAdaptationState, t):
        del keys, old_states, aux
        chains = adapt.chains
        in_final = t >= adapt.final_start
        accept = jnp.where(info.is_divergent, 0.0, info.acceptance_rate)
        da = jax.vmap(dual_averaging_update, in_axes=(0, 0, None))(chains.dual_averaging, accept, target_accept)
        final_log, final_count = jax.vmap(robbins_monro_update, in_axes=(0, 0, 0, None))(
            chains.final_log_step_size, chains.final_count, accept, target_accept
        )
        final_log = jnp.where(in_final, final_log, chains.final_log_step_size)
        final_count = jnp.where(in_final, final_count, chains.final_count)
        in_slow = (t >= adapt.slow_start) & (t < adapt.slow_end)
        flat = jax.vmap(lambda p: ravel_pytree(p)[0])(states.position)
        welford = lax.cond(
            in_slow,
            lambda w: jax.vmap(welford_update)(w, flat),
            lambda w: w,
            chains.welford,
        )

        def end_window(args):
            states, welford = args
            inv_mass = jax.vmap(inverse_mass_matrix_estimate)(welford).astype(states.inverse_mass_matrix.dtype)
            states = states._replace(inverse_mass_matrix=inv_mass)
            dim = flat.shape[1]
            fresh = jax.vmap(lambda _: welford_init(dim, flat.dtype, dense))(flat)
            return states, fresh

        is_end = jnp.any(adapt.window_ends == t + 1)
        states, welford = lax.cond(is_end, end_window, lambda a: a, (states, welford))
        # Entering the final phase: refine from dual averaging's average iterate
        # (when a window ends there too, the search before the next step overrides it).
        final_log = jnp.where(t + 1 == adapt.final_start, da.log_step_size_avg, final_log)
        next_log = jnp.where(t + 1 >= adapt.final_start, final_log, da.log_step_size)
        states = states._replace(step_size=jnp.exp(next_log).astype(states.step_size.dtype))
        in_tail = t >= adapt.tail_start
        tail_sum = jnp.where(in_tail, chains.tail_sum + final_log, chains.tail_sum)
        tail_count = jnp.where(in_tail, chains.tail_count + 1.0, chains.tail_count)
        depth_counts = chains.depth_counts
        if adapt_min_tree_depth:
            steps = info.num_grad_evals.astype(jnp.int32)
            doublings = jnp.where(steps > 0, 32 - lax.clz(steps), 0)
            depth_counts = depth_counts + (in_final & ~info.is_divergent)[:, None] * jax.nn.one_hot(
                doublings, DEPTH_BINS, dtype=jnp.int32
            )
        chains = ChainAdaptation(da, welford, final_log, final_count, tail_sum, tail_count, depth_counts)
        return states, adapt._replace(chains=chains, search_pending=is_end)

    def finalize(states, adapt: WindowAdaptationState):
        chains = adapt.chains
        averaged = chains.tail_sum / jnp.maximum(chains.tail_count, 1.0)
        log_step = jnp.where(chains.tail_count > 0, averaged, chains.final_log_step_size)
        states = states._replace(step_size=jnp.exp(log_step).astype(states.step_size.dtype))
        if adapt_min_tree_depth:
            states = states._replace(min_tree_depth=_min_tree_depth(chains.depth_counts))
        return states

    return Warmup(transition, init, prepare, update, finalize, "window_adaptation")


def _min_tree_depth(depth_counts: jax.Array) -> jax.Array:
    """Per chain (last axis: counts by number of doublings): NUTS's adapted ``min_tree_depth``.

    ``d`` is the upper quartile (``DEPTH_QUANTILE``) of the counted doublings;
    when at least ``DEPTH_CONCENTRATION`` of the trees took ``d - 1`` or ``d``
    doublings the result is ``d - 1``, otherwise 0 (Stan's NUTS).
    """
    counts = depth_counts.astype(jnp.float32)
    cumulative = jnp.cumsum(counts, axis=-1)
    total = cumulative[..., -1]
    d = jnp.argmax(cumulative >= jnp.ceil(DEPTH_QUANTILE * total)[..., None], axis=-1)
    at_d = jnp.take_along_axis(counts, d[..., None], axis=-1)[..., 0]
    below = jnp.take_along_axis(counts, jnp.maximum(d - 1, 0)[..., None], axis=-1)[..., 0]
    share = (at_d + jnp.where(d > 0, below, 0.0)) / jnp.maximum(total, 1.0)
    concentrated = (total > 0) & (share >= DEPTH_CONCENTRATION)
    return jnp.where(concentrated, jnp.maximum(d - 1, 0), 0).astype(jnp.int32)
