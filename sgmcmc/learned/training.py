"""Training learned Metropolis proposals: one loop shared by every learned kernel.

A learned kernel (:mod:`sgmcmc.learned.l2hmc`, :mod:`sgmcmc.learned.a_nice_mc`)
is a proposal with its own parameters whose Metropolis-Hastings ratio can be
computed exactly for *any* value of them. :func:`train` fits those
parameters to a sampler objective on a batch of chains, then returns them
frozen; the kernel's ``sampler(target, params)`` is an ordinary
:class:`~sgmcmc.samplers.base.Sampler` that closes over them. Training only
changes how fast the frozen sampler mixes: its draws are exact either way.

Loop: ``num_steps`` optax steps, each on the whole chain batch
(``num_chains`` chains that the kernel itself moves, Metropolis-corrected,
after every step). Steps run as ``lax.scan`` chunks of ``chunk_size`` steps
compiled once; step ``t`` uses the key ``fold_in(key, t)``, so neither the
chunking nor a resumed run changes the result. Between chunks control returns
to Python for the tqdm progress bar, early stopping and the checkpoint.

* **Optimiser**: any optax transformation (default: zeroed NaN gradients,
  global-norm clipping and Adam, :func:`sgmcmc.flows.optimizer`); a step whose
  loss or updated parameters are not finite is skipped.
* **Early stopping** (``patience``): training stops when the mean loss of a
  chunk has not improved on the best one by more than ``min_delta`` for
  ``patience`` steps; the parameters of the best chunk are returned.
* **Checkpointing** (``checkpoint=dir``): after every chunk the parameters,
  optimiser, kernel auxiliaries (e.g. a discriminator) and chain batch are
  written atomically with :class:`sgmcmc.checkpoint.Checkpoint`; calling
  :func:`train` again with the same arguments resumes with the same result
  as an uninterrupted run.

The :class:`TrainReport` is the training half of the cost ledger: the loss,
acceptance and expected squared jump distance (ESJD) curves, the target
gradient evaluations the training spent and its wall time. :func:`cost_ledger`
puts it next to a sampling run's cost.

A kernel plugs in through :class:`Trainable`.
"""

from __future__ import annotations

import collections
import functools
import math
import numbers
import os
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.flatten_util import ravel_pytree

from sgmcmc import flows, noise
from sgmcmc.target import Target

__all__ = [
    "Trainable",
    "Chains",
    "FlatTarget",
    "TrainReport",
    "TrainResult",
    "train",
    "reciprocal_esjd_loss",
    "flat_logdensity",
    "check_params",
    "cost_ledger",
]


class Chains(NamedTuple):
    """The chain batch of a training run, flat: positions ``(n, d)``, log densities and gradients there."""

    position: jax.Array
    logdensity: jax.Array
    logdensity_grad: jax.Array


class FlatTarget(NamedTuple):
    """The target over flat vectors: ``logdensity(x)`` and ``logdensity_and_grad(x)``."""

    logdensity: Callable[[jax.Array], jax.Array]
    logdensity_and_grad: Callable[[jax.Array], tuple[jax.Array, jax.Array]]


class Trainable(NamedTuple):
    """What :func:`train` needs from a learned kernel (pure functions).

    Attributes:
        name: the kernel's name.
        dim: length of the flattened position it works on.
        init_params: ``(key, dtype) -> params``, the starting parameters.
        loss: ``(params, aux, key, chains, flat_target) -> (loss, (chains, metrics))``:
            the training loss on the chain batch, the chain batch after one
            Metropolis-corrected move, and ``metrics``, a dict with scalar
            ``acceptance``, ``esjd`` and ``num_grad_evals`` (target gradient or
            density evaluations this step, all chains).
        init_aux: ``(key, params, chains) -> aux``: auxiliary training state
            (a discriminator, a buffer of draws); ``None`` gives ``aux = ()``.
        prepare: ``(params, aux, key, chains, flat_target) -> (aux, chains, num_grad_evals)``
            run before each loss step (a discriminator update, bootstrap
            moves), or ``None``.
        sampler: ``(target, params) -> Sampler``, the frozen kernel.
        config: the kernel's static settings (its own NamedTuple).
    """

    name: str
    dim: int
    init_params: Callable[..., Any]
    loss: Callable[..., Any]
    init_aux: Callable[..., Any] | None
    prepare: Callable[..., Any] | None
    sampler: Callable[..., Any]
    config: Any = None


class TrainReport(NamedTuple):
    """The training half of the cost ledger (per step curves are means over the chain batch).

    ``final_positions`` are the chain batch's flat positions after the last
    step: draws of a Metropolis-corrected chain that has run all of training,
    good starting points for the frozen sampler (a learned proposal may work
    only where it was trained).
    """

    loss: np.ndarray
    acceptance: np.ndarray
    esjd: np.ndarray
    num_steps: int
    num_grad_evals: int
    wall_s: float
    compile_s: float
    stopped_early: bool
    best_step: int
    final_positions: np.ndarray | None = None


class TrainResult(NamedTuple):
    """Frozen parameters and the :class:`TrainReport`."""

    params: Any
    report: TrainReport


def reciprocal_esjd_loss(delta: jax.Array, accept_prob: jax.Array, length_scale: float) -> jax.Array:
    """L2HMC's per-sample loss ``lam^2 / (delta A) - delta A / lam^2`` (Levy, Hoffman & Sohl-Dickstein 2018, eq. 8).

    ``delta`` is the squared jump ``|x' - x|^2`` of each proposal, ``A`` its
    acceptance probability and ``lam`` the problem's length scale; ``1e-4`` is
    added to ``delta A`` (as in the authors' code) so a rejected proposal costs
    a large finite value. The mean over samples is returned.
    """
    lam2 = length_scale**2
    jump = delta * accept_prob + 1e-4
    return jnp.mean(lam2 / jump - jump / lam2)


def flat_logdensity(target: Target) -> tuple[FlatTarget, Callable, jax.Array]:
    """``(flat_target, unravel, flat_initial)`` of ``target`` over flat vectors."""
    flat, unravel = ravel_pytree(target.initial_position)

    def logdensity(x):
        return target.logdensity(unravel(x))

    def logdensity_and_grad(x):
        value, grad = jax.value_and_grad(target.logdensity)(unravel(x))
        return value, ravel_pytree(grad)[0]

    return FlatTarget(logdensity, logdensity_and_grad), unravel, flat


def check_kernel_config(kernel, config_type: type, factory: str):
    """The config of ``kernel``, checked to be a :class:`Trainable` made by ``factory`` (a ``config_type``)."""
    if not isinstance(kernel, Trainable) or not isinstance(kernel.config, config_type):
        raise TypeError(f"kernel must come from sgmcmc.learned.{factory}, got {kernel!r}.")
    return kernel.config


def check_params(params, reference, what: str = "params"):
    """``params`` cast to the reference's dtypes after checking structure, shapes and finiteness."""
    if jax.tree.structure(params) != jax.tree.structure(reference):
        raise ValueError(f"{what} do not have the structure of this kernel's parameters (wrong kernel or settings).")
    out = []
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(reference)):
        a = jnp.asarray(a)
        if a.shape != b.shape:
            raise ValueError(
                f"{what}: a leaf has shape {a.shape}, this kernel expects {b.shape} (dimension mismatch?)."
            )
        if not bool(jnp.all(jnp.isfinite(a))):
            raise ValueError(f"{what} contain non-finite values.")
        out.append(a.astype(b.dtype))
    return jax.tree.unflatten(jax.tree.structure(reference), out)


def _int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def _as_key(key) -> jax.Array:
    if isinstance(key, numbers.Integral) and not isinstance(key, bool):
        return jax.random.key(int(key))
    if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key) and key.shape == ():
        return key
    raise TypeError(f"key must be an integer seed or a single JAX PRNG key, got {key!r}.")


def _guarded_step(opt, loss_fn, params, opt_state, *args):
    """One optax step on ``loss_fn(params, *args) -> (loss, aux)``; a non-finite step leaves params unchanged."""
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, *args)
    updates, new_opt_state = opt.update(grads, opt_state, params)
    new_params = optax.apply_updates(params, updates)
    leaves_ok = [jnp.all(jnp.isfinite(u)) for u in jax.tree.leaves(new_params)]
    ok = jnp.isfinite(loss) & jnp.all(jnp.asarray(leaves_ok))
    params = jax.tree.map(lambda a, b: jnp.where(ok, a, b), new_params, params)
    opt_state = jax.tree.map(lambda a, b: jnp.where(ok, a, b), new_opt_state, opt_state)
    return params, opt_state, loss, aux


@functools.lru_cache(maxsize=16)
def _default_optimizer(learning_rate: float) -> optax.GradientTransformation:
    """:func:`sgmcmc.flows.optimizer`, one object per rate (so compiled training programs are reused)."""
    return flows.optimizer(learning_rate)


def _make_chunk(kernel: Trainable, flat_target: FlatTarget, optimizer, chunk_size: int):
    """``chunk(carry, key, start, stop)``: steps ``start .. start + chunk_size - 1`` (those ``< stop``) in a scan."""

    def one_step(carry, key, t):
        params, opt_state, aux, chains = carry
        step_key = noise.fold_in(key, t)
        extra = jnp.zeros((), jnp.float32)
        if kernel.prepare is not None:
            aux, chains, extra = kernel.prepare(params, aux, noise.fold_in(step_key, 1), chains, flat_target)
        params, opt_state, loss, (chains, metrics) = _guarded_step(
            optimizer, kernel.loss, params, opt_state, aux, step_key, chains, flat_target
        )
        row = jnp.stack(
            [
                loss.astype(jnp.float32),
                jnp.asarray(metrics["acceptance"], jnp.float32),
                jnp.asarray(metrics["esjd"], jnp.float32),
                jnp.asarray(metrics["num_grad_evals"], jnp.float32) + jnp.asarray(extra, jnp.float32),
            ]
        )
        return (params, opt_state, aux, chains), row

    def chunk(carry, key, start, stop):
        def body(carry, i):
            t = start + i
            return lax.cond(
                t < stop, lambda c: one_step(c, key, t), lambda c: (c, jnp.full((4,), jnp.nan, jnp.float32)), carry
            )

        return lax.scan(body, carry, jnp.arange(chunk_size))

    return chunk


# Compiled training chunks, keyed by the kernel, target and optimizer objects (kept alive in the
# value so their ids stay theirs), the chunk length and the argument shapes.
_COMPILED: collections.OrderedDict = collections.OrderedDict()


def _compiled_chunk(kernel, target, flat_target, optimizer, chunk_size, carry, key):
    leaves, treedef = jax.tree.flatten((carry, key))
    signature = (treedef, tuple(jax.typeof(x) for x in leaves))
    cache_key = (id(kernel), id(target), id(optimizer), chunk_size, signature)
    if cache_key in _COMPILED:
        _COMPILED.move_to_end(cache_key)
        return _COMPILED[cache_key][0], 0.0
    start = time.perf_counter()
    chunk = _make_chunk(kernel, flat_target, optimizer, chunk_size)
    compiled = jax.jit(chunk).trace(carry, key, jnp.int32(0), jnp.int32(1)).lower().compile()
    seconds = time.perf_counter() - start
    _COMPILED[cache_key] = (compiled, (kernel, target, optimizer))
    while len(_COMPILED) > 16:
        _COMPILED.popitem(last=False)
    return compiled, seconds


def _initial_chains(target, kernel, key, num_chains, initial_positions, init_scale, logdensity_and_grad, flat0):
    if initial_positions is None:
        z = noise.normal(noise.fold_in(key, 0x1C), (num_chains, flat0.size), flat0.dtype)
        positions = flat0 + init_scale * z
    else:
        positions = jnp.asarray(initial_positions, flat0.dtype)
        if positions.shape != (num_chains, kernel.dim):
            raise ValueError(
                f"initial_positions must be flat, of shape (num_chains, dim) = {(num_chains, kernel.dim)}, "
                f"got {positions.shape}."
            )
    lp, grad = jax.jit(jax.vmap(logdensity_and_grad))(positions)
    if not bool(jnp.all(jnp.isfinite(lp))):
        raise ValueError(f"the log density of target {target.name!r} is not finite at every initial position.")
    return Chains(positions, lp, grad)


def train(
    kernel: Trainable,
    target: Target,
    key,
    num_steps: int,
    *,
    num_chains: int = 64,
    learning_rate: float = 1e-3,
    optimizer: optax.GradientTransformation | None = None,
    params: Any = None,
    initial_positions=None,
    init_scale: float = 1.0,
    chunk_size: int = 100,
    patience: int | None = None,
    min_delta: float = 0.0,
    checkpoint: str | os.PathLike | None = None,
    progress: bool = True,
    callback: Callable[[int], None] | None = None,
) -> TrainResult:
    """Fit a learned kernel's parameters on a batch of chains; return them frozen with a :class:`TrainReport`.

    Args:
        kernel: a :class:`Trainable` (e.g. ``sgmcmc.learned.l2hmc_kernel(dim)``).
        target: the :class:`~sgmcmc.Target`; its flattened position must have
            length ``kernel.dim``.
        key: an integer seed or a JAX PRNG key.
        num_steps: optimiser steps (at most; see ``patience``).
        num_chains: chains in the training batch.
        learning_rate: Adam's learning rate when ``optimizer`` is not given.
        optimizer: an optax transformation (default :func:`sgmcmc.flows.optimizer`).
        params: starting parameters (default ``kernel.init_params``).
        initial_positions: flat ``(num_chains, dim)`` starting positions of the
            chain batch; default: the target's initial position plus
            ``init_scale`` times standard normal noise.
        init_scale: spread of the default starting positions.
        chunk_size: steps per compiled chunk (progress, early stopping and
            checkpoint granularity; it does not change the result).
        patience: stop when the chunk-mean loss has not improved by more than
            ``min_delta`` for this many steps (``None``: never stop early).
        min_delta: improvement that counts, in loss units.
        checkpoint: a directory to save to after every chunk and resume from.
        progress: show a tqdm progress bar.
        callback: ``callback(steps_done)`` after every chunk (after the
            checkpoint is written); an exception it raises stops training.

    Returns:
        :class:`TrainResult` ``(params, report)``; ``kernel.sampler(target,
        params)`` is the frozen sampler.
    """
    if not isinstance(kernel, Trainable):
        raise TypeError(f"kernel must be a Trainable (e.g. sgmcmc.learned.l2hmc_kernel(dim)), got {kernel!r}.")
    if not isinstance(target, Target):
        raise TypeError(f"target must be an sgmcmc.Target, got {type(target).__name__}.")
    flat_target, _, flat0 = flat_logdensity(target)
    if flat0.size != kernel.dim:
        raise ValueError(
            f"kernel has dimension {kernel.dim} but the target's flattened position has {flat0.size} entries."
        )
    num_steps = _int(num_steps, "num_steps", 1)
    num_chains = _int(num_chains, "num_chains", 1)
    chunk_size = _int(chunk_size, "chunk_size", 1)
    if patience is not None:
        patience = _int(patience, "patience", 1)
    if callback is not None and not callable(callback):
        raise TypeError("callback must be a function steps_done -> None.")
    if not (math.isfinite(float(init_scale)) and float(init_scale) >= 0):
        raise ValueError(f"init_scale must be a finite number >= 0, got {init_scale!r}.")
    if optimizer is None:
        if not float(learning_rate) > 0:
            raise ValueError(f"learning_rate must be > 0, got {learning_rate!r}.")
        optimizer = _default_optimizer(float(learning_rate))
    key = _as_key(key)

    chains = _initial_chains(
        target, kernel, key, num_chains, initial_positions, float(init_scale), flat_target.logdensity_and_grad, flat0
    )
    reference = kernel.init_params(noise.fold_in(key, 0x9A), flat0.dtype)
    params = reference if params is None else check_params(params, reference)
    aux = () if kernel.init_aux is None else kernel.init_aux(noise.fold_in(key, 0xA0), params, chains)
    opt_state = optimizer.init(params)

    carry = (params, opt_state, aux, chains)
    compiled, compile_s = _compiled_chunk(kernel, target, flat_target, optimizer, chunk_size, carry, key)

    rows: list[np.ndarray] = []
    t = 0
    wall_prev = 0.0
    best = (math.inf, 0, params)
    stopped = False
    ckpt = None
    if checkpoint is not None:
        from sgmcmc.checkpoint import Checkpoint, tree_hash

        ckpt = Checkpoint(
            checkpoint,
            {
                "kind": "learned.train",
                "kernel": kernel.name,
                "target": target.name,
                "num_steps": num_steps,
                "num_chains": num_chains,
                "chunk_size": chunk_size,
                "patience": patience,
                "min_delta": float(min_delta),
                "key": np.asarray(jax.random.key_data(key)).tolist(),
                "data": tree_hash(target.data),
                "start": tree_hash(carry),
            },
        )
        saved = ckpt.load({"carry": carry, "best_params": params})
        if saved is None:
            ckpt.start()
        else:
            carry = jax.device_put(saved["carry"])
            t = saved["t"]
            rows = list(np.asarray(saved["rows"]).reshape(-1, 4))
            wall_prev = float(saved["wall_s"])
            best = (float(saved["best_loss"]), int(saved["best_step"]), jax.device_put(saved["best_params"]))
            stopped = bool(saved["stopped"])

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=num_steps, initial=t, desc=f"train {kernel.name}", unit="step")
    start_wall = time.perf_counter()
    try:
        while t < num_steps and not stopped:
            carry, out = compiled(carry, key, jnp.int32(t), jnp.int32(num_steps))
            n = min(chunk_size, num_steps - t)
            out = np.asarray(out)[:n]
            rows.extend(out)
            t += n
            mean_loss = float(np.nanmean(out[:, 0])) if np.any(np.isfinite(out[:, 0])) else math.inf
            if mean_loss < best[0] - float(min_delta):
                best = (mean_loss, t, carry[0])
            elif patience is not None and t - best[1] >= patience:
                stopped = True
            if bar is not None:
                bar.update(n)
                bar.set_postfix(loss=f"{mean_loss:.3g}", acc=f"{np.nanmean(out[:, 1]):.2f}")
            if ckpt is not None:
                ckpt.save(
                    {"carry": carry, "best_params": best[2]},
                    t=t,
                    num_chunks=0,
                    rows=np.asarray(rows, np.float32),
                    wall_s=wall_prev + time.perf_counter() - start_wall,
                    best_loss=best[0],
                    best_step=best[1],
                    stopped=stopped,
                )
            if callback is not None:
                callback(t)
        jax.block_until_ready(carry)
    finally:
        if bar is not None:
            bar.close()
    wall = wall_prev + time.perf_counter() - start_wall
    table = np.asarray(rows, np.float64).reshape(-1, 4)
    final_params = best[2] if patience is not None else carry[0]
    frozen = jax.tree.map(lambda x: jnp.asarray(np.asarray(x)), final_params)
    report = TrainReport(
        loss=table[:, 0],
        acceptance=table[:, 1],
        esjd=table[:, 2],
        num_steps=len(table),
        num_grad_evals=int(np.nansum(table[:, 3])),
        wall_s=float(wall),
        compile_s=float(compile_s),
        stopped_early=stopped,
        best_step=best[1] if patience is not None else len(table),
        final_positions=np.asarray(carry[3].position),
    )
    return TrainResult(frozen, report)


def cost_ledger(report: TrainReport | None, result, ess: float | None = None) -> dict:
    """Training, warmup and sampling cost side by side; ESS per gradient evaluation with and without them.

    Args:
        report: the :class:`TrainReport` (``None`` for an untrained sampler,
            e.g. HMC or NUTS, whose tuning cost is its warmup).
        result: the :class:`~sgmcmc.result.SampleResult` of the (frozen) sampler.
        ess: an effective sample size of that run's draws (e.g. the minimum
            bulk ESS over coordinates) to turn costs into rates.

    ``*_sampling`` rates count the kept draws' steps only; ``*_total`` rates
    add training and warmup (burn-in). Gradient evaluations count every
    evaluation of the target's log density or its gradient (a density-only
    evaluation, as in A-NICE-MC's moves, counts as one); training's backward
    passes through them are not counted separately (they are in its seconds).
    """
    timing = result.timing
    sampling = {
        "grad_evals": int(np.sum(np.asarray(result.info.num_grad_evals, np.int64))),
        "seconds": float(timing["sampling_s"]),
    }
    warmup = {
        "grad_evals": int(np.sum(np.asarray(result.warmup_grad_evals, np.int64))),
        "seconds": float(timing["warmup_s"]),
    }
    training = {"grad_evals": 0, "seconds": 0.0, "compile_s": 0.0, "steps": 0}
    if report is not None:
        training = {
            "grad_evals": int(report.num_grad_evals),
            "seconds": float(report.wall_s),
            "compile_s": float(report.compile_s),
            "steps": int(report.num_steps),
        }
    out = {
        "training": training,
        "warmup": warmup,
        "sampling": sampling,
        "sampling_compile_s": float(timing["compile_s"]),
        "total_grad_evals": training["grad_evals"] + warmup["grad_evals"] + sampling["grad_evals"],
        "total_seconds": training["seconds"] + warmup["seconds"] + sampling["seconds"],
    }
    if ess is not None:
        out["ess"] = float(ess)
        out["ess_per_grad_sampling"] = float(ess) / max(sampling["grad_evals"], 1)
        out["ess_per_grad_total"] = float(ess) / max(out["total_grad_evals"], 1)
        out["ess_per_s_sampling"] = float(ess) / max(sampling["seconds"], 1e-12)
        out["ess_per_s_total"] = float(ess) / max(out["total_seconds"], 1e-12)
    return out
