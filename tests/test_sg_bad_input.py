"""The stochastic-gradient family: clear errors for bad settings, non-finite gradients contained.

Errors must come before the driver compiles anything; a non-finite gradient met while
sampling is reported in ``info.is_divergent`` and the state keeps its last finite values
(every float field: position, momentum, running averages, thermostat). Also: the compiled
step has no host callback.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sgmcmc
from sgmcmc.run import TRACE_COUNTS

SG_FACTORIES = {
    "sgld": sgmcmc.sgld,
    "psgld": sgmcmc.psgld,
    "sghmc": sgmcmc.sghmc,
    "sgnht": sgmcmc.sgnht,
    "baoab": sgmcmc.baoab,
}


def quadratic_target():
    return sgmcmc.Target.from_logdensity(lambda p: -0.5 * jnp.sum(p["x"] ** 2), {"x": jnp.zeros(3)})


@jax.custom_jvp
def _poison(theta0, flag):
    """0 in value; its derivative in theta0 is inf for the rows where ``flag`` is 1 (and 0 elsewhere)."""
    return jnp.zeros_like(flag)


@_poison.defjvp
def _poison_jvp(primals, tangents):
    _theta0, flag = primals
    return jnp.zeros_like(flag), jnp.where(flag > 0, jnp.inf, 0.0) * tangents[0]


def data_target(num_data: int = 20, bad_row: bool = False):
    """y_i ~ N(x_i . w, 1): a data-driven target.

    With ``bad_row``, example 3's log-likelihood has a finite value but an infinite
    gradient, so every minibatch that draws it gives a non-finite gradient estimate.
    """
    rng = np.random.default_rng(0)
    x = rng.normal(size=(num_data, 2)).astype(np.float32)
    y = rng.normal(size=num_data).astype(np.float32)
    flag = np.zeros(num_data, np.float32)
    if bad_row:
        flag[3] = 1.0

    def loglik(p, batch):
        return -0.5 * (batch["y"] - batch["x"] @ p) ** 2 + _poison(p[0], batch["flag"])

    data = {"x": x, "y": y, "flag": flag}
    return sgmcmc.Target.from_data(lambda p: -0.5 * jnp.sum(p**2), loglik, data, jnp.zeros(2), name="data")


def make(name, target, **kwargs):
    if name == "sgld_cv":
        kwargs.setdefault("batch_size", 5)
        return sgmcmc.sgld_cv(target, **kwargs)
    return sgmcmc.REGISTRY[name](target, **kwargs)


ALL = [*SG_FACTORIES, "sgld_cv"]


@pytest.fixture
def no_compilation():
    before = dict(TRACE_COUNTS)
    yield
    assert dict(TRACE_COUNTS) == before


@pytest.mark.usefixtures("no_compilation")
@pytest.mark.parametrize("name", ALL)
def test_bad_step_size_and_temperature(name):
    target = data_target()
    for step_size in (0.0, -0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="step_size"):
            make(name, target, step_size=step_size)
    with pytest.raises(ValueError, match="step_size"):
        make(name, target, step_size=lambda c: 0.1 - 0.001 * c)  # negative at count 1000
    for temperature in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="temperature"):
            make(name, target, step_size=0.1, temperature=temperature)
    with pytest.raises(ValueError, match="temperature"):
        make(name, target, step_size=0.1, temperature=lambda c: jnp.where(c > 0, -1.0, 1.0))
    with pytest.raises(TypeError, match="temperature"):
        make(name, target, step_size=0.1, temperature="hot")


@pytest.mark.usefixtures("no_compilation")
@pytest.mark.parametrize("name", ALL)
def test_bad_batch_size(name):
    target = data_target(num_data=20)
    for batch_size in (21, 0, -3, 2.5):
        with pytest.raises(ValueError, match="batch_size"):
            make(name, target, step_size=0.1, batch_size=batch_size)
    if name != "sgld_cv":
        with pytest.raises(ValueError, match="per-example likelihood"):
            make(name, quadratic_target(), step_size=0.1, batch_size=2)


@pytest.mark.usefixtures("no_compilation")
def test_bad_family_settings():
    target, data = quadratic_target(), data_target()
    bad = [
        (sgmcmc.sghmc, {"friction": 0.0}, "friction"),
        (sgmcmc.sghmc, {"friction": 1.5}, "friction"),
        (sgmcmc.sghmc, {"friction": float("nan")}, "friction"),
        (sgmcmc.sghmc, {"gradient_noise": -1.0}, "gradient_noise"),
        (sgmcmc.sgnht, {"diffusion": 0.0}, "diffusion"),
        (sgmcmc.sgnht, {"diffusion": 2.0}, "diffusion"),
        (sgmcmc.baoab, {"friction": 0.0}, "friction"),
        (sgmcmc.baoab, {"friction": -1.0}, "friction"),
        (sgmcmc.psgld, {"decay": 1.0}, "decay"),
        (sgmcmc.psgld, {"decay": -0.1}, "decay"),
        (sgmcmc.psgld, {"eps": 0.0}, "eps"),
        (sgmcmc.psgld, {"freeze_after": 0}, "freeze_after"),
        (sgmcmc.psgld, {"freeze_after": 2.5}, "freeze_after"),
    ]
    for factory, kwargs, match in bad:
        with pytest.raises((ValueError, TypeError), match=match):
            factory(target, 0.1, **kwargs)
    with pytest.raises(ValueError, match="refresh_every"):
        sgmcmc.sgld_cv(data, 0.1, batch_size=5, refresh_every=0)
    with pytest.raises(ValueError, match="chunk_size"):
        sgmcmc.sgld_cv(data, 0.1, batch_size=5, chunk_size=0)
    with pytest.raises(ValueError, match="per-example likelihood"):
        sgmcmc.sgld_cv(target, 0.1, batch_size=1)
    with pytest.raises(ValueError, match="shape"):
        sgmcmc.sgld_cv(data, 0.1, batch_size=5, centre=jnp.zeros(3))


def test_batch_with_mismatched_leading_axes():
    target = data_target()
    sampler = sgmcmc.sgld(target, 0.1, batch_size=5)
    state = sampler.init(target.initial_position)
    batch = {"x": jnp.ones((5, 2)), "y": jnp.ones(4)}
    with pytest.raises(ValueError, match="same leading axis"):
        sampler.step(jax.random.key(0), state, batch)


def _nan_region(p):
    x = p["x"]
    return jnp.where(x[0] > 1.5, jnp.nan, -0.5 * jnp.sum(x**2))


@pytest.mark.parametrize("name", [*SG_FACTORIES, "psgld_corrected"])
def test_non_finite_gradient_is_reported_and_the_state_kept(name):
    """A step started where the density (and so the gradient) is NaN is flagged and changes nothing."""
    target = sgmcmc.Target.from_logdensity(_nan_region, {"x": jnp.zeros(2)})
    if name == "psgld_corrected":
        sampler = sgmcmc.psgld(target, 0.1, correction=True)
    else:
        sampler = SG_FACTORIES[name](target, 0.1)
    state = sampler.init({"x": jnp.array([2.0, 0.0])})
    new, info = jax.jit(sampler.step)(jax.random.key(0), state)
    assert bool(info.is_divergent)
    assert int(new.count) == int(state.count) + 1
    for field in state._fields:
        if field in ("count", "step_size"):
            continue
        for a, b in zip(jax.tree.leaves(getattr(new, field)), jax.tree.leaves(getattr(state, field))):
            np.testing.assert_array_equal(a, b, err_msg=f"{name}: {field} changed by a rejected step")


@pytest.mark.parametrize("name", ALL)
def test_bad_example_in_a_minibatch_is_contained(name):
    """An example with an infinite gradient: steps whose minibatch holds it are divergent, the rest go on."""
    target = data_target(num_data=20, bad_row=True)
    kwargs = {"step_size": 1e-3, "batch_size": 5}
    if name == "sgld_cv":
        # The centre's full-data gradient includes the bad row: refused up front.
        kwargs["centre"] = jnp.zeros(2)
        with pytest.raises(ValueError, match="not finite"):
            make(name, target, **kwargs)
        return
    sampler = make(name, target, **kwargs)
    with pytest.warns(RuntimeWarning, match="divergent"):
        result = sgmcmc.sample(sampler, num_samples=200, num_chains=2, seed=0, progress=False)
    draws = np.asarray(result.samples)
    div = np.asarray(result.info.is_divergent)
    assert np.all(np.isfinite(draws))
    # P(a batch of 5 avoids example 3) = (19/20)^5 = 0.77: both kinds of step occur.
    assert 0.1 < div.mean() < 0.4, div.mean()
    c, t = np.argwhere(div[:, 1:])[0]
    np.testing.assert_array_equal(draws[c, t + 1], draws[c, t])


@pytest.mark.parametrize("name", ALL)
def test_step_has_no_host_callback(name):
    """Minibatch indices, noise and the update are all inside the compiled step: no callbacks."""
    target = data_target()
    sampler = make(name, target, step_size=1e-3, batch_size=5)
    state = sampler.init(target.initial_position)
    text = str(jax.make_jaxpr(sampler.step)(jax.random.key(0), state))
    for primitive in ("callback", "infeed", "outfeed"):
        assert primitive not in text, f"{name}: {primitive} in the step"
    assert "gather" in text  # the minibatch is gathered from the device-resident data
