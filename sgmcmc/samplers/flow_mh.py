"""Flow-assisted MCMC: local gradient moves plus global independence moves from a flow. Exact once frozen.

Algorithm (Gabrié, Rotskoff & Vanden-Eijnden 2022, "Adaptive Monte Carlo
augmented with normalizing flows", PNAS 119; the scheme of flowMC, Wong,
Gabrié & Foreman-Mackey 2023): every step runs ``num_local_steps`` MALA (or
HMC) transitions and then one independence Metropolis-Hastings proposal
``x' = T(z), z ~ N(0, I)`` from a normalizing flow ``q``, accepted with
probability

    min(1, pi(x') q(x) / (pi(x) q(x'))),

computed in log space: ``log pi(x') - log pi(x) + log q(x) - log q(x')``, with
``log q(x')`` from the forward pass that made ``x'`` and ``log q(x)`` from the
inverse pass, so no density is ever exponentiated before the test (no
underflow of ``q`` in the ratio). A non-finite log ratio, log density or
gradient at the proposal rejects the move (a NaN is reported as a
divergence, a ``-inf`` density as a plain rejection); the chain never holds a
non-finite value.

Warmup (``num_warmup > 0``): the local kernel's step size is tuned by Stan's
windowed adaptation, and the flow is refitted by maximum likelihood on the
chains' recent draws, pooled across chains (a ring buffer of the last
``buffer_size`` positions), ``num_refits`` times on an even schedule, each
refit a fixed number of Adam steps inside a ``lax.cond``: the whole warmup
is one compiled program. The flow's parameters live in the state (one copy
per chain, identical after every refit) and are frozen after warmup: each
sampling step is then a composition of two pi-invariant kernels (MALA/HMC
and an independence MH with a fixed proposal), so the draws are exact. A
poor flow only slows mixing (its proposals are rejected), it does not bias.

Every chain must reach every mode at least once during warmup for the flow
to learn it: start the chains spread out (``initial_position`` with one row
per chain) or make the initial flow broad (``initial_scale``).
"""

from __future__ import annotations

import numbers
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
from sgmcmc.samplers.hmc import _check_steps, _check_threshold, hmc_init, local_moves
from sgmcmc.samplers.metrics import check_inverse_mass_matrix, check_metric
from sgmcmc.samplers.proposal import metropolis_hastings
from sgmcmc.samplers.step_size import StepSize, check_step_size
from sgmcmc.samplers.step_size_search import find_reasonable_step_size
from sgmcmc.target import Target

__all__ = ["FlowMHState", "FlowMHInfo", "FlowFitState", "flow_mh", "check_flow"]

_GLOBAL_STREAM = 0x610B


class FlowMHState(NamedTuple):
    """HMC-family fields (so MALA/HMC and their warmup apply) plus the flow's parameters."""

    position: PyTree
    logdensity: jax.Array
    logdensity_grad: PyTree
    step_size: jax.Array
    inverse_mass_matrix: jax.Array
    count: jax.Array
    flow_params: Any


class FlowMHInfo(NamedTuple):
    """``acceptance_rate`` / ``is_accepted`` are the local move's; ``global_*`` the flow proposal's."""

    acceptance_rate: jax.Array
    is_accepted: jax.Array
    is_divergent: jax.Array
    step_size: jax.Array
    num_grad_evals: jax.Array
    logdensity: jax.Array
    global_acceptance_rate: jax.Array
    global_is_accepted: jax.Array


class FlowFitState(NamedTuple):
    """Warmup state of the flow fit: a ring buffer of pooled draws and the optimiser."""

    window: Any
    buffer: jax.Array
    num_written: jax.Array
    opt_state: Any
    params: Any
    refit_every: jax.Array
    first_refit: jax.Array


def check_flow(flow, dim: int) -> flows.Flow:
    if not isinstance(flow, flows.Flow):
        raise TypeError(f"flow must be an sgmcmc.flows.Flow (e.g. sgmcmc.flows.realnvp(dim)), got {flow!r}.")
    if flow.dim != dim:
        raise ValueError(f"the flow has dimension {flow.dim} but the target's flattened position has {dim}.")
    return flow


def _check_positive_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def global_move(key, state: FlowMHState, target: Target, flow: flows.Flow):
    """One independence Metropolis-Hastings proposal from the flow in ``state.flow_params``."""
    flat, unravel = ravel_pytree(state.position)
    params = state.flow_params
    proposal, logq_new = flows.sample_and_log_prob(flow, params, key, flat.dtype, stream=1)
    logq_old = flows.log_prob(flow, params, flat)
    lp_new, grad_new = jax.value_and_grad(target.logdensity)(unravel(proposal))
    log_ratio = (lp_new - state.logdensity) + (logq_old - logq_new)
    decision = metropolis_hastings(key, log_ratio, float("inf"))
    grad_ok = jnp.all(jnp.isfinite(ravel_pytree(grad_new)[0]))
    accept = decision.is_accepted & grad_ok & jnp.all(jnp.isfinite(proposal))
    is_nan = jnp.isnan(log_ratio) | (log_ratio == jnp.inf)
    pick = lambda a, b: jax.tree.map(lambda u, v: jnp.where(accept, u, v), a, b)  # noqa: E731
    new_state = state._replace(
        position=pick(unravel(proposal), state.position),
        logdensity=jnp.where(accept, lp_new, state.logdensity),
        logdensity_grad=pick(grad_new, state.logdensity_grad),
    )
    rate = jnp.where(grad_ok, decision.acceptance_rate, 0.0)
    return new_state, rate, accept, is_nan


@register("flow_mh")
def flow_mh(
    target: Target,
    step_size: StepSize = 0.1,
    *,
    flow: flows.Flow | None = None,
    flow_params=None,
    local_kernel: str = "mala",
    num_integration_steps: int = 5,
    num_local_steps: int = 1,
    adapt_flow: bool = True,
    num_refits: int = 8,
    train_steps: int = 200,
    batch_size: int = 256,
    buffer_size: int = 4096,
    learning_rate: float = 3e-3,
    initial_scale: float = 1.0,
    target_accept: float | None = None,
    metric: str | None = None,
    adapt_mass_matrix: bool = False,
    inverse_mass_matrix=None,
    divergence_threshold: float = 1000.0,
    seed: int = 0,
) -> Sampler:
    """Local MALA/HMC moves plus independence MH proposals from a normalizing flow (exact once frozen).

    Args:
        target: the :class:`~sgmcmc.Target` to sample.
        step_size: the local kernel's step size (adapted during warmup).
        flow: a :class:`sgmcmc.flows.Flow` over the flattened position
            (default ``sgmcmc.flows.realnvp(dim, 4, (32, 32))``).
        flow_params: the flow's starting (or, with ``adapt_flow=False``,
            fixed) parameters; default: the identity couplings with the
            scaling layer at the initial position and ``initial_scale``.
        local_kernel: ``"mala"`` or ``"hmc"`` (``num_integration_steps``).
        num_local_steps: local transitions before each global proposal.
        adapt_flow: refit the flow during warmup (maximum likelihood on the
            pooled recent draws of all chains, ``num_refits`` times, each
            ``train_steps`` Adam steps on minibatches of ``batch_size`` from a
            ring buffer of ``buffer_size`` draws).
        learning_rate: Adam's learning rate for the refits.
        initial_scale: standard deviation of the default initial flow.
        target_accept: the local kernel's target acceptance (0.574 MALA, 0.8 HMC).
        metric, adapt_mass_matrix, inverse_mass_matrix: the local kernel's
            mass matrix and whether warmup adapts it (off by default: the flow
            handles the global geometry).
        divergence_threshold: energy error beyond which a local move diverges.
        seed: seed of the flow's initialisation.

    Each step costs ``num_local_steps * L + 1`` gradient evaluations (``L`` =
    1 for MALA); the refits use no target gradients. Info: see
    :class:`FlowMHInfo`.
    """
    step_size = check_step_size(step_size)
    flat, _ = ravel_pytree(target.initial_position)
    dim = flat.size
    flow = check_flow(flows.realnvp(dim, 4, (32, 32)) if flow is None else flow, dim)
    if local_kernel not in ("mala", "hmc"):
        raise ValueError(f"local_kernel must be 'mala' or 'hmc', got {local_kernel!r}.")
    steps = 1 if local_kernel == "mala" else _check_steps(num_integration_steps)
    num_local_steps = _check_positive_int(num_local_steps, "num_local_steps", 0)
    num_refits = _check_positive_int(num_refits, "num_refits")
    train_steps = _check_positive_int(train_steps, "train_steps")
    batch_size = _check_positive_int(batch_size, "batch_size")
    buffer_size = _check_positive_int(buffer_size, "buffer_size")
    if not (float(learning_rate) > 0 and float(initial_scale) > 0):
        raise ValueError("learning_rate and initial_scale must be > 0.")
    if target_accept is None:
        target_accept = 0.574 if local_kernel == "mala" else 0.8
    target_accept = check_target_accept(target_accept)
    metric = check_metric(metric, inverse_mass_matrix)
    inv_mass = check_inverse_mass_matrix(inverse_mass_matrix, dim, flat.dtype, metric)
    divergence_threshold = _check_threshold(divergence_threshold)
    if flow_params is None:
        flow_params = flow.init(jax.random.key(seed), flat.dtype)
        flow_params = {
            **flow_params,
            "loc": flat,
            "log_scale": jnp.full((dim,), jnp.log(float(initial_scale)), flat.dtype),
        }
    else:
        try:
            x, ld = flow.forward(flow_params, jnp.zeros((dim,), flat.dtype))
        except Exception as err:
            raise ValueError(f"flow_params do not fit the flow: {err}") from err
        if x.shape != (dim,) or not bool(jnp.isfinite(ld)):
            raise ValueError("flow_params give a non-finite or misshapen flow at z = 0.")
    fit = (num_refits, train_steps, batch_size, buffer_size, float(learning_rate)) if adapt_flow else None
    settings = (
        step_size,
        flow,
        flow_params,
        steps,
        num_local_steps,
        fit,
        target_accept,
        metric,
        adapt_mass_matrix,
        inv_mass,
        divergence_threshold,
    )
    return _build(target, settings)


def _build(target: Target, settings: tuple) -> Sampler:
    (
        step_size,
        flow,
        flow_params,
        steps,
        num_local_steps,
        fit,
        target_accept,
        metric,
        adapt_mass_matrix,
        inv_mass,
        divergence_threshold,
    ) = settings

    def init(position: PyTree) -> FlowMHState:
        base = hmc_init(target, position, step_size, inv_mass)
        return FlowMHState(*base, flow_params=flow_params)

    def step(key, state: FlowMHState, batch=None):
        if batch is not None:
            raise ValueError("flow_mh is a full-batch sampler; it does not take a minibatch.")
        state, rate, accepted, divergent, eps = local_moves(
            key, state, target, step_size, steps, num_local_steps, divergence_threshold
        )
        state, g_rate, g_accept, g_nan = global_move(noise.fold_in(key, _GLOBAL_STREAM), state, target, flow)
        info = FlowMHInfo(
            acceptance_rate=rate,
            is_accepted=accepted,
            is_divergent=divergent | g_nan,
            step_size=eps,
            num_grad_evals=jnp.asarray(num_local_steps * steps + 1, jnp.int32),
            logdensity=state.logdensity,
            global_acceptance_rate=g_rate,
            global_is_accepted=g_accept,
        )
        return state, info

    def rebuild(new_target: Target) -> Sampler:
        return _build(new_target, settings)

    warmup = None
    if not callable(step_size) and num_local_steps > 0:
        search = lambda key, state: find_reasonable_step_size(key, state, target)  # noqa: E731
        window = window_adaptation(
            step, search, target_accept=target_accept, metric=metric, adapt_mass_matrix=adapt_mass_matrix
        )
        warmup = _flow_warmup(window, step, flow, fit)
    elif fit is not None:
        warmup = _flow_warmup(None, step, flow, fit)
    return Sampler(init, step, target, rebuild, "flow_mh", True, warmup)


def _flow_warmup(window: Warmup | None, step, flow: flows.Flow, fit: tuple | None) -> Warmup:
    """Windowed step-size adaptation composed with the flow's scheduled maximum-likelihood refits."""

    def transition(key, state):
        new_state, info = step(key, state)
        return new_state, info, None

    def init(states, num_warmup: int):
        w = None
        if window is not None:
            states, w = window.init(states, num_warmup)
        flat = jax.vmap(lambda p: ravel_pytree(p)[0])(states.position)
        num_chains, dim = flat.shape
        params = jax.tree.map(lambda x: x[0], states.flow_params)
        if fit is None:
            return states, FlowFitState(
                w, jnp.zeros((0, dim), flat.dtype), jnp.int32(0), None, params, jnp.int32(1), jnp.int32(1)
            )
        num_refits, _, _, buffer_size, learning_rate = fit
        rows = max(1, -(-buffer_size // num_chains)) * num_chains
        opt = flows.optimizer(learning_rate)
        every = max(1, int(num_warmup) // num_refits)
        return states, FlowFitState(
            w,
            jnp.zeros((rows, dim), flat.dtype),
            jnp.int32(0),
            opt.init(params["layers"]),
            params,
            jnp.int32(every),
            jnp.int32(every),
        )

    def prepare(keys, states, adapt: FlowFitState, t):
        if window is None:
            return states, adapt
        states, w = window.prepare(keys, states, adapt.window, t)
        return states, adapt._replace(window=w)

    def refit(keys, states, adapt: FlowFitState):
        _, train_steps, batch_size, _, learning_rate = fit
        opt = flows.optimizer(learning_rate)
        filled = jnp.minimum(adapt.num_written, adapt.buffer.shape[0])
        weights = (jnp.arange(adapt.buffer.shape[0]) < filled).astype(adapt.buffer.dtype)
        params = flows.set_standardization(adapt.params, adapt.buffer, weights)
        key = noise.fold_in(keys[0], 0xF17)
        params, opt_state, _ = flows.mle_steps(
            flow, opt, params, adapt.opt_state, key, adapt.buffer, filled, train_steps, batch_size, "layers"
        )
        num_chains = jax.tree.leaves(states.position)[0].shape[0]
        states = states._replace(
            flow_params=jax.tree.map(lambda p: jnp.broadcast_to(p, (num_chains, *p.shape)), params)
        )
        return states, adapt._replace(params=params, opt_state=opt_state)

    def update(keys, old_states, states, info, aux, adapt: FlowFitState, t):
        if window is not None:
            states, w = window.update(keys, old_states, states, info, aux, adapt.window, t)
            adapt = adapt._replace(window=w)
        if fit is None:
            return states, adapt
        flat = jax.vmap(lambda p: ravel_pytree(p)[0])(states.position)
        num_chains = flat.shape[0]
        slots = adapt.buffer.shape[0] // num_chains
        row = (adapt.num_written // num_chains) % slots * num_chains
        buffer = lax.dynamic_update_slice(adapt.buffer, flat, (row, jnp.int32(0)))
        adapt = adapt._replace(buffer=buffer, num_written=adapt.num_written + num_chains)
        due = ((t + 1) >= adapt.first_refit) & ((t + 1) % adapt.refit_every == 0)
        return lax.cond(due, lambda a: refit(keys, *a), lambda a: a, (states, adapt))

    def finalize(states, adapt: FlowFitState):
        if window is not None:
            states = window.finalize(states, adapt.window)
        return states

    return Warmup(transition, init, prepare, update, finalize, "flow_mh_warmup")
