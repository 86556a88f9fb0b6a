"""Samplers: every one is a pair of pure functions ``init`` / ``step``.

See :mod:`sgmcmc.samplers.base` for the contract.
"""

from sgmcmc.samplers.baoab import BAOABState, baoab
from sgmcmc.samplers.base import REGISTRY, SHARED_INFO_FIELDS, Sampler, register
from sgmcmc.samplers.chees_hmc import ChEESState, chees_hmc
from sgmcmc.samplers.constant_sgd import ConstantSGDState, StabilityWarning, constant_sgd
from sgmcmc.samplers.flow_mh import FlowMHInfo, FlowMHState, flow_mh
from sgmcmc.samplers.hmc import HMCInfo, HMCState, hmc
from sgmcmc.samplers.mala import mala
from sgmcmc.samplers.neutra import NeuTraInfo, NeuTraState, neutra
from sgmcmc.samplers.nuts import NUTSInfo, nuts
from sgmcmc.samplers.psgld import PSGLDState, psgld
from sgmcmc.samplers.sg_common import SGInfo
from sgmcmc.samplers.sghmc import SGHMCState, sghmc
from sgmcmc.samplers.sgld import SGLDInfo, SGLDState, sgld
from sgmcmc.samplers.sgld_cv import SGLDCVState, sgld_cv
from sgmcmc.samplers.sgnht import SGNHTInfo, SGNHTState, sgnht
from sgmcmc.samplers.swag import SWAGState, swag

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
    "SGInfo",
    "psgld",
    "PSGLDState",
    "sghmc",
    "SGHMCState",
    "sgnht",
    "SGNHTState",
    "SGNHTInfo",
    "baoab",
    "BAOABState",
    "sgld_cv",
    "SGLDCVState",
    "constant_sgd",
    "ConstantSGDState",
    "StabilityWarning",
    "swag",
    "SWAGState",
    "flow_mh",
    "FlowMHState",
    "FlowMHInfo",
    "neutra",
    "NeuTraState",
    "NeuTraInfo",
]
