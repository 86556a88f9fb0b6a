"""Simulation-based calibration (Talts et al. 2018) of the exact samplers, and a broken one that must fail.

Each SBC run draws R parameter sets from the prior, simulates data, samples the
posterior (all replications in one compiled program) and tests the uniformity of
the ranks of the prior draws among the thinned posterior draws: chi-square over
10 bins per coordinate at level alpha / P (Bonferroni), so an exact sampler with
independent draws fails with probability at most alpha = 0.01 (the false-alarm
rate of each test below). Seeds are fixed, so the outcome in CI is deterministic.

Fixed step sizes (no warmup adaptation: it is compile time we do not need here)
on the logistic regression (whose posterior scale barely changes across
replications), thinned until the lag-1 autocorrelation of kept draws is small;
``benchmarks/sbc.py`` runs every sampler with its warmup on all three models.
The broken MALA drops the proposal-density correction and must fail with the
same settings as the correct MALA, which must pass: the test of the test.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import sgmcmc
from sgmcmc import flows
from sgmcmc.diagnostics.sbc import SBCModel, rank_uniformity, sbc
from sgmcmc.diagnostics.sbc_models import broken_mala, logistic_regression_model, normal_model

ALPHA = 0.01


def flow_mh_frozen(target):
    """Flow-MH with a frozen RealNVP with random (non-identity) couplings: the log-determinants matter."""
    dim = ravel_pytree(target.initial_position)[0].size
    flow = flows.realnvp(dim, 2, (16,))
    params = flow.init(jax.random.key(1))
    leaves, treedef = jax.tree.flatten(params["layers"])
    keys = jax.random.split(jax.random.key(2), len(leaves))
    layers = jax.tree.unflatten(treedef, [x + 0.3 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])
    return sgmcmc.flow_mh(target, 0.4, flow=flow, flow_params={**params, "layers": layers}, adapt_flow=False)


#: name -> (builder, sbc settings); every run on the 20-point logistic regression (3 coordinates).
CASES = {
    "hmc": (lambda t: sgmcmc.hmc(t, 0.25, 4), dict(thin=4, num_replicates=1000)),
    "mala": (lambda t: sgmcmc.mala(t, 0.4), dict(thin=8, num_replicates=1000)),
    "nuts": (lambda t: sgmcmc.nuts(t, 0.4, max_tree_depth=4), dict(thin=1, num_replicates=500)),
    "chees_hmc": (
        lambda t: sgmcmc.chees_hmc(t, 0.4, 1.5),
        dict(thin=2, num_chains=4, num_draws=100, num_replicates=500),
    ),
    "flow_mh_frozen": (flow_mh_frozen, dict(thin=5, num_replicates=500)),
}


def run(build, **settings):
    kw = {**dict(num_draws=99, num_warmup=100, adapt=False, alpha=ALPHA, seed=0), **settings}
    return sbc(logistic_regression_model(), build, **kw)


@pytest.mark.parametrize("name", list(CASES))
def test_exact_sampler_passes_sbc(name):
    build, settings = CASES[name]
    result = run(build, **settings)
    assert result.passed, f"{name}: {result.summary()}"
    # The draws were near independent (else SBC would test the thinning, not the sampler).
    assert np.max(np.abs(result.autocorrelation)) < 0.4, result.summary()
    assert result.ranks.shape == (settings["num_replicates"], 3)
    assert result.names == ["b", "w[0]", "w[1]"]


def test_broken_mala_fails_sbc():
    """The test of the test: MALA without the proposal-density correction, tuned and thinned like MALA above."""
    result = run(lambda t: broken_mala(t, 0.4), thin=8, num_replicates=1000)
    assert not result.passed, result.summary()
    assert result.p_values.min() < 1e-6, result.summary()
    assert 0.5 < result.acceptance_rate < 0.95  # it moves like MALA: only its ratio is wrong


def test_rank_uniformity_on_known_rank_distributions():
    rng = np.random.default_rng(0)
    num_draws, reps = 99, 2000
    uniform = rng.integers(0, num_draws + 1, size=(reps, 2))
    p, hist = rank_uniformity(uniform, num_draws, 10)
    assert hist.shape == (2, 10) and hist.sum() == 2 * reps
    assert np.all(p > ALPHA)
    # Posterior draws too narrow by 30%: the truth falls in the tails too often (a U-shaped histogram).
    truth = rng.normal(size=reps)
    draws = 0.7 * rng.normal(size=(reps, num_draws))
    ranks = np.sum(draws < truth[:, None], axis=1)
    p_narrow, hist_narrow = rank_uniformity(ranks, num_draws, 10)
    assert p_narrow[0] < 1e-6 and hist_narrow[0, 0] > 2 * hist_narrow[0, 5]
    # Uneven bins (101 rank values in 10 bins) keep the expected counts exact.
    p_uneven, _ = rank_uniformity(rng.integers(0, 101, size=(reps, 1)), 100, 10)
    assert p_uneven[0] > ALPHA
    with pytest.raises(ValueError, match="ranks"):
        rank_uniformity(np.array([[0], [100]]), 99, 10)


def test_sbc_bad_input_names_the_argument():
    model = normal_model()
    build = lambda t: sgmcmc.mala(t, 0.1)  # noqa: E731
    with pytest.raises(ValueError, match="num_replicates"):
        sbc(model, build, num_replicates=20, num_bins=10)
    with pytest.raises(ValueError, match="multiple of num_chains"):
        sbc(model, build, num_draws=99, num_chains=4)
    with pytest.raises(ValueError, match="num_bins"):
        sbc(model, build, num_draws=5, num_bins=10)
    with pytest.raises(ValueError, match="alpha"):
        sbc(model, build, alpha=1.5)
    with pytest.raises(TypeError, match="thin"):
        sbc(model, build, thin=2.5)
    with pytest.raises(TypeError, match="build_sampler"):
        sbc(model, None)
    with pytest.raises(TypeError, match="model"):
        sbc((model.prior_sample, model.simulate), build)
    # A target that closes over its data cannot be rerun on simulated data.
    closed = SBCModel(
        model.prior_sample,
        model.simulate,
        lambda data: sgmcmc.Target.from_logdensity(
            lambda p: -(p["mu"] ** 2) - p["log_sigma"] ** 2, {"mu": 0.0, "log_sigma": 0.0}
        ),
    )
    with pytest.raises(ValueError, match="takes its data as an argument"):
        sbc(closed, build)
    # A prior draw shaped unlike the target's position.
    wrong = SBCModel(lambda key: {"mu": jnp.zeros(()), "log_sigma": jnp.zeros(1)}, model.simulate, model.make_target)
    with pytest.raises(ValueError, match="prior_sample"):
        sbc(wrong, build)
