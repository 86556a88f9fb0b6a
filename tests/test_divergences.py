"""A NaN met mid-run is reported as a divergence and never enters the chain."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

import sgmcmc


def _nan_region(p):
    # A density whose value is NaN beyond x = 1.5 in the first coordinate.
    x = p["x"]
    return jnp.where(x[0] > 1.5, jnp.nan, -0.5 * jnp.sum(x**2))


@pytest.mark.parametrize(
    "make",
    [lambda t: sgmcmc.hmc(t, 0.5, 5), lambda t: sgmcmc.mala(t, 0.9), lambda t: sgmcmc.sgld(t, 0.5)],
    ids=["hmc", "mala", "sgld"],
)
def test_nan_mid_run_is_divergent_and_contained(make):
    target = sgmcmc.Target.from_logdensity(_nan_region, {"x": jnp.zeros(2)})
    with pytest.warns(RuntimeWarning, match="divergent"):
        result = sgmcmc.sample(make(target), num_samples=500, num_chains=2, seed=0, progress=False)
    draws = result.samples["x"]
    assert np.all(np.isfinite(draws))
    if result.sampler_name != "sgld":
        # Metropolis-corrected samplers never accept a point where the density is NaN.
        # SGLD does not evaluate the density at its new point: it can step into the
        # region, and then every later step there is flagged and the chain stays put.
        assert np.all(draws[..., 0] <= 1.5)
    assert result.num_divergent > 0
    idata = result.to_arviz(log_likelihood=False)
    assert int(idata.sample_stats["diverging"].sum()) == result.num_divergent
    # after a divergence the chain stays where it was
    div = np.asarray(result.info.is_divergent)
    c, t = np.argwhere(div[:, 1:])[0]
    np.testing.assert_array_equal(draws[c, t + 1], draws[c, t])


@pytest.mark.parametrize("name", ["nuts", "chees_hmc"])
def test_nan_region_with_adaptive_samplers(name):
    """NUTS and ChEES-HMC, warmup included, keep NaN out and report the divergences.

    A NUTS transition that diverges still returns a point of the valid part of its
    trajectory, so (unlike HMC) the chain need not stay put after a divergence.
    """
    target = sgmcmc.Target.from_logdensity(_nan_region, {"x": jnp.zeros(2)})
    sampler = getattr(sgmcmc, name)(target)
    with pytest.warns(RuntimeWarning, match="divergent"):
        result = sgmcmc.sample(sampler, num_samples=500, num_warmup=200, num_chains=4, seed=1, progress=False)
    draws = result.samples["x"]
    assert np.all(np.isfinite(draws))
    assert np.all(draws[..., 0] <= 1.5)
    assert result.num_divergent > 0
    idata = result.to_arviz(log_likelihood=False)
    assert int(idata.sample_stats["diverging"].sum()) == result.num_divergent
    assert np.all(np.isfinite(np.asarray(result.last_state.step_size)))
