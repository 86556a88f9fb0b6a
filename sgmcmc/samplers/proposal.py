"""The Metropolis-Hastings test and the divergence check.

``log_ratio`` is the log acceptance ratio (for HMC, minus the energy error).
A non-finite ratio is a rejection with probability one and a divergence; so
is an energy error above ``divergence_threshold`` (1000 by default, as in
Stan and BlackJAX). A rejected step leaves the chain where it was, so a NaN
never enters the chain.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["MHDecision", "metropolis_hastings"]


class MHDecision(NamedTuple):
    is_accepted: jax.Array
    acceptance_rate: jax.Array
    is_divergent: jax.Array


def metropolis_hastings(key: jax.Array, log_ratio: jax.Array, divergence_threshold: float = 1000.0) -> MHDecision:
    """Accept with probability ``min(1, exp(log_ratio))``; flag divergences."""
    finite = jnp.isfinite(log_ratio)
    is_divergent = ~finite | (-log_ratio > divergence_threshold)
    safe = jnp.where(finite, log_ratio, -jnp.inf)
    acceptance_rate = jnp.minimum(1.0, jnp.exp(safe))
    log_u = jnp.log(jax.random.uniform(key, dtype=acceptance_rate.dtype))
    is_accepted = finite & (log_u < safe)
    return MHDecision(is_accepted, acceptance_rate, is_divergent)
