"""Chains and data laid out over a device mesh: JAX's own ``jax.sharding`` and ``shard_map``.

Two kinds of parallelism, one mesh with two named axes (see ``docs/scaling.md``):

* ``"chains"``: the chains of :func:`sgmcmc.sample` (its vmapped leading
  axis) are split over the devices of this axis. The driver compiles the
  **same** program as on one device, with its inputs and outputs placed by a
  :class:`~jax.sharding.NamedSharding` (chain axis on ``"chains"``, the rest
  replicated); the sampler's transition (one chain's, by contract) runs
  inside a ``shard_map`` over ``"chains"``, each device vmapping its own
  chains, so independent chains exchange nothing and a device never waits
  for another's (a vmapped NUTS ``while_loop`` left to the SPMD partitioner
  all-reduces its loop condition over every chain at every iteration). An
  adaptation that pools chains (ChEES) runs outside that ``shard_map`` and
  gets the cross-device reductions it needs from the partitioner, with the
  same meaning as on one device. Keys and arithmetic per chain are those of the one-device run, so
  the draws are the same; bit for bit where XLA compiles a chain's arithmetic
  the same way for the smaller per-device batch (HMC on a Gaussian in the tests),
  otherwise to float rounding: XLA:CPU compiles some sums differently for 4,
  2 or 1 chains per device (on one device too: an MLP's bias gradients for 4
  vs 2 vmapped chains), and NUTS' warmup adaptation ended with step sizes
  6e-8 to 9e-5 apart (identical with ``--xla_backend_optimization_level=0``),
  which a chain then carries forward (``docs/scaling.md``).
* ``"data"``: the examples of a data-driven target
  (:meth:`sgmcmc.Target.from_data`) are split into ``S`` contiguous *strata*
  (``S`` = the size of the ``"data"`` axis), one per device, by
  :func:`shard_data`. Inside a ``shard_map`` over that axis, each device
  evaluates the log-likelihood of its own rows and one ``psum`` adds the
  partial sums. The gradient is taken **outside** the ``shard_map``: JAX's
  transpose of a replicated input already sums the parameter's cotangent over
  the devices (one all-reduce of the gradient); a ``psum`` of a gradient
  computed inside would count it ``S`` times (measured: 2x on 2 devices).

Minibatches under a ``"data"`` axis are **stratified**: stratum ``s`` (of
``N_s`` examples) contributes ``m = n / S`` indices drawn uniformly with
replacement from its own rows, weighted ``N_s / m``, so the estimate
``log p(theta) + sum_s (N_s / m) sum_{i in B_s} log p(x_i | theta)`` is
unbiased for the full-data log density (with equal strata every weight is
``N / n``, the usual scaling, and the variance is at most that of the
uniform minibatch of the same size: stratified sampling with proportional
allocation). The ``n`` index
bits are the same Threefry words as :func:`sgmcmc.gradients.minibatch`
draws (one stream of the step's key, computed redundantly on every device,
no communication), stratum ``s`` reading words ``[s m, (s + 1) m)``: with
``S = 1`` the minibatch is exactly the single-device one. The Gaussian noise
of a sampler is drawn outside the ``shard_map`` from the chain's key, so it
is the same on every device of the ``"data"`` axis (drawn once per chain,
never per device). Draws depend on ``S`` (the minibatch distribution does),
not on the ``"chains"`` axis or the number of hosts; for a given minibatch
the gradient is the single-device one up to floating-point summation order.

Exact samplers (HMC, NUTS, MALA, ...) on a data-driven target use the
data-parallel full-data log density that the same layout gives
(:func:`data_parallel_target`), so their full-batch gradients are
data-parallel too. Code that needs all rows in one place
(:func:`sgmcmc.gradients.take_batch` of global indices, the control-variate
centre's full pass) refuses sharded data with a clear error.

Several hosts: call ``jax.distributed.initialize`` first in every process
(``docs/scaling.md``); ``jax.devices()`` is then the global list, a mesh over
it spans the hosts, every process runs the same :func:`sgmcmc.sample` call,
and every process receives all the draws.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from sgmcmc import noise
from sgmcmc._tree import PyTree
from sgmcmc.target import Target

__all__ = [
    "CHAINS",
    "DATA",
    "ShardedData",
    "make_mesh",
    "check_mesh",
    "shard_data",
    "data_parallel_target",
    "with_data",
    "chain_shardings",
    "place",
    "to_host",
    "loglik_sum",
    "stratified_loglik_sum",
    "batch_loglik_sum",
]

#: Name of the mesh axis that splits the chains.
CHAINS = "chains"
#: Name of the mesh axis that splits the data.
DATA = "data"


def make_mesh(chains: int | None = None, data: int = 1, *, devices=None) -> Mesh:
    """A mesh with axes ``("chains", "data")`` of shape ``(chains, data)``, both of ``Auto`` type.

    Args:
        chains: devices along the chain axis; default: all the devices left
            after ``data`` (``len(devices) // data``).
        data: devices along the data axis (1: no data parallelism).
        devices: the devices to use (default ``jax.devices()``, every device of
            every process after ``jax.distributed.initialize``). The first
            ``chains * data`` are taken, in order, the data axis varying
            fastest: consecutive devices (the same host, first) share a
            chain's data all-reduce.
    """
    devices = list(jax.devices() if devices is None else devices)
    data = _count(data, "data")
    if chains is None:
        chains = len(devices) // data
        if chains < 1:
            raise ValueError(f"data={data} is more than the {len(devices)} available device(s).")
    chains = _count(chains, "chains")
    if chains * data > len(devices):
        raise ValueError(
            f"a mesh of chains={chains} x data={data} needs {chains * data} devices, {len(devices)} exist."
        )
    grid = np.array(devices[: chains * data], dtype=object).reshape(chains, data)
    return Mesh(grid, (CHAINS, DATA), axis_types=(AxisType.Auto, AxisType.Auto))


def _count(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)


def check_mesh(mesh, num_chains: int, target: Target) -> Mesh:
    """Validate ``sample``'s ``mesh`` argument; returns it with ``Auto`` axis types.

    The axes must be named ``"chains"`` and/or ``"data"``; ``num_chains`` must
    be a multiple of the ``"chains"`` axis size (no padding: a padded chain
    would cost a device's share of work for nothing); a ``"data"`` axis of more
    than one device needs a data-driven target with at least as many examples
    as devices on it (one of size 1 leaves the data unsharded).
    ``jax.make_mesh`` gives ``Explicit`` axes by default in this JAX, under
    which sharded inputs change how operations type-check; the driver works on
    the same devices with ``Auto`` axes (sharding decided by the compiler).
    """
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh (e.g. sgmcmc.sharding.make_mesh()), got {mesh!r}.")
    unknown = [name for name in mesh.axis_names if name not in (CHAINS, DATA)]
    if unknown:
        raise ValueError(f"mesh axes must be named {CHAINS!r} and/or {DATA!r}; got {mesh.axis_names}.")
    num_devices = mesh.shape.get(CHAINS, 1)
    if num_chains % num_devices:
        raise ValueError(
            f"num_chains={num_chains} is not a multiple of the {num_devices} devices of the mesh's {CHAINS!r} axis; "
            f"use a multiple of {num_devices} chains or a smaller {CHAINS!r} axis."
        )
    data_devices = mesh.shape.get(DATA, 1)
    if data_devices > 1:
        if not target.is_data_driven:
            raise ValueError(
                f"the mesh has a {DATA!r} axis but target {target.name!r} has no per-example likelihood; "
                "build it with Target.from_data, or drop the data axis."
            )
        if target.num_data < data_devices:
            raise ValueError(f"the {DATA!r} axis has {data_devices} devices for only N={target.num_data} examples.")
    if any(t != AxisType.Auto for t in mesh.axis_types):
        mesh = Mesh(mesh.devices, mesh.axis_names, axis_types=(AxisType.Auto,) * len(mesh.axis_names))
    return mesh


def data_parallel(mesh: Mesh | None) -> bool:
    """Whether ``mesh`` splits the data (a ``"data"`` axis of more than one device)."""
    return mesh is not None and mesh.shape.get(DATA, 1) > 1


# -- the data layout -------------------------------------------------------------


@jax.tree_util.register_pytree_node_class
class ShardedData:
    """A data set split into ``S`` contiguous strata, laid out over a mesh axis.

    Attributes:
        arrays: the data's pytree with every leaf reshaped to
            ``(S, M, ...)``, ``M = ceil(N / S)``; stratum ``s`` holds
            ``counts[s]`` real rows followed by copies of its first row
            (padding, never counted).
        counts: ``int32[S]``, the real rows of each stratum.
        num_data: N.
        mesh, axis: the mesh and the axis name the strata are split over.
    """

    def __init__(self, arrays: PyTree, counts: jax.Array, num_data: int, mesh: Mesh, axis: str = DATA):
        self.arrays = arrays
        self.counts = counts
        self.num_data = num_data
        self.mesh = mesh
        self.axis = axis

    @property
    def num_shards(self) -> int:
        return int(jax.tree.leaves(self.arrays)[0].shape[0])

    def tree_flatten(self):
        return (self.arrays, self.counts), (self.num_data, self.mesh, self.axis)

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(*children, *aux)

    def __repr__(self) -> str:
        return f"ShardedData(num_data={self.num_data}, num_shards={self.num_shards}, axis={self.axis!r})"


def shard_data(data: PyTree, mesh: Mesh, axis: str = DATA) -> ShardedData:
    """Split ``data`` (leaves with a leading axis of N rows) into one stratum per device of ``mesh``'s ``axis``.

    Strata are contiguous row ranges of sizes ``ceil(N / S)`` or ``floor(N /
    S)`` (as ``np.array_split``), padded to a common length, and placed on the
    mesh with the stratum axis split over ``axis`` (replicated over the other
    axes) before any program sees them.
    """
    if axis not in mesh.axis_names:
        raise ValueError(f"mesh has no axis {axis!r}: {mesh.axis_names}.")
    num_shards = mesh.shape[axis]
    leaves = [np.asarray(x) for x in jax.tree.leaves(data)]
    num_data = int(leaves[0].shape[0])
    bounds = np.array([num_data * s // num_shards for s in range(num_shards + 1)])
    counts = np.diff(bounds).astype(np.int32)
    if counts.min() < 1:
        raise ValueError(f"N={num_data} examples cannot fill {num_shards} strata.")
    width = int(counts.max())
    rows = np.stack([np.minimum(bounds[s] + np.arange(width), bounds[s] + counts[s] - 1) for s in range(num_shards)])
    spec = NamedSharding(mesh, P(axis))
    arrays = jax.tree.map(lambda x: place(np.asarray(x)[rows], spec), data)
    return ShardedData(arrays, place(counts, spec), num_data, mesh, axis)


def with_data(target: Target, data: PyTree) -> Target:
    """``target`` over ``data``: :meth:`Target.with_data`, or :func:`data_parallel_target` for sharded data."""
    if isinstance(data, ShardedData):
        return data_parallel_target(target, data)
    return target.with_data(data)


def data_parallel_target(target: Target, data: ShardedData) -> Target:
    """``target`` over sharded ``data``: its full-data log density is computed data-parallel.

    ``logdensity_fn(theta, data) = logprior_fn(theta) + loglik_sum(...)``
    (the data-driven target's definition); ``loglik_fn`` keeps working on
    ordinary batches (rows already gathered) and refuses the sharded data set
    itself with a clear error.
    """
    if not target.is_data_driven:
        raise ValueError(f"target {target.name!r} has no per-example likelihood; its data cannot be sharded.")
    loglik_fn, logprior_fn = target.loglik_fn, target.logprior_fn
    if getattr(loglik_fn, "_sgmcmc_guarded", False):
        loglik_fn = loglik_fn.__wrapped__

    def logdensity_fn(position, data):
        return logprior_fn(position) + loglik_sum(loglik_fn, position, data)

    def guarded(position, batch):
        if isinstance(batch, ShardedData):
            raise ValueError(
                f"this computation needs all {batch.num_data} examples of target {target.name!r} in one place, "
                f"but they are sharded over the mesh's {batch.axis!r} axis; run it without a {batch.axis!r} axis."
            )
        return loglik_fn(position, batch)

    guarded._sgmcmc_guarded = True
    guarded.__wrapped__ = loglik_fn
    return dataclasses.replace(target, data=data, logdensity_fn=logdensity_fn, loglik_fn=guarded)


def unguarded_loglik(target: Target):
    """The user's per-example log-likelihood of ``target`` (without the sharded-data guard)."""
    fn = target.loglik_fn
    return fn.__wrapped__ if getattr(fn, "_sgmcmc_guarded", False) else fn


# -- data-parallel sums (inside shard_map; differentiate them from outside) ------------------


def _over_strata(data: ShardedData, local_fn, *args_specs):
    """``psum`` over ``data.axis`` of ``local_fn(arrays, counts, first, *args)`` on each device's strata.

    ``args_specs`` are ``(value, spec)`` pairs for the extra arguments.
    ``first`` is the global index of the device's first local stratum.
    """
    values = [v for v, _ in args_specs]
    specs = [s for _, s in args_specs]
    axis = data.axis

    def local(arrays, counts, *args):
        per_device = jax.tree.leaves(arrays)[0].shape[0]
        first = lax.axis_index(axis) * per_device
        return lax.psum(local_fn(arrays, counts, first, *args), axis)

    # Inside the driver's shard_map over "chains" the context mesh has that axis Manual: use it.
    context = jax.sharding.get_abstract_mesh()
    mesh = context if not context.empty and context.axis_names == data.mesh.axis_names else data.mesh
    mapped = jax.shard_map(local, mesh=mesh, in_specs=(P(axis), P(axis), *specs), out_specs=P(), axis_names={axis})
    return mapped(data.arrays, data.counts, *values)


def loglik_sum(loglik_fn, position: PyTree, data: ShardedData) -> jax.Array:
    """``sum_{i=1}^N loglik_fn(position, x_i)`` with each device summing its own strata (one ``psum``)."""

    def local(arrays, counts, first, position):
        def stratum(rows, count):
            values = loglik_fn(position, rows)
            return jnp.sum(jnp.where(jnp.arange(values.shape[0]) < count, values, 0.0))

        return jnp.sum(jax.vmap(stratum)(arrays, counts))

    return _over_strata(data, local, (position, P()))


def stratified_loglik_sum(loglik_fn, position: PyTree, data: ShardedData, key, batch_size: int) -> jax.Array:
    """The stratified minibatch estimate ``sum_s (N_s / m) sum_{i in B_s} loglik(x_i)`` (module docstring).

    ``m = batch_size / S`` indices per stratum, read from the words
    ``[s m, (s + 1) m)`` of the step key's index stream, so ``S = 1`` draws
    :func:`sgmcmc.gradients.minibatch`'s batch.
    """
    num_shards = data.num_shards
    per = batch_size // num_shards
    bound = jnp.repeat(data.counts, per)  # the row count of each index's stratum
    indices = noise.uniform_indices(key, batch_size, bound).reshape(num_shards, per)

    def local(arrays, counts, first, position, indices):
        def stratum(rows, count, idx):
            batch = jax.tree.map(lambda x: jnp.take(x, idx, axis=0), rows)
            values = loglik_fn(position, batch)
            return (count.astype(values.dtype) / per) * jnp.sum(values)

        return jnp.sum(jax.vmap(stratum)(arrays, counts, indices))

    return _over_strata(data, local, (position, P()), (indices, P(data.axis)))


def batch_loglik_sum(loglik_fn, position: PyTree, data: ShardedData, batch: PyTree) -> jax.Array:
    """``(N / n) sum_{i in batch} loglik(x_i)`` for a caller's batch of n rows, each device taking n / S of them."""
    num_shards = data.num_shards
    n = int(jax.tree.leaves(batch)[0].shape[0])
    if n % num_shards:
        raise ValueError(f"a batch of {n} rows cannot be split evenly over the {num_shards} data devices.")
    split = jax.tree.map(lambda x: x.reshape(num_shards, n // num_shards, *x.shape[1:]), batch)

    def local(arrays, counts, first, position, rows):
        del arrays, counts, first
        return jnp.sum(jax.vmap(lambda b: jnp.sum(loglik_fn(position, b)))(rows))

    return (data.num_data / n) * _over_strata(data, local, (position, P()), (split, P(data.axis)))


# -- placement and host copies (single- and multi-process) -----------------------------------


def chain_shardings(tree: PyTree, mesh: Mesh, num_chains: int, chain_axis: int = 0) -> PyTree:
    """A sharding per leaf of ``tree`` (arrays or shape structs): split on ``"chains"`` if its
    ``chain_axis`` has length ``num_chains``, replicated otherwise (a layout choice only: the
    compiler keeps the program's meaning whatever the layout)."""

    def one(x):
        shape = np.shape(x)
        if len(shape) > chain_axis and shape[chain_axis] == num_chains and CHAINS in mesh.axis_names:
            return NamedSharding(mesh, P(*([None] * chain_axis), CHAINS))
        return NamedSharding(mesh, P())

    return jax.tree.map(one, tree)


def place(x: Any, sharding: NamedSharding) -> jax.Array:
    """``x`` as a global array laid out by ``sharding``, built from every process's identical host copy.

    Works with several processes (each supplies its addressable shards from
    its own copy), unlike ``jax.device_put`` of a local array. Typed PRNG
    keys are placed as their key data and wrapped again.
    """
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        impl = jax.random.key_impl(x)
        # The trailing key-data axis is not named in the spec, so it is never split.
        raw = place(jax.random.key_data(x), sharding)
        return jax.random.wrap_key_data(raw, impl=impl)
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return jax.device_put(x, sharding)
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def to_host(x: Any) -> np.ndarray:
    """A NumPy copy of ``x``; a global array spread over several processes is all-gathered first."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)
