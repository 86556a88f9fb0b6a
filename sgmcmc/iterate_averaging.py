"""Iterate averaging of constant-rate SGD: a posterior-mean estimate and its stationary covariance. Approximate.

Polyak & Juditsky (1992), "Acceleration of stochastic approximation by
averaging"; Ruppert (1988); in the Bayesian reading of Mandt, Hoffman & Blei
(2017, JMLR 18(134), their averaged stochastic gradient sampler):
constant-rate SGD iterates fluctuate around the mode with a stationary
covariance ``Sigma`` (the discrete-time Lyapunov solution for the rate and
batch size, which at Mandt et al.'s optimal rate approximates the posterior
covariance); their average converges to the mode (the posterior mean, for a
Gaussian posterior) whatever the rate, with error ``~ A^-1 BB^T A^-1 / (S T)``
that does not grow with the rate.

:func:`iterate_average` summarises kept iterates (the draws of
:func:`sgmcmc.constant_sgd` or :func:`sgmcmc.swag`): the average, the
iterates' stationary covariance (diagonal or full), and the Monte Carlo
standard error of the average from batch means per chain (which accounts
for the strong autocorrelation of SGD iterates). Chains are pooled: for a
unimodal posterior they are independent replicates. For a running average
that never stores the iterates, use :func:`sgmcmc.swag`'s ``theta_SWA``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import numpy as np
from jax.flatten_util import ravel_pytree

from sgmcmc._tree import PyTree

__all__ = ["IterateAverage", "iterate_average"]


class IterateAverage(NamedTuple):
    """What :func:`iterate_average` returns (flat vectors follow ``ravel_pytree`` of one draw).

    Attributes:
        mean: the average as a pytree like one draw.
        flat_mean: ``(D,)`` the same, flattened.
        covariance: ``(D,)`` variances or ``(D, D)`` covariance of the iterates.
        standard_error: ``(D,)`` Monte Carlo standard error of the average.
        num_iterates: iterates averaged (all chains).
    """

    mean: PyTree
    flat_mean: np.ndarray
    covariance: np.ndarray
    standard_error: np.ndarray
    num_iterates: int


def iterate_average(draws, *, covariance: str = "diagonal", num_batches: int = 20) -> IterateAverage:
    """Average SGD iterates ``(chain, draw, ...)`` (a :class:`~sgmcmc.SampleResult` or its ``position``).

    Args:
        draws: a :class:`~sgmcmc.SampleResult` (its unconstrained ``position``
            is used) or a pytree whose leaves have leading axes ``(chain, draw)``.
        covariance: ``"diagonal"`` or ``"full"``.
        num_batches: batches per chain for the batch-means standard error
            (each batch should be longer than the iterates' autocorrelation).
    """
    if covariance not in ("diagonal", "full"):
        raise ValueError(f"covariance must be 'diagonal' or 'full', got {covariance!r}.")
    if isinstance(num_batches, bool) or not isinstance(num_batches, int) or num_batches < 2:
        raise ValueError(f"num_batches must be an integer >= 2, got {num_batches!r}.")
    tree = getattr(draws, "position", draws)
    leaves = jax.tree.leaves(tree)
    if not leaves or any(np.ndim(x) < 2 for x in leaves):
        raise ValueError("draws must be a pytree of arrays with leading axes (chain, draw).")
    chains, n = np.shape(leaves[0])[:2]
    if any(np.shape(x)[:2] != (chains, n) for x in leaves):
        raise ValueError("every leaf of draws needs the same leading (chain, draw) axes.")
    if n < num_batches:
        raise ValueError(f"{n} draws per chain is fewer than num_batches={num_batches}.")
    one = jax.tree.map(lambda x: np.asarray(x)[0, 0], tree)
    unravel = ravel_pytree(one)[1]
    flat = np.concatenate([np.asarray(x, np.float64).reshape(chains, n, -1) for x in leaves], axis=-1)
    if not np.all(np.isfinite(flat)):
        raise ValueError("draws contain non-finite values.")
    pooled = flat.reshape(chains * n, -1)
    mean = pooled.mean(axis=0)
    centred = pooled - mean
    if covariance == "full":
        cov = centred.T @ centred / (pooled.shape[0] - 1)
    else:
        cov = np.sum(centred * centred, axis=0) / (pooled.shape[0] - 1)
    size = n // num_batches
    batches = flat[:, : size * num_batches].reshape(chains, num_batches, size, -1).mean(axis=2)
    batches = batches.reshape(chains * num_batches, -1)
    se = np.sqrt(np.var(batches, axis=0, ddof=1) / batches.shape[0])
    dtype = np.asarray(leaves[0]).dtype
    return IterateAverage(unravel(mean.astype(dtype)), mean, cov, se, chains * n)
