"""The warmup contract: how a sampler tunes itself inside the driver.

A :class:`Warmup` works on the whole batch of chains (leading chain axis), so
that an adaptation may be per chain (Stan's windowed adaptation, vmapped
inside) or pool information across chains (ChEES). All three functions are
pure and compiled by the driver:

* ``init(key, states, num_warmup) -> adapt_state``: ``num_warmup`` is a Python
  int (the schedule may depend on it);
* ``step(keys, states, adapt_state, t) -> (states, adapt_state, info)``:
  one warmup step of every chain; ``keys`` has one key per chain, ``t`` is
  the 0-based warmup step (an unbatched int32 scalar) and ``info`` the
  sampler's batched info;
* ``finalize(states, adapt_state) -> states``: the states to sample from,
  with the tuned parameters written in.

Tuned parameters (step size, mass matrix, trajectory length) live in the
sampler state, so the sampling phase needs nothing from the adaptation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

__all__ = ["Warmup"]


class Warmup(NamedTuple):
    """A sampler's warmup adaptation (see the module docstring)."""

    init: Callable[..., Any]
    step: Callable[..., Any]
    finalize: Callable[..., Any]
    name: str = "warmup"
