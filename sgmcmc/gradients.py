"""Gradient estimators: what a sampler calls to get ``grad log p(theta)``.

Every estimator returns a :class:`GradientEstimate` with the estimated log
density, its gradient and the number of gradient evaluations it spent.

* :func:`full_batch` -- the exact gradient of the target's log density (one
  evaluation over all the data).
* :func:`minibatch` -- the unbiased estimator
  ``log p(theta) + (N / n) * sum_{i in batch} log p(x_i | theta)``
  (Robbins & Monro 1951; Welling & Teh 2011). The minibatch is drawn inside
  the compiled step from the device-resident data, with replacement: ``n``
  indices uniform on ``{0, ..., N-1}`` from the step's key, so there is no
  Python iterator in the sampling loop and the batches are i.i.d. across
  steps, which is the noise model SG-MCMC theory assumes. A caller may also
  pass its own ``batch`` (a pytree like the data with n rows); it is scaled by
  N / n in the same way.

One "gradient evaluation" is one call of the gradient of the estimator's
objective: over all N examples for :func:`full_batch`, over ``batch_size``
examples for :func:`minibatch` (``GradientEstimator.batch_size`` says which).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from sgmcmc import noise
from sgmcmc._tree import PyTree
from sgmcmc.target import Target

__all__ = ["GradientEstimate", "GradientEstimator", "full_batch", "minibatch", "take_batch"]


class GradientEstimate(NamedTuple):
    """An estimate of the log density and its gradient at one position."""

    value: jax.Array
    grad: PyTree
    num_grad_evals: jax.Array


class GradientEstimator(NamedTuple):
    """A gradient estimator bound to a target.

    Attributes:
        estimate: ``(key, position, batch=None) -> GradientEstimate``.
        batch_size: examples per evaluation (``num_data`` for full batch,
            ``None`` for targets without data).
        num_data: N, or ``None`` for targets without data.
        is_stochastic: whether the estimate is noisy (minibatch).
    """

    estimate: Callable[..., GradientEstimate]
    batch_size: int | None
    num_data: int | None
    is_stochastic: bool


def take_batch(data: PyTree, indices: jax.Array) -> PyTree:
    """Rows ``indices`` of every leaf of ``data``."""
    return jax.tree.map(lambda x: jnp.take(x, indices, axis=0), data)


def _batch_size(batch: PyTree) -> int:
    leaves = jax.tree.leaves(batch)
    if not leaves:
        raise ValueError("batch is an empty pytree.")
    return int(leaves[0].shape[0])


def _scaled_logdensity(target: Target, position: PyTree, batch: PyTree) -> jax.Array:
    n = _batch_size(batch)
    scale = target.num_data / n
    return target.logprior_fn(position) + scale * jnp.sum(target.loglik_fn(position, batch))


def full_batch(target: Target) -> GradientEstimator:
    """The exact gradient of ``target.logdensity`` (one evaluation per call).

    If a ``batch`` is passed to ``estimate`` for a data-driven target, the
    estimate uses that batch with the N / n scaling instead.
    """
    value_and_grad = jax.value_and_grad(target.logdensity)

    def estimate(key, position, batch=None):
        del key
        if batch is not None:
            if not target.is_data_driven:
                raise ValueError(f"target {target.name!r} has no per-example likelihood; it cannot take a batch.")
            value, grad = jax.value_and_grad(lambda p: _scaled_logdensity(target, p, batch))(position)
        else:
            value, grad = value_and_grad(position)
        return GradientEstimate(value, grad, jnp.asarray(1, jnp.int32))

    return GradientEstimator(estimate, target.num_data, target.num_data, False)


def minibatch(target: Target, batch_size: int) -> GradientEstimator:
    """Unbiased minibatch estimator with the N / n scaling.

    Indices are drawn with replacement inside the compiled step (see the
    module docstring). Requires a data-driven target
    (:meth:`sgmcmc.Target.from_data`).
    """
    if not target.is_data_driven:
        raise ValueError(
            f"target {target.name!r} has no per-example likelihood; build it with Target.from_data "
            "to use minibatch gradients."
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    if batch_size > target.num_data:
        raise ValueError(f"batch_size={batch_size} is larger than the number of examples N={target.num_data}.")

    def objective(position, batch):
        return _scaled_logdensity(target, position, batch)

    value_and_grad = jax.value_and_grad(objective)

    def estimate(key, position, batch=None):
        if batch is None:
            indices = noise.uniform_indices(key, batch_size, target.num_data)
            batch = take_batch(target.data, indices)
        value, grad = value_and_grad(position, batch)
        return GradientEstimate(value, grad, jnp.asarray(1, jnp.int32))

    return GradientEstimator(estimate, batch_size, target.num_data, True)
