"""The flat phase-space view shared by the HMC family.

HMC, MALA, NUTS, ChEES-HMC and the step-size search all integrate on flat
vectors: the position and its gradient raveled (``ravel_pytree`` order), the
Euclidean metric of the state's inverse mass matrix, and a log density that
takes and returns flat vectors. :func:`flat_view` builds these once per
transition.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
from jax.flatten_util import ravel_pytree

from sgmcmc.samplers.metrics import Metric, gaussian_euclidean
from sgmcmc.target import Target

__all__ = ["FlatView", "flat_view"]


class FlatView(NamedTuple):
    position: jax.Array
    logdensity_grad: jax.Array
    unravel: Callable[[jax.Array], object]
    metric: Metric
    logdensity_and_grad: Callable[[jax.Array], tuple[jax.Array, jax.Array]]


def flat_view(state, target: Target) -> FlatView:
    """Flat position and gradient of ``state``, its metric, and a flat log density of ``target``."""
    flat, unravel = ravel_pytree(state.position)
    flat_grad, _ = ravel_pytree(state.logdensity_grad)

    def logdensity_and_grad(x):
        value, grad = jax.value_and_grad(target.logdensity)(unravel(x))
        return value, ravel_pytree(grad)[0]

    return FlatView(flat, flat_grad, unravel, gaussian_euclidean(state.inverse_mass_matrix), logdensity_and_grad)
