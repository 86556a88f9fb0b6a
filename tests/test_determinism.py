"""Same seed, same draws: across chunk sizes, the progress bar and a checkpoint/resume boundary.

``tests/test_driver.py`` checks chunking for HMC and ``tests/test_checkpoint.py``
resumption for NUTS and SGLD; this extends both to the samplers whose state or
warmup carries more: ChEES-HMC (adaptation pooled across chains), SGHMC
(momentum; its plain burn-in program differs from the adaptive one HMC uses in
``test_driver``, so it is also run with a second chunk size) and pSGLD (the
preconditioner's running average). The progress bar and the resumed run reuse
the compiled program of the reference run (compile time is most of this file).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sgmcmc
from sgmcmc.reducers import running_moments


class Stop(Exception):
    pass


def target():
    return sgmcmc.Target.from_logdensity(
        lambda p: -0.5 * jnp.sum(p["x"] ** 2 / jnp.array([1.0, 4.0])) - 0.5 * p["y"] ** 2,
        {"x": jnp.zeros(2), "y": jnp.zeros(())},
    )


BUILDERS = {
    "chees_hmc": lambda t: sgmcmc.chees_hmc(t, 0.3),
    "sghmc": lambda t: sgmcmc.sghmc(t, 0.05),
    "psgld": lambda t: sgmcmc.psgld(t, 1e-3),
}

#: Where the interrupted run stops: inside warmup (the adaptation state is restored) or in sampling.
STOP_AT = {"chees_hmc": 17, "sghmc": 55, "psgld": 41}


def identical(a, b) -> bool:
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(np.array_equal(x, y) for x, y in zip(la, lb))


@pytest.mark.parametrize("name", list(BUILDERS))
def test_same_draws_across_chunking_progress_and_resume(name, tmp_path):
    sampler = BUILDERS[name](target())
    kw = dict(num_samples=20, num_warmup=30, num_chains=3, seed=11, thin=2, reducers={"m": running_moments()})
    reference = sgmcmc.sample(sampler, chunk_size=5, progress=False, **kw)
    assert np.all(np.isfinite(reference.position["x"]))
    with_bar = sgmcmc.sample(sampler, chunk_size=5, progress=True, **kw)
    assert identical(
        (reference.position, reference.info, reference.reductions),
        (with_bar.position, with_bar.info, with_bar.reductions),
    )
    if name == "sghmc":
        other_chunks = sgmcmc.sample(sampler, chunk_size=64, progress=False, **kw)
        assert identical((reference.position, reference.info), (other_chunks.position, other_chunks.info))
        assert identical(reference.reductions, other_chunks.reductions)

    def stop_at(steps):
        if steps >= STOP_AT[name]:  # warmup is 30 steps, sampling 40
            raise Stop

    with pytest.raises(Stop):
        sgmcmc.sample(sampler, chunk_size=5, progress=False, checkpoint=tmp_path, callback=stop_at, **kw)
    resumed = sgmcmc.sample(sampler, chunk_size=5, progress=True, checkpoint=tmp_path, **kw)
    assert identical((reference.position, reference.info), (resumed.position, resumed.info))
    assert identical(reference.reductions, resumed.reductions)
    np.testing.assert_array_equal(reference.num_grad_evals, resumed.num_grad_evals)
    # A different seed gives different draws (the comparison above can fail).
    other_seed = sgmcmc.sample(sampler, chunk_size=5, progress=False, **{**kw, "seed": 12})
    assert not np.array_equal(reference.position["x"], other_seed.position["x"])
