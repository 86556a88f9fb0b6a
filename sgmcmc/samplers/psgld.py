"""Preconditioned SGLD with the RMSprop preconditioner (pSGLD). Approximate.

Algorithm (Li, Chen, Carlson & Carin 2016, "Preconditioned stochastic gradient
Langevin dynamics for deep neural networks", AAAI): SGLD with a diagonal
preconditioner ``G`` taken from RMSprop's running average of squared
gradients,

    V'     = beta V + (1 - beta) g_bar * g_bar,        g_bar = g_hat / N
    G      = 1 / (lambda + sqrt(V' / (1 - beta^(t+1))))      (bias-corrected, see below)
    theta' = theta + (eps / 2) (G * g_hat + T Gamma) + sqrt(eps T G) * xi,   xi ~ N(0, I)

where ``g_hat`` is the sum-scaled gradient estimate of every sgmcmc sampler
(``grad log p(theta) + (N/n) sum_batch grad log p(x_i|theta)``) and ``g_bar``
the same on the mean scale, i.e. minus the gradient of the deep-learning loss
``mean_batch(-log p(x|theta)) + (weight decay / 2) |theta|^2``: ``V`` and ``G``
are exactly what ``optax.rmsprop`` keeps for that loss, ``lambda`` is
RMSprop's ``eps`` (added outside the square root) and at ``T = 0`` the update
*is* RMSprop with learning rate ``eps N / 2``. (Li et al. average the
likelihood part of the gradient only; including ``grad log p(theta) / N``
makes the correspondence with a weight-decayed loss exact.) For targets without
data, N = 1.

``Gamma`` is the correction term ``Gamma_i = dG_i / dtheta_i`` that the
position dependence of ``G`` requires (Li et al., eq. 4). Through the current
gradient only (``V_prev`` fixed), ``Gamma_i = -(1 - beta) / (1 - beta^(t+1))
* g_bar_i h_i / (sqrt(V_i) (lambda + sqrt(V_i))^2)`` with ``h_i`` the
diagonal of the Hessian of the mean-scaled log posterior. With
``correction=True`` it is computed with an unbiased Hutchinson estimate of
``h`` (``z * (H z)``, ``z`` Rademacher, one Hessian-vector product by
forward-over-reverse differentiation on the same minibatch): the step then
costs two gradient evaluations. Li et al. drop it by default (it is O(1 - beta)),
and so does this sampler.

Bias. With the preconditioner frozen (``freeze_after``, see below), pSGLD is
SGLD with a fixed diagonal metric: for a Gaussian coordinate with variance
``s^2`` the full-batch chain has variance ``T s^2 / (1 - eps G / (4 s^2))``.
While ``V`` still adapts, ``G`` follows the recent gradients, and the chain
moves slower where the gradients have been large: on a 10-d Gaussian this
inflated the variance by 26-40% at ``beta = 0.99`` and by 4-7% at
``beta = 0.999`` (eps = 0.02; measured with 8 x 200,000 steps), and the
correction term changed that by less than 1%, because the memory of ``V``,
not its dependence on the current gradient, causes it. That extra bias has no
closed form. ``freeze_after=k`` stops updating ``V`` after ``k`` steps (e.g.
the burn-in), which removes it: the sampling phase is then a time-homogeneous
preconditioned SGLD whose only bias is the discretisation bias above.

``bias_correction=True`` (default) divides ``V`` by ``1 - beta^(t+1)`` as Adam
does, so that the first steps are not ``1 / sqrt(1 - beta)`` times too large
(``V`` starts at 0); ``bias_correction=False`` is Li et al.'s Algorithm 1.

Do not start at a stationary point of a full-batch gradient (a mode, e.g. an
SGD/MAP solution) with ``batch_size=None``: there ``g = 0``, so ``V = 0`` and
``G = 1 / lambda`` (1e5 by default), and the first noise draw throws the chain
to ``|theta| ~ sqrt(eps / lambda)``; since ``G`` then shrinks like
``1 / |theta|`` the drift back is only ``eps / 2`` per step, and a short run
reports that transient as the posterior (a 5-d standard normal started at 0
gave sd 43, 26 and 10 at eps = 0.1, 0.01, 0.001 over 5,000 steps). Start a
little away from the mode, or use minibatch gradients (non-zero there).

Non-finite steps are rejected and reported as in :mod:`sgmcmc.samplers.sgld`
(the running average is not updated by a rejected step).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from sgmcmc import noise
from sgmcmc._tree import PyTree
from sgmcmc.samplers.base import Sampler, register
from sgmcmc.samplers.sg_common import (
    SGInfo,
    Temperature,
    check_real,
    check_temperature,
    current_temperature,
    data_scale,
    has_noise,
    make_gradient_estimator,
    reject_non_finite,
)
from sgmcmc.samplers.step_size import StepSize, check_step_size, current_step_size, initial_step_size
from sgmcmc.target import Target

__all__ = ["PSGLDState", "psgld", "preconditioner"]


class PSGLDState(NamedTuple):
    """State of a pSGLD chain: ``square_avg`` is RMSprop's ``V`` (mean-scaled, not bias-corrected)."""

    position: PyTree
    square_avg: PyTree
    step_size: jax.Array
    count: jax.Array


def _unbias(num_updates: jax.Array, decay: float, dtype, bias_correction: bool) -> jax.Array:
    """``1 - beta^t`` after ``t`` updates of ``V`` (1 without bias correction or before any update)."""
    if not bias_correction:
        return jnp.ones((), dtype)
    power = jnp.asarray(decay, dtype) ** num_updates.astype(dtype)
    return jnp.where(num_updates > 0, 1.0 - power, 1.0).astype(dtype)


def preconditioner(
    state: PSGLDState, *, decay: float = 0.99, eps: float = 1e-5, bias_correction: bool = True, freeze_after=None
) -> PyTree:
    """The diagonal preconditioner ``G = 1 / (eps + sqrt(V_hat))`` that ``state`` holds (a pytree like the position).

    Pass the sampler's own settings. Once ``V`` is frozen (``freeze_after``)
    this is exactly the ``G`` of every later step.
    """
    updates = state.count if freeze_after is None else jnp.minimum(state.count, freeze_after)
    unbias = _unbias(updates, decay, state.step_size.dtype, bias_correction)
    return jax.tree.map(lambda v: 1.0 / (eps + jnp.sqrt(v / unbias)), state.square_avg)


@register("psgld")
def psgld(
    target: Target,
    step_size: StepSize = 1e-4,
    *,
    batch_size: int | None = None,
    temperature: Temperature = 1.0,
    decay: float = 0.99,
    eps: float = 1e-5,
    bias_correction: bool = True,
    correction: bool = False,
    freeze_after: int | None = None,
) -> Sampler:
    """Preconditioned SGLD with the RMSprop preconditioner (approximate; see module docstring).

    Args:
        target: the :class:`~sgmcmc.Target` to sample.
        step_size: ``eps`` of the update, a positive float or a schedule. At
            ``T = 0`` the sampler is ``optax.rmsprop`` with learning rate
            ``step_size * N / 2`` (see :func:`sgmcmc.convert.psgld_from_rmsprop`).
        batch_size: minibatch size n; ``None`` uses the full-batch gradient.
        temperature: ``T >= 0`` or a schedule ``count -> T``.
        decay: RMSprop's ``beta`` in ``[0, 1)`` (Li et al.'s ``alpha``).
        eps: ``lambda > 0`` added to ``sqrt(V)`` (outside the root).
        bias_correction: divide ``V`` by ``1 - beta^(t+1)`` (Adam-style).
        correction: add the ``Gamma`` correction term (Hutchinson estimate of
            the Hessian diagonal; two gradient evaluations per step).
        freeze_after: stop updating ``V`` after this many steps (``None``:
            never); the preconditioner is then fixed.
    """
    step_size = check_step_size(step_size)
    temperature = check_temperature(temperature)
    decay = check_real(decay, "decay", low=0.0, high=1.0, high_open=True)
    eps = check_real(eps, "eps", low=0.0, low_open=True)
    if freeze_after is not None and (
        isinstance(freeze_after, bool) or not isinstance(freeze_after, int) or freeze_after < 1
    ):
        raise ValueError(f"freeze_after must be a positive integer or None, got {freeze_after!r}.")
    settings = (step_size, batch_size, temperature, decay, eps, bool(bias_correction), bool(correction), freeze_after)
    return _build(target, *settings)


def _build(target, step_size, batch_size, temperature, decay, eps, bias_correction, correction, freeze_after):
    estimator = make_gradient_estimator(target, batch_size)
    noisy = has_noise(temperature)
    scale = float(data_scale(target))

    def init(position: PyTree) -> PSGLDState:
        flat, _ = ravel_pytree(position)
        square_avg = jax.tree.map(jnp.zeros_like, position)
        return PSGLDState(position, square_avg, initial_step_size(step_size, flat.dtype), jnp.zeros((), jnp.int32))

    def gradient(key, position, batch):
        """The estimate, and with ``correction`` the Hessian-diagonal estimate ``z * Hz`` (same minibatch)."""
        if not correction:
            estimate = estimator.estimate(key, position, batch)
            return estimate.value, estimate.grad, None, estimate.num_grad_evals
        z = jax.tree.map(
            lambda n: jnp.where(n >= 0, 1.0, -1.0).astype(n.dtype),
            noise.normal_like(key, position, stream=1),  # independent of the step's noise (stream 0)
        )

        def value_and_grad(p):
            estimate = estimator.estimate(key, p, batch)
            return estimate.value, estimate.grad

        (value, grad), (_, hz) = jax.jvp(value_and_grad, (position,), (z,))
        hess_diag = jax.tree.map(lambda a, b: a * b, z, hz)
        return value, grad, hess_diag, jnp.asarray(2, jnp.int32)

    def step(key: jax.Array, state: PSGLDState, batch=None) -> tuple[PSGLDState, SGInfo]:
        value, grad, hess_diag, num_grad_evals = gradient(key, state.position, batch)
        eps_t = current_step_size(step_size, state.step_size, state.count)
        dtype = eps_t.dtype
        if freeze_after is None:
            adapting = jnp.asarray(True)
            updates = state.count + 1
        else:
            adapting = state.count < freeze_after
            updates = jnp.minimum(state.count + 1, freeze_after)
        unbias = _unbias(updates, decay, dtype, bias_correction)
        # V' = keep V + weight g_bar^2: (beta, 1 - beta) while adapting, (1, 0) once frozen.
        keep = jnp.where(adapting, decay, 1.0).astype(dtype)
        weight = jnp.where(adapting, 1.0 - decay, 0.0).astype(dtype)
        # Clamped so that an overflowing g^2 cannot leave V = inf (G = 0 would freeze the coordinate
        # silently); a NaN gradient still makes V, G and the position NaN, which rejects the step.
        big = jnp.finfo(dtype).max
        square_avg = jax.tree.map(
            lambda v, g: jnp.minimum(keep * v + weight * (g / scale) ** 2, big), state.square_avg, grad
        )
        root = jax.tree.map(lambda v: jnp.sqrt(v / unbias), square_avg)
        precond = jax.tree.map(lambda r: 1.0 / (eps + r), root)
        drift = jax.tree.map(lambda p, g: p * g, precond, grad)
        temp = current_temperature(temperature, state.count, dtype) if noisy else jnp.zeros((), dtype)
        if correction:
            # Gamma_i = dG_i / dtheta_i through the current gradient's share of V' (zero once frozen).
            factor = weight / unbias

            def gamma(g, h, r):
                ratio = jnp.where(r > 0, (g / scale) / jnp.where(r > 0, r, 1.0), 0.0)
                return -factor * ratio * (h / scale) / (eps + r) ** 2

            drift = jax.tree.map(lambda d, g, h, r: d + temp * gamma(g, h, r), drift, grad, hess_diag, root)
        half_eps = 0.5 * eps_t
        if noisy:
            xi = noise.normal_like(key, state.position)
            noise_var = eps_t * temp
            proposed = jax.tree.map(
                lambda x, d, p, z: x + half_eps * d + jnp.sqrt(noise_var * p) * z, state.position, drift, precond, xi
            )
        else:
            proposed = jax.tree.map(lambda x, d: x + half_eps * d, state.position, drift)
        # V is finite (clamped) unless the gradient is NaN, which makes the position NaN too.
        finite, (position, square_avg) = reject_non_finite(
            value, (proposed, square_avg), (state.position, state.square_avg), check=proposed
        )
        new_state = PSGLDState(position, square_avg, state.step_size, state.count + 1)
        info = SGInfo(
            acceptance_rate=jnp.ones((), dtype),
            is_divergent=~finite,
            step_size=eps_t,
            num_grad_evals=num_grad_evals,
            logdensity=value,
        )
        return new_state, info

    def rebuild(new_target: Target) -> Sampler:
        return _build(
            new_target, step_size, batch_size, temperature, decay, eps, bias_correction, correction, freeze_after
        )

    return Sampler(init, step, target, rebuild, "psgld", False)
