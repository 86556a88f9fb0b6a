"""L2HMC: a learned, Jacobian-tracked leapfrog with a Metropolis-Hastings test. Exact.

Algorithm (Levy, Hoffman & Sohl-Dickstein 2018, "Generalizing Hamiltonian
Monte Carlo with neural networks", ICLR). The state is ``(x, v, d)`` with a
momentum ``v ~ N(0, I)`` and a direction ``d ~ U{+1, -1}``, both drawn afresh
every step. With ``U = -log pi``, ``g = dU/dx``, a time encoding
``tau(t) = (cos 2 pi t / L, sin 2 pi t / L)`` and step size ``eps``
(trainable), one forward leapfrog step ``t`` is

    v <- v * exp(eps/2 S_v) - eps/2 (g * exp(eps Q_v) + T_v),       (S,Q,T)_v = V(x, g, tau)
    x <- xbar_m + m * (x * exp(eps S_x) + eps (v * exp(eps Q_x) + T_x)),  (S,Q,T)_x = X(x * mbar, v, tau)
    x <- x_m + mbar * (x * exp(eps S_x) + eps (v * exp(eps Q_x) + T_x)),  (S,Q,T)_x = X(x * m, v, tau)
    v <- (the first update again, at the new x and its gradient)

where ``m_t`` is a fixed random binary mask (half the coordinates) and
``mbar = 1 - m``. ``V`` and ``X`` are small ReLU networks with
``S = lambda_S tanh(.)``, ``Q = lambda_Q tanh(.)`` and ``T`` linear, where the
per-coordinate scales ``lambda = exp(log_scale)`` are trained on the log scale
(as in the authors' code; starting at 1), so that they can grow by orders of
magnitude where the target needs it (an ill-conditioned Gaussian). Every
sub-step is invertible in closed form, with log-Jacobian ``eps/2 sum S_v``
(momentum) and ``eps sum(m * S_x)`` (position). The proposal is
``F = (L steps)`` for ``d = +1`` and the exact inverse ``F^{-1}`` (the
sub-steps undone in reverse order) for ``d = -1``; ``(x, v, d) ->
(F^d(x, v), -d)`` is an involution, so accepting with probability

    min(1, pi(x') N(v') / (pi(x) N(v)) * |det dF^d/d(x, v)|)

leaves ``pi`` exactly invariant for *any* network parameters: an untrained
or badly trained kernel mixes slowly, it does not bias. The log-Jacobian is
accumulated exactly along the trajectory (checked against autodiff in the
tests). With the networks' output layers at zero (the default start) the
kernel is plain HMC with step size ``eps``.

Training (:func:`sgmcmc.learned.train`): the loss of the paper (eq. 8),
``lam^2 / (delta A) - delta A / lam^2`` averaged over proposals from the
chain batch plus ``lambda_b`` times the same for proposals from fresh draws
of the initial distribution ``N(x0, init_scale^2 I)``, ``delta = |x' - x|^2``
and ``A`` the acceptance probability; gradients go through the leapfrog
(second derivatives of ``log pi``). Each training step costs
``num_chains * (2 L + 1)`` gradient evaluations (``L`` on the chain batch,
whose gradients are carried, ``L + 1`` on the fresh batch).

In practice (``benchmarks/learned.py``): since the untrained kernel is HMC
with step size ``eps``, start ``eps`` at a tuned HMC step size (e.g. the one
``sgmcmc.hmc``'s warmup adapts with the identity mass matrix) and the chain
batch at that warmup's final states, so training starts from the HMC
baseline. The per-proposal gradients of the loss are heavy-tailed (the
reciprocal term is dominated by the rare proposals with ``delta A`` near 0,
and on rough targets the leapfrog's derivative in its parameters is
chaotic), so the mean gradient over a batch can be swamped by one proposal.
Clip the gradient's global norm (``train``'s default optimiser does; without
it one outlier inflates Adam's second moment and stalls or misdirects the
following steps), and ``train(..., patience=num_steps)`` keeps the parameters
of the chunk with the best mean loss instead of the last ones.

Sampling: each step costs ``L`` gradient evaluations (the gradient at the
current point is carried in the state).
"""

from __future__ import annotations

import itertools
import math
import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.flatten_util import ravel_pytree

from sgmcmc import noise
from sgmcmc._tree import PyTree
from sgmcmc.learned.training import (
    Chains,
    Trainable,
    check_kernel_config,
    check_params,
    flat_logdensity,
    reciprocal_esjd_loss,
)
from sgmcmc.samplers.base import Sampler, register
from sgmcmc.samplers.hmc import HMCInfo, HMCState, _check_threshold, hmc_init
from sgmcmc.samplers.proposal import metropolis_hastings
from sgmcmc.target import Target

__all__ = ["L2HMCConfig", "l2hmc_kernel", "l2hmc_map", "l2hmc_proposal", "l2hmc", "kernel_config"]

_MOMENTUM_STREAM = 0x12
_DIRECTION_STREAM = 0x13


class L2HMCConfig(NamedTuple):
    """Static settings of an L2HMC kernel (the masks are fixed at construction)."""

    dim: int
    num_leapfrog_steps: int
    hidden: tuple[int, ...]
    step_size: float
    masks: np.ndarray


def _check_int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def _net_init(key, dim: int, hidden: tuple[int, ...], dtype):
    """A ReLU net of (a, b, tau) -> (S, Q, T), output layers at zero (identity sub-steps)."""
    h0 = hidden[0]
    keys = [jax.random.fold_in(key, i) for i in range(3 + len(hidden))]

    def dense(k, m, n):
        return jax.random.normal(k, (m, n), dtype) / math.sqrt(m)

    net = {
        "in_a": dense(keys[0], dim, h0),
        "in_b": dense(keys[1], dim, h0),
        "in_t": dense(keys[2], 2, h0),
        "b0": jnp.zeros((h0,), dtype),
        "hidden": [
            {"w": dense(keys[3 + i], m, n), "b": jnp.zeros((n,), dtype)}
            for i, (m, n) in enumerate(itertools.pairwise(hidden))
        ],
    }
    for name in ("S", "Q", "T"):
        net[name] = {"w": jnp.zeros((hidden[-1], dim), dtype), "b": jnp.zeros((dim,), dtype)}
    # lambda_S, lambda_Q = exp(log_scale): Adam moves the log, so a per-coordinate scale can grow by
    # orders of magnitude in a few thousand steps (an ill-conditioned target needs factors of ~100).
    net["log_scale_S"] = jnp.zeros((dim,), dtype)
    net["log_scale_Q"] = jnp.zeros((dim,), dtype)
    return net


def _net(net, a, b, tau):
    h = jax.nn.relu(a @ net["in_a"] + b @ net["in_b"] + tau @ net["in_t"] + net["b0"])
    for layer in net["hidden"]:
        h = jax.nn.relu(h @ layer["w"] + layer["b"])
    s = jnp.exp(net["log_scale_S"]) * jnp.tanh(h @ net["S"]["w"] + net["S"]["b"])
    q = jnp.exp(net["log_scale_Q"]) * jnp.tanh(h @ net["Q"]["w"] + net["Q"]["b"])
    t = h @ net["T"]["w"] + net["T"]["b"]
    return s, q, t


def _init_params(config: L2HMCConfig, key, dtype=jnp.float32) -> dict:
    return {
        "log_step_size": jnp.asarray(math.log(config.step_size), dtype),
        "momentum": _net_init(jax.random.fold_in(key, 0), config.dim, config.hidden, dtype),
        "position": _net_init(jax.random.fold_in(key, 1), config.dim, config.hidden, dtype),
    }


def l2hmc_map(config: L2HMCConfig, params, x, v, direction, logdensity, logdensity_grad, logdensity_and_grad):
    """Apply ``F`` (``direction > 0``) or ``F^{-1}`` to ``(x, v)`` (flat vectors).

    ``logdensity`` / ``logdensity_grad`` are ``log pi`` and its gradient at
    ``x``; ``logdensity_and_grad`` evaluates them at a flat vector. Returns
    ``(x', v', log|det J|, log pi(x'), grad log pi(x'))``; costs
    ``num_leapfrog_steps`` gradient evaluations.
    """
    num_steps = config.num_leapfrog_steps
    masks = jnp.asarray(config.masks, x.dtype)
    eps = jnp.exp(params["log_step_size"]).astype(x.dtype)
    fwd = direction > 0
    sign = jnp.where(fwd, 1.0, -1.0).astype(x.dtype)

    def momentum(x, g, v, tau):
        s, q, t = _net(params["momentum"], x, -g, tau)
        a = 0.5 * eps * s
        b = 0.5 * eps * (-g * jnp.exp(eps * q) + t)
        new = jnp.where(fwd, v * jnp.exp(a) - b, (v + b) * jnp.exp(-a))
        return new, sign * jnp.sum(a)

    def position(x, v, u, tau):
        s, q, t = _net(params["position"], x * (1.0 - u), v, tau)
        a = eps * s
        b = eps * (v * jnp.exp(eps * q) + t)
        moved = jnp.where(fwd, x * jnp.exp(a) + b, (x - b) * jnp.exp(-a))
        return x * (1.0 - u) + u * moved, sign * jnp.sum(u * a)

    def body(carry, i):
        x, v, lp, g, logdet = carry
        t = jnp.where(fwd, i, num_steps - 1 - i)
        angle = 2.0 * jnp.pi * t.astype(x.dtype) / num_steps
        tau = jnp.stack([jnp.cos(angle), jnp.sin(angle)])
        m = masks[t]
        first = jnp.where(fwd, m, 1.0 - m)
        v, l1 = momentum(x, g, v, tau)
        x, l2 = position(x, v, first, tau)
        x, l3 = position(x, v, 1.0 - first, tau)
        lp, g = logdensity_and_grad(x)
        v, l4 = momentum(x, g, v, tau)
        return (x, v, lp, g, logdet + l1 + l2 + l3 + l4), None

    start = (x, v, logdensity, logdensity_grad, jnp.zeros((), x.dtype))
    (x, v, lp, g, logdet), _ = lax.scan(body, start, jnp.arange(num_steps))
    return x, v, logdet, lp, g


def l2hmc_proposal(config: L2HMCConfig, params, key, x, lp, g, logdensity_and_grad):
    """One proposal from ``x``: fresh ``v`` and ``d`` from ``key``, the map, and the log MH ratio.

    Returns ``(x', lp', g', log_ratio, (H, H'))`` with the Hamiltonians
    ``-log pi + |v|^2 / 2`` before and after; a non-finite ratio means reject.
    """
    v = noise.normal(key, x.shape, x.dtype, stream=_MOMENTUM_STREAM)
    direction = jnp.where(noise.uniform(key, (), x.dtype, stream=_DIRECTION_STREAM) < 0.5, 1, -1)
    x_new, v_new, logdet, lp_new, g_new = l2hmc_map(config, params, x, v, direction, lp, g, logdensity_and_grad)
    energy, energy_new = -lp + 0.5 * jnp.sum(v**2), -lp_new + 0.5 * jnp.sum(v_new**2)
    return x_new, lp_new, g_new, energy - energy_new + logdet, (energy, energy_new)


def _accept_prob(log_ratio):
    finite = jnp.isfinite(log_ratio)
    return jnp.where(finite, jnp.exp(jnp.minimum(0.0, jnp.where(finite, log_ratio, 0.0))), 0.0)


def l2hmc_kernel(
    dim: int,
    *,
    num_leapfrog_steps: int = 10,
    step_size: float = 0.1,
    hidden: tuple[int, ...] = (10, 10),
    length_scale: float = 1.0,
    init_weight: float = 1.0,
    init_scale: float = 1.0,
    init_loc=None,
    divergence_threshold: float = 1000.0,
    seed: int = 0,
) -> Trainable:
    """An L2HMC kernel ready for :func:`sgmcmc.learned.train` (see the module docstring).

    Args:
        dim: length of the flattened position.
        num_leapfrog_steps: ``L``, learned leapfrog steps per proposal.
        step_size: the initial ``eps`` (trained); the untrained kernel is HMC
            with this step size, so a tuned HMC step size is the natural start.
        hidden: widths of the hidden layers of the ``V`` and ``X`` networks.
        length_scale: ``lam`` in the loss (the target's characteristic scale).
        init_weight: ``lambda_b``, the weight of the initial-distribution term.
        init_scale, init_loc: the initial distribution ``N(init_loc,
            init_scale^2 I)`` of that term (``init_loc`` defaults to 0).
        divergence_threshold: for the frozen sampler (see ``hmc``).
        seed: seed of the position masks.
    """
    dim = _check_int(dim, "dim", 1)
    num_leapfrog_steps = _check_int(num_leapfrog_steps, "num_leapfrog_steps", 1)
    hidden = tuple(_check_int(h, "hidden width", 1) for h in hidden)
    if not hidden:
        raise ValueError("hidden must name at least one layer width.")
    for name, value in (("step_size", step_size), ("length_scale", length_scale), ("init_scale", init_scale)):
        if not (math.isfinite(float(value)) and float(value) > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {value!r}.")
    if not float(init_weight) >= 0:
        raise ValueError(f"init_weight must be >= 0, got {init_weight!r}.")
    divergence_threshold = _check_threshold(divergence_threshold)
    rng = np.random.default_rng(seed)
    masks = np.zeros((num_leapfrog_steps, dim), np.float32)
    for t in range(num_leapfrog_steps):
        masks[t, rng.permutation(dim)[: (dim + 1) // 2]] = 1.0
    config = L2HMCConfig(dim, num_leapfrog_steps, hidden, float(step_size), masks)
    loc = np.zeros(dim, np.float32) if init_loc is None else np.asarray(init_loc, np.float32).reshape(-1)
    if loc.shape != (dim,):
        raise ValueError(f"init_loc must have {dim} entries, got shape {np.shape(init_loc)}.")
    lam, weight, scale = float(length_scale), float(init_weight), float(init_scale)

    def init_params(key, dtype=jnp.float32):
        return _init_params(config, key, dtype)

    def loss(params, aux, key, chains: Chains, flat_target):
        del aux
        logdensity_and_grad = flat_target.logdensity_and_grad
        n = chains.position.shape[0]
        keys = jax.vmap(lambda i: noise.fold_in(key, i))(jnp.arange(n))
        x, lp, g = chains.position, chains.logdensity, chains.logdensity_grad
        if weight > 0:  # one batch: the chains, then fresh draws from the initial distribution
            z = loc + scale * noise.normal(noise.fold_in(key, 0x7F), x.shape, x.dtype)
            lp_z, g_z = jax.vmap(logdensity_and_grad)(z)
            keys_z = jax.vmap(lambda k: noise.fold_in(k, 0x7F))(keys)
            x, lp, g = jnp.concatenate([x, z]), jnp.concatenate([lp, lp_z]), jnp.concatenate([g, g_z])
            keys = jnp.concatenate([keys, keys_z])
        propose = jax.vmap(lambda k, x, lp, g: l2hmc_proposal(config, params, k, x, lp, g, logdensity_and_grad))
        x_new, lp_new, g_new, log_ratio, _ = propose(keys, x, lp, g)
        prob = _accept_prob(log_ratio)
        delta = jnp.sum((x_new - x) ** 2, axis=-1)
        value = reciprocal_esjd_loss(delta[:n], prob[:n], lam)
        if weight > 0:
            value = value + weight * reciprocal_esjd_loss(delta[n:], prob[n:], lam)
        x_new, lp_new, g_new, prob, delta = x_new[:n], lp_new[:n], g_new[:n], prob[:n], delta[:n]
        u = jax.vmap(lambda k: noise.uniform(k, (), prob.dtype, stream=0x4D48))(keys[:n])
        ok = (u < prob) & jnp.all(jnp.isfinite(g_new), axis=-1)
        pick = lambda a, b: jnp.where(ok.reshape(ok.shape + (1,) * (a.ndim - 1)), a, b)  # noqa: E731
        moved = jax.lax.stop_gradient(
            Chains(pick(x_new, chains.position), pick(lp_new, chains.logdensity), pick(g_new, chains.logdensity_grad))
        )
        grads = n * num_leapfrog_steps + (n * (num_leapfrog_steps + 1) if weight > 0 else 0)
        metrics = {
            "acceptance": jnp.mean(jax.lax.stop_gradient(prob)),
            "esjd": jnp.mean(jax.lax.stop_gradient(delta * prob)),
            "num_grad_evals": jnp.asarray(grads, jnp.float32),
        }
        return value, (moved, metrics)

    def sampler(target: Target, params):
        return l2hmc(target, params, kernel=kernel, divergence_threshold=divergence_threshold)

    kernel = Trainable("l2hmc", dim, init_params, loss, None, None, sampler, config)
    return kernel


def kernel_config(kernel: Trainable) -> L2HMCConfig:
    """The :class:`L2HMCConfig` of a kernel made by :func:`l2hmc_kernel`."""
    return check_kernel_config(kernel, L2HMCConfig, "l2hmc_kernel")


@register("l2hmc")
def l2hmc(
    target: Target,
    params=None,
    *,
    kernel: Trainable | None = None,
    num_leapfrog_steps: int = 10,
    step_size: float = 0.1,
    hidden: tuple[int, ...] = (10, 10),
    divergence_threshold: float = 1000.0,
    seed: int = 0,
) -> Sampler:
    """The frozen L2HMC sampler (exact): learned leapfrog proposals with a Metropolis-Hastings test.

    Args:
        target: the :class:`~sgmcmc.Target` to sample.
        params: trained parameters (``sgmcmc.learned.train(kernel, ...).params``);
            default: the kernel's initial parameters (plain HMC).
        kernel: the :func:`l2hmc_kernel` the parameters were trained with;
            default: one built from ``num_leapfrog_steps``, ``step_size``,
            ``hidden`` and ``seed`` for the target's dimension.
        divergence_threshold: a log ratio below ``-divergence_threshold`` (or a
            non-finite one) is reported as a divergence.

    The state and info are those of :func:`sgmcmc.hmc` (``step_size`` is the
    learned ``eps``; the mass matrix field is unused); each step costs
    ``num_leapfrog_steps`` gradient evaluations. Warmup is plain burn-in: the
    parameters are frozen.
    """
    _, _, flat0 = flat_logdensity(target)
    if kernel is None:
        kernel = l2hmc_kernel(
            flat0.size, num_leapfrog_steps=num_leapfrog_steps, step_size=step_size, hidden=hidden, seed=seed
        )
    config = kernel_config(kernel)
    if config.dim != flat0.size:
        raise ValueError(
            f"kernel has dimension {config.dim} but the target's flattened position has {flat0.size} entries."
        )
    reference = _init_params(config, jax.random.key(0), flat0.dtype)
    params = reference if params is None else check_params(params, reference)
    divergence_threshold = _check_threshold(divergence_threshold)
    return _build(target, kernel, config, params, divergence_threshold)


def _build(target: Target, kernel: Trainable, config: L2HMCConfig, params, divergence_threshold: float) -> Sampler:
    def init(position: PyTree) -> HMCState:
        flat, _ = ravel_pytree(position)
        return hmc_init(target, position, jnp.exp(params["log_step_size"]), jnp.ones_like(flat))

    def step(key, state: HMCState, batch=None):
        if batch is not None:
            raise ValueError("l2hmc is a full-batch sampler; it does not take a minibatch.")
        flat, unravel = ravel_pytree(state.position)
        flat_grad, _ = ravel_pytree(state.logdensity_grad)

        def logdensity_and_grad(x):
            value, grad = jax.value_and_grad(target.logdensity)(unravel(x))
            return value, ravel_pytree(grad)[0]

        x_new, lp_new, g_new, log_ratio, (energy, energy_new) = l2hmc_proposal(
            config, params, key, flat, state.logdensity, flat_grad, logdensity_and_grad
        )
        decision = metropolis_hastings(key, log_ratio, divergence_threshold)
        finite = jnp.all(jnp.isfinite(g_new)) & jnp.all(jnp.isfinite(x_new))
        accept = decision.is_accepted & finite
        new_state = state._replace(
            position=jax.tree.map(lambda a, b: jnp.where(accept, a, b), unravel(x_new), state.position),
            logdensity=jnp.where(accept, lp_new, state.logdensity),
            logdensity_grad=jax.tree.map(lambda a, b: jnp.where(accept, a, b), unravel(g_new), state.logdensity_grad),
            count=state.count + 1,
        )
        info = HMCInfo(
            acceptance_rate=jnp.where(finite, decision.acceptance_rate, 0.0),
            is_accepted=accept,
            is_divergent=decision.is_divergent | (~finite & jnp.isfinite(log_ratio)),
            energy=jnp.where(accept, energy_new, energy),
            step_size=state.step_size,
            num_grad_evals=jnp.asarray(config.num_leapfrog_steps, jnp.int32),
            logdensity=new_state.logdensity,
        )
        return new_state, info

    def rebuild(new_target: Target) -> Sampler:
        return _build(new_target, kernel, config, params, divergence_threshold)

    return Sampler(init, step, target, rebuild, "l2hmc", True, None)
