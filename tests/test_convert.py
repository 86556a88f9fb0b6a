"""The deep-learning correspondence of sgmcmc.convert, checked step for step against optax.

A softmax regression on random data, written as a per-example cross-entropy with weight
decay. For each optimiser the sampler built from the converted settings must reproduce
the optimiser's iterates at T = 0 (same minibatch indices, same keys), and at T > 0 one
step must differ from the optimiser's by exactly the stated noise scale times the
sampler's standard-normal draw.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sgmcmc
from sgmcmc import convert, noise

NUM_DATA, BATCH, WEIGHT_DECAY = 200, 16, 1e-2


def per_example_loss(params, batch):
    logits = batch["x"] @ params["w"] + params["b"]
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"])


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(NUM_DATA, 5)).astype(np.float32)
    y = rng.integers(0, 3, size=NUM_DATA).astype(np.int32)
    params = {"w": jnp.asarray(0.1 * rng.normal(size=(5, 3)), jnp.float32), "b": jnp.zeros(3)}
    target = convert.target_from_loss(per_example_loss, {"x": x, "y": y}, params, weight_decay=WEIGHT_DECAY)
    return target, params


def optimiser_path(optimizer, target, params, keys):
    """The optax loop on ``mean loss`` with the indices sgmcmc's estimator draws from each key."""

    def loss(p, batch):
        return jnp.mean(per_example_loss(p, batch))

    def body(carry, key):
        params, state = carry
        idx = noise.uniform_indices(key, BATCH, NUM_DATA)
        batch = jax.tree.map(lambda a: a[idx], target.data)
        updates, state = optimizer.update(jax.grad(loss)(params, batch), state, params)
        params = optax.apply_updates(params, updates)
        return (params, state), params

    return jax.jit(lambda p: jax.lax.scan(body, (p, optimizer.init(p)), keys)[1])(params)


def sampler_path(sampler, params, keys):
    def body(state, key):
        state, _ = sampler.step(key, state)
        return state, state.position

    return jax.jit(lambda p: jax.lax.scan(body, sampler.init(p), keys)[1])(params)


def assert_same_path(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(x, y, rtol=2e-5, atol=2e-6)


def test_target_from_loss_is_minus_n_times_the_training_loss(problem):
    target, params = problem
    assert target.num_data == NUM_DATA
    assert convert.prior_precision_from_weight_decay(WEIGHT_DECAY, NUM_DATA) == pytest.approx(2.0)

    def training_loss(p):
        l2 = sum(jnp.sum(v**2) for v in jax.tree.leaves(p))
        return jnp.mean(per_example_loss(p, target.data)) + 0.5 * WEIGHT_DECAY * l2

    for a, b in zip(
        jax.tree.leaves(jax.grad(target.logdensity)(params)), jax.tree.leaves(jax.grad(training_loss)(params))
    ):
        np.testing.assert_allclose(a, -NUM_DATA * b, rtol=1e-5, atol=1e-5)


def test_sgld_is_sgd_at_zero_temperature_and_adds_the_stated_noise(problem):
    target, params = problem
    lr = 0.05
    keys = jax.random.split(jax.random.key(1), 30)
    optimizer = optax.chain(optax.add_decayed_weights(WEIGHT_DECAY), optax.sgd(lr))
    cold = convert.sgld_from_sgd(lr, NUM_DATA, weight_decay=WEIGHT_DECAY, temperature=0.0)
    assert cold.step_size == pytest.approx(2 * lr / NUM_DATA) and cold.noise_std == 0.0
    sampler = sgmcmc.sgld(target, cold.step_size, batch_size=BATCH, temperature=0.0)
    assert_same_path(sampler_path(sampler, params, keys), optimiser_path(optimizer, target, params, keys))

    warm = convert.sgld_from_sgd(lr, NUM_DATA, weight_decay=WEIGHT_DECAY, temperature=1.0)
    assert warm.noise_std == pytest.approx(np.sqrt(2 * lr / NUM_DATA))
    sampler = sgmcmc.sgld(target, warm.step_size, batch_size=BATCH, temperature=1.0)
    one = sampler_path(sampler, params, keys[:1])
    sgd = optimiser_path(optimizer, target, params, keys[:1])
    xi = noise.normal_like(keys[0], params)
    for a, b, z in zip(jax.tree.leaves(one), jax.tree.leaves(sgd), jax.tree.leaves(xi)):
        np.testing.assert_allclose((a[0] - b[0]) / warm.noise_std, z, rtol=1e-3, atol=1e-3)
    assert convert.sgd_from_sgld(warm.step_size, NUM_DATA) == pytest.approx(lr)


def test_sghmc_is_sgd_with_momentum_at_zero_temperature(problem):
    target, params = problem
    lr, mu = 0.05, 0.9
    keys = jax.random.split(jax.random.key(2), 40)
    optimizer = optax.chain(optax.add_decayed_weights(WEIGHT_DECAY), optax.sgd(lr, momentum=mu))
    cold = convert.sghmc_from_sgd(lr, mu, NUM_DATA, weight_decay=WEIGHT_DECAY, temperature=0.0)
    assert cold.friction == pytest.approx(0.1) and cold.step_size == pytest.approx(lr / NUM_DATA)
    sampler = sgmcmc.sghmc(target, cold.step_size, friction=cold.friction, batch_size=BATCH, temperature=0.0)
    assert_same_path(sampler_path(sampler, params, keys), optimiser_path(optimizer, target, params, keys))

    warm = convert.sghmc_from_sgd(lr, mu, NUM_DATA, weight_decay=WEIGHT_DECAY, temperature=2.0)
    assert warm.noise_std == pytest.approx(np.sqrt(2 * 0.1 * lr * 2.0 / NUM_DATA))
    sampler = sgmcmc.sghmc(target, warm.step_size, friction=warm.friction, batch_size=BATCH, temperature=2.0)
    one = sampler_path(sampler, params, keys[:1])
    sgd = optimiser_path(optimizer, target, params, keys[:1])
    xi = noise.normal_like(keys[0], params)
    for a, b, z in zip(jax.tree.leaves(one), jax.tree.leaves(sgd), jax.tree.leaves(xi)):
        np.testing.assert_allclose((a[0] - b[0]) / warm.noise_std, z, rtol=1e-3, atol=1e-3)
    lr_back, mu_back = convert.sgd_from_sghmc(warm.step_size, warm.friction, NUM_DATA)
    assert lr_back == pytest.approx(lr) and mu_back == pytest.approx(mu)


@pytest.mark.parametrize("bias_correction", [True, False])
def test_psgld_is_rmsprop_at_zero_temperature(problem, bias_correction):
    target, params = problem
    lr, decay, eps = 1e-2, 0.9, 1e-4
    keys = jax.random.split(jax.random.key(3), 40)
    rmsprop = optax.rmsprop(lr, decay=decay, eps=eps, eps_in_sqrt=False, bias_correction=bias_correction)
    optimizer = optax.chain(optax.add_decayed_weights(WEIGHT_DECAY), rmsprop)
    s = convert.psgld_from_rmsprop(lr, NUM_DATA, decay=decay, eps=eps, weight_decay=WEIGHT_DECAY, temperature=0.0)
    sampler = sgmcmc.psgld(
        target,
        s.step_size,
        decay=s.decay,
        eps=s.eps,
        batch_size=BATCH,
        temperature=0.0,
        bias_correction=bias_correction,
    )
    assert_same_path(sampler_path(sampler, params, keys), optimiser_path(optimizer, target, params, keys))


def test_bad_converter_input():
    with pytest.raises(ValueError, match="learning_rate"):
        convert.sgld_from_sgd(0.0, 100)
    with pytest.raises(ValueError, match="num_data"):
        convert.sgld_from_sgd(0.1, 0)
    with pytest.raises(ValueError, match="momentum"):
        convert.sghmc_from_sgd(0.1, 1.0, 100)
    with pytest.raises(ValueError, match="temperature"):
        convert.sgld_from_sgd(0.1, 100, temperature=-1.0)
    with pytest.raises(ValueError, match="weight_decay"):
        convert.sgld_from_sgd(0.1, 100, weight_decay=-1e-4)
    with pytest.raises(ValueError, match="decay"):
        convert.psgld_from_rmsprop(0.1, 100, decay=1.0)
    with pytest.raises(ValueError, match="leading lengths"):
        convert.target_from_loss(per_example_loss, {"x": np.ones((5, 5)), "y": np.ones(4, np.int32)}, {"w": 0.0})
