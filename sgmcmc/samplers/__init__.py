"""Samplers: every one is a pair of pure functions ``init`` / ``step``.

See :mod:`sgmcmc.samplers.base` for the contract.
"""

from sgmcmc.samplers.base import REGISTRY, SHARED_INFO_FIELDS, Sampler, register
from sgmcmc.samplers.hmc import HMCInfo, HMCState, hmc
from sgmcmc.samplers.mala import mala
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
    "sgld",
    "SGLDState",
    "SGLDInfo",
]
