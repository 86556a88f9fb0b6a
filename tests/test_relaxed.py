"""Gumbel-softmax / Concrete relaxations (sgmcmc.relaxed) and the temperature annealing schedule.

Statistical checks use fixed seeds and state their false-alarm rate: a chi-square or
Kolmogorov-Smirnov test is required to have p > 1e-3, so each one would fail by chance
with probability 1e-3 for a correct implementation (and, the seeds being fixed, the
outcome is the same on every run). Gradients are compared with central finite
differences in float64 inside ``jax.enable_x64(True)`` (the global setting is left alone).
"""

from __future__ import annotations

import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
import pytest
from numpyro.distributions import constraints
from scipy import integrate, stats

import sgmcmc
from sgmcmc.relaxed import (
    LogitRelaxedBernoulli,
    LogitRelaxedOneHotCategorical,
    RelaxedBernoulli,
    RelaxedOneHotCategorical,
    alr_to_simplex,
    gumbel_softmax,
    straight_through,
)
from sgmcmc.schedules import exponential_annealing

FALSE_ALARM = 1e-3
PROBS = np.array([0.1, 0.2, 0.3, 0.4])


# Distributions are pytrees: one compiled program per class and shapes serves every
# temperature and probability vector (op-by-op dispatch would compile every operation).
@functools.partial(jax.jit, static_argnums=2)
def draw(d, key, n: int):
    return d.sample(key, (n,))


@jax.jit
def log_prob(d, value):
    return d.log_prob(value)


# -- sampling ------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [0.1, 1.0, 5.0])
def test_argmax_frequencies_are_categorical(temperature):
    """Gumbel-max: argmax of a relaxed draw is Categorical(probs) at every temperature."""
    n = 20_000
    d = RelaxedOneHotCategorical(temperature, probs=PROBS)
    x = np.asarray(draw(d, jax.random.key(0), n))
    assert x.shape == (n, 4)
    np.testing.assert_allclose(x.sum(-1), 1.0, atol=1e-5)
    counts = np.bincount(x.argmax(-1), minlength=4)
    p = stats.chisquare(counts, n * PROBS).pvalue
    assert p > FALSE_ALARM, (counts, p)


def test_batched_argmax_and_bernoulli_frequencies():
    n = 20_000
    probs = np.array([[0.7, 0.2, 0.1], [0.05, 0.05, 0.9]])
    tau = np.array([0.3, 2.0], np.float32)  # one temperature per batch row
    d = RelaxedOneHotCategorical(tau, logits=np.log(probs))
    assert d.batch_shape == (2,) and d.event_shape == (3,)
    np.testing.assert_allclose(d.probs, probs, rtol=1e-6)
    x = np.asarray(draw(d, jax.random.key(1), n))
    assert x.shape == (n, 2, 3)
    for row in range(2):
        counts = np.bincount(x[:, row].argmax(-1), minlength=3)
        assert stats.chisquare(counts, n * probs[row]).pvalue > FALSE_ALARM

    # a zero probability: accepted (finite logit log(tiny)), and that category is never drawn
    zero = np.asarray(draw(RelaxedOneHotCategorical(0.5, probs=np.array([0.0, 0.4, 0.6])), jax.random.key(1), n))
    assert np.all(zero.argmax(-1) != 0) and np.all(np.isfinite(zero))

    b = RelaxedBernoulli(0.5, probs=np.array([0.2, 0.6], np.float32))
    xb = np.asarray(draw(b, jax.random.key(2), n))
    assert xb.shape == (n, 2) and np.all((xb > 0) & (xb < 1))
    for j, p in enumerate([0.2, 0.6]):
        assert stats.binomtest(int((xb[:, j] > 0.5).sum()), n, p).pvalue > FALSE_ALARM


def test_logit_coordinates_are_logistic():
    """log(x_k / x_K) = (l_k - l_K + g_k - g_K) / tau with g_k - g_K ~ Logistic(0, 1): KS tests."""
    n, tau = 20_000, 0.4
    logits = np.log(np.array([0.2, 0.3, 0.5]))
    expected = stats.logistic(loc=(logits[0] - logits[2]) / tau, scale=1 / tau)
    x = np.asarray(draw(RelaxedOneHotCategorical(tau, logits=logits), jax.random.key(3), n), np.float64)
    assert stats.kstest(np.log(x[:, 0] / x[:, 2]), expected.cdf).pvalue > FALSE_ALARM
    u = np.asarray(draw(LogitRelaxedOneHotCategorical(tau, logits=logits), jax.random.key(4), n))
    assert u.shape == (n, 2)
    assert stats.kstest(u[:, 0], expected.cdf).pvalue > FALSE_ALARM
    y = np.asarray(draw(LogitRelaxedBernoulli(tau, probs=0.3), jax.random.key(5), n))
    assert stats.kstest(y, stats.logistic(loc=math.log(0.3 / 0.7) / tau, scale=1 / tau).cdf).pvalue > FALSE_ALARM


def test_low_temperature_approaches_one_hot():
    """1 - max_k x_k shrinks with the temperature; for K = 2 its law is known exactly."""
    n, delta = 20_000, 1e-3
    probs = np.array([0.3, 0.7], np.float32)
    gaps = []
    for tau in [1.0, 0.3, 0.1, 0.02]:
        x = np.asarray(draw(RelaxedOneHotCategorical(tau, probs=probs), jax.random.key(6), n), np.float64)
        gap = 1.0 - x.max(-1)
        gaps.append(gap.mean())
        # P(max x < 1 - delta) = P(|l1 - l2 + L| < tau c), c = logit(1 - delta), L ~ Logistic(0, 1)
        c, dl = math.log((1 - delta) / delta), math.log(0.3 / 0.7)
        p_fuzzy = stats.logistic.cdf(tau * c - dl) - stats.logistic.cdf(-tau * c - dl)
        assert stats.binomtest(int((gap > delta).sum()), n, p_fuzzy).pvalue > FALSE_ALARM, tau
    assert all(a > b for a, b in itertools.pairwise(gaps)), gaps
    assert gaps[-1] < 0.01  # at tau = 0.02 the draws sit on the vertices


# -- densities -------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [0.5, 1.0, 3.0])
def test_density_integrates_to_one_two_categories(temperature):
    with jax.enable_x64(True):
        d = RelaxedOneHotCategorical(temperature, probs=jnp.array([0.3, 0.7]))
        f = jax.jit(lambda a: jnp.exp(d.log_prob(jnp.stack([a, 1.0 - a]))))
        value, error = integrate.quad(lambda a: float(f(a)), 0.0, 1.0, limit=200)
        assert abs(value - 1.0) < 1e-6 + 10 * error, (value, error)
        b = RelaxedBernoulli(temperature, probs=jnp.array(0.3))
        g = jax.jit(lambda a: jnp.exp(b.log_prob(a)))
        value, error = integrate.quad(lambda a: float(g(a)), 0.0, 1.0, limit=200)
        assert abs(value - 1.0) < 1e-6 + 10 * error, (value, error)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_density_integrates_to_one_three_categories(temperature):
    """Over the 2-simplex in the coordinates (x1, x2), x3 = 1 - x1 - x2 (adaptive 2-d quadrature)."""
    with jax.enable_x64(True):
        d = RelaxedOneHotCategorical(temperature, probs=jnp.array([0.2, 0.3, 0.5]))
        f = jax.jit(lambda a, b: jnp.exp(d.log_prob(jnp.stack([a, b, 1.0 - a - b]))))
        value, error = integrate.dblquad(lambda b, a: float(f(a, b)), 0.0, 1.0, 0.0, lambda a: 1.0 - a, epsabs=1e-7)
        assert abs(value - 1.0) < 1e-5, (value, error)


def _grid_integral(logdensity, half_width: float, step: float) -> float:
    """Trapezoid rule on a square grid of R^2 (spectrally accurate for smooth, fast-decaying integrands)."""
    u = jnp.arange(-half_width, half_width + step / 2, step)
    grid = jnp.stack(jnp.meshgrid(u, u, indexing="ij"), -1).reshape(-1, 2)
    return float(jnp.sum(jnp.exp(jax.jit(jax.vmap(logdensity))(grid))) * step**2)


@pytest.mark.parametrize("temperature", [0.05, 0.3, 1.0])
def test_low_temperature_density_integrates_to_one_in_logit_coordinates(temperature):
    """K = 3 at low temperature: the simplex density times the Jacobian prod_k x_k of u -> x, and
    the logit-space density itself, each integrate to 1 over R^2 (the density spreads like 1 / tau)."""
    with jax.enable_x64(True):
        logits = jnp.log(jnp.array([0.2, 0.3, 0.5]))
        simplex = RelaxedOneHotCategorical(temperature, logits=logits)
        logit = LogitRelaxedOneHotCategorical(temperature, logits=logits)

        def via_simplex(u):
            return simplex.log_prob(alr_to_simplex(u)) + jnp.sum(alr_to_simplex(u, log=True))

        half, step = 40.0 / temperature, 0.1 / temperature
        assert abs(_grid_integral(logit.log_prob, half, step) - 1.0) < 1e-6
        if temperature >= 0.3:  # below, simplex values underflow in float64 inside the grid
            assert abs(_grid_integral(via_simplex, half, step) - 1.0) < 1e-6


def test_densities_agree_across_forms():
    """Closed forms that must coincide: logit forms vs NumPyro's Logistic and the Jacobian;
    K = 2 categorical vs Bernoulli; the log-space density vs the textbook formula (float64)."""
    tau, p = 0.7, 0.3
    probs = np.array([0.2, 0.3, 0.5])

    @jax.jit
    def forms(y, xs):
        two = jnp.array([p, 1 - p])
        x = jax.nn.sigmoid(y)
        us = jnp.log(xs[:, :2] / xs[:, 2:])
        return {
            "logit_bernoulli": LogitRelaxedBernoulli(tau, probs=p).log_prob(y),
            "logistic": dist.Logistic(math.log(p / (1 - p)) / tau, 1 / tau).log_prob(y),
            "logit_categorical_2": LogitRelaxedOneHotCategorical(tau, probs=two).log_prob(y[:, None]),
            "categorical_2": RelaxedOneHotCategorical(tau, probs=two).log_prob(jnp.stack([x, 1 - x], -1)),
            "bernoulli": RelaxedBernoulli(tau, probs=p).log_prob(x),
            "categorical_3": RelaxedOneHotCategorical(tau, probs=probs).log_prob(xs),
            "logit_categorical_3": LogitRelaxedOneHotCategorical(tau, probs=probs).log_prob(us),
        }

    with jax.enable_x64(True):
        xs = np.asarray(draw(RelaxedOneHotCategorical(tau, probs=jnp.asarray(probs)), jax.random.key(7), 50))
        out = {k: np.asarray(v) for k, v in forms(jnp.linspace(-15.0, 15.0, 61), xs).items()}
    assert xs.dtype == np.float64
    np.testing.assert_allclose(out["logit_bernoulli"], out["logistic"], rtol=1e-12)
    np.testing.assert_allclose(out["logit_categorical_2"], out["logit_bernoulli"], rtol=1e-12)
    np.testing.assert_allclose(out["categorical_2"], out["bernoulli"], rtol=1e-9)
    # textbook density (Maddison et al. eq. 4) at interior points, K = 3
    textbook = np.log(
        math.factorial(2) * tau**2 * np.prod(probs * xs ** (-tau - 1), -1) / np.sum(probs * xs ** (-tau), -1) ** 3
    )
    np.testing.assert_allclose(out["categorical_3"], textbook, rtol=1e-10)
    np.testing.assert_allclose(out["logit_categorical_3"], textbook + np.log(xs).sum(-1), rtol=1e-10)


def test_float32_at_temperature_005_is_stable():
    """tau = 0.05 in float32: draws, log densities and gradients are finite; the log-space
    density matches float64 evaluation of the same float32 values, where the textbook
    formula overflows."""
    tau, k = 0.05, 5
    logits = jnp.log(jnp.array([0.1, 0.15, 0.2, 0.25, 0.3], jnp.float32))
    d = RelaxedOneHotCategorical(tau, logits=logits)
    x = draw(d, jax.random.key(8), 2000)
    assert x.dtype == jnp.float32 and np.all(np.isfinite(x))
    lp32 = np.asarray(log_prob(d, x))
    assert np.all(np.isfinite(lp32))
    x64 = np.maximum(np.asarray(x, np.float64), np.finfo(np.float32).tiny)
    with jax.enable_x64(True):
        lp64 = np.asarray(log_prob(RelaxedOneHotCategorical(tau, logits=np.asarray(logits, np.float64)), x64))
    np.testing.assert_allclose(lp32, lp64, rtol=2e-6, atol=1e-3)
    with np.errstate(all="ignore"):
        p32, xs = np.asarray(jax.nn.softmax(logits)), np.asarray(x)
        naive = np.log(
            math.factorial(k - 1)
            * np.float32(tau) ** (k - 1)
            * np.prod(p32 * xs ** np.float32(-tau - 1), -1)
            / np.sum(p32 * xs ** np.float32(-tau), -1) ** k
        )
    assert np.mean(~np.isfinite(naive)) > 0.5  # the case the log-space form exists for

    @jax.jit
    def grads(logits, temperature):
        def loss(logits, temperature):
            dd = RelaxedOneHotCategorical(temperature, logits=logits)
            draws = dd.rsample(jax.random.key(9), (200,))
            return jnp.sum(dd.log_prob(draws)) + jnp.sum(draws * jnp.arange(k))

        return jax.grad(loss, argnums=(0, 1))(logits, temperature)

    assert all(np.all(np.isfinite(g)) for g in grads(logits, jnp.float32(tau)))

    b = RelaxedBernoulli(tau, logits=np.float32(0.0))
    xb = np.asarray(draw(b, jax.random.key(10), 2000))
    top = np.float32(1 - np.finfo(np.float32).eps)
    lpb = np.asarray(log_prob(b, np.concatenate([xb, np.array([0.0, 1.0, top], np.float32)])))
    assert np.all((xb > 0) & (xb < 1)) and np.all(np.isfinite(lpb))
    assert np.mean(xb == top) > 0.2  # the documented clip: about 0.3 of the draws at tau = 0.05
    assert lpb[-2] == lpb[-1]  # 1.0 is evaluated at the clip 1 - eps


# -- gradients -----------------------------------------------------------------------


def _central_difference(f, x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    x = np.asarray(x, np.float64)
    out = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[i] = h
        out[i] = (f(x + e) - f(x - e)) / (2 * h)
    return out


def test_reparameterised_gradients_match_finite_differences():
    with jax.enable_x64(True):
        key = jax.random.key(11)
        weights = jnp.array([[1.0, -2.0, 0.5], [0.3, 0.2, -1.0]])

        def cat(logits, tau):
            x = RelaxedOneHotCategorical(tau, logits=logits).rsample(key, (3,))
            return jnp.sum(weights * x)

        def bern(logits, tau):
            x = RelaxedBernoulli(tau, logits=logits).rsample(key, (4,))
            return jnp.sum(jnp.sin(3 * x))

        def logp(logits, tau):  # density gradients too, at fixed values
            u = jnp.array([[0.5, -1.0], [2.0, 0.3]])
            x = alr_to_simplex(u)
            return jnp.sum(RelaxedOneHotCategorical(tau, logits=logits).log_prob(x)) + jnp.sum(
                LogitRelaxedOneHotCategorical(tau, logits=logits).log_prob(u)
            )

        cases = [
            (cat, np.array([[0.1, -0.4, 0.3], [1.0, 0.0, -1.0]]), np.array([0.7, 1.5])),
            (bern, np.array([0.4, -1.2]), np.array([0.5, 2.0])),
            (logp, np.array([[0.1, -0.4, 0.3], [1.0, 0.0, -1.0]]), np.array([0.7, 1.5])),
        ]
        for f, logits, tau in cases:
            f = jax.jit(jax.value_and_grad(f, argnums=(0, 1)))  # one program for values and gradients
            _, (g_logits, g_tau) = f(jnp.asarray(logits), jnp.asarray(tau))
            assert np.all(np.isfinite(g_logits)) and np.all(np.isfinite(g_tau))
            fd_logits = _central_difference(
                lambda v, f=f, tau=tau: float(f(jnp.asarray(v), jnp.asarray(tau))[0]), logits
            )
            fd_tau = _central_difference(
                lambda v, f=f, logits=logits: float(f(jnp.asarray(logits), jnp.asarray(v))[0]), tau
            )
            np.testing.assert_allclose(g_logits, fd_logits, rtol=1e-6, atol=1e-8)
            np.testing.assert_allclose(g_tau, fd_tau, rtol=1e-6, atol=1e-8)


def test_straight_through_is_exactly_one_hot_with_the_soft_gradient():
    key = jax.random.key(12)
    logits = jnp.array([[0.2, -0.3, 0.9, 0.0], [1.0, 1.0, -2.0, 0.5]])
    c = jax.random.normal(jax.random.key(13), (500, 2, 4))

    def objective(lg, st):
        return jnp.sum(c * RelaxedOneHotCategorical(0.7, logits=lg, straight_through=st).rsample(key, (500,)))

    @jax.jit
    def everything(logits):
        soft = RelaxedOneHotCategorical(0.7, logits=logits).sample(key, (500,))
        return {
            "hard": RelaxedOneHotCategorical(0.7, logits=logits, straight_through=True).sample(key, (500,)),
            "soft": soft,
            "functional": gumbel_softmax(key, logits, 0.7, hard=True, shape=(500, 2)),
            "function": straight_through(soft),
            "grad_hard": jax.grad(objective)(logits, True),
            "grad_soft": jax.grad(objective)(logits, False),
            "bernoulli": RelaxedBernoulli(0.4, logits=logits[0], straight_through=True).sample_with_intermediates(
                key, (500,)
            ),
        }

    out = everything(logits)
    h = np.asarray(out["hard"])
    assert np.all((h == 0.0) | (h == 1.0)) and np.all(h.sum(-1) == 1.0)
    np.testing.assert_array_equal(h.argmax(-1), np.asarray(out["soft"]).argmax(-1))
    np.testing.assert_allclose(out["grad_hard"], out["grad_soft"], rtol=1e-5)
    assert np.all(np.abs(np.asarray(out["grad_hard"])) > 0)
    np.testing.assert_array_equal(np.asarray(out["functional"]), h)
    np.testing.assert_array_equal(np.asarray(out["function"]), h)
    hb, (sb,) = out["bernoulli"]
    assert np.all((np.asarray(hb) == 0.0) | (np.asarray(hb) == 1.0))
    np.testing.assert_array_equal(np.asarray(hb) == 1.0, np.asarray(sb) > 0.5)

    # In a NumPyro model the site's log density is the Concrete density of the soft draw.
    def model():
        with numpyro.plate("n", 3):
            numpyro.sample("z", RelaxedOneHotCategorical(0.7, logits=logits[0], straight_through=True))

    @jax.jit
    def traced():
        log_joint, trace = numpyro.infer.util.log_density(numpyro.handlers.seed(model, 0), (), {}, {})
        soft_site = trace["z"]["intermediates"][0]
        expected = jnp.sum(RelaxedOneHotCategorical(0.7, logits=logits[0]).log_prob(soft_site))
        return log_joint, expected, trace["z"]["value"], soft_site

    log_joint, expected, value, soft_site = traced()
    assert value.shape == soft_site.shape == (3, 4) and np.all(np.asarray(value).sum(-1) == 1.0)
    np.testing.assert_allclose(log_joint, expected, rtol=1e-6)


# -- inside NumPyro models sampled by sgmcmc -------------------------------------------


def test_numpyro_site_density_integrates_to_one():
    """What a sampler sees for a RelaxedOneHotCategorical site is a normalised density: NumPyro's
    potential energy in the unconstrained stick-breaking coordinates, Jacobian included, which is
    what Target.from_numpyro's log density evaluates (built here without NumPyro's op-by-op
    initialisation, which costs seconds; the mixture test below goes through from_numpyro)."""
    probs = np.array([0.2, 0.3, 0.5])

    def model():
        numpyro.sample("z", RelaxedOneHotCategorical(1.0, probs=probs))

    value = _grid_integral(lambda u: -numpyro.infer.util.potential_energy(model, (), {}, {"z": u}), 40.0, 0.1)
    assert abs(value - 1.0) < 1e-3, value


# -- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: RelaxedOneHotCategorical(0.0, probs=[0.5, 0.5]), "temperature must be > 0"),
        (lambda: RelaxedOneHotCategorical(-1.0, logits=[0.0, 0.0]), "temperature must be > 0"),
        (lambda: RelaxedBernoulli(np.array([0.5, 0.0]), probs=0.5), "temperature must be > 0"),
        (lambda: RelaxedOneHotCategorical(float("nan"), probs=[0.5, 0.5]), "temperature must be finite"),
        (lambda: LogitRelaxedBernoulli(float("inf"), probs=0.5), "temperature must be finite"),
        (lambda: RelaxedOneHotCategorical(1.0, probs=[0.5, 0.6]), "probs must lie on the simplex"),
        (lambda: RelaxedOneHotCategorical(1.0, probs=[-0.1, 1.1]), "probs must lie on the simplex"),
        (lambda: LogitRelaxedOneHotCategorical(1.0, probs=[[0.5, 0.5], [0.9, 0.2]]), "probs must lie on the simplex"),
        (lambda: RelaxedOneHotCategorical(1.0, probs=[float("nan"), 0.5]), "probs must be finite"),
        (lambda: RelaxedOneHotCategorical(1.0, logits=[0.0, float("inf")]), "logits must be finite"),
        (lambda: RelaxedBernoulli(1.0, logits=float("nan")), "logits must be finite"),
        (lambda: RelaxedBernoulli(1.0, probs=1.5), r"probs must lie in \[0, 1\]"),
        (lambda: RelaxedOneHotCategorical(1.0, probs=[1.0]), "probs must have at least 2 categories"),
        (lambda: RelaxedOneHotCategorical(1.0, logits=0.0), "logits must have a last axis"),
        (lambda: RelaxedOneHotCategorical(1.0), "exactly one of probs= and logits="),
        (lambda: RelaxedBernoulli(1.0, probs=0.5, logits=0.0), "exactly one of probs= and logits="),
    ],
)
def test_bad_input_is_a_value_error_naming_the_argument(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_bad_types_and_traced_parameters():
    with pytest.raises(TypeError, match="straight_through"):
        RelaxedOneHotCategorical(1.0, probs=[0.5, 0.5], straight_through=1)
    with pytest.raises(TypeError, match="temperature"):
        RelaxedBernoulli(True, probs=0.5)
    # Traced parameters cannot be checked and are accepted (e.g. inside a model under jit).
    f = jax.jit(lambda t, p: RelaxedOneHotCategorical(t, probs=p).log_prob(jnp.array([0.3, 0.7])))
    assert np.isfinite(f(1.0, jnp.array([0.4, 0.6])))
    # A distribution is a pytree: it crosses jit and vmap.
    d = RelaxedOneHotCategorical(jnp.array([0.5, 1.0]), logits=jnp.zeros((2, 3)))
    out = jax.jit(lambda d: d.log_prob(jnp.full((2, 3), 1 / 3)))(d)
    np.testing.assert_allclose(out, d.log_prob(jnp.full((2, 3), 1 / 3)), rtol=1e-6)
    vm = jax.vmap(lambda dd: dd.log_prob(jnp.full(3, 1 / 3)))(d)
    np.testing.assert_allclose(vm, out, rtol=1e-6)


# -- temperature annealing -------------------------------------------------------------


def test_exponential_annealing():
    counts = jnp.arange(0, 20_000, 7)
    jang = exponential_annealing(1.0, 1e-4, 0.5, interval=500)  # Jang et al.'s schedule
    expected = np.maximum(0.5, np.exp(-1e-4 * (np.asarray(counts) // 500 * 500)))
    np.testing.assert_allclose(jang(counts), expected, rtol=1e-6)
    assert float(jang(10**7)) == 0.5
    for schedule, reference in [
        (jang, optax.exponential_decay(1.0, 500, math.exp(-1e-4 * 500), staircase=True, end_value=0.5)),
        (exponential_annealing(2.0, 1e-3, 0.1), optax.exponential_decay(2.0, 1, math.exp(-1e-3), end_value=0.1)),
    ]:
        np.testing.assert_allclose(schedule(counts), reference(counts), rtol=5e-5)
    np.testing.assert_allclose(jax.jit(jang)(jnp.int32(1000)), math.exp(-0.1), rtol=1e-6)
    for kwargs, name in [
        (dict(initial=0.0), "initial"),
        (dict(rate=-1.0), "rate"),
        (dict(floor=0.0), "floor"),
        (dict(initial=1.0, floor=2.0), "floor"),
        (dict(interval=0), "interval"),
    ]:
        with pytest.raises(ValueError, match=name):
            exponential_annealing(**kwargs)


# -- the mixture: exact marginalisation + NUTS vs relaxation + SGHMC --------------------------
#
# Model: w ~ Dirichlet(1, 1); mu_1 < mu_2 with density prod_k N(mu_k | 0, 5^2) on the ordered
# set (no label switching); x_i ~ sum_k w_k N(mu_k, 1). (a) is written by hand on the
# unconstrained scale (logit w_1, mu_1, log(mu_2 - mu_1)) with the assignments summed out per
# example (logsumexp); its three-parameter posterior is integrated on a grid (no Monte Carlo
# error, and no NUTS program to compile). (b) is the NumPyro model `relaxed_mixture` with
# relaxed assignments; the test samples its log density written by hand on NumPyro's own
# unconstrained scale, checked equal to NumPyro's potential energy: Target.from_numpyro would
# spend about 8 s in NumPyro's op-by-op initialisation (the notebook goes through it).

K = 2


def _mixture_data():
    rng = np.random.default_rng(1)
    comp = rng.choice(K, size=150, p=[0.3, 0.7])
    return (np.array([-2.0, 2.0])[comp] + rng.normal(size=150)).astype(np.float32)


def _exact_parameters(position):
    w1 = jax.nn.sigmoid(position["logit_w"])
    mu = jnp.stack([position["mu1"], position["mu1"] + jnp.exp(position["log_gap"])], -1)
    return jnp.stack([w1, 1.0 - w1], -1), mu


def _exact_logprior(position):
    _, mu = _exact_parameters(position)
    log_jacobian = jax.nn.log_sigmoid(position["logit_w"]) + jax.nn.log_sigmoid(-position["logit_w"])
    return jnp.sum(dist.Normal(0.0, 5.0).log_prob(mu)) + log_jacobian + position["log_gap"]


def _exact_loglik(position, batch):
    w, mu = _exact_parameters(position)
    return jax.nn.logsumexp(jnp.log(w) + dist.Normal(mu, 1.0).log_prob(batch["x"][:, None]), axis=-1)


def relaxed_mixture(x, temperatures):
    """One independent copy of the relaxed model per temperature (one program samples all).

    z_i = alr_to_simplex(s_i / tau) with s_i ~ LogitRelaxedOneHotCategorical(1, w) is
    RelaxedOneHotCategorical(tau, w); the likelihood is sum_k z_ik log N(x_i | mu_k, 1),
    which is the mixture's when z_i is one-hot.
    """
    with numpyro.plate("temperature", temperatures.shape[0]):
        w = numpyro.sample("w", dist.Dirichlet(jnp.ones(K)))
        mu = numpyro.sample("mu", dist.ImproperUniform(constraints.ordered_vector, (), (K,)))
        numpyro.factor("mu_prior", dist.Normal(0.0, 5.0).log_prob(mu).sum(-1))
        with numpyro.plate("data", x.shape[0], dim=-2):
            s = numpyro.sample("s", LogitRelaxedOneHotCategorical(1.0, probs=w))
    z = alr_to_simplex(s / temperatures[:, None])
    numpyro.factor("x", jnp.sum(z * dist.Normal(mu, 1.0).log_prob(x[:, None, None])))


def _relaxed_logdensity(position, x, temperatures):
    """``relaxed_mixture``'s log density on NumPyro's unconstrained scale: ``w`` (T, 1) is
    logit w_1 (stick-breaking), ``mu`` (T, 2) is (mu_1, log(mu_2 - mu_1)) (ordered transform),
    ``s`` (N, T, 1) is unconstrained; the Jacobians are those of ``_exact_logprior``."""
    replica = {"logit_w": position["w"][:, 0], "mu1": position["mu"][:, 0], "log_gap": position["mu"][:, 1]}
    w, mu = jax.vmap(_exact_parameters)(replica)  # (T, 2) each
    s = position["s"]
    z = alr_to_simplex(s / temperatures[:, None])  # (N, T, 2)
    return (
        jnp.sum(jax.vmap(_exact_logprior)(replica))
        + jnp.sum(LogitRelaxedOneHotCategorical(1.0, probs=w).log_prob(s))
        + jnp.sum(z * dist.Normal(mu, 1.0).log_prob(x[:, None, None]))
    )


def _marginalised_summaries(x, num_coarse: int = 40, num_fine: int = 48):
    """Posterior means and sds of (mu_1, mu_2, w_1) under the marginalised model (a), by quadrature.

    The density ``exp(_exact_logprior + sum _exact_loglik)`` on the unconstrained scale (its
    Jacobians included) is evaluated in float64 on a coarse grid over a wide box, then on a
    ``num_fine``^3 grid over the cells within 40 nats of the coarse maximum, one coarse cell
    added on each side; moments are weighted sums over the fine grid. Its step is under half a
    posterior sd in each unconstrained coordinate, ample for the rectangle rule on a smooth,
    fast-decaying density: 48 and 96 points per axis give means and sds that agree within
    1e-11 sd, against the MCSE of 0.02 sd of the 4 x 1000 NUTS draws this replaces. Asserts
    that the mass is inside both grids.
    """
    names = ("logit_w", "mu1", "log_gap")
    with jax.enable_x64(True):
        data = {"x": jnp.asarray(x, jnp.float64)}

        def logpost(theta):
            position = dict(zip(names, theta))
            return _exact_logprior(position) + jnp.sum(_exact_loglik(position, data))

        on_points = jax.jit(lambda points: jax.lax.map(logpost, points, batch_size=4096))

        def on_grid(axes):
            points = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
            return points, np.asarray(on_points(jnp.asarray(points))).reshape([len(a) for a in axes])

        coarse = [np.linspace(lo, hi, num_coarse) for lo, hi in [(-4.0, 4.0), (-6.0, 6.0), (-3.0, 3.0)]]
        _, lp = on_grid(coarse)
        inside = lp > lp.max() - 40.0
        fine = []
        for i, axis in enumerate(coarse):
            hit = np.flatnonzero(inside.any(axis=tuple(j for j in range(3) if j != i)))
            assert 0 < hit[0] and hit[-1] < len(axis) - 1, f"the posterior reaches the coarse grid's edge in {names[i]}"
            fine.append(np.linspace(axis[hit[0] - 1], axis[hit[-1] + 1], num_fine))
        points, lp = on_grid(fine)
        weight = np.exp(lp - lp.max())
        weight /= weight.sum()
        for i in range(3):
            assert weight.take([0, -1], axis=i).sum() < 1e-12, f"mass on the fine grid's edge in {names[i]}"
        w, mu = _exact_parameters({k: jnp.asarray(points[:, i]) for i, k in enumerate(names)})
        draws = [np.asarray(mu[:, 0]), np.asarray(mu[:, 1]), np.asarray(w[:, 0])]
    p = weight.reshape(-1)
    mean = np.array([p @ d for d in draws])
    sd = np.sqrt(np.array([p @ (d - m) ** 2 for d, m in zip(draws, mean)]))
    return mean, sd


def _summaries(mu, w):
    """Means and sds of mu_1, mu_2, w_1 from draws (chain, draw, ...)."""
    draws = [mu[..., 0], mu[..., 1], w[..., 0]]
    return np.array([d.mean() for d in draws]), np.array([d.std() for d in draws])


@pytest.mark.slow
def test_relaxed_mixture_matches_the_marginalised_one_at_low_temperature():
    """(a) assignments summed out, integrated by quadrature; (b) assignments relaxed, SGHMC, at tau = 0.1 and 1.

    Tolerance at tau = 0.1: |mean_b - mean_a| < 1.0 sd_a and sd_b / sd_a in [0.7, 1.4]. The
    relaxation itself moves this posterior: NUTS on the relaxed model with each latent
    integrated out by quadrature (benchmarks/relaxed_mixture.py) puts the means of
    (mu_1, mu_2, w_1) at (+0.25, -0.21, -0.57) sd_a from (a) at tau = 0.1, and at
    (+4.5, -4.3, -4.7) sd_a at tau = 1. The SGHMC run's ESS for w_1 is about 90 (MCSE about
    0.1 sd), so 1.0 sd leaves more than 3 MCSE above the relaxation's shift; SGHMC's own
    discretisation error at this step size inflates the sd of mu_2 by 10-15% (measured there),
    well inside [0.7, 1.4]. At tau = 1 the discrepancy must exceed 2.5 sd, which a comparison
    blind to the temperature (or a relaxed density with a wrong Jacobian) fails.
    """
    x = _mixture_data()
    mean_a, sd_a = _marginalised_summaries(x)

    taus = np.array([1.0, 0.1], np.float32)
    # latents start at each point's log-responsibility ratio under the starting means
    mu0 = np.array([-1.5, 1.5], np.float32)
    ratio = -0.5 * (x[:, None] - mu0) ** 2
    s0 = np.clip(ratio[:, :1] - ratio[:, 1:], -3.0, 3.0)
    init = {
        "w": np.zeros((2, 1), np.float32),  # w = (1/2, 1/2)
        "mu": np.tile(np.array([-1.5, np.log(3.0)], np.float32), (2, 1)),  # mu = (-1.5, 1.5)
        "s": np.broadcast_to(s0[:, None, :], (x.shape[0], 2, 1)).astype(np.float32),
    }

    @jax.jit
    def both(position):
        numpyro_value = -numpyro.infer.util.potential_energy(relaxed_mixture, (x, taus), {}, position)
        return numpyro_value, _relaxed_logdensity(position, x, taus)

    other = jax.tree.map(
        lambda v, k: v + jax.random.normal(k, v.shape), init, {k: jax.random.key(i) for i, k in enumerate(init)}
    )
    for position in [init, other]:
        numpyro_value, by_hand = both(position)
        np.testing.assert_allclose(by_hand, numpyro_value, rtol=1e-5)

    relaxed = sgmcmc.Target.from_logdensity(lambda p: _relaxed_logdensity(p, x, taus), init)
    b = sgmcmc.sample(
        sgmcmc.sghmc(relaxed, 5e-4, friction=0.1),
        num_samples=1000,
        thin=20,
        num_warmup=5000,
        num_chains=4,
        seed=1,
        progress=False,
    )
    assert b.num_divergent == 0
    z, sd_ratio = [], []
    w_b = jax.nn.sigmoid(b.samples["w"][..., 0])  # (chain, draw, T)
    mu_b = np.stack([b.samples["mu"][..., 0], b.samples["mu"][..., 0] + np.exp(b.samples["mu"][..., 1])], -1)
    for j in range(len(taus)):
        mean_b, sd_b = _summaries(mu_b[:, :, j], np.asarray(w_b)[:, :, j, None])
        z.append((mean_b - mean_a) / sd_a)
        sd_ratio.append(sd_b / sd_a)
    warm, cold = z
    print("z(mu_1, mu_2, w_1) at tau = 1, 0.1:", z, "sd ratios:", sd_ratio)
    assert np.all(np.abs(cold) < 1.0), (cold, sd_ratio[1])
    assert np.all((sd_ratio[1] > 0.7) & (sd_ratio[1] < 1.4)), sd_ratio[1]
    assert np.max(np.abs(warm)) > 2.5, warm
    assert np.max(np.abs(warm)) > np.max(np.abs(cold))
