"""Tests for sgmcmc.noise: statistics, determinism, transformations, indices."""

import importlib
import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

try:  # the package may not be importable while it is being assembled
    noise = importlib.import_module("sgmcmc.noise")
except Exception:  # pragma: no cover
    _path = pathlib.Path(__file__).resolve().parents[1] / "sgmcmc" / "noise.py"
    _spec = importlib.util.spec_from_file_location("sgmcmc_noise_standalone", _path)
    noise = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(noise)

FAST = "xla_threefry"
N = 1_000_000


def assert_same(a, b):
    """Same draws.  The uint32 bits are exact; the float transform may differ by
    ~1 ulp between differently compiled programs (vectorised vs scalar log)."""
    np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), rtol=3e-7, atol=3e-7)


@pytest.fixture(scope="module")
def draws():
    z = jax.jit(lambda k: noise.normal(k, (N,), method=FAST))(jax.random.key(0))
    return np.asarray(z, dtype=np.float64)


def _check_moments(z, nse=5.0):
    n = z.size
    assert abs(z.mean()) < nse * np.sqrt(1 / n)
    assert abs(z.var() - 1) < nse * np.sqrt(2 / n)
    assert abs(stats.skew(z)) < nse * np.sqrt(6 / n)
    assert abs(stats.kurtosis(z)) < nse * np.sqrt(24 / n)


def test_moments(draws):
    assert draws.dtype == np.float64 and np.isfinite(draws).all()
    _check_moments(draws)


def test_ks(draws):
    assert stats.kstest(draws, "norm").pvalue > 1e-4


@pytest.mark.parametrize("t", [1.0, 2.0, 3.0, 4.0])
def test_tail_frequencies(draws, t):
    p = 2 * stats.norm.sf(t)
    k = np.sum(np.abs(draws) > t)
    assert abs(k - N * p) < 5 * np.sqrt(N * p * (1 - p)) + 1


def test_transform_accuracy():
    """float32 transform against a float64 evaluation of the same formula."""
    rng = np.random.default_rng(0)
    a = rng.integers(0, 2**32, 200_000, dtype=np.uint32)
    b = rng.integers(0, 2**32, 200_000, dtype=np.uint32)
    a[:4] = [0, 1, 2**31, 2**32 - 1]  # extreme radii
    z = np.asarray(jax.jit(noise._block_to_normal)(jnp.asarray(a), jnp.asarray(b)), np.float64)
    u = ((a >> 1).astype(np.float64) + 0.5) * 2.0**-31
    phi = (b & 0x3FFFFFFF).astype(np.float64) * (np.pi / 4) * 2.0**-30
    v = np.where(b & 0x40000000, np.sin(phi), np.cos(phi)) * np.where(b >> 31, -1.0, 1.0)
    r = np.sqrt(-2 * np.log(u))
    ref = r * v
    # float32 rounding of u near 1 (spacing 2^-24) perturbs r^2 = -2 log u by up
    # to ~2^-24, i.e. |dr| <= min(2^-12, 2^-24 / r) (a CDF error below 2^-24).
    dr = np.minimum(2.5e-4, 1.2e-7 / np.maximum(r, 1e-30))
    tol = 3e-6 * np.abs(ref) + np.abs(v) * dr
    assert np.all(np.abs(z - ref) <= tol)
    assert np.abs(z).max() <= np.sqrt(-2 * np.log(2.0**-32)) + 1e-5


def test_threefry_known_answers():
    """Random123 known-answer vectors for Threefry-2x32-20: (key, counter) -> out."""
    kats = [
        ((0x00000000, 0x00000000), (0x00000000, 0x00000000), (0x6B200159, 0x99BA4EFE)),
        ((0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF), (0x1CB996FC, 0xBB002BE7)),
        ((0x13198A2E, 0x03707344), (0x243F6A88, 0x85A308D3), (0xC4923A9C, 0x483DF7A0)),
    ]
    for key, ctr, expected in kats:

        def u(v):
            return jnp.asarray(v, jnp.uint32)

        y0, y1 = noise._threefry2x32(u(key[0]), u(key[1]), u(ctr[0]), u(ctr[1]), both=True)
        assert (int(y0), int(y1)) == expected


def test_deterministic_and_key_types():
    raw = jax.random.PRNGKey(42)
    typed = jax.random.wrap_key_data(raw)
    a = noise.normal(raw, (5, 7), method=FAST)
    b = noise.normal(raw, (5, 7), method=FAST)
    c = noise.normal(typed, (5, 7), method=FAST)
    assert a.shape == (5, 7) and a.dtype == jnp.float32
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)
    # jit gives the same numbers as eager
    assert_same(jax.jit(lambda k: noise.normal(k, (5, 7), method=FAST))(raw), a)
    # a prefix-consistent stream: a longer draw starts with the shorter one
    assert_same(noise.normal(raw, (35,), method=FAST)[:10], a.reshape(-1)[:10])
    np.testing.assert_array_equal(noise.threefry_bits(raw, (35,))[:10], noise.threefry_bits(typed, (10,)))


def test_odd_sizes_are_prefixes_of_the_stream():
    key = jax.random.key(12)
    full = noise.normal(key, (2000,), method=FAST)
    for n in (1, 3, 255, 257, 1001, 1999):
        assert_same(noise.normal(key, (n,), method=FAST), full[:n])
        assert_same(jax.jit(lambda k, n=n: noise.normal(k, (n,), method=FAST))(key), full[:n])
    rows = jax.vmap(lambda k: noise.normal(k, (1001,), method=FAST))(jax.random.split(key, 2))
    assert_same(rows[1], noise.normal(jax.random.split(key, 2)[1], (2000,), method=FAST)[:1001])


def test_keys_differing_in_one_word_differ():
    keys = [jnp.array(k, jnp.uint32) for k in ([0, 0], [0, 1], [1, 0], [1, 1], [2**31, 0])]
    outs = np.stack([np.asarray(noise.normal(k, (64,), method=FAST)) for k in keys])
    for i in range(len(keys)):
        for j in range(i):
            assert not np.any(outs[i] == outs[j])


def test_split_streams_uncorrelated():
    k1, k2 = jax.random.split(jax.random.key(3))
    n = 200_000
    a = np.asarray(noise.normal(k1, (n,), method=FAST), np.float64)
    b = np.asarray(noise.normal(k2, (n,), method=FAST), np.float64)
    assert abs(np.corrcoef(a, b)[0, 1]) < 5 / np.sqrt(n)
    # lag-1 autocorrelation within one stream
    assert abs(np.corrcoef(a[:-1], a[1:])[0, 1]) < 5 / np.sqrt(n)


def test_vmap_rows_match_single_calls():
    keys = jax.random.split(jax.random.key(7), 4)

    def f(k):
        return noise.normal(k, (3, 5), method=FAST)

    batched = jax.jit(jax.vmap(f))(keys)
    assert batched.shape == (4, 3, 5)
    for i in range(4):
        assert_same(batched[i], f(keys[i]))
    flat = np.asarray(batched).reshape(4, -1)
    assert len({row.tobytes() for row in flat}) == 4
    # raw uint32 keys too
    raw = jax.random.key_data(keys)
    assert_same(jax.vmap(f)(raw), batched)


def test_scan():
    def body(carry, key):
        z = noise.normal(key, (10,), method=FAST)
        return carry + z, z

    keys = jax.random.split(jax.random.key(1), 50)
    total, zs = jax.jit(lambda ks: jax.lax.scan(body, jnp.zeros(10), ks))(keys)
    assert zs.shape == (50, 10)
    np.testing.assert_allclose(total, zs.sum(0), rtol=1e-5, atol=1e-5)
    assert_same(zs[3], noise.normal(keys[3], (10,), method=FAST))
    assert len({np.asarray(r).tobytes() for r in zs}) == 50


def test_grad_through_noisy_function():
    key = jax.random.key(0)
    g = jax.grad(lambda x: jnp.sum(x * noise.normal(key, x.shape, method=FAST)))(jnp.ones(6))
    assert_same(g, noise.normal(key, (6,), method=FAST))


def test_methods_and_dtypes():
    key = jax.random.key(11)
    np.testing.assert_array_equal(noise.normal(key, (4,), method="jax"), jax.random.normal(key, (4,)))
    auto = noise.normal(key, (4,))
    expected = "xla_threefry" if jax.default_backend() == "cpu" else "jax"
    assert_same(auto, noise.normal(key, (4,), method=expected))
    assert not np.allclose(noise.normal(key, (4,), method=FAST), jax.random.normal(key, (4,)))
    bf = noise.normal(key, (8,), jnp.bfloat16, method=FAST)
    assert bf.dtype == jnp.bfloat16
    np.testing.assert_allclose(bf.astype(jnp.float32), noise.normal(key, (8,), method=FAST), rtol=1e-2, atol=1e-2)
    assert noise.normal(key, (), method=FAST).shape == ()
    assert noise.normal(key, 3, method=FAST).shape == (3,)
    with pytest.raises(ValueError):
        noise.normal(key, (3,), method="nope")
    with pytest.raises(ValueError):
        noise.normal(jnp.zeros(3, jnp.uint32), (3,), method=FAST)


def test_float64_falls_back_to_jax_random():
    with jax.enable_x64(True):
        key = jax.random.key(5)
        z = noise.normal(key, (6,), jnp.float64, method=FAST)
        assert z.dtype == jnp.float64
        np.testing.assert_array_equal(z, jax.random.normal(key, (6,), jnp.float64))


def test_normal_like_nested_tree():
    tree = {
        "layer": [jnp.zeros((3,)), jnp.zeros((640, 1000))],
        "b": (jnp.zeros((7,), jnp.float32), jnp.zeros((), jnp.float32)),
        "half": jnp.zeros((2, 3), jnp.bfloat16),
        "spec": jax.ShapeDtypeStruct((5,), jnp.float32),
    }
    key = jax.random.key(9)
    out = jax.jit(lambda k: noise.normal_like(k, tree, method=FAST))(key)
    ref_leaves = jax.tree_util.tree_leaves(tree)
    out_leaves, out_def = jax.tree_util.tree_flatten(out)
    assert out_def == jax.tree_util.tree_structure(tree)
    for o, r in zip(out_leaves, ref_leaves):
        assert o.shape == r.shape and o.dtype == r.dtype
    # leaves are consecutive pieces of one stream
    flat32 = jnp.concatenate([o.astype(jnp.float32).reshape(-1) for o in out_leaves])
    full = noise.normal(key, (flat32.size,), method=FAST)
    mask = np.concatenate([np.full(o.size, o.dtype == jnp.float32) for o in out_leaves])
    assert_same(np.asarray(flat32)[mask], np.asarray(full)[mask])
    np.testing.assert_allclose(np.asarray(flat32)[~mask], np.asarray(full)[~mask], rtol=1e-2, atol=1e-2)
    _check_moments(np.asarray(flat32, np.float64)[mask])


def test_normal_like_jax_method_and_vmap():
    tree = {"w": jnp.zeros((4, 3)), "b": jnp.zeros((3,))}
    key = jax.random.key(2)
    out = noise.normal_like(key, tree, method="jax")
    flat = jax.random.normal(key, (15,))
    leaves = jax.tree_util.tree_leaves(out)
    np.testing.assert_array_equal(jnp.concatenate([leaf.reshape(-1) for leaf in leaves]), flat)
    keys = jax.random.split(key, 4)
    batched = jax.vmap(lambda k: noise.normal_like(k, tree, method=FAST))(keys)
    assert batched["w"].shape == (4, 4, 3)
    assert_same(batched["w"][2], noise.normal_like(keys[2], tree, method=FAST)["w"])


def test_mulhi_exact():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 2**32, 100_000, dtype=np.uint64)
    m = rng.integers(1, 2**32, 100_000, dtype=np.uint64)
    x[:3] = [2**32 - 1, 0, 2**32 - 1]
    m[:3] = [2**32 - 1, 5, 1]
    got = noise._mulhi_u32(jnp.asarray(x.astype(np.uint32)), jnp.asarray(m.astype(np.uint32)))
    np.testing.assert_array_equal(np.asarray(got).astype(np.uint64), (x * m) >> np.uint64(32))


@pytest.mark.parametrize("maxval", [1, 7, 1000, 60000])
def test_uniform_indices(maxval):
    key = jax.random.key(4)
    num = 200_000
    idx = np.asarray(jax.jit(lambda k: noise.uniform_indices(k, num, maxval))(key))
    assert idx.dtype == np.int32 and idx.shape == (num,)
    assert idx.min() >= 0 and idx.max() < maxval
    if maxval == 1:
        return
    bins = min(maxval, 100)
    counts = np.bincount((idx.astype(np.int64) * bins) // maxval, minlength=bins)
    assert stats.chisquare(counts).pvalue > 1e-4


def test_uniform_indices_traced_maxval_and_vmap():
    keys = jax.random.split(jax.random.key(8), 3)
    f = jax.jit(jax.vmap(lambda k, m: noise.uniform_indices(k, 1000, m)))
    idx = np.asarray(f(keys, jnp.array([10, 20, 30])))
    assert idx.shape == (3, 1000)
    assert (idx.max(1) < np.array([10, 20, 30])).all() and idx.min() >= 0
    assert len(np.unique(idx[0])) == 10
    np.testing.assert_array_equal(idx[1], noise.uniform_indices(keys[1], 1000, 20))


def test_uniform_streams_are_uniform_and_independent():
    key = jax.random.key(7)
    n = 200_000
    u = np.asarray(noise.uniform(key, (n,)))
    v = np.asarray(noise.uniform(key, (n,), stream=3))
    z = np.asarray(noise.normal(key, (n,)))
    assert u.min() > 0.0 and u.max() < 1.0
    # mean 1/2 and variance 1/12 within 5 standard errors
    assert abs(u.mean() - 0.5) < 5 * np.sqrt(1 / 12 / n)
    assert abs(u.var() - 1 / 12) < 5 * np.sqrt(1 / 180 / n)
    # streams of one key (and the normal stream) are uncorrelated: |r| < 5 / sqrt(n)
    for a, b in [(u, v), (u, z), (v, z)]:
        assert abs(np.corrcoef(a, b)[0, 1]) < 5 / np.sqrt(n)


def test_traced_stream_equals_static_stream():
    key = jax.random.key(3)
    traced = jax.jit(lambda k, s: noise.normal(k, (9,), stream=s))(key, 5)
    np.testing.assert_array_equal(np.asarray(traced), np.asarray(noise.normal(key, (9,), stream=5)))
    traced_u = jax.jit(lambda k, s: noise.uniform(k, (4,), stream=s))(key, 2)
    np.testing.assert_array_equal(np.asarray(traced_u), np.asarray(noise.uniform(key, (4,), stream=2)))
    assert not np.allclose(np.asarray(noise.normal(key, (9,), stream=1)), np.asarray(noise.normal(key, (9,))))


def test_fold_in_gives_distinct_deterministic_keys():
    key = jax.random.key(11)
    keys = jax.vmap(noise.fold_in, in_axes=(None, 0))(key, jnp.arange(1000))
    data = np.asarray(jax.random.key_data(keys))
    assert len({tuple(row) for row in data}) == 1000
    again = np.asarray(jax.random.key_data(noise.fold_in(key, 17)))
    np.testing.assert_array_equal(again, data[17])
    # draws from consecutive step keys are uncorrelated
    first = np.asarray(jax.vmap(lambda k: noise.uniform(k, ()))(keys))
    assert abs(np.corrcoef(first[:-1], first[1:])[0, 1]) < 5 / np.sqrt(999)


def test_stream_out_of_range_is_an_error():
    with pytest.raises(ValueError, match="stream"):
        noise.normal(jax.random.key(0), (3,), stream=70_000)
