"""Euclidean-Gaussian kinetic energies (the "metric" of HMC-family samplers).

With an inverse mass matrix ``M^{-1}`` (a vector for a diagonal matrix, a
square matrix for a dense one) over the flattened position, momenta are drawn
``p ~ N(0, M)``, the kinetic energy is ``K(p) = p^T M^{-1} p / 2`` and the
velocity is ``dx/dt = M^{-1} p`` (Neal 2011, "MCMC using Hamiltonian
dynamics", section 4.1). A well-chosen ``M^{-1}`` approximates the posterior
covariance.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import numpy as np

from sgmcmc import noise

__all__ = ["Metric", "gaussian_euclidean", "check_inverse_mass_matrix", "check_metric", "METRICS"]

#: Mass-matrix forms warmup can adapt.
METRICS = ("diag", "dense")


class Metric(NamedTuple):
    """Functions of a Euclidean-Gaussian kinetic energy over flat vectors."""

    sample_momentum: Callable[[jax.Array, jax.Array], jax.Array]
    kinetic_energy: Callable[[jax.Array], jax.Array]
    velocity: Callable[[jax.Array], jax.Array]


def check_metric(metric, inverse_mass_matrix=None) -> str:
    """Validate the name of a mass-matrix form (``"diag"`` or ``"dense"``).

    ``None`` means the form of ``inverse_mass_matrix`` (dense for a matrix),
    diagonal when none is given.
    """
    if metric is None:
        return "dense" if inverse_mass_matrix is not None and np.ndim(inverse_mass_matrix) == 2 else "diag"
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}.")
    return metric


def check_inverse_mass_matrix(inverse_mass_matrix, dim: int, dtype, metric: str | None = None) -> jax.Array:
    """Validate a user's inverse mass matrix for a ``dim``-dimensional position.

    ``None`` gives the identity, as a vector unless ``metric == "dense"``.
    With ``metric`` given, a vector is required for ``"diag"`` and a matrix
    for ``"dense"``.
    """
    if inverse_mass_matrix is None:
        return jnp.eye(dim, dtype=dtype) if metric == "dense" else jnp.ones((dim,), dtype)
    arr = np.asarray(inverse_mass_matrix)
    if metric is not None and arr.ndim != (2 if metric == "dense" else 1):
        raise ValueError(
            f"metric={metric!r} needs a {'matrix' if metric == 'dense' else 'vector'} inverse_mass_matrix, "
            f"got ndim={arr.ndim}."
        )
    if arr.ndim == 1:
        if arr.shape != (dim,):
            raise ValueError(f"a diagonal inverse_mass_matrix must have shape ({dim},), got {arr.shape}.")
        if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
            raise ValueError("a diagonal inverse_mass_matrix must be finite and strictly positive.")
    elif arr.ndim == 2:
        if arr.shape != (dim, dim):
            raise ValueError(f"a dense inverse_mass_matrix must have shape ({dim}, {dim}), got {arr.shape}.")
        if not np.all(np.isfinite(arr)) or not np.allclose(arr, arr.T, rtol=1e-5, atol=1e-8):
            raise ValueError("a dense inverse_mass_matrix must be finite and symmetric.")
        if np.any(np.linalg.eigvalsh(arr.astype(np.float64)) <= 0):
            raise ValueError("a dense inverse_mass_matrix must be positive definite.")
    else:
        raise ValueError(f"inverse_mass_matrix must be a vector (diagonal) or a matrix (dense), got ndim={arr.ndim}.")
    return jnp.asarray(arr, dtype)


def gaussian_euclidean(inverse_mass_matrix: jax.Array) -> Metric:
    """The metric with inverse mass matrix ``inverse_mass_matrix`` (diagonal or dense)."""
    if inverse_mass_matrix.ndim == 1:
        inv_mass = inverse_mass_matrix
        mass_sqrt = 1.0 / jnp.sqrt(inv_mass)

        def sample_momentum(key, like):
            return mass_sqrt * noise.normal(key, like.shape, like.dtype)

        def velocity(momentum):
            return inv_mass * momentum

    else:
        inv_mass = inverse_mass_matrix
        # p = L^{-T} z with L L^T = M^{-1} has covariance (L L^T)^{-1} = M.
        chol_inv_mass = jnp.linalg.cholesky(inv_mass)

        def sample_momentum(key, like):
            z = noise.normal(key, like.shape, like.dtype)
            return jsl.solve_triangular(chol_inv_mass, z, lower=True, trans="T")

        def velocity(momentum):
            return inv_mass @ momentum

    def kinetic_energy(momentum):
        return 0.5 * jnp.dot(momentum, velocity(momentum))

    return Metric(sample_momentum, kinetic_energy, velocity)
