"""SGLD with control variates (SGLD-CV), optionally with SVRG-style refreshes. Approximate.

Algorithm (Baker, Fearnhead, Fox & Nemeth 2019, "Control variates for
stochastic gradient MCMC", Statistics and Computing): the SGLD update of
:mod:`sgmcmc.samplers.sgld`,

    theta' = theta + (eps / 2) g_cv(theta) + sqrt(eps T) xi,    xi ~ N(0, I),

with the control-variate estimate of :func:`sgmcmc.gradients.control_variate`
around a centre ``theta_hat``,

    g_cv(theta) = grad log pi(theta_hat) + [grad f_B(theta) - grad f_B(theta_hat)],
    f_B(theta)  = log p(theta) + (N/n) sum_{i in B} log p(x_i | theta).

It is unbiased, and its variance is O(|theta - theta_hat|^2): for a posterior
concentrated near ``theta_hat`` (Baker et al. take the mode, found by SGD) the
gradient noise nearly vanishes, which is what lets SGLD-CV's cost per unit of
accuracy grow sublinearly in N. The full-data gradient at the centre is
computed once, in chunks of ``chunk_size`` examples
(:func:`sgmcmc.gradients.full_data_gradient`): when ``centre`` is given, by
the factory (one compiled pass); otherwise at each chain's initial position
by ``init``.

SVRG-style refreshes (Johnson & Zhang 2013; Dubey et al. 2016, "Variance
reduction in stochastic gradient Langevin dynamics", NeurIPS): with
``refresh_every=m`` the centre moves to the current position every ``m``
steps (at counts ``m, 2m, ...``), and its full-data gradient is recomputed
there, inside the compiled step, in chunks. Steps that do not refresh pay
nothing for it, also with vmapped chains (the chunk loop runs zero
iterations).

Cost: ``info.num_grad_evals`` counts minibatch gradients (over ``batch_size``
examples): 2 per step (at ``theta`` and at the centre, on the same batch) and
``ceil(N / batch_size)`` more on a refreshing step (a full pass).

Bias: SGLD's (see :mod:`sgmcmc.samplers.sgld`): for a Gaussian coordinate of
variance ``s^2`` the full-batch chain has variance
``T s^2 / (1 - eps / (4 s^2))``, plus what the (reduced) gradient noise adds;
when every example's log-likelihood has the same Hessian (a Gaussian mean
model) the control variate is exact and SGLD-CV *is* full-batch SGLD.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from sgmcmc._tree import PyTree, tree_where
from sgmcmc.gradients import (
    ControlVariate,
    check_chunk_size,
    check_minibatch,
    control_variate,
    control_variate_centre,
)
from sgmcmc.samplers.base import Sampler, register
from sgmcmc.samplers.sg_common import (
    SGInfo,
    Temperature,
    check_temperature,
    has_noise,
    reject_non_finite,
)
from sgmcmc.samplers.sgld import langevin_proposal
from sgmcmc.samplers.step_size import StepSize, check_step_size, current_step_size, initial_step_size
from sgmcmc.target import Target

__all__ = ["SGLDCVState", "sgld_cv"]


class SGLDCVState(NamedTuple):
    """State of an SGLD-CV chain: the position and the control variate's centre."""

    position: PyTree
    control_variate: ControlVariate
    step_size: jax.Array
    count: jax.Array


@register("sgld_cv")
def sgld_cv(
    target: Target,
    step_size: StepSize = 1e-4,
    *,
    batch_size: int,
    centre: PyTree = None,
    refresh_every: int | None = None,
    chunk_size: int | None = 1024,
    temperature: Temperature = 1.0,
) -> Sampler:
    """SGLD with a control-variate gradient (approximate; see module docstring).

    Args:
        target: a data-driven :class:`~sgmcmc.Target` (``Target.from_data``).
        step_size: ``eps``, a positive float or a schedule ``count -> eps``.
        batch_size: minibatch size n.
        centre: the reference point ``theta_hat`` (e.g. the mode found with
            optax); ``None`` centres each chain at its initial position.
        refresh_every: move the centre to the current position every this
            many steps (SVRG-style); ``None`` keeps it fixed.
        chunk_size: examples per chunk of the full-data gradient (``None``:
            all at once).
        temperature: ``T >= 0`` or a schedule ``count -> T``.
    """
    step_size = check_step_size(step_size)
    temperature = check_temperature(temperature)
    chunk_size = check_chunk_size(chunk_size)
    check_minibatch(target, batch_size, "control-variate gradients")
    if refresh_every is not None and (
        isinstance(refresh_every, bool) or not isinstance(refresh_every, int) or refresh_every < 1
    ):
        raise ValueError(f"refresh_every must be a positive integer or None, got {refresh_every!r}.")
    fixed = None
    if centre is not None:
        centre = target.check_position(centre, "control-variate centre")

        @jax.jit
        def compute(data, position):
            return control_variate_centre(target.with_data(data), position, chunk_size=chunk_size)

        fixed = compute(target.data, centre)
        if not bool(jnp.isfinite(fixed.logdensity)) or not all(
            bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(fixed.grad)
        ):
            raise ValueError("the log density or its gradient is not finite at the control-variate centre.")
    return _build(target, step_size, batch_size, fixed, refresh_every, chunk_size, temperature)


def _build(target, step_size, batch_size, fixed, refresh_every, chunk_size, temperature) -> Sampler:
    noisy = has_noise(temperature)
    refresh_cost = math.ceil(target.num_data / batch_size)

    def init(position: PyTree) -> SGLDCVState:
        flat, _ = ravel_pytree(position)
        cv = fixed if fixed is not None else control_variate_centre(target, position, chunk_size=chunk_size)
        return SGLDCVState(position, cv, initial_step_size(step_size, flat.dtype), jnp.zeros((), jnp.int32))

    def step(key: jax.Array, state: SGLDCVState, batch=None) -> tuple[SGLDCVState, SGInfo]:
        cv = state.control_variate
        num_grad_evals = jnp.asarray(0, jnp.int32)
        if refresh_every is not None:
            refresh = (state.count > 0) & (state.count % refresh_every == 0)
            fresh = control_variate_centre(target, state.position, chunk_size=chunk_size, active=refresh)
            cv = tree_where(refresh, fresh, cv)
            num_grad_evals = jnp.where(refresh, refresh_cost, 0).astype(jnp.int32)
        estimate = control_variate(target, batch_size, cv).estimate(key, state.position, batch)
        eps = current_step_size(step_size, state.step_size, state.count)
        proposed = langevin_proposal(key, state.position, estimate.grad, eps, temperature, state.count, noisy)
        finite, position = reject_non_finite(estimate.value, proposed, state.position)
        # A refresh computed at the (finite) current position is kept even if the step is rejected.
        new_state = SGLDCVState(position, cv, state.step_size, state.count + 1)
        info = SGInfo(
            acceptance_rate=jnp.ones((), eps.dtype),
            is_divergent=~finite,
            step_size=eps,
            num_grad_evals=num_grad_evals + estimate.num_grad_evals,
            logdensity=estimate.value,
        )
        return new_state, info

    def rebuild(new_target: Target) -> Sampler:
        return _build(new_target, step_size, batch_size, fixed, refresh_every, chunk_size, temperature)

    return Sampler(init, step, target, rebuild, "sgld_cv", False)
