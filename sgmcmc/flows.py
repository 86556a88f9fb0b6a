"""Small normalizing flows as pure functions over a parameter pytree.

A flow is a bijection ``T`` from a standard normal base ``z ~ N(0, I_d)`` to
the sampler's (flattened) space, ``x = T(z)``, with density
``q(x) = N(T^{-1}(x); 0, I) |det dT^{-1}/dx|``. Two coupling families:

* :func:`nice`: additive coupling layers (Dinh, Krueger & Bengio 2015,
  "NICE: Non-linear Independent Components Estimation"):
  ``y_B = x_B + t(x_A)``, volume preserving, followed by NICE's diagonal
  scaling layer;
* :func:`realnvp`: affine coupling layers (Dinh, Sohl-Dickstein & Bengio 2017,
  "Density estimation using Real NVP"): ``y_B = x_B exp(s(x_A)) + t(x_A)``,
  with ``s`` soft-bounded to ``(-scale_bound, scale_bound)`` by ``tanh`` so
  that a badly trained layer cannot overflow.

Both end with an element-wise affine map ``x = loc + exp(log_scale) h``
(NICE's scaling layer; it also standardises: :func:`fit_mle` can set it to
the data's mean and standard deviation and train only the couplings). The
partitions ``A | B`` alternate between the two halves of the coordinates and
their even/odd positions, so every coordinate is conditioned on every other
one after four layers. The conditioners ``s, t`` are small tanh MLPs whose
last layer starts at zero: a fresh flow is the identity (times the scaling).

Why our own and not flowjax: the flow-assisted samplers keep the flow's
parameters in the vmapped sampler state and refit them inside the compiled
warmup program (``lax.cond`` around a fixed number of optax steps); a plain
pytree of arrays with pure ``forward`` / ``inverse`` functions fits that
directly, with no dependency. flowjax's flows are equinox modules (arrays
mixed with static fields and ``paramax`` wrappers, to be partitioned at every
boundary) and it has no additive (NICE) coupling, which the learned-proposal
samplers need. Everything here is ~200 lines of ``jnp``.

A :class:`Flow` is a NamedTuple of pure functions: ``init(key) -> params``,
``forward(params, z) -> (x, log|det dT/dz|)`` and
``inverse(params, x) -> (z, log|det dT^{-1}/dx|)`` on single vectors of
length ``dim`` (``jax.vmap`` them for batches). :func:`log_prob`,
:func:`sample_and_log_prob`, :func:`fit_mle` (maximum likelihood on draws,
forward KL) and :func:`fit_elbo` (reverse KL to an unnormalised log density,
as in neural transport) work on any :class:`Flow`.
"""

from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from sgmcmc import noise

__all__ = [
    "Flow",
    "nice",
    "realnvp",
    "log_prob",
    "base_log_prob",
    "sample_and_log_prob",
    "mle_loss",
    "elbo_loss",
    "fit_mle",
    "fit_elbo",
    "set_standardization",
    "optimizer",
]

_LOG_2PI = math.log(2.0 * math.pi)


class Flow(NamedTuple):
    """A normalizing flow: pure functions over a parameter pytree (see the module docstring)."""

    init: Callable[..., Any]
    forward: Callable[..., Any]
    inverse: Callable[..., Any]
    dim: int
    name: str = "flow"


def _check_int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def _masks(dim: int, num_layers: int) -> np.ndarray:
    """1 where a layer leaves the coordinate alone (the conditioning set A)."""
    idx = np.arange(dim)
    out = []
    for k in range(num_layers):
        if (k // 2) % 2 == 0:
            a = idx < (dim + 1) // 2
        else:
            a = idx % 2 == 0
        if k % 2 == 1:
            a = ~a
        out.append(a.astype(np.float32))
    return np.stack(out)


def _mlp_init(key, sizes, dtype):
    layers = []
    for i, (m, n) in enumerate(itertools.pairwise(sizes)):
        last = i == len(sizes) - 2
        w = (
            jnp.zeros((m, n), dtype)
            if last
            else jax.random.normal(jax.random.fold_in(key, i), (m, n), dtype) / math.sqrt(m)
        )
        layers.append({"w": w, "b": jnp.zeros((n,), dtype)})
    return layers


def _mlp(layers, x):
    for layer in layers[:-1]:
        x = jnp.tanh(x @ layer["w"] + layer["b"])
    return x @ layers[-1]["w"] + layers[-1]["b"]


def _coupling_flow(dim: int, num_layers: int, hidden: tuple[int, ...], affine: bool, scale_bound: float, name: str):
    dim = _check_int(dim, "dim", 1)
    num_layers = _check_int(num_layers, "num_layers", 0)
    hidden = tuple(_check_int(h, "hidden width", 1) for h in hidden)
    if not scale_bound > 0:
        raise ValueError(f"scale_bound must be > 0, got {scale_bound}.")
    masks = _masks(dim, num_layers)
    out_mult = 2 if affine else 1

    def init(key, dtype=jnp.float32) -> dict:
        layers = [
            _mlp_init(jax.random.fold_in(key, k), (dim, *hidden, out_mult * dim), dtype) for k in range(num_layers)
        ]
        return {"loc": jnp.zeros((dim,), dtype), "log_scale": jnp.zeros((dim,), dtype), "layers": layers}

    def shift_scale(layer, mask, x):
        out = _mlp(layer, x * mask)
        free = 1.0 - mask
        if affine:
            s = scale_bound * jnp.tanh(out[:dim] / scale_bound) * free
            return s, out[dim:] * free
        return jnp.zeros_like(x), out * free

    def forward(params, z):
        h, logdet = z, jnp.zeros((), z.dtype)
        for k in range(num_layers):
            s, t = shift_scale(params["layers"][k], masks[k], h)
            h = h * jnp.exp(s) + t
            logdet = logdet + jnp.sum(s)
        x = params["loc"] + jnp.exp(params["log_scale"]) * h
        return x, logdet + jnp.sum(params["log_scale"])

    def inverse(params, x):
        h = (x - params["loc"]) * jnp.exp(-params["log_scale"])
        logdet = -jnp.sum(params["log_scale"])
        for k in reversed(range(num_layers)):
            s, t = shift_scale(params["layers"][k], masks[k], h)
            h = (h - t) * jnp.exp(-s)
            logdet = logdet - jnp.sum(s)
        return h, logdet

    return Flow(init, forward, inverse, dim, name)


def realnvp(dim: int, num_layers: int = 4, hidden: tuple[int, ...] = (32, 32), *, scale_bound: float = 3.0) -> Flow:
    """RealNVP: affine coupling layers (Dinh, Sohl-Dickstein & Bengio 2017).

    Args:
        dim: length of the flattened position.
        num_layers: coupling layers (alternating partitions, see the module docstring).
        hidden: hidden widths of each layer's conditioner MLP.
        scale_bound: the log-scale of every coupling is ``scale_bound * tanh(s / scale_bound)``.
    """
    return _coupling_flow(dim, num_layers, tuple(hidden), True, float(scale_bound), "realnvp")


def nice(dim: int, num_layers: int = 4, hidden: tuple[int, ...] = (32, 32)) -> Flow:
    """NICE: additive (volume-preserving) coupling layers and a diagonal scaling (Dinh et al. 2015)."""
    return _coupling_flow(dim, num_layers, tuple(hidden), False, 1.0, "nice")


def base_log_prob(z: jax.Array) -> jax.Array:
    """Log density of the standard normal base at ``z`` (a single vector)."""
    return -0.5 * (jnp.sum(z * z) + z.shape[-1] * _LOG_2PI)


def log_prob(flow: Flow, params, x: jax.Array) -> jax.Array:
    """``log q(x)`` for a single vector ``x``."""
    z, logdet = flow.inverse(params, x)
    return base_log_prob(z) + logdet


def sample_and_log_prob(flow: Flow, params, key, dtype=jnp.float32, *, stream: int = 0) -> tuple[jax.Array, jax.Array]:
    """One draw ``x = T(z)`` and its ``log q(x)`` (from the forward pass: no inverse needed)."""
    z = noise.normal(key, (flow.dim,), dtype, stream=stream)
    x, logdet = flow.forward(params, z)
    return x, base_log_prob(z) - logdet


def set_standardization(params, data: jax.Array, weights: jax.Array | None = None, min_scale: float = 1e-3):
    """``params`` with the final affine layer set to the (weighted) mean and sd of ``data`` (rows)."""
    if weights is None:
        weights = jnp.ones(data.shape[:1], data.dtype)
    total = jnp.maximum(jnp.sum(weights), 1.0)
    mean = jnp.sum(weights[:, None] * data, axis=0) / total
    var = jnp.sum(weights[:, None] * (data - mean) ** 2, axis=0) / total
    log_scale = 0.5 * jnp.log(jnp.maximum(var, min_scale**2))
    return {**params, "loc": mean.astype(data.dtype), "log_scale": log_scale.astype(data.dtype)}


def mle_loss(flow: Flow, params, batch: jax.Array) -> jax.Array:
    """Mean negative log likelihood of the rows of ``batch`` (forward KL up to a constant)."""
    return -jnp.mean(jax.vmap(lambda x: log_prob(flow, params, x))(batch))


def elbo_loss(flow: Flow, params, logdensity: Callable, key, num_draws: int) -> jax.Array:
    """Negative ELBO ``-E_z[log p(T(z)) + log|det dT/dz|]`` by ``num_draws`` reparameterised draws.

    Non-finite ``log p`` values count as a large finite penalty so that one bad
    draw does not turn the gradient into NaN (see :func:`fit_elbo`).
    """
    z = noise.normal(key, (num_draws, flow.dim), jnp.float32)

    def one(zi):
        x, logdet = flow.forward(params, zi)
        lp = logdensity(x)
        return jnp.where(jnp.isfinite(lp), lp, -1e10) + logdet

    return -jnp.mean(jax.vmap(one)(z))


def optimizer(learning_rate: float = 1e-3, clip: float = 10.0) -> optax.GradientTransformation:
    """The optimiser the fits use: NaN gradients zeroed, global-norm clipping, Adam."""
    return optax.chain(optax.zero_nans(), optax.clip_by_global_norm(clip), optax.adam(learning_rate))


def _guarded_step(opt, loss_fn, params, opt_state, *args):
    """One optax step; a non-finite loss or update leaves ``params`` unchanged."""
    loss, grads = jax.value_and_grad(loss_fn)(params, *args)
    updates, new_opt_state = opt.update(grads, opt_state, params)
    new_params = optax.apply_updates(params, updates)
    ok = jnp.isfinite(loss) & jnp.all(jnp.asarray([jnp.all(jnp.isfinite(u)) for u in jax.tree.leaves(new_params)]))
    params = jax.tree.map(lambda a, b: jnp.where(ok, a, b), new_params, params)
    opt_state = jax.tree.map(lambda a, b: jnp.where(ok, a, b), new_opt_state, opt_state)
    return params, opt_state, loss


def mle_steps(flow: Flow, opt, params, opt_state, key, data, num_filled, num_steps: int, batch_size: int, train=None):
    """``num_steps`` optax steps of maximum likelihood on minibatches of the first ``num_filled`` rows of ``data``.

    ``train="layers"`` trains the couplings only (the final affine layer set
    by :func:`set_standardization`); ``None`` trains every parameter.
    ``num_filled`` may be traced; this is the body :func:`fit_mle` and the
    flow-MH warmup run. ``opt_state`` is the optimiser state of what is trained.
    """

    def merge(trainable):
        return trainable if train is None else {**params, train: trainable}

    def loss(trainable, batch):
        return mle_loss(flow, merge(trainable), batch)

    def body(carry, i):
        trainable, opt_state = carry
        idx = noise.uniform_indices(noise.fold_in(key, i), batch_size, jnp.maximum(num_filled, 1))
        trainable, opt_state, value = _guarded_step(opt, loss, trainable, opt_state, data[idx])
        return (trainable, opt_state), value

    start = params if train is None else params[train]
    (trainable, opt_state), losses = lax.scan(body, (start, opt_state), jnp.arange(num_steps))
    return merge(trainable), opt_state, losses


def fit_mle(
    flow: Flow,
    data: jax.Array,
    key,
    *,
    params=None,
    num_steps: int = 500,
    batch_size: int = 256,
    learning_rate: float = 3e-3,
    standardize: bool = True,
):
    """Fit ``flow`` to the rows of ``data`` by maximum likelihood (Adam on minibatches).

    Returns ``(params, losses)``. With ``standardize`` the final affine layer
    is set to the data's mean and sd and only the couplings are trained.
    """
    data = jnp.asarray(data)
    if data.ndim != 2 or data.shape[1] != flow.dim:
        raise ValueError(f"data must have shape (n, {flow.dim}), got {data.shape}.")
    if params is None:
        params = flow.init(noise.fold_in(key, 0x1417), data.dtype)
    train = "layers" if standardize else None
    if standardize:
        params = set_standardization(params, data)
    opt = optimizer(learning_rate)

    @jax.jit
    def run(params):
        state = opt.init(params if train is None else params[train])
        return mle_steps(flow, opt, params, state, key, data, data.shape[0], num_steps, batch_size, train)

    params, _, losses = run(params)
    return params, losses


def elbo_steps(flow: Flow, opt, params, opt_state, key, logdensity: Callable, num_steps: int, num_draws: int):
    """``num_steps`` optax steps on :func:`elbo_loss` (all parameters trained); ``lax.scan``-compiled body."""

    def body(carry, i):
        params, opt_state = carry
        params, opt_state, value = _guarded_step(
            opt, lambda p: elbo_loss(flow, p, logdensity, noise.fold_in(key, i), num_draws), params, opt_state
        )
        return (params, opt_state), value

    (params, opt_state), losses = lax.scan(body, (params, opt_state), jnp.arange(num_steps))
    return params, opt_state, losses


def fit_elbo(
    flow: Flow,
    logdensity: Callable,
    key,
    *,
    params=None,
    num_steps: int = 1000,
    num_draws: int = 64,
    learning_rate: float = 3e-3,
):
    """Fit ``flow`` to ``exp(logdensity)`` by maximising the ELBO (reverse KL). Returns ``(params, losses)``.

    ``logdensity`` takes a flat vector of length ``flow.dim``. Costs
    ``num_steps * num_draws`` gradient evaluations of ``logdensity``.
    """
    if params is None:
        params = flow.init(noise.fold_in(key, 0x1417))
    opt = optimizer(learning_rate)
    params, _, losses = jax.jit(lambda p: elbo_steps(flow, opt, p, opt.init(p), key, logdensity, num_steps, num_draws))(
        params
    )
    return params, losses
