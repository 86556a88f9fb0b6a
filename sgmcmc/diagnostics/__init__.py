"""Diagnostics: ArviZ conversion and what ArviZ lacks for this job."""

from sgmcmc.diagnostics import sbc, sbc_models  # sbc.sbc(model, build_sampler): the module keeps its name
from sgmcmc.diagnostics.arviz import to_arviz
from sgmcmc.diagnostics.convergence import (
    ConvergenceSummary,
    ess,
    function_space_summary,
    predicted_class_log_probs,
    rhat,
    summary,
)
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
from sgmcmc.diagnostics.sbc import SBCModel, SBCResult, rank_uniformity

__all__ = [
    "ConvergenceSummary",
    "SBCModel",
    "SBCResult",
    "accuracy",
    "agreement",
    "brier_score",
    "ess",
    "expected_calibration_error",
    "function_space_summary",
    "interval_coverage",
    "nll",
    "posterior_predictive_probs",
    "predicted_class_log_probs",
    "predictive_log_density",
    "rank_uniformity",
    "rhat",
    "rmse",
    "sbc",
    "sbc_models",
    "summary",
    "to_arviz",
    "total_variation",
]
