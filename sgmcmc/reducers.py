"""On-the-fly reductions of draws, so that a long run need not hold its draws in memory.

A :class:`Reducer` is a triple of pure functions over **one chain**:

* ``init(position) -> acc``: an empty accumulator shaped after a position;
* ``update(acc, position, info) -> acc``: fold in one kept draw;
* ``finalize(acc) -> value``: what the run reports.

``sgmcmc.sample(..., reducers={"name": reducer})`` vmaps them over chains and
applies ``update`` on the device to every kept draw of every chunk (draws
dropped by ``keep=`` are skipped); ``result.reductions["name"]`` holds the
finalized values with a leading chain axis. With ``keep_draws=False`` the
draws themselves are never copied to the host, so memory stays flat however
long the run. Reducers' accumulators are checkpointed with the run.

Built in: :func:`running_moments` (per-coordinate mean and variance by
Welford's update) and :func:`running_mean` of any function of the position,
e.g. a network's class probabilities on test inputs (the running posterior
predictive).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from sgmcmc._tree import PyTree

__all__ = ["Reducer", "running_moments", "running_mean", "Moments"]


def _identity(acc):
    return acc


class Reducer(NamedTuple):
    """An on-the-fly reduction over one chain's kept draws (module docstring)."""

    init: Callable[[PyTree], Any]
    update: Callable[[Any, PyTree, Any], Any]
    finalize: Callable[[Any], Any] = _identity


class Moments(NamedTuple):
    """Per-coordinate running moments of one chain: draws counted, mean, and variance (ddof 1)."""

    count: jax.Array
    mean: PyTree
    variance: PyTree


class _Welford(NamedTuple):
    count: jax.Array
    mean: PyTree
    m2: PyTree


def running_moments() -> Reducer:
    """Mean and variance of every coordinate, Welford's numerically stable update."""

    def init(position):
        zeros = jax.tree.map(jnp.zeros_like, position)
        return _Welford(jnp.zeros((), jnp.int32), zeros, zeros)

    def update(acc, position, info):
        del info
        n = acc.count + 1
        delta = jax.tree.map(lambda x, m: x - m, position, acc.mean)
        mean = jax.tree.map(lambda m, d: m + d / n.astype(m.dtype), acc.mean, delta)
        m2 = jax.tree.map(lambda s, x, m, d: s + d * (x - m), acc.m2, position, mean, delta)
        return _Welford(n, mean, m2)

    def finalize(acc):
        denom = jnp.maximum(acc.count - 1, 1)
        variance = jax.tree.map(lambda s: jnp.where(acc.count > 1, s / denom.astype(s.dtype), jnp.nan), acc.m2)
        return Moments(acc.count, acc.mean, variance)

    return Reducer(init, update, finalize)


def running_mean(fn: Callable[[PyTree], PyTree]) -> Reducer:
    """The average over kept draws of ``fn(position)`` (any pytree of arrays), e.g. predictive probabilities."""
    if not callable(fn):
        raise TypeError("running_mean needs a function position -> values.")

    def init(position):
        out = jax.eval_shape(fn, position)
        return jnp.zeros((), jnp.int32), jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), out)

    def update(acc, position, info):
        del info
        count, mean = acc
        n = count + 1
        value = fn(position)
        return n, jax.tree.map(lambda m, v: m + (v - m) / n.astype(m.dtype), mean, value)

    def finalize(acc):
        return acc[1]

    return Reducer(init, update, finalize)
