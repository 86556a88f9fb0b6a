"""A NumPyro model through Target.from_numpyro, sampled with HMC, matches posteriordb.

Eight schools, non-centred (posteriordb `eight_schools-eight_schools_noncentered`).
Every reference mean and sd is compared with z = (run - ref) / sqrt(se_run^2 + se_ref^2)
using both Monte Carlo standard errors; |z| < 4 is required.
"""

from __future__ import annotations

import json
import pathlib

import arviz as az
import numpy as np
import pytest
from conftest import reference_z
from posteriordb_models import eight_schools_noncentered as eight_schools

import sgmcmc

DATA = pathlib.Path(__file__).with_name("data")


@pytest.fixture(scope="module")
def eight_schools_result():
    data = json.loads((DATA / "eight_schools_data.json").read_text())
    target = sgmcmc.Target.from_numpyro(
        eight_schools, data["J"], np.asarray(data["sigma"], np.float32), y=np.asarray(data["y"], np.float32)
    )
    sampler = sgmcmc.hmc(target, step_size=0.3, num_integration_steps=12, adapt=False)
    return sgmcmc.sample(sampler, num_samples=3000, num_warmup=300, num_chains=4, seed=0, progress=False)


def test_constrained_draws(eight_schools_result):
    samples = eight_schools_result.samples
    assert set(samples) == {"mu", "tau", "theta_trans", "theta"}
    assert samples["tau"].shape == (4, 3000) and samples["theta"].shape == (4, 3000, 8)
    assert np.all(samples["tau"] > 0)
    # theta is the deterministic site mu + tau * theta_trans, evaluated per draw
    np.testing.assert_allclose(
        samples["theta"],
        samples["mu"][..., None] + samples["tau"][..., None] * samples["theta_trans"],
        rtol=1e-5,
        atol=1e-5,
    )
    # the sampler moved in log(tau): the unconstrained position is the log
    np.testing.assert_allclose(np.exp(eight_schools_result.position["tau"]), samples["tau"], rtol=1e-5)


def test_matches_posteriordb_reference(eight_schools_result):
    reference = json.loads((DATA / "posteriordb_summaries.json").read_text())["eight_schools-eight_schools_noncentered"]
    samples = eight_schools_result.samples
    assert eight_schools_result.num_divergent == 0
    failures = []
    for column, ref in reference.items():
        if column.startswith("theta["):
            draws = samples["theta"][..., int(column[6:-1]) - 1]
        else:
            draws = samples[column]
        z_mean, z_sd = reference_z(draws, ref)
        if abs(z_mean) >= 4 or abs(z_sd) >= 4:
            failures.append(f"{column}: z_mean={z_mean:.2f} z_sd={z_sd:.2f}")
    assert not failures, failures


def test_arviz_groups_and_loo(eight_schools_result):
    idata = eight_schools_result.to_arviz()
    assert {"posterior", "sample_stats", "log_likelihood", "observed_data"} <= set(idata.groups())
    assert idata.log_likelihood["obs"].shape == (4, 3000, 8)
    loo = az.loo(idata)
    assert np.isfinite(loo.elpd_loo)
    summary = az.summary(idata, var_names=["mu", "tau"])
    assert summary.loc["tau", "r_hat"] < 1.02
