"""One place that knows which ArviZ is installed.

ArviZ 0.x works on ``InferenceData``; ArviZ 1.x (Python >= 3.12) works on
``xarray.DataTree`` directly. sgmcmc builds a plain ``xarray.DataTree`` whose
children are the ArviZ groups (``posterior``, ``sample_stats``, ...), which
is what 1.x uses natively, and converts it at this edge for 0.x with
``arviz.from_datatree``. Nothing here changes warnings or global state.
"""

from __future__ import annotations

from importlib import metadata

import xarray as xr

__all__ = ["ARVIZ_MAJOR", "to_arviz_object"]


def _major(version: str) -> int:
    try:
        return int(version.split(".")[0])
    except ValueError:  # pragma: no cover - unusual version strings
        return 0


# Read from the installed distribution: importing ArviZ itself costs 2-3 s (SciPy,
# matplotlib), which ``import sgmcmc`` should not pay before ArviZ is used.
ARVIZ_MAJOR = _major(metadata.version("arviz"))


def to_arviz_object(groups: dict[str, xr.Dataset], attrs: dict | None = None):
    """``InferenceData`` on ArviZ 0.x, ``xarray.DataTree`` on ArviZ >= 1."""
    import arviz as az

    tree = xr.DataTree.from_dict({name: ds for name, ds in groups.items()})
    if attrs:
        for ds_name in groups:
            tree[ds_name].attrs.update(attrs)
    if ARVIZ_MAJOR >= 1 or not hasattr(az, "from_datatree"):
        return tree
    return az.from_datatree(tree)
