"""The driver: ``sgmcmc.sample`` runs any sampler over vmapped chains.

The loop over steps is a ``lax.scan`` over a vmapped ``step``, compiled once
and called in chunks of ``chunk_size`` draws. Between chunks (never between
steps) control returns to Python, which moves the progress bar and copies the
chunk's draws to host memory. Every chunk has the same length: a short last
chunk skips its surplus iterations with ``lax.cond`` instead of compiling a
second program, so a run compiles one program for warmup and one for
sampling, and a later call with the same sampler, shapes and settings
compiles nothing.

Randomness: chain ``c`` uses ``key_c = split(key, num_chains)[c]`` and its
step ``t`` (counted from the first warmup step) uses ``fold_in(key_c, t)``,
so the draws do not depend on the chunk size or on the progress bar.

The data of a data-driven target are passed into the compiled program as an
argument (through the sampler's ``rebuild``), not captured as constants.
"""

from __future__ import annotations

import collections
import numbers
import time
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from sgmcmc._tree import PyTree
from sgmcmc.result import SampleResult
from sgmcmc.samplers.base import Sampler
from sgmcmc.target import Target

__all__ = ["sample", "TRACE_COUNTS"]

#: How many times each compiled program of the driver was traced (for tests
#: and for users checking that nothing recompiles).
TRACE_COUNTS: collections.Counter = collections.Counter()

_CACHE_SIZE = 64
_CHUNK_BYTES = 256 * 2**20  # at most this many bytes of draws per chunk
_COMPILED: collections.OrderedDict = collections.OrderedDict()


def _positive_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}.")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}.")
    return value


def _as_key(seed) -> jax.Array:
    if isinstance(seed, bool):
        raise TypeError("seed must be an integer or a JAX PRNG key, got a bool.")
    if isinstance(seed, numbers.Integral):
        return jax.random.key(int(seed))
    if isinstance(seed, jax.Array):
        if jnp.issubdtype(seed.dtype, jax.dtypes.prng_key):
            if seed.shape != ():
                raise ValueError(f"seed must be a single key, got a key array of shape {seed.shape}.")
            return seed
        if seed.shape == (2,) and seed.dtype == jnp.uint32:
            return jax.random.wrap_key_data(seed)
    raise TypeError(f"seed must be an integer or a JAX PRNG key, got {seed!r}.")


def _signature(args) -> tuple:
    leaves, treedef = jax.tree.flatten(args)
    return treedef, tuple(jax.typeof(x) for x in leaves)


def _get_compiled(name: str, fn, static: tuple, args: tuple):
    """A compiled executable of ``fn(*args)`` for these static values and avals, cached.

    Returns ``(compiled, seconds_spent_compiling, newly_compiled)``.
    """
    key = (name, static, _signature(args))
    if key in _COMPILED:
        _COMPILED.move_to_end(key)
        return _COMPILED[key], 0.0, False
    start = time.perf_counter()
    compiled = jax.jit(fn).trace(*args).lower().compile()
    seconds = time.perf_counter() - start
    _COMPILED[key] = compiled
    while len(_COMPILED) > _CACHE_SIZE:
        _COMPILED.popitem(last=False)
    return compiled, seconds, True


def _bind(sampler: Sampler, data: PyTree) -> Sampler:
    """The sampler over traced ``data`` (or itself when it cannot be rebuilt)."""
    if sampler.rebuild is None or sampler.target is None:
        return sampler
    return sampler.rebuild(sampler.target.with_data(data))


def _reduce_block(infos):
    """Summarise the infos of ``thin`` consecutive steps (leading axis) as one."""
    fields = getattr(infos, "_fields", None)
    if fields is None:
        return jax.tree.map(lambda x: x[-1], infos)
    out = {}
    for name in fields:
        value = getattr(infos, name)
        if name == "is_divergent":
            out[name] = jnp.any(value, axis=0)
        elif name == "num_grad_evals":
            out[name] = jnp.sum(value, axis=0)
        else:
            out[name] = jax.tree.map(lambda x: x[-1], value)
    return type(infos)(**out)


def _make_chunk_fn(sampler: Sampler, chunk_len: int, thin: int, collect: bool):
    """The program that runs one chunk of ``chunk_len`` iterations of ``thin`` steps."""

    def chunk(data, states, chain_keys, start, num_valid):
        TRACE_COUNTS["sample" if collect else "warmup"] += 1
        bound = _bind(sampler, data)
        num_chains = jax.tree.leaves(chain_keys)[0].shape[0]
        if num_chains == 1:
            # A vmapped batch of one turns matrix products into batched ones, which
            # XLA:CPU runs measurably slower (~25% of a small MLP step): run the
            # unbatched step and keep the chain axis outside it.
            def vstep(keys, states):
                new, info = bound.step(keys[0], jax.tree.map(lambda x: x[0], states))
                return jax.tree.map(lambda x: x[None], (new, info))

        else:
            vstep = jax.vmap(bound.step)

        def one_step(states, t):
            keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(chain_keys, t)
            return vstep(keys, states)

        def block(states, i):
            first = start + i * thin
            states, infos = lax.scan(one_step, states, first + jnp.arange(thin))
            return states, _reduce_block(infos)

        info_shape = jax.eval_shape(lambda s: block(s, 0)[1], states)

        def iteration(carry, i):
            states, divergences, grad_evals = carry

            def run(states):
                return block(states, i)

            def skip(states):
                return states, jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), info_shape)

            states, info = lax.cond(i < num_valid, run, skip, states)
            divergences = divergences + jnp.asarray(info.is_divergent, jnp.int32)
            grad_evals = grad_evals + jnp.asarray(info.num_grad_evals, jnp.int32)
            out = (states.position, info) if collect else None
            return (states, divergences, grad_evals), out

        zeros = jnp.zeros((num_chains,), jnp.int32)
        (states, divergences, grad_evals), out = lax.scan(iteration, (states, zeros, zeros), jnp.arange(chunk_len))
        return states, divergences, grad_evals, out

    return chunk


def _make_adaptive_chunk_fn(sampler: Sampler, chunk_len: int):
    """The program that runs ``chunk_len`` steps of the sampler's warmup adaptation."""

    def chunk(data, states, adapt, chain_keys, start, num_valid):
        TRACE_COUNTS["adapt"] += 1
        warmup = _bind(sampler, data).warmup
        num_chains = jax.tree.leaves(chain_keys)[0].shape[0]
        info_shape = jax.eval_shape(
            lambda s, a: warmup.step(chain_keys, s, a, jnp.int32(0))[2], states, adapt
        )

        def iteration(carry, i):
            states, adapt, divergences, grad_evals = carry
            t = start + i
            keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(chain_keys, t)

            def run(args):
                return warmup.step(keys, *args, t)

            def skip(args):
                return (*args, jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), info_shape))

            states, adapt, info = lax.cond(i < num_valid, run, skip, (states, adapt))
            divergences = divergences + jnp.asarray(info.is_divergent, jnp.int32)
            grad_evals = grad_evals + jnp.asarray(info.num_grad_evals, jnp.int32)
            return (states, adapt, divergences, grad_evals), None

        zeros = jnp.zeros((num_chains,), jnp.int32)
        (states, adapt, divergences, grad_evals), _ = lax.scan(
            iteration, (states, adapt, zeros, zeros), jnp.arange(chunk_len)
        )
        return states, adapt, divergences, grad_evals

    return chunk


def _make_adapt_init_fn(sampler: Sampler, num_warmup: int):
    def init(data, states, key):
        TRACE_COUNTS["adapt_init"] += 1
        return _bind(sampler, data).warmup.init(key, states, num_warmup)

    return init


def _make_adapt_final_fn(sampler: Sampler):
    def final(data, states, adapt):
        TRACE_COUNTS["adapt_final"] += 1
        return _bind(sampler, data).warmup.finalize(states, adapt)

    return final


def _make_init_fn(sampler: Sampler):
    def init(data, positions):
        TRACE_COUNTS["init"] += 1
        return jax.vmap(_bind(sampler, data).init)(positions)

    return init


def _initial_positions(target: Target, initial_position, num_chains: int, key: jax.Array) -> PyTree:
    """Per-chain initial positions with a leading chain axis, validated.

    Structure, shapes and finiteness are checked on the host; the log density
    of all chains is then evaluated by one small compiled program (the data
    passed as an argument) and must be finite for every chain.
    """
    reference = target.initial_position
    if initial_position is not None:
        ref_shapes = [np.shape(x) for x in jax.tree.leaves(reference)]
        leaves = jax.tree.leaves(initial_position)
        same_structure = jax.tree.structure(initial_position) == jax.tree.structure(reference)
        batched = same_structure and all(np.shape(x) == (num_chains, *s) for x, s in zip(leaves, ref_shapes))
        if batched:
            per_chain = [jax.tree.map(lambda x, c=c: x[c], initial_position) for c in range(num_chains)]
        else:
            per_chain = [initial_position] * num_chains
    elif target.init_fn is not None:
        keys = jax.random.split(key, num_chains)
        per_chain = [target.init_fn(keys[c], target.data) for c in range(num_chains)]
    else:
        per_chain = [reference] * num_chains
    checked = [
        target.check_position(p, f"initial position of chain {c}", evaluate=False) for c, p in enumerate(per_chain)
    ]
    positions = jax.tree.map(lambda *xs: jnp.stack(xs), *checked)

    def logdensities(data, positions):
        return jax.vmap(lambda p: target.logdensity_fn(p, data))(positions)

    compiled, _, _ = _get_compiled("logdensity", logdensities, (target,), (target.data, positions))
    values = np.asarray(compiled(target.data, positions))
    if values.shape != (num_chains,):
        raise ValueError(f"the log density of target {target.name!r} must be a scalar, got shape {values.shape[1:]}.")
    bad = [c for c in range(num_chains) if not np.isfinite(values[c])]
    if bad:
        raise ValueError(
            f"The log density of target {target.name!r} is not finite at the initial position of chain(s) {bad} "
            f"(values {values[bad].tolist()}); start where the density is positive and finite."
        )
    return positions


def sample(
    sampler: Sampler,
    target: Target | None = None,
    *,
    num_samples: int,
    seed: Any,
    num_warmup: int = 0,
    num_chains: int = 4,
    thin: int = 1,
    progress: bool = True,
    initial_position: PyTree = None,
    chunk_size: int = 100,
) -> SampleResult:
    """Run ``num_chains`` chains of ``sampler`` and return their draws.

    Args:
        sampler: a :class:`~sgmcmc.samplers.base.Sampler` (e.g.
            ``sgmcmc.hmc(target, ...)``); it carries its target.
        target: optional; if given it must be the sampler's own target.
        num_samples: draws kept per chain, after warmup and thinning.
        seed: an integer or a JAX PRNG key. Same seed, same draws.
        num_warmup: steps run first and discarded. Samplers with a warmup
            adaptation (``sampler.warmup``: NUTS, HMC and MALA with a float
            step size, ...) tune their step size, mass matrix or trajectory
            length during them; others treat them as burn-in.
        num_chains: chains run in parallel (vmapped).
        thin: steps per kept draw.
        progress: show a tqdm progress bar (updated once per chunk).
        initial_position: a position for all chains, or one per chain with a
            leading axis of length ``num_chains``. Defaults to the target's
            own initialisation (random per chain for NumPyro models, the
            given initial position otherwise).
        chunk_size: draws per compiled chunk (progress and host-copy
            granularity; it does not change the draws).

    Returns:
        A :class:`~sgmcmc.result.SampleResult`.
    """
    if not isinstance(sampler, Sampler):
        raise TypeError(f"sampler must be an sgmcmc Sampler (e.g. sgmcmc.hmc(target)), got {type(sampler).__name__}.")
    if target is None:
        target = sampler.target
    elif sampler.target is not None and target is not sampler.target:
        raise ValueError(
            "the sampler was built for another target; build the sampler with this target "
            "(e.g. sgmcmc.hmc(target)) or omit the target argument."
        )
    if target is None:
        raise ValueError("no target: build the sampler from a Target or pass target=.")
    num_samples = _positive_int(num_samples, "num_samples")
    num_warmup = _positive_int(num_warmup, "num_warmup", minimum=0)
    num_chains = _positive_int(num_chains, "num_chains")
    thin = _positive_int(thin, "thin")
    chunk_size = _positive_int(chunk_size, "chunk_size")
    key = _as_key(seed)

    key_init, key_run = jax.random.split(key)
    positions = _initial_positions(target, initial_position, num_chains, key_init)
    chain_keys = jax.random.split(key_run, num_chains)
    data = target.data

    timing = {"compile_s": 0.0, "warmup_s": 0.0, "sampling_s": 0.0}
    num_compiled = 0

    init_fn, seconds, new = _get_compiled("init", _make_init_fn(sampler), (sampler,), (data, positions))
    timing["compile_s"] += seconds
    num_compiled += new
    states = init_fn(data, positions)

    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a core dependency
        tqdm = None
    bar = None
    if progress and tqdm is not None:
        bar = tqdm(total=num_warmup + num_samples * thin, desc=f"{sampler.name}", unit="step", leave=True)

    def run_phase(total_iters: int, iter_len: int, first_step: int, collect: bool, states):
        nonlocal num_compiled
        chunk_len = chunk_lengths[collect]
        fn = _make_chunk_fn(sampler, chunk_len, iter_len, collect)
        static = (sampler, chunk_len, iter_len, collect)
        args = (data, states, chain_keys, jnp.asarray(first_step, jnp.int32), jnp.asarray(chunk_len, jnp.int32))
        compiled, seconds, new = _get_compiled("chunk", fn, static, args)
        timing["compile_s"] += seconds
        num_compiled += new
        outputs = []
        divergences = np.zeros(num_chains, np.int64)
        grad_evals = np.zeros(num_chains, np.int64)
        done = 0
        start = time.perf_counter()
        while done < total_iters:
            valid = min(chunk_len, total_iters - done)
            states, div, ge, out = compiled(
                data,
                states,
                chain_keys,
                jnp.asarray(first_step + done * iter_len, jnp.int32),
                jnp.asarray(valid, jnp.int32),
            )
            if collect:
                out = jax.tree.map(lambda x, v=valid: np.asarray(x[:v]), out)
                outputs.append(out)
            divergences += np.asarray(div)
            grad_evals += np.asarray(ge)
            done += valid
            if bar is not None:
                bar.update(valid * iter_len)
        jax.block_until_ready(states)
        elapsed = time.perf_counter() - start
        return states, outputs, divergences, grad_evals, elapsed

    # One chunk length per phase, independent of the run length (a short run
    # skips the surplus iterations), bounded so a chunk of draws stays small.
    leaves = jax.tree.leaves(target.initial_position)
    draw_bytes = num_chains * sum(np.size(x) * np.dtype(x.dtype).itemsize for x in leaves)
    sample_chunk = max(1, min(chunk_size, _CHUNK_BYTES // max(draw_bytes, 1)))
    chunk_lengths = {True: sample_chunk, False: chunk_size}

    def run_adaptation(states):
        """The sampler's warmup adaptation for ``num_warmup`` steps, in chunks."""
        nonlocal num_compiled
        chunk_len = chunk_lengths[False]
        key_adapt = jax.random.fold_in(key_run, 0x0DA97)
        init_fn, seconds, new = _get_compiled(
            "adapt_init", _make_adapt_init_fn(sampler, num_warmup), (sampler, num_warmup), (data, states, key_adapt)
        )
        timing["compile_s"] += seconds
        num_compiled += new
        start = time.perf_counter()
        adapt = init_fn(data, states, key_adapt)
        seconds_run = time.perf_counter() - start
        fn = _make_adaptive_chunk_fn(sampler, chunk_len)
        args = (data, states, adapt, chain_keys, jnp.int32(0), jnp.int32(chunk_len))
        compiled, seconds, new = _get_compiled("adapt_chunk", fn, (sampler, chunk_len), args)
        timing["compile_s"] += seconds
        num_compiled += new
        final_fn, seconds, new = _get_compiled(
            "adapt_final", _make_adapt_final_fn(sampler), (sampler,), (data, states, adapt)
        )
        timing["compile_s"] += seconds
        num_compiled += new
        divergences = np.zeros(num_chains, np.int64)
        grad_evals = np.zeros(num_chains, np.int64)
        done = 0
        start = time.perf_counter()
        while done < num_warmup:
            valid = min(chunk_len, num_warmup - done)
            states, adapt, div, ge = compiled(
                data, states, adapt, chain_keys, jnp.asarray(done, jnp.int32), jnp.asarray(valid, jnp.int32)
            )
            divergences += np.asarray(div)
            grad_evals += np.asarray(ge)
            done += valid
            if bar is not None:
                bar.update(valid)
        states = final_fn(data, states, adapt)
        jax.block_until_ready(states)
        return states, divergences, grad_evals, seconds_run + time.perf_counter() - start

    try:
        warm_div = np.zeros(num_chains, np.int64)
        warm_grads = np.zeros(num_chains, np.int64)
        if num_warmup > 0:
            if bar is not None:
                bar.set_description(f"{sampler.name} warmup")
            if getattr(sampler, "warmup", None) is not None:
                states, warm_div, warm_grads, timing["warmup_s"] = run_adaptation(states)
            else:
                states, _, warm_div, warm_grads, timing["warmup_s"] = run_phase(num_warmup, 1, 0, False, states)
        if bar is not None:
            bar.set_description(f"{sampler.name} sampling")
        states, outputs, _, _, timing["sampling_s"] = run_phase(num_samples, thin, num_warmup, True, states)
    finally:
        if bar is not None:
            bar.close()

    # (draw, chain, ...) chunks -> (chain, draw, ...)
    stacked = jax.tree.map(lambda *xs: np.swapaxes(np.concatenate(xs, axis=0), 0, 1), *outputs)
    position, info = stacked
    samples = _constrain(target, position)

    num_divergent = int(np.sum(info.is_divergent))
    if num_divergent:
        warnings.warn(
            f"{num_divergent} of {num_chains * num_samples} draws of {sampler.name} on {target.name!r} "
            "followed a divergent step (non-finite value or energy error beyond the threshold); "
            "those chains stayed at their last finite state. See result.info.is_divergent.",
            RuntimeWarning,
            stacklevel=2,
        )
    timing["total_s"] = timing["compile_s"] + timing["warmup_s"] + timing["sampling_s"]
    return SampleResult(
        samples=samples,
        position=position,
        info=info,
        last_state=states,
        target=target,
        sampler_name=sampler.name,
        num_warmup=num_warmup,
        thin=thin,
        seed=seed,
        warmup_divergences=warm_div,
        warmup_grad_evals=warm_grads,
        timing=timing,
        num_compilations=num_compiled,
    )


def _constrain(target: Target, position: PyTree) -> PyTree:
    """Map unconstrained draws ``(chain, draw, ...)`` to the user's parameters."""
    if target.constrain_fn is None:
        return position

    def constrain_all(data, position):
        TRACE_COUNTS["constrain"] += 1
        return jax.vmap(jax.vmap(lambda p: target.constrain_fn(p, data)))(position)

    args = (target.data, jax.tree.map(jnp.asarray, position))
    compiled, _, _ = _get_compiled("constrain", constrain_all, (target,), args)
    return jax.tree.map(np.asarray, compiled(*args))
