"""Nesterov dual averaging of the log step size (Hoffman & Gelman 2014, Alg. 5).

Drives the mean acceptance statistic toward ``target_accept``:

    h_t   = (1 - 1/(t + t0)) h_{t-1} + (target - a_t) / (t + t0)
    x_t   = mu - sqrt(t) / gamma * h_t
    xb_t  = t^-kappa x_t + (1 - t^-kappa) xb_{t-1}

with ``mu = log(10 eps_0)``, ``gamma = 0.05``, ``t0 = 10``, ``kappa = 0.75``
(Stan's defaults). The step size used while adapting is ``exp(x_t)``; the
one kept afterwards is ``exp(xb_t)``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["DualAveragingState", "dual_averaging_init", "dual_averaging_update", "robbins_monro_update"]

GAMMA = 0.05
T0 = 10.0
KAPPA = 0.75


class DualAveragingState(NamedTuple):
    log_step_size: jax.Array
    log_step_size_avg: jax.Array
    error_avg: jax.Array
    count: jax.Array
    mu: jax.Array


def dual_averaging_init(step_size: jax.Array) -> DualAveragingState:
    step_size = jnp.asarray(step_size)
    zero = jnp.zeros((), step_size.dtype)
    log_eps = jnp.log(step_size)
    return DualAveragingState(log_eps, log_eps, zero, zero, jnp.log(10.0) + log_eps)


def dual_averaging_update(state: DualAveragingState, acceptance: jax.Array, target_accept: float) -> DualAveragingState:
    """One update with the step's acceptance statistic (NaN counts as 0)."""
    acceptance = jnp.where(jnp.isfinite(acceptance), acceptance, 0.0).astype(state.error_avg.dtype)
    t = state.count + 1.0
    w = 1.0 / (t + T0)
    error_avg = (1.0 - w) * state.error_avg + w * (target_accept - acceptance)
    log_eps = state.mu - jnp.sqrt(t) / GAMMA * error_avg
    eta = t ** (-KAPPA)
    log_eps_avg = eta * log_eps + (1.0 - eta) * state.log_step_size_avg
    return DualAveragingState(log_eps, log_eps_avg, error_avg, t, state.mu)


#: Gain of the Robbins-Monro refinement that ends warmup (see ``robbins_monro_update``).
RM_GAIN = 1.0
RM_DECAY = 0.6


def robbins_monro_update(log_step_size: jax.Array, count: jax.Array, acceptance: jax.Array, target_accept: float):
    """One stochastic-approximation step ``log eps += g_t (a_t - target)``, ``g_t = (t + 1)^-0.6``.

    Dual averaging's average iterate is conservative: its iterates spread
    widely (the ``sqrt(t) / gamma`` factor), the mean acceptance *of the
    iterates* matches the target, and the acceptance at their (log) average is
    well above it (0.85-0.89 for a 0.8 target on Gaussians, in Stan and NumPyro
    alike). A Robbins-Monro recursion run at the step size it returns, with a
    decreasing gain, converges to the step size whose own expected acceptance is
    the target; warmup ends with it.
    """
    acceptance = jnp.where(jnp.isfinite(acceptance), acceptance, 0.0).astype(log_step_size.dtype)
    gain = RM_GAIN * (count + 1.0) ** (-RM_DECAY)
    return log_step_size + gain * (acceptance - target_accept), count + 1.0
