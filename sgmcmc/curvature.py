"""Largest curvature of a loss by Hessian-vector power iteration, and SGD's stability bound.

Gradient descent with rate ``eps`` on a quadratic with Hessian eigenvalue
``lam`` multiplies the error along that eigenvector by ``1 - eps lam`` per
step, so it diverges once ``eps lam >= 2``; heavy-ball momentum ``mu`` moves
the bound to ``eps lam < 2 (1 + mu)`` (Polyak 1964), and a diagonal
preconditioner ``h`` replaces ``lam`` by the eigenvalues of ``h^(1/2) A
h^(1/2)``. Minibatch noise only adds variance around that linear recursion, so
the same bound decides whether constant SGD has a stationary distribution at
all: the stationary covariance of the discrete-time Lyapunov equation blows up
as ``eps lam -> 2``.

:func:`largest_eigenvalue` estimates the eigenvalue of largest magnitude of
``h^(1/2) A h^(1/2)`` by power iteration with Hessian-vector products
(``jax.jvp`` of ``jax.grad``, one forward-over-reverse pass each, no Hessian
is formed). On a non-convex loss the dominant eigenvalue may be negative; its
magnitude is returned, which is the conservative choice for a stability check.
Power iteration converges at rate ``|lam_2 / lam_1|`` per iteration and
approaches ``|lam_1|`` from below (the Rayleigh quotient of a unit vector), so
with closely spaced top eigenvalues the estimate is slightly low.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from sgmcmc import noise
from sgmcmc._tree import PyTree

__all__ = ["largest_eigenvalue", "stability_bound"]


def stability_bound(momentum=0.0):
    """The largest stable ``eps * lam_max`` for SGD with heavy-ball ``momentum``: ``2 (1 + mu)``."""
    return 2.0 * (1.0 + momentum)


def largest_eigenvalue(
    loss_fn: Callable[[PyTree], jax.Array],
    position: PyTree,
    key,
    *,
    num_iterations: int = 20,
    preconditioner: jax.Array | None = None,
) -> jax.Array:
    """``|lam_max|`` of the Hessian of ``loss_fn`` at ``position`` (jit-able, vmap-able).

    Args:
        loss_fn: scalar function of a pytree position (e.g. the mean training loss).
        position: where the Hessian is taken.
        key: PRNG key for the random start vector.
        num_iterations: Hessian-vector products spent.
        preconditioner: optional positive-definite ``H``, a flat ``(D,)``
            diagonal or a function ``(D,) -> (D,)``; the eigenvalue is then
            that of ``H A`` (similar to ``H^(1/2) A H^(1/2)``: what a
            preconditioned step ``theta - H grad`` sees).
    """
    flat, unravel = ravel_pytree(position)
    grad_fn = jax.grad(lambda f: loss_fn(unravel(f)))

    def matvec(v):
        out = jax.jvp(grad_fn, (flat,), (v,))[1]
        if preconditioner is None:
            return out
        return preconditioner(out) if callable(preconditioner) else preconditioner * out

    v0 = noise.normal(key, flat.shape, flat.dtype, stream=11)
    v0 = v0 / jnp.linalg.norm(v0)

    def body(_, carry):
        v, _ = carry
        w = matvec(v)
        norm = jnp.linalg.norm(w)
        return jnp.where(norm > 0, w / norm, v), norm

    _, lam = jax.lax.fori_loop(0, num_iterations, body, (v0, jnp.zeros((), flat.dtype)))
    return lam
