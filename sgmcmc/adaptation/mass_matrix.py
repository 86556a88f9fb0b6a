"""Mass-matrix estimation from warmup draws, as in Stan.

Welford's streaming mean and (co)variance of the flattened position over a
window, then Stan's regularisation toward a small multiple of the identity:

    M^{-1} = n / (n + 5) * Cov + 1e-3 * 5 / (n + 5) * I

(Stan's ``windowed_adaptation``; the shrinkage keeps short windows from
producing a degenerate metric). Diagonal (variances) or dense (covariance).

:func:`prefers_dense` decides, from the two halves of a window, whether the
correlations they show are worth a dense metric (``metric="auto"``).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

__all__ = [
    "WelfordState",
    "welford_init",
    "welford_update",
    "inverse_mass_matrix_estimate",
    "prefers_dense",
    "AUTO_DENSE_MAX_DIM",
    "AUTO_DENSE_MIN_GAIN",
    "AUTO_DENSE_MIN_DRAWS_PER_DIM",
    "welford_merge",
]

#: ``metric="auto"`` considers a dense metric only up to this many dimensions. It must
#: carry a ``(D, D)`` matrix per chain whichever form it picks, and that costs even when
#: the diagonal is kept: on the 100-d Gaussian of ``benchmarks/nuts.py`` ChEES-HMC's
#: transition (4 chains, ~4 leapfrog steps) took 22 us against 12.5 us with a vector.
#: Above this size the ``O(D^2)`` velocity per leapfrog step and the ``D^2`` draws a
#: covariance estimate needs make a dense metric something to ask for (``metric="dense"``).
AUTO_DENSE_MAX_DIM = 64
#: HMC's cost on a Gaussian grows like ``sqrt(cond)`` of the covariance in the metric's
#: coordinates (the step size is set by the narrowest direction, the trajectory length by
#: the widest). A dense metric is kept where it makes that condition number, measured on
#: draws it was not estimated from, at least this factor squared smaller than the
#: diagonal metric does: an expected gain of at least 2x in gradients per draw, which
#: pays for the matrix-vector products. This held-out comparison rejects what only looks
#: like correlation in one window: sampling noise (many dimensions, few draws), heavy
#: tails (Neal's funnel, whose correlation matrix is the identity, went dense in 4 of 5
#: windows under a rule on the window's own correlation matrix) and a drift still moving
#: every coordinate together.
AUTO_DENSE_MIN_GAIN = 2.0
#: ... and the window must hold at least this many draws per dimension.
AUTO_DENSE_MIN_DRAWS_PER_DIM = 10.0


class WelfordState(NamedTuple):
    count: jax.Array
    mean: jax.Array
    m2: jax.Array  # sum of squared deviations: vector (diag) or matrix (dense)


def welford_init(dim: int, dtype, dense: bool) -> WelfordState:
    m2 = jnp.zeros((dim, dim) if dense else (dim,), dtype)
    return WelfordState(jnp.zeros((), dtype), jnp.zeros((dim,), dtype), m2)


def welford_update(state: WelfordState, x: jax.Array) -> WelfordState:
    count = state.count + 1.0
    delta = x - state.mean
    mean = state.mean + delta / count
    if state.m2.ndim == 2:
        m2 = state.m2 + jnp.outer(x - mean, delta)
    else:
        m2 = state.m2 + (x - mean) * delta
    return WelfordState(count, mean, m2)


def inverse_mass_matrix_estimate(state: WelfordState) -> jax.Array:
    """Stan's regularised (co)variance estimate of the window's draws."""
    n = state.count
    cov = state.m2 / jnp.maximum(n - 1.0, 1.0)
    shrink = n / (n + 5.0)
    jitter = 1e-3 * 5.0 / (n + 5.0)
    if cov.ndim == 2:
        cov = 0.5 * (cov + cov.T)
        return shrink * cov + jitter * jnp.eye(cov.shape[0], dtype=cov.dtype)
    return shrink * cov + jitter


def welford_merge(a: WelfordState, b: WelfordState) -> WelfordState:
    """The statistics of two sets of draws together (Chan, Golub & LeVeque 1979)."""
    count = a.count + b.count
    safe = jnp.maximum(count, 1.0)
    delta = b.mean - a.mean
    mean = a.mean + delta * b.count / safe
    cross = jnp.outer(delta, delta) if a.m2.ndim == 2 else delta**2
    return WelfordState(count, mean, a.m2 + b.m2 + cross * a.count * b.count / safe)


def _held_out_condition(fit: WelfordState, held: WelfordState, dense: bool) -> jax.Array:
    """Condition number of ``held``'s covariance in the coordinates whitened by ``fit``'s estimate."""
    metric = inverse_mass_matrix_estimate(fit)
    cov = held.m2 / jnp.maximum(held.count - 1.0, 1.0)
    cov = 0.5 * (cov + cov.T)
    if dense:
        chol = jnp.linalg.cholesky(metric)
        half = jax.scipy.linalg.solve_triangular(chol, cov, lower=True)
        whitened = jax.scipy.linalg.solve_triangular(chol, half.T, lower=True)
    else:
        scale = jnp.sqrt(jnp.diagonal(metric))
        whitened = cov / jnp.outer(scale, scale)
    eigenvalues = jnp.linalg.eigvalsh(0.5 * (whitened + whitened.T))
    return eigenvalues[-1] / jnp.maximum(eigenvalues[0], jnp.finfo(cov.dtype).tiny)


def prefers_dense(early: WelfordState, late: WelfordState) -> jax.Array:
    """Whether a window's draws call for a dense metric, from its two halves (dense states).

    Each half's dense and diagonal estimates whiten the other half's draws;
    dense wins when the geometric mean (over both directions) of the held-out
    condition numbers is at least :data:`AUTO_DENSE_MIN_GAIN` squared times
    smaller with the dense estimate, and the window holds at least
    :data:`AUTO_DENSE_MIN_DRAWS_PER_DIM` draws per dimension.
    """
    dim = early.mean.shape[0]
    with_diag = _held_out_condition(early, late, False) * _held_out_condition(late, early, False)
    with_dense = _held_out_condition(early, late, True) * _held_out_condition(late, early, True)
    gain_squared = jnp.sqrt(with_diag / with_dense)
    return (
        (early.count + late.count >= AUTO_DENSE_MIN_DRAWS_PER_DIM * dim)
        & (jnp.minimum(early.count, late.count) > dim)
        & jnp.isfinite(gain_squared)
        & (gain_squared >= AUTO_DENSE_MIN_GAIN**2)
    )
