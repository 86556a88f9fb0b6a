"""Checkpoints of :func:`sgmcmc.sample`: a directory the driver writes after every chunk.

Layout (all NumPy ``.npz``, no pickles):

* ``meta.json``: the format and the run's fingerprint (sampler, target,
  settings, seed, hashes of the initial positions, of the target's data and
  of the state's structure); a later call resumes only when every entry
  matches (a checkpoint is never continued on other data);
* ``state.npz``: the sampler states, the warmup state, reducer accumulators,
  the next step index and the per-chain counters, replaced atomically
  (written to a temporary file, then renamed) after every chunk;
* ``draws_000000.npz``, ...: the draws (and per-draw ``info``) of each
  sampling chunk, written before the state that counts them, so a run killed
  at any moment leaves a consistent checkpoint.

Because step ``t`` of chain ``c`` uses the key ``fold_in(key_c, t)`` and
chunks only decide where control returns to Python, a resumed run continues
with exactly the states and keys an uninterrupted run would have had: its
draws are bit-identical. The draw files double as draws streamed to disk:
:func:`load_draws` reads them back (``np.load``, one chunk at a time if
wanted) while the run goes on or after it.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
from typing import Any

import jax
import numpy as np

from sgmcmc._tree import PyTree

__all__ = ["Checkpoint", "load_draws", "FORMAT"]

FORMAT = 1


def _leaves(tree: PyTree) -> list[np.ndarray]:
    out = []
    for leaf in jax.tree.leaves(tree):
        if jax.dtypes.issubdtype(getattr(leaf, "dtype", np.float32), jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        out.append(np.asarray(leaf))
    return out


def tree_hash(tree: PyTree) -> str:
    """SHA-256 of a pytree's structure, shapes, dtypes and bytes."""
    digest = hashlib.sha256(str(jax.tree.structure(tree)).encode())
    for leaf in _leaves(tree):
        digest.update(f"{leaf.shape}{leaf.dtype}".encode())
        digest.update(np.ascontiguousarray(leaf).tobytes())
    return digest.hexdigest()


def _save_npz(path: pathlib.Path, arrays: dict[str, np.ndarray]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _pack(trees: dict[str, PyTree]) -> dict[str, np.ndarray]:
    return {f"{name}/{i}": leaf for name, tree in trees.items() for i, leaf in enumerate(_leaves(tree))}


def _unpack(arrays, name: str, template: PyTree) -> PyTree:
    leaves, treedef = jax.tree.flatten(template)
    out = []
    for i, ref in enumerate(leaves):
        value = arrays[f"{name}/{i}"]
        ref_shape, ref_dtype = np.shape(ref), np.asarray(ref).dtype if not hasattr(ref, "dtype") else ref.dtype
        if jax.dtypes.issubdtype(ref_dtype, jax.dtypes.prng_key):
            value = jax.random.wrap_key_data(value)
        elif value.shape != ref_shape or value.dtype != ref_dtype:
            raise ValueError(
                f"checkpoint entry {name}/{i} has {value.shape} {value.dtype}, expected {ref_shape} {ref_dtype}."
            )
        out.append(value)
    return jax.tree.unflatten(treedef, out)


class Checkpoint:
    """The checkpoint directory of one run (see the module docstring)."""

    def __init__(self, directory: str | os.PathLike, meta: dict):
        self.dir = pathlib.Path(directory)
        self.meta = {"format": FORMAT, **meta}

    def load(self, templates: dict[str, PyTree]) -> dict[str, Any] | None:
        """The saved state as ``{name: tree, "t": int, "num_chunks": int, ...}``, or None if there is none.

        Raises if the directory holds a checkpoint of a different run.
        """
        meta_path = self.dir / "meta.json"
        if not meta_path.exists():
            return None
        saved = json.loads(meta_path.read_text())
        if saved != self.meta:
            differ = sorted(k for k in set(saved) | set(self.meta) if saved.get(k) != self.meta.get(k))
            raise ValueError(
                f"{self.dir} holds a checkpoint of a different run (it differs in: {', '.join(differ)}); "
                "resume with the same sampler and settings, or use another directory."
            )
        state_path = self.dir / "state.npz"
        if not state_path.exists():
            return None
        with np.load(state_path) as arrays:
            out = {name: _unpack(arrays, name, tree) for name, tree in templates.items()}
            for name in arrays.files:
                if "/" not in name:
                    out[name] = arrays[name]
        out["t"] = int(out["t"])
        out["num_chunks"] = int(out["num_chunks"])
        return out

    def start(self) -> None:
        """Create the directory and its ``meta.json`` (a fresh run)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "meta.json").write_text(json.dumps(self.meta, indent=1, sort_keys=True))

    def save(self, trees: dict[str, PyTree], **scalars) -> None:
        """Atomically replace ``state.npz`` with ``trees`` and scalar/array entries ``scalars``."""
        arrays = _pack(trees)
        arrays.update({k: np.asarray(v) for k, v in scalars.items()})
        _save_npz(self.dir / "state.npz", arrays)

    def write_chunk(self, index: int, tree: PyTree) -> None:
        _save_npz(self.dir / f"draws_{index:06d}.npz", _pack({"draws": tree}))

    def read_chunks(self, count: int, template: PyTree) -> list[PyTree]:
        out = []
        for index in range(count):
            with np.load(self.dir / f"draws_{index:06d}.npz") as arrays:
                leaves, treedef = jax.tree.flatten(template)
                out.append(jax.tree.unflatten(treedef, [arrays[f"draws/{i}"] for i in range(len(leaves))]))
        return out


def load_draws(directory: str | os.PathLike) -> list[dict[str, np.ndarray]]:
    """The raw per-chunk arrays a checkpointed run streamed to ``directory`` (``(draw, chain, ...)`` leaves).

    For a finished or resumable run, calling :func:`sgmcmc.sample` again with
    the same ``checkpoint`` returns the full :class:`~sgmcmc.SampleResult`
    without sampling; this function is for reading the stream while a run
    is still going or without the sampler at hand.
    """
    directory = pathlib.Path(directory)
    files = sorted(directory.glob("draws_*.npz"))
    out = []
    for path in files:
        with np.load(path) as arrays:
            out.append({name: arrays[name] for name in arrays.files})
    return out
