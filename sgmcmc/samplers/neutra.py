"""Neural transport HMC/NUTS: HMC in the latent space of a flow fitted by variational inference. Exact.

Algorithm (Hoffman, Sountsov, Dillon, Langmore, Tran & Vasudevan 2019,
"NeuTra-lizing bad geometry in Hamiltonian Monte Carlo using neural
transport"): fit a normalizing flow ``x = T(z)``, ``z ~ N(0, I)``, to the
target by maximising the ELBO ``E_z[log pi(T(z)) + log|det dT/dz|]`` (reverse
KL, reparameterised draws); then run NUTS (or HMC) on the pulled-back density

    log pi_z(z) = log pi(T(z)) + log|det dT/dz|,

and report ``x = T(z)``. Because ``T`` is a fixed bijection once fitted, the
chain on ``z`` is exact for ``pi_z`` and its image is exact for ``pi``; a
good ``T`` makes ``pi_z`` close to a standard normal, so the sampler sees
little of the target's bad geometry (e.g. a funnel's neck). The fit only
changes speed, not correctness.

The fit runs inside the driver's compiled warmup, before the first warmup
step (``train_steps`` Adam steps of ``num_draws`` draws each, pooled across
chains: one flow), then Stan's windowed adaptation tunes the step size and
(diagonal) mass matrix in the latent space. Its gradient evaluations
(``train_steps * num_draws``) are charged to the first warmup step of chain
0 (``result.warmup_grad_evals``); its time is in the driver's ``warmup_s``.
Without warmup the flow is its initial one (a shift to the initial position):
plain NUTS/HMC.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.flatten_util import ravel_pytree

from sgmcmc import flows, noise
from sgmcmc._tree import PyTree
from sgmcmc.adaptation.base import Warmup
from sgmcmc.adaptation.window import check_target_accept, window_adaptation
from sgmcmc.samplers.base import Sampler, register
from sgmcmc.samplers.flow_mh import _check_positive_int, check_flow
from sgmcmc.samplers.hmc import _check_steps, _check_threshold, hamiltonian_transition, hmc_init
from sgmcmc.samplers.metrics import check_inverse_mass_matrix, check_metric
from sgmcmc.samplers.nuts import _check_depth, nuts_transition
from sgmcmc.samplers.step_size import StepSize, check_step_size
from sgmcmc.samplers.step_size_search import find_reasonable_step_size
from sgmcmc.target import Target

__all__ = ["LatentState", "NeuTraState", "NeuTraInfo", "neutra"]


class LatentState(NamedTuple):
    """An HMC-family state over the flat latent ``z``, carrying the flow it lives under."""

    position: jax.Array
    logdensity: jax.Array
    logdensity_grad: jax.Array
    step_size: jax.Array
    inverse_mass_matrix: jax.Array
    count: jax.Array
    flow_params: Any


class NeuTraState(NamedTuple):
    """``position`` is ``T(z)`` in the target's space; ``latent`` is the chain on ``z``."""

    position: PyTree
    latent: LatentState
    pending_grad_evals: jax.Array


class NeuTraInfo(NamedTuple):
    acceptance_rate: jax.Array
    is_divergent: jax.Array
    energy: jax.Array
    step_size: jax.Array
    num_grad_evals: jax.Array
    tree_depth: jax.Array
    logdensity: jax.Array


@register("neutra")
def neutra(
    target: Target,
    step_size: StepSize = 0.5,
    *,
    flow: flows.Flow | None = None,
    flow_params=None,
    kernel: str = "nuts",
    num_integration_steps: int = 10,
    max_tree_depth: int = 10,
    fit_flow: bool = True,
    train_steps: int = 1000,
    num_draws: int = 32,
    learning_rate: float = 3e-3,
    target_accept: float = 0.8,
    metric: str | None = None,
    divergence_threshold: float = 1000.0,
    seed: int = 0,
) -> Sampler:
    """Neural transport NUTS/HMC (exact): a flow fitted by the ELBO, then NUTS/HMC on its latent space.

    Args:
        target: the :class:`~sgmcmc.Target` to sample.
        step_size: the latent kernel's step size (adapted during warmup).
        flow: a :class:`sgmcmc.flows.Flow` over the flattened position
            (default ``sgmcmc.flows.realnvp(dim, 4, (32, 32))``).
        flow_params: starting (or, with ``fit_flow=False``, fixed) parameters.
        kernel: ``"nuts"`` or ``"hmc"`` (``num_integration_steps`` leapfrog steps).
        fit_flow: fit the flow by the ELBO at the start of warmup
            (``train_steps`` Adam steps of ``num_draws`` reparameterised draws).
        target_accept, metric, divergence_threshold: as in :func:`sgmcmc.nuts`.
        seed: seed of the flow's initialisation.
    """
    step_size = check_step_size(step_size)
    flat, _ = ravel_pytree(target.initial_position)
    dim = flat.size
    flow = check_flow(flows.realnvp(dim, 4, (32, 32)) if flow is None else flow, dim)
    if kernel not in ("nuts", "hmc"):
        raise ValueError(f"kernel must be 'nuts' or 'hmc', got {kernel!r}.")
    steps = _check_steps(num_integration_steps)
    depth = _check_depth(max_tree_depth)
    train_steps = _check_positive_int(train_steps, "train_steps")
    num_draws = _check_positive_int(num_draws, "num_draws")
    if not float(learning_rate) > 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate}.")
    target_accept = check_target_accept(target_accept)
    metric = check_metric(metric, None)
    inv_mass = check_inverse_mass_matrix(None, dim, flat.dtype, metric)
    divergence_threshold = _check_threshold(divergence_threshold)
    if flow_params is None:
        flow_params = {**flow.init(jax.random.key(seed), flat.dtype), "loc": flat}
    settings = (
        step_size,
        flow,
        flow_params,
        kernel,
        steps,
        depth,
        (train_steps, num_draws, float(learning_rate)) if fit_flow else None,
        target_accept,
        metric,
        inv_mass,
        divergence_threshold,
    )
    return _build(target, settings)


def _build(target: Target, settings: tuple) -> Sampler:
    (step_size, flow, flow_params, kernel, steps, depth, fit, target_accept, metric, inv_mass, threshold) = settings
    _, unravel = ravel_pytree(target.initial_position)

    def latent_target(params) -> Target:
        def logdensity_fn(z, data):
            x, logdet = flow.forward(params, z)
            return target.logdensity_fn(unravel(x), data) + logdet

        return dataclasses.replace(target, logdensity_fn=logdensity_fn)

    def latent_init(position_flat, params) -> LatentState:
        z, _ = flow.inverse(params, position_flat)
        base = hmc_init(latent_target(params), z, step_size, inv_mass)
        return LatentState(*base, flow_params=params)

    def latent_step(key, latent: LatentState):
        lt = latent_target(latent.flow_params)
        if kernel == "nuts":
            new, info = nuts_transition(key, latent, lt, step_size, depth, threshold)
            return new, info, info.tree_depth
        new, info = hamiltonian_transition(key, latent, lt, step_size, steps, threshold)
        return new, info, jnp.zeros((), jnp.int32)

    def init(position: PyTree) -> NeuTraState:
        flat, _ = ravel_pytree(position)
        return NeuTraState(position, latent_init(flat, flow_params), jnp.zeros((), jnp.int32))

    def step(key, state: NeuTraState, batch=None):
        if batch is not None:
            raise ValueError("neutra is a full-batch sampler; it does not take a minibatch.")
        latent, info, depth_ = latent_step(key, state.latent)
        x, logdet = flow.forward(latent.flow_params, latent.position)
        new = NeuTraState(unravel(x), latent, jnp.zeros((), jnp.int32))
        out = NeuTraInfo(
            acceptance_rate=info.acceptance_rate,
            is_divergent=info.is_divergent,
            energy=info.energy,
            step_size=info.step_size,
            num_grad_evals=jnp.asarray(info.num_grad_evals, jnp.int32) + state.pending_grad_evals,
            tree_depth=jnp.asarray(depth_, jnp.int32),
            logdensity=latent.logdensity - logdet,
        )
        return new, out

    def rebuild(new_target: Target) -> Sampler:
        return _build(new_target, settings)

    warmup = None
    if not callable(step_size):
        window = window_adaptation(
            lambda key, s: latent_step(key, s)[:2],
            lambda key, s: find_reasonable_step_size(key, s, latent_target(s.flow_params)),
            target_accept=target_accept,
            metric=metric,
        )
        warmup = _neutra_warmup(window, step, target, flow, fit, latent_init, unravel)
    return Sampler(init, step, target, rebuild, "neutra", True, warmup)


def _neutra_warmup(window: Warmup, step, target: Target, flow, fit, latent_init, unravel) -> Warmup:
    def transition(key, state):
        new, info = step(key, state)
        return new, info, None

    def init(states, num_warmup: int):
        latent, w = window.init(states.latent, num_warmup)
        return states._replace(latent=latent), w

    def fit_flow(keys, states):
        train_steps, num_draws, learning_rate = fit
        opt = flows.optimizer(learning_rate)
        params = jax.tree.map(lambda p: p[0], states.latent.flow_params)

        def logdensity(x):
            return target.logdensity(unravel(x))

        params, _, _ = flows.elbo_steps(
            flow, opt, params, opt.init(params), noise.fold_in(keys[0], 0xE1B0), logdensity, train_steps, num_draws
        )
        flat = jax.vmap(lambda p: ravel_pytree(p)[0])(states.position)
        old = states.latent
        latent = jax.vmap(latent_init, in_axes=(0, None))(flat, params)
        latent = latent._replace(step_size=old.step_size, inverse_mass_matrix=old.inverse_mass_matrix, count=old.count)
        # One flow for all chains: a chain the new flow cannot pull back finitely restarts at T(0).
        ok = jnp.isfinite(latent.logdensity) & jnp.all(jnp.isfinite(latent.position), axis=-1)
        origin = jax.vmap(lambda _: latent_init(flow.forward(params, jnp.zeros_like(flat[0]))[0], params))(flat)
        origin = origin._replace(step_size=old.step_size, inverse_mass_matrix=old.inverse_mass_matrix, count=old.count)
        latent = jax.tree.map(lambda a, b: jnp.where(ok.reshape(ok.shape + (1,) * (a.ndim - 1)), a, b), latent, origin)
        x = jax.vmap(lambda z: unravel(flow.forward(params, z)[0]))(latent.position)
        charge = jnp.zeros(flat.shape[0], jnp.int32).at[0].set(train_steps * num_draws)
        return states._replace(position=x, latent=latent, pending_grad_evals=charge)

    def prepare(keys, states, w, t):
        if fit is not None:
            states = lax.cond(t == 0, lambda s: fit_flow(keys, s), lambda s: s, states)
        latent, w = window.prepare(keys, states.latent, w, t)
        return states._replace(latent=latent), w

    def update(keys, old_states, states, info, aux, w, t):
        latent, w = window.update(keys, old_states.latent, states.latent, info, aux, w, t)
        return states._replace(latent=latent), w

    def finalize(states, w):
        return states._replace(latent=window.finalize(states.latent, w))

    return Warmup(transition, init, prepare, update, finalize, "neutra_warmup")
