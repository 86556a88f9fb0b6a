"""Draws streamed to one NetCDF-4 file that ArviZ opens during and after the run.

``sgmcmc.sample(..., stream="run.nc")`` appends every chunk of kept draws to
``run.nc`` as soon as it reaches the host, so a long run never has to hold its
draws in memory (combine it with ``keep_draws=False``), and the file can be
read at any time between two chunks:

    idata = sgmcmc.stream.open_stream("run.nc")   # or arviz.from_netcdf("run.nc")

Layout: the ArviZ groups ``posterior`` (the user's, i.e. constrained,
parameters, named as :meth:`SampleResult.to_arviz` names them) and
``sample_stats`` (``diverging``, ``lp``, ``acceptance_rate``, ...), each with
dimensions ``(chain, draw, <name>_dim_0, ...)`` where ``draw`` is an
*unlimited* HDF5 dimension that grows by one resize per chunk. The file is
written with ``h5netcdf`` (a dependency of ArviZ's NetCDF support) and opened
for each append only, so other readers are locked out only while a chunk is
being written. Within one process, read it with :func:`open_stream` (which
loads the data and closes the file) rather than keeping a lazily opened
``arviz.from_netcdf`` object alive while the run still appends.

A run killed in the middle of an append can leave the file damaged; the
checkpoint (``checkpoint=dir``) is the crash-safe record, and a resumed run
rewrites the stream from it before going on.
"""

from __future__ import annotations

import datetime
import os
import pathlib
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["DrawStream", "open_stream"]

_GROUPS = ("posterior", "sample_stats")
# Target size of one HDF5 chunk of a variable (bytes): big enough that an append
# is a few large writes, small enough that reading one parameter stays cheap.
_CHUNK_BYTES = 1 << 20


def _variables(samples: Any, info: Any) -> dict[str, dict[str, np.ndarray]]:
    from sgmcmc.diagnostics.arviz import _flatten, _info_variables

    return {"posterior": _flatten(samples, "x"), "sample_stats": _info_variables(info)}


def _chunks(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    """HDF5 chunk shape for a ``(chain, draw, ...)`` variable: all chains, as many draws as fit."""
    per_draw = max(1, int(np.prod((shape[0], *shape[2:]))) * itemsize)
    draws = int(max(1, min(1024, _CHUNK_BYTES // per_draw)))
    return (shape[0], draws, *shape[2:])


class DrawStream:
    """An append-only NetCDF-4 file of draws (see the module docstring).

    Args:
        path: the file; an existing file is replaced when the first chunk is
            written.
        attrs: attributes stored on every group (sampler, target, ...).
    """

    def __init__(self, path: str | os.PathLike, attrs: Mapping[str, Any] | None = None):
        self.path = pathlib.Path(path)
        self.attrs = dict(attrs or {})
        self.num_draws = 0
        self._created = False

    def _create(self, variables: dict[str, dict[str, np.ndarray]]) -> None:
        import h5netcdf

        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        attrs = {
            "created_at": datetime.datetime.now(datetime.UTC).isoformat(),
            "inference_library": "sgmcmc",
            **{k: v for k, v in self.attrs.items() if v is not None},
        }
        with h5netcdf.File(tmp, "w") as f:
            for group_name in _GROUPS:
                group = f.create_group(group_name)
                first = next(iter(variables[group_name].values()), None)
                num_chains = 0 if first is None else first.shape[0]
                dims: dict[str, int | None] = {"chain": num_chains, "draw": None}
                for name, value in variables[group_name].items():
                    for i, size in enumerate(value.shape[2:]):
                        dims[f"{name}_dim_{i}"] = size
                group.dimensions = dims
                for dim, size in dims.items():
                    coord = group.create_variable(dim, (dim,), np.int64, chunks=(1024,) if size is None else None)
                    if size:
                        coord[:] = np.arange(size)
                for name, value in variables[group_name].items():
                    if value.ndim < 2 or value.shape[0] != num_chains:
                        raise ValueError(
                            f"stream variable {name!r} has shape {value.shape}; expected (chain, draw, ...) "
                            f"with {num_chains} chains."
                        )
                    vdims = ("chain", "draw", *(f"{name}_dim_{i}" for i in range(value.ndim - 2)))
                    # NetCDF has no boolean type: xarray's convention, int8 with dtype="bool".
                    is_bool = value.dtype == np.bool_
                    dtype = np.dtype(np.int8) if is_bool else value.dtype
                    var = group.create_variable(name, vdims, dtype, chunks=_chunks(value.shape, dtype.itemsize))
                    if is_bool:
                        var.attrs["dtype"] = "bool"
                group.attrs.update(attrs)
        os.replace(tmp, self.path)
        self._created = True
        self.num_draws = 0

    def reopen(self, num_draws: int) -> bool:
        """Continue an existing file that holds at least ``num_draws`` draws, cut back to exactly that many.

        Used when a checkpointed run resumes: draws the file got after the
        checkpoint's last chunk are dropped. Returns False (and leaves the file
        alone) when there is no such file or it cannot be read.
        """
        import h5netcdf

        if not self.path.exists():
            return False
        try:
            with h5netcdf.File(self.path, "a") as f:
                sizes = [f[g].dimensions["draw"].size for g in _GROUPS]
                if min(sizes) < num_draws:
                    return False
                for group_name in _GROUPS:
                    f[group_name].resize_dimension("draw", num_draws)
        except (OSError, KeyError, ValueError):
            return False
        self._created = True
        self.num_draws = num_draws
        return True

    def append(self, samples: Any, info: Any) -> None:
        """Append draws ``(chain, draw, ...)`` (a pytree) and their ``info`` record."""
        import h5netcdf

        variables = _variables(samples, info)
        lengths = {v.shape[1] for group in variables.values() for v in group.values()}
        if len(lengths) != 1:
            raise ValueError(f"stream chunk has inconsistent draw counts {sorted(lengths)}.")
        (length,) = lengths
        if not self._created:
            self._create(variables)
        if length == 0:
            return
        start, stop = self.num_draws, self.num_draws + length
        with h5netcdf.File(self.path, "a") as f:
            for group_name in _GROUPS:
                group = f[group_name]
                group.resize_dimension("draw", stop)
                group["draw"][start:stop] = np.arange(start, stop)
                for name, value in variables[group_name].items():
                    if name not in group.variables:
                        raise ValueError(f"stream chunk has a new variable {name!r} not in {self.path}.")
                    group[name][:, start:stop] = value.astype(np.int8) if value.dtype == np.bool_ else value
        self.num_draws = stop


def open_stream(path: str | os.PathLike):
    """The draws in a streamed file as ArviZ data, loaded into memory (the file is closed again).

    Returns ``arviz.InferenceData`` on ArviZ 0.x and an ``xarray.DataTree`` on
    ArviZ 1.x, like :meth:`SampleResult.to_arviz`. To read only some
    variables of a large file, open it lazily instead:
    ``xarray.open_dataset(path, group="posterior", engine="h5netcdf")``.
    """
    import xarray as xr

    from sgmcmc.diagnostics._compat import to_arviz_object

    groups = {}
    for group_name in _GROUPS:
        with xr.open_dataset(path, group=group_name, engine="h5netcdf") as ds:
            groups[group_name] = ds.load()
    return to_arviz_object(groups)
