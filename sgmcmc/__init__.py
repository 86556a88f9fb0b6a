"""sgmcmc: Bayesian sampling in JAX, from stochastic gradient descent to exact MCMC.

One interface for every sampler::

    target = sgmcmc.Target.from_numpyro(model, x, y)
    sampler = sgmcmc.hmc(target, step_size=0.1, num_integration_steps=20)
    result = sgmcmc.sample(sampler, num_samples=1000, num_warmup=500, seed=0)
    idata = result.to_arviz()
"""

from sgmcmc import adaptation, convert, gradients, noise, schedules
from sgmcmc.result import SampleResult
from sgmcmc.run import sample
from sgmcmc.samplers import (
    REGISTRY,
    Sampler,
    baoab,
    chees_hmc,
    hmc,
    mala,
    nuts,
    psgld,
    sghmc,
    sgld,
    sgld_cv,
    sgnht,
)
from sgmcmc.target import Target

__version__ = "0.1.0"

__all__ = [
    "Target",
    "Sampler",
    "SampleResult",
    "sample",
    "sgld",
    "psgld",
    "sghmc",
    "sgnht",
    "baoab",
    "sgld_cv",
    "mala",
    "hmc",
    "nuts",
    "chees_hmc",
    "adaptation",
    "REGISTRY",
    "gradients",
    "noise",
    "schedules",
    "convert",
    "__version__",
]
