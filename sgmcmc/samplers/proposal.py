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

from sgmcmc import noise

__all__ = ["MHDecision", "metropolis_hastings"]


class MHDecision(NamedTuple):
    is_accepted: jax.Array
    acceptance_rate: jax.Array
    is_divergent: jax.Array


#: Sub-stream of :func:`sgmcmc.noise.uniform` that the test's uniform comes from.
ACCEPT_STREAM = 0x4D48


def metropolis_hastings(key: jax.Array, log_ratio: jax.Array, divergence_threshold: float = 1000.0) -> MHDecision:
    """Accept with probability ``min(1, exp(log_ratio))``; flag divergences.

    The uniform is ``noise.uniform(key, stream=ACCEPT_STREAM)``, independent of
    the momentum a kernel draws from the same key with :func:`sgmcmc.noise.normal`.
    """
    finite = jnp.isfinite(log_ratio)
    is_divergent = ~finite | (-log_ratio > divergence_threshold)
    safe = jnp.where(finite, log_ratio, -jnp.inf)
    acceptance_rate = jnp.minimum(1.0, jnp.exp(safe))
    log_u = jnp.log(noise.uniform(key, (), acceptance_rate.dtype, stream=ACCEPT_STREAM))
    is_accepted = finite & (log_u < safe)
    return MHDecision(is_accepted, acceptance_rate, is_divergent)
