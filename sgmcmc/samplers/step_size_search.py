"""Stan's search for a reasonable first step size (``init_stepsize``).

From the current point, with a fresh momentum each time, take one leapfrog
step and compare the energy change with ``log(0.8)``: keep doubling the step
size while one step is accepted with probability above 0.8, or halving it
while it is below (Hoffman & Gelman 2014, Alg. 4, with Stan's 0.8
threshold). Works on any state with ``position``, ``logdensity``,
``logdensity_grad``, ``step_size`` and ``inverse_mass_matrix``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from sgmcmc import noise
from sgmcmc._tree import as_carry_of
from sgmcmc.samplers.integrators import IntegratorState, leapfrog
from sgmcmc.samplers.phase_space import flat_view
from sgmcmc.target import Target

__all__ = ["find_reasonable_step_size"]

_LOG_THRESHOLD = float(jnp.log(0.8))
_MAX_TRIES = 60


def find_reasonable_step_size(key: jax.Array, state, target: Target) -> jax.Array:
    """A step size at which one leapfrog step is accepted with probability near 0.8."""
    flat, flat_grad, _, metric, logdensity_and_grad = flat_view(state, target)
    dtype = flat.dtype

    def delta_energy(step_size, key):
        momentum = metric.sample_momentum(key, flat)
        start = IntegratorState(flat, momentum, state.logdensity, flat_grad)
        end = leapfrog(start, step_size, logdensity_and_grad, metric)
        h0 = -start.logdensity + metric.kinetic_energy(start.momentum)
        h1 = -end.logdensity + metric.kinetic_energy(end.momentum)
        delta = h0 - h1
        return jnp.where(jnp.isfinite(delta), delta, -jnp.inf)

    # Try 0 tests the starting step size and fixes the direction; later tries
    # double or halve. One loop, so the leapfrog step is compiled once.
    def cond(carry):
        i, _, _, keep_going = carry
        return keep_going & (i <= _MAX_TRIES)

    def body(carry):
        i, eps, direction, _ = carry
        new = jnp.where(i == 0, eps, eps * jnp.where(direction > 0, 2.0, 0.5).astype(dtype))
        delta = delta_energy(new, noise.fold_in(key, i))
        direction = jnp.where(i == 0, jnp.where(delta > _LOG_THRESHOLD, 1.0, -1.0).astype(dtype), direction)
        keep_going = jnp.where(direction > 0, delta > _LOG_THRESHOLD, delta < _LOG_THRESHOLD)
        return i + 1, new, direction, keep_going

    # The constant carries are derived from the step size: batched under vmap (see as_carry_of).
    step_size = jnp.asarray(state.step_size, dtype)
    count, direction, searching = as_carry_of(step_size, (jnp.int32(0), jnp.ones((), dtype), jnp.bool_(True)))
    init = (count, step_size, direction, searching)
    _, step_size, _, _ = lax.while_loop(cond, body, init)
    tiny = jnp.finfo(dtype).tiny
    return jnp.clip(step_size, 1e3 * tiny, 1e7).astype(dtype)
