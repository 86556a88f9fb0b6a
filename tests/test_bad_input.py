"""Bad input gives a clear error before anything is compiled; NaNs mid-run are contained."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

import sgmcmc
from sgmcmc.run import TRACE_COUNTS


def quadratic(p):
    return -0.5 * jnp.sum(p["x"] ** 2)


@pytest.fixture
def target():
    return sgmcmc.Target.from_logdensity(quadratic, {"x": jnp.zeros(3)})


@pytest.fixture(autouse=True)
def no_compilation():
    """Every error in this module must come before the driver compiles anything."""
    before = dict(TRACE_COUNTS)
    yield
    assert dict(TRACE_COUNTS) == before


def test_nan_initial_position():
    with pytest.raises(ValueError, match="non-finite"):
        sgmcmc.Target.from_logdensity(quadratic, {"x": jnp.array([0.0, jnp.nan, 0.0])})


def test_nan_logdensity_at_start():
    with pytest.raises(ValueError, match="initial position"):
        sgmcmc.Target.from_logdensity(lambda p: jnp.log(p["x"]).sum(), {"x": -jnp.ones(2)})


def test_non_scalar_logdensity():
    with pytest.raises(ValueError, match="scalar"):
        sgmcmc.Target.from_logdensity(lambda p: -0.5 * p["x"] ** 2, {"x": jnp.zeros(3)})


def test_non_numeric_position():
    with pytest.raises(TypeError, match="real numbers"):
        sgmcmc.Target.from_logdensity(quadratic, {"x": np.array(["a", "b"])})


@pytest.mark.parametrize("factory", [sgmcmc.sgld, sgmcmc.mala, sgmcmc.hmc, sgmcmc.nuts, sgmcmc.chees_hmc])
@pytest.mark.parametrize("step_size", [0.0, -0.1, float("nan"), float("inf")])
def test_bad_step_size(target, factory, step_size):
    with pytest.raises(ValueError, match="step_size"):
        factory(target, step_size)


def test_bad_schedule(target):
    with pytest.raises(ValueError, match="schedule"):
        sgmcmc.sgld(target, lambda count: -1.0 + 0.0 * count)


@pytest.mark.parametrize(
    "kwargs", [{"num_samples": 0}, {"num_samples": -5}, {"num_chains": 0}, {"thin": 0}, {"num_warmup": -1}]
)
def test_bad_run_settings(target, kwargs):
    settings = {"num_samples": 10, "seed": 0, **kwargs}
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        sgmcmc.sample(sgmcmc.hmc(target, 0.1, 3), **settings)


def test_float_num_samples(target):
    with pytest.raises(TypeError, match="num_samples"):
        sgmcmc.sample(sgmcmc.hmc(target, 0.1, 3), num_samples=10.5, seed=0)


def test_wrong_shape_initial_position(target):
    with pytest.raises(ValueError, match="shape"):
        sgmcmc.sample(sgmcmc.hmc(target, 0.1, 3), num_samples=10, seed=0, initial_position={"x": jnp.zeros(4)})


def test_wrong_structure_initial_position(target):
    with pytest.raises(ValueError, match="structure"):
        sgmcmc.sample(sgmcmc.hmc(target, 0.1, 3), num_samples=10, seed=0, initial_position={"y": jnp.zeros(3)})


def test_nan_initial_position_for_one_chain(target):
    init = {"x": jnp.array([[0.0, 0.0, 0.0], [0.0, jnp.nan, 0.0]])}
    with pytest.raises(ValueError, match="chain 1"):
        sgmcmc.sample(sgmcmc.hmc(target, 0.1, 3), num_samples=10, num_chains=2, seed=0, initial_position=init)


def test_bad_adaptive_sampler_settings(target):
    with pytest.raises(ValueError, match="max_tree_depth"):
        sgmcmc.nuts(target, max_tree_depth=0)
    with pytest.raises(TypeError, match="max_tree_depth"):
        sgmcmc.nuts(target, max_tree_depth=2.5)
    for bad in (0.0, 1.0, 1.5, float("nan")):
        with pytest.raises(ValueError, match="target_accept"):
            sgmcmc.nuts(target, target_accept=bad)
        with pytest.raises(ValueError, match="target_accept"):
            sgmcmc.hmc(target, 0.1, 3, target_accept=bad)
    with pytest.raises(ValueError, match="metric"):
        sgmcmc.nuts(target, metric="full")
    with pytest.raises(ValueError, match="metric='dense' needs a matrix"):
        sgmcmc.nuts(target, metric="dense", inverse_mass_matrix=jnp.ones(3))
    with pytest.raises(ValueError, match="inverse_mass_matrix"):
        sgmcmc.nuts(target, inverse_mass_matrix=jnp.ones(4))
    with pytest.raises(ValueError, match="divergence_threshold"):
        sgmcmc.nuts(target, divergence_threshold=0.0)
    for bad in (-1, 10):
        with pytest.raises(ValueError, match="min_tree_depth"):
            sgmcmc.nuts(target, min_tree_depth=bad)
    with pytest.raises(ValueError, match="min_tree_depth"):
        sgmcmc.nuts(target, min_tree_depth="adaptive")
    with pytest.raises(TypeError, match="min_tree_depth"):
        sgmcmc.nuts(target, min_tree_depth=2.0)
    with pytest.raises(ValueError, match="float step size"):
        sgmcmc.chees_hmc(target, lambda t: 0.1 / (1.0 + t))
    with pytest.raises(ValueError, match="trajectory_length"):
        sgmcmc.chees_hmc(target, 0.1, -1.0)
    with pytest.raises(ValueError, match="learning_rate"):
        sgmcmc.chees_hmc(target, learning_rate=float("inf"))
    with pytest.raises(ValueError, match="max_num_steps"):
        sgmcmc.chees_hmc(target, max_num_steps=0)
    with pytest.raises(ValueError, match="criterion must be one of"):
        sgmcmc.chees_hmc(target, criterion="ess")
    with pytest.raises(ValueError, match="metric='diag' needs a vector"):
        sgmcmc.chees_hmc(target, metric="diag", inverse_mass_matrix=jnp.eye(3))
    with pytest.raises(ValueError, match="metric='dense' needs a matrix"):
        sgmcmc.chees_hmc(target, metric="dense", inverse_mass_matrix=jnp.ones(3))
    with pytest.raises(ValueError, match="metric must be one of"):
        sgmcmc.chees_hmc(target, metric="low-rank")
    with pytest.raises(ValueError, match="metric must be 'diag', 'dense' or 'auto'"):
        sgmcmc.adaptation.chees_adaptation(lambda k, s: s, lambda k, s: 0.1, metric="low-rank")
    for bad in (jnp.ones(4), -jnp.eye(3), jnp.full((3, 3), jnp.nan)):  # also under metric="auto"
        with pytest.raises(ValueError, match="inverse_mass_matrix"):
            sgmcmc.chees_hmc(target, inverse_mass_matrix=bad)


def test_bad_hmc_settings(target):
    with pytest.raises(ValueError, match="num_integration_steps"):
        sgmcmc.hmc(target, 0.1, 0)
    with pytest.raises(ValueError, match="inverse_mass_matrix"):
        sgmcmc.hmc(target, 0.1, 3, inverse_mass_matrix=jnp.ones(4))
    with pytest.raises(ValueError, match="positive"):
        sgmcmc.hmc(target, 0.1, 3, inverse_mass_matrix=-jnp.ones(3))
    with pytest.raises(ValueError, match="positive definite"):
        sgmcmc.hmc(target, 0.1, 3, inverse_mass_matrix=jnp.array([[1.0, 2.0, 0], [2.0, 1.0, 0], [0, 0, 1.0]]))


def test_bad_sgld_settings(target):
    with pytest.raises(ValueError, match="temperature"):
        sgmcmc.sgld(target, 0.1, temperature=-1.0)
    with pytest.raises(ValueError, match="per-example likelihood"):
        sgmcmc.sgld(target, 0.1, batch_size=4)


def test_bad_data_targets():
    def logprior(p):
        return -0.5 * jnp.sum(p**2)

    def loglik(p, batch):
        return -0.5 * (batch["y"] - batch["x"] @ p) ** 2

    with pytest.raises(ValueError, match="leading lengths"):
        sgmcmc.Target.from_data(logprior, loglik, {"x": jnp.ones((5, 2)), "y": jnp.ones(4)}, jnp.zeros(2))
    with pytest.raises(ValueError, match="one log-likelihood per example"):
        sgmcmc.Target.from_data(
            logprior, lambda p, b: jnp.sum(loglik(p, b)), {"x": jnp.ones((5, 2)), "y": jnp.ones(5)}, jnp.zeros(2)
        )
    target = sgmcmc.Target.from_data(logprior, loglik, {"x": jnp.ones((5, 2)), "y": jnp.ones(5)}, jnp.zeros(2))
    with pytest.raises(ValueError, match="batch_size"):
        sgmcmc.sgld(target, 0.1, batch_size=6)
    with pytest.raises(ValueError, match="batch_size"):
        sgmcmc.sgld(target, 0.1, batch_size=0)


def test_initial_position_where_density_is_not_finite():
    target = sgmcmc.Target.from_logdensity(lambda p: jnp.sum(jnp.log(p["x"])), {"x": jnp.ones(2)})
    init = {"x": jnp.array([[1.0, 1.0], [-1.0, 1.0]])}
    with pytest.raises(ValueError, match=r"chain\(s\) \[1\]"):
        sgmcmc.sample(sgmcmc.hmc(target, 0.1, 3), num_samples=10, num_chains=2, seed=0, initial_position=init)
