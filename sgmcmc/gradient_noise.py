"""Minibatch gradient noise: its covariance, and Mandt et al.'s optimal SGD settings.

Mandt, Hoffman & Blei (2017), "Stochastic gradient descent as approximate
Bayesian inference", JMLR 18(134). Write the training loss as the mean
``L(theta) = -(1/N) [log p(theta) + sum_i log p(x_i | theta)]`` and SGD as
``theta' = theta - eps * g_S(theta)`` with ``g_S`` the minibatch average over
S examples. Near a mode ``g_S ~ grad L + B xi / sqrt(S)``, ``xi ~ N(0, I)``,
where ``BB^T`` is the covariance of the **per-example** gradients
``grad log p(x_i | theta)`` over the data (the prior's gradient is the same for
every example and adds no noise). For a Gaussian posterior and
``BB^T ~ N x Hessian`` (the Fisher/Hessian identity), the constant rate and the
preconditioner whose stationary distribution is closest in KL to the
posterior are (their Theorems 1 and 2)

    eps*  = 2 D S / (N tr(BB^T)),          H* = (2 S / N) (BB^T)^(-1).

With heavy-ball momentum ``mu`` the effective rate is ``eps / (1 - mu)``, so
the rate to set is ``eps* (1 - mu)`` (and ``H* (1 - mu)``).

Estimating ``BB^T``
-------------------
:func:`per_example_gradients` gives the ``(S, D)`` matrix of per-example
gradients at one position; :func:`noise_update` adds one minibatch to a
:class:`GradientNoise` accumulator: the within-batch sample variance of each
coordinate (an unbiased estimate of ``diag(BB^T)`` at that position) and,
when ``rank > 0``, a sketch ``C_batch @ Omega`` of the sample covariance
against a fixed Gaussian test matrix ``Omega (D, rank + oversampling)``. Both
are sums, so averaging over the batches of a window is exact streaming: no
per-example gradient is kept. :func:`noise_low_rank` turns the sketch into a
rank-``r`` plus diagonal estimate ``diag(d) + U diag(lam) U^T`` by the
stable single-pass Nystrom approximation (Tropp, Yurtsever, Udell & Cevher
2017, "Fixed-rank approximation of a positive-semidefinite matrix from
streaming data", NeurIPS), with ``d`` the part of the exact diagonal the
low-rank term does not explain.

Coordinates whose per-example gradients never vary (e.g. weights on an input
that is 0 in every example) have no gradient noise; ``H*`` would give them an
infinite rate. :func:`optimal_preconditioner` floors the noise variance at
``floor * mean(diag(BB^T))``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from sgmcmc import noise
from sgmcmc._tree import PyTree
from sgmcmc.gradients import take_batch
from sgmcmc.target import Target

__all__ = [
    "GradientNoise",
    "LowRankNoise",
    "per_example_gradients",
    "noise_init",
    "noise_update",
    "noise_diagonal",
    "noise_trace",
    "noise_low_rank",
    "optimal_learning_rate",
    "optimal_preconditioner",
    "estimate_gradient_noise",
    "NOISE_FLOOR",
    "OVERSAMPLING",
]

#: Relative floor on a coordinate's noise variance in :func:`optimal_preconditioner`.
NOISE_FLOOR = 1e-3
#: Extra sketch columns beyond the requested rank (Tropp et al.'s oversampling).
OVERSAMPLING = 10


class GradientNoise(NamedTuple):
    """Running sums estimating the per-example gradient covariance ``BB^T``.

    Attributes:
        count: minibatches added so far (int32).
        diag_sum: ``(D,)`` sum over batches of each coordinate's within-batch
            sample variance.
        sketch_sum: ``(D, k)`` sum over batches of ``C_batch @ omega``
            (``k = 0`` when no low-rank estimate is wanted).
        omega: ``(D, k)`` the fixed Gaussian test matrix of the sketch.
    """

    count: jax.Array
    diag_sum: jax.Array
    sketch_sum: jax.Array
    omega: jax.Array


class LowRankNoise(NamedTuple):
    """``BB^T ~ diag(diag) + factor diag(eigenvalues) factor^T`` (``factor`` orthonormal, ``(D, r)``)."""

    diag: jax.Array
    factor: jax.Array
    eigenvalues: jax.Array


def per_example_gradients(target: Target, position: PyTree, batch: PyTree) -> jax.Array:
    """``(n, D)``: row i is ``grad log p(x_i | theta)`` flattened like ``ravel_pytree(position)``."""
    flat, unravel = ravel_pytree(position)
    return jax.jacrev(lambda f: target.loglik_fn(unravel(f), batch))(flat)


def noise_init(dim: int, dtype, *, rank: int = 0, key=None) -> GradientNoise:
    """An empty accumulator for ``dim`` parameters; ``rank > 0`` also sketches a low-rank part (needs ``key``)."""
    k = rank + OVERSAMPLING if rank > 0 else 0
    if k:
        if key is None:
            raise ValueError("noise_init with rank > 0 needs a key for its test matrix.")
        omega = noise.normal(key, (dim, k), dtype, stream=7)
    else:
        omega = jnp.zeros((dim, 0), dtype)
    return GradientNoise(jnp.zeros((), jnp.int32), jnp.zeros((dim,), dtype), jnp.zeros((dim, k), dtype), omega)


def noise_update(state: GradientNoise, grads: jax.Array) -> GradientNoise:
    """Add one minibatch of per-example gradients ``grads (n, D)``, ``n >= 2``."""
    n = grads.shape[0]
    if n < 2:
        raise ValueError(f"estimating gradient noise needs at least 2 examples per batch, got {n}.")
    centred = grads - jnp.mean(grads, axis=0)
    diag = jnp.sum(centred * centred, axis=0) / (n - 1)
    sketch = state.sketch_sum
    if state.omega.shape[1]:
        sketch = sketch + centred.T @ (centred @ state.omega) / (n - 1)
    return GradientNoise(state.count + 1, state.diag_sum + diag, sketch, state.omega)


def noise_diagonal(state: GradientNoise) -> jax.Array:
    """The estimate of ``diag(BB^T)`` (NaN before any batch was added)."""
    return state.diag_sum / state.count


def noise_trace(state: GradientNoise) -> jax.Array:
    """The estimate of ``tr(BB^T)``."""
    return jnp.sum(noise_diagonal(state))


def noise_low_rank(state: GradientNoise, rank: int) -> LowRankNoise:
    """Rank-``rank`` plus diagonal estimate of ``BB^T`` from the sketch (stable Nystrom, see module docstring)."""
    k = state.omega.shape[1]
    if rank <= 0 or rank > k:
        raise ValueError(f"rank must be in 1..{k} for this accumulator, got {rank}.")
    y = state.sketch_sum / state.count
    omega = state.omega
    eps = jnp.finfo(y.dtype).eps
    shift = jnp.sqrt(y.shape[0]) * eps * jnp.linalg.norm(y)
    y_shift = y + shift * omega
    core = omega.T @ y_shift
    core = 0.5 * (core + core.T)
    chol = jnp.linalg.cholesky(core + eps * jnp.trace(core) * jnp.eye(k, dtype=y.dtype))
    f = jax.scipy.linalg.solve_triangular(chol, y_shift.T, lower=True).T
    u, s, _ = jnp.linalg.svd(f, full_matrices=False)
    lam = jnp.maximum(s * s - shift, 0.0)[:rank]
    u = u[:, :rank]
    diag = noise_diagonal(state)
    residual = jnp.maximum(diag - jnp.sum(u * u * lam, axis=1), 0.0)
    return LowRankNoise(residual, u, lam)


def optimal_learning_rate(trace, num_data: int, batch_size: int, dim: int, momentum=0.0):
    """Mandt et al.'s ``eps* = 2 D S (1 - mu) / (N tr(BB^T))`` (jit-able; see module docstring)."""
    return 2.0 * dim * batch_size * (1.0 - momentum) / (num_data * trace)


def optimal_preconditioner(diag, num_data: int, batch_size: int, momentum=0.0, floor: float = NOISE_FLOOR):
    """Diagonal ``H* = 2 S (1 - mu) / (N diag(BB^T))`` per coordinate, with the noise floored (module docstring)."""
    floored = jnp.maximum(diag, floor * jnp.mean(diag))
    return 2.0 * batch_size * (1.0 - momentum) / (num_data * floored)


def estimate_gradient_noise(
    target: Target,
    position: PyTree,
    key,
    *,
    batch_size: int,
    num_batches: int = 10,
    rank: int = 0,
) -> GradientNoise:
    """Estimate ``BB^T`` at one position from ``num_batches`` minibatches (a host-side convenience).

    Use it to set an SGD rate outside the driver, e.g.
    ``optimal_learning_rate(noise_trace(est), N, S, D)``; inside
    :func:`sgmcmc.constant_sgd` the estimate is made during warmup at the
    chain's own iterates.
    """
    if not target.is_data_driven:
        raise ValueError(
            f"target {target.name!r} has no per-example likelihood; gradient noise needs Target.from_data."
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 2 <= batch_size <= target.num_data:
        raise ValueError(f"batch_size must be an integer in [2, N={target.num_data}], got {batch_size!r}.")
    if isinstance(num_batches, bool) or not isinstance(num_batches, int) or num_batches < 1:
        raise ValueError(f"num_batches must be a positive integer, got {num_batches!r}.")
    flat, _ = ravel_pytree(position)

    @jax.jit
    def run(key, position, data):
        bound = target.with_data(data)
        state = noise_init(flat.shape[0], flat.dtype, rank=rank, key=noise.fold_in(key, 0) if rank else None)

        def body(i, state):
            indices = noise.uniform_indices(noise.fold_in(key, i + 1), batch_size, target.num_data)
            return noise_update(state, per_example_gradients(bound, position, take_batch(data, indices)))

        return jax.lax.fori_loop(0, num_batches, body, state)

    out = run(key, position, target.data)
    if not np.all(np.isfinite(np.asarray(out.diag_sum))):
        raise ValueError("the per-example gradients are not finite at this position.")
    return out
