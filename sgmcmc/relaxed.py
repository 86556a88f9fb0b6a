"""Continuous relaxations of discrete variables: Gumbel-softmax / Concrete. Approximate.

Gradient-based samplers need continuous variables. A model with a discrete
latent (a mixture assignment, a switch, a binary unit) either sums it out
exactly, or replaces it by a *relaxation*: a continuous variable on the
simplex that concentrates on the one-hot vertices as a temperature goes to
zero. This module gives the relaxation of Jang, Gu & Poole (2017,
"Categorical reparameterization with Gumbel-softmax", ICLR) and Maddison,
Mnih & Teh (2017, "The Concrete distribution: a continuous relaxation of
discrete random variables", ICLR) as NumPyro distributions, usable inside
NumPyro models that :meth:`sgmcmc.Target.from_numpyro` samples, and in
reparameterised (VAE / SVI) objectives.

**The distribution.** With logits ``l`` (``K`` categories, ``p = softmax(l)``)
and temperature ``tau > 0``, a draw is

    x = softmax((l + g) / tau),     g_k ~ Gumbel(0, 1) i.i.d.

(the Gumbel-softmax reparameterisation: ``x`` is a differentiable function of
the parameters and parameter-free noise). ``argmax_k x_k`` is exactly
``Categorical(p)`` at every temperature (the Gumbel-max trick), and ``x``
tends to that one-hot vector as ``tau -> 0``. Its density on the simplex,
with respect to Lebesgue measure on the first ``K - 1`` coordinates, is
(Maddison et al., eq. 4)

    p(x) = (K-1)! tau^(K-1) prod_k [p_k x_k^(-tau-1)] / (sum_k p_k x_k^(-tau))^K,

computed here in log space,

    log p(x) = log (K-1)! + (K-1) log tau + sum_k (a_k - log x_k) - K logsumexp_k(a_k),
    a_k = l_k - tau log x_k,

which neither overflows nor loses the small components at low temperature
(at ``tau = 0.05`` in float32 the direct formula overflows for most draws of
five categories, as soon as the product of ``x_k^(-tau-1)`` over the small
components leaves float32's range; the log form is finite for components down
to the smallest normal float).

**What is exact and what is not.** Sampling and ``log_prob`` are exact for
the Concrete distribution. The *relaxation* is the approximation: a model in
which a Concrete variable stands for a categorical one is a different model,
which tends to the discrete one as ``tau -> 0``; how far a posterior moves
at a given temperature is measured in ``notebooks/02_discrete_mixture.ipynb``
and ``benchmarks/relaxed_mixture.py`` (a two-component mixture: the weight of
the small component is off by 4.7 posterior sds at ``tau = 1``, 0.6 at
``tau = 0.1``, 0.3 at ``tau = 0.05``).

**Boundaries.** Float numbers cannot represent a point of the open simplex
arbitrarily close to a vertex: at low temperature components underflow to
0 (and ``1 - x`` rounds to 0 on the unit interval). The density itself is
infinite on the boundary for ``tau (K-1) < 1`` and zero above. Following
NumPyro's own transforms to the simplex and unit interval (which clip to
``[tiny, 1 - eps]``), :class:`RelaxedOneHotCategorical` evaluates
``log_prob`` with every component clipped below at the smallest normal
number ``tiny`` of the dtype, and :class:`RelaxedBernoulli` clips both its
samples and the values it evaluates to ``[tiny, 1 - eps]``: the returned
number is the exact density at the nearest representable interior point,
always finite. Where the boundary matters (low temperatures inside a
sampled model), use the logit-space forms :class:`LogitRelaxedOneHotCategorical`
and :class:`LogitRelaxedBernoulli`: their value is ``u_k = log(x_k / x_K)``
(``logit(x)`` for the binary case), unconstrained, with an exact log density
in closed form that has no boundary at all; map it to the simplex with
:func:`alr_to_simplex`.

**As a latent of a sampled model**, write the relaxed assignment as
``z = alr_to_simplex(s / tau)`` with ``s ~ LogitRelaxedOneHotCategorical(1, probs)``:
``z`` has exactly the law ``RelaxedOneHotCategorical(tau, probs)``, and the
sampler moves ``s``, whose spread does not depend on ``tau``. A
``RelaxedOneHotCategorical`` site is moved through NumPyro's stick-breaking
transform instead, in coordinates that spread like ``1 / tau`` and saturate in
float32; in the benchmark its SGHMC estimates at ``tau <= 0.1`` were 2-3.5
sds off the relaxed model's own posterior.

**Straight-through.** ``straight_through=True`` (or :func:`straight_through`)
returns the one-hot vector of the argmax in the forward pass and the
gradient of the soft sample in the backward pass (Jang et al., section 2.2;
Bengio, Leonard & Courville 2013). The forward values are exactly 0 and 1:
the soft sample enters as ``soft - stop_gradient(soft)``, which is exactly 0.
The gradient is biased (it is the gradient of another function); it is a tool
for reparameterised objectives, not for a latent site that an MCMC sampler
moves (such a site is set by the sampler from an unconstrained value, never
sampled). Its ``log_prob(value, intermediates)`` is the Concrete density of
the soft sample that NumPyro records as the site's intermediates; a hard value
given without them (e.g. replayed from another trace) has no soft sample, and
its ``log_prob`` (the density at a vertex, clipped) means nothing.

**Temperature annealing** during training (Jang et al.'s
``max(tau_min, tau_0 exp(-r t))``) is :func:`sgmcmc.schedules.exponential_annealing`.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammaln, logsumexp
from numpyro.distributions import Distribution, constraints
from numpyro.distributions.util import clamp_probs, lazy_property, not_jax_tracer
from numpyro.util import is_prng_key

__all__ = [
    "RelaxedOneHotCategorical",
    "RelaxedBernoulli",
    "LogitRelaxedOneHotCategorical",
    "LogitRelaxedBernoulli",
    "gumbel_softmax",
    "straight_through",
    "alr_to_simplex",
]


# -- input checks (on concrete values; traced values cannot be checked) -------


def _is_concrete(x) -> bool:
    return not_jax_tracer(x)


def _float_array(x, name: str) -> jax.Array:
    if isinstance(x, bool):
        raise TypeError(f"{name} must be a real number or array, got a bool.")
    if isinstance(x, numbers.Number) and not isinstance(x, numbers.Real):
        raise TypeError(f"{name} must be real, got {x!r}.")
    try:
        arr = jnp.asarray(x)
    except TypeError as err:
        raise TypeError(f"{name} must be a real number or array, got {type(x).__name__}.") from err
    if not (jnp.issubdtype(arr.dtype, jnp.floating) or jnp.issubdtype(arr.dtype, jnp.integer)):
        raise TypeError(f"{name} must be real, got dtype {arr.dtype}.")
    if not jnp.issubdtype(arr.dtype, jnp.floating):
        arr = arr.astype(jnp.result_type(float))
    return arr


def _check_temperature(temperature) -> jax.Array:
    tau = _float_array(temperature, "temperature")
    if _is_concrete(temperature):
        host = np.asarray(temperature, np.float64)
        if not np.all(np.isfinite(host)):
            raise ValueError(f"temperature must be finite, got {_show(host)}.")
        if not np.all(host > 0):
            raise ValueError(f"temperature must be > 0, got {_show(host)}.")
    return tau


def _show(host: np.ndarray) -> str:
    return repr(host.item()) if host.size == 1 else f"an array with values {np.unique(host)[:5].tolist()}"


def _simplex_tolerance(dtype, k: int) -> float:
    # The rounding of a sum of K numbers, with NumPyro's simplex check (1e-6) as a floor.
    return max(1e-6, 4.0 * k * float(jnp.finfo(dtype).eps))


def _categorical_params(probs, logits, name: str) -> tuple[jax.Array, jax.Array | None]:
    """``(logits, probs or None)`` for a K-category parameter, checked when concrete."""
    if (probs is None) == (logits is None):
        raise ValueError(f"{name}: give exactly one of probs= and logits=.")
    arg = "probs" if probs is not None else "logits"
    given = probs if probs is not None else logits
    value = _float_array(given, arg)
    if value.ndim < 1:
        raise ValueError(f"{arg} must have a last axis indexing the categories, got a scalar.")
    if value.shape[-1] < 2:
        raise ValueError(f"{arg} must have at least 2 categories along its last axis, got shape {value.shape}.")
    concrete = _is_concrete(given)
    if concrete:
        host = np.asarray(given, np.float64)
        if not np.all(np.isfinite(host)):
            raise ValueError(f"{arg} must be finite (no NaN or inf), got {arg} with non-finite entries.")
    if probs is None:
        return value, None
    if concrete:
        if np.any(host < 0):
            raise ValueError(f"probs must lie on the simplex: non-negative entries; got a minimum of {host.min()}.")
        sums = host.sum(-1)
        tol = _simplex_tolerance(value.dtype, value.shape[-1])
        if np.any(np.abs(sums - 1.0) > tol):
            worst = sums.flat[np.argmax(np.abs(sums - 1.0))]
            raise ValueError(
                f"probs must lie on the simplex: each vector along the last axis must sum to 1 "
                f"(within {tol:.1e}); got a sum of {worst!r}. Normalise, or pass logits= instead."
            )
    # A zero probability becomes the logit log(tiny): finite, so NumPyro's (default-on)
    # argument validation accepts it, and the category is never drawn.
    return jnp.log(jnp.maximum(value, jnp.finfo(value.dtype).tiny)), value


def _bernoulli_params(probs, logits, name: str) -> tuple[jax.Array, jax.Array | None]:
    if (probs is None) == (logits is None):
        raise ValueError(f"{name}: give exactly one of probs= and logits=.")
    arg = "probs" if probs is not None else "logits"
    given = probs if probs is not None else logits
    value = _float_array(given, arg)
    if _is_concrete(given):
        host = np.asarray(given, np.float64)
        if not np.all(np.isfinite(host)):
            raise ValueError(f"{arg} must be finite (no NaN or inf), got {arg} with non-finite entries.")
        if probs is not None and np.any((host < 0) | (host > 1)):
            raise ValueError(f"probs must lie in [0, 1], got values in [{host.min()}, {host.max()}].")
    if probs is None:
        return value, None
    clipped = clamp_probs(value)  # probs 0 and 1 give finite logits, as in NumPyro
    return jnp.log(clipped) - jnp.log1p(-clipped), value


def _check_bool(value, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}.")
    return value


# -- functional helpers ------------------------------------------------------


def straight_through(soft: jax.Array) -> jax.Array:
    """The one-hot vector of ``argmax(soft)`` forward, ``soft``'s gradient backward.

    The forward value is exactly one-hot (``hard + (soft - stop_gradient(soft))``
    adds an exact 0); the derivative is that of ``soft``. Ties go to the first
    maximal component.
    """
    soft = jnp.asarray(soft)
    hard = jax.nn.one_hot(jnp.argmax(soft, axis=-1), soft.shape[-1], dtype=soft.dtype)
    return hard + (soft - jax.lax.stop_gradient(soft))


def _straight_through_binary(soft: jax.Array, positive: jax.Array) -> jax.Array:
    hard = positive.astype(soft.dtype)
    return hard + (soft - jax.lax.stop_gradient(soft))


def gumbel_softmax(
    key: jax.Array,
    logits: jax.Array,
    temperature,
    *,
    hard: bool = False,
    shape: tuple[int, ...] | None = None,
) -> jax.Array:
    """Draw ``softmax((logits + g) / temperature)`` with ``g`` i.i.d. standard Gumbel.

    The functional form of :meth:`RelaxedOneHotCategorical.sample` (no input
    checks, usable on traced values). ``shape`` is the shape of the output
    without the category axis (default: the broadcast of ``logits.shape[:-1]``
    and ``temperature``'s shape); ``hard=True`` gives the straight-through
    one-hot. The softmax is taken as ``exp(log_softmax)``.
    """
    logits = jnp.asarray(logits)
    temperature = jnp.asarray(temperature, logits.dtype)
    if shape is None:
        shape = jnp.broadcast_shapes(logits.shape[:-1], temperature.shape)
    g = jax.random.gumbel(key, (*shape, logits.shape[-1]), logits.dtype)
    soft = jnp.exp(jax.nn.log_softmax((logits + g) / temperature[..., None], axis=-1))
    return straight_through(soft) if hard else soft


def alr_to_simplex(u: jax.Array, *, log: bool = False) -> jax.Array:
    """Map additive log-ratio coordinates ``u`` (last axis ``K - 1``) to the simplex (last axis ``K``).

    ``x = softmax([u, 0])``, so that ``u_k = log(x_k / x_K)``: the inverse of
    the coordinates in which :class:`LogitRelaxedOneHotCategorical` lives.
    With ``log=True`` returns ``log x`` (computed as a log-softmax, exact even
    where ``x_k`` underflows), e.g. for a likelihood ``sum_k x_k log p_k``.
    """
    u = jnp.asarray(u)
    v = jnp.concatenate([u, jnp.zeros((*u.shape[:-1], 1), u.dtype)], axis=-1)
    logx = jax.nn.log_softmax(v, axis=-1)
    return logx if log else jnp.exp(logx)


# -- distributions -----------------------------------------------------------


class _Relaxed(Distribution):
    """Shared parameter handling: a temperature and logits (or probs)."""

    arg_constraints: ClassVar[dict[str, Any]] = {
        "temperature": constraints.positive,
        "logits": constraints.real_vector,
    }
    reparametrized_params: ClassVar[list[str]] = ["temperature", "logits"]
    pytree_data_fields = ("temperature", "logits", "probs")

    def _set(self, temperature, probs, logits, categorical: bool) -> tuple[tuple[int, ...], tuple[int, ...]]:
        name = type(self).__name__
        self.temperature = _check_temperature(temperature)
        if categorical:
            logits, probs = _categorical_params(probs, logits, name)
            batch_shape = jnp.broadcast_shapes(logits.shape[:-1], self.temperature.shape)
        else:
            logits, probs = _bernoulli_params(probs, logits, name)
            batch_shape = jnp.broadcast_shapes(logits.shape, self.temperature.shape)
        self.temperature = self.temperature.astype(logits.dtype)
        self.logits = logits
        if probs is not None:
            self.probs = probs
        return batch_shape, (logits.shape[-1],) if categorical else ()

    @property
    def num_categories(self) -> int:
        """``K``."""
        return self.logits.shape[-1]


class RelaxedOneHotCategorical(_Relaxed):
    """The Concrete / Gumbel-softmax distribution on the simplex (exact sampling and density).

    ``x = softmax((logits + g) / temperature)``, ``g`` i.i.d. Gumbel(0, 1);
    Jang, Gu & Poole (2017), Maddison, Mnih & Teh (2017). Reparameterised in
    ``temperature`` and ``logits`` (``rsample``). ``argmax x`` is exactly
    ``Categorical(probs)``; ``x`` tends to that one-hot vector as the
    temperature goes to 0. The density and its boundary handling are in the
    module docstring; ``mean`` and ``variance`` have no closed form and raise.

    Args:
        temperature: ``tau > 0``, a float or an array broadcasting against the
            batch shape.
        probs: category probabilities on the simplex along the last axis
            (``K >= 2``; a probability 0 is given the logit ``log(tiny)``,
            so that category is never drawn); or
        logits: unnormalised log-probabilities (exactly one of the two).
        straight_through: return the hard one-hot of the argmax in the
            forward pass with the soft sample's gradient (see the module
            docstring). Only sampling changes.
        validate_args: NumPyro's value validation in ``log_prob``. Parameters
            are always checked when they are concrete (not traced):
            non-positive or non-finite temperatures, probabilities off the
            simplex and non-finite logits raise ``ValueError``.

    Inside a NumPyro model the site is moved by NumPyro's stick-breaking
    transform; at low temperature prefer :class:`LogitRelaxedOneHotCategorical`.
    """

    support = constraints.simplex
    pytree_aux_fields = ("straight_through",)

    def __init__(
        self,
        temperature,
        probs=None,
        logits=None,
        *,
        straight_through: bool = False,
        validate_args: bool | None = None,
    ):
        self.straight_through = _check_bool(straight_through, "straight_through")
        batch_shape, event_shape = self._set(temperature, probs, logits, categorical=True)
        super().__init__(batch_shape=batch_shape, event_shape=event_shape, validate_args=validate_args)

    @lazy_property
    def probs(self) -> jax.Array:
        return jax.nn.softmax(self.logits, axis=-1)

    def _soft(self, key, sample_shape) -> jax.Array:
        assert is_prng_key(key)
        return gumbel_softmax(key, self.logits, self.temperature, shape=tuple(sample_shape) + self.batch_shape)

    def sample(self, key, sample_shape=()) -> jax.Array:
        soft = self._soft(key, sample_shape)
        return straight_through(soft) if self.straight_through else soft

    def sample_with_intermediates(self, key, sample_shape=()):
        soft = self._soft(key, sample_shape)
        if self.straight_through:
            return straight_through(soft), [soft]
        return soft, []

    def log_prob(self, value, intermediates=None) -> jax.Array:
        """Log Concrete density at ``value`` (components clipped below at ``tiny``).

        For a straight-through site, NumPyro passes the soft sample as
        ``intermediates`` and the density is evaluated there.
        """
        if intermediates:
            value = intermediates[0]
        value = jnp.asarray(value)
        if self._validate_args:
            self._validate_sample(value)
        return _concrete_log_prob(self.logits, self.temperature, value)


def _concrete_log_prob(logits, temperature, x) -> jax.Array:
    """Log density of the Concrete distribution at ``x`` on the simplex, in log space."""
    dtype = jnp.result_type(logits, temperature, x)
    logx = jnp.log(jnp.maximum(x.astype(dtype), jnp.finfo(dtype).tiny))
    k = logits.shape[-1]
    tau = jnp.asarray(temperature, dtype)
    a = logits - tau[..., None] * logx
    return gammaln(float(k)) + (k - 1) * jnp.log(tau) + jnp.sum(a - logx, axis=-1) - k * logsumexp(a, axis=-1)


class LogitRelaxedOneHotCategorical(_Relaxed):
    """The Concrete distribution in additive log-ratio coordinates ``u_k = log(x_k / x_K)`` (exact).

    ``u = ((l + g)_{1..K-1} - (l + g)_K) / tau`` with ``g`` i.i.d. Gumbel(0, 1)
    and ``x = alr_to_simplex(u) = softmax([u, 0])`` is
    :class:`RelaxedOneHotCategorical`. ``u`` is unconstrained (event shape
    ``(K - 1,)``) and its log density has a closed form without any boundary,
    logarithm of a sample or softmax:

        log p(u) = log (K-1)! + (K-1) log tau + sum_k b_k - K logsumexp_k(b_k),
        b_k = l_k - tau v_k,  v = [u, 0]

    (the Concrete density times the Jacobian ``prod_k x_k`` of ``u -> x``).
    This is the form to use for a relaxed latent inside a model sampled by a
    gradient-based sampler: the sampler moves ``u`` directly, at any
    temperature. For ``K = 2`` it is :class:`LogitRelaxedBernoulli` of
    ``probs[0]``.

    The spread of ``u`` grows like ``1 / tau``; a sampler with one step size
    for every coordinate mixes better in ``s = tau u``, which is this
    distribution at temperature 1 (then use ``alr_to_simplex(s / tau)``).
    """

    support = constraints.real_vector

    def __init__(self, temperature, probs=None, logits=None, *, validate_args: bool | None = None):
        batch_shape, (k,) = self._set(temperature, probs, logits, categorical=True)
        super().__init__(batch_shape=batch_shape, event_shape=(k - 1,), validate_args=validate_args)

    @lazy_property
    def probs(self) -> jax.Array:
        return jax.nn.softmax(self.logits, axis=-1)

    def sample(self, key, sample_shape=()) -> jax.Array:
        assert is_prng_key(key)
        shape = (*sample_shape, *self.batch_shape, self.num_categories)
        s = self.logits + jax.random.gumbel(key, shape, self.logits.dtype)
        return (s[..., :-1] - s[..., -1:]) / self.temperature[..., None]

    def log_prob(self, value) -> jax.Array:
        value = jnp.asarray(value)
        if self._validate_args:
            self._validate_sample(value)
        dtype = jnp.result_type(self.logits, value)
        k = self.num_categories
        v = jnp.concatenate([value, jnp.zeros((*value.shape[:-1], 1), dtype)], axis=-1)
        tau = self.temperature.astype(dtype)
        b = self.logits - tau[..., None] * v
        return gammaln(float(k)) + (k - 1) * jnp.log(tau) + jnp.sum(b, axis=-1) - k * logsumexp(b, axis=-1)


class RelaxedBernoulli(_Relaxed):
    """The binary Concrete distribution on the unit interval (exact sampling and density).

    ``x = sigmoid((logits + L) / temperature)`` with ``L`` standard logistic
    (the difference of two Gumbels): ``x > 1/2`` exactly with probability
    ``probs``, and ``x`` tends to ``Bernoulli(probs)`` as the temperature goes
    to 0 (Maddison et al. 2017, section 3.3). Density

        log p(x) = log tau + l - (tau + 1)(log x + log(1 - x))
                   - 2 logaddexp(l - tau log x, -tau log(1 - x)).

    Boundary: samples and the values ``log_prob`` evaluates are clipped to
    ``[tiny, 1 - eps]`` of their dtype, as NumPyro's sigmoid transform to the
    unit interval does; at low temperature a float32 sample sits on the
    clip with visible probability (e.g. about 0.3 at ``tau = 0.05``,
    ``probs = 1/2``), and ``log_prob`` there is the density at the clip.
    :class:`LogitRelaxedBernoulli` has no boundary.

    Args:
        temperature: ``tau > 0``.
        probs: probability of 1, in ``[0, 1]`` (clipped to ``[tiny, 1 - eps]``
            for the logit); or
        logits: its log-odds (exactly one of the two).
        straight_through: sample ``1[x > 1/2]`` forward with the soft gradient.
        validate_args: NumPyro's value validation in ``log_prob``.
    """

    arg_constraints: ClassVar[dict[str, Any]] = {"temperature": constraints.positive, "logits": constraints.real}
    support = constraints.unit_interval
    pytree_aux_fields = ("straight_through",)

    def __init__(
        self,
        temperature,
        probs=None,
        logits=None,
        *,
        straight_through: bool = False,
        validate_args: bool | None = None,
    ):
        self.straight_through = _check_bool(straight_through, "straight_through")
        batch_shape, _ = self._set(temperature, probs, logits, categorical=False)
        super().__init__(batch_shape=batch_shape, validate_args=validate_args)

    @lazy_property
    def probs(self) -> jax.Array:
        return jax.nn.sigmoid(self.logits)

    @property
    def num_categories(self) -> int:
        return 2

    def _logit_sample(self, key, sample_shape) -> jax.Array:
        assert is_prng_key(key)
        shape = tuple(sample_shape) + self.batch_shape
        return (self.logits + jax.random.logistic(key, shape, self.logits.dtype)) / self.temperature

    def sample(self, key, sample_shape=()) -> jax.Array:
        return self.sample_with_intermediates(key, sample_shape)[0]

    def sample_with_intermediates(self, key, sample_shape=()):
        y = self._logit_sample(key, sample_shape)
        soft = clamp_probs(jax.nn.sigmoid(y))
        if self.straight_through:
            return _straight_through_binary(soft, y > 0), [soft]
        return soft, []

    def log_prob(self, value, intermediates=None) -> jax.Array:
        """Log density at ``value`` clipped to ``[tiny, 1 - eps]`` (the soft sample for straight-through)."""
        if intermediates:
            value = intermediates[0]
        value = jnp.asarray(value)
        if self._validate_args:
            self._validate_sample(value)
        dtype = jnp.result_type(self.logits, value)
        x = clamp_probs(value.astype(dtype))
        log_x, log_1mx = jnp.log(x), jnp.log1p(-x)
        tau = self.temperature.astype(dtype)
        return (
            jnp.log(tau)
            + self.logits
            - (tau + 1.0) * (log_x + log_1mx)
            - 2.0 * jnp.logaddexp(self.logits - tau * log_x, -tau * log_1mx)
        )


class LogitRelaxedBernoulli(_Relaxed):
    """The binary Concrete distribution in logit coordinates ``y = logit(x)`` (exact).

    ``y = (logits + L) / temperature`` with ``L`` standard logistic, i.e. a
    logistic distribution with location ``logits / tau`` and scale ``1 / tau``:

        log p(y) = log tau + (l - tau y) - 2 softplus(l - tau y).

    Unconstrained, no boundary; ``sigmoid(y)`` is :class:`RelaxedBernoulli`.
    """

    arg_constraints: ClassVar[dict[str, Any]] = {"temperature": constraints.positive, "logits": constraints.real}
    support = constraints.real

    def __init__(self, temperature, probs=None, logits=None, *, validate_args: bool | None = None):
        batch_shape, _ = self._set(temperature, probs, logits, categorical=False)
        super().__init__(batch_shape=batch_shape, validate_args=validate_args)

    @lazy_property
    def probs(self) -> jax.Array:
        return jax.nn.sigmoid(self.logits)

    @property
    def num_categories(self) -> int:
        return 2

    def sample(self, key, sample_shape=()) -> jax.Array:
        assert is_prng_key(key)
        shape = tuple(sample_shape) + self.batch_shape
        return (self.logits + jax.random.logistic(key, shape, self.logits.dtype)) / self.temperature

    def log_prob(self, value) -> jax.Array:
        value = jnp.asarray(value)
        if self._validate_args:
            self._validate_sample(value)
        tau = self.temperature.astype(jnp.result_type(self.logits, value))
        z = self.logits - tau * value
        return jnp.log(tau) + z - 2.0 * jax.nn.softplus(z)

    @property
    def mean(self) -> jax.Array:
        return jnp.broadcast_to(self.logits / self.temperature, self.batch_shape)

    @property
    def variance(self) -> jax.Array:
        return jnp.broadcast_to((math.pi**2 / 3.0) / self.temperature**2, self.batch_shape)
