"""What the posteriordb benchmarks share: the test suite's nine models as targets, and min bulk ESS.

Used by ``nuts_min_depth.py`` and ``chees_posteriordb.py``; the models, their
precision and their reference summaries live in ``tests/posteriordb_models.py``.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import jax
import numpy as np

import sgmcmc
from sgmcmc.diagnostics import convergence

TESTS = Path(__file__).resolve().parent.parent / "tests"


def posteriordb_targets(names: Sequence[str] = ()) -> Iterator[tuple[str, object, sgmcmc.Target]]:
    """``(name, spec, target)`` for each posterior (all, or those in ``names``).

    Each is yielded inside its precision context (``jax.enable_x64`` for the
    posteriors that need it) with divergence warnings silenced: run it before
    asking for the next one.
    """
    sys.path.insert(0, str(TESTS))
    from posteriordb_models import POSTERIORS  # the test suite's models

    for name, spec in POSTERIORS.items():
        if names and name not in names:
            continue
        with jax.enable_x64(bool(spec.x64)), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            args, kwargs = spec.args()
            yield name, spec, sgmcmc.Target.from_numpyro(spec.model, *args, init_strategy=spec.init_strategy, **kwargs)


def min_bulk_ess(result, num_chains: int, num_samples: int) -> float:
    """The smallest bulk ESS over every parameter of a run (its unconstrained draws)."""
    return min(
        float(np.min(convergence.ess(np.asarray(leaf).reshape(num_chains, num_samples, -1))))
        for leaf in jax.tree.leaves(result.position)
    )
