"""Mass-matrix estimation from warmup draws, as in Stan.

Welford's streaming mean and (co)variance of the flattened position over a
window, then Stan's regularisation toward a small multiple of the identity:

    M^{-1} = n / (n + 5) * Cov + 1e-3 * 5 / (n + 5) * I

(Stan's ``windowed_adaptation``; the shrinkage keeps short windows from
producing a degenerate metric). Diagonal (variances) or dense (covariance).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["WelfordState", "welford_init", "welford_update", "inverse_mass_matrix_estimate"]


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
