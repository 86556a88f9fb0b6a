"""From a deep-learning training loop to a sampler: the scaling correspondence.

sgmcmc's stochastic-gradient samplers consume the **sum-scaled** log posterior
(see :mod:`sgmcmc.samplers.sg_common`)

    log pi(theta) = log p(theta) + sum_{i=1}^N log p(x_i | theta)

and a temperature ``T``. A training loop written with optax minimises the
**mean** loss plus weight decay

    L(theta) = (1/N) sum_i loss_i(theta) + (lambda / 2) |theta|^2

with a learning rate ``eta``. When ``loss_i = -log p(x_i | theta)`` (cross-
entropy is; squared error ``(y - f)^2`` is ``-log N(y; f, 1/2)`` up to a
constant) and the prior is ``N(0, 1 / (N lambda))``, the two are the same
function up to scale: ``log pi = -N L``. Hence, per step, with ``n`` the
batch size on both sides and the same minibatch:

================  ===================================  ==========================================
deep learning     sampler                              relation
================  ===================================  ==========================================
weight decay      Gaussian prior precision             ``tau = N lambda``  (:func:`gaussian_prior`)
SGD, rate eta     SGLD step size                       ``eps = 2 eta / N``
                  SGLD noise sd per coordinate         ``sqrt(eps T) = sqrt(2 eta T / N)``
SGD + momentum    SGHMC learning rate, friction        ``eta_s = eta / N``, ``alpha = 1 - mu``
mu                SGHMC noise sd (on the velocity)     ``sqrt(2 alpha eta_s T) = sqrt(2 (1 - mu) eta T / N)``
RMSprop           pSGLD step size, decay, lambda       ``eps = 2 eta / N``, same ``decay`` and ``eps``
                  pSGLD noise sd                       ``sqrt(eps T G) = sqrt(2 eta T G / N)``
================  ===================================  ==========================================

At ``T = 0`` each sampler reproduces its optimiser step for step (same
minibatch indices, same key); at ``T = 1`` it samples the posterior whose
MAP the optimiser finds. The noise is tiny next to the usual learning rates:
with N = 50,000 and eta = 0.1, SGLD adds noise of sd 0.002 per step, which is
why an SGD run is a good initialisation and why ``T`` is the knob to study
cold posteriors.

The functions below compute the sampler settings (:func:`sgld_from_sgd`,
:func:`sghmc_from_sgd`, :func:`psgld_from_rmsprop`), the inverse maps, and a
:class:`~sgmcmc.Target` from a per-example loss (:func:`target_from_loss`).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from sgmcmc._tree import PyTree
from sgmcmc.target import Target

__all__ = [
    "SGLDSettings",
    "SGHMCSettings",
    "PSGLDSettings",
    "sgld_from_sgd",
    "sghmc_from_sgd",
    "psgld_from_rmsprop",
    "sgd_from_sgld",
    "sgd_from_sghmc",
    "prior_precision_from_weight_decay",
    "gaussian_prior",
    "target_from_loss",
]


def _positive(value, name: str, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}.")
    value = float(value)
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be finite and {'>= 0' if allow_zero else '> 0'}, got {value}.")
    return value


def _num_data(num_data) -> int:
    if isinstance(num_data, bool) or not isinstance(num_data, numbers.Integral) or num_data < 1:
        raise ValueError(f"num_data must be a positive integer (the number of training examples N), got {num_data!r}.")
    return int(num_data)


class SGLDSettings(NamedTuple):
    """SGLD settings equivalent to an SGD loop: ``sgmcmc.sgld(target, step_size, temperature=...)``."""

    step_size: float
    prior_precision: float
    noise_std: float
    temperature: float


class SGHMCSettings(NamedTuple):
    """SGHMC settings equivalent to SGD with momentum: ``sgmcmc.sghmc(target, step_size, friction=...)``."""

    step_size: float
    friction: float
    prior_precision: float
    noise_std: float
    temperature: float


class PSGLDSettings(NamedTuple):
    """pSGLD settings equivalent to RMSprop; the noise sd per coordinate is ``noise_std * sqrt(G)``."""

    step_size: float
    decay: float
    eps: float
    prior_precision: float
    noise_std: float
    temperature: float


def prior_precision_from_weight_decay(weight_decay: float, num_data: int) -> float:
    """``tau = N lambda``: the Gaussian prior precision that weight decay ``lambda`` on a mean loss implies."""
    return _positive(weight_decay, "weight_decay", allow_zero=True) * _num_data(num_data)


def sgld_from_sgd(
    learning_rate: float, num_data: int, *, weight_decay: float = 0.0, temperature: float = 1.0
) -> SGLDSettings:
    """SGLD settings matching ``optax.sgd(learning_rate)`` on a mean loss with weight decay.

    ``step_size = 2 eta / N``; ``noise_std = sqrt(2 eta T / N)``.
    """
    eta = _positive(learning_rate, "learning_rate")
    n = _num_data(num_data)
    temperature = _positive(temperature, "temperature", allow_zero=True)
    eps = 2.0 * eta / n
    return SGLDSettings(
        eps, prior_precision_from_weight_decay(weight_decay, n), math.sqrt(eps * temperature), temperature
    )


def sghmc_from_sgd(
    learning_rate: float,
    momentum: float,
    num_data: int,
    *,
    weight_decay: float = 0.0,
    temperature: float = 1.0,
) -> SGHMCSettings:
    """SGHMC settings matching ``optax.sgd(learning_rate, momentum=mu)`` on a mean loss with weight decay.

    ``step_size = eta / N`` (the learning rate on the summed loss), ``friction = 1 - mu``,
    ``noise_std = sqrt(2 (1 - mu) eta T / N)`` (added to the velocity each step).
    """
    eta = _positive(learning_rate, "learning_rate")
    mu = _positive(momentum, "momentum", allow_zero=True)
    if mu >= 1:
        raise ValueError(f"momentum must be in [0, 1), got {mu}.")
    n = _num_data(num_data)
    temperature = _positive(temperature, "temperature", allow_zero=True)
    step = eta / n
    friction = 1.0 - mu
    noise_std = math.sqrt(2.0 * friction * step * temperature)
    return SGHMCSettings(step, friction, prior_precision_from_weight_decay(weight_decay, n), noise_std, temperature)


def psgld_from_rmsprop(
    learning_rate: float,
    num_data: int,
    *,
    decay: float = 0.9,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    temperature: float = 1.0,
) -> PSGLDSettings:
    """pSGLD settings matching ``optax.rmsprop(learning_rate, decay, eps, eps_in_sqrt=False)``.

    With ``bias_correction=True`` on both sides (pSGLD's default) or
    ``False`` on both. ``step_size = 2 eta / N``; the injected noise has sd
    ``sqrt(2 eta T G / N)`` per coordinate, ``G`` being RMSprop's scaling.
    """
    eta = _positive(learning_rate, "learning_rate")
    n = _num_data(num_data)
    decay = _positive(decay, "decay", allow_zero=True)
    if decay >= 1:
        raise ValueError(f"decay must be in [0, 1), got {decay}.")
    eps = _positive(eps, "eps")
    temperature = _positive(temperature, "temperature", allow_zero=True)
    step = 2.0 * eta / n
    precision = prior_precision_from_weight_decay(weight_decay, n)
    return PSGLDSettings(step, decay, eps, precision, math.sqrt(step * temperature), temperature)


def sgd_from_sgld(step_size: float, num_data: int) -> float:
    """The SGD learning rate on the mean loss that SGLD's ``step_size`` corresponds to: ``eps N / 2``."""
    return _positive(step_size, "step_size") * _num_data(num_data) / 2.0


def sgd_from_sghmc(step_size: float, friction: float, num_data: int) -> tuple[float, float]:
    """``(learning_rate, momentum) = (eta_s N, 1 - alpha)`` for SGHMC's ``step_size`` and ``friction``."""
    friction = _positive(friction, "friction")
    if friction > 1:
        raise ValueError(f"friction must be in (0, 1], got {friction}.")
    return _positive(step_size, "step_size") * _num_data(num_data), 1.0 - friction


def gaussian_prior(precision: float) -> Callable[[PyTree], jax.Array]:
    """``theta -> -(tau / 2) |theta|^2`` over every leaf (the log density of N(0, 1/tau) up to a constant)."""
    precision = _positive(precision, "precision", allow_zero=True)

    def logprior(position: PyTree) -> jax.Array:
        return -0.5 * precision * sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(position))

    return logprior


def target_from_loss(
    per_example_loss: Callable[[PyTree, PyTree], jax.Array],
    data: PyTree,
    initial_position: PyTree,
    *,
    weight_decay: float = 0.0,
    name: str = "loss",
) -> Target:
    """The target whose sum-scaled log posterior is ``-N x (mean loss + weight decay)``.

    Args:
        per_example_loss: ``(params, batch) -> (n,)`` losses, one per example
            (``loss_i = -log p(x_i | theta)``, e.g.
            ``optax.softmax_cross_entropy_with_integer_labels``). For a mean
            loss written per batch, ``jax.vmap`` it over single examples.
        data: pytree of arrays with a leading axis of length N.
        initial_position: parameters to start from (e.g. the optimiser's).
        weight_decay: ``lambda`` of ``(lambda / 2) |theta|^2`` in the loss
            (as ``optax.add_decayed_weights(lambda)`` applies it to plain SGD);
            becomes the prior ``N(0, 1 / (N lambda))`` on every parameter.
            ``0`` gives a flat prior.
        name: the target's name.
    """
    if not callable(per_example_loss):
        raise TypeError("per_example_loss must be callable: (params, batch) -> (n,) losses.")
    leaves = jax.tree.leaves(data)
    if not leaves:
        raise ValueError("data is an empty pytree; give at least one array with a leading axis of length N.")
    num_data = int(jnp.shape(leaves[0])[0]) if jnp.ndim(leaves[0]) else 0
    precision = prior_precision_from_weight_decay(weight_decay, max(num_data, 1))
    logprior = gaussian_prior(precision)

    def loglik(params, batch):
        return -per_example_loss(params, batch)

    return Target.from_data(logprior, loglik, data, initial_position, name=name)
