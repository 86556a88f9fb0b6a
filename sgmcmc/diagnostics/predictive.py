"""Predictive metrics: classifiers (accuracy, NLL, ECE, Brier), agreement and
total variation against a reference predictive, and regression (log predictive
density, RMSE, interval coverage).

A Bayesian classifier predicts with the posterior predictive distribution

    p(y | x, D) ~= (1/S) sum_s softmax(f(x; theta_s)),

the average over draws ``theta_s`` of the class probabilities, not the
probabilities of an average network. :func:`posterior_predictive_probs` forms
that average from per-draw logits; the metric functions then score any
``(n, K)`` matrix of class probabilities against integer labels ``(n,)``, so a
point estimate (one draw) and a posterior are scored the same way.
:func:`agreement` and :func:`total_variation` compare two such matrices, a
method's predictive against a reference posterior's (Izmailov et al. 2021;
:mod:`sgmcmc.reference` builds the reference with NUTS).

A Bayesian regression model with Gaussian noise predicts with the mixture

    p(y | x, D) ~= (1/S) sum_s N(y; mu_s(x), sigma_s^2),

given per-draw predictive means ``mu_s`` and noise scales ``sigma_s``;
:func:`predictive_log_density`, :func:`rmse` and :func:`interval_coverage`
score it against real-valued targets. One draw (a point estimate with a
noise scale) is the special case ``S = 1``.

All functions are written with ``jax.numpy`` and accept NumPy or JAX arrays.
Shapes are always checked. Values (labels in range, probabilities in [0, 1]
summing to 1) are checked when the arrays are concrete, i.e. when called
outside ``jax.jit``; under ``jit`` only the shape checks apply. Bad input
raises :class:`ValueError`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

__all__ = [
    "posterior_predictive_probs",
    "accuracy",
    "nll",
    "expected_calibration_error",
    "brier_score",
    "agreement",
    "total_variation",
    "predictive_log_density",
    "rmse",
    "interval_coverage",
    "ECE_BINNINGS",
]

#: The binnings :func:`expected_calibration_error` knows.
ECE_BINNINGS = ("equal_width", "equal_mass")

#: How far a row of probabilities may sum from 1 (float32 softmax averages are
#: within ~1e-6; this leaves room for probabilities that were stored rounded).
PROB_SUM_ATOL = 1e-3


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _dtype(x) -> np.dtype:
    dtype = getattr(x, "dtype", None)
    return np.asarray(x).dtype if dtype is None else dtype


def _check_probs(probs, name: str = "probs") -> jax.Array:
    """Validate a ``(n, K)`` matrix of class probabilities and return it as a JAX array."""
    if np.ndim(probs) != 2:
        raise ValueError(f"{name} must have shape (n, num_classes), got shape {np.shape(probs)}.")
    n, num_classes = np.shape(probs)
    if n == 0:
        raise ValueError(f"{name} is empty; need at least one example.")
    if num_classes < 2:
        raise ValueError(f"{name} must have at least 2 classes (columns), got {num_classes}.")
    probs_dtype = _dtype(probs)
    if not jnp.issubdtype(probs_dtype, jnp.floating):
        raise ValueError(f"{name} must be floating point, got dtype {probs_dtype}.")
    if _is_concrete(probs):
        p_np = np.asarray(probs, np.float64)
        if not np.all(np.isfinite(p_np)):
            raise ValueError(f"{name} contains non-finite values (NaN or inf).")
        if p_np.min() < 0 or p_np.max() > 1 + PROB_SUM_ATOL:
            raise ValueError(f"{name} must lie in [0, 1]; got values from {p_np.min():.4g} to {p_np.max():.4g}.")
        sums = p_np.sum(axis=1)
        worst = int(np.argmax(np.abs(sums - 1)))
        if abs(sums[worst] - 1) > PROB_SUM_ATOL:
            raise ValueError(
                f"each row of {name} must sum to 1 (within {PROB_SUM_ATOL}); row {worst} sums to {sums[worst]:.6g}. "
                "Pass probabilities, not logits (see posterior_predictive_probs)."
            )
    return jnp.asarray(probs)


def _check_probs_labels(probs, y) -> tuple[jax.Array, jax.Array]:
    """Validate ``probs (n, K)`` and ``y (n,)`` and return them as JAX arrays."""
    if np.ndim(probs) != 2:
        raise ValueError(f"probs must have shape (n, num_classes), got shape {np.shape(probs)}.")
    if np.ndim(y) != 1:
        raise ValueError(f"y must have shape (n,), got shape {np.shape(y)}.")
    n, num_classes = np.shape(probs)
    if np.shape(y)[0] != n:
        raise ValueError(f"probs has {n} rows but y has {np.shape(y)[0]} labels; they must match.")
    if n == 0:
        raise ValueError("probs and y are empty; need at least one example.")
    y_dtype = _dtype(y)
    if not jnp.issubdtype(y_dtype, jnp.integer):
        raise ValueError(f"y must hold integer class labels, got dtype {y_dtype}.")
    if _is_concrete(y) and num_classes >= 2:
        y_np = np.asarray(y)
        if y_np.min() < 0 or y_np.max() >= num_classes:
            raise ValueError(
                f"labels must be in 0..{num_classes - 1} for {num_classes} classes; "
                f"got values from {y_np.min()} to {y_np.max()}."
            )
    return _check_probs(probs), jnp.asarray(y)


def _check_probs_pair(probs, ref_probs) -> tuple[jax.Array, jax.Array]:
    """Validate two ``(n, K)`` probability matrices of the same shape."""
    probs = _check_probs(probs, "probs")
    ref_probs = _check_probs(ref_probs, "ref_probs")
    if probs.shape != ref_probs.shape:
        raise ValueError(f"probs has shape {probs.shape} but ref_probs has shape {ref_probs.shape}; they must match.")
    return probs, ref_probs


# -- numeric cores: jitted, so that eager calls compile once per shape -----------
@functools.partial(jax.jit, static_argnums=1)
def _mean_softmax(logits: jax.Array, axes: tuple[int, ...]) -> jax.Array:
    num_draws = np.prod([logits.shape[a] for a in axes])
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    return jnp.exp(logsumexp(log_probs, axis=axes) - jnp.log(num_draws).astype(log_probs.dtype))


@jax.jit
def _accuracy(probs: jax.Array, y: jax.Array) -> jax.Array:
    return jnp.mean(jnp.argmax(probs, axis=-1) == y)


@jax.jit
def _nll(probs: jax.Array, y: jax.Array) -> jax.Array:
    p_true = jnp.take_along_axis(probs, y[:, None], axis=-1)[:, 0]
    return -jnp.mean(jnp.log(jnp.maximum(p_true, jnp.finfo(probs.dtype).tiny)))


@functools.partial(jax.jit, static_argnums=2)
def _ece(probs: jax.Array, y: jax.Array, num_bins: int) -> jax.Array:
    confidence = jnp.max(probs, axis=-1)
    correct = (jnp.argmax(probs, axis=-1) == y).astype(confidence.dtype)
    # Bin m (0-based) holds confidences in (m/M, (m+1)/M]; a confidence of 0 goes to bin 0.
    bins = jnp.clip(jnp.ceil(confidence * num_bins).astype(jnp.int32) - 1, 0, num_bins - 1)
    # sum over a bin of (correct - confidence) = |B_m| * (accuracy(B_m) - confidence(B_m))
    gap_sums = jax.ops.segment_sum(correct - confidence, bins, num_segments=num_bins)
    return jnp.sum(jnp.abs(gap_sums)) / confidence.shape[0]


@functools.partial(jax.jit, static_argnums=2)
def _ece_equal_mass(probs: jax.Array, y: jax.Array, num_bins: int) -> jax.Array:
    confidence = jnp.max(probs, axis=-1)
    correct = (jnp.argmax(probs, axis=-1) == y).astype(confidence.dtype)
    n = confidence.shape[0]
    # Edge m (m = 1..M-1) is the ceil(m n / M)-th smallest confidence; bin m (0-based) holds the
    # confidences in (edge_m, edge_{m+1}], so tied confidences always share a bin.
    ranks = -(-np.arange(1, num_bins) * n // num_bins) - 1  # ceil in integers, 0-based
    edges = jnp.sort(confidence)[ranks]
    bins = jnp.searchsorted(edges, confidence, side="left")
    gap_sums = jax.ops.segment_sum(correct - confidence, bins, num_segments=num_bins)
    return jnp.sum(jnp.abs(gap_sums)) / n


@jax.jit
def _brier(probs: jax.Array, y: jax.Array) -> jax.Array:
    one_hot = jax.nn.one_hot(y, probs.shape[-1], dtype=probs.dtype)
    return jnp.mean(jnp.sum((probs - one_hot) ** 2, axis=-1))


@jax.jit
def _agreement(probs: jax.Array, ref_probs: jax.Array) -> jax.Array:
    return jnp.mean(jnp.argmax(probs, axis=-1) == jnp.argmax(ref_probs, axis=-1))


@jax.jit
def _total_variation(probs: jax.Array, ref_probs: jax.Array) -> jax.Array:
    return jnp.mean(0.5 * jnp.sum(jnp.abs(probs - ref_probs), axis=-1))


def _flat_draws(means: jax.Array, scales: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(S, n)`` means and scales from ``(..., n)`` means and broadcastable scales."""
    scales = jnp.broadcast_to(scales, means.shape)
    n = means.shape[-1]
    return means.reshape(-1, n), scales.reshape(-1, n)


@jax.jit
def _log_density(means: jax.Array, scales: jax.Array, y: jax.Array) -> jax.Array:
    means, scales = _flat_draws(means, scales)
    z = (y - means) / scales
    log_normal = -0.5 * z**2 - jnp.log(scales) - 0.5 * np.log(2 * np.pi)
    return jnp.mean(logsumexp(log_normal, axis=0) - jnp.log(means.shape[0]).astype(means.dtype))


@jax.jit
def _rmse(means: jax.Array, y: jax.Array) -> jax.Array:
    mean = jnp.mean(means.reshape(-1, means.shape[-1]), axis=0)
    return jnp.sqrt(jnp.mean((mean - y) ** 2))


@jax.jit
def _coverage(means: jax.Array, scales: jax.Array, y: jax.Array, level: jax.Array) -> jax.Array:
    means, scales = _flat_draws(means, scales)
    # The mixture's CDF at y (probability integral transform); y is inside the central
    # interval [q_{(1 - level)/2}, q_{(1 + level)/2}] iff the PIT lies in that range.
    pit = jnp.mean(jax.scipy.stats.norm.cdf((y - means) / scales), axis=0)
    tail = (1 - level) / 2
    return jnp.mean((pit >= tail) & (pit <= 1 - tail))


# -- public API ------------------------------------------------------------------
def posterior_predictive_probs(logits, axis: int | tuple[int, ...] = 0) -> jax.Array:
    """Posterior predictive class probabilities: the mean over draws of ``softmax(logits)``.

    Computed in log space, ``exp(logsumexp_s(log_softmax(logits_s)) - log S)``,
    so that very confident draws neither overflow nor round to exactly 0.

    Parameters
    ----------
    logits
        Per-draw logits with the classes on the last axis, e.g. ``(draws, n, K)``
        or ``(chain, draw, n, K)``. Per-draw *probabilities* can be passed as
        ``log(probs)`` (softmax of log-probabilities gives them back).
    axis
        The draw axis or axes to average over (default 0); ``(0, 1)`` for
        ``(chain, draw, ...)`` arrays. Must not include the class axis.

    Returns
    -------
    jax.Array
        Probabilities of shape ``logits.shape`` without ``axis``; each row sums to 1.
    """
    logits = jnp.asarray(logits)
    if logits.ndim < 2:
        raise ValueError(f"logits must have a draw axis and a class axis, got shape {logits.shape}.")
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    if not axes:
        raise ValueError("axis must name at least one draw axis.")
    axes = tuple(a % logits.ndim if -logits.ndim <= a < logits.ndim else a for a in axes)
    if any(not 0 <= a < logits.ndim for a in axes):
        raise ValueError(f"axis {axis} is out of range for logits of shape {logits.shape}.")
    if logits.ndim - 1 in axes:
        raise ValueError(f"axis {axis} includes the class axis (the last one) of logits with shape {logits.shape}.")
    if len(set(axes)) != len(axes):
        raise ValueError(f"axis {axis} repeats an axis.")
    if any(logits.shape[a] == 0 for a in axes):
        raise ValueError(f"logits of shape {logits.shape} has no draws along axis {axis}.")
    return _mean_softmax(logits, tuple(sorted(axes)))


def accuracy(probs, y) -> jax.Array:
    """Fraction of examples whose most probable class is the label.

    Parameters
    ----------
    probs
        ``(n, K)`` class probabilities (each row sums to 1).
    y
        ``(n,)`` integer labels in ``0..K-1``.

    Returns
    -------
    jax.Array
        Scalar in [0, 1]. Ties go to the lowest class index (``argmax``).
    """
    return _accuracy(*_check_probs_labels(probs, y))


def nll(probs, y) -> jax.Array:
    """Mean negative log predictive probability of the labels, ``-mean_i log p_i[y_i]`` (nats).

    A probability that is exactly 0 is clipped to the smallest positive normal
    number of its dtype, so the result is large but finite. Uniform
    probabilities over K classes give ``log K``.

    Parameters
    ----------
    probs
        ``(n, K)`` class probabilities (each row sums to 1).
    y
        ``(n,)`` integer labels in ``0..K-1``.

    Returns
    -------
    jax.Array
        Scalar >= 0; lower is better.
    """
    return _nll(*_check_probs_labels(probs, y))


def expected_calibration_error(probs, y, num_bins: int = 15, *, binning: str = "equal_width") -> jax.Array:
    """Expected calibration error with ``num_bins`` confidence bins, equal-width or equal-mass.

    The confidence of an example is its largest class probability and its
    prediction the corresponding class. Examples are put in ``num_bins`` bins
    ``B_m`` by confidence, and

        ECE = sum_m (|B_m| / n) * |accuracy(B_m) - mean confidence(B_m)|.

    Empty bins contribute nothing. A perfect, fully confident classifier has
    ECE 0. Binnings:

    * ``"equal_width"`` (default; Guo, Pleiss, Sun & Weinberger, "On
      calibration of modern neural networks", ICML 2017): bin ``m`` holds the
      confidences in ``((m - 1)/M, m/M]``; a confidence of exactly 0 goes to
      the first bin.
    * ``"equal_mass"`` (adaptive binning; Nixon et al., "Measuring calibration
      in deep learning", CVPR workshops 2019): the bin edges are the empirical
      quantiles of the confidences, edge ``m`` being the ``ceil(m n / M)``-th
      smallest confidence (m = 1..M-1), and bin ``m`` holds the confidences in
      ``(edge_{m-1}, edge_m]``. Without ties every bin holds ``n/M`` examples
      (rounded); tied confidences always share a bin (so the result does not
      depend on the order of the examples), which can leave the bins unequal
      or some empty. With ``M >= n`` every distinct confidence is its own bin.

    Softmax outputs of a modern network crowd into the top equal-width bin;
    equal-mass bins resolve that region and have no empty bins, at the price
    of bin edges that depend on the predictor being scored.

    Parameters
    ----------
    probs
        ``(n, K)`` class probabilities (each row sums to 1).
    y
        ``(n,)`` integer labels in ``0..K-1``.
    num_bins
        Number of bins M (default 15, as in Guo et al.).
    binning
        ``"equal_width"`` (default) or ``"equal_mass"``.

    Returns
    -------
    jax.Array
        Scalar in [0, 1]; lower is better.
    """
    if isinstance(num_bins, bool) or not isinstance(num_bins, (int, np.integer)) or num_bins < 1:
        raise ValueError(f"num_bins must be a positive integer, got {num_bins!r}.")
    if binning not in ECE_BINNINGS:
        raise ValueError(f"binning must be one of {ECE_BINNINGS}, got {binning!r}.")
    probs, y = _check_probs_labels(probs, y)
    if binning == "equal_mass":
        return _ece_equal_mass(probs, y, int(num_bins))
    return _ece(probs, y, int(num_bins))


def brier_score(probs, y) -> jax.Array:
    """Multi-class Brier score, ``mean_i sum_k (p_ik - 1[y_i = k])^2`` (Brier 1950).

    The squared error summed over the K classes (not divided by K), so it lies
    in [0, 2]: 0 for a confident correct prediction, 2 for a confident wrong
    one, ``1 - 1/K`` for uniform probabilities.

    Parameters
    ----------
    probs
        ``(n, K)`` class probabilities (each row sums to 1).
    y
        ``(n,)`` integer labels in ``0..K-1``.

    Returns
    -------
    jax.Array
        Scalar in [0, 2]; lower is better.
    """
    return _brier(*_check_probs_labels(probs, y))


def agreement(probs, ref_probs) -> jax.Array:
    """Top-1 agreement with a reference predictive: the fraction of examples whose most probable classes agree.

    ``mean_i 1[argmax_k p_ik = argmax_k q_ik]``, the fidelity metric of
    Izmailov, Vikram, Hoffman & Wilson, "What are Bayesian neural network
    posteriors really like?", ICML 2021, with ``q`` the predictive of a
    reference posterior (HMC there; :func:`sgmcmc.reference.reference_predictive`
    here). It needs no labels. Ties go to the lowest class index in both.

    Parameters
    ----------
    probs
        ``(n, K)`` class probabilities of the method being scored.
    ref_probs
        ``(n, K)`` class probabilities of the reference, same shape.

    Returns
    -------
    jax.Array
        Scalar in [0, 1]; 1 when the predicted classes are the same everywhere.
    """
    return _agreement(*_check_probs_pair(probs, ref_probs))


def total_variation(probs, ref_probs) -> jax.Array:
    """Mean total variation distance to a reference predictive, ``mean_i (1/2) sum_k |p_ik - q_ik|``.

    The per-example total variation between the two categorical predictive
    distributions, averaged over examples (Izmailov et al. 2021, see
    :func:`agreement`). Unlike agreement it sees differences in confidence,
    not only in the predicted class.

    Parameters
    ----------
    probs
        ``(n, K)`` class probabilities of the method being scored.
    ref_probs
        ``(n, K)`` class probabilities of the reference, same shape.

    Returns
    -------
    jax.Array
        Scalar in [0, 1]; 0 for identical predictives, 1 when every example's
        two distributions have disjoint support.
    """
    return _total_variation(*_check_probs_pair(probs, ref_probs))


def _check_regression(means, y, scales=None) -> tuple:
    """Validate per-draw means ``(..., n)``, targets ``(n,)`` and scales broadcastable to the means."""
    if np.ndim(means) < 1:
        raise ValueError(f"means must have shape (n,) or (draws..., n), got shape {np.shape(means)}.")
    if np.ndim(y) != 1:
        raise ValueError(f"y must have shape (n,), got shape {np.shape(y)}.")
    n = np.shape(means)[-1]
    if np.shape(y)[0] != n:
        raise ValueError(
            f"means has {n} examples on its last axis but y has {np.shape(y)[0]}; they must match "
            "(the draws go on the leading axes of means)."
        )
    if n == 0 or 0 in np.shape(means):
        raise ValueError(f"means of shape {np.shape(means)} is empty; need at least one draw and one example.")
    for name, value in (("means", means), ("y", y)):
        dtype = _dtype(value)
        if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)):
            raise ValueError(f"{name} must be real numbers, got dtype {dtype}.")
        if _is_concrete(value) and not np.all(np.isfinite(np.asarray(value, np.float64))):
            raise ValueError(f"{name} contains non-finite values (NaN or inf).")
    means = jnp.asarray(means)
    if not jnp.issubdtype(means.dtype, jnp.floating):
        means = means.astype(jnp.float32)
    dtype = means.dtype
    out = [means, jnp.asarray(y).astype(dtype)]
    if scales is not None:
        try:
            np.broadcast_shapes(np.shape(scales), np.shape(means))
        except ValueError:
            raise ValueError(
                f"scales of shape {np.shape(scales)} does not broadcast to the means' shape {np.shape(means)}; "
                "pass a scalar, one scale per example (n,), per draw (S, 1), or per draw and example."
            ) from None
        if np.broadcast_shapes(np.shape(scales), np.shape(means)) != np.shape(means):
            raise ValueError(f"scales of shape {np.shape(scales)} has more entries than means {np.shape(means)}.")
        if _is_concrete(scales):
            s_np = np.asarray(scales, np.float64)
            if not (np.all(np.isfinite(s_np)) and np.all(s_np > 0)):
                raise ValueError("scales (noise standard deviations) must be finite and positive.")
        out.append(jnp.asarray(scales).astype(dtype))
    return tuple(out)


def predictive_log_density(means, scales, y) -> jax.Array:
    """Mean log predictive density of a Gaussian mixture over draws, ``mean_i log p(y_i | x_i, D)`` (nats).

    With per-draw means ``mu_si`` and noise standard deviations ``sigma_si``,

        log p(y_i | x_i, D) = logsumexp_s log N(y_i; mu_si, sigma_si^2) - log S,

    the log density of the posterior predictive (a mixture, not a Gaussian
    with the averaged mean), computed in log space. The regression analogue
    of :func:`nll` with the sign flipped: higher is better.

    Parameters
    ----------
    means
        Predictive means, ``(n,)`` for one draw or ``(draws..., n)``; every
        leading axis is a draw axis (``(S, n)``, ``(chain, draw, n)``).
    scales
        Noise standard deviations (> 0), broadcastable to ``means``: a scalar,
        ``(n,)`` per example, ``(S, 1)`` per draw (a learned noise scale), or
        the full shape.
    y
        ``(n,)`` observed targets.

    Returns
    -------
    jax.Array
        Scalar; higher is better.
    """
    means, y, scales = _check_regression(means, y, scales)
    return _log_density(means, scales, y)


def rmse(means, y) -> jax.Array:
    """Root mean squared error of the predictive mean, ``sqrt(mean_i (mean_s mu_si - y_i)^2)``.

    The predictive mean of the mixture is the average of the per-draw means,
    whatever the noise scales.

    Parameters
    ----------
    means
        Predictive means, ``(n,)`` or ``(draws..., n)`` (every leading axis a draw axis).
    y
        ``(n,)`` observed targets.

    Returns
    -------
    jax.Array
        Scalar >= 0; lower is better.
    """
    means, y = _check_regression(means, y)
    return _rmse(means, y)


def interval_coverage(means, scales, y, level: float = 0.9) -> jax.Array:
    """Fraction of targets inside the central ``level`` predictive interval.

    The interval is the predictive's own central interval
    ``[q_{(1-level)/2}, q_{(1+level)/2}]`` of the Gaussian mixture over draws
    (see :func:`predictive_log_density`), so ``y_i`` is covered iff the
    mixture's CDF at ``y_i``, ``F_i(y_i) = mean_s Phi((y_i - mu_si) / sigma_si)``,
    lies in ``[(1-level)/2, (1+level)/2]``: no quantile of the mixture is
    solved for. A calibrated predictive covers a fraction ``level`` of the
    targets, up to binomial noise ``sqrt(level (1-level) / n)``.

    Parameters
    ----------
    means, scales, y
        As in :func:`predictive_log_density`.
    level
        Nominal coverage in (0, 1) (default 0.9).

    Returns
    -------
    jax.Array
        Scalar in [0, 1]; compare with ``level``.
    """
    if isinstance(level, bool) or not isinstance(level, (int, float, np.floating)) or not 0 < level < 1:
        raise ValueError(f"level must be a number in (0, 1), got {level!r}.")
    means, y, scales = _check_regression(means, y, scales)
    return _coverage(means, scales, y, jnp.asarray(level, means.dtype))
