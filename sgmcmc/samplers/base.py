"""The sampler contract shared by every sampler in sgmcmc.

A sampler is a pair of pure functions, in the style of optax and BlackJAX:

* ``init(position) -> state``: a NamedTuple pytree holding at least
  ``position``;
* ``step(key, state, batch=None) -> (state, info)``: one transition. ``key``
  is a JAX PRNG key; ``batch`` optionally overrides the minibatch a
  stochastic-gradient sampler would otherwise draw itself.

Both are jit-able and vmap-able (chains are a vmapped batch of states), take
and return pytrees, and are deterministic given the key.

``info`` is a NamedTuple whose fields have the same name and meaning across
samplers wherever the quantity exists (see :data:`SHARED_INFO_FIELDS`):

===================  ==========================================================
``acceptance_rate``  Metropolis acceptance probability of this step (1.0 for
                     samplers without a Metropolis test)
``is_divergent``     the step met a non-finite value or an energy error beyond
                     the divergence threshold; the chain kept its last state
``step_size``        the step size used by this step
``num_grad_evals``   gradient evaluations spent by this step
``logdensity``       log density at the returned position (exact samplers) or
                     the minibatch estimate at the point where the step took its
                     gradient (stochastic-gradient samplers: the starting
                     position, or the returned one for BAOAB)
``energy``           Hamiltonian at the returned state (HMC family only)
===================  ==========================================================

A :class:`Sampler` also carries its target and a ``rebuild`` function that
makes the same sampler over another version of the target (the driver uses
it to pass the data into the compiled program as an argument rather than as a
constant). Factories register themselves in :data:`REGISTRY` so that tests can
check every sampler against this contract.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from sgmcmc.target import Target

__all__ = [
    "Sampler",
    "SHARED_INFO_FIELDS",
    "REGISTRY",
    "register",
    "CHAIN_AXIS",
    "same_across_chains",
    "any_across_chains",
]

#: Name of the ``vmap`` axis over which the driver runs the chains (:func:`sgmcmc.sample`).
CHAIN_AXIS = "sgmcmc_chains"


def _max_over_chains(x: jax.Array) -> jax.Array:
    """``lax.pmax(x, CHAIN_AXIS)`` (one unbatched value) under the driver's vmap over chains, else ``x``."""
    try:
        return lax.pmax(x, CHAIN_AXIS)
    except NameError:  # not inside the driver's vmap over chains
        return x


def same_across_chains(x: jax.Array) -> jax.Array:
    """``x``, a value equal in every chain by construction, unbatched under the driver's ``vmap``.

    Under the driver (the chains vmapped over :data:`CHAIN_AXIS`) this is
    ``lax.pmax`` over the chains, which gives one unbatched value: a loop
    whose trip count it is (ChEES-HMC's shared number of leapfrog steps) then
    runs as a plain loop, without the per-chain masking ``vmap`` adds to a
    loop with a per-chain trip count (a select per carry and a reduction of
    the loop condition at every step). Elsewhere (one chain, a user's own
    ``vmap``) it returns ``x``. Where ``x`` is equal across chains the results
    are the same either way.
    """
    return _max_over_chains(x)


def any_across_chains(flag: jax.Array) -> jax.Array:
    """Whether ``flag`` holds in some chain: one unbatched bool under the driver's ``vmap``, else ``flag``.

    For the condition of a loop that every chain runs until it is done (NUTS's
    trajectory): as a per-chain condition, ``vmap`` would select every carry of
    a finished chain at every step; with this one the loop runs while some chain
    is going, and the body must keep a finished chain's state itself (which
    lets it leave out what needs no keeping).
    """
    return _max_over_chains(jnp.asarray(flag, jnp.int32)) > 0


SHARED_INFO_FIELDS = (
    "acceptance_rate",
    "is_divergent",
    "step_size",
    "num_grad_evals",
    "logdensity",
)


class Sampler(NamedTuple):
    """A sampler: ``init`` and ``step`` pure functions plus what the driver needs.

    Attributes:
        init: ``position -> state``.
        step: ``(key, state, batch=None) -> (state, info)``.
        target: the :class:`~sgmcmc.Target` this sampler was built for.
        rebuild: ``target -> Sampler`` giving the same sampler over another
            version of the target (same functions, other data arrays).
        name: short name (``"sgld"``, ``"hmc"``, ...).
        is_exact: whether the sampler leaves the target exactly invariant
            (Metropolis-corrected) or is an approximation with a bias.
        warmup: the sampler's warmup adaptation (a
            :class:`~sgmcmc.adaptation.base.Warmup`), run by the driver for
            ``num_warmup`` steps; ``None`` when warmup is plain burn-in.
        min_warmup: the fewest warmup steps the sampler can run with (e.g.
            constant SGD with ``learning_rate="optimal"`` estimates its rate
            in warmup); :func:`sgmcmc.sample` refuses fewer.
    """

    init: Callable[..., Any]
    step: Callable[..., Any]
    target: Target | None = None
    rebuild: Callable[[Target], Sampler] | None = None
    name: str = "sampler"
    is_exact: bool = False
    warmup: Any = None
    min_warmup: int = 0


REGISTRY: dict[str, Callable[..., Sampler]] = {}


def register(name: str) -> Callable[[Callable[..., Sampler]], Callable[..., Sampler]]:
    """Decorator adding a sampler factory to :data:`REGISTRY` under ``name``."""

    def deco(factory):
        if name in REGISTRY and REGISTRY[name] is not factory:
            raise ValueError(f"a sampler named {name!r} is already registered")
        REGISTRY[name] = factory
        return factory

    return deco
