"""The nine posteriordb reference posteriors as NumPyro models, with a registry.

Each model follows the ``model.md`` of its posterior in ``../shared/posteriordb``
(written from posteriordb's Stan programs): the same parameters, supports,
priors (including improper flat ones where the Stan program states none) and
likelihood, so its posterior is the one posteriordb's reference draws come
from. Quantities reported by posteriordb that are not sampled directly are
``numpyro.deterministic`` sites, so they come back in ``result.samples``.

``POSTERIORS`` maps a posteriordb posterior name to a :class:`Posterior`:
the model, how to turn the posterior's ``data.json`` into model arguments,
how to turn sampled values into posteriordb's reference columns, and the
sampler settings the test suite uses (precision, mass matrix, start, run
length). The data live in ``tests/data/posteriordb/<name>/data.json`` and the
reference summaries in ``tests/data/posteriordb_summaries.json``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import pathlib
from collections.abc import Callable
from typing import ClassVar

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax import lax
from numpyro.distributions import constraints
from numpyro.infer import init_to_uniform

DATA = pathlib.Path(__file__).with_name("data")

__all__ = [
    "POSTERIORS",
    "Posterior",
    "load_data",
    "load_reference",
    "reference_columns",
]


# -- helpers -------------------------------------------------------------------


def _flat(shape=()) -> dist.Distribution:
    """Improper flat prior on R^shape (a Stan parameter with no prior statement)."""
    return dist.ImproperUniform(constraints.real, (), tuple(shape))


def _flat_positive() -> dist.Distribution:
    """Improper flat prior on (0, inf), flat in the value itself (not in its log)."""
    return dist.ImproperUniform(constraints.positive, (), ())


class OrderedNormal(dist.Distribution):
    """iid Normal(loc, scale) of ``size`` coordinates restricted to increasing order.

    The density is ``size!`` times the product of normal densities on
    ``{x_1 < ... < x_size}``: the distribution of sorted iid normal draws.
    """

    arg_constraints: ClassVar[dict] = {"loc": constraints.real, "scale": constraints.positive}
    support = constraints.ordered_vector

    def __init__(self, loc, scale, size: int, *, validate_args=None):
        self.loc, self.scale, self.size = loc, scale, size
        super().__init__(batch_shape=(), event_shape=(size,), validate_args=validate_args)

    def sample(self, key, sample_shape=()):
        draws = dist.Normal(self.loc, self.scale).sample(key, (*sample_shape, self.size))
        return jnp.sort(draws, axis=-1)

    def log_prob(self, value):
        return dist.Normal(self.loc, self.scale).log_prob(value).sum(-1) + math.lgamma(self.size + 1)


def _floats(values) -> np.ndarray:
    return np.asarray(values, np.float64)


# -- models ----------------------------------------------------------------------


def eight_schools_noncentered(J, sigma, y=None):
    """Eight schools, non-centred: theta = mu + tau * theta_trans (reported as ``theta``)."""
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("J", J):
        theta_trans = numpyro.sample("theta_trans", dist.Normal(0.0, 1.0))
        theta = numpyro.deterministic("theta", mu + tau * theta_trans)
        numpyro.sample("obs", dist.Normal(theta, sigma), obs=y)


def kidscore_interaction(mom_hs, mom_iq, kid_score=None):
    """kid_score ~ Normal(b1 + b2 hs + b3 iq + b4 hs*iq, sigma); flat beta, half-Cauchy(2.5) sigma."""
    beta = numpyro.sample("beta", _flat((4,)))
    sigma = numpyro.sample("sigma", dist.HalfCauchy(2.5))
    eta = beta[0] + beta[1] * mom_hs + beta[2] * mom_iq + beta[3] * (mom_hs * mom_iq)
    with numpyro.plate("N", mom_iq.shape[0]):
        numpyro.sample("kid_score", dist.Normal(eta, sigma), obs=kid_score)


def logmesquite_logvas(weight, diam1, diam2, canopy_height, total_height, density, group):
    """log(weight) on logged canopy volume/area/shape, total height, density and group.

    Flat priors on beta (R^7) and on sigma (0, inf), flat in sigma itself.
    """
    design = jnp.stack(
        [
            jnp.ones_like(weight),
            jnp.log(diam1 * diam2 * canopy_height),
            jnp.log(diam1 * diam2),
            jnp.log(diam1 / diam2),
            jnp.log(total_height),
            jnp.log(density),
            group,
        ],
        axis=-1,
    )
    beta = numpyro.sample("beta", _flat((7,)))
    sigma = numpyro.sample("sigma", _flat_positive())
    with numpyro.plate("N", weight.shape[0]):
        numpyro.sample("log_weight", dist.Normal(design @ beta, sigma), obs=jnp.log(weight))


def blr(X, y=None):
    """Linear regression without intercept: beta ~ Normal(0, 10), sigma ~ half-Normal(10)."""
    beta = numpyro.sample("beta", dist.Normal(0.0, 10.0).expand([X.shape[1]]).to_event(1))
    sigma = numpyro.sample("sigma", dist.HalfNormal(10.0))
    with numpyro.plate("N", X.shape[0]):
        numpyro.sample("y", dist.Normal(X @ beta, sigma), obs=y)


def kilpisjarvi(x, y, pmualpha, psalpha, pmubeta, psbeta):
    """Linear trend y ~ Normal(alpha + beta x, sigma) with normal priors and a flat prior on sigma > 0."""
    alpha = numpyro.sample("alpha", dist.Normal(pmualpha, psalpha))
    beta = numpyro.sample("beta", dist.Normal(pmubeta, psbeta))
    sigma = numpyro.sample("sigma", _flat_positive())
    with numpyro.plate("N", x.shape[0]):
        numpyro.sample("y", dist.Normal(alpha + beta * x, sigma), obs=y)


def arK(K, y):
    """AR(K), conditional on the first K observations (they enter only as lags)."""
    T = y.shape[0]
    alpha = numpyro.sample("alpha", dist.Normal(0.0, 10.0))
    beta = numpyro.sample("beta", dist.Normal(0.0, 10.0).expand([K]).to_event(1))
    sigma = numpyro.sample("sigma", dist.HalfCauchy(2.5))
    # row i is time t = K + i (0-based); column k - 1 holds y[t - k]
    lags = jnp.stack([y[K - k : T - k] for k in range(1, K + 1)], axis=-1)
    with numpyro.plate("T", T - K):
        numpyro.sample("y", dist.Normal(alpha + lags @ beta, sigma), obs=y[K:])


def arma11(y):
    """ARMA(1, 1) with recursive errors; pre-sample error 0, pre-sample y equal to mu."""
    mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
    phi = numpyro.sample("phi", dist.Normal(0.0, 2.0))
    theta = numpyro.sample("theta", dist.Normal(0.0, 2.0))
    sigma = numpyro.sample("sigma", dist.HalfCauchy(2.5))
    nu_first = mu + phi * mu

    def step(err_prev, y_pair):
        y_prev, y_now = y_pair
        nu = mu + phi * y_prev + theta * err_prev
        return y_now - nu, nu

    _, nu_rest = lax.scan(step, y[0] - nu_first, (y[:-1], y[1:]))
    nu = jnp.concatenate([jnp.reshape(nu_first, (1,)), nu_rest])
    # Normal(err_t | 0, sigma) with err_t = y_t - nu_t
    with numpyro.plate("T", y.shape[0]):
        numpyro.sample("y", dist.Normal(nu, sigma), obs=y)


def gp_regr(x, y):
    """GP regression, squared-exponential kernel, latent f integrated out.

    ``sigma`` is added to the diagonal as is: it is the noise *variance*.
    """
    rho = numpyro.sample("rho", dist.Gamma(25.0, 4.0))
    alpha = numpyro.sample("alpha", dist.HalfNormal(2.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    sq_dist = (x[:, None] - x[None, :]) ** 2
    cov = alpha**2 * jnp.exp(-sq_dist / (2.0 * rho**2)) + sigma * jnp.eye(x.shape[0])
    numpyro.sample("y", dist.MultivariateNormal(jnp.zeros_like(x), covariance_matrix=cov), obs=y)


def low_dim_gauss_mix(y):
    """Two-component normal mixture, means ordered mu_1 < mu_2, theta the weight of component 1."""
    mu = numpyro.sample("mu", OrderedNormal(0.0, 2.0, 2))
    sigma = numpyro.sample("sigma", dist.HalfNormal(2.0).expand([2]).to_event(1))
    theta = numpyro.sample("theta", dist.Beta(5.0, 5.0))
    mixing = dist.Categorical(probs=jnp.stack([theta, 1.0 - theta]))
    with numpyro.plate("N", y.shape[0]):
        numpyro.sample("y", dist.MixtureSameFamily(mixing, dist.Normal(mu, sigma)), obs=y)


# -- data -> arguments ---------------------------------------------------------------


def _eight_schools_args(d):
    return (int(d["J"]), _floats(d["sigma"])), {"y": _floats(d["y"])}


def _kidiq_args(d):
    return (_floats(d["mom_hs"]), _floats(d["mom_iq"])), {"kid_score": _floats(d["kid_score"])}


def _mesquite_args(d):
    names = ["weight", "diam1", "diam2", "canopy_height", "total_height", "density", "group"]
    return tuple(_floats(d[n]) for n in names), {}


def _sblrc_args(d):
    return (_floats(d["X"]),), {"y": _floats(d["y"])}


def _kilpisjarvi_args(d):
    priors = {k: float(d[k]) for k in ("pmualpha", "psalpha", "pmubeta", "psbeta")}
    return (_floats(d["x"]), _floats(d["y"])), priors


def _arK_args(d):
    return (int(d["K"]), _floats(d["y"])), {}


def _arma_args(d):
    return (_floats(d["y"]),), {}


def _gp_args(d):
    return (_floats(d["x"]), _floats(d["y"])), {}


def _mix_args(d):
    return (_floats(d["y"]),), {}


# -- sampled values -> reference columns ------------------------------------------


def reference_columns(samples: dict, sites: tuple[str, ...]) -> dict[str, np.ndarray]:
    """posteriordb columns from ``samples`` (arrays (chain, draw, ...)).

    A scalar site ``s`` gives column ``s``; a vector site gives ``s[1]``,
    ``s[2]``, ... (1-based, as posteriordb names them).
    """
    out = {}
    for site in sites:
        values = np.asarray(samples[site])
        if values.ndim == 2:
            out[site] = values
        elif values.ndim == 3:
            for i in range(values.shape[2]):
                out[f"{site}[{i + 1}]"] = values[:, :, i]
        else:
            raise ValueError(f"site {site!r} has shape {values.shape}; expected (chain, draw) or (chain, draw, k)")
    return out


# -- registry ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Posterior:
    """One posteriordb posterior and how the test suite samples it.

    Attributes:
        name: posteriordb posterior name (folder and summary key).
        model: the NumPyro model.
        make_args: ``data.json`` dict -> ``(args, kwargs)`` for the model
            (float arrays as float64 NumPy arrays; JAX casts them to float32
            unless 64-bit mode is on).
        sites: sampled or deterministic sites holding the reference columns.
        x64: needs double precision (run under ``jax.enable_x64(True)``).
        metric: recommended mass matrix, ``"dense"`` or ``"diag"``.
        target_accept: recommended NUTS target acceptance rate.
        init_radius: chains start uniformly in (-r, r) on the unconstrained
            scale (NumPyro's ``init_to_uniform``; Stan's default is 2).
        num_warmup, num_samples: run length per chain in the test.
        notes: why these settings.
    """

    name: str
    model: Callable
    make_args: Callable[[dict], tuple[tuple, dict]]
    sites: tuple[str, ...]
    x64: bool = False
    metric: str = "dense"
    target_accept: float = 0.8
    init_radius: float = 2.0
    num_warmup: int = 1000
    num_samples: int = 1000
    notes: str = ""

    def args(self) -> tuple[tuple, dict]:
        """Model arguments from the posterior's data in ``tests/data/posteriordb``."""
        return self.make_args(load_data(self.name))

    def to_columns(self, samples: dict) -> dict[str, np.ndarray]:
        """posteriordb reference columns {name: (chain, draw)} from ``result.samples``."""
        return reference_columns(samples, self.sites)

    @property
    def init_strategy(self):
        """NumPyro init strategy for ``Target.from_numpyro(..., init_strategy=...)``."""
        return init_to_uniform(radius=self.init_radius)


@functools.cache
def _summaries() -> dict:
    return json.loads((DATA / "posteriordb_summaries.json").read_text())


def load_data(name: str) -> dict:
    """The posterior's ``data.json`` as a dict."""
    return json.loads((DATA / "posteriordb" / name / "data.json").read_text())


def load_reference(name: str) -> dict:
    """{column: {"mean", "sd", "mcse_mean", "mcse_sd"}} of posteriordb's reference draws."""
    return _summaries()[name]


_ALL = [
    Posterior(
        "eight_schools-eight_schools_noncentered",
        eight_schools_noncentered,
        _eight_schools_args,
        ("theta", "mu", "tau"),
        target_accept=0.95,
        notes="tau has mass near 0 and a heavy right tail; Stan used adapt_delta 0.95 (fewer divergences).",
    ),
    Posterior(
        "kidiq-kidscore_interaction",
        kidscore_interaction,
        _kidiq_args,
        ("beta", "sigma"),
        notes="uncentred predictors, corr(beta[1], beta[3]) = -0.99: dense metric (float32 suffices).",
    ),
    Posterior(
        "mesquite-logmesquite_logvas",
        logmesquite_logvas,
        _mesquite_args,
        ("beta", "sigma"),
        notes="flat priors on beta and sigma (flat in sigma); beta[2], beta[3] anti-correlated.",
    ),
    Posterior(
        "sblrc-blr",
        blr,
        _sblrc_args,
        ("beta", "sigma"),
        notes="beta sds ~1e-3 against sigma sd ~0.08, correlated betas: dense metric.",
    ),
    Posterior(
        "kilpisjarvi_mod-kilpisjarvi",
        kilpisjarvi,
        _kilpisjarvi_args,
        ("alpha", "beta", "sigma"),
        x64=True,
        target_accept=0.9,
        notes=(
            "corr(alpha, beta) = -0.99999, condition number ~7e11: dense metric and float64 as model.md "
            "advises (float32 is marginal: NumPyro NUTS with 500 warmup steps got an ESS of 14); "
            "at target_accept 0.8 sgmcmc NUTS had a few divergences in most seeds, none at 0.9."
        ),
    ),
    Posterior(
        "arK-arK",
        arK,
        _arK_args,
        ("alpha", "beta", "sigma"),
        notes="conditional likelihood: y[1..K] enter only as lags; no stationarity constraint.",
    ),
    Posterior(
        "arma-arma11",
        arma11,
        _arma_args,
        ("mu", "phi", "theta", "sigma"),
        metric="diag",
        init_radius=0.5,
        notes=(
            "|theta| > 1 makes the error recursion explode and traps chains: start near 0, diagonal metric. "
            "With Stan's radius 2 a float32 start can overflow to a NaN mean, which NumPyro's argument "
            "validation rejects while building the target."
        ),
    ),
    Posterior(
        "gp_pois_regr-gp_regr",
        gp_regr,
        _gp_args,
        ("rho", "alpha", "sigma"),
        notes="sigma is the noise variance (added to the diagonal unsquared).",
    ),
    Posterior(
        "low_dim_gauss_mix-low_dim_gauss_mix",
        low_dim_gauss_mix,
        _mix_args,
        ("mu", "sigma", "theta"),
        notes="ordered means; mixture by log-sum-exp (MixtureSameFamily).",
    ),
]

POSTERIORS: dict[str, Posterior] = {p.name: p for p in _ALL}
