"""Diagnostics: ArviZ conversion and what ArviZ lacks for this job."""

from sgmcmc.diagnostics.arviz import to_arviz

__all__ = ["to_arviz"]
