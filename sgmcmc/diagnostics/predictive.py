"""Predictive metrics for classifiers: accuracy, NLL, ECE, Brier.

A Bayesian classifier predicts with the posterior predictive distribution

    p(y | x, D) ~= (1/S) sum_s softmax(f(x; theta_s)),

the average over draws ``theta_s`` of the class probabilities, not the
probabilities of an average network. :func:`posterior_predictive_probs` forms
that average from per-draw logits; the metric functions then score any
``(n, K)`` matrix of class probabilities against integer labels ``(n,)``, so a
point estimate (one draw) and a posterior are scored the same way.

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
]

#: How far a row of probabilities may sum from 1 (float32 softmax averages are
#: within ~1e-6; this leaves room for probabilities that were stored rounded).
PROB_SUM_ATOL = 1e-3


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _dtype(x) -> np.dtype:
    dtype = getattr(x, "dtype", None)
    return np.asarray(x).dtype if dtype is None else dtype


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
    if num_classes < 2:
        raise ValueError(f"probs must have at least 2 classes (columns), got {num_classes}.")
    y_dtype = _dtype(y)
    if not jnp.issubdtype(y_dtype, jnp.integer):
        raise ValueError(f"y must hold integer class labels, got dtype {y_dtype}.")
    probs_dtype = _dtype(probs)
    if not jnp.issubdtype(probs_dtype, jnp.floating):
        raise ValueError(f"probs must be floating point, got dtype {probs_dtype}.")

    if _is_concrete(y):
        y_np = np.asarray(y)
        if y_np.min() < 0 or y_np.max() >= num_classes:
            raise ValueError(
                f"labels must be in 0..{num_classes - 1} for {num_classes} classes; "
                f"got values from {y_np.min()} to {y_np.max()}."
            )
    if _is_concrete(probs):
        p_np = np.asarray(probs, np.float64)
        if not np.all(np.isfinite(p_np)):
            raise ValueError("probs contains non-finite values (NaN or inf).")
        if p_np.min() < 0 or p_np.max() > 1 + PROB_SUM_ATOL:
            raise ValueError(f"probs must lie in [0, 1]; got values from {p_np.min():.4g} to {p_np.max():.4g}.")
        sums = p_np.sum(axis=1)
        worst = int(np.argmax(np.abs(sums - 1)))
        if abs(sums[worst] - 1) > PROB_SUM_ATOL:
            raise ValueError(
                f"each row of probs must sum to 1 (within {PROB_SUM_ATOL}); row {worst} sums to {sums[worst]:.6g}. "
                "Pass probabilities, not logits (see posterior_predictive_probs)."
            )
    return jnp.asarray(probs), jnp.asarray(y)


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


@jax.jit
def _brier(probs: jax.Array, y: jax.Array) -> jax.Array:
    one_hot = jax.nn.one_hot(y, probs.shape[-1], dtype=probs.dtype)
    return jnp.mean(jnp.sum((probs - one_hot) ** 2, axis=-1))


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


def expected_calibration_error(probs, y, num_bins: int = 15) -> jax.Array:
    """Expected calibration error with equal-width confidence bins (Guo et al. 2017).

    The confidence of an example is its largest class probability and its
    prediction the corresponding class. Examples are put in ``num_bins``
    equal-width bins ``((m - 1)/M, m/M]`` by confidence, and

        ECE = sum_m (|B_m| / n) * |accuracy(B_m) - mean confidence(B_m)|.

    Empty bins contribute nothing. A perfect, fully confident classifier has
    ECE 0. (Guo, Pleiss, Sun & Weinberger, "On calibration of modern neural
    networks", ICML 2017.)

    Parameters
    ----------
    probs
        ``(n, K)`` class probabilities (each row sums to 1).
    y
        ``(n,)`` integer labels in ``0..K-1``.
    num_bins
        Number of bins M (default 15, as in Guo et al.).

    Returns
    -------
    jax.Array
        Scalar in [0, 1]; lower is better.
    """
    if isinstance(num_bins, bool) or not isinstance(num_bins, (int, np.integer)) or num_bins < 1:
        raise ValueError(f"num_bins must be a positive integer, got {num_bins!r}.")
    return _ece(*_check_probs_labels(probs, y), int(num_bins))


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
