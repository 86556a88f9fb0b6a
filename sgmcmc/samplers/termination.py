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
    """What the U-turn checks of a sub-tree need, for ``levels`` tree levels.

    Every leaf ``m`` (0-based in the sub-tree) is described by its velocity
    ``v_m = M^{-1} p_m``, the sub-tree's momentum sum *before* it ``S_{m-1}``
    and their dot product. A leaf that starts a balanced block is stored in
    begin row ``tz(m)`` (trailing zeros of ``m``, the top row for ``m = 0``);
    a leaf that ends one in end row ``levels + tz(m + 1)``: the first
    ``levels`` rows of each array are the begin rows, the last ``levels`` the
    end rows. With this layout the first leaf of the level-``k`` block being
    closed sits in begin row ``tz(a)`` and the end of its first half in end
    row ``levels + k - 1``, and nothing a check needs is overwritten by the
    leaf being checked (its own rows are never among those it reads). So a
    leaf writes its two rows first and then reads everything through two
    matrix-vector products over all rows, with no copies of the buffers:
    ``O(levels * D)`` multiply-adds in a few fused kernels and ``O(D)``
    memory writes. The cross-half check of the first half with the second's
    first leaf only involves quantities known when the second half starts,
    so it is done then and kept in ``first_half_ok``. Every row a check
    reads was written by a leaf of the same sub-tree, so one set of buffers
    serves all the sub-trees of a trajectory without being cleared (rows
    left from an earlier sub-tree only feed checks that are masked out).
    """

    velocity: jax.Array  # (2 levels, D)
    sum_before: jax.Array  # (2 levels, D)
    dot: jax.Array  # (2 levels,): velocity . sum_before of the row
    first_half_ok: jax.Array  # (levels,)


def init_checkpoints(num_levels: int, like: jax.Array) -> Checkpoints:
    zeros = jnp.zeros((2 * num_levels, like.shape[-1]), like.dtype)
    scalars = jnp.zeros((2 * num_levels,), like.dtype)
    return Checkpoints(zeros, zeros, scalars, jnp.ones((num_levels,), bool))


def _trailing_zeros(x: jax.Array, cap: int) -> jax.Array:
    """Trailing zero bits of the int32 ``x`` (``x = 0`` gives ``cap``), at most ``cap``."""
    return jnp.minimum(lax.population_count((x & -x) - 1), cap).astype(jnp.int32)


#: Buffers up to this many elements are updated by a select over all rows instead of a
#: dynamic-update-slice. Under ``vmap`` (chains) a dynamic-update-slice at a per-chain row
#: becomes a scatter, which XLA:CPU runs as its own kernels with index arithmetic around
#: them; the select fuses into the loop's other element-wise work. Above the threshold
#: rewriting every row each step would cost more than the scatter.
_SELECT_ROWS_MAX_SIZE = 4096


def _set_row(rows: jax.Array, index: jax.Array, value: jax.Array) -> jax.Array:
    """``rows[index] = value`` (``index`` in range): a select for small buffers, else a dynamic-update-slice."""
    value = value.reshape((1, *rows.shape[1:])).astype(rows.dtype)
    if rows.size <= _SELECT_ROWS_MAX_SIZE:
        row_ids = lax.broadcasted_iota(jnp.int32, (rows.shape[0],) + (1,) * (rows.ndim - 1), 0)
        return jnp.where(row_ids == index, value, rows)
    starts = (index,) + (jnp.int32(0),) * (rows.ndim - 1)
    return lax.dynamic_update_slice(rows, value, starts)


def checkpoint_step(
    ckpt: Checkpoints,
    leaf: jax.Array,
    depth: jax.Array,
    momentum: jax.Array,
    velocity: jax.Array,
    sum_before: jax.Array,
    velocity_dot_momentum: jax.Array | None = None,
    min_level=0,
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
        velocity_dot_momentum: ``v . p`` if the caller has it (twice the
            kinetic energy), else computed here.

    Returns:
        ``(checkpoints, turned)``: ``turned`` is True if a balanced block of
        at least two leaves ending at this leaf (the whole sub-tree included)
        fails one of the three checks.
    """
    num_levels = ckpt.first_half_ok.shape[0]
    top = num_levels - 1
    summed = sum_before + momentum
    v_dot_before = jnp.dot(velocity, sum_before)
    if velocity_dot_momentum is None:
        velocity_dot_momentum = jnp.dot(velocity, momentum)
    v_dot_sum = v_dot_before + velocity_dot_momentum

    # This leaf begins blocks at levels 0..tz(n) (begin row tz(n)) and ends blocks at
    # levels 0..tz(n+1) (end row levels + tz(n+1)); write both rows first.
    tz_leaf = _trailing_zeros(leaf, top)
    end_row = num_levels + _trailing_zeros(leaf + 1, top)
    velocities = _set_row(_set_row(ckpt.velocity, tz_leaf, velocity), end_row, velocity)
    sums = _set_row(_set_row(ckpt.sum_before, tz_leaf, sum_before), end_row, sum_before)
    dots = _set_row(_set_row(ckpt.dot, tz_leaf, v_dot_before), end_row, v_dot_before)
    # Row r: v_r . S_n - v_r . S_{r-1} (the row's end velocity against the block's rho)
    # and v_n . S_n - v_n . S_{r-1} (this leaf's velocity against it).
    row_ok = (velocities @ summed - dots > 0) & (v_dot_sum - sums @ velocity > 0)

    # A leaf n > 0 starts the second half of the level tz(n)+1 block that began at
    # a = n - 2^tz(n): check that block's first half plus this leaf now. Its begin row
    # tz(a) > tz(n) is not this leaf's.
    start_row = _trailing_zeros(leaf - jnp.left_shift(jnp.int32(1), tz_leaf), top)
    half_level = jnp.minimum(tz_leaf + 1, top)
    ok = jnp.where(leaf > 0, row_ok[start_row], ckpt.first_half_ok[half_level])
    first_half_ok = _set_row(ckpt.first_half_ok, half_level, ok)

    # Blocks of levels k = 1..tz(n+1) end here (at most the sub-tree's depth): the
    # whole block from begin row tz(n + 1 - 2^k), the first half's last leaf plus the
    # second half from end row levels + k - 1.
    levels = jnp.arange(1, num_levels, dtype=jnp.int32)
    begin_rows = _trailing_zeros(leaf + 1 - jnp.left_shift(jnp.int32(1), levels), top)
    whole_ok = row_ok[begin_rows]
    second_ok = row_ok[num_levels : 2 * num_levels - 1]
    num_checks = jnp.minimum(_trailing_zeros(leaf + 1, top), depth)
    checked = (levels <= num_checks) & (levels > min_level)
    turned = jnp.any(checked & ~(whole_ok & first_half_ok[1:] & second_ok))
    return Checkpoints(velocities, sums, dots, first_half_ok), turned
