"""HMC, MALA, NUTS and ChEES-HMC sample known Gaussians exactly: moments within 4 Monte Carlo standard errors.

The MCSE of a mean is sd / sqrt(ESS) with ArviZ's bulk ESS; that of a variance is
the MCSE of the mean of (x - mean)^2, with that series' own ESS. With a fixed seed
each check is deterministic; across seeds a |z| >= 4 happens with probability
about 6e-5 per comparison.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_moments

import sgmcmc

COV_2D = np.array([[1.0, 0.9], [0.9, 1.0]])
SD_20D = np.linspace(0.5, 1.5, 20)


def correlated_2d():
    precision = jnp.asarray(np.linalg.inv(COV_2D), jnp.float32)
    return sgmcmc.Target.from_logdensity(lambda x: -0.5 * x @ precision @ x, jnp.zeros(2), name="corr2d")


def diagonal_20d():
    scale = jnp.asarray(SD_20D, jnp.float32)
    return sgmcmc.Target.from_logdensity(lambda p: -0.5 * jnp.sum((p["x"] / scale) ** 2), {"x": jnp.zeros(20)})


CASES = {
    "hmc-corr2d": (lambda t: sgmcmc.hmc(t, 0.15, 12), correlated_2d),
    "hmc-corr2d-dense-metric": (
        lambda t: sgmcmc.hmc(t, 0.5, 3, inverse_mass_matrix=COV_2D),
        correlated_2d,
    ),
    "mala-corr2d": (lambda t: sgmcmc.mala(t, 0.35), correlated_2d),
    "hmc-diag20d": (lambda t: sgmcmc.hmc(t, 0.3, 10), diagonal_20d),
    "hmc-diag20d-diag-metric": (
        lambda t: sgmcmc.hmc(t, 0.5, 3, inverse_mass_matrix=SD_20D**2),
        diagonal_20d,
    ),
    "mala-diag20d": (lambda t: sgmcmc.mala(t, 0.35), diagonal_20d),
    # NUTS with Stan's warmup (step size and mass matrix adapted from a poor start)
    "nuts-corr2d": (lambda t: sgmcmc.nuts(t), correlated_2d),
    "nuts-corr2d-dense-metric": (lambda t: sgmcmc.nuts(t, metric="dense"), correlated_2d),
    "nuts-diag20d": (lambda t: sgmcmc.nuts(t, step_size=0.01), diagonal_20d),
    # NUTS with a fixed minimum tree depth: no U-turn check below 2^m points
    "nuts-corr2d-min-depth-3": (lambda t: sgmcmc.nuts(t, min_tree_depth=3), correlated_2d),
    "nuts-diag20d-min-depth-4": (lambda t: sgmcmc.nuts(t, min_tree_depth=4, max_tree_depth=6), diagonal_20d),
    # ChEES-HMC: step size, trajectory length and metric adapted across chains
    # (its default metric="auto" goes dense on this target: tested in test_adaptation.py)
    "chees-corr2d": (lambda t: sgmcmc.chees_hmc(t), correlated_2d),
    "chees-corr2d-diag-metric": (lambda t: sgmcmc.chees_hmc(t, metric="diag"), correlated_2d),
    "chees-diag20d": (lambda t: sgmcmc.chees_hmc(t), diagonal_20d),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_gaussian_moments(case):
    make_sampler, make_target = CASES[case]
    target = make_target()
    result = sgmcmc.sample(
        make_sampler(target), num_samples=4000, num_warmup=500, num_chains=4, seed=11, progress=False
    )
    draws = result.samples["x"] if isinstance(result.samples, dict) else result.samples
    draws = np.asarray(draws)
    if draws.shape[-1] == 2:
        means, variances = np.zeros(2), np.diag(COV_2D)
    else:
        means, variances = np.zeros(20), SD_20D**2
    assert result.num_divergent == 0
    accept = float(np.mean(result.info.acceptance_rate))
    assert 0.4 < accept < 1.0, f"acceptance {accept:.2f}: the step size is off for this test"
    assert_moments(draws, means, variances, z=4.0, label=case)
    if draws.shape[-1] == 2:  # the correlation too
        flat = draws.reshape(-1, 2)
        assert abs(np.corrcoef(flat.T)[0, 1] - 0.9) < 0.03


def test_constant_loop_carries_are_batched_under_vmap():
    """``as_carry_of`` keeps values and makes constants batched where the anchor is (one batching pass)."""
    from sgmcmc._tree import as_carry_of

    anchors = jnp.asarray([1.0, jnp.nan, -jnp.inf])  # the value of the anchor never matters
    zero, flag = jax.vmap(lambda a: as_carry_of(a, (jnp.int32(0), jnp.bool_(True))))(anchors)
    np.testing.assert_array_equal(zero, [0, 0, 0])
    np.testing.assert_array_equal(flag, [True, True, True])
    assert zero.dtype == jnp.int32 and flag.dtype == jnp.bool_
    # outside vmap: unchanged scalars, and XLA folds the select away
    assert as_carry_of(jnp.float32(2.0), jnp.zeros((3,))).shape == (3,)
    hlo = jax.jit(lambda a: as_carry_of(a, jnp.int32(7))).lower(jnp.float32(1.0)).compile().as_text()
    assert " select(" not in hlo and "constant(7)" in hlo


def test_trip_counts_shared_by_chains_run_one_unmasked_loop():
    """Under the driver's named vmap, ``same_across_chains`` makes a shared trip count unbatched (no masking)."""
    from jax import lax

    from sgmcmc.samplers.base import CHAIN_AXIS, same_across_chains

    def loop(n, x):
        return lax.fori_loop(0, same_across_chains(n), lambda i, c: c * 1.5 + 1.0, x)

    n, x = jnp.asarray([3, 3, 3]), jnp.arange(3.0)
    named = jax.vmap(loop, axis_name=CHAIN_AXIS)
    # the loop condition: one scalar for all chains, or one per chain (XLA then masks every carry)
    assert "bool[] = lt" in str(jax.make_jaxpr(named)(n, x))
    assert "bool[3] = lt" in str(jax.make_jaxpr(jax.vmap(loop))(n, x))  # a user's vmap: masked, still right
    np.testing.assert_allclose(named(n, x), jax.vmap(loop)(n, x))
    assert float(loop(jnp.int32(2), jnp.float32(0.0))) == 2.5  # outside any vmap: x itself


def test_any_across_chains_is_one_condition_under_the_driver():
    """``any_across_chains``: one unbatched bool (some chain) under the driver's named vmap, the flag elsewhere."""
    from jax import lax

    from sgmcmc.samplers.base import CHAIN_AXIS, any_across_chains

    flags = jnp.asarray([False, True, False])
    named = jax.vmap(any_across_chains, axis_name=CHAIN_AXIS)
    np.testing.assert_array_equal(named(flags), [True, True, True])
    np.testing.assert_array_equal(named(jnp.zeros(3, bool)), [False, False, False])
    np.testing.assert_array_equal(jax.vmap(any_across_chains)(flags), flags)  # a user's vmap: per chain
    assert bool(any_across_chains(jnp.bool_(True))) and not bool(any_across_chains(jnp.bool_(False)))

    def count(limit):  # a loop every chain runs until it is done, on the shared condition
        return lax.while_loop(lambda i: any_across_chains(i < limit), lambda i: i + (i < limit), 0 * limit)

    limits = jnp.asarray([1, 4, 2])
    assert "bool[] = gt" in str(jax.make_jaxpr(jax.vmap(count, axis_name=CHAIN_AXIS))(limits))
    assert "bool[3] = gt" in str(jax.make_jaxpr(jax.vmap(count))(limits))
    np.testing.assert_array_equal(jax.vmap(count, axis_name=CHAIN_AXIS)(limits), limits)
    np.testing.assert_array_equal(jax.vmap(count)(limits), limits)


def test_fixed_min_tree_depth_sets_the_shortest_trajectory():
    """``min_tree_depth=m``: every transition takes at least ``2^(m+1) - 1`` leapfrog steps (none diverge here)."""
    target = correlated_2d()
    result = sgmcmc.sample(
        sgmcmc.nuts(target, 0.3, min_tree_depth=2), num_samples=300, num_chains=2, seed=3, progress=False
    )
    steps = np.asarray(result.info.num_grad_evals)
    assert not np.any(result.info.is_divergent)
    assert steps.min() >= 7
    assert np.all(np.asarray(result.last_state.min_tree_depth) == 2)
    standard = sgmcmc.sample(
        sgmcmc.nuts(target, 0.3, min_tree_depth=0), num_samples=300, num_chains=2, seed=3, progress=False
    )
    assert np.asarray(standard.info.num_grad_evals).min() < 7  # the floor binds on this target
