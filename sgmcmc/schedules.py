"""Step-size and temperature schedules for the stochastic-gradient samplers.

A schedule is a function ``count -> value`` of the sampler's step count (the
number of steps taken before this one, warmup included), exactly like an optax
schedule; every optax schedule is accepted wherever sgmcmc takes a step size
or a temperature. This module adds the two schedules of the SG-MCMC
literature that optax does not have, and the relaxation-temperature annealing
of Gumbel-softmax training:

* :func:`polynomial_decay` -- ``a (b + t)^(-gamma)`` (Teh, Thiery & Vollmer
  2016, "Consistency and fluctuations for stochastic gradient Langevin
  dynamics", JMLR): with ``gamma`` in ``(0, 1]`` the step sizes sum to
  infinity, so SGLD's averages are consistent; ``gamma = 1/3`` gives the
  optimal rate ``t^(-1/3)`` of the mean-squared error.
* :func:`exponential_annealing` -- exponential decay to a floor,
  ``max(floor, initial exp(-rate t))``, updated every ``interval`` steps: the
  temperature annealing of Gumbel-softmax training (Jang, Gu & Poole 2017;
  see :mod:`sgmcmc.relaxed`), usable for any decaying quantity.
* :func:`cyclical_cosine` -- cSG-MCMC's cyclical cosine step size (Zhang, Li,
  Zhang, Chen & Wilson 2020, "Cyclical stochastic gradient MCMC for Bayesian
  deep learning", ICLR). Each cycle of ``L`` steps starts with a large step
  that explores (the first ``exploration_fraction`` of the cycle: no draws
  are kept, and Zhang et al. run it without noise) and ends with small steps
  that sample.

Collection is not the sampler's business: a :class:`CyclicalSchedule` says
which steps belong to a sampling stage (:meth:`CyclicalSchedule.is_sampling`),
and the driver keeps only those draws when it is passed as the collection
policy, ``sgmcmc.sample(..., keep=schedule)``. The update rule never sees it.
"""

from __future__ import annotations

import dataclasses
import math
import numbers

import jax
import jax.numpy as jnp

__all__ = [
    "polynomial_decay",
    "cyclical_cosine",
    "CyclicalSchedule",
    "PolynomialDecay",
    "exponential_annealing",
    "ExponentialAnnealing",
]


def _real(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}.")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}.")
    return value


def _int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


@dataclasses.dataclass(frozen=True)
class PolynomialDecay:
    """``count -> a (b + count)^(-gamma)``; build it with :func:`polynomial_decay`."""

    a: float
    b: float
    gamma: float

    def __call__(self, count):
        count = jnp.asarray(count, jnp.float32)
        return self.a * (self.b + count) ** (-self.gamma)


def polynomial_decay(a: float, b: float = 1.0, gamma: float = 1.0 / 3.0) -> PolynomialDecay:
    """The step size ``a (b + t)^(-gamma)`` of Teh, Thiery & Vollmer (2016).

    Args:
        a: scale, > 0 (the step at ``t = 0`` is ``a b^(-gamma)``).
        b: offset, > 0.
        gamma: decay exponent in ``(0, 1]`` (1/3 is their optimal rate for SGLD).
    """
    a, b, gamma = _real(a, "a"), _real(b, "b"), _real(gamma, "gamma")
    if a <= 0:
        raise ValueError(f"a must be > 0, got {a}.")
    if b <= 0:
        raise ValueError(f"b must be > 0, got {b}.")
    if not 0 < gamma <= 1:
        raise ValueError(f"gamma must be in (0, 1], got {gamma}.")
    return PolynomialDecay(a, b, gamma)


@dataclasses.dataclass(frozen=True)
class CyclicalSchedule:
    """Zhang et al.'s cyclical cosine step size with an exploration stage; see :func:`cyclical_cosine`.

    Calling it gives the step size at ``count``; :meth:`is_sampling` says
    whether the step at ``count`` is in a sampling stage (the driver's
    collection policy); :meth:`temperature` gives the matching temperature
    schedule (0 while exploring, as in Zhang et al.).
    """

    step_size: float
    cycle_length: int
    exploration_fraction: float

    def phase(self, count) -> jax.Array:
        """Position ``r`` in ``[0, 1)`` of step ``count`` within its cycle."""
        count = jnp.asarray(count)
        return jnp.mod(count, self.cycle_length).astype(jnp.float32) / self.cycle_length

    def __call__(self, count) -> jax.Array:
        # (a / 2) (cos(pi r) + 1) = a cos^2(pi r / 2), written as the latter so that the
        # last steps of a long cycle do not round to 0 in float32.
        return self.step_size * jnp.cos(0.5 * jnp.pi * self.phase(count)) ** 2

    @property
    def sampling_start(self) -> int:
        """The first step of each cycle that samples: the least ``k`` with ``k / L >= exploration_fraction``.

        Computed in double precision on the host, so that :meth:`is_sampling`
        is an exact integer comparison (``k / L`` in float32 can round below
        the fraction).
        """
        k = math.ceil(self.exploration_fraction * self.cycle_length)
        while k > 0 and (k - 1) / self.cycle_length >= self.exploration_fraction:
            k -= 1
        while k / self.cycle_length < self.exploration_fraction:
            k += 1
        return k

    def is_sampling(self, count) -> jax.Array:
        """True for the steps of a sampling stage (``r >= exploration_fraction``)."""
        return jnp.mod(jnp.asarray(count), self.cycle_length) >= self.sampling_start

    def cycle(self, count) -> jax.Array:
        """Index of the cycle the step at ``count`` belongs to."""
        return jnp.asarray(count) // self.cycle_length

    def temperature(self, temperature: float = 1.0):
        """The temperature schedule ``count -> T if sampling else 0`` (noise-free exploration)."""
        temperature = _real(temperature, "temperature")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}.")

        def schedule(count):
            return jnp.where(self.is_sampling(count), temperature, 0.0).astype(jnp.float32)

        return schedule


def cyclical_cosine(step_size: float, cycle_length: int, exploration_fraction: float = 0.5) -> CyclicalSchedule:
    """Cyclical cosine step sizes (Zhang et al. 2020, eq. 1).

    ``alpha_t = (alpha_0 / 2) (cos(pi r_t) + 1)`` with ``r_t = (t mod L) / L``:
    each cycle of ``L = cycle_length`` steps starts at ``alpha_0 = step_size``
    and decays to nearly 0. Steps with ``r_t < exploration_fraction`` explore
    (Zhang et al.'s ``beta``); the others sample. For ``K`` steps in ``M``
    cycles, Zhang et al.'s ``ceil(K / M)`` is ``cycle_length``.

    Args:
        step_size: ``alpha_0 > 0``, the step size at the start of each cycle.
        cycle_length: ``L >= 1`` steps per cycle.
        exploration_fraction: ``beta`` in ``[0, 1)``.
    """
    step_size = _real(step_size, "step_size")
    if step_size <= 0:
        raise ValueError(f"step_size must be > 0, got {step_size}.")
    cycle_length = _int(cycle_length, "cycle_length", 1)
    exploration_fraction = _real(exploration_fraction, "exploration_fraction")
    if not 0 <= exploration_fraction < 1:
        raise ValueError(f"exploration_fraction must be in [0, 1), got {exploration_fraction}.")
    return CyclicalSchedule(step_size, cycle_length, exploration_fraction)


@dataclasses.dataclass(frozen=True)
class ExponentialAnnealing:
    """``count -> max(floor, initial exp(-rate t))``, ``t = interval floor(count / interval)``.

    Build it with :func:`exponential_annealing`.
    """

    initial: float
    rate: float
    floor: float
    interval: int

    def __call__(self, count) -> jax.Array:
        count = jnp.asarray(count)
        t = (count // self.interval) * self.interval
        return jnp.maximum(self.floor, self.initial * jnp.exp(-self.rate * t.astype(jnp.float32)))


def exponential_annealing(
    initial: float = 1.0, rate: float = 1e-4, floor: float = 0.5, interval: int = 1
) -> ExponentialAnnealing:
    """Exponential decay to a floor: Jang et al.'s Gumbel-softmax temperature annealing.

    ``tau_t = max(floor, initial * exp(-rate * t))`` with ``t`` the step count
    rounded down to a multiple of ``interval`` (Jang, Gu & Poole 2017,
    "Categorical reparameterization with Gumbel-softmax", ICLR, section 4:
    ``max(0.5, exp(-r t))`` with ``r`` in ``{1e-5, 1e-4}``, updated every 500
    steps, is ``exponential_annealing(1.0, r, 0.5, 500)``). A relaxed sample's
    bias falls with its temperature and its gradient variance grows, so
    training starts warm and cools to the floor.

    The same function as ``optax.exponential_decay(initial, interval,
    exp(-rate * interval), staircase=interval > 1, end_value=floor)``, with
    the parameters named as in the paper; like every schedule here it is a
    function ``count -> value`` that works on traced counts.

    Args:
        initial: ``tau_0 > 0``.
        rate: ``r >= 0`` per step.
        floor: ``tau_min`` in ``(0, initial]``; the value never goes below it.
        interval: ``N >= 1``, steps between updates.
    """
    initial, rate, floor = _real(initial, "initial"), _real(rate, "rate"), _real(floor, "floor")
    if initial <= 0:
        raise ValueError(f"initial must be > 0, got {initial}.")
    if rate < 0:
        raise ValueError(f"rate must be >= 0, got {rate}.")
    if not 0 < floor <= initial:
        raise ValueError(f"floor must be in (0, initial] = (0, {initial}], got {floor}.")
    interval = _int(interval, "interval", 1)
    return ExponentialAnnealing(initial, rate, floor, interval)
