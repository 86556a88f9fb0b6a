"""Constant-rate SGD as an approximate posterior sampler (Mandt, Hoffman & Blei 2017). Approximate.

Algorithm: plain SGD (optionally heavy-ball momentum, optionally
preconditioned) on the mean training loss ``L = -(1/N) log pi`` with a
**constant** learning rate and minibatch noise only; after burn-in the
iterates are the draws:

    v'     = mu v + H g_S(theta)            (v' = H g_S without momentum)
    theta' = theta - eps v'

with ``g_S = -(1/N) [grad log p(theta) + (N/S) sum_batch grad log p(x_i|theta)]``
the minibatch gradient of the mean loss (the sum-scaled estimate of
:mod:`sgmcmc.gradients` divided by ``-N``), so the iterates are exactly those
of ``optax.sgd(eps, momentum=mu)`` on the mean loss with the same batches.

Mandt, Hoffman & Blei (2017), "Stochastic gradient descent as approximate
Bayesian inference" (JMLR 18(134)) show that near a mode the iterates follow an
Ornstein-Uhlenbeck process whose stationary Gaussian approximates the
posterior, and that the rate and diagonal preconditioner minimising the KL
divergence to it are ``eps* = 2 D S / (N tr(BB^T))`` and
``H* = (2 S / N) (BB^T)^(-1)``, ``BB^T`` the per-example gradient covariance
(:mod:`sgmcmc.gradient_noise`). With ``learning_rate="optimal"`` the warmup
(``sample(..., num_warmup=W)``) runs SGD at an initial rate for ``W // 2``
steps, estimates ``BB^T`` at the iterates of the remaining steps from one
extra minibatch of per-example gradients per step (diagonal, or rank-``r``
plus diagonal with ``noise_rank=r``), and sets the rate (and, with
``preconditioner="optimal"``, ``H* = eps* P`` with ``P = mean(diag BB^T)
(BB^T)^(-1)``, diagonal or applied through the Woodbury identity) for the
sampling phase. With momentum the effective rate is ``eps / (1 - mu)``, so
``eps* (1 - mu)`` is set.

**Stability guard.** At the end of warmup the largest eigenvalue of the
(preconditioned) Hessian of the mean loss is estimated by Hessian-vector power
iteration (:mod:`sgmcmc.curvature`) at each chain's position; when
``eps lam_max >= 2 (1 + mu)`` the recursion has no stationary distribution
(it diverges along the stiffest direction). ``stability="warn"`` warns
(:class:`StabilityWarning`), ``"clip"`` also lowers the rate to
``(1 + mu) / lam_max`` (half the bound), ``"off"`` skips the check. The
estimate is in ``state.lambda_max``. Mandt et al.'s rate assumes
``BB^T ~ N x Hessian``; when the curvature is much more uneven than the
noise (ill-conditioned problems, small ``N / S``) ``eps*`` overshoots the
bound: the guard is there for that.

How the result is approximate: the stationary law is Gaussian only near a
mode, matches the posterior only if ``BB^T`` is proportional to the Hessian,
covers a single mode, and (for a fixed rate) has covariance
``~ (eps / 2S) A^(-1) BB^T`` rather than ``(N A)^(-1)``; with the wrong rate
it can be far too wide or too narrow (see :mod:`sgmcmc.samplers.sgld` for the
Langevin alternative, which targets the posterior for any small rate).
"""

from __future__ import annotations

import functools
import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.flatten_util import ravel_pytree

from sgmcmc import noise
from sgmcmc._tree import PyTree
from sgmcmc.adaptation.base import Warmup
from sgmcmc.curvature import largest_eigenvalue, stability_bound
from sgmcmc.gradient_noise import (
    NOISE_FLOOR,
    GradientNoise,
    noise_diagonal,
    noise_init,
    noise_low_rank,
    noise_trace,
    noise_update,
    optimal_learning_rate,
    per_example_gradients,
)
from sgmcmc.gradients import take_batch
from sgmcmc.samplers.base import Sampler, register
from sgmcmc.samplers.sg_common import SGInfo, check_real, data_scale, make_gradient_estimator, reject_non_finite
from sgmcmc.samplers.step_size import check_step_size, current_step_size, initial_step_size
from sgmcmc.target import Target

__all__ = [
    "constant_sgd",
    "check_sgd_settings",
    "sgd_kernel",
    "ConstantSGDState",
    "SGDPreconditioner",
    "StabilityWarning",
    "MIN_OPTIMAL_WARMUP",
]

#: Warmup steps ``learning_rate="optimal"`` needs at least (half of them estimate the noise).
MIN_OPTIMAL_WARMUP = 20

# Noise streams of a step's key used by the warmup (the transition uses streams 0-2).
_NOISE_BATCH_TAG = 0x5A17
_CURVATURE_TAG = 0x5A18


class StabilityWarning(UserWarning):
    """Constant SGD's rate is beyond the stability bound ``eps lam_max >= 2 (1 + mu)``."""


class SGDPreconditioner(NamedTuple):
    """``H g = diag * g - factor @ (core @ (factor^T g))`` (``factor`` has 0 columns when diagonal)."""

    diag: jax.Array
    factor: jax.Array
    core: jax.Array


class ConstantSGDState(NamedTuple):
    """State of a constant-SGD chain.

    ``velocity`` is the heavy-ball buffer (``None`` without momentum);
    ``preconditioner`` is ``None`` unless ``preconditioner="optimal"``;
    ``lambda_max`` is the curvature the stability guard measured (NaN before).
    """

    position: PyTree
    velocity: PyTree
    learning_rate: jax.Array
    preconditioner: SGDPreconditioner | None
    lambda_max: jax.Array
    count: jax.Array


def _apply_preconditioner(pre: SGDPreconditioner, flat_grad: jax.Array) -> jax.Array:
    out = pre.diag * flat_grad
    if pre.factor.shape[-1]:
        out = out - pre.factor @ (pre.core @ (pre.factor.T @ flat_grad))
    return out


def _check_choice(value, name: str, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}.")


def _check_int(value, name: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low or (high and value > high):
        bound = f"[{low}, {high}]" if high else f">= {low}"
        raise ValueError(f"{name} must be an integer {bound}, got {value!r}.")
    return int(value)


@register("constant_sgd")
def constant_sgd(
    target: Target,
    learning_rate="optimal",
    *,
    batch_size: int | None = None,
    momentum: float = 0.0,
    preconditioner: str | None = None,
    noise_rank: int = 0,
    initial_learning_rate: float | None = None,
    stability: str = "warn",
    power_iterations: int = 20,
    curvature_batch_size: int | None = None,
    noise_floor: float = NOISE_FLOOR,
) -> Sampler:
    """Constant-rate SGD whose iterates are approximate posterior draws (see module docstring).

    Args:
        target: a data-driven :class:`~sgmcmc.Target` (``Target.from_data``);
            other targets run full-batch gradient descent (no noise).
        learning_rate: ``eps`` on the mean loss (as in ``optax.sgd``): a
            positive float, a schedule ``count -> eps``, or ``"optimal"``
            (Mandt et al.'s rate, estimated during warmup; needs
            ``num_warmup >= MIN_OPTIMAL_WARMUP`` in :func:`sgmcmc.sample`).
        batch_size: minibatch size S (``None``: full batch).
        momentum: heavy-ball coefficient ``mu`` in ``[0, 1)``.
        preconditioner: ``None`` or ``"optimal"`` (``H* ~ (BB^T)^(-1)``;
            needs ``learning_rate="optimal"``).
        noise_rank: ``0`` estimates ``BB^T`` as diagonal; ``r > 0`` as rank
            ``r`` plus diagonal (used by ``preconditioner="optimal"``).
        initial_learning_rate: the rate of the first half of warmup when
            ``learning_rate="optimal"``; default ``(1 - mu) / lam_max`` from
            power iteration at the initial position.
        stability: ``"warn"``, ``"clip"`` or ``"off"`` (module docstring).
        power_iterations: Hessian-vector products per curvature estimate.
        curvature_batch_size: examples the curvature is estimated on
            (``None``: all the data).
        noise_floor: relative floor on a coordinate's noise variance in the
            optimal preconditioner (:func:`~sgmcmc.gradient_noise.optimal_preconditioner`).
    """
    settings = check_sgd_settings(
        target,
        learning_rate,
        batch_size=batch_size,
        momentum=momentum,
        preconditioner=preconditioner,
        noise_rank=noise_rank,
        initial_learning_rate=initial_learning_rate,
        stability=stability,
        power_iterations=power_iterations,
        curvature_batch_size=curvature_batch_size,
        noise_floor=noise_floor,
    )
    return _build(target, settings)


def check_sgd_settings(
    target: Target,
    learning_rate="optimal",
    *,
    batch_size: int | None = None,
    momentum: float = 0.0,
    preconditioner: str | None = None,
    noise_rank: int = 0,
    initial_learning_rate: float | None = None,
    stability: str = "warn",
    power_iterations: int = 20,
    curvature_batch_size: int | None = None,
    noise_floor: float = NOISE_FLOOR,
) -> dict:
    """Validate :func:`constant_sgd`'s settings (shared with SWAG); returns them as a dict."""
    optimal = isinstance(learning_rate, str)
    if optimal:
        _check_choice(learning_rate, "learning_rate", ("optimal",))
    else:
        learning_rate = check_step_size(learning_rate, "learning_rate")
    momentum = check_real(momentum, "momentum", low=0.0, high=1.0, high_open=True)
    _check_choice(preconditioner, "preconditioner", (None, "optimal"))
    _check_choice(stability, "stability", ("warn", "clip", "off"))
    if preconditioner == "optimal" and not optimal:
        raise ValueError('preconditioner="optimal" carries the rate; it needs learning_rate="optimal".')
    dim = int(ravel_pytree(target.initial_position)[0].shape[0])
    noise_rank = _check_int(noise_rank, "noise_rank", 0, dim)
    if noise_rank and preconditioner != "optimal":
        raise ValueError('noise_rank > 0 only changes the optimal preconditioner; set preconditioner="optimal".')
    if initial_learning_rate is not None:
        initial_learning_rate = check_step_size(initial_learning_rate, "initial_learning_rate")
        if callable(initial_learning_rate):
            raise ValueError("initial_learning_rate must be a float, not a schedule.")
    power_iterations = _check_int(power_iterations, "power_iterations", 1)
    noise_floor = check_real(noise_floor, "noise_floor", low=0.0, low_open=True)
    if batch_size is not None or optimal:
        if not target.is_data_driven:
            raise ValueError(
                f"target {target.name!r} has no per-example likelihood; constant SGD with minibatches or "
                'learning_rate="optimal" needs Target.from_data.'
            )
        if batch_size is None:
            raise ValueError('learning_rate="optimal" needs a batch_size (the noise it balances is minibatch noise).')
        batch_size = _check_int(batch_size, "batch_size", 2 if optimal else 1, target.num_data)
    if curvature_batch_size is not None:
        if not target.is_data_driven:
            raise ValueError("curvature_batch_size needs a data-driven target.")
        curvature_batch_size = _check_int(curvature_batch_size, "curvature_batch_size", 1, target.num_data)
    settings = dict(
        learning_rate=learning_rate,
        batch_size=batch_size,
        momentum=momentum,
        preconditioner=preconditioner,
        noise_rank=noise_rank,
        initial_learning_rate=initial_learning_rate,
        stability=stability,
        power_iterations=power_iterations,
        curvature_batch_size=curvature_batch_size,
        noise_floor=noise_floor,
    )
    return settings


class SGDKernel(NamedTuple):
    """What SWAG reuses from constant SGD: ``init``, ``step`` and the warmup pieces."""

    init: object
    step: object
    warmup: Warmup | None
    min_warmup: int


def sgd_kernel(target: Target, s: dict) -> SGDKernel:
    """The constant-SGD ``init`` / ``step`` / warmup for validated settings ``s``."""
    estimator = make_gradient_estimator(target, s["batch_size"])
    scale = data_scale(target)
    lr = s["learning_rate"]
    optimal = lr == "optimal"
    mu = s["momentum"]
    has_pre = s["preconditioner"] == "optimal"

    def init(position: PyTree) -> ConstantSGDState:
        flat, _ = ravel_pytree(position)
        dtype = flat.dtype
        if optimal:
            rate = jnp.asarray(np.nan if s["initial_learning_rate"] is None else s["initial_learning_rate"], dtype)
        else:
            rate = initial_step_size(lr, dtype)
        velocity = jax.tree.map(jnp.zeros_like, position) if mu > 0 else None
        pre = None
        if has_pre:
            r = s["noise_rank"]
            pre = SGDPreconditioner(jnp.ones_like(flat), jnp.zeros((flat.shape[0], r), dtype), jnp.zeros((r, r), dtype))
        return ConstantSGDState(position, velocity, rate, pre, jnp.full((), np.nan, dtype), jnp.zeros((), jnp.int32))

    def step(key: jax.Array, state: ConstantSGDState, batch=None) -> tuple[ConstantSGDState, SGInfo]:
        estimate = estimator.estimate(key, state.position, batch)
        eps = state.learning_rate if optimal else current_step_size(lr, state.learning_rate, state.count)
        # Gradient of the mean loss L = -log pi / N.
        grad = jax.tree.map(lambda g: g * (-1.0 / scale), estimate.grad)
        if has_pre:
            flat, unravel = ravel_pytree(grad)
            grad = unravel(_apply_preconditioner(state.preconditioner, flat))
        if mu > 0:
            velocity = jax.tree.map(lambda v, g: mu * v + g, state.velocity, grad)
            direction = velocity
        else:
            velocity, direction = None, grad
        proposed = jax.tree.map(lambda x, d: x - eps * d, state.position, direction)
        finite, (position, velocity) = reject_non_finite(
            estimate.value, (proposed, velocity), (state.position, state.velocity), check=proposed
        )
        new_state = state._replace(position=position, velocity=velocity, count=state.count + 1)
        info = SGInfo(
            acceptance_rate=jnp.ones((), eps.dtype),
            is_divergent=~finite,
            step_size=eps,
            num_grad_evals=estimate.num_grad_evals,
            logdensity=estimate.value,
        )
        return new_state, info

    warmup = None if callable(lr) else _sgd_warmup(target, s, step)
    return SGDKernel(init, step, warmup, MIN_OPTIMAL_WARMUP if optimal else 0)


def _build(target: Target, s: dict) -> Sampler:
    kernel = sgd_kernel(target, s)

    def rebuild(new_target: Target) -> Sampler:
        return _build(new_target, s)

    return Sampler(kernel.init, kernel.step, target, rebuild, "constant_sgd", False, kernel.warmup, kernel.min_warmup)


# -- warmup: noise estimate, optimal rate and preconditioner, stability guard --


class SGDWarmupState(NamedTuple):
    """Per-chain gradient-noise accumulators and where their window starts."""

    noise: GradientNoise | None
    estimate_start: jax.Array


def _mean_loss_fn(target: Target, s: dict, key):
    """The mean loss ``-log pi / N`` the curvature is taken of (full data or one fixed minibatch)."""
    scale = data_scale(target)
    n = s["curvature_batch_size"]
    if n is None or n == target.num_data:
        return lambda p: -target.logdensity(p) / scale
    indices = noise.uniform_indices(key, n, target.num_data)
    batch = take_batch(target.data, indices)
    return lambda p: -(target.logprior_fn(p) + (target.num_data / n) * jnp.sum(target.loglik_fn(p, batch))) / scale


def _warn_unstable(ratio, *, stability):
    ratio = np.atleast_1d(np.asarray(ratio))
    bad = np.flatnonzero(~(ratio < 1.0))
    if bad.size:
        if stability == "clip":
            action = "the rate was clipped to (1 + mu) / lam_max, half the bound"
        else:
            action = "the chain may diverge; stability='clip' lowers the rate, a smaller learning_rate or a larger "
            action += "batch_size avoids it"
        warnings.warn(
            f"constant SGD is beyond its stability bound in chain(s) {bad.tolist()}: eps * lam_max / (2 (1 + mu)) = "
            f"{np.round(ratio[bad], 3).tolist()} >= 1 ({action}).",
            StabilityWarning,
            stacklevel=2,
        )


def _sgd_warmup(target: Target, s: dict, step) -> Warmup:
    optimal = s["learning_rate"] == "optimal"
    has_pre = s["preconditioner"] == "optimal"
    rank = s["noise_rank"]
    mu = s["momentum"]
    batch_size = s["batch_size"]
    num_data = target.num_data
    bound = stability_bound(mu)
    need_initial = optimal and s["initial_learning_rate"] is None

    def transition(key, state):
        new, info = step(key, state)
        return new, info, None

    def curvature(key, state, pre):
        loss = _mean_loss_fn(target, s, noise.fold_in(key, _CURVATURE_TAG))
        return largest_eigenvalue(
            loss,
            state.position,
            noise.fold_in(key, _CURVATURE_TAG + 1),
            num_iterations=s["power_iterations"],
            preconditioner=pre,
        )

    def init(states, num_warmup: int):
        noise_state = None
        if optimal:
            chains = jax.tree.leaves(states.position)[0].shape[0]
            flat = jax.vmap(lambda p: ravel_pytree(p)[0])(states.position)
            keys = jax.vmap(lambda i: noise.fold_in(jnp.zeros((2,), jnp.uint32), i))(jnp.arange(chains))
            noise_state = jax.vmap(lambda k: noise_init(flat.shape[1], flat.dtype, rank=rank, key=k))(keys)
        return states, SGDWarmupState(noise_state, jnp.asarray(num_warmup // 2, jnp.int32))

    def prepare(keys, states, adapt, t):
        if not need_initial:
            return states, adapt

        def initial_rate(states):
            lam = jax.vmap(lambda k, st: curvature(k, st, None))(keys, states)
            # A flat or non-finite curvature leaves no scale to go by: fall back to rate 1 - mu.
            ok = jnp.isfinite(lam) & (lam > 0)
            return states._replace(learning_rate=jnp.where(ok, (1.0 - mu) / jnp.where(ok, lam, 1.0), 1.0 - mu))

        return lax.cond(t == 0, initial_rate, lambda st: st, states), adapt

    def update(keys, old_states, states, info, aux, adapt, t):
        if not optimal:
            return states, adapt

        def add_batch(noise_state):
            def one(key, position, ns):
                indices = noise.uniform_indices(noise.fold_in(key, _NOISE_BATCH_TAG), batch_size, num_data)
                grads = per_example_gradients(target, position, take_batch(target.data, indices))
                return noise_update(ns, grads)

            return jax.vmap(one)(keys, states.position, noise_state)

        noise_state = lax.cond(t >= adapt.estimate_start, add_batch, lambda ns: ns, adapt.noise)
        return states, adapt._replace(noise=noise_state)

    def finalize(states, adapt):
        chains = jax.tree.leaves(states.position)[0].shape[0]
        keys = jax.vmap(lambda i: noise.fold_in(jnp.ones((2,), jnp.uint32), i))(jnp.arange(chains))

        def one(key, state, ns):
            rate, pre = state.learning_rate, state.preconditioner
            if optimal:
                flat = ravel_pytree(state.position)[0]
                rate = optimal_learning_rate(noise_trace(ns), num_data, batch_size, flat.shape[0], mu)
                # No measurable noise (tr BB^T = 0) gives no optimal rate: keep the warmup's rate.
                rate = jnp.where(jnp.isfinite(rate) & (rate > 0), rate, state.learning_rate).astype(flat.dtype)
                if has_pre:
                    pre = _optimal_preconditioner(ns, rank, s["noise_floor"])
            lam = jnp.full((), jnp.nan, rate.dtype)
            ratio = lam
            if s["stability"] != "off":
                apply = None if pre is None else (lambda v: _apply_preconditioner(pre, v))
                lam = curvature(key, state, apply)
                ratio = rate * lam / bound
                if s["stability"] == "clip":
                    rate = jnp.where(ratio >= 1.0, (1.0 + mu) / lam, rate)
            return state._replace(learning_rate=rate, preconditioner=pre, lambda_max=lam), ratio

        if optimal:
            new, ratio = jax.vmap(one)(keys, states, adapt.noise)
        else:
            new, ratio = jax.vmap(lambda k, st: one(k, st, None))(keys, states)
        if s["stability"] != "off":
            # Reported once, on the host, at the end of warmup (not per step).
            jax.debug.callback(functools.partial(_warn_unstable, stability=s["stability"]), ratio)
        return new

    return Warmup(transition, init, prepare, update, finalize, "constant_sgd")


def _optimal_preconditioner(ns: GradientNoise, rank: int, floor: float) -> SGDPreconditioner:
    """``P = mean(diag BB^T) (BB^T)^(-1)`` (so that ``H* = eps* P``), diagonal or low-rank plus diagonal."""
    diag = noise_diagonal(ns)
    mean = jnp.mean(diag)
    dim = diag.shape[0]
    if rank == 0:
        floored = jnp.maximum(diag, floor * mean)
        return SGDPreconditioner(mean / floored, jnp.zeros((dim, 0), diag.dtype), jnp.zeros((0, 0), diag.dtype))
    low = noise_low_rank(ns, rank)
    d = jnp.maximum(low.diag, floor * mean)
    # (d + U L U^T)^-1 = d^-1 - d^-1 U (L^-1 + U^T d^-1 U)^-1 U^T d^-1  (Woodbury).
    w = low.factor / d[:, None]
    lam = jnp.maximum(low.eigenvalues, floor * mean)
    core = jnp.linalg.inv(jnp.diag(1.0 / lam) + low.factor.T @ w)
    core = 0.5 * (core + core.T)
    return SGDPreconditioner(mean / d, w, mean * core)
