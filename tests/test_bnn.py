"""Network targets (sgmcmc.bnn): plain functions and stax networks, three likelihoods, priors, predictive."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.example_libraries import stax
from scipy import stats

import sgmcmc
from sgmcmc import bnn


def mlp(params, x):
    h = jnp.tanh(x @ params["hidden"]["w"] + params["hidden"]["b"])
    return h @ params["out"]["w"] + params["out"]["b"]


def mlp_params(key, d_in=4, hidden=5, d_out=3):
    k1, k2 = jax.random.split(key)
    return {
        "hidden": {"w": jax.random.normal(k1, (d_in, hidden)) * 0.5, "b": jnp.zeros(hidden)},
        "out": {"w": jax.random.normal(k2, (hidden, d_out)) * 0.5, "b": jnp.zeros(d_out)},
    }


def classification_data(n=60, d=4, k=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = (np.argmax(x[:, :k], axis=1)).astype(np.int32)
    return x, y


def test_categorical_log_density_matches_a_direct_computation():
    x, y = classification_data()
    params = mlp_params(jax.random.key(0))
    scales = {"hidden": 0.5, "out": 2.0}
    target = bnn.network_target(mlp, params, x, y, likelihood="categorical", prior_scale=scales)
    logits = np.asarray(mlp(params, x), np.float64)
    loglik = logits[np.arange(len(y)), y] - np.log(np.exp(logits).sum(1))
    prior = sum(
        stats.norm.logpdf(np.asarray(leaf), scale=scales[layer]).sum()
        for layer in params
        for leaf in jax.tree.leaves(params[layer])
    )
    np.testing.assert_allclose(target.loglik_fn(params, target.data), loglik, rtol=1e-5)
    assert float(target.logdensity(params)) == pytest.approx(prior + loglik.sum(), rel=1e-5)
    # A pytree of per-leaf scales gives the same prior as the per-layer mapping.
    per_leaf = jax.tree.map(lambda a: 0.5, params)
    per_leaf["out"] = {"w": 2.0, "b": 2.0}
    same = bnn.gaussian_prior(params, per_leaf)(params)
    assert float(same) == pytest.approx(prior, rel=1e-5)


def test_stax_network_samples_and_exports_pointwise_log_likelihood():
    x, y = classification_data()
    init_fn, apply_fn = stax.serial(stax.Dense(6), stax.Tanh, stax.Dense(3))
    _, params = init_fn(jax.random.key(1), (-1, 4))  # a list of tuples, with empty tuples for Tanh
    target = bnn.network_target(apply_fn, params, x, y, likelihood="categorical", prior_scale=1.0, name="stax")
    sampler = sgmcmc.sgld(target, 1e-3, batch_size=20)
    result = sgmcmc.sample(sampler, num_samples=30, num_warmup=20, num_chains=2, seed=0, progress=False)
    idata = result.to_arviz()
    assert idata.log_likelihood["loglik"].shape == (2, 30, len(y))
    probs = bnn.predictive(apply_fn, result.samples, x, likelihood="categorical")
    assert probs.shape == (len(y), 3)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    # The predictive is the mean over draws of the softmax, not the softmax of a mean.
    draws = jax.tree.map(lambda a: np.asarray(a).reshape(-1, *np.shape(a)[2:]), result.samples)
    manual = np.mean([jax.nn.softmax(apply_fn(jax.tree.map(lambda a, i=i: a[i], draws), x)) for i in range(60)], 0)
    np.testing.assert_allclose(probs, manual, rtol=1e-5, atol=1e-6)


def test_equinox_network_through_partition():
    eqx = pytest.importorskip("equinox")
    x, y = classification_data()
    model = eqx.nn.MLP(4, 3, width_size=5, depth=1, activation=jnp.tanh, key=jax.random.key(2))
    params, static = eqx.partition(model, eqx.is_inexact_array)

    def apply_fn(p, inputs):
        return jax.vmap(eqx.combine(p, static))(inputs)

    target = bnn.network_target(apply_fn, params, x, y, likelihood="categorical")
    assert np.isfinite(float(target.logdensity(params)))
    assert target.loglik_fn(params, target.data).shape == (len(y),)


def test_bernoulli_is_logistic_regression():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(80, 2)).astype(np.float32)
    y = (rng.uniform(size=80) < 1 / (1 + np.exp(-(x @ [1.5, -1.0])))).astype(np.int32)

    def linear(w, inputs):
        return inputs @ w["w"] + w["b"]

    params = {"w": jnp.asarray([0.3, 0.2]), "b": jnp.asarray(0.1)}
    target = bnn.network_target(linear, params, x, y, likelihood="bernoulli", prior_scale=3.0)
    eta = x @ np.asarray(params["w"]) + 0.1
    want = stats.bernoulli.logpmf(y, 1 / (1 + np.exp(-eta)))
    np.testing.assert_allclose(target.loglik_fn(params, target.data), want, rtol=1e-5)
    probs = bnn.predictive(linear, jax.tree.map(lambda a: a[None, None], params), x, likelihood="bernoulli")
    np.testing.assert_allclose(probs[:, 1], 1 / (1 + np.exp(-eta)), rtol=1e-5)


def test_gaussian_with_learned_noise_recovers_the_noise_scale():
    rng = np.random.default_rng(4)
    n, sigma = 200, 0.5
    x = rng.normal(size=(n, 1)).astype(np.float32)
    y = (2.0 * x[:, 0] - 1.0 + sigma * rng.normal(size=n)).astype(np.float32)

    def linear(w, inputs):
        return inputs[:, 0] * w["a"] + w["b"]

    params = {"a": jnp.asarray(0.0), "b": jnp.asarray(0.0)}
    target = bnn.network_target(linear, params, x, y, likelihood="gaussian", learn_noise=True, prior_scale=10.0)
    position = target.initial_position
    assert set(position) == {"params", "log_noise"}
    want = stats.norm.logpdf(y, 0.0, 1.0)
    np.testing.assert_allclose(target.loglik_fn(position, target.data), want, rtol=1e-5)
    result = sgmcmc.sample(sgmcmc.nuts(target), num_samples=300, num_warmup=300, num_chains=2, seed=0, progress=False)
    noise = np.exp(np.asarray(result.samples["log_noise"]))
    # The posterior of sigma for n = 200 has sd ~ sigma / sqrt(2 n) = 0.025; allow 4 of them.
    assert abs(noise.mean() - sigma) < 4 * sigma / math.sqrt(2 * n)
    means = bnn.predictive(linear, result.samples["params"], x, likelihood="gaussian")
    assert means.shape == (600, n)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(likelihood="poisson"), "likelihood"),
        (dict(likelihood="categorical", learn_noise=True), "learn_noise"),
        (dict(likelihood="categorical", prior_scale=0.0), "prior_scale"),
        (dict(likelihood="categorical", prior_scale={"hidden": 1.0}), "out"),
        (dict(likelihood="bernoulli"), "logits"),
        (dict(likelihood="gaussian"), "outputs"),
        (dict(likelihood="categorical", noise_scale=-1.0), "noise_scale"),
    ],
)
def test_bad_settings(kwargs, match):
    x, y = classification_data()
    with pytest.raises((ValueError, TypeError), match=match):
        bnn.network_target(mlp, mlp_params(jax.random.key(0)), x, y, **kwargs)


def test_bad_data():
    x, y = classification_data()
    params = mlp_params(jax.random.key(0))
    with pytest.raises(ValueError, match="labels"):
        bnn.network_target(mlp, params, x, y + 5, likelihood="categorical")
    with pytest.raises(ValueError, match="examples"):
        bnn.network_target(mlp, params, x[:10], y, likelihood="categorical")
    with pytest.raises(ValueError, match="non-finite"):
        bnn.network_target(mlp, params, np.where(x > 2, np.nan, x), y, likelihood="categorical")
    with pytest.raises(ValueError, match="float"):
        bnn.network_target(mlp, {**params, "step": jnp.asarray(1)}, x, y, likelihood="categorical")
    with pytest.raises(ValueError, match="apply_fn"):
        bnn.network_target(lambda p, xx: xx @ jnp.ones((7, 3)), params, x, y, likelihood="categorical")
