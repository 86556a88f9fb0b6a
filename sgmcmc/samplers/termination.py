"""The generalised no-U-turn criterion of NUTS (Betancourt 2017).

A trajectory segment with end velocities ``p#_a = M^{-1} p_a`` and
``p#_b = M^{-1} p_b`` and summed momentum ``rho`` keeps going while both
``p#_a . rho > 0`` and ``p#_b . rho > 0`` (Betancourt 2017, "A conceptual
introduction to Hamiltonian Monte Carlo", appendix A.4.2; Stan's
``compute_criterion``). The criterion is symmetric in the two ends, so it
does not depend on the direction the segment was integrated in.

Every balanced sub-tree of a NUTS trajectory is checked when it is complete,
with Stan's two extra checks across its halves (since Stan 2.23): the first
half plus the first point of the second, and the last point of the first half
plus the second half. :class:`Checkpoints` keeps what those checks need for
every level of the tree being built, so that the checks of one leapfrog step
are a few vectorised dot products over the levels, with no inner loop.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["is_turning", "Checkpoints", "init_checkpoints", "checkpoint_step"]


def is_turning(p_sharp_a: jax.Array, p_sharp_b: jax.Array, rho: jax.Array) -> jax.Array:
    """True where the segment with end velocities ``p_sharp_a``, ``p_sharp_b`` and momentum sum ``rho`` turns.

    Works on the last axis; leading axes broadcast.
    """
    return ~((jnp.sum(p_sharp_a * rho, axis=-1) > 0) & (jnp.sum(p_sharp_b * rho, axis=-1) > 0))


class Checkpoints(NamedTuple):
    """What the U-turn checks of a sub-tree need, in ``levels`` rows each.

    Every leaf ``m`` (0-based in the sub-tree) is described by its velocity
    ``v_m = M^{-1} p_m``, the sub-tree's momentum sum *before* it ``S_{m-1}``
    and their dot product. A leaf that starts a balanced block is stored in
    the ``begin_*`` rows at row ``tz(m)`` (trailing zeros of ``m``, the top
    row for ``m = 0``); a leaf that ends one in the ``end_*`` rows at row
    ``tz(m + 1)``. With this layout the first leaf of the level-``k`` block
    being closed sits in begin row ``tz(a)`` and the end of its first half in
    end row ``k - 1``, and nothing a later check needs is overwritten; each
    leaf writes two rows and reads the rest through four matrix-vector
    products, so a leaf costs ``O(levels * D)`` multiply-adds in a few fused
    kernels and ``O(D)`` memory writes. The cross-half check of the first
    half with the second's first leaf only involves quantities known when the
    second half starts, so it is done then and kept in ``first_half_ok``.
    """

    begin_velocity: jax.Array
    begin_sum: jax.Array
    begin_dot: jax.Array
    end_velocity: jax.Array
    end_sum: jax.Array
    end_dot: jax.Array
    first_half_ok: jax.Array


def init_checkpoints(num_levels: int, like: jax.Array) -> Checkpoints:
    zeros = jnp.zeros((num_levels, like.shape[-1]), like.dtype)
    scalars = jnp.zeros((num_levels,), like.dtype)
    return Checkpoints(zeros, zeros, scalars, zeros, zeros, scalars, jnp.ones((num_levels,), bool))


def _trailing_zeros(x: jax.Array, cap: int) -> jax.Array:
    """Trailing zero bits of the int32 ``x`` (``x = 0`` gives ``cap``), at most ``cap``."""
    return jnp.minimum(lax.population_count((x & -x) - 1), cap).astype(jnp.int32)


def checkpoint_step(
    ckpt: Checkpoints,
    leaf: jax.Array,
    depth: jax.Array,
    momentum: jax.Array,
    velocity: jax.Array,
    sum_before: jax.Array,
) -> tuple[Checkpoints, jax.Array]:
    """Record leaf ``leaf`` of a sub-tree of depth ``depth`` and check the blocks it completes.

    For a block ``[a, n]`` of ``2h`` leaves ending at this leaf ``n`` the
    checks are Stan's: the criterion on the block (``rho = S_n - S_{a-1}``);
    on its first half plus the second half's first leaf
    (``rho = S_{a+h-1} - S_{a-1} + p_{a+h}``, done when leaf ``a + h`` came);
    and on the first half's last leaf plus the second half
    (``rho = S_n - S_{a+h-2} ``, i.e. ``S_n - S_{a+h-1} + p_{a+h-1}``).

    Args:
        ckpt: the checkpoints before this leaf.
        leaf: 0-based index of the new leaf in the sub-tree (int32 scalar).
        depth: the sub-tree has ``2**depth`` leaves.
        momentum, velocity: ``p`` and ``M^{-1} p`` at the new leaf.
        sum_before: the sub-tree's momentum sum before this leaf.

    Returns:
        ``(checkpoints, turned)``: ``turned`` is True if a balanced block of
        at least two leaves ending at this leaf (the whole sub-tree included)
        fails one of the three checks.
    """
    num_levels = ckpt.begin_velocity.shape[0]
    top = num_levels - 1
    summed = sum_before + momentum
    v_dot_sum = jnp.dot(velocity, summed)
    v_dot_before = jnp.dot(velocity, sum_before)

    # A leaf n > 0 starts the second half of the level tz(n)+1 block that began at
    # a = n - 2^tz(n): check that block's first half plus this leaf now.
    tz_leaf = _trailing_zeros(leaf, top)
    start = leaf - jnp.left_shift(jnp.int32(1), tz_leaf)
    start_row = _trailing_zeros(start, top)
    b_velocity = ckpt.begin_velocity[start_row]
    rho = sum_before - ckpt.begin_sum[start_row] + momentum
    ok = (jnp.dot(b_velocity, rho) > 0) & (jnp.dot(velocity, rho) > 0)
    half_level = jnp.minimum(tz_leaf + 1, top)
    first_half_ok = jnp.where(leaf > 0, ckpt.first_half_ok.at[half_level].set(ok), ckpt.first_half_ok)

    # This leaf begins blocks at levels 0..tz(n): one begin row, tz(n).
    begin_velocity = ckpt.begin_velocity.at[tz_leaf].set(velocity)
    begin_sum = ckpt.begin_sum.at[tz_leaf].set(sum_before)
    begin_dot = ckpt.begin_dot.at[tz_leaf].set(v_dot_before)

    # Blocks of levels k = 1..tz(n+1) end here (at most the sub-tree's depth).
    levels = jnp.arange(1, num_levels, dtype=jnp.int32)
    block_start = leaf + 1 - jnp.left_shift(jnp.int32(1), levels)
    rows = _trailing_zeros(block_start, top)
    bv_dot_sum = (begin_velocity @ summed)[rows]
    v_dot_bsum = (begin_sum @ velocity)[rows]
    whole_ok = (bv_dot_sum - begin_dot[rows] > 0) & (v_dot_sum - v_dot_bsum > 0)
    ev_dot_sum = (ckpt.end_velocity @ summed)[:-1]
    v_dot_esum = (ckpt.end_sum @ velocity)[:-1]
    second_ok = (ev_dot_sum - ckpt.end_dot[:-1] > 0) & (v_dot_sum - v_dot_esum > 0)
    num_checks = jnp.minimum(_trailing_zeros(leaf + 1, top), depth)
    checked = levels <= num_checks
    turned = jnp.any(checked & ~(whole_ok & first_half_ok[1:] & second_ok))

    end_row = _trailing_zeros(leaf + 1, top)
    new = Checkpoints(
        begin_velocity,
        begin_sum,
        begin_dot,
        ckpt.end_velocity.at[end_row].set(velocity),
        ckpt.end_sum.at[end_row].set(sum_before),
        ckpt.end_dot.at[end_row].set(v_dot_before),
        first_half_ok,
    )
    return new, turned
