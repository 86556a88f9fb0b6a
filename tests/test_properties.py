"""Property-based bad-input tests across the public API (hypothesis).

Every generated case must end in a correct run (finite draws of the right
structure, shapes and dtype) or in a ``ValueError`` / ``TypeError`` whose
message names the offending argument: never a NaN draw, a hang, or an error
raised from inside JAX/XLA. Cases: random pytree positions (nested dicts,
lists, tuples; 0-3 dimensional leaves, zero-size leaves; float32, float64,
integer leaves), non-finite entries, zero-size data, batch sizes around N,
step-size and temperature schedules that turn non-positive or non-finite
mid-run, and malformed driver settings.

``derandomize=True`` and small ``max_examples`` keep CI reproducible and cheap
(each run compiles a program); float64 cases run inside ``jax.enable_x64``.
"""

from __future__ import annotations

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import sgmcmc

_COMMON = dict(deadline=None, derandomize=True, suppress_health_check=list(HealthCheck), database=None)
CHEAP = settings(max_examples=15, **_COMMON)
COSTLY = settings(max_examples=3, **_COMMON)

# -- strategies -------------------------------------------------------------------------

shapes = st.lists(st.integers(0, 3), min_size=0, max_size=3).map(tuple)
dtypes = st.sampled_from(["float32", "float64", "int32"])


@st.composite
def leaves(draw, allow_non_finite=True):
    shape = draw(shapes)
    x = np.zeros(shape, draw(dtypes))
    if x.dtype.kind == "f":
        x[...] = draw(st.floats(-2, 2))
        if allow_non_finite and x.size and draw(st.booleans()):
            flat = x.reshape(-1)
            flat[draw(st.integers(0, x.size - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    return x


def pytrees(leaf):
    return st.recursive(
        leaf,
        lambda children: st.one_of(
            st.dictionaries(st.sampled_from(["a", "b", "w", "bias"]), children, min_size=1, max_size=3),
            st.lists(children, min_size=1, max_size=3),
            st.lists(children, min_size=1, max_size=2).map(tuple),
        ),
        max_leaves=4,
    )


def quadratic(p):
    return -0.5 * sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(p))


def has_non_finite(tree) -> bool:
    return any(x.dtype.kind == "f" and not np.all(np.isfinite(x)) for x in jax.tree.leaves(tree))


def total_size(tree) -> int:
    return sum(x.size for x in jax.tree.leaves(tree))


# -- targets over random pytrees ----------------------------------------------------------


@CHEAP
@given(position=pytrees(leaves()), x64=st.booleans())
def test_target_from_random_pytree_is_valid_or_a_clear_error(position, x64):
    with jax.enable_x64(x64):
        if has_non_finite(position):
            with pytest.raises(ValueError, match="initial position contains non-finite"):
                sgmcmc.Target.from_logdensity(quadratic, position)
            return
        if total_size(position) == 0:
            with pytest.raises(ValueError, match="initial position has no entries"):
                sgmcmc.Target.from_logdensity(quadratic, position)
            return
        target = sgmcmc.Target.from_logdensity(quadratic, position)
        got = target.initial_position
        assert jax.tree.structure(got) == jax.tree.structure(position)
        assert [x.shape for x in jax.tree.leaves(got)] == [x.shape for x in jax.tree.leaves(position)]
        # One floating dtype for all leaves (float64 only where x64 is on and a leaf asked for it).
        kinds = {x.dtype for x in jax.tree.leaves(got)}
        assert len(kinds) == 1 and next(iter(kinds)).kind == "f"
        assert target.logdensity(got).dtype == next(iter(kinds))


def data_target(position, num_data=6):
    """A data-driven target over any pytree: y_i ~ N(sum of every leaf's mean, 1)."""

    def center(p):
        return sum(jnp.mean(x) for x in jax.tree.leaves(p) if x.size)

    y = np.linspace(-1, 1, num_data).astype(np.float32)
    return sgmcmc.Target.from_data(
        quadratic, lambda p, batch: -0.5 * (batch["y"] - center(p)) ** 2, {"y": y}, position, name="pytree"
    )


#: Every registered factory with settings that make a short run meaningful.
BUILDERS = {
    "sgld": lambda t: sgmcmc.sgld(t, 1e-2, batch_size=3),
    "psgld": lambda t: sgmcmc.psgld(t, 1e-3, batch_size=3),
    "sghmc": lambda t: sgmcmc.sghmc(t, 1e-2, batch_size=3),
    "sgnht": lambda t: sgmcmc.sgnht(t, 1e-2, batch_size=3),
    "baoab": lambda t: sgmcmc.baoab(t, 1e-2),
    "sgld_cv": lambda t: sgmcmc.sgld_cv(t, 1e-2, batch_size=3),
    "mala": lambda t: sgmcmc.mala(t, 0.3),
    "hmc": lambda t: sgmcmc.hmc(t, 0.3, 3),
    "nuts": lambda t: sgmcmc.nuts(t, 0.3, max_tree_depth=3),
    "chees_hmc": lambda t: sgmcmc.chees_hmc(t, 0.3, 1.0),
    "constant_sgd": lambda t: sgmcmc.constant_sgd(t, 1e-2, batch_size=3),
    "swag": lambda t: sgmcmc.swag(t, 1e-2, batch_size=3, max_rank=2),
    "flow_mh": lambda t: sgmcmc.flow_mh(t, 0.3, adapt_flow=False),
    "neutra": lambda t: sgmcmc.neutra(t, 0.3, kernel="hmc", num_integration_steps=3, fit_flow=False),
    # Learned kernels, untrained (random output layers: slow, never wrong).
    "l2hmc": lambda t: sgmcmc.l2hmc(t, step_size=0.1, num_leapfrog_steps=3, hidden=(4,)),
    "a_nice_mc": lambda t: sgmcmc.a_nice_mc(t),
}


def test_every_registered_sampler_has_a_builder():
    assert set(BUILDERS) >= {n for n in sgmcmc.REGISTRY if n in sgmcmc.__all__}, sorted(sgmcmc.REGISTRY)


#: One or two per family (the families share their pytree handling); every sampler runs
#: on a pytree position in tests/test_contract.py.
RUN_ON_PYTREES = ["sgld", "sghmc", "baoab", "mala", "chees_hmc", "constant_sgd"]


@COSTLY
@example(position={"w": np.ones((2, 3), np.float32), "b": [np.zeros(2), np.zeros((), np.int32)]}, name="mala", x64=True)
@given(
    position=pytrees(leaves(allow_non_finite=False)).filter(lambda p: total_size(p) > 0),
    name=st.sampled_from(RUN_ON_PYTREES),
    x64=st.booleans(),
)
def test_any_sampler_runs_on_a_random_pytree(position, name, x64):
    with jax.enable_x64(x64), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # divergences are reported, not raised
        target = data_target(position)
        sampler = BUILDERS[name](target)
        warmup = 4 if sampler.warmup is not None else sampler.min_warmup  # burn-in would compile a second program
        result = sgmcmc.sample(sampler, num_samples=3, num_warmup=warmup, num_chains=2, seed=0, progress=False)
    dtype = jax.tree.leaves(target.initial_position)[0].dtype
    for draw, ref in zip(jax.tree.leaves(result.position), jax.tree.leaves(target.initial_position)):
        assert draw.shape == (2, 3, *ref.shape) and draw.dtype == dtype
        assert np.all(np.isfinite(draw)), f"{name}: non-finite draw"
    assert jax.tree.structure(result.position) == jax.tree.structure(position)


# -- data: zero-size, non-finite, batch sizes around N ------------------------------------


def logprior(p):
    return -0.5 * jnp.sum(p**2)


def loglik(p, batch):
    return -0.5 * (batch["y"] - batch["x"] @ p) ** 2


@CHEAP
@given(num_data=st.integers(0, 5), bad=st.sampled_from([None, np.nan, np.inf]))
def test_zero_size_and_non_finite_data(num_data, bad):
    x = np.ones((num_data, 2), np.float32)
    y = np.zeros(num_data, np.float32)
    if bad is not None and num_data:
        y[num_data // 2] = bad
    if num_data == 0:
        with pytest.raises(ValueError, match="data has zero examples"):
            sgmcmc.Target.from_data(logprior, loglik, {"x": x, "y": y}, jnp.zeros(2))
    elif bad is not None:
        with pytest.raises(ValueError, match=r"data.*non-finite"):
            sgmcmc.Target.from_data(logprior, loglik, {"x": x, "y": y}, jnp.zeros(2))
    else:
        target = sgmcmc.Target.from_data(logprior, loglik, {"x": x, "y": y}, jnp.zeros(2))
        assert target.num_data == num_data


SG = ["sgld", "psgld", "sghmc", "sgnht", "baoab", "sgld_cv", "constant_sgd", "swag"]


@settings(max_examples=6, **_COMMON)
@given(
    name=st.sampled_from(SG),
    num_data=st.integers(1, 6),
    offset=st.sampled_from([-1, 0, 1]),
    other=st.sampled_from([None, 0, -1, 2.5, True, "4"]),
    use_other=st.booleans(),
)
def test_batch_sizes_around_n(name, num_data, offset, other, use_other):
    rng = np.random.default_rng(num_data)
    data = {"x": rng.normal(size=(num_data, 2)).astype(np.float32), "y": rng.normal(size=num_data).astype(np.float32)}
    target = sgmcmc.Target.from_data(logprior, loglik, data, jnp.zeros(2))
    batch_size = other if use_other else num_data + offset
    kwargs = {"learning_rate": 1e-2} if name in ("constant_sgd", "swag") else {"step_size": 1e-2}
    if name == "swag":
        kwargs["max_rank"] = 2
    valid = batch_size is None or (
        isinstance(batch_size, int) and not isinstance(batch_size, bool) and 1 <= batch_size <= num_data
    )
    if name == "sgld_cv" and batch_size is None:
        valid = False  # sgld_cv needs a minibatch
    if not valid:
        with pytest.raises((ValueError, TypeError), match="batch_size"):
            sgmcmc.REGISTRY[name](target, batch_size=batch_size, **kwargs)
        return
    sampler = sgmcmc.REGISTRY[name](target, batch_size=batch_size, **kwargs)
    # One eager step (no compilation): a finite state, whatever the batch size.
    state = sampler.init(target.initial_position)
    state, info = sampler.step(jax.random.key(0), state)
    assert np.all(np.isfinite(np.asarray(state.position))) and not bool(info.is_divergent)


# -- schedules that turn non-positive or non-finite mid-run --------------------------------


@COSTLY
@example(name="sghmc", start=5, length=20, bad=-0.5, which="temperature")  # was run cold, silently
@example(name="sghmc", start=5, length=3, bad=-1e-2, which="step_size")  # ran away, finite
@example(name="nuts", start=3, length=4, bad=math.inf, which="step_size")
@given(
    name=st.sampled_from(["sgld", "sghmc", "sgnht", "baoab", "psgld", "mala", "hmc", "nuts"]),
    start=st.integers(2, 30),
    length=st.integers(1, 10),
    bad=st.sampled_from([-1e-2, -1.0, math.nan, math.inf, -math.inf]),
    which=st.sampled_from(["step_size", "temperature"]),
)
def test_schedule_turning_bad_mid_run_is_contained(name, start, length, bad, which):
    """A schedule passes the build-time check (counts 0, 1, 1000) but is bad for steps start..start+length-1."""
    target = sgmcmc.Target.from_logdensity(quadratic, {"x": jnp.zeros(2)})
    sg = name in ("sgld", "sghmc", "sgnht", "baoab", "psgld")
    good = 1e-2 if sg else 0.3
    window = lambda c: (c >= start) & (c < start + length)  # noqa: E731
    if which == "temperature":
        if not sg:
            return
        schedule = lambda c: jnp.where(window(c), bad, 1.0)  # noqa: E731
        sampler = sgmcmc.REGISTRY[name](target, step_size=good, temperature=schedule)
    else:
        schedule = lambda c: jnp.where(window(c), bad, good)  # noqa: E731
        kwargs = {"adapt": False} if name in ("mala", "hmc") else {}
        sampler = sgmcmc.REGISTRY[name](target, step_size=schedule, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = sgmcmc.sample(sampler, num_samples=45, num_chains=1, seed=0, progress=False)
    x = np.asarray(result.position["x"])
    assert np.all(np.isfinite(x)), f"{name}: non-finite draws from a bad {which} schedule"
    assert np.all(np.abs(x) < 50), f"{name}: draws ran away ({np.abs(x).max():.3g})"
    div = np.asarray(result.info.is_divergent[0])
    steps = np.arange(45)
    # Bad steps are flagged (a negative temperature too, which SGHMC used to clip to 0),
    assert div[window(steps)].all(), f"{name}: bad {which} not reported as divergent"
    # and the state is kept through them: every bad step repeats the previous draw.
    bad_steps = steps[window(steps) & (steps > 0)]
    np.testing.assert_array_equal(x[0, bad_steps], x[0, bad_steps - 1])


# -- driver settings -------------------------------------------------------------------------

junk = st.sampled_from([0, -1, 2.5, True, None, "3", np.float32(2.0)])


@pytest.fixture(scope="module")
def small_sampler():
    target = sgmcmc.Target.from_logdensity(quadratic, {"x": jnp.zeros(2)})
    return sgmcmc.sgld(target, 0.05)


@CHEAP
@given(
    overrides=st.dictionaries(
        st.sampled_from(["num_samples", "num_warmup", "num_chains", "thin", "chunk_size"]), junk, max_size=2
    ),
    seed=st.one_of(st.integers(0, 3), st.sampled_from([-1, 1.5, "0", None, True])),
)
def test_driver_settings_run_or_name_the_argument(small_sampler, overrides, seed):
    kwargs = {"num_samples": 4, "num_warmup": 2, "num_chains": 2, "thin": 1, "chunk_size": 3, **overrides}

    def ok(name, value):
        minimum = 0 if name == "num_warmup" else 1
        return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= minimum

    bad = [name for name, value in kwargs.items() if not ok(name, value)]
    seed_ok = isinstance(seed, int) and not isinstance(seed, bool)
    if bad:
        with pytest.raises((TypeError, ValueError), match="|".join(bad)):
            sgmcmc.sample(small_sampler, seed=0, progress=False, **kwargs)
        return
    if not seed_ok:
        with pytest.raises((TypeError, ValueError), match="seed"):
            sgmcmc.sample(small_sampler, seed=seed, progress=False, **kwargs)
        return
    result = sgmcmc.sample(small_sampler, seed=seed, progress=False, **kwargs)
    assert result.position["x"].shape == (kwargs["num_chains"], kwargs["num_samples"], 2)
    assert np.all(np.isfinite(result.position["x"]))
