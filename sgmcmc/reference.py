"""Reference posterior predictives from full-batch NUTS, cached, with their own ceiling.

To say how close an approximate method (SGD, SWAG, SGLD, ...) comes to the
Bayesian posterior of a small network, compare its predictive with that of
an exact sampler on the same target: the top-1 **agreement** and the mean
**total variation** of Izmailov, Vikram, Hoffman & Wilson, "What are Bayesian
neural network posteriors really like?", ICML 2021
(:func:`sgmcmc.diagnostics.predictive.agreement`,
:func:`~sgmcmc.diagnostics.predictive.total_variation`).
:func:`reference_predictive` builds that reference:

1. per-chain starting points (see *Initialisation* below), optionally moved
   to a mode by full-batch Adam (``map_steps``);
2. ``num_chains`` chains of :func:`sgmcmc.nuts` through :func:`sgmcmc.sample`
   with ``num_warmup`` steps of Stan's windowed adaptation, then
   ``num_samples`` draws kept every ``thin`` steps;
3. the predictive of every chain, ``mean_s softmax(logits_fn(theta_s, x_test))``,
   and of all chains pooled (:attr:`ReferencePredictive.probs`);
4. the **ceiling**: each chain's predictive scored against the pooled
   predictive of the *other* chains, averaged over chains. An exact sampler
   run once more, with as many draws as one reference chain, would score
   about this against the reference, so a method's agreement is read
   against ``ceiling_agreement`` (not against 1) and its total variation
   against ``ceiling_tv`` (not against 0). The ceiling depends on the number
   of draws per chain (fewer draws, more Monte Carlo noise, a lower ceiling),
   and a method is scored against the pool of all ``C`` chains where a chain
   is scored against ``C - 1``: an exact sampler would come out slightly
   above the ceiling, which is therefore a mark to reach, not a bound;
5. diagnostics: divergences, adapted step sizes, tree depths, gradient
   evaluations, and rank-normalised split R-hat and bulk ESS (ArviZ) of the
   log density and, in function space, of each test point's per-draw log
   probability of its reference class (weight-space R-hat means little for a
   network: hidden units can be permuted and sign-flipped).

**Caching.** With ``cache=path`` the result is written to an ``.npz`` file
(no pickles; predictive probabilities in float64, ceilings, settings and
diagnostics, not the draws) under a SHA-256 key of everything that determines it: the run
settings, the bytes of the target's data, of ``x_test`` and of the chains'
starting points, and a fingerprint of the two functions (the log density at
every starting point and the logits of the first starting point on a few test
inputs, to 6 significant digits), since Python functions themselves cannot be
hashed. A later call with the same key loads the file and samples nothing
(``from_cache=True``); with a different key (other settings, data, prior
scale, ...) it warns which settings changed, samples again and overwrites
the file. A change that the fingerprint does not see (e.g. a change of the
log density that leaves its values at the starting points alone) is not
detected: delete the file then.

**Initialisation.** A network's posterior is multimodal (permutations and
sign flips of hidden units, and functionally different modes). NUTS chains
in practice stay in the basin where they start, so the spread of a
reference between chains is the spread between the basins its chains were
started in. Chains started from one common point would under-represent that
diversity and make the ceiling optimistic: start every chain from its own
random point, with ``init`` a function of a key (e.g. the network's own
initialiser, as ``benchmarks/reference_mlp.py`` does). ``map_steps`` of
full-batch Adam on ``-log p(theta | D) / N`` can first move each chain to
the mode of its basin (like the members of a deep ensemble), for networks
where warmup from a random point spends long on the descent; starting at a
mode biases nothing once warmup is discarded, it only selects the basins. On
the 64-32-10 digits MLP of :mod:`sgmcmc.demo` it was not needed: two chains
from random Glorot points and two from their own MAP (600 Adam steps) took
the same warmup time (54 s and 53 s for 200 steps), adapted the same step
size (0.04) and tree depth (7, i.e. 127 leapfrog steps per draw) and gave
the same per-chain predictive (test NLL 0.145-0.149).

Only classifiers are covered: ``logits_fn(params, x) -> (n, K)`` logits.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import io
import json
import numbers
import os
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from sgmcmc._tree import PyTree
from sgmcmc.diagnostics.predictive import (
    accuracy,
    agreement,
    brier_score,
    expected_calibration_error,
    nll,
    total_variation,
)
from sgmcmc.run import sample
from sgmcmc.samplers.nuts import nuts
from sgmcmc.target import Target

__all__ = ["ReferencePredictive", "reference_predictive", "reference_settings", "ceiling", "CACHE_FORMAT"]

#: Version of the cache file layout; part of the key, so a new layout never reads an old file.
CACHE_FORMAT = 1

#: Options of :func:`sgmcmc.nuts` that ``nuts_options`` may set (JSON values only).
NUTS_OPTIONS = ("step_size", "max_tree_depth", "target_accept", "metric", "divergence_threshold")

_FINGERPRINT_INPUTS = 8  # test inputs whose logits enter the fingerprint

# One NUTS sampler (and one jitted helper of each kind) per target and function, so that a
# second reference on the same target (other settings, draws or starting points) reuses the
# compiled programs: the driver's cache is keyed by the sampler object.
_MEMO: collections.OrderedDict = collections.OrderedDict()
_MEMO_SIZE = 32


@dataclasses.dataclass(frozen=True, eq=False)
class ReferencePredictive:
    """A reference posterior predictive on ``x_test`` and how far its own chains agree.

    Attributes:
        probs: ``(n, K)`` predictive probabilities pooled over all chains and draws.
        chain_probs: ``(C, n, K)`` predictive probabilities of each chain.
        ceiling_agreement: mean over chains of the agreement of a chain's
            predictive with the pooled predictive of the other chains.
        ceiling_tv: the same for the total variation.
        chain_agreement: ``(C,)`` the per-chain agreements behind the ceiling.
        chain_tv: ``(C,)`` the per-chain total variations.
        settings: everything the cache key was computed from (JSON values).
        diagnostics: divergences, step sizes, tree depths, gradient
            evaluations, R-hat/ESS summaries and timings (JSON values).
        wall_time_s: seconds the run that built this reference took
            (initialisation, sampling with compilation, predictive); the
            original figure when loaded from the cache.
        key: the SHA-256 cache key (hex).
        from_cache: whether this was loaded from ``cache_path`` (nothing sampled).
        cache_path: the cache file, or ``None``.
        result: the :class:`~sgmcmc.result.SampleResult` of the NUTS run
            (``None`` when loaded from the cache).
    """

    probs: np.ndarray
    chain_probs: np.ndarray
    ceiling_agreement: float
    ceiling_tv: float
    chain_agreement: np.ndarray
    chain_tv: np.ndarray
    settings: dict
    diagnostics: dict
    wall_time_s: float
    key: str
    from_cache: bool = False
    cache_path: str | None = None
    result: Any = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def num_chains(self) -> int:
        return int(self.chain_probs.shape[0])

    def metrics(self, y, num_bins: int = 15) -> dict[str, float]:
        """Accuracy, NLL, ECE (equal-width, ``num_bins``) and Brier score of the pooled predictive on labels ``y``."""
        return {
            "accuracy": float(accuracy(self.probs, y)),
            "nll": float(nll(self.probs, y)),
            "ece": float(expected_calibration_error(self.probs, y, num_bins)),
            "brier": float(brier_score(self.probs, y)),
        }

    def compare(self, probs) -> dict[str, float]:
        """Agreement and total variation of a method's ``(n, K)`` predictive against this reference,
        next to the ceilings they should be read against."""
        return {
            "agreement": float(agreement(probs, self.probs)),
            "tv": float(total_variation(probs, self.probs)),
            "ceiling_agreement": self.ceiling_agreement,
            "ceiling_tv": self.ceiling_tv,
        }


def ceiling(chain_probs) -> tuple[np.ndarray, np.ndarray]:
    """Per-chain agreement and total variation of each chain's predictive against the others' pooled predictive.

    ``chain_probs`` is ``(C, n, K)`` with ``C >= 2``, each chain's predictive
    from the same number of draws (so the other chains pool with equal
    weights). Returns ``(agreement (C,), tv (C,))``; their means are the
    ceilings of :class:`ReferencePredictive`.
    """
    chain_probs = np.asarray(chain_probs)
    if chain_probs.ndim != 3 or chain_probs.shape[0] < 2:
        raise ValueError(f"chain_probs must have shape (chains >= 2, n, K), got {chain_probs.shape}.")
    num_chains = chain_probs.shape[0]
    total = chain_probs.sum(axis=0)
    agree, tv = np.zeros(num_chains), np.zeros(num_chains)
    for c in range(num_chains):
        others = (total - chain_probs[c]) / (num_chains - 1)
        agree[c] = float(agreement(chain_probs[c], others))
        tv[c] = float(total_variation(chain_probs[c], others))
    return agree, tv


# -- validation --------------------------------------------------------------------
def _count(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def _check_nuts_options(options: Mapping | None) -> dict:
    options = dict(options or {})
    for name, value in options.items():
        if name not in NUTS_OPTIONS:
            raise ValueError(f"nuts_options may set {NUTS_OPTIONS}, got {name!r}.")
        if not isinstance(value, (str, int, float, type(None))):
            raise ValueError(f"nuts_options[{name!r}] must be a str, int, float or None (it is hashed), got {value!r}.")
    return options


def _check_x_test(x_test) -> np.ndarray:
    x = np.asarray(x_test)
    if x.ndim < 1 or x.shape[0] == 0:
        raise ValueError(f"x_test must have a leading axis of test inputs (n >= 1), got shape {x.shape}.")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise ValueError(f"x_test must be numeric, got dtype {x.dtype}.")
    if not np.all(np.isfinite(x)):
        raise ValueError("x_test contains non-finite values (NaN or inf).")
    return x


# -- hashing -------------------------------------------------------------------------
def _sha(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(np.asarray(a))
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _tree_sha(tree: PyTree) -> str:
    leaves, treedef = jax.tree.flatten(tree)
    return hashlib.sha256((str(treedef) + _sha(*leaves)).encode()).hexdigest()


def _rounded(values) -> str:
    return ",".join(f"{v:.6g}" for v in np.asarray(values, np.float64).ravel())


def _key(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def _memo(key: tuple, build: Callable[[], Any]) -> Any:
    """``build()`` once per ``key`` (the target and functions compare by identity), last few kept."""
    if key not in _MEMO:
        _MEMO[key] = build()
        while len(_MEMO) > _MEMO_SIZE:
            _MEMO.popitem(last=False)
    _MEMO.move_to_end(key)
    return _MEMO[key]


def _sampler(target: Target, options: dict):
    return _memo(("nuts", target, tuple(sorted(options.items()))), lambda: nuts(target, **options))


# -- initialisation ----------------------------------------------------------------------
def _initial_positions(target: Target, init, num_chains: int, seed: int) -> tuple[PyTree, str]:
    """Per-chain starting points with a leading chain axis, and a description of where they came from."""
    reference = target.initial_position
    if callable(init):
        keys = jax.random.split(jax.random.fold_in(jax.random.key(seed), 1), num_chains)
        per_chain = [init(keys[c]) for c in range(num_chains)]
        how = f"init(key_c) with {getattr(init, '__qualname__', type(init).__name__)}"
    elif init is None:
        if target.init_fn is not None:
            keys = jax.random.split(jax.random.fold_in(jax.random.key(seed), 1), num_chains)
            per_chain = [target.init_fn(keys[c], target.data) for c in range(num_chains)]
            how = "target.init_fn(key_c, data)"
        else:
            per_chain = [reference] * num_chains
            how = "target.initial_position, shared"
    else:
        ref_shapes = [np.shape(x) for x in jax.tree.leaves(reference)]
        same = jax.tree.structure(init) == jax.tree.structure(reference)
        leaves = jax.tree.leaves(init)
        if same and all(np.shape(x) == (num_chains, *s) for x, s in zip(leaves, ref_shapes)):
            per_chain = [jax.tree.map(lambda x, c=c: x[c], init) for c in range(num_chains)]
            how = "given, one per chain"
        else:
            per_chain = [init] * num_chains
            how = "given, shared"
    checked = [
        target.check_position(p, f"initial position of chain {c}", evaluate=False) for c, p in enumerate(per_chain)
    ]
    return jax.tree.map(lambda *xs: jnp.stack(xs), *checked), how


def _optimize(target: Target, positions: PyTree, num_steps: int, learning_rate: float) -> PyTree:
    """``num_steps`` of full-batch Adam on ``-log p(theta | D) / N`` from every chain's position (vmapped)."""
    run = _memo(("adam", target, num_steps, learning_rate), lambda: _adam_program(target, num_steps, learning_rate))
    out = run(positions, target.data)
    bad = [c for c, finite in enumerate(np.asarray(_finite_rows(out))) if not finite]
    if bad:
        raise ValueError(
            f"Adam (map_steps={num_steps}, map_learning_rate={learning_rate}) left chain(s) {bad} at a non-finite "
            "position; lower map_learning_rate."
        )
    return out


def _adam_program(target: Target, num_steps: int, learning_rate: float):
    scale = 1.0 / (target.num_data or 1)
    optimizer = optax.adam(learning_rate)

    def loss(params, data):
        return -target.logdensity_fn(params, data) * scale

    @jax.jit
    def run(positions, data):
        def one_chain(params):
            def step(carry, _):
                params, opt_state = carry
                grads = jax.grad(loss)(params, data)
                updates, opt_state = optimizer.update(grads, opt_state, params)
                return (optax.apply_updates(params, updates), opt_state), None

            (params, _), _ = lax.scan(step, (params, optimizer.init(params)), None, length=num_steps)
            return params

        return jax.vmap(one_chain)(positions)

    return run


def _finite_rows(tree: PyTree) -> jax.Array:
    return jnp.all(
        jnp.stack([jnp.all(jnp.isfinite(x.reshape(x.shape[0], -1)), axis=1) for x in jax.tree.leaves(tree)]), 0
    )


# -- predictive ------------------------------------------------------------------------------
def _predictive(logits_fn, samples: PyTree, x_test: np.ndarray, budget: int = 2**22):
    """Per-chain predictive ``(C, n, K)`` and per-draw log probability of each point's pooled class ``(C, S, n)``.

    Draws are evaluated a block of ``b`` per chain at a time (``C * b * n * K``
    logits at most ``budget`` numbers), the last block padded so that one
    program serves every block.
    """
    leaves = jax.tree.leaves(samples)
    num_chains, num_draws = np.shape(leaves[0])[:2]
    x = jnp.asarray(x_test)
    first = jax.tree.map(lambda a: a[0, 0], samples)
    num_test, num_classes = jax.eval_shape(logits_fn, first, x).shape
    block = int(max(1, min(num_draws, budget // max(num_chains * num_test * num_classes, 1))))

    program = _memo(("log_probs", logits_fn), lambda: _log_probs_program(logits_fn))

    def log_probs(params):
        return program(params, x)

    def blocks():
        for start in range(0, num_draws, block):
            stop = min(start + block, num_draws)
            idx = np.minimum(np.arange(start, start + block), num_draws - 1)  # pad with the last draw
            yield stop - start, log_probs(jax.tree.map(lambda a, i=idx: a[:, i], samples))

    sums = 0.0
    for valid, lp in blocks():
        sums = sums + jnp.sum(jnp.exp(lp[:, :valid]), axis=1)
    chain_probs = np.asarray(sums / num_draws, np.float64)
    chain_probs /= chain_probs.sum(-1, keepdims=True)  # float32 round-off; rows sum to 1 to ~1e-7
    pooled_class = np.argmax(chain_probs.mean(0), axis=-1)

    picked = [
        np.asarray(jnp.take_along_axis(lp[:, :valid], jnp.asarray(pooled_class)[None, None, :, None], -1)[..., 0])
        for valid, lp in blocks()
    ]
    return chain_probs, np.concatenate(picked, axis=1)


def _log_probs_program(logits_fn):
    @jax.jit
    def log_probs(params, x):
        return jax.nn.log_softmax(jax.vmap(jax.vmap(logits_fn, in_axes=(0, None)), in_axes=(0, None))(params, x), -1)

    return log_probs


def _fingerprint_program(target: Target, logits_fn):
    @jax.jit
    def fingerprint(positions, data, x):
        lds = jax.vmap(lambda p: target.logdensity_fn(p, data))(positions)
        return lds, logits_fn(jax.tree.map(lambda a: a[0], positions), x)

    return fingerprint


def _summaries(result, class_log_probs: np.ndarray) -> dict:
    """R-hat / bulk ESS of the log density and of the function-space quantities, and NUTS statistics."""
    from sgmcmc.diagnostics.convergence import ess, rhat

    def rhat_ess(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # sgmcmc's chunked diagnostics: equal to az.rhat / az.ess(method="bulk"), NaN for constant series.
        values = np.asarray(values, np.float64)
        return np.atleast_1d(rhat(values)), np.atleast_1d(ess(values, method="bulk"))

    info = result.info
    lp_rhat, lp_ess = rhat_ess(np.asarray(info.logdensity))
    f_rhat, f_ess = rhat_ess(class_log_probs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices
        function_space = {
            "rhat_max": float(np.nanmax(f_rhat)),
            "rhat_median": float(np.nanmedian(f_rhat)),
            "fraction_rhat_above_1.01": float(np.nanmean(f_rhat > 1.01)),
            "ess_bulk_min": float(np.nanmin(f_ess)),
            "ess_bulk_median": float(np.nanmedian(f_ess)),
        }
    return {
        "num_divergent": int(result.num_divergent),
        "num_divergent_warmup": int(np.sum(result.warmup_divergences)),
        "step_size": np.asarray(info.step_size)[:, -1].astype(float).tolist(),
        "mean_tree_depth": np.asarray(info.tree_depth, np.float64).mean(axis=1).tolist(),
        "mean_acceptance_rate": np.asarray(info.acceptance_rate, np.float64).mean(axis=1).tolist(),
        "grad_evals": np.asarray(result.num_grad_evals).astype(int).tolist(),
        "lp": {"rhat": float(lp_rhat[0]), "ess_bulk": float(lp_ess[0])},
        "function_space": function_space,
        "function_space_quantity": "per-draw log probability of each test point's pooled-predictive class",
        "timing": {k: float(v) for k, v in result.timing.items()},
    }


# -- cache -----------------------------------------------------------------------------------
def _save(path: Path, ref: ReferencePredictive) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        probs=ref.probs,
        chain_probs=ref.chain_probs,
        chain_agreement=ref.chain_agreement,
        chain_tv=ref.chain_tv,
        key=np.array(ref.key),
        settings=np.array(json.dumps(ref.settings, sort_keys=True)),
        diagnostics=np.array(json.dumps(ref.diagnostics, sort_keys=True)),
        wall_time_s=np.array(ref.wall_time_s),
    )
    # Write to a temporary file next to the target and rename: a reader never sees half a file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(buffer.getvalue())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _load(path: Path, key: str, settings: dict) -> ReferencePredictive | None:
    """The cached reference under ``key``, or ``None`` (with a warning saying why) when it is not usable."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            stored_key = str(npz["key"])
            stored_settings = json.loads(str(npz["settings"]))
            if stored_key != key:
                changed = sorted(
                    k for k in set(settings) | set(stored_settings) if settings.get(k) != stored_settings.get(k)
                )
                warnings.warn(
                    f"the reference cached in {path} was made with other settings (changed: {', '.join(changed)}); "
                    "sampling again and overwriting it.",
                    UserWarning,
                    stacklevel=3,
                )
                return None
            probs = np.asarray(npz["probs"], np.float64)
            chain_probs = np.asarray(npz["chain_probs"], np.float64)
            chain_agreement = np.asarray(npz["chain_agreement"])
            chain_tv = np.asarray(npz["chain_tv"])
            diagnostics = json.loads(str(npz["diagnostics"]))
            wall_time_s = float(npz["wall_time_s"])
    except (OSError, KeyError, ValueError) as err:
        warnings.warn(f"cannot read the reference cache {path} ({err}); sampling again.", UserWarning, stacklevel=3)
        return None
    return ReferencePredictive(
        probs=probs,
        chain_probs=chain_probs,
        ceiling_agreement=float(chain_agreement.mean()),
        ceiling_tv=float(chain_tv.mean()),
        chain_agreement=chain_agreement,
        chain_tv=chain_tv,
        settings=stored_settings,
        diagnostics=diagnostics,
        wall_time_s=wall_time_s,
        key=key,
        from_cache=True,
        cache_path=str(path),
    )


class _Plan(NamedTuple):
    settings: dict
    positions: PyTree
    x_test: np.ndarray


def _plan(
    target,
    logits_fn,
    x_test,
    *,
    num_chains,
    num_warmup,
    num_samples,
    thin,
    seed,
    init,
    map_steps,
    map_learning_rate,
    nuts_options,
) -> _Plan:
    """Validate the arguments, draw the starting points and compute the settings the cache key is made of."""
    if not isinstance(target, Target):
        raise TypeError(f"target must be an sgmcmc.Target, got {type(target).__name__}.")
    if not callable(logits_fn):
        raise TypeError(f"logits_fn must be a function (params, x) -> logits, got {logits_fn!r}.")
    num_chains = _count(num_chains, "num_chains", 2)
    num_warmup = _count(num_warmup, "num_warmup", 0)
    num_samples = _count(num_samples, "num_samples", 2)
    thin = _count(thin, "thin", 1)
    seed = _count(seed, "seed", 0)
    map_steps = _count(map_steps, "map_steps", 0)
    if isinstance(map_learning_rate, bool) or not isinstance(map_learning_rate, numbers.Real):
        raise ValueError(f"map_learning_rate must be a positive number, got {map_learning_rate!r}.")
    if not (np.isfinite(map_learning_rate) and map_learning_rate > 0):
        raise ValueError(f"map_learning_rate must be a positive number, got {map_learning_rate!r}.")
    options = _check_nuts_options(nuts_options)
    x_test = _check_x_test(x_test)

    positions, how = _initial_positions(target, init, num_chains, seed)
    first = jax.tree.map(lambda a: a[0], positions)
    try:
        logits_shape = jax.eval_shape(logits_fn, first, jnp.asarray(x_test)).shape
    except Exception as err:
        raise ValueError(f"logits_fn(params, x_test) failed on the first starting point: {err}") from err
    if len(logits_shape) != 2 or logits_shape[0] != x_test.shape[0] or logits_shape[1] < 2:
        raise ValueError(
            f"logits_fn(params, x_test) must return (n, K) = ({x_test.shape[0]}, K >= 2) logits, got {logits_shape}."
        )

    fingerprint = _memo(("fingerprint", target, logits_fn), lambda: _fingerprint_program(target, logits_fn))
    lds, logits = fingerprint(positions, target.data, jnp.asarray(x_test[:_FINGERPRINT_INPUTS]))
    if not np.all(np.isfinite(np.asarray(lds))):
        raise ValueError(f"the log density is not finite at a starting point (values {np.asarray(lds).tolist()}).")
    settings = {
        "format": CACHE_FORMAT,
        "sampler": "nuts",
        "nuts_options": options,
        "num_chains": num_chains,
        "num_warmup": num_warmup,
        "num_samples": num_samples,
        "thin": thin,
        "seed": seed,
        "init": how,
        "map_steps": map_steps,
        "map_learning_rate": float(map_learning_rate) if map_steps else None,
        "target": target.name,
        "num_data": target.num_data,
        "num_params": int(sum(np.size(x) for x in jax.tree.leaves(target.initial_position))),
        "logits_fn": getattr(logits_fn, "__qualname__", type(logits_fn).__name__),
        "x_test_shape": list(x_test.shape),
        "num_classes": int(logits_shape[1]),
        "data_sha256": _tree_sha(target.data),
        "x_test_sha256": _sha(x_test),
        "init_sha256": _tree_sha(positions),
        "function_fingerprint": hashlib.sha256((_rounded(lds) + "|" + _rounded(logits)).encode()).hexdigest(),
    }
    return _Plan(settings, positions, x_test)


def reference_settings(
    target: Target,
    logits_fn: Callable[[PyTree, jax.Array], jax.Array],
    x_test,
    *,
    num_chains: int = 4,
    num_warmup: int = 500,
    num_samples: int = 200,
    thin: int = 1,
    seed: int = 0,
    init: PyTree | Callable[[jax.Array], PyTree] | None = None,
    map_steps: int = 0,
    map_learning_rate: float = 1e-2,
    nuts_options: Mapping[str, Any] | None = None,
) -> dict:
    """The settings :func:`reference_predictive` would record and hash for these arguments, without sampling.

    The cache key is ``sha256(json.dumps(settings, sort_keys=True))``
    (:attr:`ReferencePredictive.key`); comparing this dict with a cached
    reference's ``settings`` tells whether, and why, the cache would be reused.
    Arguments as in :func:`reference_predictive`.
    """
    return _plan(
        target,
        logits_fn,
        x_test,
        num_chains=num_chains,
        num_warmup=num_warmup,
        num_samples=num_samples,
        thin=thin,
        seed=seed,
        init=init,
        map_steps=map_steps,
        map_learning_rate=map_learning_rate,
        nuts_options=nuts_options,
    ).settings


# -- public API -------------------------------------------------------------------------------
def reference_predictive(
    target: Target,
    logits_fn: Callable[[PyTree, jax.Array], jax.Array],
    x_test,
    *,
    num_chains: int = 4,
    num_warmup: int = 500,
    num_samples: int = 200,
    thin: int = 1,
    seed: int = 0,
    init: PyTree | Callable[[jax.Array], PyTree] | None = None,
    map_steps: int = 0,
    map_learning_rate: float = 1e-2,
    nuts_options: Mapping[str, Any] | None = None,
    cache: str | os.PathLike | None = None,
    progress: bool = False,
) -> ReferencePredictive:
    """A full-batch NUTS reference posterior predictive of a classifier on ``x_test``, cached.

    See the module docstring for the procedure, the ceiling, the cache key and
    how to initialise chains on a multimodal network posterior.

    Args:
        target: the posterior to sample (full batch), e.g.
            :func:`sgmcmc.demo.make_mlp_target`.
        logits_fn: ``(params, x) -> (n, K)`` class logits, called on the
            target's draws in the user's parameters (``result.samples``).
        x_test: ``(n, ...)`` inputs the predictive is computed on.
        num_chains: NUTS chains (>= 2: the ceiling compares chains).
        num_warmup: warmup (adaptation) steps per chain, discarded.
        num_samples: draws kept per chain.
        thin: NUTS transitions per kept draw.
        seed: integer seed of the starting points drawn by ``init`` and of NUTS.
        init: where chains start: ``None`` (the target's own initialisation:
            ``target.init_fn`` per chain, else its initial position for every
            chain); a function ``key -> position`` called with a different key
            per chain (recommended for networks); or a position, shared or with
            a leading axis of length ``num_chains``.
        map_steps: full-batch Adam steps on ``-log p(theta | D) / N`` from each
            starting point before warmup (0: none).
        map_learning_rate: Adam's learning rate for ``map_steps``.
        nuts_options: keyword arguments of :func:`sgmcmc.nuts`
            (``target_accept``, ``max_tree_depth``, ``metric``, ``step_size``,
            ``divergence_threshold``).
        cache: an ``.npz`` path to load the reference from when its key
            matches and to save it to otherwise; ``None`` to not cache.
        progress: show the sampler's progress bar.

    Returns:
        A :class:`ReferencePredictive`.
    """
    start = time.perf_counter()
    plan = _plan(
        target,
        logits_fn,
        x_test,
        num_chains=num_chains,
        num_warmup=num_warmup,
        num_samples=num_samples,
        thin=thin,
        seed=seed,
        init=init,
        map_steps=map_steps,
        map_learning_rate=map_learning_rate,
        nuts_options=nuts_options,
    )
    settings, positions, x_test = plan.settings, plan.positions, plan.x_test
    num_chains, num_warmup, num_samples, thin, seed = (
        settings[k] for k in ("num_chains", "num_warmup", "num_samples", "thin", "seed")
    )
    map_steps, options = settings["map_steps"], settings["nuts_options"]
    key = _key(settings)
    path = None if cache is None else Path(cache)
    if path is not None and path.exists():
        cached = _load(path, key, settings)
        if cached is not None:
            return cached

    init_start = time.perf_counter()
    if map_steps:
        positions = _optimize(target, positions, map_steps, settings["map_learning_rate"])
    init_s = time.perf_counter() - init_start

    sampler = _sampler(target, options)
    result = sample(
        sampler,
        num_samples=num_samples,
        num_warmup=num_warmup,
        num_chains=num_chains,
        thin=thin,
        seed=seed,
        initial_position=positions,
        progress=progress,
    )
    pred_start = time.perf_counter()
    chain_probs, class_log_probs = _predictive(logits_fn, result.samples, x_test)
    probs = chain_probs.mean(axis=0)
    chain_agreement, chain_tv = ceiling(chain_probs)
    predictive_s = time.perf_counter() - pred_start
    diagnostics = _summaries(result, class_log_probs)
    diagnostics["timing"].update(init_s=init_s, predictive_s=predictive_s)
    wall = time.perf_counter() - start
    diagnostics["timing"]["wall_s"] = wall
    ref = ReferencePredictive(
        probs=probs,
        chain_probs=chain_probs,
        ceiling_agreement=float(chain_agreement.mean()),
        ceiling_tv=float(chain_tv.mean()),
        chain_agreement=chain_agreement,
        chain_tv=chain_tv,
        settings=settings,
        diagnostics=diagnostics,
        wall_time_s=wall,
        key=key,
        from_cache=False,
        cache_path=None if path is None else str(path),
        result=result,
    )
    if path is not None:
        _save(path, ref)
    return ref
