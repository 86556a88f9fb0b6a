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
* :func:`control_variate` -- the control-variate estimator of Baker, Fearnhead,
  Fox & Nemeth (2019, "Control variates for stochastic gradient MCMC",
  Statistics and Computing): around a reference point ``theta_hat`` whose
  full-data gradient is known,
  ``g(theta_hat) + [grad log p(theta) - grad log p(theta_hat)]
  + (N/n) sum_batch [grad log p(x_i|theta) - grad log p(x_i|theta_hat)]``.
  It is unbiased, and its variance is O(|theta - theta_hat|^2) instead of
  O(N^2 / n), so it is small near the posterior mode. The full-data gradient at
  the centre is computed by :func:`full_data_gradient`, which sums over the
  data in chunks of ``chunk_size`` examples so that the per-example
  activations of all N examples never live in memory at once.

Data parallelism: when the target's data are a :class:`sgmcmc.sharding.ShardedData`
(``sgmcmc.sample(..., mesh=...)`` with a ``"data"`` axis), :func:`full_batch`
and :func:`minibatch` compute the log-likelihood sums inside a ``shard_map``,
each device over its own rows, added by one ``psum``, and differentiate from
outside it (JAX then sums the replicated parameter's gradient over the
devices once; see :mod:`sgmcmc.sharding`); :func:`minibatch` draws a
stratified minibatch (``batch_size / S`` rows from each of the ``S`` data
devices, same expectation). Estimators that need all rows in one place
(:func:`take_batch` of global indices, :func:`full_data_gradient`,
:func:`control_variate`) refuse sharded data.

One "gradient evaluation" is one call of the gradient of the estimator's
objective: over all N examples for :func:`full_batch`, over ``batch_size``
examples for :func:`minibatch` (``GradientEstimator.batch_size`` says which).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from sgmcmc import noise, sharding
from sgmcmc._tree import PyTree
from sgmcmc.target import Target

__all__ = [
    "GradientEstimate",
    "GradientEstimator",
    "ControlVariate",
    "full_batch",
    "minibatch",
    "take_batch",
    "full_data_gradient",
    "control_variate_centre",
    "control_variate",
    "check_minibatch",
]


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
    _refuse_sharded(data, "take_batch (rows at global indices)")
    return jax.tree.map(lambda x: jnp.take(x, indices, axis=0), data)


def _refuse_sharded(data, what: str) -> None:
    if isinstance(data, sharding.ShardedData):
        raise ValueError(
            f"{what} needs all {data.num_data} examples in one place, but they are sharded over the mesh's "
            f"{data.axis!r} axis; use a sampler whose gradients come from sgmcmc.gradients.minibatch or full_batch "
            f"(SGLD, pSGLD, SGHMC, SGNHT, BAOAB, HMC, ...) or run without a {data.axis!r} axis."
        )


def _batch_size(batch: PyTree) -> int:
    leaves = jax.tree.leaves(batch)
    if not leaves:
        raise ValueError("batch is an empty pytree.")
    sizes = {int(x.shape[0]) if x.ndim else None for x in leaves}
    if len(sizes) != 1 or None in sizes:
        shapes = [tuple(x.shape) for x in leaves]
        raise ValueError(f"every leaf of a batch needs the same leading axis (one row per example), got {shapes}.")
    return sizes.pop()


def _scaled_logdensity(target: Target, position: PyTree, batch: PyTree) -> jax.Array:
    n = _batch_size(batch)
    if isinstance(target.data, sharding.ShardedData):  # each data device takes n / S of the rows
        loglik = sharding.unguarded_loglik(target)
        return target.logprior_fn(position) + sharding.batch_loglik_sum(loglik, position, target.data, batch)
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


def check_minibatch(target: Target, batch_size, what: str = "minibatch gradients") -> None:
    """Raise unless ``target`` has data and ``batch_size`` is an integer in ``[1, N]``."""
    if not target.is_data_driven:
        raise ValueError(
            f"target {target.name!r} has no per-example likelihood; build it with Target.from_data to use {what}."
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    if batch_size > target.num_data:
        raise ValueError(f"batch_size={batch_size} is larger than the number of examples N={target.num_data}.")


def minibatch(target: Target, batch_size: int) -> GradientEstimator:
    """Unbiased minibatch estimator with the N / n scaling.

    Indices are drawn with replacement inside the compiled step (see the
    module docstring). Requires a data-driven target
    (:meth:`sgmcmc.Target.from_data`). Over data sharded on ``S`` devices the
    minibatch is stratified (``batch_size / S`` rows per device, see
    :mod:`sgmcmc.sharding`) and ``batch_size`` must be a multiple of ``S``.
    """
    check_minibatch(target, batch_size)
    if isinstance(target.data, sharding.ShardedData):
        return _data_parallel_minibatch(target, batch_size)

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


def _data_parallel_minibatch(target: Target, batch_size: int) -> GradientEstimator:
    """:func:`minibatch` over sharded data: a stratified batch, each device summing its stratum's rows.

    The objective is a ``shard_map`` whose one ``psum`` adds the devices'
    partial sums; ``value_and_grad`` is taken outside it, where JAX's
    transpose sums the replicated position's gradient over the devices once.
    Never ``psum`` a gradient computed inside the ``shard_map``: it is already
    summed there, and would be counted ``S`` times.
    """
    data = target.data
    if batch_size % data.num_shards:
        raise ValueError(
            f"batch_size={batch_size} must be a multiple of the {data.num_shards} devices of the mesh's "
            f"{data.axis!r} axis (each device draws batch_size / {data.num_shards} of its own examples)."
        )
    loglik = sharding.unguarded_loglik(target)

    def objective(position, key):
        return target.logprior_fn(position) + sharding.stratified_loglik_sum(loglik, position, data, key, batch_size)

    value_and_grad = jax.value_and_grad(objective)
    batch_value_and_grad = jax.value_and_grad(lambda p, b: _scaled_logdensity(target, p, b))

    def estimate(key, position, batch=None):
        if batch is None:
            value, grad = value_and_grad(position, key)
        else:
            value, grad = batch_value_and_grad(position, batch)
        return GradientEstimate(value, grad, jnp.asarray(1, jnp.int32))

    return GradientEstimator(estimate, batch_size, target.num_data, True)


# -- control variates -----------------------------------------------------------


class ControlVariate(NamedTuple):
    """A control-variate centre: ``theta_hat`` with its full-data log density and gradient."""

    centre: PyTree
    logdensity: jax.Array
    grad: PyTree


def check_chunk_size(chunk_size) -> int | None:
    """``None`` (one chunk of all N examples) or a positive integer."""
    if chunk_size is None:
        return None
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size <= 0:
        raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size!r}.")
    return chunk_size


def num_chunks(num_data: int, chunk_size: int | None) -> int:
    """How many chunks :func:`full_data_gradient` splits N examples into."""
    return 1 if chunk_size is None else math.ceil(num_data / min(chunk_size, num_data))


def full_data_gradient(
    target: Target, position: PyTree, *, chunk_size: int | None = None, active: jax.Array | None = None
) -> GradientEstimate:
    """The exact log density and gradient over all N examples, summed chunk by chunk.

    The data are visited in ``ceil(N / c)`` chunks of ``c = min(chunk_size, N)``
    consecutive rows inside a ``lax.while_loop``, so only one chunk's
    intermediate values (activations, per-example gradients) are alive at a
    time; the last chunk is read as the final ``c`` rows with the rows of the
    previous chunk masked out, so every chunk has the same static shape.
    ``chunk_size=None`` uses one chunk. The loop runs while ``active`` is true
    (default: always): under ``vmap`` a batched ``active`` that is false for
    every chain runs zero iterations, which is how a sampler refreshes a
    centre only on the steps that need it without paying for a full pass on
    the others. ``num_grad_evals`` is 1 (one pass over the data).
    """
    if not target.is_data_driven:
        raise ValueError(f"target {target.name!r} has no per-example likelihood; a full-data gradient needs data.")
    _refuse_sharded(target.data, "full_data_gradient (chunked pass, control-variate centre)")
    n_data = int(target.num_data)
    size = n_data if chunk_size is None else min(int(chunk_size), n_data)
    count = num_chunks(n_data, size)

    def chunk_loglik(p, i):
        first = i * size
        offset = jnp.minimum(first, n_data - size)
        batch = jax.tree.map(lambda x: lax.dynamic_slice_in_dim(x, offset, size, axis=0), target.data)
        values = target.loglik_fn(p, batch)
        fresh = (offset + jnp.arange(size)) >= first
        return jnp.sum(jnp.where(fresh, values, jnp.zeros_like(values)))

    prior_value, prior_grad = jax.value_and_grad(target.logprior_fn)(position)
    chunk_value_and_grad = jax.value_and_grad(chunk_loglik)
    always = active is None
    active = jnp.asarray(True) if always else jnp.asarray(active)

    def cond(carry):
        return (carry[0] < count) & active

    def body(carry):
        i, value, grad = carry
        v, g = chunk_value_and_grad(position, i)
        return i + 1, value + v, jax.tree.map(jnp.add, grad, g)

    if always and count == 1:
        _, value, grad = body((jnp.int32(0), prior_value, prior_grad))
    else:
        _, value, grad = lax.while_loop(cond, body, (jnp.int32(0), prior_value, prior_grad))
    return GradientEstimate(value, grad, jnp.asarray(1, jnp.int32))


def control_variate_centre(
    target: Target, centre: PyTree, *, chunk_size: int | None = None, active: jax.Array | None = None
) -> ControlVariate:
    """The :class:`ControlVariate` at ``centre`` (one chunked pass over the data).

    Traceable: call it under ``jit`` with the data passed as an argument
    (``target.with_data(data)``) rather than captured, or JAX embeds the data
    in the program as a constant.
    """
    estimate = full_data_gradient(target, centre, chunk_size=chunk_size, active=active)
    return ControlVariate(centre, estimate.value, estimate.grad)


def control_variate(target: Target, batch_size: int, cv: ControlVariate) -> GradientEstimator:
    """The control-variate minibatch estimator around ``cv.centre`` (Baker et al. 2019).

    ``estimate(key, position, batch=None)`` draws ``batch_size`` indices with
    replacement (as :func:`minibatch`) and returns

    * value: ``cv.logdensity + [f_B(theta) - f_B(theta_hat)]``
    * grad:  ``cv.grad + [grad f_B(theta) - grad f_B(theta_hat)]``

    where ``f_B(theta) = log p(theta) + (N/n) sum_{i in B} log p(x_i|theta)``.
    Both are unbiased. Each call costs two minibatch gradient evaluations (at
    ``theta`` and at the centre, on the same batch): ``num_grad_evals`` is 2.
    """
    check_minibatch(target, batch_size, "control-variate gradients")
    _refuse_sharded(target.data, "control_variate")
    value_and_grad = jax.value_and_grad(lambda p, b: _scaled_logdensity(target, p, b))

    def estimate(key, position, batch=None):
        if batch is None:
            indices = noise.uniform_indices(key, batch_size, target.num_data)
            batch = take_batch(target.data, indices)
        value, grad = value_and_grad(position, batch)
        value_c, grad_c = value_and_grad(cv.centre, batch)
        grad = jax.tree.map(lambda g0, g, gc: g0 + (g - gc), cv.grad, grad, grad_c)
        return GradientEstimate(cv.logdensity + (value - value_c), grad, jnp.asarray(2, jnp.int32))

    return GradientEstimator(estimate, batch_size, target.num_data, True)
