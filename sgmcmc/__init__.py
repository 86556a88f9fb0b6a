"""sgmcmc: Bayesian sampling in JAX, from stochastic gradient descent to exact MCMC.

One interface for every sampler::

    target = sgmcmc.Target.from_numpyro(model, x, y)
    sampler = sgmcmc.hmc(target, step_size=0.1, num_integration_steps=20)
    result = sgmcmc.sample(sampler, num_samples=1000, num_warmup=500, seed=0)
    idata = result.to_arviz()
"""

from sgmcmc import (
    adaptation,
    bnn,
    checkpoint,
    convert,
    curvature,
    flows,
    gradient_noise,
    gradients,
    learned,
    noise,
    reducers,
    reference,
    schedules,
    sharding,
    stream,
    tuning,
)
from sgmcmc.iterate_averaging import IterateAverage, iterate_average
from sgmcmc.learned import a_nice_mc, l2hmc
from sgmcmc.result import SampleResult
from sgmcmc.run import sample
from sgmcmc.samplers import (
    REGISTRY,
    Sampler,
    baoab,
    chees_hmc,
    constant_sgd,
    flow_mh,
    hmc,
    mala,
    neutra,
    nuts,
    psgld,
    sghmc,
    sgld,
    sgld_cv,
    sgnht,
    swag,
)
from sgmcmc.swag_posterior import SWAGPosterior, fit_swag
from sgmcmc.target import Target

__version__ = "0.1.0"


def __getattr__(name):
    # sgmcmc.relaxed imports numpyro.distributions (0.3-0.6 s): loaded on first use.
    if name == "relaxed":
        import importlib

        return importlib.import_module("sgmcmc.relaxed")
    raise AttributeError(f"module 'sgmcmc' has no attribute {name!r}")


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
    "constant_sgd",
    "swag",
    "flow_mh",
    "neutra",
    "l2hmc",
    "a_nice_mc",
    "learned",
    "flows",
    "relaxed",
    "sharding",
    "stream",
    "fit_swag",
    "SWAGPosterior",
    "iterate_average",
    "IterateAverage",
    "curvature",
    "gradient_noise",
    "reference",
    "bnn",
    "checkpoint",
    "reducers",
    "tuning",
    "adaptation",
    "REGISTRY",
    "gradients",
    "noise",
    "schedules",
    "convert",
    "__version__",
]
