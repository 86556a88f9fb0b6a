"""Gradient estimators: the minibatch estimator is unbiased with the N/n scaling."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from sgmcmc.gradients import full_batch, minibatch, take_batch


def test_full_batch_matches_autodiff(linear_regression_target):
    target = linear_regression_target
    position = {"w": jnp.array([0.3, -0.2, 0.1]), "bias": {"b": jnp.array(0.4)}}
    est = full_batch(target).estimate(None, position)
    value, grad = jax.value_and_grad(target.logdensity)(position)
    np.testing.assert_allclose(est.value, value, rtol=1e-6)
    np.testing.assert_allclose(est.grad["w"], grad["w"], rtol=1e-5)
    assert int(est.num_grad_evals) == 1


def test_minibatch_is_unbiased(linear_regression_target):
    target = linear_regression_target
    position = {"w": jnp.array([0.3, -0.2, 0.1]), "bias": {"b": jnp.array(0.4)}}
    estimator = minibatch(target, 8)
    keys = jax.random.split(jax.random.key(0), 20000)
    est = jax.jit(jax.vmap(lambda k: estimator.estimate(k, position)))(keys)
    exact_value, exact_grad = jax.value_and_grad(target.logdensity)(position)
    for got, want in [
        (est.value, exact_value),
        (est.grad["w"], exact_grad["w"]),
        (est.grad["bias"]["b"], exact_grad["bias"]["b"]),
    ]:
        got = np.asarray(got, np.float64)
        se = got.std(axis=0) / np.sqrt(got.shape[0])
        z = (got.mean(axis=0) - np.asarray(want)) / se
        assert np.all(np.abs(z) < 4), z
    assert estimator.is_stochastic and estimator.batch_size == 8 and estimator.num_data == 64


def test_explicit_batch_is_scaled(linear_regression_target):
    target = linear_regression_target
    position = {"w": jnp.array([0.3, -0.2, 0.1]), "bias": {"b": jnp.array(0.4)}}
    batch = take_batch(target.data, jnp.arange(16))
    est = minibatch(target, 8).estimate(None, position, batch)
    expected = target.logprior_fn(position) + 64 / 16 * jnp.sum(target.loglik_fn(position, batch))
    np.testing.assert_allclose(est.value, expected, rtol=1e-6)
    # the whole data set as a batch gives the exact log density
    est_all = full_batch(target).estimate(None, position, target.data)
    np.testing.assert_allclose(est_all.value, target.logdensity(position), rtol=1e-6)


def test_minibatch_indices_in_range(linear_regression_target):
    from sgmcmc import noise

    idx = jax.vmap(lambda k: noise.uniform_indices(k, 8, 64))(jax.random.split(jax.random.key(1), 5000))
    idx = np.asarray(idx)
    assert idx.min() == 0 and idx.max() == 63
    counts = np.bincount(idx.ravel(), minlength=64)
    expected = idx.size / 64
    chi2 = np.sum((counts - expected) ** 2 / expected)
    assert chi2 < 63 + 6 * np.sqrt(2 * 63)
