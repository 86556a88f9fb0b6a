"""to_arviz output works with az.summary, az.plot_trace, az.loo and a NetCDF round trip."""

from __future__ import annotations

import arviz as az
import matplotlib
import numpy as np
import pytest

import sgmcmc
from sgmcmc.diagnostics._compat import ARVIZ_MAJOR

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def linreg_result():
    import jax.numpy as jnp

    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 2)).astype(np.float32)
    y = (x @ np.array([0.5, -1.0], np.float32) + 0.2 * rng.normal(size=40)).astype(np.float32)

    def logprior(p):
        return -0.5 * (jnp.sum(p["layer1"]["w"] ** 2) + p["layer1"]["b"] ** 2)

    def loglik(p, batch):
        return -0.5 * ((batch["y"] - batch["x"] @ p["layer1"]["w"] - p["layer1"]["b"]) / 0.2) ** 2

    target = sgmcmc.Target.from_data(
        logprior, loglik, {"x": x, "y": y}, {"layer1": {"w": jnp.zeros(2), "b": jnp.zeros(())}}
    )
    sampler = sgmcmc.hmc(target, 0.015, 5, adapt=False)
    return sgmcmc.sample(sampler, num_samples=300, num_warmup=100, seed=0, progress=False)


def test_groups_and_names(linreg_result):
    idata = linreg_result.to_arviz()
    assert ARVIZ_MAJOR == 0  # this suite runs on ArviZ 0.23 (Python 3.11)
    assert {"posterior", "sample_stats", "log_likelihood", "observed_data"} <= set(idata.groups())
    assert set(idata.posterior.data_vars) == {"layer1.w", "layer1.b"}
    assert idata.posterior["layer1.w"].dims == ("chain", "draw", "layer1.w_dim_0")
    stats = set(idata.sample_stats.data_vars)
    assert {"diverging", "lp", "acceptance_rate", "step_size", "energy", "n_grad_evals"} <= stats
    assert idata.sample_stats["diverging"].dtype == bool
    assert idata.log_likelihood["loglik"].shape == (4, 300, 40)
    np.testing.assert_allclose(idata.sample_stats["lp"].values, linreg_result.info.logdensity)


def test_summary_trace_plot_loo(linreg_result, tmp_path):
    idata = linreg_result.to_arviz()
    summary = az.summary(idata)
    assert list(summary.index) == ["layer1.b", "layer1.w[0]", "layer1.w[1]"]
    assert np.all(summary["r_hat"] < 1.05)
    axes = az.plot_trace(idata)
    axes.ravel()[0].figure.savefig(tmp_path / "trace.png")
    assert (tmp_path / "trace.png").stat().st_size > 0
    az.plot_energy(idata)
    loo = az.loo(idata)
    assert np.isfinite(loo.elpd_loo)


def test_netcdf_round_trip(linreg_result, tmp_path):
    idata = linreg_result.to_arviz()
    path = tmp_path / "posterior.nc"
    idata.to_netcdf(str(path))
    back = az.from_netcdf(str(path))
    np.testing.assert_array_equal(back.posterior["layer1.w"].values, idata.posterior["layer1.w"].values)
    np.testing.assert_array_equal(back.sample_stats["diverging"].values, idata.sample_stats["diverging"].values)
    assert back.posterior.attrs["sampler"] == "hmc"


def test_without_log_likelihood(linreg_result):
    idata = linreg_result.to_arviz(log_likelihood=False, observed_data=False)
    assert set(idata.groups()) == {"posterior", "sample_stats"}


def test_plain_array_position_gets_a_name():
    import jax.numpy as jnp

    target = sgmcmc.Target.from_logdensity(lambda x: -0.5 * jnp.sum(x**2), jnp.zeros(2))
    result = sgmcmc.sample(sgmcmc.mala(target, 0.5), num_samples=20, seed=0, progress=False)
    idata = result.to_arviz()
    assert list(idata.posterior.data_vars) == ["x"]
    assert "log_likelihood" not in idata.groups()


def test_coordinates_label_selected_entries(linreg_result):
    idata = linreg_result.to_arviz()
    assert list(idata.posterior["layer1.w"].coords["layer1.w_dim_0"].values) == [0, 1]
    summary = az.summary(idata, var_names=["layer1.w"], coords={"layer1.w_dim_0": [1]})
    assert list(summary.index) == ["layer1.w[1]"]
