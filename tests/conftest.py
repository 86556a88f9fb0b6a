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


# -- stochastic-gradient samplers: Gaussian targets and closed-form stationary moments --

#: Variances of the anisotropic 10-d Gaussian used by the SG-MCMC stationarity tests.
S2_10D = np.linspace(0.5, 2.0, 10)


def gaussian_10d_target(start: float = 0.0) -> sgmcmc.Target:
    """``N(0, diag(S2_10D))`` as a plain log density, chains starting at ``start`` in every coordinate."""
    s2 = jnp.asarray(S2_10D, jnp.float32)
    return sgmcmc.Target.from_logdensity(
        lambda p: -0.5 * jnp.sum(p["x"] ** 2 / s2), {"x": jnp.full(10, start, jnp.float32)}, name="gaussian10"
    )


def variance_se(draws: np.ndarray) -> float:
    """Monte Carlo standard error of the sample variance of ``draws`` (chain, draw), ESS-based."""
    draws = np.asarray(draws, np.float64)
    sq = (draws - draws.mean()) ** 2
    return float(sq.std() / np.sqrt(ess(sq)))


def assert_stationary_variance(
    draws, predicted, tempered, z: float = 4.0, allowance: float = 0.0, label: str = ""
) -> None:
    """Per coordinate of ``draws`` (chain, draw, dim):

    1. the sample variance is within ``z`` MCSE of ``predicted``, the chain's exact
       (discretised) stationary variance, which fails for a wrong noise scale,
       temperature or gradient scaling;
    2. it is within the predicted bias ``|predicted - tempered|`` plus ``z`` MCSE of
       ``tempered`` = T x the target variance: the sampler is as close to
       ``pi^(1/T)`` as its known discretisation bias allows.

    ``allowance`` (relative to ``predicted``) widens both checks where the prediction
    itself is only approximate (say by how much, and why, where it is used).
    """
    draws = np.asarray(draws, np.float64)
    failures = []
    for i in range(draws.shape[-1]):
        x = draws[..., i]
        var, se = x.var(), variance_se(x)
        slack = z * se + allowance * predicted[i]
        if abs(var - predicted[i]) >= slack:
            failures.append(f"dim {i}: var {var:.4f} vs discretised {predicted[i]:.4f} (se {se:.4f})")
        if abs(var - tempered[i]) >= abs(predicted[i] - tempered[i]) + slack:
            failures.append(f"dim {i}: var {var:.4f} vs tempered {tempered[i]:.4f} beyond bias + {z} se")
    assert not failures, f"{label}: " + "; ".join(failures)


def linear_regression_arrays(target) -> tuple[np.ndarray, np.ndarray, float]:
    """Design matrix (with a bias column), response and noise variance of ``linear_regression_target``."""
    x = np.asarray(target.data["x"], np.float64)
    design = np.concatenate([x, np.ones((x.shape[0], 1))], axis=1)
    return design, np.asarray(target.data["y"], np.float64), 0.25


def linear_regression_posterior(target) -> tuple[np.ndarray, np.ndarray]:
    """Exact posterior mean and covariance of ``linear_regression_target`` (prior N(0, I))."""
    design, y, noise_var = linear_regression_arrays(target)
    precision = design.T @ design / noise_var + np.eye(design.shape[1])
    cov = np.linalg.inv(precision)
    return cov @ design.T @ y / noise_var, cov


def minibatch_sgld_covariance(target, eps: float, batch_size: int, temperature: float = 1.0, centre=None):
    """Exact stationary covariance of minibatch SGLD (or SGLD-CV around ``centre``) on the linear regression.

    The update is linear with a random matrix: writing ``A_B = P + (N/n) sum_j X_{i_j}``
    (``X_i = x_i x_i^T / sigma^2``, indices i.i.d. uniform, with replacement) and ``m``
    the posterior mean,

        theta' - m = (I - (eps/2) A_B)(theta - m) + c_B + sqrt(eps T) xi,

    with ``c_B = (eps/2)(N/n) sum_j (z_{i_j} - z_bar)``, ``z_i = x_i (y_i - x_i^T m) / sigma^2``
    for plain SGLD and ``c_B = -(eps/2)(A_B - A)(m - centre)`` for SGLD-CV. The chain's
    mean is exactly ``m``; ``theta`` is independent of the fresh batch, so the covariance
    solves ``S = E[M_B S M_B] + Cov(c_B) + eps T I``, a linear system in ``vec(S)``.
    """
    design, y, noise_var = linear_regression_arrays(target)
    num, dim = design.shape
    mean, _ = linear_regression_posterior(target)
    per_example = np.einsum("ni,nj->nij", design, design) / noise_var
    avg = per_example.mean(0)
    a = np.eye(dim) + num * avg
    m = np.eye(dim) - 0.5 * eps * a
    k = (0.5 * eps) ** 2 * num**2 / batch_size
    dev = per_example - avg
    if centre is None:
        z = design * ((y - design @ mean) / noise_var)[:, None]
        zc = z - z.mean(0)
        noise_cov = k * zc.T @ zc / num
    else:
        d = dev @ (mean - np.asarray(centre, np.float64))
        noise_cov = k * d.T @ d / num
    lin = (
        np.eye(dim * dim) - np.kron(m, m) - k * np.einsum("nij,nkl->ikjl", dev, dev).reshape(dim * dim, dim * dim) / num
    )
    rhs = (noise_cov + eps * temperature * np.eye(dim)).reshape(-1)
    cov = np.linalg.solve(lin, rhs).reshape(dim, dim)
    return mean, 0.5 * (cov + cov.T)
