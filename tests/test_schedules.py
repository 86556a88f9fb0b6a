"""Schedules (polynomial decay, cyclical cosine), temperature schedules, and the driver's collection policy."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sgmcmc
from sgmcmc.schedules import cyclical_cosine, polynomial_decay


def quadratic_target():
    return sgmcmc.Target.from_logdensity(lambda p: -0.5 * jnp.sum(p["x"] ** 2), {"x": jnp.zeros(3)})


def test_polynomial_decay_values():
    schedule = polynomial_decay(0.1, 10.0, 0.55)
    counts = np.array([0, 1, 10, 1000])
    np.testing.assert_allclose(schedule(jnp.asarray(counts)), 0.1 * (10.0 + counts) ** -0.55, rtol=1e-6)
    for bad in [dict(a=0.0), dict(a=1.0, b=0.0), dict(a=1.0, gamma=0.0), dict(a=1.0, gamma=1.5)]:
        with pytest.raises(ValueError):
            polynomial_decay(**bad)


def test_cyclical_cosine_values_and_stages():
    schedule = cyclical_cosine(0.2, cycle_length=100, exploration_fraction=0.3)
    counts = jnp.arange(300)
    steps = np.asarray(schedule(counts))
    np.testing.assert_allclose(steps[[0, 100, 200]], 0.2, rtol=1e-6)
    np.testing.assert_allclose(steps[50], 0.1, rtol=1e-5)  # (a/2)(cos(pi/2) + 1)
    r = np.arange(300) % 100 / 100
    np.testing.assert_allclose(steps, 0.1 * (np.cos(np.pi * r) + 1), rtol=1e-4, atol=1e-7)
    assert np.all(steps > 0)
    sampling = np.asarray(schedule.is_sampling(counts))
    np.testing.assert_array_equal(sampling, r >= 0.3)
    temperature = schedule.temperature(2.0)
    np.testing.assert_array_equal(np.asarray(temperature(counts)), np.where(r >= 0.3, 2.0, 0.0))
    np.testing.assert_array_equal(np.asarray(schedule.cycle(counts)), np.arange(300) // 100)
    # Long cycles keep a positive step size to the last step (cos^2 form, no float32 cancellation).
    assert float(cyclical_cosine(1.0, 100_000)(99_999)) > 0
    for bad in [dict(step_size=0.0), dict(cycle_length=0), dict(exploration_fraction=1.0)]:
        with pytest.raises(ValueError):
            cyclical_cosine(**{"step_size": 0.1, "cycle_length": 10, **bad})


def test_driver_keeps_only_sampling_stage_draws():
    """keep=schedule drops exploration draws; the kept ones are exactly the full run's at those steps."""
    schedule = cyclical_cosine(0.1, cycle_length=40, exploration_fraction=0.5)
    sampler = sgmcmc.sgld(quadratic_target(), schedule, temperature=schedule.temperature(1.0))
    num_warmup, thin = 8, 2
    kept = sgmcmc.sample(
        sampler, num_samples=25, num_warmup=num_warmup, thin=thin, num_chains=2, seed=3, keep=schedule, progress=False
    )
    assert kept.samples["x"].shape == (2, 25, 3)
    # Slot j ends with step count num_warmup + (j + 1) thin - 1; find the kept slots by hand.
    counts = num_warmup + (np.arange(200) + 1) * thin - 1
    slots = np.flatnonzero(np.asarray(schedule.is_sampling(jnp.asarray(counts))))[:25]
    full = sgmcmc.sample(
        sampler, num_samples=int(slots[-1]) + 1, num_warmup=num_warmup, thin=thin, num_chains=2, seed=3, progress=False
    )
    np.testing.assert_array_equal(kept.samples["x"], full.samples["x"][:, slots])
    np.testing.assert_allclose(kept.info.step_size[0], np.asarray(schedule(jnp.asarray(counts[slots]))), rtol=1e-5)
    assert np.all(np.asarray(schedule.is_sampling(jnp.asarray(counts[slots]))))
    # Gradient evaluations of the dropped draws are still counted.
    np.testing.assert_array_equal(kept.num_grad_evals, full.num_grad_evals)
    np.testing.assert_array_equal(kept.dropped_grad_evals, (slots[-1] + 1 - 25) * thin)
    # A plain function is a policy too.
    every_third = sgmcmc.sample(
        sampler, num_samples=5, num_chains=1, seed=0, progress=False, keep=lambda c: (c % 3) == 2
    )
    plain = sgmcmc.sample(sampler, num_samples=15, num_chains=1, seed=0, progress=False)
    np.testing.assert_array_equal(every_third.samples["x"], plain.samples["x"][:, 2::3])


def test_bad_collection_policy():
    sampler = sgmcmc.sgld(quadratic_target(), 0.1)
    with pytest.raises(TypeError, match="keep"):
        sgmcmc.sample(sampler, num_samples=5, seed=0, keep=3)
    with pytest.raises(ValueError, match="keep"):
        sgmcmc.sample(sampler, num_samples=5, seed=0, keep=lambda c: c < 0)
    with pytest.raises(ValueError, match="one bool per count"):
        sgmcmc.sample(sampler, num_samples=5, seed=0, keep=lambda c: True)


def test_optax_schedules_as_step_size_and_temperature():
    """Temperature schedules: T = 0 steps are noise-free, others are not."""
    # T = 0 for 10 steps, then 1.
    temperature = optax.join_schedules([optax.constant_schedule(0.0), optax.constant_schedule(1.0)], [10])
    step = optax.exponential_decay(0.1, 10, 0.5)
    sampler = sgmcmc.sgld(quadratic_target(), step, temperature=temperature)
    noisy = sgmcmc.sample(
        sampler, num_samples=20, num_chains=1, seed=0, progress=False, initial_position={"x": jnp.ones(3)}
    )
    x = np.asarray(noisy.samples["x"][0], np.float64)
    # While T = 0 each step shrinks x by (1 - eps/2) exactly.
    eps = np.asarray(noisy.info.step_size[0], np.float64)
    np.testing.assert_allclose(x[:10], np.cumprod(1 - eps[:10] / 2)[:, None] * np.ones(3), rtol=1e-5)
    assert not np.allclose(x[10:], np.cumprod(1 - eps / 2)[10:, None] * np.ones(3), rtol=1e-2)
    with pytest.raises(ValueError, match="temperature"):
        sgmcmc.sghmc(quadratic_target(), 0.1, temperature=lambda c: -1.0 + 0.0 * c)
