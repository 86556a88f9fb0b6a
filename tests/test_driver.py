"""The driver: determinism, chunking, compile-once, thinning, initial positions."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sgmcmc
from sgmcmc.run import TRACE_COUNTS


def gaussian_target():
    return sgmcmc.Target.from_logdensity(
        lambda p: -0.5 * jnp.sum(p["a"] ** 2) - 0.5 * p["b"] ** 2, {"a": jnp.zeros(3), "b": jnp.zeros(())}
    )


def test_same_seed_same_draws_and_chunking_does_not_matter():
    sampler = sgmcmc.hmc(gaussian_target(), 0.3, 5)
    a = sgmcmc.sample(sampler, num_samples=50, num_warmup=20, seed=7, progress=False)
    b = sgmcmc.sample(sampler, num_samples=50, num_warmup=20, seed=7, progress=False, chunk_size=7)
    c = sgmcmc.sample(sampler, num_samples=50, num_warmup=20, seed=8, progress=False)
    np.testing.assert_array_equal(a.samples["a"], b.samples["a"])
    np.testing.assert_array_equal(a.info.acceptance_rate, b.info.acceptance_rate)
    assert not np.allclose(a.samples["a"], c.samples["a"])
    # chains differ from each other
    assert not np.allclose(a.samples["a"][0], a.samples["a"][1])


def test_second_call_does_not_recompile():
    sampler = sgmcmc.sgld(gaussian_target(), 0.1)
    first = sgmcmc.sample(sampler, num_samples=30, num_warmup=10, seed=0, progress=False)
    assert first.num_compilations >= 2
    before = dict(TRACE_COUNTS)
    second = sgmcmc.sample(sampler, num_samples=30, num_warmup=10, seed=1, progress=True)
    assert second.num_compilations == 0
    assert dict(TRACE_COUNTS) == before
    # another run length reuses the same programs too (fixed chunk length)
    third = sgmcmc.sample(sampler, num_samples=45, num_warmup=15, seed=1, progress=False)
    assert third.num_compilations == 0
    assert third.samples["a"].shape == (4, 45, 3)


def test_thinning_and_shapes():
    sampler = sgmcmc.hmc(gaussian_target(), 0.3, 5)
    thinned = sgmcmc.sample(sampler, num_samples=10, thin=3, num_chains=2, seed=3, progress=False)
    full = sgmcmc.sample(sampler, num_samples=30, thin=1, num_chains=2, seed=3, progress=False)
    assert thinned.samples["a"].shape == (2, 10, 3)
    np.testing.assert_allclose(thinned.samples["a"], full.samples["a"][:, 2::3], rtol=1e-6)
    # grad evals are summed over each thinned block
    np.testing.assert_array_equal(thinned.info.num_grad_evals, 15)
    np.testing.assert_array_equal(thinned.num_grad_evals, [150, 150])


def test_per_chain_initial_positions():
    target = gaussian_target()
    init = {"a": jnp.arange(6.0).reshape(2, 3), "b": jnp.array([5.0, -5.0])}
    sampler = sgmcmc.sgld(target, 1e-6, temperature=0.0)
    result = sgmcmc.sample(sampler, num_samples=1, num_chains=2, initial_position=init, seed=0, progress=False)
    np.testing.assert_allclose(result.samples["a"][:, 0], init["a"], rtol=1e-4)
    # one position for all chains is broadcast
    result = sgmcmc.sample(
        sampler, num_samples=1, num_chains=3, initial_position={"a": jnp.ones(3), "b": 2.0}, seed=0, progress=False
    )
    np.testing.assert_allclose(result.samples["b"][:, 0], 2.0, rtol=1e-4)


def test_key_seed_and_warmup_counts():
    sampler = sgmcmc.mala(gaussian_target(), 0.5)
    by_key = sgmcmc.sample(sampler, num_samples=5, num_warmup=8, seed=jax.random.key(2), progress=False)
    by_int = sgmcmc.sample(sampler, num_samples=5, num_warmup=8, seed=2, progress=False)
    np.testing.assert_array_equal(by_key.samples["a"], by_int.samples["a"])
    np.testing.assert_array_equal(by_key.warmup_grad_evals, 8)
    assert by_key.timing["sampling_s"] >= 0 and by_key.timing["compile_s"] >= 0


@pytest.mark.parametrize("seed", [0, 1, 7, 123456789, 2**31 - 1])
def test_chain_keys_are_jax_splits_of_the_seed(seed):
    """The driver splits Threefry keys on the host; they must equal ``jax.random.split``'s."""
    from sgmcmc.run import _as_key, _derive_keys

    key = _as_key(seed)
    np.testing.assert_array_equal(jax.random.key_data(key), jax.random.key_data(jax.random.key(seed)))
    key_init, chain_keys = _derive_keys(key, 5)
    ref_init, ref_run = jax.random.split(jax.random.key(seed))
    np.testing.assert_array_equal(jax.random.key_data(key_init), jax.random.key_data(ref_init))
    np.testing.assert_array_equal(jax.random.key_data(chain_keys), jax.random.key_data(jax.random.split(ref_run, 5)))


def test_non_threefry_keys_are_split_by_jax():
    from sgmcmc.run import _derive_keys

    key = jax.random.key(3, impl="rbg")
    key_init, chain_keys = _derive_keys(key, 3)
    ref_init, ref_run = jax.random.split(key)
    np.testing.assert_array_equal(jax.random.key_data(key_init), jax.random.key_data(ref_init))
    np.testing.assert_array_equal(jax.random.key_data(chain_keys), jax.random.key_data(jax.random.split(ref_run, 3)))
    sampler = sgmcmc.mala(gaussian_target(), 0.5)
    result = sgmcmc.sample(sampler, num_samples=3, num_chains=2, seed=key, progress=False)
    assert np.all(np.isfinite(result.samples["a"]))


def test_target_mismatch_is_an_error():
    sampler = sgmcmc.hmc(gaussian_target(), 0.3, 5)
    with pytest.raises(ValueError, match="another target"):
        sgmcmc.sample(sampler, gaussian_target(), num_samples=5, seed=0)
