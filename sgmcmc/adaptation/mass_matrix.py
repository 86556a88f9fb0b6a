"""Mass-matrix estimation from warmup draws, as in Stan.

Welford's streaming mean and (co)variance of the flattened position over a
window, then Stan's regularisation toward a small multiple of the identity:

    M^{-1} = n / (n + 5) * Cov + 1e-3 * 5 / (n + 5) * I

(Stan's ``windowed_adaptation``; the shrinkage keeps short windows from
producing a degenerate metric). Diagonal (variances) or dense (covariance).

:func:`prefers_dense` decides, from a window's dense estimate, whether the
correlations it sees are worth a dense metric (``metric="auto"``).
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
    "AUTO_DENSE_MIN_CONDITION",
    "AUTO_DENSE_NOISE_FACTOR",
    "AUTO_DENSE_MIN_DRAWS_PER_DIM",
]

#: ``metric="auto"`` considers a dense metric only up to this many dimensions. It must
#: carry a ``(D, D)`` matrix per chain whichever form it picks, and that costs even when
#: the diagonal is kept: on the 100-d Gaussian of ``benchmarks/nuts.py`` ChEES-HMC's
#: transition (4 chains, ~4 leapfrog steps) took 22 us against 12.5 us with a vector.
#: Above this size the ``O(D^2)`` velocity per leapfrog step and the ``D^2`` draws a
#: covariance estimate needs make a dense metric something to ask for (``metric="dense"``).
AUTO_DENSE_MAX_DIM = 64
#: A diagonal metric leaves the posterior's correlation matrix ``R`` as the shape HMC
#: sees; its cost grows like ``sqrt(cond(R))`` (the step size is set by the narrowest
#: direction, the trajectory length by the widest). Below this condition number the gain
#: of a dense metric is at most ``sqrt(10) ~ 3x`` before its own estimation noise and the
#: matrix-vector products are paid for, so the diagonal is kept.
AUTO_DENSE_MIN_CONDITION = 10.0
#: ... and ``cond(R)`` must also be this many times the condition number that sampling
#: noise alone gives a correlation matrix of ``n`` independent draws in ``d`` dimensions
#: (Marchenko-Pastur: ``((1 + sqrt(d/n)) / (1 - sqrt(d/n)))^2``), so that uncorrelated
#: targets estimated from few draws are not mistaken for correlated ones.
AUTO_DENSE_NOISE_FACTOR = 4.0
#: ... and the window must hold at least this many draws per dimension. Warmup's early
#: windows are short and their draws autocorrelated and still drifting toward the typical
#: set; a drift moves every coordinate together and looks like a strong correlation (on
#: the 100-d diagonal Gaussian of ``benchmarks/nuts.py`` the 200 pooled draws of the
#: second window did), so a dense metric is only estimated from windows long enough.
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


def prefers_dense(state: WelfordState) -> jax.Array:
    """Whether a window's draws (a dense :class:`WelfordState`) call for a dense metric.

    True when the condition number of the draws' correlation matrix is at
    least :data:`AUTO_DENSE_MIN_CONDITION` and at least
    :data:`AUTO_DENSE_NOISE_FACTOR` times what noise alone would give for that
    many draws, and the window holds at least
    :data:`AUTO_DENSE_MIN_DRAWS_PER_DIM` draws per dimension.
    """
    n = state.count
    dim = state.mean.shape[0]
    cov = state.m2 / jnp.maximum(n - 1.0, 1.0)
    cov = 0.5 * (cov + cov.T)
    sd = jnp.sqrt(jnp.maximum(jnp.diagonal(cov), jnp.finfo(cov.dtype).tiny))
    corr = cov / jnp.outer(sd, sd)
    eigenvalues = jnp.linalg.eigvalsh(corr)
    condition = eigenvalues[-1] / jnp.maximum(eigenvalues[0], jnp.finfo(cov.dtype).tiny)
    ratio = jnp.sqrt(dim / jnp.maximum(n, 1.0))
    noise_condition = ((1.0 + ratio) / jnp.maximum(1.0 - ratio, 1e-6)) ** 2
    return (
        (n >= AUTO_DENSE_MIN_DRAWS_PER_DIM * dim)
        & jnp.isfinite(condition)
        & (condition >= AUTO_DENSE_MIN_CONDITION)
        & (condition >= AUTO_DENSE_NOISE_FACTOR * noise_condition)
    )
