"""Small pytree helpers shared across the package (no sampler logic here)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any


def tree_all_finite(tree: PyTree) -> jax.Array:
    """True when every element of every floating leaf of ``tree`` is finite."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    if not leaves:
        return jnp.asarray(True)
    return jnp.all(jnp.stack(leaves))


def tree_where(pred: jax.Array, on_true: PyTree, on_false: PyTree) -> PyTree:
    """Leafwise ``jnp.where`` with a scalar predicate."""
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), on_true, on_false)


def as_carry_of(anchor: jax.Array, tree: PyTree) -> PyTree:
    """``tree`` unchanged in value, but computed from ``anchor`` (a boolean or numeric array).

    For the initial carry of a ``lax.while_loop`` that may run under ``vmap``:
    a constant carry (a zero counter, a ``False`` flag) is unbatched, and
    when the body makes it batched, ``vmap``'s batching rule batches the body
    again until the carries stop changing. For nested loops these passes
    multiply (they dominated the tracing of NUTS). Passing every constant
    through ``where(never, x, x)``, with ``never`` a ``False`` derived from
    ``anchor``, makes it batched wherever ``anchor`` is, so one pass suffices;
    XLA folds the ``where`` away.
    """
    never = jnp.isnan(jnp.ravel(anchor)[0].astype(jnp.float32)) & False
    return jax.tree.map(lambda x: jnp.where(never, x, x), tree)


def tree_size(tree: PyTree) -> int:
    """Total number of elements in a pytree."""
    return int(sum(np.size(x) for x in jax.tree.leaves(tree)))


def _key_name(entry: Any) -> str:
    if isinstance(entry, jax.tree_util.DictKey):
        return str(entry.key)
    if isinstance(entry, jax.tree_util.SequenceKey):
        return str(entry.idx)
    if isinstance(entry, jax.tree_util.GetAttrKey):
        return str(entry.name)
    if isinstance(entry, jax.tree_util.FlattenedIndexKey):
        return str(entry.key)
    return str(entry).strip(".[]'\"")


def tree_leaf_names(tree: PyTree, root: str = "x") -> list[str]:
    """Names for the leaves of ``tree``, their path keys joined with ``"."``.

    ``{"layer1": {"w": ., "b": .}}`` gives ``["layer1.b", "layer1.w"]``; a bare
    array gives ``[root]``. Dots are used rather than ``"/"``, which xarray's
    DataTree rejects in variable names, and tuples, which break NetCDF.
    """
    paths, _ = jax.tree_util.tree_flatten_with_path(tree)
    names = []
    for path, _leaf in paths:
        name = ".".join(_key_name(p) for p in path)
        names.append(name if name else root)
    return names


def describe_tree(tree: PyTree) -> str:
    """A one-line description of a pytree's leaf shapes, for error messages."""
    names = tree_leaf_names(tree)
    leaves = jax.tree.leaves(tree)
    parts = [f"{n}: {tuple(np.shape(x))} {getattr(x, 'dtype', type(x).__name__)}" for n, x in zip(names, leaves)]
    return "{" + ", ".join(parts) + "}"
