"""Checkpoint/resume (bit-identical draws), streamed draws, and on-the-fly reducers of the driver."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sgmcmc
from sgmcmc.checkpoint import load_draws
from sgmcmc.reducers import Reducer, running_mean, running_moments


class Stop(Exception):
    pass


def stop_after(steps_done: int):
    def callback(steps):
        if steps >= steps_done:
            raise Stop

    return callback


def gaussian_target():
    return sgmcmc.Target.from_logdensity(
        lambda p: -0.5 * jnp.sum(p["x"] ** 2 / jnp.arange(1.0, 4.0)), {"x": jnp.zeros(3)}
    )


def identical(a, b) -> bool:
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(np.array_equal(x, y) for x, y in zip(la, lb))


@pytest.fixture(scope="module")
def samplers():
    """Built once, so the driver's compiled programs are shared by the parametrised tests."""
    target = gaussian_target()
    return {
        "nuts": sgmcmc.nuts(target),  # warmup adaptation: one program, adaptation state checkpointed
        "sgld": sgmcmc.sgld(target, 0.05),  # plain burn-in program then sampling program
    }


@pytest.mark.parametrize("name", ["nuts", "sgld"])
@pytest.mark.parametrize("stop_at", [12, 47, 80])  # in warmup, at its boundary region, in sampling
def test_resumed_run_is_bit_identical(name, stop_at, tmp_path, samplers):
    sampler = samplers[name]
    kw = dict(num_samples=40, num_warmup=40, num_chains=2, seed=5, chunk_size=6, thin=2, progress=False)
    kw["reducers"] = {"moments": running_moments()}
    full = sgmcmc.sample(sampler, **kw)
    with pytest.raises(Stop):
        sgmcmc.sample(sampler, **kw, checkpoint=tmp_path, callback=stop_after(stop_at))
    resumed = sgmcmc.sample(sampler, **kw, checkpoint=tmp_path)
    assert identical((full.position, full.info), (resumed.position, resumed.info))
    assert identical(full.reductions, resumed.reductions)
    np.testing.assert_array_equal(full.num_grad_evals, resumed.num_grad_evals)
    np.testing.assert_array_equal(full.warmup_divergences, resumed.warmup_divergences)
    # A finished run is returned from the checkpoint without running a step.
    calls = []
    again = sgmcmc.sample(sampler, **kw, checkpoint=tmp_path, callback=calls.append)
    assert calls == [] and identical(again.position, full.position)


def test_resume_with_a_collection_policy_and_chunk_files(tmp_path):
    sampler = sgmcmc.sgld(gaussian_target(), 0.05)
    kw = dict(num_samples=30, num_chains=3, seed=1, chunk_size=4, progress=False, keep=lambda c: (c // 10) % 2 == 1)
    full = sgmcmc.sample(sampler, **kw)
    with pytest.raises(Stop):
        sgmcmc.sample(sampler, **kw, checkpoint=tmp_path, callback=stop_after(25))
    resumed = sgmcmc.sample(sampler, **kw, checkpoint=tmp_path)
    assert identical((full.position, full.info), (resumed.position, resumed.info))
    np.testing.assert_array_equal(full.dropped_grad_evals, resumed.dropped_grad_evals)
    # The streamed chunks hold every sampled step's draw, (draw, chain, ...), in order.
    chunks = load_draws(tmp_path)
    streamed = np.concatenate([c["draws/0"] for c in chunks], axis=0)  # the position leaf
    assert streamed.shape[1:] == (3, 3)
    np.testing.assert_array_equal(
        np.swapaxes(streamed, 0, 1)[:, np.asarray(kw["keep"](np.arange(len(streamed))))], full.position["x"]
    )


def test_checkpoint_of_another_run_is_refused(tmp_path):
    sampler = sgmcmc.sgld(gaussian_target(), 0.05)
    sgmcmc.sample(sampler, num_samples=10, num_chains=2, seed=0, progress=False, checkpoint=tmp_path)
    with pytest.raises(ValueError, match=r"different run.*num_samples"):
        sgmcmc.sample(sampler, num_samples=11, num_chains=2, seed=0, progress=False, checkpoint=tmp_path)
    with pytest.raises(ValueError, match="seed"):
        sgmcmc.sample(sampler, num_samples=10, num_chains=2, seed=1, progress=False, checkpoint=tmp_path)

    # Same model and shapes, other data: refused too.
    def loglik(p, batch):
        return -0.5 * (batch["y"] - p["x"][0]) ** 2

    def data_sampler(y):
        target = sgmcmc.Target.from_data(lambda p: -0.5 * jnp.sum(p["x"] ** 2), loglik, {"y": y}, {"x": jnp.zeros(3)})
        return sgmcmc.sgld(target, 0.01)

    other = tmp_path / "data"
    sgmcmc.sample(data_sampler(np.zeros(5, np.float32)), num_samples=5, seed=0, progress=False, checkpoint=other)
    with pytest.raises(ValueError, match="data"):
        sgmcmc.sample(data_sampler(np.ones(5, np.float32)), num_samples=5, seed=0, progress=False, checkpoint=other)


def test_reducers_match_the_draws_and_keep_draws_false_keeps_none():
    target = gaussian_target()
    sampler = sgmcmc.mala(target, 0.8)
    reducers = {"moments": running_moments(), "sq": running_mean(lambda p: jnp.sum(p["x"] ** 2))}
    kw = dict(num_samples=200, num_chains=2, seed=2, progress=False, chunk_size=32, reducers=reducers)
    full = sgmcmc.sample(sampler, **kw)
    x = np.asarray(full.position["x"], np.float64)
    m = full.reductions["moments"]
    np.testing.assert_array_equal(m.count, [200, 200])
    np.testing.assert_allclose(m.mean["x"], x.mean(1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(m.variance["x"], x.var(1, ddof=1), rtol=1e-4)
    np.testing.assert_allclose(full.reductions["sq"], (x**2).sum(-1).mean(1), rtol=1e-5)
    lean = sgmcmc.sample(sampler, **kw, keep_draws=False)
    assert lean.position is None and lean.samples is None
    assert lean.info.is_divergent.shape == (2, 200)
    assert identical(lean.reductions, full.reductions)
    with pytest.raises(ValueError, match="keep_draws"):
        lean.to_arviz()


def test_bad_reducers_and_callback():
    sampler = sgmcmc.sgld(gaussian_target(), 0.05)
    with pytest.raises(TypeError, match="Reducer"):
        sgmcmc.sample(sampler, num_samples=5, seed=0, progress=False, reducers={"m": lambda x: x})
    with pytest.raises(TypeError, match="callback"):
        sgmcmc.sample(sampler, num_samples=5, seed=0, progress=False, callback=3)
    with pytest.raises(TypeError, match="keep_draws"):
        sgmcmc.sample(sampler, num_samples=5, seed=0, progress=False, keep_draws="no")
    assert isinstance(running_moments(), Reducer)
