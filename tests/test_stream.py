"""Draws streamed to one NetCDF-4 file: appended chunk by chunk, opened by ArviZ at any time."""

from __future__ import annotations

from typing import NamedTuple

import arviz as az
import numpy as np
import pytest

from sgmcmc.stream import DrawStream, open_stream


class _Info(NamedTuple):
    is_divergent: np.ndarray
    logdensity: np.ndarray
    acceptance_rate: np.ndarray


def _chunk(rng, chains: int, draws: int):
    samples = {
        "w": rng.normal(size=(chains, draws, 3)).astype(np.float32),
        "layer": {"b": rng.normal(size=(chains, draws))},
    }
    info = _Info(rng.random((chains, draws)) < 0.2, rng.normal(size=(chains, draws)), rng.random((chains, draws)))
    return samples, info


def test_chunks_append_along_draw_and_open_with_arviz(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "run.nc"
    stream = DrawStream(path, attrs={"sampler": "test", "target": None})
    chunks = [_chunk(rng, 2, n) for n in (5, 5, 3)]
    for i, (samples, info) in enumerate(chunks):
        stream.append(samples, info)
        seen = open_stream(path)  # readable between chunks, while the run goes on
        assert seen.posterior.sizes["draw"] == sum(c[0]["w"].shape[1] for c in chunks[: i + 1])
    assert stream.num_draws == 13

    idata = az.from_netcdf(path)
    w = np.concatenate([c[0]["w"] for c in chunks], axis=1)
    np.testing.assert_array_equal(idata.posterior["w"].values, w)
    np.testing.assert_array_equal(
        idata.posterior["layer.b"].values, np.concatenate([c[0]["layer"]["b"] for c in chunks], 1)
    )
    np.testing.assert_array_equal(idata.posterior.draw.values, np.arange(13))
    diverging = idata.sample_stats["diverging"].values
    assert diverging.dtype == bool
    np.testing.assert_array_equal(diverging, np.concatenate([c[1].is_divergent for c in chunks], axis=1))
    assert {"lp", "acceptance_rate"} <= set(idata.sample_stats.data_vars)
    assert idata.posterior.attrs["sampler"] == "test" and "target" not in idata.posterior.attrs
    summary = az.summary(idata, var_names=["w"])
    assert summary.shape[0] == 3


def test_a_chunk_with_other_variables_or_shapes_is_refused(tmp_path):
    rng = np.random.default_rng(1)
    stream = DrawStream(tmp_path / "run.nc")
    samples, info = _chunk(rng, 2, 4)
    stream.append(samples, info)
    with pytest.raises(ValueError, match="new variable"):
        stream.append({**samples, "extra": samples["w"]}, info)
    with pytest.raises(ValueError, match="inconsistent draw counts"):
        stream.append({"w": samples["w"][:, :2], "layer": samples["layer"]}, info)
    fresh = DrawStream(tmp_path / "other.nc")
    with pytest.raises(ValueError, match="chains"):
        fresh.append({"w": samples["w"], "layer": {"b": samples["layer"]["b"][:1]}}, info)


# ------------------------------------------------------------------ the driver's stream= argument


class _Stop(Exception):
    pass


def _stop_after(steps_done: int):
    def callback(steps):
        if steps >= steps_done:
            raise _Stop

    return callback


@pytest.fixture(scope="module")
def constrained_sampler():
    """A NumPyro model with a positive parameter: the stream holds the user's (constrained) values."""
    import numpyro
    import numpyro.distributions as dist

    import sgmcmc

    def model(y):
        mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
        sigma = numpyro.sample("sigma", dist.HalfNormal(2.0))
        numpyro.sample("y", dist.Normal(mu, sigma), obs=y)

    y = np.random.default_rng(0).normal(1.0, 0.7, size=20)
    return sgmcmc.mala(sgmcmc.Target.from_numpyro(model, y), 0.2)


def test_streamed_run_equals_the_in_memory_run(tmp_path, constrained_sampler):
    import sgmcmc

    kw = dict(num_samples=25, num_warmup=10, num_chains=2, seed=3, chunk_size=7, progress=False)
    full = sgmcmc.sample(constrained_sampler, **kw)
    path = tmp_path / "run.nc"
    lean = sgmcmc.sample(constrained_sampler, **kw, stream=path, keep_draws=False)
    assert lean.samples is None
    idata = az.from_netcdf(path)
    for name in ("mu", "sigma"):
        np.testing.assert_array_equal(idata.posterior[name].values, np.asarray(full.samples[name]))
    assert np.all(idata.posterior["sigma"].values > 0)
    np.testing.assert_array_equal(idata.sample_stats["lp"].values, np.asarray(full.info.logdensity))
    assert idata.posterior.attrs["sampler"] == "mala"


def test_stream_follows_the_collection_policy(tmp_path, constrained_sampler):
    import sgmcmc

    kw = dict(num_samples=9, num_chains=2, seed=4, chunk_size=4, progress=False, keep=lambda c: c % 3 == 0)
    full = sgmcmc.sample(constrained_sampler, **kw)
    sgmcmc.sample(constrained_sampler, **kw, stream=tmp_path / "kept.nc")
    idata = open_stream(tmp_path / "kept.nc")
    assert idata.posterior.sizes["draw"] == 9
    np.testing.assert_array_equal(idata.posterior["mu"].values, np.asarray(full.samples["mu"]))


@pytest.mark.parametrize("keep_draws", [True, False])
def test_resumed_run_continues_the_stream(tmp_path, constrained_sampler, keep_draws):
    import sgmcmc

    kw = dict(num_samples=30, num_chains=2, seed=6, chunk_size=4, progress=False)
    full = sgmcmc.sample(constrained_sampler, **kw)
    path, ckpt = tmp_path / "run.nc", tmp_path / "ckpt"
    with pytest.raises(_Stop):
        sgmcmc.sample(
            constrained_sampler, **kw, stream=path, checkpoint=ckpt, keep_draws=keep_draws, callback=_stop_after(19)
        )
    assert 0 < open_stream(path).posterior.sizes["draw"] < 30
    sgmcmc.sample(constrained_sampler, **kw, stream=path, checkpoint=ckpt, keep_draws=keep_draws)
    np.testing.assert_array_equal(open_stream(path).posterior["mu"].values, np.asarray(full.samples["mu"]))
    if keep_draws:  # the checkpoint holds the draws: a lost stream is written again
        path.unlink()
        sgmcmc.sample(constrained_sampler, **kw, stream=path, checkpoint=ckpt, keep_draws=keep_draws)
        np.testing.assert_array_equal(open_stream(path).posterior["sigma"].values, np.asarray(full.samples["sigma"]))
    else:
        path.unlink()
        with pytest.raises(ValueError, match="cannot resume the stream"):
            sgmcmc.sample(constrained_sampler, **kw, stream=path, checkpoint=ckpt, keep_draws=keep_draws)


def test_stream_must_be_a_path(constrained_sampler):
    import sgmcmc

    with pytest.raises(TypeError, match="stream must be a file path"):
        sgmcmc.sample(constrained_sampler, num_samples=2, seed=0, stream=3, progress=False)
