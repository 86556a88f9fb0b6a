"""NUTS matches posteriordb's reference posteriors.

Nine posteriors from posteriordb (https://github.com/stan-dev/posteriordb),
written as NumPyro models in ``posteriordb_models.py``, each sampled through
``Target.from_numpyro`` with ``sgmcmc.nuts`` (4 chains, Stan-style warmup,
fixed seed). Every posteriordb reference column's mean and sd must agree
with the reference summary (``data/posteriordb_summaries.json``, from 10 x 1000
near-independent Stan draws) within |z| < 4, where
z = (run - ref) / sqrt(se_run^2 + se_ref^2) and both Monte Carlo standard
errors come from ArviZ's ESS. About 100 comparisons are made; under a correct
sampler |z| beyond 4 has probability ~6e-5 per comparison.
"""

from __future__ import annotations

import contextlib
import functools

import jax
import numpy as np
import pytest
from conftest import reference_z
from posteriordb_models import POSTERIORS, load_reference

import sgmcmc

NUM_CHAINS = 4
SEED = 0
Z_MAX = 4.0

requires_nuts = pytest.mark.skipif(
    not hasattr(sgmcmc, "nuts"), reason="sgmcmc.nuts is not implemented yet (NUTS sampler pending)"
)


def _precision(spec):
    """Double precision for the posteriors that need it, float32 (the suite's default) otherwise."""
    return jax.enable_x64(True) if spec.x64 else contextlib.nullcontext()


@functools.cache
def _target(name: str) -> sgmcmc.Target:
    spec = POSTERIORS[name]
    with _precision(spec):
        args, kwargs = spec.args()
        return sgmcmc.Target.from_numpyro(spec.model, *args, init_strategy=spec.init_strategy, **kwargs)


@pytest.mark.parametrize("name", list(POSTERIORS))
def test_model_gives_reference_columns(name):
    """The model builds a target with a finite log density, and its sites give exactly the reference columns."""
    spec = POSTERIORS[name]
    target = _target(name)
    with _precision(spec):
        assert np.isfinite(float(target.logdensity(target.initial_position)))
        constrained = target.constrain(target.initial_position)
    dtype = np.float64 if spec.x64 else np.float32
    assert all(np.asarray(v).dtype == dtype for v in jax.tree.leaves(constrained))
    columns = spec.to_columns({k: np.asarray(v)[None, None] for k, v in constrained.items()})
    assert sorted(columns) == sorted(load_reference(name))
    assert all(v.shape == (1, 1) for v in columns.values())


@requires_nuts
@pytest.mark.slow
@pytest.mark.parametrize("name", list(POSTERIORS))
def test_nuts_matches_posteriordb(name, record_property):
    spec = POSTERIORS[name]
    target = _target(name)
    with _precision(spec):
        sampler = sgmcmc.nuts(target, target_accept=spec.target_accept, metric=spec.metric)
        result = sgmcmc.sample(
            sampler,
            num_samples=spec.num_samples,
            num_warmup=spec.num_warmup,
            num_chains=NUM_CHAINS,
            seed=SEED,
            progress=False,
        )
    samples = result.samples
    with_nan = sorted(k for k, v in samples.items() if np.isnan(v).any())
    assert not with_nan, f"{name}: NaN draws at sites {with_nan}"

    reference = load_reference(name)
    columns = spec.to_columns(samples)
    assert sorted(columns) == sorted(reference)
    z = {column: reference_z(columns[column], ref) for column, ref in reference.items()}
    worst = max(z, key=lambda c: max(abs(z[c][0]), abs(z[c][1])))
    max_z = max(abs(z[worst][0]), abs(z[worst][1]))
    record_property("max_abs_z", round(max_z, 3))
    failures = [f"{c}: z_mean={zm:.2f} z_sd={zs:.2f}" for c, (zm, zs) in z.items() if max(abs(zm), abs(zs)) >= Z_MAX]
    assert not failures, (
        f"{name}: max |z| = {max_z:.2f} at {worst} ({result.num_divergent} divergences); "
        f"|z| >= {Z_MAX}: " + "; ".join(failures)
    )
