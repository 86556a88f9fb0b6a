"""The warmup contract: how a sampler tunes itself inside the driver.

A :class:`Warmup` works on the whole batch of chains (leading chain axis), so
that an adaptation may be per chain (Stan's windowed adaptation, vmapped
inside) or pool information across chains (ChEES). Its functions are pure;
the driver compiles warmup and sampling as **one** program in which the
sampler's transition appears once: every step runs ``transition`` and, while
``t < num_warmup``, ``prepare`` before it and ``update`` after it (both
inside a ``lax.cond`` on the unbatched step index, so the sampling phase
pays nothing for them).

* ``transition(key, state) -> (state, info, aux)``: one transition of one
  chain (vmapped by the driver); ``aux`` is whatever the adaptation needs
  beyond ``info`` (ChEES: the trajectory's end before the Metropolis test;
  ``None`` otherwise). Outside warmup it must equal the sampler's ``step``.
* ``init(states, num_warmup) -> (states, adapt_state)``: ``num_warmup`` is
  a Python int (the schedule may depend on it). Cheap: no gradient
  evaluations (searches are deferred to ``prepare``).
* ``prepare(keys, states, adapt_state, t) -> (states, adapt_state)``: before
  warmup step ``t`` (0-based, an unbatched int32 scalar; ``keys`` one key
  per chain), e.g. the step-size search Stan runs at the start and after
  every mass-matrix update.
* ``update(keys, old_states, states, info, aux, adapt_state, t) ->
  (states, adapt_state)``: after the transition of warmup step ``t``; writes
  the parameters for step ``t + 1`` into ``states``.
* ``finalize(states, adapt_state) -> states``: after the last warmup step,
  the states to sample from, with the tuned parameters written in.

Tuned parameters (step size, mass matrix, trajectory length) live in the
sampler state, so the sampling phase needs nothing from the adaptation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

__all__ = ["Warmup"]


class Warmup(NamedTuple):
    """A sampler's warmup adaptation (see the module docstring)."""

    transition: Callable[..., Any]
    init: Callable[..., Any]
    prepare: Callable[..., Any]
    update: Callable[..., Any]
    finalize: Callable[..., Any]
    name: str = "warmup"
