"""The ``python -m sgmcmc`` demo and the MLP target it builds."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sgmcmc
from sgmcmc import demo
from sgmcmc.datasets import load_digits


def test_demo_quick_end_to_end(tmp_path, capsys):
    out = tmp_path / "trace.png"
    metrics = demo.main(["--quick", "--out", str(out), "--seed", "1"])

    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(metrics) == {"sgd", "sgld"}
    for method in ("sgd", "sgld"):
        values = metrics[method]
        assert {"accuracy", "nll", "ece", "brier"} <= set(values)
        assert all(math.isfinite(v) for v in values.values()), values
        assert values["accuracy"] > 0.8, (method, values)
        assert 0 <= values["ece"] <= 1 and 0 <= values["brier"] <= 2 and values["nll"] > 0

    printed = capsys.readouterr().out
    assert "| method | accuracy | nll | ece | brier |" in printed
    assert "r_hat" in printed and "hidden.w[36, 0]" in printed  # az.summary of the chosen weights
    assert str(out) in printed


def test_make_mlp_target():
    data = load_digits()
    target = demo.make_mlp_target(data.x_train[:100], data.y_train[:100], num_hidden=8, num_classes=10)
    assert isinstance(target, sgmcmc.Target) and target.num_data == 100
    shapes = jax.tree.map(jnp.shape, target.initial_position)
    assert shapes == {"hidden": {"w": (64, 8), "b": (8,)}, "out": {"w": (8, 10), "b": (10,)}}
    assert np.isfinite(float(target.logdensity(target.initial_position)))
    assert target.loglik_fn(target.initial_position, target.data).shape == (100,)

    # Per-layer prior: log N(0; 0, s^2) summed over the layer's parameters.
    zeros = jax.tree.map(jnp.zeros_like, target.initial_position)
    layered = demo.make_mlp_target(
        data.x_train[:100], data.y_train[:100], num_hidden=8, prior_scale={"hidden": 0.5, "out": 2.0}
    )
    expected = -(64 * 8 + 8) * (0.5 * np.log(2 * np.pi) + np.log(0.5)) - (8 * 10 + 10) * (
        0.5 * np.log(2 * np.pi) + np.log(2.0)
    )
    assert float(layered.logprior_fn(zeros)) == pytest.approx(expected, rel=1e-5)

    with pytest.raises(ValueError):
        demo.make_mlp_target(data.x_train, data.y_train, prior_scale=0.0)
    with pytest.raises(ValueError):
        demo.make_mlp_target(data.x_train, data.y_train, prior_scale={"hidden": 1.0})
    with pytest.raises(ValueError):
        demo.make_mlp_target(data.x_train, data.y_train[:10])


def test_posterior_predictive_chunks_agree():
    rng = np.random.default_rng(0)
    params = demo.init_mlp_params(jax.random.key(0), 64, 8, 10)
    samples = jax.tree.map(lambda a: np.asarray(a) + 0.3 * rng.normal(size=(2, 5, *a.shape)).astype(np.float32), params)
    x = rng.normal(size=(7, 64)).astype(np.float32)
    whole = demo.posterior_predictive(samples, x, chunk_size=100)
    chunked = demo.posterior_predictive(samples, x, chunk_size=3)
    np.testing.assert_allclose(chunked, whole, rtol=1e-5, atol=1e-7)
    draws = jax.tree.map(lambda a: a.reshape(-1, *a.shape[2:]), samples)
    per_draw = [jax.nn.softmax(demo.mlp_logits(jax.tree.map(lambda a, i=i: a[i], draws), x)) for i in range(10)]
    direct = np.mean(per_draw, axis=0)
    np.testing.assert_allclose(whole, direct, rtol=1e-5, atol=1e-7)


def test_markdown_table():
    table = demo.markdown_table({"a": {"x": 1.0, "y": 0.5}, "b": {"x": 0.25, "y": 2.0}})
    assert table.splitlines() == [
        "| method | x | y |",
        "|---|---:|---:|",
        "| a | 1.0000 | 0.5000 |",
        "| b | 0.2500 | 2.0000 |",
    ]
