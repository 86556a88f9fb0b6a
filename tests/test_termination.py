"""The vectorised U-turn checkpoints against a direct implementation of Stan's recursion."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sgmcmc.samplers import termination
from sgmcmc.samplers.termination import checkpoint_step, init_checkpoints


def _trailing_zeros(x: int) -> int:
    return (x & -x).bit_length() - 1


def _turns(v_a, v_b, rho) -> bool:
    return not (np.dot(v_a, rho) > 0 and np.dot(v_b, rho) > 0)


def first_turning_leaf(momenta: np.ndarray, velocities: np.ndarray, depth: int, min_level: int = 0):
    """The first leaf of a depth-``depth`` sub-tree at which Stan's checks fail, or None.

    At leaf ``n`` every balanced block ``[a, n]`` of ``2h`` leaves (``h >= 1``) that ends
    there is checked on the whole block, on its first half plus the second half's first
    leaf, and on the first half's last leaf plus the second half. Blocks of ``2^k`` leaves
    with ``k <= min_level`` are not checked (NUTS's ``min_tree_depth``).
    """
    for n in range(2**depth):
        for k in range(min_level + 1, min(_trailing_zeros(n + 1), depth) + 1):
            h = 2 ** (k - 1)
            a = n + 1 - 2 * h
            if _turns(velocities[a], velocities[n], momenta[a : n + 1].sum(0)):
                return n
            if _turns(velocities[a], velocities[a + h], momenta[a : a + h + 1].sum(0)):
                return n
            if _turns(velocities[a + h - 1], velocities[n], momenta[a + h - 1 : n + 1].sum(0)):
                return n
    return None


@functools.partial(jax.jit, static_argnums=(2, 3))
def _run(momenta, velocities, depth: int, max_depth: int, min_level=0):
    def body(carry, leaf):
        ckpt, total, turned_at = carry
        ckpt, turned = checkpoint_step(
            ckpt, leaf, jnp.int32(depth), momenta[leaf], velocities[leaf], total, min_level=min_level
        )
        turned_at = jnp.where((turned_at < 0) & turned, leaf, turned_at)
        return (ckpt, total + momenta[leaf], turned_at), None

    init = (init_checkpoints(max_depth, momenta[0]), jnp.zeros_like(momenta[0]), jnp.int32(-1))
    (_, _, turned_at), _ = jax.lax.scan(body, init, jnp.arange(2**depth, dtype=jnp.int32))
    return turned_at


def run_checkpoints(momenta, velocities, depth: int, max_depth: int, min_level: int = 0):
    value = int(_run(jnp.asarray(momenta), jnp.asarray(velocities), depth, max_depth, jnp.int32(min_level)))
    return None if value < 0 else value


@pytest.fixture(params=["select", "dynamic_update_slice"])
def row_update(request, monkeypatch):
    """Both ways ``_set_row`` writes a buffer row: a select (small buffers) or an in-place update."""
    if request.param == "dynamic_update_slice":
        monkeypatch.setattr(termination, "_SELECT_ROWS_MAX_SIZE", -1)
    _run.clear_cache()
    yield request.param
    _run.clear_cache()


@pytest.mark.parametrize("depth", [1, 2, 3, 5, 7])
def test_checkpoints_match_stans_recursion(depth, row_update):
    rng = np.random.default_rng(depth)
    found = set()
    for trial in range(60):
        # A slowly rotating momentum with noise: U-turns at varied leaves and levels.
        angle = np.cumsum(rng.uniform(0.0, max(0.6, 6.0 / 2**depth), 2**depth))
        momenta = np.stack([np.cos(angle), np.sin(angle), 0.3 * rng.normal(size=angle.size)], 1)
        momenta += 0.4 * rng.normal(size=momenta.shape)
        velocities = momenta * rng.uniform(0.5, 2.0, 3)
        expected = first_turning_leaf(momenta, velocities, depth)
        got = run_checkpoints(momenta.astype(np.float32), velocities.astype(np.float32), depth, max_depth=10)
        assert got == expected, (trial, got, expected)
        found.add(expected)
    # the trials exercised turns at several leaves (and, for small trees, no turn at all)
    assert len(found) >= min(3, 2**depth)


@pytest.mark.parametrize("min_level", [1, 3])
def test_checkpoints_skip_blocks_up_to_the_minimum_level(min_level):
    """NUTS's ``min_tree_depth``: blocks of at most ``2^min_level`` leaves are never checked."""
    depth = 6
    rng = np.random.default_rng(100 + min_level)
    differs = 0
    for trial in range(40):
        angle = np.cumsum(rng.uniform(0.0, 0.6, 2**depth))
        momenta = np.stack([np.cos(angle), np.sin(angle), 0.3 * rng.normal(size=angle.size)], 1)
        momenta += 0.4 * rng.normal(size=momenta.shape)
        velocities = momenta * rng.uniform(0.5, 2.0, 3)
        expected = first_turning_leaf(momenta, velocities, depth, min_level)
        got = run_checkpoints(momenta.astype(np.float32), velocities.astype(np.float32), depth, 10, min_level)
        assert got == expected, (trial, got, expected)
        differs += expected != first_turning_leaf(momenta, velocities, depth)
    assert differs > 0  # the skipped small blocks did turn in some trials
