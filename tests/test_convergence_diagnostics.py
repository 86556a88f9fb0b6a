"""Fast R-hat / ESS (sgmcmc.diagnostics.convergence) against ArviZ 0.23 on small inputs."""

from __future__ import annotations

import warnings

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sgmcmc.diagnostics import convergence as cv

RTOL = 1e-6


def ar1(rng, chains, draws, params, rho):
    """AR(1) chains with autocorrelation ``rho`` and a per-chain offset (so R-hat > 1)."""
    x = np.zeros((chains, draws, params))
    e = rng.standard_normal((chains, draws, params))
    x[:, 0] = e[:, 0]
    for t in range(1, draws):
        x[:, t] = rho * x[:, t - 1] + np.sqrt(1 - rho**2) * e[:, t]
    return x + 0.3 * rng.standard_normal((chains, 1, params))


def arviz_values(x, kind, method, **kw):
    ds = az.convert_to_dataset({"v": np.asarray(x)})
    fn = az.rhat if kind == "rhat" else az.ess
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # constant series: 0 / 0 inside ArviZ
        return np.asarray(fn(ds, method=method, **kw)["v"].values, np.float64)


def assert_match(ours, theirs, rtol=RTOL):
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    assert ours.shape == theirs.shape
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs))
    np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=0)


def _cases():
    rng = np.random.default_rng(20260601)
    iid = rng.standard_normal((4, 100, 6))
    auto = ar1(rng, 4, 200, 5, 0.95)
    ties = rng.integers(0, 4, size=(3, 60, 5)).astype(np.float64)
    ties[:, :, 0] = np.round(rng.standard_normal((3, 60)), 1)  # many ties, many values
    odd = ar1(rng, 4, 101, 4, 0.5)
    one_chain = ar1(rng, 1, 80, 4, 0.7)
    constant = rng.standard_normal((4, 50, 4))
    constant[:, :, 1] = 2.5
    constant[:, :, 3] = 0.0
    shaped = rng.standard_normal((2, 7, 2, 3))  # 7 draws: split halves of 3, odd count
    return {
        "iid": iid,
        "ar1_0.95": auto,
        "ties": ties,
        "odd_draws": odd,
        "one_chain": one_chain,
        "constant": constant,
        "param_shape_2x3": shaped,
    }


CASES = _cases()


@pytest.mark.parametrize("case", sorted(CASES))
def test_summary_matches_arviz(case):
    x = CASES[case]
    s = cv.summary(x, mean_sd=True)
    assert_match(s.rhat, arviz_values(x, "rhat", "rank"))
    assert_match(s.ess_bulk, arviz_values(x, "ess", "bulk"))
    assert_match(s.ess_tail, arviz_values(x, "ess", "tail"))
    assert_match(s.ess_mean, arviz_values(x, "ess", "mean"))
    assert_match(s.ess_sd, arviz_values(x, "ess", "sd"))


@pytest.mark.parametrize("method", ["rank", "z_scale", "folded", "split", "identity"])
@pytest.mark.parametrize("case", ["ar1_0.95", "ties", "odd_draws"])
def test_rhat_methods_match_arviz(case, method):
    x = CASES[case]
    assert_match(cv.rhat(x, method=method), arviz_values(x, "rhat", method))


@pytest.mark.parametrize("method", ["bulk", "tail", "mean", "sd"])
def test_ess_methods_match_arviz(method):
    x = CASES["ar1_0.95"]
    assert_match(cv.ess(x, method=method), arviz_values(x, "ess", method))


def test_tail_prob():
    x = CASES["odd_draws"]
    assert_match(cv.ess(x, method="tail", prob=0.1), arviz_values(x, "ess", "tail", prob=0.1))
    assert_match(cv.ess(x, method="tail", prob=(0.2, 0.7)), arviz_values(x, "ess", "tail", prob=(0.2, 0.7)))


def test_constant_and_one_chain_follow_arviz():
    s = cv.summary(CASES["constant"])
    assert np.isnan(s.rhat[1]) and np.isnan(s.rhat[3]) and np.isfinite(s.rhat[0])
    assert s.ess_bulk[1] == 4 * 50  # ArviZ: a constant series has ESS = number of split draws
    assert s.num_nan_rhat == 2
    assert s.rhat_max == np.nanmax(s.rhat)
    one = cv.summary(CASES["one_chain"])
    assert np.isnan(one.rhat).all() and np.isnan(one.rhat_max)
    assert np.isfinite(one.ess_bulk).all()


def test_float32_default_and_float64_option():
    x = CASES["ar1_0.95"].astype(np.float32)
    ref = arviz_values(x, "ess", "bulk")
    # float32 arithmetic: ranks are exact, sums and FFT round (docstring: ~1e-6 relative)
    assert_match(cv.ess(x), ref, rtol=2e-5)
    assert_match(cv.ess(x, dtype=np.float64), ref)
    assert_match(cv.rhat(x), arviz_values(x, "rhat", "rank"), rtol=1e-6)
    assert not jax.config.jax_enable_x64  # the float64 path did not flip the global flag
    assert jnp.zeros(1).dtype == jnp.float32


def test_float32_ranking_with_ties_matches_arviz():
    # float32 rows are ranked from packed integer keys, and the folded draws by merging the two
    # halves of the sorted draws (no second sort): exercise ties, folded values tied across the
    # two halves (integers symmetric about the median), -0.0 beside +0.0, and Metropolis-style
    # repeats (a random walk that keeps its value on rejection).
    rng = np.random.default_rng(7)
    x = rng.integers(-3, 4, size=(4, 60, 3)).astype(np.float32)
    x[:, :, 1] = np.where(x[:, :, 1] == 0, np.float32(-0.0), x[:, :, 1])
    walk = np.cumsum(rng.standard_normal((4, 60)) * (rng.random((4, 60)) < 0.3), axis=1)
    x[:, :, 2] = np.round(walk, 1)
    # ArviZ gets the float32 array too: |x - median| is then rounded to float32 on both sides
    s = cv.summary(x, dtype=np.float64)
    assert_match(s.rhat, arviz_values(x, "rhat", "rank"))
    assert_match(s.ess_bulk, arviz_values(x, "ess", "bulk"))
    assert_match(s.ess_tail, arviz_values(x, "ess", "tail"))
    assert_match(cv.rhat(x, method="folded", dtype=np.float64), arviz_values(x, "rhat", "folded"))


def test_chunks_do_not_change_results():
    x = np.random.default_rng(1).standard_normal((3, 40, 11)).astype(np.float32)
    a = cv.summary(x, chunk_size=1024)
    b = cv.summary(x, chunk_size=3)
    np.testing.assert_array_equal(a.rhat, b.rhat)
    np.testing.assert_array_equal(a.ess_bulk, b.ess_bulk)
    np.testing.assert_array_equal(a.ess_tail, b.ess_tail)


def test_pytree_in_pytree_out():
    rng = np.random.default_rng(2)
    draws = {"w": rng.standard_normal((4, 60, 2, 3)), "b": (rng.standard_normal((4, 60)), ar1(rng, 4, 60, 2, 0.9))}
    s = cv.summary(draws)
    assert jax.tree.structure(s.rhat) == jax.tree.structure(draws)
    assert s.rhat["w"].shape == (2, 3) and s.rhat["b"][0].shape == () and s.ess_tail["b"][1].shape == (2,)
    for leaf, r, e in zip(jax.tree.leaves(draws), jax.tree.leaves(s.rhat), jax.tree.leaves(s.ess_bulk)):
        assert_match(r, arviz_values(leaf, "rhat", "rank"))
        assert_match(e, arviz_values(leaf, "ess", "bulk"))
    assert s.num_parameters == 6 + 1 + 2
    assert s.rhat_max == max(float(np.max(r)) for r in jax.tree.leaves(s.rhat))
    assert s.ess_bulk_min == min(float(np.min(e)) for e in jax.tree.leaves(s.ess_bulk))
    assert set(s.worst()) >= {"rhat_max", "ess_bulk_min", "ess_tail_min"}
    # jax arrays are accepted too
    assert_match(cv.rhat(jnp.asarray(draws["w"], jnp.float32)), cv.rhat(draws["w"].astype(np.float32)))


def test_function_space_summary():
    rng = np.random.default_rng(3)
    samples = {"w": jnp.asarray(ar1(rng, 4, 50, 3, 0.8), jnp.float32), "b": jnp.asarray(rng.standard_normal((4, 50)))}
    x_test = jnp.asarray(rng.standard_normal((5, 3)), jnp.float32)

    def fn(p):
        return x_test @ p["w"] + p["b"]

    s = cv.function_space_summary(fn, samples, batch_size=37)
    values = np.asarray(jax.vmap(jax.vmap(fn))(samples))
    assert values.shape == (4, 50, 5)
    np.testing.assert_allclose(s.rhat, cv.rhat(values), rtol=1e-6)
    np.testing.assert_allclose(s.ess_bulk, cv.ess(values), rtol=1e-6)
    assert s.rhat.shape == (5,)
    assert cv.function_space_summary(None, values).rhat_max == s.rhat_max


def test_predicted_class_log_probs():
    rng = np.random.default_rng(4)
    logits = rng.standard_normal((2, 6, 4, 3))
    lp = np.asarray(jax.nn.log_softmax(logits, axis=-1))
    out = cv.predicted_class_log_probs(lp)
    predicted = np.argmax(np.exp(lp).mean(axis=(0, 1)), axis=-1)
    np.testing.assert_allclose(out, lp[:, :, np.arange(4), predicted])
    with pytest.raises(ValueError, match="n_classes"):
        cv.predicted_class_log_probs(lp[..., 0])


@pytest.mark.parametrize(
    ("draws", "match"),
    [
        (np.zeros((4, 3)), "at least 4 draws"),
        (np.zeros((4, 3, 2)), "at least 4 draws"),
        (np.zeros(10), "shape"),
        (np.zeros((0, 10)), "no chains"),
        (np.array([[0.0, 1.0, np.nan, 2.0, 3.0]]), "NaN or infinite"),
        (np.array([[0.0, 1.0, np.inf, 2.0, 3.0]]), "NaN or infinite"),
        (np.array([["a"] * 5]), "real numbers"),
        ({"ok": np.zeros((2, 10)), "bad": np.zeros((2, 2))}, r"\['bad'\].*at least 4 draws"),
    ],
)
def test_bad_input(draws, match):
    with pytest.raises(ValueError, match=match):
        cv.summary(draws)


def test_bad_options():
    x = np.zeros((2, 10))
    with pytest.raises(ValueError, match="method"):
        cv.rhat(x, method="bulk")
    with pytest.raises(ValueError, match="method"):
        cv.ess(x, method="rank")
    with pytest.raises(ValueError, match="prob"):
        cv.ess(x, method="tail", prob=1.5)
    with pytest.raises(ValueError, match="chunk_size"):
        cv.rhat(x, chunk_size=0)
    with pytest.raises(ValueError, match="dtype"):
        cv.rhat(x, dtype=np.float16)


@pytest.mark.parametrize("levels_per_slot", [0.2, 3.0, 30.0])
def test_twice_sorted_ranks_average_ties_like_scipy(levels_per_slot):
    """Both tie paths (few tied slots rewritten alone, many ties by whole-row passes) give scipy's ranks."""
    from scipy.stats import rankdata

    from sgmcmc.diagnostics.convergence import _twice_sorted_ranks

    rng = np.random.default_rng(int(levels_per_slot * 10))
    for _ in range(100):
        p, n = rng.integers(1, 6), rng.integers(2, 40)
        rows = np.sort(rng.integers(0, max(1, int(levels_per_slot * n)), (p, n)), axis=1)
        expected = np.stack([2 * rankdata(r) for r in rows])
        np.testing.assert_array_equal(_twice_sorted_ranks(rows), expected)
