"""Step sizes: a positive float, or a schedule ``count -> step size``.

Any optax schedule (``optax.cosine_decay_schedule``,
``optax.polynomial_schedule``, ...) is a valid schedule: a function of the
step count. A float step size lives in the sampler state (so that warmup can
adapt it per chain); a schedule is evaluated at the state's step count.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Union

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["StepSize", "check_step_size", "initial_step_size", "current_step_size"]

StepSize = Union[float, Callable[[jax.Array], jax.Array]]


def check_step_size(step_size: StepSize, name: str = "step_size") -> StepSize:
    """Validate a step size before anything is compiled.

    Floats must be finite and > 0. A schedule is checked at counts 0, 1 and
    1000 (it must return a finite positive scalar there).
    """
    if callable(step_size):
        for count in (0, 1, 1000):
            try:
                value = np.asarray(step_size(jnp.asarray(count)))
            except Exception as err:
                raise ValueError(f"{name} schedule failed at count {count}: {err}") from err
            if value.shape != () or not np.isfinite(value) or value <= 0:
                raise ValueError(f"{name} schedule must return a finite positive scalar; at count {count} got {value}.")
        return step_size
    if isinstance(step_size, bool) or not isinstance(step_size, (numbers.Real, np.ndarray, jax.Array)):
        raise TypeError(f"{name} must be a positive float or a schedule (count -> step size), got {step_size!r}.")
    value = np.asarray(step_size)
    if value.shape != ():
        raise ValueError(f"{name} must be a scalar, got shape {value.shape}.")
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be finite and > 0, got {float(value)}.")
    return float(value)


def initial_step_size(step_size: StepSize, dtype) -> jax.Array:
    """The value stored in a fresh state (the schedule's value at count 0)."""
    if callable(step_size):
        return jnp.asarray(step_size(jnp.asarray(0)), dtype)
    return jnp.asarray(step_size, dtype)


def current_step_size(step_size: StepSize, stored: jax.Array, count: jax.Array) -> jax.Array:
    """Step size for the step at ``count``: the schedule's value, or the stored one.

    :func:`check_step_size` checks a schedule at a few counts only. A schedule
    that turns negative later in a run gives NaN here, so the step is rejected
    and reported as divergent (``info.is_divergent``, the state kept) instead
    of running a sampler backwards (SGHMC with a negative step size climbs away
    from the mode and its draws grow without bound while staying finite).
    """
    if callable(step_size):
        value = jnp.asarray(step_size(count), stored.dtype)
        return jnp.where(value < 0, jnp.nan, value)
    return stored
