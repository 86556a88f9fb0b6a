"""Every registered sampler honours the sampler contract of sgmcmc.samplers.base."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sgmcmc
from sgmcmc import flows
from sgmcmc.learned import a_nice_mc_kernel  # (importing sgmcmc.learned registers l2hmc and a_nice_mc)
from sgmcmc.samplers.base import REGISTRY, SHARED_INFO_FIELDS

# Settings that make each registered sampler well-behaved on the fixture target.
# A new sampler must be added here: test_every_sampler_is_covered fails otherwise.
CONTRACT_KWARGS = {
    "sgld": {"step_size": 1e-3, "batch_size": 16},
    "mala": {"step_size": 0.05},
    "hmc": {"step_size": 0.05, "num_integration_steps": 5},
    "nuts": {"step_size": 0.05},
    "chees_hmc": {"step_size": 0.05, "trajectory_length": 0.3},
    "psgld": {"step_size": 1e-3, "batch_size": 16},
    "sghmc": {"step_size": 1e-4, "friction": 0.1, "batch_size": 16},
    "sgnht": {"step_size": 1e-4, "diffusion": 0.1, "batch_size": 16},
    "baoab": {"step_size": 1e-2, "friction": 1.0, "batch_size": 16},
    "sgld_cv": {"step_size": 1e-3, "batch_size": 16},
    "constant_sgd": {"learning_rate": 1e-2, "batch_size": 16},
    "swag": {"learning_rate": 1e-2, "batch_size": 16, "collect_every": 2},
    # The flow samplers get a small RealNVP (2 affine coupling layers, both halves transformed, log-det
    # not zero): the contract does not depend on the flow's size, and the default (4 x (32, 32)) costs
    # about 20 s of CPU to compile here.
    "flow_mh": {
        "flow": flows.realnvp(4, 2, (8,)),
        "step_size": 0.05,
        "num_refits": 2,
        "train_steps": 5,
        "batch_size": 16,
        "buffer_size": 64,
    },
    "neutra": {
        "flow": flows.realnvp(4, 2, (8,)),
        "step_size": 0.05,
        "train_steps": 5,
        "num_draws": 4,
        "kernel": "hmc",
        "num_integration_steps": 3,
    },
    "l2hmc": {"step_size": 0.05, "num_leapfrog_steps": 3, "hidden": (4,)},
    "a_nice_mc": {"kernel": a_nice_mc_kernel(4, num_layers=2, hidden=(4,), init_noise=0.02)},
}


def test_every_sampler_is_covered():
    assert set(REGISTRY) == set(CONTRACT_KWARGS), "add new samplers to CONTRACT_KWARGS"


@pytest.mark.parametrize("name", sorted(CONTRACT_KWARGS))
def test_contract(name, linear_regression_target):
    target = linear_regression_target
    sampler = REGISTRY[name](target, **CONTRACT_KWARGS[name])
    assert isinstance(sampler, sgmcmc.Sampler)
    assert sampler.name == name and sampler.target is target
    assert isinstance(sampler.is_exact, bool)

    state = sampler.init(target.initial_position)
    assert jax.tree.structure(state.position) == jax.tree.structure(target.initial_position)

    key = jax.random.key(3)
    step = jax.jit(sampler.step)
    new_state, info = step(key, state)
    # Same pytree structure and shapes in and out: the state can be scanned.
    assert jax.tree.structure(new_state) == jax.tree.structure(state)
    for a, b in zip(jax.tree.leaves(new_state), jax.tree.leaves(state)):
        assert a.shape == b.shape and a.dtype == b.dtype
    for field in SHARED_INFO_FIELDS:
        assert hasattr(info, field), f"{name} info lacks {field}"
        assert np.shape(getattr(info, field)) == ()
    assert bool(jnp.isfinite(info.logdensity))
    assert int(info.num_grad_evals) >= 1
    assert not bool(info.is_divergent)

    # Deterministic under a fixed key, jit or not; a different key moves differently.
    again, _ = sampler.step(key, state)
    for a, b in zip(jax.tree.leaves(new_state.position), jax.tree.leaves(again.position)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    other, _ = step(jax.random.key(4), state)
    assert any(
        not np.allclose(a, b) for a, b in zip(jax.tree.leaves(new_state.position), jax.tree.leaves(other.position))
    )

    # vmap over chains: each chain equals its own unbatched step.
    keys = jax.random.split(key, 3)
    states = jax.vmap(sampler.init)(jax.tree.map(lambda x: jnp.stack([x, x + 0.1, x - 0.1]), target.initial_position))
    batched, binfo = jax.jit(jax.vmap(sampler.step))(keys, states)
    assert binfo.is_divergent.shape == (3,)
    single, _ = step(keys[1], jax.tree.map(lambda x: x[1], states))
    for a, b in zip(jax.tree.leaves(batched.position), jax.tree.leaves(single.position)):
        np.testing.assert_allclose(a[1], b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(CONTRACT_KWARGS))
def test_runs_through_the_driver(name, linear_regression_target):
    sampler = REGISTRY[name](linear_regression_target, **CONTRACT_KWARGS[name])
    result = sgmcmc.sample(sampler, num_samples=20, num_warmup=10, num_chains=2, seed=0, progress=False)
    assert result.samples["w"].shape == (2, 20, 3)
    assert result.samples["bias"]["b"].shape == (2, 20)
    assert result.info.is_divergent.shape == (2, 20)
    assert np.all(np.isfinite(result.samples["w"]))
