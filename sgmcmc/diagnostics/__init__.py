"""Diagnostics: ArviZ conversion and what ArviZ lacks for this job."""

from sgmcmc.diagnostics.arviz import to_arviz
from sgmcmc.diagnostics.predictive import (
    accuracy,
    brier_score,
    expected_calibration_error,
    nll,
    posterior_predictive_probs,
)

__all__ = [
    "accuracy",
    "brier_score",
    "expected_calibration_error",
    "nll",
    "posterior_predictive_probs",
    "to_arviz",
]
