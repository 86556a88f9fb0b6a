"""A-NICE-MC: a volume-preserving NICE proposal on (x, v), applied forward or inverse. Exact.

Algorithm (Song, Zhao & Ermon 2017, "A-NICE-MC: Adversarial training for
MCMC", NeurIPS). Augment the position ``x`` with an auxiliary ``v ~ N(0,
I)`` drawn afresh every step, and let ``f`` be a NICE network on ``(x, v)``
(additive coupling layers, Dinh, Krueger & Bengio 2015, so ``|det df| = 1``;
:func:`sgmcmc.flows.nice` with its scaling layer held at the identity). With
probability 1/2 propose ``(x', v') = f(x, v)``, otherwise ``f^{-1}(x, v)``.
The move ``(x, v, d) -> (f^d(x, v), -d)`` with a fair direction ``d`` is a
volume-preserving involution, so the proposal is symmetric and the
Metropolis-Hastings ratio is the target ratio times the Gaussian terms of
``v``:

    min(1, pi(x') N(v'; 0, I) / (pi(x) N(v; 0, I))).

No gradient of ``pi`` is needed. This holds for any network parameters:
training changes speed, never the stationary distribution.

Training (:func:`sgmcmc.learned.train`), two modes:

* ``mode="esjd"`` (simple, robust): L2HMC's reciprocal ESJD loss on the
  chain batch plus the initial distribution (see :mod:`sgmcmc.learned.l2hmc`);
  its gradient goes through ``log pi(x')`` (one gradient per proposal).
* ``mode="adversarial"`` (the paper's): a discriminator ``D`` on pairs tells
  *independent* pairs ``(b, c)`` of "data" from *consecutive* pairs ``(a,
  x')`` where ``x'`` is the (uncorrected) proposal from ``a``; the generator
  ``f`` minimises ``-log sigmoid(D(a, x'))`` (non-saturating GAN loss). A
  perfect ``f`` makes ``x'`` a fresh independent draw. There are no true
  samples, so the data are *bootstrapped* (as in the paper): a ring buffer
  of the chain batch's own Metropolis-corrected states (``bootstrap="self"``)
  or of states that the chain batch reaches with additional HMC moves
  (``bootstrap="hmc"``, each step ``hmc_steps`` leapfrog steps of size
  ``hmc_step_size``: a short HMC run feeding the buffer). Simplification:
  the paper's second term (samples after ``b`` steps from noise matching
  the data) is not used; the pair term already asks ``x'`` to follow the
  data's marginal. Addition (``accept_weight``, default 1): the generator
  loss also has ``-log A``, the mean log acceptance of its proposals from
  the buffer, which keeps the proposals acceptable while the buffer is
  still poor (without it, acceptance collapsed on the correlated Gaussian).
  Costs per step: the chain batch's Metropolis move (one density per
  chain), the acceptance term (two densities and a gradient per chain) and
  the HMC bootstrap (``hmc_steps + 1`` gradients per chain).

Sampling (:func:`a_nice_mc`): the frozen NICE move alone or, as in the
paper's experiments with gradient information, mixed with
``num_local_steps`` MALA/HMC moves before each NICE move (in the manner of
:mod:`sgmcmc.samplers.flow_mh`); each step costs ``num_local_steps * L + 1``
target evaluations (the NICE move evaluates the density and gradient at its
proposal so the local moves can use it; counted as one).
"""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.flatten_util import ravel_pytree

from sgmcmc import flows, noise
from sgmcmc._tree import PyTree
from sgmcmc.adaptation.window import check_target_accept, window_adaptation
from sgmcmc.learned.training import (
    Chains,
    Trainable,
    check_kernel_config,
    check_params,
    flat_logdensity,
    reciprocal_esjd_loss,
)
from sgmcmc.samplers.base import Sampler, register
from sgmcmc.samplers.hmc import HMCState, _check_steps, _check_threshold, hmc_init, local_moves
from sgmcmc.samplers.proposal import ACCEPT_STREAM, metropolis_hastings
from sgmcmc.samplers.step_size import StepSize, check_step_size
from sgmcmc.samplers.step_size_search import find_reasonable_step_size
from sgmcmc.target import Target

__all__ = ["ANiceMCConfig", "ANiceMCInfo", "a_nice_mc_kernel", "nice_proposal", "nice_map", "a_nice_mc"]

_AUX_STREAM = 0x21
_DIRECTION_STREAM = 0x22
_NICE_STREAM = 0x4E1C


class ANiceMCConfig(NamedTuple):
    """Static settings of an A-NICE-MC kernel."""

    dim: int
    aux_dim: int
    flow: flows.Flow
    init_noise: float


class ANiceMCInfo(NamedTuple):
    """``acceptance_rate`` / ``is_accepted``: the local move's (the NICE move's without one); ``nice_*``: NICE's."""

    acceptance_rate: jax.Array
    is_accepted: jax.Array
    is_divergent: jax.Array
    step_size: jax.Array
    num_grad_evals: jax.Array
    logdensity: jax.Array
    nice_acceptance_rate: jax.Array
    nice_is_accepted: jax.Array


def _check_int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def _positive(value, name: str) -> float:
    if not (math.isfinite(float(value)) and float(value) > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}.")
    return float(value)


def _init_params(config: ANiceMCConfig, key, dtype=jnp.float32) -> dict:
    """The coupling layers with small random output layers (an identity start would give a zero ESJD gradient)."""
    layers = config.flow.init(key, dtype)["layers"]
    out = []
    for k, layer in enumerate(layers):
        last = layer[-1]
        m, n = last["w"].shape
        noise_w = jax.random.normal(jax.random.fold_in(key, 1000 + k), (m, n), dtype) / math.sqrt(m)
        out.append([*layer[:-1], {"w": config.init_noise * noise_w, "b": last["b"]}])
    return {"layers": out}


def nice_map(config: ANiceMCConfig, params, x, v, direction):
    """``f(x, v)`` (``direction > 0``) or ``f^{-1}(x, v)``: the NICE couplings, volume preserving."""
    total = config.dim + config.aux_dim
    full = {
        "loc": jnp.zeros((total,), x.dtype),
        "log_scale": jnp.zeros((total,), x.dtype),
        "layers": params["layers"],
    }
    z = jnp.concatenate([x, v])
    # Both directions and a select (not lax.cond): chains are vmapped, where a cond becomes a select anyway,
    # and an eager (un-jitted) step would recompile a cond on every call.
    y = jnp.where(direction > 0, config.flow.forward(full, z)[0], config.flow.inverse(full, z)[0])
    return y[: config.dim], y[config.dim :]


def nice_proposal(config: ANiceMCConfig, params, key, x):
    """A proposal from ``x``: fresh ``v``, a fair direction, the map. Returns ``(x', log N(v') - log N(v))``."""
    v = noise.normal(key, (config.aux_dim,), x.dtype, stream=_AUX_STREAM)
    direction = jnp.where(noise.uniform(key, (), x.dtype, stream=_DIRECTION_STREAM) < 0.5, 1, -1)
    x_new, v_new = nice_map(config, params, x, v, direction)
    return x_new, 0.5 * (jnp.sum(v**2) - jnp.sum(v_new**2))


def _accept_prob(log_ratio):
    finite = jnp.isfinite(log_ratio)
    return jnp.where(finite, jnp.exp(jnp.minimum(0.0, jnp.where(finite, log_ratio, 0.0))), 0.0)


def _disc(params, a, b):
    return flows._mlp(params, jnp.concatenate([a, b, b - a], axis=-1))[..., 0]


def a_nice_mc_kernel(
    dim: int,
    *,
    aux_dim: int | None = None,
    num_layers: int = 4,
    hidden: tuple[int, ...] = (32, 32),
    mode: str = "esjd",
    init_noise: float = 0.1,
    length_scale: float = 1.0,
    init_weight: float = 1.0,
    init_scale: float = 1.0,
    init_loc=None,
    pool_size: int = 4096,
    disc_hidden: tuple[int, ...] = (32, 32),
    disc_learning_rate: float = 1e-3,
    bootstrap: str = "self",
    hmc_step_size: float = 0.1,
    hmc_steps: int = 5,
    accept_weight: float = 1.0,
) -> Trainable:
    """An A-NICE-MC kernel ready for :func:`sgmcmc.learned.train` (see the module docstring).

    Args:
        dim: length of the flattened position.
        aux_dim: length of ``v`` (default ``dim``).
        num_layers, hidden: the NICE network (:func:`sgmcmc.flows.nice`); with
            ``aux_dim == dim`` its first two layers are ``v += t(x)`` then
            ``x += t(v)``.
        mode: ``"esjd"`` or ``"adversarial"``.
        init_noise: scale of the random output layers of the starting network.
        length_scale, init_weight, init_scale, init_loc: the ESJD loss and its
            initial-distribution term, as in :func:`sgmcmc.learned.l2hmc_kernel`.
        pool_size: bootstrap buffer of the adversarial mode (rounded up to a
            multiple of the number of chains).
        disc_hidden, disc_learning_rate: the pair discriminator and its Adam rate.
        bootstrap: ``"self"`` or ``"hmc"`` (adversarial mode).
        hmc_step_size, hmc_steps: the HMC bootstrap moves.
        accept_weight: weight of ``-log A`` (the proposals' acceptance, from
            the buffer's draws) added to the adversarial generator loss; ``0``
            is the paper's pure adversarial loss, which drifts to proposals the
            Metropolis test rejects when the buffer is far from the target
            (measured on the 2-d correlated Gaussian: acceptance 0.4% after
            1000 steps).
    """
    dim = _check_int(dim, "dim", 1)
    aux_dim = dim if aux_dim is None else _check_int(aux_dim, "aux_dim", 1)
    num_layers = _check_int(num_layers, "num_layers", 1)
    if mode not in ("esjd", "adversarial"):
        raise ValueError(f"mode must be 'esjd' or 'adversarial', got {mode!r}.")
    if bootstrap not in ("self", "hmc"):
        raise ValueError(f"bootstrap must be 'self' or 'hmc', got {bootstrap!r}.")
    lam = _positive(length_scale, "length_scale")
    scale = _positive(init_scale, "init_scale")
    init_noise = _positive(init_noise, "init_noise")
    eps_hmc = _positive(hmc_step_size, "hmc_step_size")
    hmc_steps = _check_int(hmc_steps, "hmc_steps", 1)
    pool_size = _check_int(pool_size, "pool_size", 1)
    disc_lr = _positive(disc_learning_rate, "disc_learning_rate")
    disc_hidden = tuple(_check_int(h, "disc_hidden width", 1) for h in disc_hidden)
    accept_weight = float(accept_weight)
    if not accept_weight >= 0:
        raise ValueError(f"accept_weight must be >= 0, got {accept_weight!r}.")
    weight = float(init_weight)
    if not weight >= 0:
        raise ValueError(f"init_weight must be >= 0, got {init_weight!r}.")
    loc = np.zeros(dim, np.float32) if init_loc is None else np.asarray(init_loc, np.float32).reshape(-1)
    if loc.shape != (dim,):
        raise ValueError(f"init_loc must have {dim} entries, got shape {np.shape(init_loc)}.")
    flow = flows.nice(dim + aux_dim, num_layers, tuple(hidden))
    config = ANiceMCConfig(dim, aux_dim, flow, init_noise)
    disc_opt = optax.adam(disc_lr)

    def init_params(key, dtype=jnp.float32):
        return _init_params(config, key, dtype)

    def propose_batch(params, keys, x):
        return jax.vmap(lambda k, xi: nice_proposal(config, params, k, xi))(keys, x)

    def esjd_loss(params, aux, key, chains: Chains, flat_target):
        del aux
        n = chains.position.shape[0]
        keys = jax.vmap(lambda i: noise.fold_in(key, i))(jnp.arange(n))
        x, lp = chains.position, chains.logdensity
        if weight > 0:  # one batch: the chains, then fresh draws from the initial distribution
            z = loc + scale * noise.normal(noise.fold_in(key, 0x7F), x.shape, x.dtype)
            x, lp = jnp.concatenate([x, z]), jnp.concatenate([lp, jax.vmap(flat_target.logdensity)(z)])
            keys = jnp.concatenate([keys, jax.vmap(lambda k: noise.fold_in(k, 0x7F))(keys)])
        x_new, log_v = propose_batch(params, keys, x)
        lp_new = jax.vmap(flat_target.logdensity)(x_new)
        prob = _accept_prob(lp_new - lp + log_v)
        delta = jnp.sum((x_new - x) ** 2, axis=-1)
        value = reciprocal_esjd_loss(delta[:n], prob[:n], lam)
        if weight > 0:
            value = value + weight * reciprocal_esjd_loss(delta[n:], prob[n:], lam)
        x_new, lp_new, prob, delta = x_new[:n], lp_new[:n], prob[:n], delta[:n]
        u = jax.vmap(lambda k: noise.uniform(k, (), prob.dtype, stream=ACCEPT_STREAM))(keys[:n])
        ok = lax.stop_gradient(u < prob)
        moved = lax.stop_gradient(
            Chains(
                jnp.where(ok[:, None], x_new, chains.position),
                jnp.where(ok, lp_new, chains.logdensity),
                chains.logdensity_grad,
            )
        )
        metrics = {
            "acceptance": jnp.mean(lax.stop_gradient(prob)),
            "esjd": jnp.mean(lax.stop_gradient(delta * prob)),
            # log pi at each proposal (its gradient in the backward pass), and at the fresh draws
            "num_grad_evals": jnp.asarray(n * (1 if weight == 0 else 3), jnp.float32),
        }
        return value, (moved, metrics)

    def init_aux(key, params, chains: Chains):
        n, d = chains.position.shape
        rows = -(-pool_size // n) * n
        sizes = (3 * d, *disc_hidden, 1)
        disc = flows._mlp_init(key, sizes, chains.position.dtype)
        pool = jnp.tile(chains.position, (rows // n, 1))
        return {"disc": disc, "disc_opt": disc_opt.init(disc), "pool": pool, "count": jnp.zeros((), jnp.int32)}

    def hmc_move(key, chains: Chains, flat_target):
        """One HMC transition of every chain (bootstrap draws); ``hmc_steps + 1`` gradients per chain."""
        n = chains.position.shape[0]
        lp0, g0 = jax.vmap(flat_target.logdensity_and_grad)(chains.position)
        p0 = noise.normal(key, chains.position.shape, chains.position.dtype, stream=0x31)

        def leap(carry, _):
            x, p, lp, g = carry
            p = p + 0.5 * eps_hmc * g
            x = x + eps_hmc * p
            lp, g = jax.vmap(flat_target.logdensity_and_grad)(x)
            return (x, p + 0.5 * eps_hmc * g, lp, g), None

        (x, p, lp, g), _ = lax.scan(leap, (chains.position, p0, lp0, g0), None, length=hmc_steps)
        log_ratio = lp - lp0 - 0.5 * jnp.sum(p**2, -1) + 0.5 * jnp.sum(p0**2, -1)
        u = noise.uniform(key, (n,), log_ratio.dtype, stream=0x32)
        ok = jnp.isfinite(log_ratio) & (jnp.log(u) < log_ratio) & jnp.all(jnp.isfinite(g), -1)
        return Chains(
            jnp.where(ok[:, None], x, chains.position),
            jnp.where(ok, lp, lp0),
            jnp.where(ok[:, None], g, g0),
        )

    def prepare(params, aux, key, chains: Chains, flat_target):
        n = chains.position.shape[0]
        extra = jnp.zeros((), jnp.float32)
        if bootstrap == "hmc":
            chains = hmc_move(noise.fold_in(key, 3), chains, flat_target)
            extra = jnp.asarray(n * (hmc_steps + 1), jnp.float32)
        pool, count = aux["pool"], aux["count"]
        slots = pool.shape[0] // n
        pool = lax.dynamic_update_slice(pool, chains.position, ((count % slots) * n, jnp.int32(0)))
        count = count + 1
        filled = jnp.minimum(count * n, pool.shape[0])
        a, b, c = (pool[noise.uniform_indices(noise.fold_in(key, 10 + i), n, filled)] for i in range(3))
        keys = jax.vmap(lambda i: noise.fold_in(noise.fold_in(key, 20), i))(jnp.arange(n))
        fake, _ = propose_batch(lax.stop_gradient(params), keys, a)

        def disc_loss(disc):
            return jnp.mean(jax.nn.softplus(-_disc(disc, b, c)) + jax.nn.softplus(_disc(disc, a, fake)))

        grads = jax.grad(disc_loss)(aux["disc"])
        updates, opt_state = disc_opt.update(grads, aux["disc_opt"], aux["disc"])
        disc = optax.apply_updates(aux["disc"], updates)
        return {"disc": disc, "disc_opt": opt_state, "pool": pool, "count": count}, chains, extra

    def adversarial_loss(params, aux, key, chains: Chains, flat_target):
        n = chains.position.shape[0]
        pool, filled = aux["pool"], jnp.minimum(aux["count"] * n, aux["pool"].shape[0])
        a = pool[noise.uniform_indices(noise.fold_in(key, 40), n, filled)]
        keys = jax.vmap(lambda i: noise.fold_in(key, i))(jnp.arange(n))
        keys_a = jax.vmap(lambda k: noise.fold_in(k, 41))(keys)
        # one batch: the chains' Metropolis moves (no gradient), then the generator's pairs from the buffer
        x_new, log_v = propose_batch(params, jnp.concatenate([keys, keys_a]), jnp.concatenate([chains.position, a]))
        fake = x_new[n:]
        value = jnp.mean(jax.nn.softplus(-_disc(aux["disc"], a, fake)))
        grads = n
        if accept_weight > 0:
            log_ratio = jax.vmap(flat_target.logdensity)(fake) - jax.vmap(flat_target.logdensity)(a) + log_v[n:]
            log_accept = jnp.minimum(0.0, jnp.where(jnp.isfinite(log_ratio), log_ratio, -1e4))
            value = value - accept_weight * jnp.mean(jnp.maximum(log_accept, -1e4))
            grads = 3 * n
        x_new, log_v = lax.stop_gradient(x_new[:n]), lax.stop_gradient(log_v[:n])
        lp_new = jax.vmap(flat_target.logdensity)(x_new)
        prob = _accept_prob(lp_new - chains.logdensity + log_v)
        u = jax.vmap(lambda k: noise.uniform(k, (), prob.dtype, stream=ACCEPT_STREAM))(keys)
        ok = u < prob
        moved = Chains(
            jnp.where(ok[:, None], x_new, chains.position),
            jnp.where(ok, lp_new, chains.logdensity),
            chains.logdensity_grad,
        )
        delta = jnp.sum((x_new - chains.position) ** 2, axis=-1)
        metrics = {
            "acceptance": jnp.mean(prob),
            "esjd": jnp.mean(delta * prob),
            "num_grad_evals": jnp.asarray(grads, jnp.float32),
        }
        return value, (moved, metrics)

    def sampler(target: Target, params, **kwargs):
        return a_nice_mc(target, params, kernel=kernel, **kwargs)

    if mode == "esjd":
        kernel = Trainable("a_nice_mc", dim, init_params, esjd_loss, None, None, sampler, config)
    else:
        kernel = Trainable("a_nice_mc", dim, init_params, adversarial_loss, init_aux, prepare, sampler, config)
    return kernel


def kernel_config(kernel: Trainable) -> ANiceMCConfig:
    """The :class:`ANiceMCConfig` of a kernel made by :func:`a_nice_mc_kernel`."""
    return check_kernel_config(kernel, ANiceMCConfig, "a_nice_mc_kernel")


def nice_move(key, state: HMCState, target: Target, config: ANiceMCConfig, params):
    """One Metropolis-Hastings NICE move of an HMC-family state (density and gradient at the proposal)."""
    flat, unravel = ravel_pytree(state.position)
    x_new, log_v = nice_proposal(config, params, key, flat)
    lp_new, grad_new = jax.value_and_grad(target.logdensity)(unravel(x_new))
    log_ratio = lp_new - state.logdensity + log_v
    decision = metropolis_hastings(key, log_ratio, float("inf"))
    finite = jnp.all(jnp.isfinite(ravel_pytree(grad_new)[0])) & jnp.all(jnp.isfinite(x_new))
    accept = decision.is_accepted & finite
    pick = lambda a, b: jax.tree.map(lambda u, w: jnp.where(accept, u, w), a, b)  # noqa: E731
    new_state = state._replace(
        position=pick(unravel(x_new), state.position),
        logdensity=jnp.where(accept, lp_new, state.logdensity),
        logdensity_grad=pick(grad_new, state.logdensity_grad),
    )
    is_nan = jnp.isnan(log_ratio) | (log_ratio == jnp.inf) | (~finite & jnp.isfinite(log_ratio))
    return new_state, jnp.where(finite, decision.acceptance_rate, 0.0), accept, is_nan


@register("a_nice_mc")
def a_nice_mc(
    target: Target,
    params=None,
    *,
    kernel: Trainable | None = None,
    num_local_steps: int = 0,
    local_kernel: str = "mala",
    step_size: StepSize = 0.1,
    num_integration_steps: int = 5,
    target_accept: float | None = None,
    divergence_threshold: float = 1000.0,
    seed: int = 0,
) -> Sampler:
    """The frozen A-NICE-MC sampler (exact): NICE moves, optionally mixed with MALA/HMC moves.

    Args:
        target: the :class:`~sgmcmc.Target` to sample.
        params: trained parameters (``sgmcmc.learned.train(kernel, ...).params``);
            default: the kernel's random initial network (exact, slow).
        kernel: the :func:`a_nice_mc_kernel` they were trained with (default:
            ``a_nice_mc_kernel(dim)``).
        num_local_steps: MALA/HMC transitions before each NICE move (0: the
            NICE move alone).
        local_kernel: ``"mala"`` or ``"hmc"`` (``num_integration_steps``).
        step_size: the local kernel's step size, adapted during warmup
            (Stan's dual averaging, ``target_accept``) when a float.
        divergence_threshold: for the local moves.
        seed: seed of the default initial network.

    State: :class:`~sgmcmc.samplers.hmc.HMCState`; info:
    :class:`ANiceMCInfo`. Each step costs ``num_local_steps * L + 1`` target
    evaluations (``L`` = 1 for MALA).
    """
    step_size = check_step_size(step_size)
    _, _, flat0 = flat_logdensity(target)
    if kernel is None:
        kernel = a_nice_mc_kernel(flat0.size)
    config = kernel_config(kernel)
    if config.dim != flat0.size:
        raise ValueError(
            f"kernel has dimension {config.dim} but the target's flattened position has {flat0.size} entries."
        )
    reference = _init_params(config, jax.random.key(seed), flat0.dtype)
    params = reference if params is None else check_params(params, reference)
    num_local_steps = _check_int(num_local_steps, "num_local_steps", 0)
    if local_kernel not in ("mala", "hmc"):
        raise ValueError(f"local_kernel must be 'mala' or 'hmc', got {local_kernel!r}.")
    steps = 1 if local_kernel == "mala" else _check_steps(num_integration_steps)
    if target_accept is None:
        target_accept = 0.574 if local_kernel == "mala" else 0.8
    target_accept = check_target_accept(target_accept)
    divergence_threshold = _check_threshold(divergence_threshold)
    settings = (kernel, config, params, num_local_steps, steps, step_size, target_accept, divergence_threshold)
    return _build(target, settings)


def _build(target: Target, settings: tuple) -> Sampler:
    _, config, params, num_local_steps, steps, step_size, target_accept, divergence_threshold = settings

    def init(position: PyTree) -> HMCState:
        flat, _ = ravel_pytree(position)
        return hmc_init(target, position, step_size, jnp.ones_like(flat))

    def step(key, state: HMCState, batch=None):
        if batch is not None:
            raise ValueError("a_nice_mc is a full-batch sampler; it does not take a minibatch.")
        state, rate, accepted, divergent, eps = local_moves(
            key, state, target, step_size, steps, num_local_steps, divergence_threshold
        )
        state, n_rate, n_accept, n_nan = nice_move(noise.fold_in(key, _NICE_STREAM), state, target, config, params)
        if num_local_steps == 0:
            rate, accepted = n_rate, n_accept
            state = state._replace(count=state.count + 1)
        info = ANiceMCInfo(
            acceptance_rate=rate,
            is_accepted=accepted,
            is_divergent=divergent | n_nan,
            step_size=eps,
            num_grad_evals=jnp.asarray(num_local_steps * steps + 1, jnp.int32),
            logdensity=state.logdensity,
            nice_acceptance_rate=n_rate,
            nice_is_accepted=n_accept,
        )
        return state, info

    def rebuild(new_target: Target) -> Sampler:
        return _build(new_target, settings)

    warmup = None
    if num_local_steps > 0 and not callable(step_size):
        search = lambda key, state: find_reasonable_step_size(key, state, target)  # noqa: E731
        warmup = window_adaptation(step, search, target_accept=target_accept, metric="diag", adapt_mass_matrix=False)
    return Sampler(init, step, target, rebuild, "a_nice_mc", True, warmup)
