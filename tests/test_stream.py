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
