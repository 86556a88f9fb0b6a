"""Kernel Stein discrepancy (KSD) with the inverse multiquadric kernel, in bounded memory.

Gorham & Mackey (2017), "Measuring sample quality with kernels" (ICML);
Liu, Lee & Jordan (2016), "A kernelized Stein discrepancy for goodness-of-fit
tests" (ICML). For draws ``x_1..x_n`` and the target's scores
``s_i = grad log pi(x_i)``,

    KSD^2 = (1 / n^2) sum_{i,j} k_p(x_i, x_j),
    k_p(x, y) = s_x . s_y k(x, y) + s_x . grad_y k + s_y . grad_x k + tr(grad_x grad_y k),

the V-statistic Gorham & Mackey use. With the IMQ base kernel
``k(x, y) = (c^2 + |x - y|^2)^beta`` (``beta`` in ``(-1, 0)``; ``c = 1``,
``beta = -1/2`` by default, their recommendation, under which KSD -> 0 implies
convergence in distribution for distantly dissipative targets) and
``r = x - y``, ``u = c^2 + |r|^2``:

    k_p = (s_x . s_y) u^beta + 2 beta u^(beta-1) (s_y - s_x) . r
          - 2 beta d u^(beta-1) - 4 beta (beta - 1) u^(beta-2) |r|^2.

Unlike ESS or R-hat, KSD sees the *bias* of a sampler: SGLD with too large a
step mixes well and has a large ESS but a large KSD. It needs only the scores,
which stochastic-gradient samplers have (full-data or minibatch-estimated:
Coullon, South & Nemeth 2021 show the minibatch version still ranks step
sizes).

Cost and memory: ``O(n^2 d)`` flops as matrix products, computed over blocks
of ``block_size`` rows against all ``n`` draws, so memory is
``O(block_size * n + n * d)``. Sums are accumulated in float64 by default
(the terms are large and cancel; inside ``jax.enable_x64`` locally, the
global setting is left alone).

KSD depends on the parametrisation: it is not invariant to rescaling the
coordinates, and with ``c = 1`` on a posterior whose standard deviations are
0.01 the kernel is nearly flat over the draws, so KSD sees little more than
the mean of the scores. ``scale`` (a scalar or one value per coordinate)
computes the KSD of the rescaled variables ``x / scale``, whose scores are
``s * scale`` (still a valid Stein discrepancy of the same target); use the
posterior's standard deviations or a robust estimate of them, and the *same*
scale for every set of draws being compared.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.flatten_util import ravel_pytree

from sgmcmc._tree import PyTree

__all__ = ["kernel_stein_discrepancy", "imq_stein_kernel", "flatten_draws", "scores_at"]


def imq_stein_kernel(x, y, sx, sy, c: float = 1.0, beta: float = -0.5):
    """``k_p(x, y)`` for single points (the direct formula; for tests and small problems)."""
    r = x - y
    r2 = jnp.sum(r * r)
    u = c * c + r2
    d = x.shape[-1]
    return (
        jnp.dot(sx, sy) * u**beta
        + 2 * beta * u ** (beta - 1) * jnp.dot(sy - sx, r)
        - 2 * beta * d * u ** (beta - 1)
        - 4 * beta * (beta - 1) * u ** (beta - 2) * r2
    )


def flatten_draws(draws: PyTree) -> np.ndarray:
    """``(n, D)`` from a pytree of arrays whose leaves share leading axes (``(n, ...)`` or ``(chain, draw, ...)``)."""
    leaves = jax.tree.leaves(draws)
    if not leaves:
        raise ValueError("draws is an empty pytree.")
    return np.concatenate([np.asarray(x).reshape(np.shape(leaves[0])[0], -1) for x in leaves], axis=1)


def _check(x, s) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x)
    s = np.asarray(s)
    if x.ndim != 2:
        raise ValueError(f"draws must be a 2-d array (n, D) or a pytree of per-draw arrays; got shape {x.shape}.")
    if s.shape != x.shape:
        raise ValueError(f"scores must have the draws' shape {x.shape}, got {s.shape}.")
    if x.shape[0] < 2:
        raise ValueError(f"KSD needs at least 2 draws, got {x.shape[0]}.")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(s))):
        raise ValueError("draws and scores must be finite.")
    return x, s


def kernel_stein_discrepancy(
    draws,
    scores,
    *,
    c: float = 1.0,
    beta: float = -0.5,
    block_size: int = 256,
    float64: bool = True,
    scale=None,
) -> float:
    """KSD (not squared) of ``draws`` against the target whose scores at them are ``scores``.

    Args:
        draws: ``(n, D)`` array, or a pytree of arrays with leading axis n
            (e.g. one chain of ``result.position``; flatten chains first, see
            :func:`flatten_draws`).
        scores: ``grad log pi`` at each draw, same layout as ``draws``.
        c, beta: the IMQ kernel ``(c^2 + |x - y|^2)^beta``; ``c > 0``, ``-1 < beta < 0``.
        block_size: rows per block (memory ``block_size * n``).
        float64: accumulate in double precision (recommended).
        scale: ``None``, a positive scalar or ``(D,)`` positive values: the
            KSD of ``x / scale`` (module docstring).
    """
    if not np.isfinite(c) or c <= 0:
        raise ValueError(f"c must be finite and > 0, got {c}.")
    if not -1 < beta < 0:
        raise ValueError(f"beta must be in (-1, 0) for the IMQ kernel, got {beta}.")
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size must be a positive integer, got {block_size!r}.")
    x, s = _check(
        draws if isinstance(draws, np.ndarray | jax.Array) else flatten_draws(draws),
        scores if isinstance(scores, np.ndarray | jax.Array) else flatten_draws(scores),
    )
    if scale is not None:
        scale = np.broadcast_to(np.asarray(scale, np.float64), (x.shape[1],))
        if not (np.all(np.isfinite(scale)) and np.all(scale > 0)):
            raise ValueError("scale must be finite and > 0.")
        x, s = x / scale, s * scale
    dtype = np.float64 if float64 else np.float32
    with jax.enable_x64(float64):
        total = _ksd_sum(jnp.asarray(x, dtype), jnp.asarray(s, dtype), float(c), float(beta), min(block_size, len(x)))
        value = float(total) / len(x) ** 2
    return float(np.sqrt(max(value, 0.0)))


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _ksd_sum(x, s, c, beta, block):
    n, d = x.shape
    pad = (-n) % block
    xp = jnp.pad(x, ((0, pad), (0, 0)))
    sp = jnp.pad(s, ((0, pad), (0, 0)))
    valid = jnp.arange(n + pad) < n
    x_sq = jnp.sum(x * x, axis=1)
    s_dot_x = jnp.sum(s * x, axis=1)

    def block_sum(i):
        xb = lax.dynamic_slice_in_dim(xp, i * block, block)
        sb = lax.dynamic_slice_in_dim(sp, i * block, block)
        ok = lax.dynamic_slice_in_dim(valid, i * block, block)
        xb_sq = jnp.sum(xb * xb, axis=1)
        cross = xb @ x.T
        r2 = jnp.maximum(xb_sq[:, None] + x_sq[None, :] - 2 * cross, 0.0)
        u = c * c + r2
        ss = sb @ s.T
        # (s_y - s_x) . (x - y) with x from the block (rows), y all draws (columns).
        sy_x = xb @ s.T  # s_y . x
        sx_y = sb @ x.T  # s_x . y
        diff = sy_x - s_dot_x[None, :] - jnp.sum(sb * xb, axis=1)[:, None] + sx_y
        ub = u**beta
        ub1 = ub / u
        kp = ss * ub + 2 * beta * ub1 * diff - 2 * beta * d * ub1 - 4 * beta * (beta - 1) * (ub1 / u) * r2
        return jnp.sum(jnp.where(ok[:, None], kp, 0.0))

    return jnp.sum(lax.map(block_sum, jnp.arange((n + pad) // block)))


def scores_at(target, draws: PyTree, *, batch_size: int | None = None, key=None, block_size: int = 64):
    """``grad log pi`` at each draw (pytree with leading axis n), flattened to ``(n, D)``.

    Full-data gradients by default; with ``batch_size`` the sum-scaled minibatch
    estimate ``grad log p + (N / n) sum_batch grad log p(x_i | .)`` on one
    fixed minibatch drawn from ``key`` (the same for every draw, so the
    estimates are comparable across draws and step sizes).
    """
    from sgmcmc import noise
    from sgmcmc.gradients import take_batch

    leaves = jax.tree.leaves(draws)
    n = int(np.shape(leaves[0])[0])
    if batch_size is None:
        fn = target.logdensity_fn
        data = target.data
    else:
        if not target.is_data_driven:
            raise ValueError("score batch_size needs a data-driven target.")
        if key is None:
            raise ValueError("a minibatch score estimate needs a key.")
        data = take_batch(target.data, noise.uniform_indices(key, batch_size, target.num_data))
        scale = target.num_data / batch_size

        def fn(p, batch):
            return target.logprior_fn(p) + scale * jnp.sum(target.loglik_fn(p, batch))

    @jax.jit
    def grads(block, data):
        g = jax.vmap(jax.grad(fn), in_axes=(0, None))(block, data)
        return jax.vmap(lambda t: ravel_pytree(t)[0])(g)

    out = []
    for start in range(0, n, block_size):
        block = jax.tree.map(lambda a, st=start: jnp.asarray(a[st : st + block_size]), draws)
        out.append(np.asarray(grads(block, data)))
    return np.concatenate(out, axis=0)
