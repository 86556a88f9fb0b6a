"""Samplers: every one is a pair of pure functions ``init`` / ``step``.

See :mod:`sgmcmc.samplers.base` for the contract.
"""

from sgmcmc.samplers.base import REGISTRY, SHARED_INFO_FIELDS, Sampler, register
from sgmcmc.samplers.chees_hmc import ChEESState, chees_hmc
from sgmcmc.samplers.hmc import HMCInfo, HMCState, hmc
from sgmcmc.samplers.mala import mala
from sgmcmc.samplers.nuts import NUTSInfo, nuts
from sgmcmc.samplers.sgld import SGLDInfo, SGLDState, sgld

__all__ = [
    "REGISTRY",
    "SHARED_INFO_FIELDS",
    "Sampler",
    "register",
    "hmc",
    "HMCState",
    "HMCInfo",
    "mala",
    "nuts",
    "chees_hmc",
    "ChEESState",
    "NUTSInfo",
    "sgld",
    "SGLDState",
    "SGLDInfo",
]
