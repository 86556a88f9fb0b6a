"""Diagnostics: ArviZ conversion and what ArviZ lacks for this job."""

from sgmcmc.diagnostics.arviz import to_arviz
from sgmcmc.diagnostics.predictive import (
    accuracy,
    agreement,
    brier_score,
    expected_calibration_error,
    interval_coverage,
    nll,
    posterior_predictive_probs,
    predictive_log_density,
    rmse,
    total_variation,
)

__all__ = [
    "accuracy",
    "agreement",
    "brier_score",
    "expected_calibration_error",
    "interval_coverage",
    "nll",
    "posterior_predictive_probs",
    "predictive_log_density",
    "rmse",
    "to_arviz",
    "total_variation",
]
