"""Neural transport NUTS (Hoffman et al. 2019) on Neal's funnel: unbiased, fewer divergences than NUTS."""

from __future__ import annotations

import warnings

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import mean_z, var_z

import sgmcmc
from sgmcmc import flows
from sgmcmc.samplers.neutra import neutra


def funnel_target(dim: int = 3):
    """v ~ N(0, 3^2), x_i | v ~ N(0, e^v): the log-scale variable v has mean 0 and sd 3."""

    def logdensity(p):
        v, x = p[0], p[1:]
        return -(v**2) / 18.0 - 0.5 * jnp.sum(x**2) * jnp.exp(-v) - 0.5 * x.size * v

    return sgmcmc.Target.from_logdensity(logdensity, jnp.zeros(dim), name="funnel")


def _run(sampler):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # divergences are counted below
        return sgmcmc.sample(sampler, num_samples=1000, num_warmup=300, num_chains=4, seed=0, progress=False)


def test_neutra_on_the_funnel_is_unbiased_with_fewer_divergences_than_nuts():
    target = funnel_target()
    flow = flows.realnvp(3, 4, (16, 16), scale_bound=6.0)
    result = _run(neutra(target, flow=flow, train_steps=800, num_draws=32))
    v = np.asarray(result.samples[..., 0])
    assert np.all(np.isfinite(np.asarray(result.samples)))
    assert abs(mean_z(v, 0.0)) < 4.0 and abs(var_z(v, 9.0)) < 4.0, (v.mean(), v.std())
    # The fit's gradient evaluations are reported in warmup, charged to chain 0.
    assert result.warmup_grad_evals[0] >= 800 * 32 > result.warmup_grad_evals[1]
    baseline = _run(sgmcmc.nuts(target))
    assert result.num_divergent < baseline.num_divergent, (result.num_divergent, baseline.num_divergent)
    assert "diverging" in result.to_arviz().sample_stats


def test_neutra_rejects_a_flow_of_the_wrong_dimension():
    with pytest.raises(ValueError, match="dimension 2"):
        neutra(funnel_target(), flow=flows.nice(2))
    with pytest.raises(ValueError, match="kernel"):
        neutra(funnel_target(), kernel="mala")
