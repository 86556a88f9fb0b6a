"""Results to ArviZ: posterior, sample_stats, log_likelihood, observed_data.

Variable names are pytree paths joined with ``"."`` (``"layer1.w"``), so
nested parameters survive ``to_netcdf`` (xarray's DataTree rejects ``"/"``
in variable names and tuple names break NetCDF). Sample statistics take the
names ArviZ expects: ``diverging``, ``lp``, ``acceptance_rate``,
``step_size``, ``energy`` (HMC family), ``tree_depth`` (NUTS), plus
``n_grad_evals``.
"""

from __future__ import annotations

import datetime
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from sgmcmc._tree import tree_leaf_names
from sgmcmc.diagnostics._compat import to_arviz_object

__all__ = ["to_arviz", "SAMPLE_STATS_NAMES"]

#: sgmcmc ``info`` field -> ArviZ ``sample_stats`` name.
SAMPLE_STATS_NAMES = {
    "is_divergent": "diverging",
    "logdensity": "lp",
    "num_grad_evals": "n_grad_evals",
    "acceptance_rate": "acceptance_rate",
    "step_size": "step_size",
    "energy": "energy",
    "tree_depth": "tree_depth",
    "is_accepted": "is_accepted",
}


def _dataset(variables: dict[str, np.ndarray], leading: tuple[str, ...], coords: dict) -> xr.Dataset:
    """A Dataset with dims ``(*leading, "<name>_dim_0", ...)`` and integer coordinates on every dim."""
    data_vars = {}
    coords = dict(coords)
    for name, value in variables.items():
        value = np.asarray(value)
        extra = value.ndim - len(leading)
        dims = (*leading, *(f"{name}_dim_{i}" for i in range(extra)))
        for dim, size in zip(dims[len(leading) :], value.shape[len(leading) :]):
            coords[dim] = np.arange(size)
        data_vars[name] = (dims, value)
    return xr.Dataset(data_vars, coords=coords)


def _flatten(tree: Any, root: str) -> dict[str, np.ndarray]:
    return dict(zip(tree_leaf_names(tree, root=root), (np.asarray(x) for x in jax.tree.leaves(tree))))


def _info_variables(info: Any) -> dict[str, np.ndarray]:
    fields = getattr(info, "_fields", None)
    if fields is None:
        return _flatten(info, "info")
    out = {}
    for field in fields:
        value = getattr(info, field)
        if not hasattr(value, "shape"):
            continue
        out[SAMPLE_STATS_NAMES.get(field, field)] = np.asarray(value)
    return out


def pointwise_log_likelihood(result) -> dict[str, np.ndarray] | None:
    """Pointwise log-likelihoods ``(chain, draw, observation...)`` per observed variable."""
    target = result.target
    if target.pointwise_loglik_fn is None:
        return None

    @jax.jit
    def compute(data, samples):
        return jax.vmap(jax.vmap(lambda s: target.pointwise_loglik_fn(s, data)))(samples)

    samples = jax.tree.map(jnp.asarray, result.samples)
    out = compute(target.data, samples)
    return {name: np.asarray(value) for name, value in out.items()}


def to_arviz(result, *, log_likelihood: bool = True, observed_data: bool = True):
    """Convert a :class:`~sgmcmc.SampleResult` to ArviZ.

    Returns ``arviz.InferenceData`` on ArviZ 0.x and an ``xarray.DataTree``
    with the same groups on ArviZ 1.x.

    Args:
        result: what :func:`sgmcmc.sample` returned.
        log_likelihood: add the pointwise ``log_likelihood`` group (needed by
            ``az.loo`` / ``az.waic``) when the target has a per-example
            likelihood. It costs one likelihood evaluation over all the data
            per draw.
        observed_data: add the ``observed_data`` group when known.
    """
    chains, draws = result.num_chains, result.num_samples
    coords = {"chain": np.arange(chains), "draw": np.arange(draws)}
    leading = ("chain", "draw")
    groups = {
        "posterior": _dataset(_flatten(result.samples, "x"), leading, coords),
        "sample_stats": _dataset(_info_variables(result.info), leading, coords),
    }
    if log_likelihood:
        pointwise = pointwise_log_likelihood(result)
        if pointwise:
            groups["log_likelihood"] = _dataset(pointwise, leading, coords)
    target = result.target
    if observed_data and target.observed_data:
        observed = {name: np.asarray(value) for name, value in target.observed_data.items()}
        groups["observed_data"] = _dataset(observed, (), {})
    attrs = {
        "created_at": datetime.datetime.now(datetime.UTC).isoformat(),
        "inference_library": "sgmcmc",
        "sampler": result.sampler_name,
        "target": target.name,
        "num_warmup": int(result.num_warmup),
        "thin": int(result.thin),
    }
    return to_arviz_object(groups, attrs)
