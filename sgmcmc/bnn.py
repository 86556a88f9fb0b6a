"""Bayesian neural networks as targets: any ``apply_fn(params, x)``, a likelihood and a Gaussian prior.

:func:`network_target` turns a network into a data-driven
:class:`~sgmcmc.Target` (``Target.from_data``), so every sampler and the
ArviZ export work on it, and its per-example log-likelihoods give
``az.loo`` / ``az.waic`` their ``log_likelihood`` group:

    log p(theta | D) = sum_leaves log N(theta_leaf; 0, s_leaf^2) + sum_i log p(y_i | f(theta, x_i)),

with ``f = apply_fn`` and the likelihood

* ``"categorical"``: ``f`` returns ``(n, K)`` logits, ``y`` integer labels;
* ``"bernoulli"``: ``f`` returns ``(n,)`` (or ``(n, 1)``) logits, ``y`` in {0, 1};
* ``"gaussian"``: ``f`` returns means shaped like ``y`` (``(n,)`` or
  ``(n, d)``); the noise standard deviation ``noise_scale`` is fixed, or with
  ``learn_noise=True`` sampled too: the position becomes
  ``{"params": params, "log_noise": log sigma}`` with prior
  ``log sigma ~ N(log noise_scale, noise_prior_scale^2)``.

Any JAX network works: plain functions over dicts, ``jax.example_libraries.stax``
(``params`` a list of tuples), Flax (``apply_fn = model.apply``, ``params`` the
variables dict), Equinox (split the module with
``params, static = eqx.partition(model, eqx.is_inexact_array)`` and use
``apply_fn = lambda p, x: jax.vmap(eqx.combine(p, static))(x)``). Only float
array leaves may be in ``params``.

The prior scale is one float for every parameter, a mapping from the
top-level keys of a dict ``params`` to floats (one per layer), or a pytree of
floats with ``params``' structure (one per leaf).

:func:`predictive` evaluates the posterior predictive over draws in chunks.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sgmcmc._tree import PyTree
from sgmcmc.target import Target

__all__ = ["LIKELIHOODS", "network_target", "gaussian_prior", "predictive"]

LIKELIHOODS = ("categorical", "bernoulli", "gaussian")

_LOG_2PI = math.log(2 * math.pi)


def _positive(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a positive float, got {value!r}.")
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be finite and > 0, got {value}.")
    return value


def _leaf_scales(params: PyTree, prior_scale) -> list[float]:
    """One prior scale per leaf of ``params`` (in ``jax.tree.leaves`` order)."""
    leaves = jax.tree.leaves(params)
    per_layer = (
        isinstance(prior_scale, Mapping)
        and isinstance(params, Mapping)
        and set(prior_scale) <= set(params)
        and all(np.ndim(v) == 0 and not isinstance(v, Mapping) for v in prior_scale.values())
    )
    if per_layer:
        missing = set(params) - set(prior_scale)
        if missing:
            raise ValueError(f"prior_scale gives no scale for the layer(s) {sorted(missing)}.")
        # A dict's leaves come in sorted-key order; match it.
        ordered = []
        for key in sorted(params):
            value = _positive(prior_scale[key], f"prior_scale[{key!r}]")
            ordered.extend([value] * len(jax.tree.leaves(params[key])))
        return ordered
    if isinstance(prior_scale, (int, float, np.floating, np.integer)) and not isinstance(prior_scale, bool):
        return [_positive(prior_scale, "prior_scale")] * len(leaves)
    try:
        scales = jax.tree.leaves(prior_scale)
        same = jax.tree.structure(prior_scale) == jax.tree.structure(params)
    except Exception:  # pragma: no cover - exotic inputs
        same = False
    if not same:
        raise ValueError(
            "prior_scale must be a positive float, a mapping from params' top-level keys to floats, "
            "or a pytree of floats with params' structure."
        )
    return [_positive(s, "prior_scale leaf") for s in scales]


def gaussian_prior(params: PyTree, prior_scale=1.0) -> Callable[[PyTree], jax.Array]:
    """``params -> sum_leaves log N(leaf; 0, s_leaf^2)`` (normalised) for the scales described in the module."""
    scales = _leaf_scales(params, prior_scale)
    sizes = [int(np.size(x)) for x in jax.tree.leaves(params)]
    constant = sum(-n * (0.5 * _LOG_2PI + math.log(s)) for n, s in zip(sizes, scales))

    def logprior(p):
        total = constant
        for leaf, s in zip(jax.tree.leaves(p), scales):
            total = total - 0.5 * jnp.sum(leaf * leaf) / (s * s)
        return total

    return logprior


def _check_array(a, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim < 1 or a.shape[0] == 0:
        raise ValueError(f"{name} must have a leading axis of examples with at least one example, got shape {a.shape}.")
    if np.issubdtype(a.dtype, np.floating) and not np.all(np.isfinite(a)):
        raise ValueError(f"{name} has non-finite values.")
    return a


def network_target(
    apply_fn: Callable[[PyTree, Any], jax.Array],
    params: PyTree,
    x,
    y,
    *,
    likelihood: str,
    prior_scale=1.0,
    noise_scale: float = 1.0,
    learn_noise: bool = False,
    noise_prior_scale: float = 1.0,
    name: str = "network",
) -> Target:
    """A data-driven target for a Bayesian network (see the module docstring).

    Args:
        apply_fn: ``(params, x_batch) -> outputs`` for a batch of inputs.
        params: initial parameters (a pytree of float arrays): where chains start.
        x, y: inputs and targets with a leading axis of N examples.
        likelihood: ``"categorical"``, ``"bernoulli"`` or ``"gaussian"``.
        prior_scale: Gaussian prior standard deviation(s).
        noise_scale: the Gaussian likelihood's noise sd (fixed, or the centre
            of the prior on ``log sigma`` when ``learn_noise``).
        learn_noise: sample the Gaussian noise scale too.
        noise_prior_scale: sd of the prior on ``log sigma``.
        name: the target's name.
    """
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}.")
    if not callable(apply_fn):
        raise TypeError("apply_fn must be a function (params, x) -> outputs.")
    if learn_noise and likelihood != "gaussian":
        raise ValueError("learn_noise only applies to the gaussian likelihood.")
    noise_scale = _positive(noise_scale, "noise_scale")
    noise_prior_scale = _positive(noise_prior_scale, "noise_prior_scale")
    x = _check_array(x, "x")
    y = _check_array(y, "y")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x has {x.shape[0]} examples but y has {y.shape[0]}; they must match.")
    for leaf in jax.tree.leaves(params):
        if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
            raise ValueError(
                f"every leaf of params must be a float array, got dtype {jnp.result_type(leaf)}; "
                "split non-array parts out (e.g. eqx.partition) and close over them in apply_fn."
            )
    try:
        out = jax.eval_shape(apply_fn, params, jax.ShapeDtypeStruct((2, *x.shape[1:]), x.dtype))
    except Exception as err:
        raise ValueError(f"apply_fn(params, x[:2]) failed: {err}") from err
    out_shape = tuple(out.shape)
    if out_shape[:1] != (2,):
        raise ValueError(f"apply_fn must return one output row per example; for 2 inputs it returned {out_shape}.")

    if likelihood == "categorical":
        if len(out_shape) != 2:
            raise ValueError(f"a categorical likelihood needs (n, K) logits from apply_fn, got shape {out_shape}.")
        num_classes = out_shape[1]
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"categorical y must be integer labels of shape (N,), got {y.dtype} {y.shape}.")
        if y.min() < 0 or y.max() >= num_classes:
            raise ValueError(
                f"labels must be in 0..{num_classes - 1} for {num_classes} logits, got {y.min()}..{y.max()}."
            )

        def example_loglik(outputs, targets, _):
            log_probs = jax.nn.log_softmax(outputs, axis=-1)
            return jnp.take_along_axis(log_probs, targets[:, None], axis=-1)[:, 0]

    elif likelihood == "bernoulli":
        if out_shape not in ((2,), (2, 1)):
            raise ValueError(f"a bernoulli likelihood needs (n,) or (n, 1) logits from apply_fn, got {out_shape}.")
        if y.ndim != 1 or not np.all((y == 0) | (y == 1)):
            raise ValueError("bernoulli y must be a (N,) array of 0s and 1s.")
        y = y.astype(np.float32)

        def example_loglik(outputs, targets, _):
            logits = outputs.reshape(targets.shape)
            return -(targets * jax.nn.softplus(-logits) + (1 - targets) * jax.nn.softplus(logits))

    else:
        if out_shape[1:] != y.shape[1:]:
            raise ValueError(f"gaussian apply_fn outputs {out_shape[1:]} per example but y has {y.shape[1:]}.")
        if not np.issubdtype(y.dtype, np.floating):
            y = y.astype(np.float32)

        def example_loglik(outputs, targets, log_sigma):
            z = (targets - outputs) * jnp.exp(-log_sigma)
            per = -0.5 * z * z - log_sigma - 0.5 * _LOG_2PI
            return jnp.sum(per.reshape(per.shape[0], -1), axis=1)

    net_prior = gaussian_prior(params, prior_scale)
    log_noise0 = math.log(noise_scale)

    if learn_noise:
        init = {"params": params, "log_noise": jnp.asarray(log_noise0, jnp.result_type(jax.tree.leaves(params)[0]))}

        def logprior(position):
            z = (position["log_noise"] - log_noise0) / noise_prior_scale
            return net_prior(position["params"]) - 0.5 * z * z - math.log(noise_prior_scale) - 0.5 * _LOG_2PI

        def loglik(position, batch):
            outputs = apply_fn(position["params"], batch["x"])
            return example_loglik(outputs, batch["y"], position["log_noise"])

    else:
        init = params

        def logprior(position):
            return net_prior(position)

        def loglik(position, batch):
            return example_loglik(apply_fn(position, batch["x"]), batch["y"], log_noise0)

    return Target.from_data(logprior, loglik, {"x": x, "y": y}, init, name=name)


def predictive(
    apply_fn: Callable[[PyTree, Any], jax.Array],
    samples: PyTree,
    x,
    *,
    likelihood: str,
    chunk_size: int = 100,
) -> np.ndarray:
    """The posterior predictive on inputs ``x`` from draws ``samples`` with leading axes ``(chain, draw)``.

    Returns the mean over draws of the class probabilities ``(n, K)`` for
    ``"categorical"``, of ``(n, 2)`` probabilities ``[1 - p, p]`` for
    ``"bernoulli"`` (so the classifier metrics apply), and the per-draw
    outputs ``(draws, n, ...)`` for ``"gaussian"`` (feed them to
    :func:`sgmcmc.diagnostics.predictive.predictive_log_density` with the noise
    scale). For a learned-noise position pass ``samples["params"]``. Draws
    are evaluated ``chunk_size`` at a time.
    """
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}.")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}.")
    leaves = jax.tree.leaves(samples)
    lead = np.shape(leaves[0])[:2]
    if len(lead) != 2 or any(np.shape(a)[:2] != lead for a in leaves):
        raise ValueError("samples must have leading (chain, draw) axes on every leaf, as SampleResult.samples has.")
    flat = jax.tree.map(lambda a: np.reshape(a, (-1, *np.shape(a)[2:])), samples)
    num = lead[0] * lead[1]
    x = jnp.asarray(x)

    @jax.jit
    def outputs(block):
        return jax.vmap(lambda p: apply_fn(p, x))(block)

    if likelihood == "gaussian":
        blocks = []
        for start in range(0, num, chunk_size):
            blocks.append(np.asarray(outputs(jax.tree.map(lambda a, s=start: a[s : s + chunk_size], flat))))
        return np.concatenate(blocks, axis=0)
    total = 0.0
    for start in range(0, num, chunk_size):
        out = outputs(jax.tree.map(lambda a, s=start: a[s : s + chunk_size], flat))
        if likelihood == "categorical":
            probs = jax.nn.softmax(out, axis=-1)
        else:
            p = jax.nn.sigmoid(out.reshape(out.shape[0], -1)[:, :, 0] if out.ndim > 2 else out)
            probs = jnp.stack([1 - p, p], axis=-1)
        total = total + np.asarray(jnp.sum(probs, axis=0), np.float64)
    return total / num
