"""Warmup adaptation: tuning step sizes, mass matrices and trajectory lengths.

See :mod:`sgmcmc.adaptation.base` for the contract the driver runs.
"""

from sgmcmc.adaptation.base import Warmup
from sgmcmc.adaptation.chees import chees_adaptation
from sgmcmc.adaptation.window import window_adaptation, window_schedule

__all__ = ["Warmup", "chees_adaptation", "window_adaptation", "window_schedule"]
