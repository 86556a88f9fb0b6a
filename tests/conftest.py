"""Shared helpers for the test suite: Monte Carlo standard errors and small targets."""

from __future__ import annotations

import os

os.environ.setdefault("MPLBACKEND", "Agg")

import arviz as az
import jax.numpy as jnp
import numpy as np
import pytest

import sgmcmc


def ess(draws: np.ndarray) -> float:
    """Bulk effective sample size of ``draws`` with shape (chain, draw), by ArviZ."""
    return float(az.ess(np.asarray(draws, np.float64), method="bulk"))


def mean_z(draws: np.ndarray, true_mean: float) -> float:
    """z-score of the sample mean against ``true_mean`` using the ESS-based MCSE."""
    draws = np.asarray(draws, np.float64)
    se = draws.std() / np.sqrt(ess(draws))
    return float((draws.mean() - true_mean) / se)


def var_z(draws: np.ndarray, true_var: float) -> float:
    """z-score of the sample variance: the MCSE is that of the mean of (x - mean)^2."""
    draws = np.asarray(draws, np.float64)
    sq = (draws - draws.mean()) ** 2
    se = sq.std() / np.sqrt(ess(sq))
    return float((sq.mean() - true_var) / se)


def reference_z(draws: np.ndarray, ref: dict) -> tuple[float, float]:
    """z-scores of the mean and the sd of ``draws`` (chain, draw) against a reference summary.

    ``ref`` holds the reference ``mean``, ``sd`` and their Monte Carlo standard
    errors ``mcse_mean``, ``mcse_sd`` (as in ``data/posteriordb_summaries.json``).
    Both runs' errors are combined: z = (run - ref) / sqrt(se_run^2 + se_ref^2),
    with the run's errors from ArviZ's bulk ESS (of x for the mean, of
    (x - mean)^2 for the variance, carried to the sd by the delta method).
    """
    draws = np.asarray(draws, np.float64)
    mean, sd = draws.mean(), draws.std()
    se_mean = sd / np.sqrt(ess(draws))
    sq = (draws - mean) ** 2
    se_sd = sq.std() / np.sqrt(ess(sq)) / (2 * sd)
    z_mean = (mean - ref["mean"]) / np.hypot(se_mean, ref["mcse_mean"])
    z_sd = (sd - ref["sd"]) / np.hypot(se_sd, ref["mcse_sd"])
    return float(z_mean), float(z_sd)


def assert_moments(draws: np.ndarray, means, variances, z: float = 4.0, label: str = "") -> None:
    """Every coordinate's mean and variance within ``z`` MCSE of the truth.

    ``draws`` has shape (chain, draw, dim).
    """
    failures = []
    for i in range(draws.shape[-1]):
        zm = mean_z(draws[..., i], means[i])
        zv = var_z(draws[..., i], variances[i])
        if abs(zm) >= z or abs(zv) >= z:
            failures.append(f"dim {i}: mean z={zm:.2f}, var z={zv:.2f}")
    assert not failures, f"{label}: moments off by more than {z} MCSE: " + "; ".join(failures)


@pytest.fixture
def linear_regression_target():
    """A small Bayesian linear regression with a nested pytree position."""
    rng = np.random.default_rng(0)
    n, d = 64, 3
    x = rng.normal(size=(n, d)).astype(np.float32)
    w_true = np.array([1.0, -2.0, 0.5], np.float32)
    y = (x @ w_true + 0.3 + 0.5 * rng.normal(size=n)).astype(np.float32)

    def logprior(p):
        return -0.5 * (jnp.sum(p["w"] ** 2) + jnp.sum(p["bias"]["b"] ** 2))

    def loglik(p, batch):
        mu = batch["x"] @ p["w"] + p["bias"]["b"]
        return -0.5 * ((batch["y"] - mu) / 0.5) ** 2

    init = {"w": jnp.zeros(d), "bias": {"b": jnp.zeros(())}}
    return sgmcmc.Target.from_data(logprior, loglik, {"x": x, "y": y}, init, name="linreg")
