"""The fitted SWAG / MultiSWAG posterior: draw as many samples as asked, export to ArviZ. Approximate.

:func:`fit_swag` reads the moments a :func:`sgmcmc.swag` run collected (its
``last_state``) and returns a :class:`SWAGPosterior`, one Gaussian per chain

    N(theta_SWA, scale * 1/2 (Sigma_diag + D D^T / (K - 1)))

(Maddox et al. 2019, eq. in Sec. 3; ``scale = 1`` is the published
covariance, ``D`` the ``K`` most recent deviations). A draw is

    theta = theta_SWA + sqrt(scale / 2) * sqrt(Sigma_diag) * z1 + sqrt(scale / (2 (K - 1))) * D^T z2,

``z1 ~ N(0, I_d)``, ``z2 ~ N(0, I_K)``, so nothing of size ``d x d`` is
formed. ``low_rank=False`` gives SWAG-diagonal, ``N(theta_SWA, scale *
Sigma_diag)``. With several chains, :meth:`SWAGPosterior.sample` draws the
same number from each chain's Gaussian: the chains are the independent runs
of MultiSWAG (Wilson & Izmailov 2020, "Bayesian deep learning and a
probabilistic perspective of generalization"), an equal-weight mixture;
:meth:`SWAGPosterior.swa_means` are the runs' SWA solutions, a deep ensemble.

Networks with batch-norm-like statistics need them recomputed for each drawn
weight vector (Maddox et al. do one pass over the training data per draw):
pass ``refresh=fn`` with ``fn(position, key) -> position`` (a JAX function,
vmapped over draws).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from sgmcmc import noise
from sgmcmc._tree import PyTree
from sgmcmc.result import SampleResult
from sgmcmc.target import Target

__all__ = ["SWAGPosterior", "SWAGDrawInfo", "fit_swag", "VARIANCE_FLOOR"]

#: Floor on SWAG's diagonal variance (``s - theta_SWA^2`` can round below 0).
VARIANCE_FLOOR = 1e-30


class SWAGDrawInfo(NamedTuple):
    """Per-draw statistics of SWAG draws (``logdensity`` over all the data; NaN if not computed)."""

    is_divergent: np.ndarray
    logdensity: np.ndarray


@dataclasses.dataclass(frozen=True)
class SWAGPosterior:
    """One SWAG Gaussian per chain (MultiSWAG with several chains).

    Attributes:
        mean: ``(chains, D)`` SWA means (flattened parameters).
        variance: ``(chains, D)`` diagonal variances ``Sigma_diag``.
        deviations: ``(chains, K, D)`` the deviations kept (``K`` = rows filled).
        num_collected: iterates averaged per chain.
        target: the target the run sampled (for unflattening and ArviZ).
    """

    mean: np.ndarray
    variance: np.ndarray
    deviations: np.ndarray
    num_collected: int
    target: Target

    @property
    def num_chains(self) -> int:
        return int(self.mean.shape[0])

    @property
    def rank(self) -> int:
        """``K``: the deviations in the low-rank part."""
        return int(self.deviations.shape[1])

    def _unravel(self) -> Callable:
        return ravel_pytree(self.target.initial_position)[1]

    def swa_means(self) -> PyTree:
        """The SWA solution of each chain as a pytree with a leading chain axis (a deep ensemble)."""
        unravel = self._unravel()
        return jax.vmap(unravel)(jnp.asarray(self.mean))

    def covariance(self, chain: int = 0, *, scale: float = 1.0, low_rank: bool = True) -> np.ndarray:
        """The dense ``(D, D)`` covariance of one chain's Gaussian (for small models and tests)."""
        cov = np.diag(self.variance[chain]).astype(np.float64)
        if not low_rank:
            return scale * cov
        d = self.deviations[chain].astype(np.float64)
        return scale * 0.5 * (cov + d.T @ d / (self.rank - 1))

    def sample(
        self,
        key,
        num_samples: int,
        *,
        scale: float = 1.0,
        low_rank: bool = True,
        refresh: Callable[[PyTree, Any], PyTree] | None = None,
        logdensity: bool = True,
    ) -> SampleResult:
        """``num_samples`` draws from every chain's Gaussian, as a :class:`~sgmcmc.SampleResult`.

        The result has the usual ``(chain, draw)`` layout, so ``to_arviz()``,
        ``az.summary`` and the predictive metrics work as for MCMC draws; its
        ``info`` holds ``logdensity`` (the full-data log density of each draw,
        one evaluation per draw; skip it with ``logdensity=False``).
        """
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}.")
        if not np.isfinite(scale) or scale <= 0:
            raise ValueError(f"scale must be finite and > 0, got {scale}.")
        if refresh is not None and not callable(refresh):
            raise TypeError("refresh must be a function (position, key) -> position.")
        start = time.perf_counter()
        target = self.target
        unravel = self._unravel()
        rank, dim = self.rank, self.mean.shape[1]
        dtype = self.mean.dtype

        @jax.jit
        def draw(key, mean, variance, deviations, data):
            def one(k):
                z1 = noise.normal(k, (dim,), dtype, stream=1)
                if low_rank:
                    z2 = noise.normal(k, (rank,), dtype, stream=2)
                    flat = mean + jnp.sqrt(0.5 * scale * variance) * z1
                    flat = flat + jnp.sqrt(0.5 * scale / (rank - 1)) * (deviations.T @ z2)
                else:
                    flat = mean + jnp.sqrt(scale * variance) * z1
                position = unravel(flat)
                if refresh is not None:
                    position = refresh(position, noise.fold_in(k, 1))
                lp = target.with_data(data).logdensity(position) if logdensity else jnp.nan
                return position, lp

            keys = jax.vmap(lambda i: noise.fold_in(key, i))(jnp.arange(num_samples))
            return jax.vmap(one)(keys)

        key = jax.random.key(key) if isinstance(key, int) else key
        positions, lps = [], []
        for c in range(self.num_chains):
            pos, lp = draw(noise.fold_in(key, c), self.mean[c], self.variance[c], self.deviations[c], target.data)
            positions.append(pos)
            lps.append(lp)
        position = jax.tree.map(lambda *xs: jnp.stack(xs), *positions)
        if target.constrain_fn is not None:
            samples = jax.vmap(jax.vmap(target.constrain))(position)
        else:
            samples = position
        lp = np.asarray(jnp.stack(lps)) if logdensity else np.full((self.num_chains, num_samples), np.nan)
        info = SWAGDrawInfo(np.zeros((self.num_chains, num_samples), bool), lp)
        zeros = np.zeros(self.num_chains, np.int64)
        return SampleResult(
            samples=jax.tree.map(np.asarray, samples),
            position=jax.tree.map(np.asarray, position),
            info=info,
            last_state=None,
            target=target,
            sampler_name="swag" if low_rank else "swag_diagonal",
            num_warmup=0,
            thin=1,
            seed=None,
            warmup_divergences=zeros,
            warmup_grad_evals=zeros,
            timing={"compile_s": 0.0, "warmup_s": 0.0, "sampling_s": time.perf_counter() - start},
            num_compilations=0,
        )


def fit_swag(result: SampleResult) -> SWAGPosterior:
    """The SWAG posterior of a :func:`sgmcmc.swag` run (one Gaussian per chain).

    Raises if the run was not SWAG or collected fewer than 2 iterates (the
    low-rank part needs ``K >= 2`` deviations: run longer, or collect more
    often with ``collect_every``).
    """
    moments = getattr(result.last_state, "moments", None)
    if moments is None or not hasattr(moments, "deviations"):
        raise ValueError(f"fit_swag needs the result of a sgmcmc.swag run, got one from {result.sampler_name!r}.")
    count = int(np.min(np.asarray(moments.num_collected)))
    if count < 2:
        raise ValueError(
            f"SWAG collected {count} iterate(s) per chain; it needs at least 2. Run more steps after warmup "
            "or lower collect_every."
        )
    mean = np.asarray(moments.mean)
    variance = np.maximum(np.asarray(moments.sq_mean) - mean**2, VARIANCE_FLOOR)
    k = min(count, moments.deviations.shape[1])
    deviations = np.asarray(moments.deviations)[:, :k]
    return SWAGPosterior(mean, variance, deviations, count, result.target)
