"""Learned Metropolis proposals: trained, then frozen, always exact.

* :mod:`sgmcmc.learned.training`: the training loop shared by every learned
  kernel (:func:`train`), its report and the cost ledger;
* :mod:`sgmcmc.learned.l2hmc`: L2HMC, a learned leapfrog (Levy, Hoffman &
  Sohl-Dickstein 2018);
* :mod:`sgmcmc.learned.a_nice_mc`: A-NICE-MC, a volume-preserving NICE
  proposal on (x, v) (Song, Zhao & Ermon 2017), trained by ESJD or
  adversarially.

Typical use::

    kernel = sgmcmc.learned.l2hmc_kernel(dim, num_leapfrog_steps=10)
    params, report = sgmcmc.learned.train(kernel, target, key=0, num_steps=2000)
    sampler = kernel.sampler(target, params)        # an ordinary, exact Sampler
    result = sgmcmc.sample(sampler, num_samples=1000, seed=1)
    sgmcmc.learned.cost_ledger(report, result)      # training cost next to sampling cost
"""

from sgmcmc.learned.a_nice_mc import a_nice_mc, a_nice_mc_kernel, nice_proposal
from sgmcmc.learned.l2hmc import l2hmc, l2hmc_kernel, l2hmc_map
from sgmcmc.learned.training import (
    Chains,
    Trainable,
    TrainReport,
    TrainResult,
    cost_ledger,
    reciprocal_esjd_loss,
    train,
)

__all__ = [
    "train",
    "Trainable",
    "Chains",
    "TrainReport",
    "TrainResult",
    "cost_ledger",
    "reciprocal_esjd_loss",
    "l2hmc",
    "l2hmc_kernel",
    "l2hmc_map",
    "a_nice_mc",
    "a_nice_mc_kernel",
    "nice_proposal",
]
