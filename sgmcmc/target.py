"""What is sampled: a log density over a pytree position.

A :class:`Target` holds

* ``logdensity_fn(position, data) -> scalar``: the (unnormalised) log
  posterior over the *unconstrained* position that samplers move in;
* for data-driven models, the split ``logprior_fn(position)`` and
  ``loglik_fn(position, batch) -> (n,)`` per-example log-likelihoods, with the
  data as a pytree of arrays whose leaves share a leading axis of length
  ``num_data``. Minibatch gradient estimators scale the batch sum by N/n, and
  ArviZ gets pointwise log-likelihoods for LOO/WAIC from the same function;
* an initial position and, for constrained models, ``constrain_fn`` mapping
  the unconstrained position to the user's parameters.

Every function takes the data explicitly instead of closing over it. The
driver passes the data into its compiled program as an argument: JAX embeds
arrays captured by a closure into the program as constants (measured: a 40 MB
array made an 80 MB program), which would make compilation scale with the
data set.

Three constructors cover the common cases: :meth:`Target.from_logdensity`
(a plain JAX function), :meth:`Target.from_data` (prior + per-example
likelihood + data) and :meth:`Target.from_numpyro` (a NumPyro model, through
NumPyro's own ``initialize_model`` / ``potential_energy`` / ``constrain_fn``).
All three check the initial position and the log density there up front and
raise a :class:`ValueError` that says what is wrong.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sgmcmc._tree import PyTree, describe_tree, tree_leaf_names

__all__ = ["Target", "check_position"]


def _as_float_leaf(x: Any, where: str) -> jax.Array:
    try:
        arr = jnp.asarray(x)
    except TypeError as err:
        raise TypeError(f"{where}: leaves must be real numbers, got {type(x).__name__} ({err}).") from err
    if not jnp.issubdtype(arr.dtype, jnp.floating):
        if jnp.issubdtype(arr.dtype, jnp.integer) or arr.dtype == jnp.bool_:
            arr = arr.astype(jnp.result_type(float))
        else:
            raise TypeError(f"{where}: leaves must be real numbers, got dtype {arr.dtype}.")
    return arr


def _has_non_finite(x) -> bool:
    x = np.asarray(x)
    return x.dtype.kind in "fc" and not np.all(np.isfinite(x))


def check_position(position: PyTree, what: str = "initial position") -> PyTree:
    """Validate a position pytree and return it with floating-point array leaves.

    Raises ``ValueError`` for an empty pytree or non-finite values and
    ``TypeError`` for non-numeric leaves.
    """
    leaves, treedef = jax.tree.flatten(position)
    if not leaves:
        raise ValueError(f"The {what} is an empty pytree; give at least one array.")
    leaves = [_as_float_leaf(x, f"The {what}") for x in leaves]
    if sum(int(np.size(x)) for x in leaves) == 0:
        raise ValueError(f"The {what} has no entries (every leaf has size 0): {describe_tree(position)}.")
    # One floating dtype for every leaf: samplers move the raveled position, whose
    # dtype is the leaves' common one, and a float32 leaf next to a float64 one
    # made their steps change a leaf's dtype inside a compiled loop (a JAX type error).
    common = jnp.result_type(*leaves)
    leaves = [x.astype(common) for x in leaves]
    # On the host: one check per leaf without compiling a program for each.
    bad = [i for i, x in enumerate(leaves) if not np.all(np.isfinite(np.asarray(x)))]
    if bad:
        names = describe_tree(jax.tree.unflatten(treedef, leaves))
        raise ValueError(f"The {what} contains non-finite values (NaN or inf) in leaf number(s) {bad} of {names}.")
    return jax.tree.unflatten(treedef, leaves)


def _check_same_structure(reference: PyTree, other: PyTree, what: str) -> None:
    ref_def = jax.tree.structure(reference)
    other_def = jax.tree.structure(other)
    if ref_def != other_def:
        raise ValueError(f"{what} has pytree structure {other_def}, expected {ref_def}.")
    for a, b in zip(jax.tree.leaves(reference), jax.tree.leaves(other)):
        if np.shape(a) != np.shape(b):
            raise ValueError(
                f"{what} has a leaf of shape {np.shape(b)} where the target's position has "
                f"shape {np.shape(a)}: {describe_tree(other)} vs {describe_tree(reference)}."
            )


def _check_data(data: PyTree) -> int:
    leaves = jax.tree.leaves(data)
    if not leaves:
        raise ValueError("data is an empty pytree; give at least one array with a leading axis of length N.")
    sizes = set()
    for x in leaves:
        if np.ndim(x) == 0:
            raise ValueError(
                "Every data leaf needs a leading axis of length N (one row per example); "
                f"got a scalar leaf in {describe_tree(data)}."
            )
        sizes.add(np.shape(x)[0])
    if len(sizes) != 1:
        raise ValueError(f"data leaves have different leading lengths {sorted(sizes)}: {describe_tree(data)}.")
    (n,) = sizes
    if n == 0:
        raise ValueError("data has zero examples.")
    return int(n)


def _scalar_logdensity(value: Any, what: str) -> float:
    arr = jnp.asarray(value)
    if arr.shape != ():
        raise ValueError(f"{what} must return a scalar, got shape {arr.shape}.")
    out = float(arr)
    if not np.isfinite(out):
        raise ValueError(f"{what} is {out} at the initial position; start where the density is positive and finite.")
    return out


def _observed_sites(model: Callable, model_args: tuple, model_kwargs: dict, z: Any, rng_seed: int) -> dict:
    """The observed sites of a NumPyro model and their values, from one abstract trace of the model.

    The model is traced (``jax.eval_shape``), not run, so nothing is compiled; the
    latent sites take the values of the unconstrained point ``z`` (so improper
    priors, which cannot be sampled, are fine); the observed values are the
    concrete arrays the user passed as ``obs``. A value computed inside the
    model from the data (a tracer here) is evaluated by running the model once.
    """
    from numpyro import handlers
    from numpyro.infer.util import constrain_fn

    captured: dict[str, Any] = {}

    def trace(key):
        latent = constrain_fn(model, model_args, model_kwargs, z)
        substituted = handlers.substitute(handlers.seed(model, key), data=latent)
        model_trace = handlers.trace(substituted).get_trace(*model_args, **model_kwargs)
        for site_name, site in model_trace.items():
            if site["type"] == "sample" and site.get("is_observed", False):
                captured[site_name] = site["value"]
        return None

    jax.eval_shape(trace, jax.random.key(rng_seed))
    if any(isinstance(value, jax.core.Tracer) for value in captured.values()):
        captured.clear()
        trace(jax.random.key(rng_seed))
    return {site_name: np.asarray(value) for site_name, value in captured.items()}


@dataclasses.dataclass(frozen=True, eq=False)
class Target:
    """A log density over a pytree of unconstrained parameters.

    Use one of the constructors rather than building this directly. Equality
    and hashing are by identity, so a target can be a static argument of a
    compiled function.

    Attributes:
        logdensity_fn: ``(position, data) -> scalar`` log posterior (up to a
            constant) over the unconstrained position.
        initial_position: pytree of float arrays where chains start.
        data: pytree of arrays with a leading axis of length ``num_data``, or
            ``None``.
        num_data: number of examples N for data-driven targets.
        logprior_fn: ``position -> scalar`` for data-driven targets.
        loglik_fn: ``(position, batch) -> (n,)`` per-example log-likelihoods.
        init_fn: optional ``(key, data) -> position`` drawing a random
            initial position per chain (used for NumPyro models).
        constrain_fn: optional ``(position, data) -> dict`` mapping an
            unconstrained position to the user's parameters (and
            deterministic sites).
        pointwise_loglik_fn: optional ``(constrained, data) -> dict`` of
            pointwise log-likelihood arrays, for ArviZ's ``log_likelihood``.
        observed_data: optional dict of observed arrays for ArviZ.
        name: a label used in reports.
    """

    logdensity_fn: Callable[[PyTree, PyTree], jax.Array]
    initial_position: PyTree
    data: PyTree = None
    num_data: int | None = None
    logprior_fn: Callable[[PyTree], jax.Array] | None = None
    loglik_fn: Callable[[PyTree, PyTree], jax.Array] | None = None
    init_fn: Callable[[jax.Array, PyTree], PyTree] | None = None
    constrain_fn: Callable[[PyTree, PyTree], dict] | None = None
    pointwise_loglik_fn: Callable[[dict, PyTree], dict] | None = None
    observed_data: dict | None = None
    name: str = "target"

    # -- evaluation ---------------------------------------------------------
    def logdensity(self, position: PyTree) -> jax.Array:
        """The log density at ``position`` using this target's data, in the position's dtype.

        A float32 log density over a float64 position (or the reverse) is cast
        to the position's dtype, so that samplers carrying both in one loop
        state see one dtype.
        """
        value = self.logdensity_fn(position, self.data)
        leaves = jax.tree.leaves(position)
        if leaves and jnp.issubdtype(jnp.result_type(value), jnp.floating):
            value = jnp.asarray(value, jnp.result_type(*leaves))
        return value

    @property
    def is_data_driven(self) -> bool:
        """True when the target has a per-example likelihood (minibatching works)."""
        return self.loglik_fn is not None

    def with_data(self, data: PyTree) -> Target:
        """The same target over other (for example traced) data arrays."""
        return dataclasses.replace(self, data=data)

    def constrain(self, position: PyTree) -> PyTree:
        """The user's parameters for an unconstrained ``position``."""
        if self.constrain_fn is None:
            return position
        return self.constrain_fn(position, self.data)

    def check_position(self, position: PyTree, what: str = "initial position", *, evaluate: bool = True) -> PyTree:
        """Validate ``position`` against this target.

        Checks the pytree structure, leaf shapes and finiteness, and (when
        ``evaluate``) that the log density there is a finite scalar.
        """
        position = check_position(position, what)
        _check_same_structure(self.initial_position, position, f"The {what}")
        position = jax.tree.map(lambda x, ref: x.astype(jnp.result_type(ref)), position, self.initial_position)
        if evaluate:
            _scalar_logdensity(jax.jit(self.logdensity)(position), f"The log density of target {self.name!r}")
        return position

    # -- constructors ---------------------------------------------------------
    @classmethod
    def from_logdensity(
        cls,
        logdensity_fn: Callable[[PyTree], jax.Array],
        initial_position: PyTree,
        *,
        name: str = "logdensity",
    ) -> Target:
        """A target from a plain JAX function ``position -> scalar log density``."""
        if not callable(logdensity_fn):
            raise TypeError("logdensity_fn must be callable: position -> scalar log density.")
        position = check_position(initial_position)
        target = cls(
            logdensity_fn=lambda position, data: logdensity_fn(position),
            initial_position=position,
            name=name,
        )
        _scalar_logdensity(jax.jit(target.logdensity)(position), f"logdensity_fn of target {name!r}")
        return target

    @classmethod
    def from_data(
        cls,
        logprior_fn: Callable[[PyTree], jax.Array],
        loglik_fn: Callable[[PyTree, PyTree], jax.Array],
        data: PyTree,
        initial_position: PyTree,
        *,
        name: str = "data",
        observed_data: dict | None = None,
    ) -> Target:
        """A data-driven target: ``log p(theta) + sum_i log p(x_i | theta)``.

        Args:
            logprior_fn: ``position -> scalar`` log prior.
            loglik_fn: ``(position, batch) -> (n,)`` log-likelihood of each
                example of ``batch`` (a pytree like ``data`` with n rows).
            data: pytree of arrays sharing a leading axis of length N.
            initial_position: pytree of float arrays.
            observed_data: arrays to store as ArviZ ``observed_data``
                (defaults to the data's leaves, named by their paths).
        """
        if not callable(logprior_fn) or not callable(loglik_fn):
            raise TypeError("logprior_fn and loglik_fn must be callable.")
        data = jax.tree.map(jnp.asarray, data)
        num_data = _check_data(data)
        position = check_position(initial_position)

        out = jax.eval_shape(loglik_fn, position, data)
        if getattr(out, "shape", None) != (num_data,):
            raise ValueError(
                f"loglik_fn must return one log-likelihood per example, shape ({num_data},); "
                f"got {getattr(out, 'shape', out)}. Reduce over everything but the leading axis."
            )

        def logdensity_fn(position, data):
            return logprior_fn(position) + jnp.sum(loglik_fn(position, data))

        def pointwise(position, data):
            return {"loglik": loglik_fn(position, data)}

        if observed_data is None:
            observed_data = dict(zip(tree_leaf_names(data, root="data"), jax.tree.leaves(data)))

        target = cls(
            logdensity_fn=logdensity_fn,
            initial_position=position,
            data=data,
            num_data=num_data,
            logprior_fn=logprior_fn,
            loglik_fn=loglik_fn,
            pointwise_loglik_fn=pointwise,
            observed_data=observed_data,
            name=name,
        )
        _scalar_logdensity(logprior_fn(position), f"logprior_fn of target {name!r}")
        value = jax.jit(target.logdensity)(position)
        if np.ndim(value) == 0 and not np.isfinite(float(value)):
            bad = [n for n, x in zip(tree_leaf_names(data, root="data"), jax.tree.leaves(data)) if _has_non_finite(x)]
            if bad:
                raise ValueError(
                    f"data contains non-finite values (NaN or inf) in {bad} and the log density of target {name!r} "
                    f"is {float(value)} at the initial position; drop or impute those examples."
                )
        _scalar_logdensity(value, f"The log density of target {name!r}")
        return target

    @classmethod
    def from_numpyro(
        cls,
        model: Callable,
        *model_args: Any,
        rng_seed: int = 0,
        init_strategy: Callable | None = None,
        name: str | None = None,
        **model_kwargs: Any,
    ) -> Target:
        """A target from a NumPyro model and its arguments.

        Uses NumPyro's ``initialize_model`` (initial point and the transforms
        to unconstrained space), ``potential_energy`` (the log density,
        including Jacobians) and ``constrain_fn`` (back to the user's
        parameters, with deterministic sites). Samplers move in the
        unconstrained space; results are reported in constrained values.

        Array arguments (NumPy or JAX arrays with at least one dimension) are
        the target's data and are passed to the compiled program as
        arguments; everything else (Python numbers, strings, ``None``) is
        static. Observed sites give ArviZ's ``observed_data`` and pointwise
        ``log_likelihood``.
        """
        from numpyro.infer import init_to_uniform
        from numpyro.infer.util import (
            constrain_fn as np_constrain_fn,
        )
        from numpyro.infer.util import (
            initialize_model,
            log_likelihood,
            potential_energy,
        )

        leaves, treedef = jax.tree.flatten((model_args, model_kwargs))
        is_array = [isinstance(x, (np.ndarray, jax.Array)) and np.ndim(x) > 0 for x in leaves]
        data = tuple(jnp.asarray(x) for x, a in zip(leaves, is_array) if a)
        static = [None if a else x for x, a in zip(leaves, is_array)]

        def rebuild(data):
            it = iter(data)
            filled = [next(it) if a else s for s, a in zip(static, is_array)]
            return jax.tree.unflatten(treedef, filled)

        strategy = init_to_uniform if init_strategy is None else init_strategy

        def init_fn(key, data):
            args, kwargs = rebuild(data)
            inf = initialize_model(key, model, model_args=args, model_kwargs=kwargs, init_strategy=strategy)
            return inf.param_info.z

        def logdensity_fn(position, data):
            args, kwargs = rebuild(data)
            return -potential_energy(model, args, kwargs, position)

        def init_and_check(key, data):
            z = init_fn(key, data)
            return z, logdensity_fn(z, data)

        # NumPyro's initialize_model run eagerly dispatches its search for a valid
        # point op by op (about a hundred small compilations, 5-10 s); staged in one
        # jit it is a single compilation. Under jit it cannot raise when no valid
        # point is found: it returns the last point tried, checked here.
        z, logdensity_at_z = jax.jit(init_and_check)(jax.random.key(rng_seed), data)
        if not np.isfinite(float(logdensity_at_z)):
            strategy_name = getattr(strategy, "__name__", repr(strategy))
            raise ValueError(
                f"NumPyro could not find a valid initial point for the model: the log density is "
                f"{float(logdensity_at_z)} at the last point tried (init_strategy={strategy_name}); "
                "check that the observed data lie in the support of their distributions, or pass another init_strategy."
            )
        observed = _observed_sites(model, model_args, model_kwargs, z, rng_seed)

        def constrain(position, data):
            args, kwargs = rebuild(data)
            return np_constrain_fn(model, args, kwargs, position, return_deterministic=True)

        def pointwise(constrained, data):
            args, kwargs = rebuild(data)
            # log_likelihood substitutes the sampled sites; batch_ndims=0 for one draw.
            return log_likelihood(model, constrained, *args, batch_ndims=0, **kwargs)

        position = check_position(z)
        target = cls(
            logdensity_fn=logdensity_fn,
            initial_position=position,
            data=data,
            num_data=None,
            init_fn=init_fn,
            constrain_fn=constrain,
            pointwise_loglik_fn=pointwise if observed else None,
            observed_data=observed or None,
            name=name or getattr(model, "__name__", "numpyro_model"),
        )
        # Already evaluated at this point inside the initialisation program: no second compilation.
        _scalar_logdensity(logdensity_at_z, f"The log density of NumPyro model {target.name!r}")
        return target
