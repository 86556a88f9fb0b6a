"""The driver: ``sgmcmc.sample`` runs any sampler over vmapped chains.

The loop over steps is a ``lax.scan`` over a vmapped transition, compiled
once and called in chunks of ``chunk_size`` draws. Between chunks (never
between steps) control returns to Python, which moves the progress bar and
copies the chunk's draws to host memory. Every chunk has the same length: a
short last chunk skips its surplus steps with ``lax.cond`` instead of
compiling a second program.

A sampler with a warmup adaptation (NUTS, HMC, MALA, ChEES-HMC) runs warmup
and sampling in **one** program: every step runs the transition, and the
adaptation's ``prepare`` / ``update`` under a ``lax.cond`` on the step index
(see :mod:`sgmcmc.adaptation.base`), so the transition is traced and
compiled once. A sampler without one compiles a burn-in program (no draws
kept) and a sampling program. A later call with the same sampler, shapes and
settings compiles nothing.

Randomness: with ``key_init, key_run = split(key)`` (``key_init`` draws the
initial positions of targets that have an ``init_fn``), chain ``c`` uses
``key_c = split(key_run, num_chains)[c]`` (``jax.random.split``; Threefry keys
are split on the host, with the same values) and its step ``t`` (counted
from the first warmup step) uses ``noise.fold_in(key_c, t)``, so the draws do
not depend on the chunk size or on the progress bar.

The data of a data-driven target are passed into the compiled program as an
argument (through the sampler's ``rebuild``), not captured as constants.

Long runs: ``checkpoint=dir`` saves the states after every chunk and streams
the kept draws to ``dir`` (:mod:`sgmcmc.checkpoint`); the same call resumes a
stopped run with bit-identical draws. ``reducers=`` fold every kept draw into
running statistics on the device (:mod:`sgmcmc.reducers`), and
``keep_draws=False`` then keeps memory flat. ``stream="run.nc"`` appends the
kept draws to one NetCDF-4 file after every chunk (:mod:`sgmcmc.stream`),
which ArviZ opens during and after the run.

Several devices and hosts: ``mesh=`` (a :class:`jax.sharding.Mesh` with axes
``"chains"`` and/or ``"data"``, e.g. :func:`sgmcmc.sharding.make_mesh`) runs
the same programs with their inputs and outputs laid out on the mesh: the
chains split over the ``"chains"`` axis (the draws of one device), the
data of a data-driven target split over the ``"data"`` axis
(:mod:`sgmcmc.sharding`, ``docs/scaling.md``).
"""

from __future__ import annotations

import collections
import functools
import hashlib
import numbers
import os
import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from sgmcmc import noise, sharding
from sgmcmc._tree import PyTree
from sgmcmc.reducers import Reducer
from sgmcmc.result import SampleResult
from sgmcmc.samplers.base import CHAIN_AXIS, Sampler
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


def _keep_mask(keep, num_samples: int, num_warmup: int, thin: int) -> np.ndarray | None:
    """Which draw slots a collection policy keeps, up to its ``num_samples``-th kept draw.

    Slot ``j`` of the sampling phase ends with the step whose count is
    ``num_warmup + (j + 1) * thin - 1``; the policy is evaluated on the host,
    on arrays of counts, before anything is compiled.
    """
    if keep is None:
        return None
    policy = getattr(keep, "is_sampling", keep)
    if not callable(policy):
        raise TypeError(f"keep must be a function count -> bool or have an is_sampling method, got {keep!r}.")
    parts, kept, start, block = [], 0, 0, max(num_samples, 1024)
    limit = max(100 * num_samples, 10**6)
    while kept < num_samples:
        if start >= limit:
            raise ValueError(f"the collection policy keep kept {kept} of the first {start} draws; it must keep draws.")
        counts = num_warmup + (np.arange(start, start + block) + 1) * thin - 1
        try:
            flags = np.asarray(policy(jnp.asarray(counts)))
        except Exception as err:
            raise ValueError(f"the collection policy keep failed on an array of step counts: {err}") from err
        if flags.shape != counts.shape:
            raise ValueError(f"keep must return one bool per count; got shape {flags.shape} for {counts.shape}.")
        parts.append(flags.astype(bool))
        kept += int(parts[-1].sum())
        start, block = start + block, 2 * block
    mask = np.concatenate(parts)
    return mask[: np.flatnonzero(mask)[num_samples - 1] + 1]


def _as_key(seed) -> jax.Array:
    if isinstance(seed, bool):
        raise TypeError("seed must be an integer or a JAX PRNG key, got a bool.")
    if isinstance(seed, numbers.Integral):
        seed = int(seed)
        if 0 <= seed < 2**31 and jax.config.jax_default_prng_impl == "threefry2x32":
            # The words of ``jax.random.key(seed)``, without compiling its seeding program.
            return jax.random.wrap_key_data(np.asarray([0, seed], np.uint32))
        return jax.random.key(seed)
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


def _get_compiled(name: str, fn, static: tuple, args: tuple, layout: tuple | None = None):
    """A compiled executable of ``fn(*args)`` for these static values and avals, cached.

    ``layout = (mesh, num_chains, chain_axes)``: the arguments are global
    arrays already placed on ``mesh``, and output ``i`` is split on the
    ``"chains"`` axis along its axis ``chain_axes[i]`` where that axis has
    ``num_chains`` entries (replicated otherwise).

    Returns ``(compiled, seconds_spent_compiling, newly_compiled)``.
    """
    key = (name, static, _signature(args), None if layout is None else (layout[0], layout[1]))
    if key in _COMPILED:
        _COMPILED.move_to_end(key)
        return _COMPILED[key], 0.0, False
    start = time.perf_counter()
    if layout is None:
        jitted = jax.jit(fn)
    else:
        mesh, num_chains, chain_axes = layout
        shapes = jax.eval_shape(fn, *args)
        out_shardings = tuple(sharding.chain_shardings(x, mesh, num_chains, a) for x, a in zip(shapes, chain_axes))
        in_shardings = jax.tree.map(lambda x: x.sharding, args)
        jitted = jax.jit(fn, in_shardings=in_shardings, out_shardings=out_shardings)
    compiled = jitted.trace(*args).lower().compile()
    seconds = time.perf_counter() - start
    _COMPILED[key] = compiled
    while len(_COMPILED) > _CACHE_SIZE:
        _COMPILED.popitem(last=False)
    return compiled, seconds, True


def _bind(sampler: Sampler, data: PyTree) -> Sampler:
    """The sampler over traced ``data`` (or itself when it cannot be rebuilt)."""
    if sampler.rebuild is None or sampler.target is None:
        return sampler
    return sampler.rebuild(sharding.with_data(sampler.target, data))


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


def _vectorised(fn, num_chains: int):
    """``fn(key, state)`` over a leading chain axis.

    A vmapped batch of one turns matrix products into batched ones, which
    XLA:CPU runs measurably slower (~25% of a small MLP step): one chain runs
    the unbatched function with the chain axis kept outside it.
    """
    if num_chains > 1:
        return jax.vmap(fn, axis_name=CHAIN_AXIS)  # see sgmcmc.samplers.base.same_across_chains

    def single(keys, states):
        out = fn(keys[0], jax.tree.map(lambda x: x[0], states))
        return jax.tree.map(lambda x: x[None], out)

    return single


def _per_device(fn, num_chains: int, mesh):
    """``_vectorised(fn)`` over the chains, each device of the ``"chains"`` axis running its own.

    The transition is one chain's by contract, so a ``shard_map`` over the
    chain axis keeps its meaning and frees every device from the others: a
    vmapped ``while_loop`` (NUTS) then stops when the device's own chains are
    done, instead of the SPMD partitioner's all-reduce of the loop condition
    over every chain at every iteration.
    """
    devices = 1 if mesh is None else mesh.shape.get(sharding.CHAINS, 1)
    if devices == 1:
        return _vectorised(fn, num_chains)
    spec = jax.sharding.PartitionSpec(sharding.CHAINS)
    local = _vectorised(fn, num_chains // devices)
    # check_vma=False: kernels start loops from constants (invariant) that become per-chain (varying).
    return jax.shard_map(
        local, mesh=mesh, in_specs=(spec, spec), out_specs=spec, axis_names={sharding.CHAINS}, check_vma=False
    )


def _make_chunk_fn(sampler: Sampler, chunk_len: int, thin: int, collect: bool, adaptive: bool, mesh=None):
    """The program that runs ``chunk_len`` blocks of ``thin`` steps.

    Steps ``t`` (counted from the first warmup step) with ``t >= stop`` are
    skipped. With ``adaptive``, steps ``t < num_warmup`` also run the
    sampler's warmup adaptation (``prepare`` before, ``update`` after the
    transition, ``finalize`` after the last one), so warmup and sampling share
    this one program and the transition is compiled once.
    """

    def chunk(data, states, adapt, chain_keys, start, stop, num_warmup):
        TRACE_COUNTS["chunk"] += 1
        bound = _bind(sampler, data)
        num_chains = jax.tree.leaves(chain_keys)[0].shape[0]
        if adaptive:
            warmup = bound.warmup
            transition = jax.jit(_per_device(warmup.transition, num_chains, mesh))
        else:

            def plain(key, state):
                new_state, info = bound.step(key, state)
                return new_state, info, None

            transition = jax.jit(_per_device(plain, num_chains, mesh))

        def run(carry, t):
            states, adapt = carry
            keys = jax.vmap(noise.fold_in, in_axes=(0, None))(chain_keys, t)
            if not adaptive:
                new, info, _ = transition(keys, states)
                return (new, adapt), info
            in_warmup = t < num_warmup
            states, adapt = lax.cond(in_warmup, lambda c: warmup.prepare(keys, *c, t), lambda c: c, (states, adapt))
            new, info, aux = transition(keys, states)
            new, adapt = lax.cond(
                in_warmup, lambda c: warmup.update(keys, states, c[0], info, aux, c[1], t), lambda c: c, (new, adapt)
            )
            new = lax.cond(t + 1 == num_warmup, lambda s: warmup.finalize(s, adapt), lambda s: s, new)
            return (new, adapt), info

        # The transition is traced once: here, then reused from jit's cache below.
        keys0 = jax.vmap(noise.fold_in, in_axes=(0, None))(chain_keys, start)
        info_shape = jax.eval_shape(transition, keys0, states)[1]

        def one_step(carry, t):
            def skip(carry):
                return carry, jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), info_shape)

            return lax.cond(t < stop, lambda c: run(c, t), skip, carry)

        def block(carry, i):
            first = start + i * thin
            carry, infos = lax.scan(one_step, carry, first + jnp.arange(thin))
            return carry, _reduce_block(infos)

        def iteration(carry, i):
            states_adapt, divergences, grad_evals = carry
            states_adapt, info = block(states_adapt, i)
            divergences = divergences + jnp.asarray(info.is_divergent, jnp.int32)
            grad_evals = grad_evals + jnp.asarray(info.num_grad_evals, jnp.int32)
            out = (states_adapt[0].position, info) if collect else None
            return (states_adapt, divergences, grad_evals), out

        zeros = jnp.zeros((num_chains,), jnp.int32)
        ((states, adapt), divergences, grad_evals), out = lax.scan(
            iteration, ((states, adapt), zeros, zeros), jnp.arange(chunk_len)
        )
        return states, adapt, divergences, grad_evals, out

    return chunk


def _make_init_fn(sampler: Sampler, adapt_warmup: int):
    """The program building the chains' states (and, with ``adapt_warmup > 0``, the warmup's state)."""

    def init(data, positions):
        TRACE_COUNTS["init"] += 1
        bound = _bind(sampler, data)
        states = jax.vmap(bound.init)(positions)
        if adapt_warmup:
            return bound.warmup.init(states, adapt_warmup)
        return states, None

    return init


def _host_split(words: np.ndarray, num: int) -> np.ndarray:
    """``jax.random.split`` of a Threefry key's words, computed on the host: ``uint32[num, 2]``.

    JAX's (partitionable) split gives key ``i`` the two output words of the
    Threefry-2x32 block ``(0, i)``; the block function is the one of
    :mod:`sgmcmc.noise`, evaluated with NumPy (bit-exact, checked in the tests).
    """
    k0, k1 = (np.asarray([w], np.uint32) for w in words)
    a, b = noise._threefry2x32(k0, k1, np.zeros(num, np.uint32), np.arange(num, dtype=np.uint32), both=True)
    return np.stack([a, b], axis=-1)


@functools.partial(jax.jit, static_argnums=1)
def _derive_keys_compiled(key: jax.Array, num_chains: int) -> tuple[jax.Array, jax.Array]:
    key_init, key_run = jax.random.split(key)
    return key_init, jax.random.split(key_run, num_chains)


def _derive_keys(key: jax.Array, num_chains: int) -> tuple[jax.Array, jax.Array]:
    """``split(key)`` into the initial positions' key and the chains' keys, ``split(key_run, num_chains)``.

    Threefry keys (JAX's default) are split on the host, bit-identical to
    ``jax.random.split``: compiling the split cost ~0.2 s of a first call.
    Other key implementations use one small compiled program.
    """
    if str(jax.random.key_impl(key)) != "threefry2x32" or not jax.config.jax_threefry_partitionable:
        return _derive_keys_compiled(key, num_chains)
    words = np.asarray(jax.random.key_data(key))
    key_init, key_run = _host_split(words, 2)
    return jax.random.wrap_key_data(key_init), jax.random.wrap_key_data(_host_split(key_run, num_chains))


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
    # Stacked on the host (NumPy): jnp.stack would compile a program per shape.
    positions = jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *checked)

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
    keep: Any = None,
    reducers: Mapping[str, Reducer] | None = None,
    keep_draws: bool = True,
    checkpoint: str | os.PathLike | None = None,
    stream: str | os.PathLike | None = None,
    callback: Callable[[int], None] | None = None,
    mesh: jax.sharding.Mesh | None = None,
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
        keep: a collection policy: ``count -> bool`` (vectorised over an
            array of counts), or an object with ``is_sampling(count)`` such as
            :func:`sgmcmc.schedules.cyclical_cosine`. A draw is kept when the
            policy holds for the count of the step that produced it (steps
            taken before it, warmup included, as a schedule sees it). The run
            continues until ``num_samples`` draws are kept; the sampler's
            update knows nothing of it.
        reducers: ``{name: Reducer}`` applied on the device to every kept
            draw (:mod:`sgmcmc.reducers`: running moments, running
            posterior-predictive averages); results in ``result.reductions``.
        keep_draws: ``False`` never copies the draws to the host (only the
            per-draw ``info``): memory stays flat however long the run; use
            ``reducers`` for what you need from the draws.
        checkpoint: a directory (:mod:`sgmcmc.checkpoint`). The run's state is
            saved there after every chunk and the kept draws are streamed to
            it; calling ``sample`` again with the same sampler, settings and
            directory resumes where it stopped, with draws bit-identical to an
            uninterrupted run (a finished run is returned without sampling).
        stream: a NetCDF-4 file (:mod:`sgmcmc.stream`) the kept draws (in the
            user's parameters) and their sample statistics are appended to
            after every chunk, readable with ``arviz.from_netcdf`` or
            :func:`sgmcmc.stream.open_stream` while the run goes on. With
            ``keep_draws=False`` the draws then live on disk only. With
            ``checkpoint``, a resumed run continues the file (cut back to the
            checkpoint's draws) or, when it is missing and the checkpoint
            holds the draws, writes it again.
        callback: ``callback(steps_done)`` after every chunk (after the
            checkpoint is written); an exception it raises stops the run.
        mesh: a :class:`jax.sharding.Mesh` with axes ``"chains"`` and/or
            ``"data"`` (:func:`sgmcmc.sharding.make_mesh`), over the devices
            of one process or, after ``jax.distributed.initialize``, of
            several (every process then makes the same call and gets all the
            draws). The chains are split over ``"chains"``: same programs,
            same keys, the draws of the one-device run (up to float rounding
            where XLA compiles a smaller per-device batch differently, see
            :mod:`sgmcmc.sharding`); ``num_chains`` must be a multiple of its
            size. A ``"data"`` axis splits a data-driven target's
            examples into one stratum per device: gradients are computed
            data-parallel (one all-reduce per step), minibatches are
            stratified, so draws depend on the ``"data"`` axis size
            (:mod:`sgmcmc.sharding`). ``None``: the default device.

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
    min_warmup = getattr(sampler, "min_warmup", 0)
    if num_warmup < min_warmup:
        raise ValueError(
            f"{sampler.name} needs num_warmup >= {min_warmup} (it tunes settings it cannot sample without "
            f"during warmup, see its docstring), got num_warmup={num_warmup}."
        )
    num_chains = _positive_int(num_chains, "num_chains")
    thin = _positive_int(thin, "thin")
    chunk_size = _positive_int(chunk_size, "chunk_size")
    key = _as_key(seed)
    reducers = _check_reducers(reducers)
    if not isinstance(keep_draws, bool):
        raise TypeError(f"keep_draws must be True or False, got {keep_draws!r}.")
    if callback is not None and not callable(callback):
        raise TypeError("callback must be a function steps_done -> None.")
    if stream is not None and not isinstance(stream, (str, os.PathLike)):
        raise TypeError(f"stream must be a file path, got {stream!r}.")
    keep_mask = _keep_mask(keep, num_samples, num_warmup, thin)
    num_slots = num_samples if keep_mask is None else len(keep_mask)
    if mesh is not None:
        mesh = sharding.check_mesh(mesh, num_chains, target)
        if checkpoint is not None and jax.process_count() > 1:
            raise ValueError("checkpoint= is not supported with several processes; run without it.")

    key_init, chain_keys = _derive_keys(key, num_chains)
    positions = _initial_positions(target, initial_position, num_chains, key_init)
    data = target.data
    layout = None
    to_host = np.asarray

    def put(x):  # a host value or a local array on every device of the mesh (replicated)
        return x

    if mesh is not None:
        layout = (mesh, num_chains, (0, 0, 0, 0, 1))
        to_host = sharding.to_host
        replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())

        def put(x):
            return sharding.place(x, replicated)

        def put_chains(tree):
            return jax.tree.map(sharding.place, tree, sharding.chain_shardings(tree, mesh, num_chains))

        if sharding.data_parallel(mesh):
            data = sharding.shard_data(data, mesh)
        else:
            data = jax.tree.map(put, data)
        positions, chain_keys = put_chains((positions, chain_keys))

    timing = {"compile_s": 0.0, "warmup_s": 0.0, "sampling_s": 0.0}
    num_compiled = 0

    # With a warmup adaptation, warmup and sampling run one program (the
    # transition compiled once); otherwise warmup is burn-in without draws.
    adaptive = num_warmup > 0 and getattr(sampler, "warmup", None) is not None
    adapt_warmup = num_warmup if adaptive else 0
    init_fn, seconds, new = _get_compiled(
        "init", _make_init_fn(sampler, adapt_warmup), (sampler, adapt_warmup), (data, positions), layout
    )
    timing["compile_s"] += seconds
    num_compiled += new
    states, adapt = init_fn(data, positions)
    accs = {name: jax.jit(jax.vmap(r.init))(states.position) for name, r in reducers.items()}
    total_steps = num_warmup + num_slots * thin
    counters = {name: np.zeros(num_chains, np.int64) for name in ("warm_div", "warm_grads", "sample_grads")}
    outputs: list = []
    t_start = 0
    ckpt = None
    if checkpoint is not None:
        from sgmcmc.checkpoint import Checkpoint, tree_hash

        ckpt = Checkpoint(
            checkpoint,
            {
                "sampler": sampler.name,
                "target": target.name,
                "num_samples": num_samples,
                "num_warmup": num_warmup,
                "num_chains": num_chains,
                "thin": thin,
                "seed": np.asarray(jax.random.key_data(key)).tolist(),
                "initial_positions": tree_hash(positions),
                "data": tree_hash(target.data),
                "state_structure": tree_hash(jax.tree.map(lambda x: np.zeros((), x.dtype), (states, adapt))),
                "keep": None if keep_mask is None else hashlib.sha256(keep_mask.tobytes()).hexdigest(),
                "reducers": sorted(reducers),
                "keep_draws": keep_draws,
                **({"data_shards": data.num_shards} if sharding.data_parallel(mesh) else {}),
            },
        )
        saved = ckpt.load({"states": states, "adapt": adapt, "accs": accs})
        if saved is None:
            ckpt.start()
        else:
            put_saved = jax.device_put if mesh is None else put_chains
            states, adapt, accs = (put_saved(saved[name]) for name in ("states", "adapt", "accs"))
            t_start = saved["t"]
            counters = {name: np.asarray(saved[name], np.int64) for name in counters}
            template = jax.eval_shape(lambda: _chunk_template(states, sampler, data, chain_keys, keep_draws))
            outputs = ckpt.read_chunks(saved["num_chunks"], template)

    writer = None
    if stream is not None and jax.process_index() == 0:
        writer = _open_stream(stream, outputs, t_start, num_warmup, thin, keep_mask, keep_draws, target, sampler)

    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a core dependency
        tqdm = None
    bar = None
    if progress and tqdm is not None and jax.process_index() == 0:
        bar = tqdm(total=total_steps, initial=t_start, desc=f"{sampler.name}", unit="step", leave=True)

    # One chunk length per phase, independent of the run length (a short run
    # skips the surplus steps), bounded so a chunk of draws stays small.
    leaves = jax.tree.leaves(target.initial_position)
    draw_bytes = num_chains * sum(np.size(x) * np.dtype(x.dtype).itemsize for x in leaves)
    sample_chunk = max(1, min(chunk_size, _CHUNK_BYTES // max(draw_bytes, 1)))

    def get_program(collect: bool):
        nonlocal num_compiled
        chunk_len = sample_chunk if collect else chunk_size
        fn = _make_chunk_fn(sampler, chunk_len, thin, collect, adaptive, mesh)
        static = (sampler, chunk_len, thin, collect, adaptive)
        args = (data, states, adapt, chain_keys, put(jnp.int32(0)), put(jnp.int32(0)), put(jnp.int32(num_warmup)))
        compiled, seconds, new = _get_compiled("chunk", fn, static, args, layout)
        timing["compile_s"] += seconds
        num_compiled += new
        return compiled, chunk_len

    reduce_fn = _reduce_program(reducers) if reducers else None

    def handle_draws(t: int, out, valid: int) -> None:
        """Reduce a sampling chunk's draws on the device, copy what is kept to the host, stream it to disk."""
        nonlocal accs
        if reduce_fn is not None:
            rows = np.shape(jax.tree.leaves(out)[0])[0]
            mask = np.arange(rows) < valid
            if keep_mask is not None:
                mask &= _kept_slots(keep_mask, (t - num_warmup) // thin, rows)
            accs = reduce_fn(accs, out, put(jnp.asarray(mask)))
        kept = out if keep_draws else (None, out[1])
        host = jax.tree.map(lambda x, v=valid: to_host(x)[:v], kept)
        outputs.append(host)
        if ckpt is not None:
            ckpt.write_chunk(len(outputs) - 1, host)
        if writer is not None:
            first = (t - num_warmup) // thin
            # Without keep_draws the host copy holds only the info: add the positions, once.
            chunk = host if keep_draws else (jax.tree.map(lambda x, v=valid: to_host(x)[:v], out[0]), host[1])
            _stream_chunk(writer, chunk, first, keep_mask, target)

    def run_phase(first_step: int, stop: int, collect: bool, sampling: bool) -> float:
        """Steps ``[first_step, stop)`` with the program that collects draws or not."""
        nonlocal states, adapt
        compiled, chunk_len = get_program(collect)
        t = first_step
        start = time.perf_counter()
        while t < stop:
            states, adapt, div, ge, out = compiled(
                data, states, adapt, chain_keys, put(jnp.int32(t)), put(jnp.int32(stop)), put(jnp.int32(num_warmup))
            )
            steps = min(chunk_len * thin, stop - t)
            if sampling:
                handle_draws(t, out, steps // thin)
                counters["sample_grads"] += to_host(ge)
            else:  # warmup draws of the adaptive program are dropped on the device
                counters["warm_div"] += to_host(div)
                counters["warm_grads"] += to_host(ge)
            t += steps
            if ckpt is not None:
                ckpt.save({"states": states, "adapt": adapt, "accs": accs}, t=t, num_chunks=len(outputs), **counters)
            if bar is not None:
                bar.update(steps)
            if callback is not None:
                callback(t)
        jax.block_until_ready(states)
        return time.perf_counter() - start

    try:
        if t_start < num_warmup:
            if bar is not None:
                bar.set_description(f"{sampler.name} warmup")
            # The adaptive program is the sampling one; plain burn-in keeps no draws.
            timing["warmup_s"] = run_phase(t_start, num_warmup, adaptive, sampling=False)
        if bar is not None:
            bar.set_description(f"{sampler.name} sampling")
        timing["sampling_s"] = run_phase(max(t_start, num_warmup), total_steps, True, sampling=True)
    finally:
        if bar is not None:
            bar.close()
    warm_div, warm_grads, sample_grads = (counters[k] for k in ("warm_div", "warm_grads", "sample_grads"))

    # (draw, chain, ...) chunks -> (chain, draw, ...)
    stacked = jax.tree.map(lambda *xs: np.swapaxes(np.concatenate(xs, axis=0), 0, 1), *outputs)
    position, info = stacked
    dropped_grads = None
    if keep_mask is not None:  # only the draws the collection policy keeps
        position, info = jax.tree.map(lambda x: x[:, keep_mask], (position, info))
        dropped_grads = sample_grads - np.sum(np.asarray(info.num_grad_evals, np.int64), axis=1)
    samples = _constrain(target, position) if keep_draws else None
    reductions = {name: jax.tree.map(to_host, jax.vmap(r.finalize)(accs[name])) for name, r in reducers.items()}
    if jax.process_count() > 1 and mesh is not None:  # every process gets the whole final state
        states = jax.tree.map(to_host, states)

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
        dropped_grad_evals=dropped_grads,
        reductions=reductions,
    )


def _check_reducers(reducers) -> dict:
    from sgmcmc.reducers import Reducer

    if reducers is None:
        return {}
    if not isinstance(reducers, Mapping):
        raise TypeError("reducers must be a mapping {name: sgmcmc.reducers.Reducer}.")
    for name, reducer in reducers.items():
        if not isinstance(name, str) or not isinstance(reducer, Reducer):
            raise TypeError(f"reducers must map names to sgmcmc.reducers.Reducer objects; got {name!r}: {reducer!r}.")
    return dict(reducers)


_REDUCE_PROGRAMS: dict = {}


def _reduce_program(reducers: dict):
    """A jitted ``(accs, (position, info) chunk, row_mask) -> accs`` folding every masked row in (cached)."""
    key = tuple(sorted(reducers.items(), key=lambda kv: kv[0]))
    if key in _REDUCE_PROGRAMS:
        return _REDUCE_PROGRAMS[key]

    @jax.jit
    def reduce_chunk(accs, out, mask):
        def body(accs, row):
            position, info, take = row
            new = {name: jax.vmap(r.update)(accs[name], position, info) for name, r in reducers.items()}
            return jax.tree.map(lambda a, b: jnp.where(take, a, b), new, accs), None

        accs, _ = lax.scan(body, accs, (out[0], out[1], mask))
        return accs

    _REDUCE_PROGRAMS[key] = reduce_chunk
    return reduce_chunk


def _kept_slots(keep_mask: np.ndarray, first_slot: int, count: int) -> np.ndarray:
    """Whether the collection policy keeps draw slots ``first_slot, ..., first_slot + count - 1``."""
    slots = first_slot + np.arange(count)
    return keep_mask[np.minimum(slots, len(keep_mask) - 1)] & (slots < len(keep_mask))


def _stream_chunk(writer, chunk, first_slot: int, keep_mask, target: Target) -> None:
    """Append a host chunk ``(draw, chain, ...)`` of slots ``first_slot, ...`` to a stream."""
    position, info = chunk
    if keep_mask is not None:
        selected = _kept_slots(keep_mask, first_slot, np.shape(jax.tree.leaves(info)[0])[0])
    position, info = jax.tree.map(lambda x: np.swapaxes(x, 0, 1), (position, info))
    samples = _constrain(target, position)  # the whole chunk: one compiled shape per chunk length
    if keep_mask is not None:
        samples, info = jax.tree.map(lambda x: x[:, selected], (samples, info))
    writer.append(samples, info)


def _open_stream(path, outputs, t_start, num_warmup, thin, keep_mask, keep_draws, target, sampler):
    """The :class:`~sgmcmc.stream.DrawStream` of a run, continued when it resumes from a checkpoint."""
    from sgmcmc.stream import DrawStream

    writer = DrawStream(path, attrs={"sampler": sampler.name, "target": target.name, "thin": int(thin)})
    if not outputs:
        return writer
    slots = max(0, (t_start - num_warmup) // thin)
    expected = slots if keep_mask is None else int(np.sum(keep_mask[:slots]))
    if writer.reopen(expected):
        return writer
    if not keep_draws:
        raise ValueError(
            f"cannot resume the stream {path}: it is missing or holds fewer than the checkpoint's {expected} draws, "
            "and the checkpoint has no draws to write it again (keep_draws=False)."
        )
    first = 0
    for chunk in outputs:
        _stream_chunk(writer, chunk, first, keep_mask, target)
        first += np.shape(jax.tree.leaves(chunk[1])[0])[0]
    return writer


def _chunk_template(states, sampler, data, chain_keys, keep_draws: bool):
    """Shapes of one kept draw row ``(position, info)`` with a leading draw axis (for reading chunk files)."""
    bound = _bind(sampler, data)
    keys = jax.vmap(noise.fold_in, in_axes=(0, None))(chain_keys, 0)
    _, info = jax.vmap(bound.step)(keys, states)
    position = states.position if keep_draws else None
    return jax.tree.map(lambda x: x[None], (position, info))


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
