"""Rank-normalised split R-hat and bulk / tail ESS for many parameters.

The diagnostics of Vehtari, Gelman, Simpson, Carpenter & Bürkner (2021),
"Rank-normalization, folding, and localization: an improved R-hat for
assessing convergence of MCMC", Bayesian Analysis 16(2), computed exactly as
ArviZ 0.23 computes them (``az.rhat(method="rank")``, ``az.ess(method="bulk")``,
``az.ess(method="tail")``, ``"mean"``, ``"sd"``), but vectorised over the
parameter axis and in chunks of parameters so memory stays bounded. Inputs are
arrays ``(chain, draw, *param_shape)`` or pytrees of them (``result.position``,
``result.samples``); outputs have ``param_shape`` (and the pytree's structure).

Algorithm, per parameter (``N`` = number of draws after splitting):

1. **Split** every chain in two halves (``draws // 2`` each; with an odd number
   of draws the middle draw is dropped), giving ``2 * chain`` chains.
2. **Rank-normalise**: average ranks ``r`` (ties share their mean rank) over
   all split draws, ``z = Phi^-1((r - 3/8) / (N - 3/4 + 1))`` (Blom's offset).
3. **R-hat** of ``z`` (bulk) and of the rank-normalised folded draws
   ``|x - median(x)|`` (tails); ``rhat = max(bulk, folded)`` with the
   classic ``sqrt(((n - 1)/n W + B/n) / W)``.
4. **ESS** of ``z`` (bulk), and the minimum ESS of the indicators
   ``x <= q_0.05`` and ``x <= q_0.95`` (tail; R's type-7 quantiles of the
   unsplit draws). ESS uses the FFT autocovariance of each split chain,
   ``rho_t = 1 - (W - mean_c acov_c(t)) / var_plus``, Geyer's initial positive
   sequence truncated at the first negative pair sum and made monotone, and
   ``tau >= 1 / log10(chains * N)``; written without loops as in ArviZ's
   ``_ess`` (see :func:`_geyer_tau`).

How the work is split between NumPy and JAX (measured on 2 CPU cores): the
ranking is a sort of every parameter's ``chain * draw`` values, and XLA's CPU
sort was 10-20x slower than NumPy's, so the ranks are computed on the host with
one NumPy sort of packed (value, index) keys per chunk, on two host threads
(NumPy's sort releases the GIL). The folded draws ``|x - median|`` are not
sorted again: in the sorted order they form two monotone runs (the half below
the median, reversed, and the half above), which a stable sort merges in one
linear pass; ties (always the median pair there) are averaged by rewriting only
the tied slots. Everything after (normal scores, R-hat, FFT autocovariances,
Geyer's truncation) is a few jitted JAX programs per chunk, one per group of
outputs sharing an input (one program for all of them ran about 2x slower),
dispatched asynchronously so that the host ranks the next chunks while XLA
works on this one. Cost per parameter for 4 x 1000 draws on the 2-core machine this was
written on (``benchmarks/convergence_diagnostics.py``): one sort of 4,000
packed keys (~0.1 ms of CPU) and three FFT autocovariances of 8 x 500 values
(bulk and two tail indicators, ~0.06 ms each); these two are the floor of the
exact computation here.

Precision: ``dtype=None`` computes in float64 for float64 input (inside a local
``jax.enable_x64`` context; the global JAX configuration is not changed) and
in float32 otherwise. Ranks, quantile indicators, medians and the normal-score
table are exact in both; in float32 only the sums and the FFT round, which
moves R-hat by about 1e-7 and ESS by about 1e-6 relative (and can, rarely, move
Geyer's truncation point by one pair when a pair sum is within 1e-6 of 0).
Pass ``dtype=np.float64`` to match ArviZ to 1e-10 on float32 draws too.

Edge cases follow ArviZ: R-hat is NaN with one chain and for a constant
parameter (0 / 0); the ESS of a constant series is the number of split draws.
Unlike ArviZ, which logs a warning and returns NaN, fewer than 4 draws,
non-finite draws and arrays with fewer than 2 dimensions raise ``ValueError``.
"""

from __future__ import annotations

import collections
import functools
import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "ConvergenceSummary",
    "ess",
    "function_space_summary",
    "predicted_class_log_probs",
    "rhat",
    "summary",
]

_RHAT_METHODS = ("rank", "z_scale", "folded", "split", "identity")
_ESS_METHODS = ("bulk", "tail", "mean", "sd")
_DEFAULT_CHUNK = 256
_HOST_THREADS = min(2, os.cpu_count() or 1)
_RESOLUTION = float(np.finfo(np.float64).resolution)  # ArviZ's "constant series" threshold


# -- host side: validation, chunking, ranks -----------------------------------------------------


def _validate(x: Any, name: str = "draws") -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype == bool or np.issubdtype(arr.dtype, np.integer):
        arr = arr.astype(np.float64)
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"{name}: expected real numbers, got dtype {arr.dtype}")
    if arr.dtype not in (np.float32, np.float64):
        arr = arr.astype(np.float32 if arr.dtype.itemsize < 4 else np.float64)
    if arr.ndim < 2:
        raise ValueError(f"{name}: expected shape (chain, draw, *param_shape), got shape {arr.shape}")
    if arr.shape[0] < 1:
        raise ValueError(f"{name}: no chains (shape {arr.shape})")
    if arr.shape[1] < 4:
        raise ValueError(f"{name}: need at least 4 draws per chain, got {arr.shape[1]} (shape {arr.shape})")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}: draws contain NaN or infinite values")
    return arr


def _split(v: np.ndarray) -> np.ndarray:
    """(p, chain, draw) -> (p, 2 chain, draw // 2); the middle draw of an odd count is dropped (as ArviZ)."""
    half = v.shape[2] // 2
    return np.concatenate([v[:, :, :half], v[:, :, v.shape[2] - half :]], axis=1)


class _Ranked(NamedTuple):
    """Rows of ``v`` (p, N) in ascending order: sort keys, original positions, and order statistics."""

    keys: np.ndarray  # (p, N) sorted; int32 order-preserving keys for float32 rows, the values otherwise
    positions: np.ndarray  # (p, N) int64: positions[i, k] is the column of the k-th smallest value of row i
    order_stat: Callable[[int], np.ndarray]  # k -> the k-th smallest value (0-based) of every row


def _float32_keys(v: np.ndarray) -> np.ndarray:
    """int32 keys with the order of the float32 values (an involution on the bit patterns)."""
    bits = v.view(np.int32)
    return bits ^ ((bits >> 31) & np.int32(0x7FFFFFFF))


def _key_values(keys: np.ndarray) -> np.ndarray:
    return _float32_keys(np.ascontiguousarray(keys, dtype=np.int32)).view(np.float32)


def _sort_rows(v: np.ndarray) -> _Ranked:
    """Sort every row of ``v`` (p, N), keeping where each value came from.

    float32 rows are sorted as packed 64-bit integer keys (order-preserving value
    bits << 32 | column): one ``np.sort``, 2-3x faster than ``np.argsort``;
    float64 rows use ``np.argsort``. ``-0.0`` is ranked equal to ``+0.0``, as scipy does.
    """
    n = v.shape[1]
    v = v + v.dtype.type(0)  # -0.0 -> +0.0
    if v.dtype == np.float32 and n < 2**31:
        packed = _float32_keys(v).astype(np.int64)
        packed <<= 32
        packed |= np.arange(n, dtype=np.int64)
        packed.sort(axis=1)
        positions = packed & np.int64(0xFFFFFFFF)
        packed >>= 32
        keys = packed.astype(np.int32)
        return _Ranked(keys, positions, lambda k: _key_values(keys[:, k]))
    positions = np.argsort(v, axis=1)
    keys = np.take_along_axis(v, positions, axis=1)
    return _Ranked(keys, positions, lambda k: keys[:, k])


def _twice_sorted_ranks(keys: np.ndarray) -> np.ndarray:
    """Twice the average (1-based) rank of every slot of rows already in ascending order (p, N), int32.

    Ties share their mean rank (``scipy.stats.rankdata(method="average")``); twice
    that is an integer: ``first + last + 2`` for a group of equal values in slots
    ``first..last`` (0-based), ``2 j + 2`` for an untied slot ``j``.
    """
    p, n = keys.shape
    pos = np.arange(n, dtype=np.int32)
    twice = np.broadcast_to(2 * pos + 2, (p, n))
    tie = keys[:, 1:] == keys[:, :-1]  # slot j + 1 holds the same value as slot j
    tied_pairs = np.flatnonzero(tie)
    if tied_pairs.size == 0:
        return twice
    rows, cols = np.divmod(tied_pairs, n - 1)
    twice = np.array(twice, order="C")
    if rows.size > p * n // 8:  # many ties (e.g. a Metropolis chain's repeats): whole-row passes
        tied = np.unique(rows)
        first = np.ones((tied.size, n), dtype=bool)
        first[:, 1:] = ~tie[tied]
        last = np.ones((tied.size, n), dtype=bool)
        last[:, :-1] = ~tie[tied]
        start = np.maximum.accumulate(np.where(first, pos, 0), axis=1)
        end = np.minimum.accumulate(np.where(last, pos, n - 1)[:, ::-1], axis=1)[:, ::-1]
        twice[tied] = start + end + 2
        return twice
    # Few ties (the usual case; the folded draws always tie at the median pair): only
    # the tied slots are rewritten. A run of consecutive tied pairs (j, j+1), (j+1, j+2),
    # ... is one group; in row-major flat indices runs of different rows never touch,
    # since a pair's column is at most n - 2.
    flat = rows.astype(np.int64) * n + cols
    begins = np.ones(flat.size, dtype=bool)
    begins[1:] = flat[1:] != flat[:-1] + 1
    group = np.cumsum(begins) - 1
    ends = np.ones(flat.size, dtype=bool)
    ends[:-1] = begins[1:]
    value = (cols[begins] + cols[ends] + 3).astype(np.int32)  # first + (last pair's column + 1) + 2
    out = twice.reshape(-1)
    out[flat] = value[group]
    out[flat + 1] = value[group]
    return twice


def _in_place(positions: np.ndarray, sorted_values: np.ndarray) -> np.ndarray:
    """``out[i, positions[i, k]] = sorted_values[i, k]``: back from sorted order to the rows' own order."""
    p, n = positions.shape
    flat = (positions + (np.arange(p, dtype=np.int64) * n)[:, None]).ravel()
    out = np.empty(p * n, dtype=sorted_values.dtype)
    out[flat] = np.asarray(sorted_values).ravel()
    return out.reshape(p, n)


def _sorted_order_stats(v: np.ndarray) -> Callable[[int], np.ndarray]:
    s = np.sort(v, axis=1)
    return lambda k: s[:, k]


def _twice_folded_ranks(ranked: _Ranked) -> np.ndarray:
    """Twice the average ranks of ``|x - median(x)|`` in place order, from the sorted rows.

    No second sort: with ``m`` the median of an even count ``N = 2h`` (the mean of
    the order statistics ``h - 1`` and ``h``, which lies between them), the folded
    values ``|x_(k) - m|`` are non-increasing for ``k < h`` and non-decreasing for
    ``k >= h`` (rounding is monotone), so the first half reversed followed by the
    second half is two ascending runs, which a stable sort (timsort) merges in one
    linear pass. The folded values are computed exactly as ``np.abs(x - m)``, in
    the draws' dtype (as ArviZ does).
    """
    n = ranked.keys.shape[1]
    h = n // 2
    lower, upper = ranked.order_stat(h - 1), ranked.order_stat(h)  # in the draws' dtype
    median = (lower + upper) / lower.dtype.type(2)  # as np.median
    values = _key_values(ranked.keys) if ranked.keys.dtype == np.int32 else ranked.keys
    folded = np.abs(values - median[:, None])
    runs = np.concatenate([folded[:, h - 1 :: -1], folded[:, h:]], axis=1)
    run_positions = np.concatenate([ranked.positions[:, h - 1 :: -1], ranked.positions[:, h:]], axis=1)
    if runs.dtype == np.float32 and n < 2**31:
        # folded values are >= +0, so their bits are in order; the column rides in the low bits
        # (within a run of tied values the columns may descend: the sort stays right, only slower)
        keys = runs.view(np.int32).astype(np.int64)
        keys <<= 32
        keys |= run_positions
        keys.sort(axis=1, kind="stable")
        positions = keys & np.int64(0xFFFFFFFF)
        keys >>= 32
    else:
        slot = np.argsort(runs, axis=1, kind="stable")
        keys = np.take_along_axis(runs, slot, axis=1)
        positions = np.take_along_axis(run_positions, slot, axis=1)
    return _in_place(positions, _twice_sorted_ranks(keys))


@functools.lru_cache(maxsize=32)
def _normal_scores(n: int) -> np.ndarray:
    """``Phi^-1((r - 3/8) / (n - 3/4 + 1))`` for r = k / 2, k = 0..2n (index = twice the rank); as ArviZ."""
    from scipy.special import ndtri  # scipy.stats.norm.ppf without importing scipy.stats (~1 s)

    r = np.arange(2 * n + 1, dtype=np.float64) / 2.0
    c = 3 / 8
    with np.errstate(all="ignore"):
        return ndtri((r - c) / (n - 2 * c + 1))


def _type7_threshold(order_stat: Callable[[int], np.ndarray], n: int, prob: float) -> np.ndarray:
    """A data value t with ``{x <= q} == {x <= t}`` for q the type-7 ``prob`` quantile (scipy's mquantiles)."""
    m = 1.0 - prob  # alphap = betap = 1
    aleph = n * prob + m
    k = math.floor(min(max(aleph, 1), n - 1))
    gamma = min(max(aleph - k, 0.0), 1.0)
    lo, hi = order_stat(k - 1), order_stat(k)
    q = (1.0 - gamma) * lo.astype(np.float64) + gamma * hi.astype(np.float64)
    return np.where(q >= hi, hi, lo)


# -- device side: R-hat, autocovariance, Geyer ---------------------------------------------------


def _rhat_core(z: jax.Array) -> jax.Array:
    """Classic R-hat of (p, chain, n) draws: sqrt((B/W + n - 1) / n); NaN for one chain or W = 0."""
    n = z.shape[-1]
    chain_mean = jnp.mean(z, axis=-1)
    chain_var = jnp.var(z, axis=-1, ddof=1)
    between = n * jnp.var(chain_mean, axis=-1, ddof=1) if z.shape[1] > 1 else jnp.full(z.shape[0], jnp.nan, z.dtype)
    within = jnp.mean(chain_var, axis=-1)
    return jnp.sqrt((between / within + n - 1) / n)


def _geyer_tau(rho: jax.Array) -> jax.Array:
    """Integrated autocorrelation time from rho (p, n), ArviZ's ``_ess`` loops in closed form.

    With pair sums ``P_0 = 1 + rho_1`` and ``P_m = rho_2m + rho_2m+1``: ArviZ's
    first loop runs ``J = min(Jmax, K)`` times, ``Jmax = (n - 3) // 2`` (its bound
    ``t < n - 3``) and ``K`` the first ``m`` with ``P_m <= 0``; the monotone loop
    replaces ``P_m`` by ``Q_m = min(P_0..P_m)`` for ``m < J``; the sum then adds
    ``rho_2J`` when ArviZ kept it (``P_J >= 0`` or ``rho_2J > 0``; 1 when J = 0):
    ``tau = -1 + 2 sum_{m<J} Q_m + R``.
    """
    n = rho.shape[1]
    jmax = max((n - 3) // 2, 0)
    npairs = jmax + 1
    even = rho[:, 0 : 2 * npairs : 2]
    odd = rho[:, 1 : 2 * npairs : 2]
    pair = (even + odd).at[:, 0].set(1.0 + rho[:, 1])
    m = jnp.arange(npairs)
    nonpos = pair <= 0
    k_first = jnp.where(nonpos.any(axis=1), jnp.argmax(nonpos, axis=1), npairs)
    j = jnp.minimum(jmax, k_first)
    q = jax.lax.cummin(pair, axis=1)
    head = jnp.sum(jnp.where(m[None, :] < j[:, None], q, 0.0), axis=1)
    rho_2j = jnp.take_along_axis(even, j[:, None], axis=1)[:, 0]
    pair_j = jnp.take_along_axis(pair, j[:, None], axis=1)[:, 0]
    tail = jnp.where(j == 0, 1.0, jnp.where((pair_j >= 0) | (rho_2j > 0), rho_2j, 0.0))
    return -1.0 + 2.0 * head + tail


def _ess_core(y: jax.Array) -> jax.Array:
    """ESS of (p, chain, n) series as ArviZ's ``_ess`` (FFT autocovariance padded to next_fast_len(2n))."""
    p, c, n = y.shape
    y = y.astype(jnp.result_type(y.dtype, jnp.float32))
    fft_len = _next_fast_len(2 * n)
    centred = y - jnp.mean(y, axis=-1, keepdims=True)
    spec = jnp.fft.rfft(centred, n=fft_len, axis=-1)
    power = jnp.sum(spec.real**2 + spec.imag**2, axis=1)  # summed over chains: one inverse FFT
    acov_mean = jnp.fft.irfft(power, n=fft_len, axis=-1)[:, :n] / (n * c)
    chain_mean = jnp.mean(y, axis=-1)
    mean_var = acov_mean[:, 0] * n / (n - 1.0)
    var_plus = mean_var * (n - 1.0) / n
    if c > 1:
        var_plus = var_plus + jnp.var(chain_mean, axis=-1, ddof=1)
    rho = 1.0 - (mean_var[:, None] - acov_mean) / var_plus[:, None]
    tau = _geyer_tau(rho)
    size = c * n
    tau = jnp.maximum(tau, 1.0 / math.log10(size))
    ess = size / tau
    ess = jnp.where(jnp.isnan(rho).any(axis=1), jnp.nan, ess)
    flat = y.reshape(p, -1)
    constant = (jnp.max(flat, axis=1) - jnp.min(flat, axis=1)) < _RESOLUTION
    return jnp.where(constant, float(size), ess)


def _next_fast_len(target: int) -> int:
    import scipy.fft

    return int(scipy.fft.next_fast_len(target))


@functools.partial(jax.jit, static_argnames=("want",))
def _device_chunk(table: jax.Array, inputs: dict[str, jax.Array], want: tuple[str, ...]) -> dict[str, jax.Array]:
    """One jitted program per chunk shape and group of wanted outputs (see ``_PROGRAMS``)."""
    dtype = table.dtype
    out = {}
    if "rhat_bulk" in want or "ess_bulk" in want:
        z = table[inputs["bulk_ranks"]]
        if "rhat_bulk" in want:
            out["rhat_bulk"] = _rhat_core(z)
        if "ess_bulk" in want:
            out["ess_bulk"] = _ess_core(z)
    if "rhat_folded" in want:
        out["rhat_folded"] = _rhat_core(table[inputs["fold_ranks"]])
    if "ess_tail" in want:
        lower = _ess_core(inputs["lower"].astype(dtype))
        upper = _ess_core(inputs["upper"].astype(dtype))
        out["ess_tail"] = jnp.minimum(lower, upper)
    if "rhat_split" in want:
        out["rhat_split"] = _rhat_core(inputs["split"].astype(dtype))
    if "ess_mean" in want:
        out["ess_mean"] = _ess_core(inputs["split"].astype(dtype))
    if "ess_sd" in want:
        out["ess_sd"] = _ess_core(inputs["split_sq"].astype(dtype))
    if "rhat_identity" in want:
        out["rhat_identity"] = _rhat_core(inputs["unsplit"].astype(dtype))
    return out


#: device output -> host input it needs
_NEEDS = {
    "rhat_bulk": "bulk_ranks",
    "ess_bulk": "bulk_ranks",
    "rhat_folded": "fold_ranks",
    "ess_tail": "lower",
    "rhat_split": "split",
    "ess_mean": "split",
    "ess_sd": "split_sq",
    "rhat_identity": "unsplit",
}
_RHATS = ("rhat_bulk", "rhat_folded", "rhat_split", "rhat_identity")
#: Outputs computed by one compiled program (those sharing an input). One program for
#: all of them ran about 2x slower than these programs one after the other (measured on
#: 256 x 4 x 1000 float32 chunks: R-hat + bulk + tail ESS 42 ms against 21 ms on one CPU).
_PROGRAMS = (
    ("rhat_bulk", "ess_bulk"),
    ("rhat_folded",),
    ("ess_tail",),
    ("rhat_split", "ess_mean"),
    ("ess_sd",),
    ("rhat_identity",),
)


def _dispatch(table: jax.Array, inputs: dict[str, np.ndarray], want: tuple[str, ...]) -> dict[str, jax.Array]:
    """Start the device programs of one chunk (asynchronously) and return their outputs."""
    out: dict[str, jax.Array] = {}
    for program in _PROGRAMS:
        wanted = tuple(name for name in program if name in want)
        if wanted:
            needed = {_NEEDS[name] for name in wanted}
            if "lower" in needed:
                needed.add("upper")
            out.update(_device_chunk(table, {k: jnp.asarray(inputs[k]) for k in sorted(needed)}, wanted))
    return out


def _host_chunk(v: np.ndarray, needs: set[str], prob: tuple[float, float]) -> dict[str, np.ndarray]:
    """Host inputs for one chunk ``v`` of shape (p, chain, draw)."""
    p, _, d = v.shape
    split = _split(v)
    shape = split.shape
    inputs: dict[str, np.ndarray] = {}
    order_stat = None
    if "bulk_ranks" in needs or "fold_ranks" in needs:
        ranked = _sort_rows(split.reshape(p, -1))
        order_stat = ranked.order_stat
        if "bulk_ranks" in needs:
            inputs["bulk_ranks"] = _in_place(ranked.positions, _twice_sorted_ranks(ranked.keys)).reshape(shape)
        if "fold_ranks" in needs:
            inputs["fold_ranks"] = _twice_folded_ranks(ranked).reshape(shape)
    if "lower" in needs:
        if order_stat is None or d % 2:
            order_stat = _sorted_order_stats(v.reshape(p, -1))
        # with an even draw count the split draws are the same multiset as all draws
        for key, q in zip(("lower", "upper"), prob):
            threshold = _type7_threshold(order_stat, v.shape[1] * d, q)
            inputs[key] = split <= threshold[:, None, None]
    if "split" in needs:
        inputs["split"] = split
    if "split_sq" in needs:
        mean = v.reshape(p, -1).mean(axis=1)
        inputs["split_sq"] = _split((v - mean[:, None, None]) ** 2)
    if "unsplit" in needs:
        inputs["unsplit"] = v
    return inputs


def _transpose_into(out: np.ndarray, block: np.ndarray, tile: int = 256) -> None:
    """``out[:p] = moveaxis(block, 2, 0)`` for ``block`` (chain, draw, p), in tiles of draws.

    A parameter's draws are strided in ``(chain, draw, param)`` arrays; NumPy's
    one-shot transposing copy of a chunk is cache-unfriendly (4.9-8.7 ms per
    256 x 4 x 1000 float32 chunk against 1.1-4.3 ms in tiles of 256 rows).
    """
    rows = block.reshape(-1, block.shape[2])  # (chain * draw, p): a view of the strided slice
    dest = out[: block.shape[2]].reshape(block.shape[2], -1)
    for j in range(0, rows.shape[0], tile):
        dest[:, j : j + tile] = rows[j : j + tile].T


def _compute(arr: np.ndarray, want: tuple[str, ...], chunk_size: int, dtype, prob) -> dict[str, np.ndarray]:
    """The requested outputs for one validated array (chain, draw, *param_shape), chunked over parameters."""
    c, d = arr.shape[:2]
    param_shape = arr.shape[2:]
    num = int(np.prod(param_shape, dtype=np.int64))
    flat = arr.reshape(c, d, num)
    compute_dtype = np.dtype(dtype) if dtype is not None else arr.dtype
    if compute_dtype not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {compute_dtype}")
    expanded = set()
    for w in want:
        expanded |= {"rhat_bulk", "rhat_folded"} if w == "rhat_rank" else {w}
    device_want = tuple(sorted(expanded))
    needs = {_NEEDS[w] for w in device_want}
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    num_chunks = max(1, -(-num // chunk_size))
    size = -(-num // num_chunks) if num else 0
    n_split = 2 * c * (d // 2)
    results: list[dict[str, jax.Array]] = []

    def prepare(start: int) -> dict[str, np.ndarray]:
        v = np.zeros((size, c, d), flat.dtype)  # one compiled shape for all chunks (the last one padded)
        _transpose_into(v, flat[:, :, start : start + size])
        return _host_chunk(v, needs, prob)

    starts = list(range(0, num, max(size, 1)))
    workers = max(1, min(_HOST_THREADS, len(starts)))
    # NumPy's sort releases the GIL: rank the next chunks on other threads (at most
    # ``workers`` chunks in flight, so memory stays bounded) while XLA runs this one.
    with jax.enable_x64(compute_dtype == np.float64), ThreadPoolExecutor(workers) as pool:
        table = jnp.asarray(_normal_scores(n_split), dtype=compute_dtype)
        pending = collections.deque(pool.submit(prepare, st) for st in starts[:workers])
        for i in range(len(starts)):
            inputs = pending.popleft().result()
            if i + workers < len(starts):
                pending.append(pool.submit(prepare, starts[i + workers]))
            results.append(_dispatch(table, inputs, device_want))
    merged = {
        name: (np.concatenate([np.asarray(r[name]) for r in results])[:num] if results else np.zeros(0)).astype(
            np.float64
        )
        for name in device_want
    }
    if c < 2:  # ArviZ: R-hat needs at least two chains
        for name in _RHATS:
            if name in merged:
                merged[name] = np.full(num, np.nan)
    if "rhat_rank" in want:
        bulk, folded = merged["rhat_bulk"], merged["rhat_folded"]
        # ArviZ's builtin max(bulk, folded): NaN when bulk is NaN, bulk when only folded is
        merged["rhat_rank"] = np.where(np.isnan(bulk) | ~(folded > bulk), bulk, folded)
    return {name: merged[name].reshape(param_shape) for name in want}


# -- public API ---------------------------------------------------------------------------------


def _leaves(draws: Any) -> tuple[list[np.ndarray], Any]:
    leaves, treedef = jax.tree.flatten(draws)
    if not leaves:
        raise ValueError("draws: empty pytree")
    names = [jax.tree_util.keystr(path) or "draws" for path, _ in jax.tree_util.tree_flatten_with_path(draws)[0]]
    return [_validate(leaf, name) for leaf, name in zip(leaves, names)], treedef


def _tail_prob(prob) -> tuple[float, float]:
    if prob is None:
        return (0.05, 0.95)
    if np.ndim(prob) == 0:
        prob = (float(prob), 1.0 - float(prob))
    lo, hi = (float(q) for q in prob)
    if not (0.0 < lo < 1.0 and 0.0 < hi < 1.0):
        raise ValueError(f"prob must lie in (0, 1), got {prob}")
    return lo, hi


def _map_leaves(draws, want, chunk_size, dtype, prob=None) -> tuple[list[dict[str, np.ndarray]], Any]:
    leaves, treedef = _leaves(draws)
    prob = _tail_prob(prob)
    return [_compute(leaf, want, chunk_size, dtype, prob) for leaf in leaves], treedef


def rhat(draws: Any, *, method: str = "rank", chunk_size: int = _DEFAULT_CHUNK, dtype=None) -> Any:
    """Split R-hat of every parameter, as ``az.rhat(method=method)``.

    Args:
        draws: array ``(chain, draw, *param_shape)`` or a pytree of such arrays.
        method: ``"rank"`` (default; Vehtari et al. 2021: the larger of the
            rank-normalised split R-hat of the draws and of the folded draws
            ``|x - median|``), ``"z_scale"`` (rank-normalised only),
            ``"folded"``, ``"split"`` (split chains, raw values) or
            ``"identity"`` (Gelman & Rubin 1992, unsplit raw values).
        chunk_size: parameters handled per chunk; two chunks are prepared at
            a time, so working memory is roughly ``200 * chain * draw * chunk_size``
            bytes (about 0.2 GB for 4 x 1000 draws and the default 256).
        dtype: float32 or float64 for the arithmetic; default that of the draws.

    Returns:
        float64 NumPy arrays of shape ``param_shape`` in the structure of ``draws``;
        NaN with one chain or for a constant parameter (as ArviZ).
    """
    if method not in _RHAT_METHODS:
        raise ValueError(f"R-hat method {method!r} not one of {_RHAT_METHODS}")
    name = {"rank": "rhat_rank", "z_scale": "rhat_bulk", "folded": "rhat_folded"}.get(method, f"rhat_{method}")
    out, treedef = _map_leaves(draws, (name,), chunk_size, dtype)
    return jax.tree.unflatten(treedef, [o[name] for o in out])


def ess(draws: Any, *, method: str = "bulk", prob=None, chunk_size: int = _DEFAULT_CHUNK, dtype=None) -> Any:
    """Effective sample size of every parameter, as ``az.ess(method=method)``.

    Args:
        draws: array ``(chain, draw, *param_shape)`` or a pytree of such arrays.
        method: ``"bulk"`` (rank-normalised split draws), ``"tail"`` (the smaller
            ESS of the indicators ``x <= q_prob`` for the two tail quantiles),
            ``"mean"`` (split raw draws) or ``"sd"`` (split squared deviations
            from the mean).
        prob: for ``"tail"``: a pair of probabilities, or ``p`` for
            ``(p, 1 - p)``; default ``(0.05, 0.95)``.
        chunk_size, dtype: as in :func:`rhat`.

    Returns:
        float64 NumPy arrays of shape ``param_shape`` in the structure of ``draws``.
    """
    if method not in _ESS_METHODS:
        raise ValueError(f"ESS method {method!r} not one of {_ESS_METHODS}")
    name = f"ess_{method}"
    out, treedef = _map_leaves(draws, (name,), chunk_size, dtype, prob)
    return jax.tree.unflatten(treedef, [o[name] for o in out])


class ConvergenceSummary(NamedTuple):
    """Per-parameter diagnostics (pytrees like the draws, leaves ``param_shape``) and worst cases.

    The aggregates ignore NaN (constant parameters, one chain); ``num_nan_rhat``
    says how many R-hats were NaN.
    """

    rhat: Any
    ess_bulk: Any
    ess_tail: Any
    num_parameters: int
    rhat_max: float
    ess_bulk_min: float
    ess_tail_min: float
    fraction_rhat_above_1_01: float
    num_nan_rhat: int
    ess_mean: Any = None
    ess_sd: Any = None

    def worst(self) -> dict[str, float]:
        """The aggregates as a JSON-ready dict."""
        return {
            "num_parameters": self.num_parameters,
            "rhat_max": self.rhat_max,
            "ess_bulk_min": self.ess_bulk_min,
            "ess_tail_min": self.ess_tail_min,
            "fraction_rhat_above_1.01": self.fraction_rhat_above_1_01,
            "num_nan_rhat": self.num_nan_rhat,
        }


def _nan_reduce(fn, values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(fn(finite)) if finite.size else float("nan")


def summary(
    draws: Any,
    *,
    mean_sd: bool = False,
    prob=None,
    chunk_size: int = _DEFAULT_CHUNK,
    dtype=None,
) -> ConvergenceSummary:
    """Rank R-hat, bulk and tail ESS of every parameter with their worst cases, in one pass.

    One sort of the split draws serves the bulk R-hat, the bulk ESS, the tail
    quantiles and (merged, not sorted again) the folded draws of the tail R-hat. ``mean_sd=True`` adds
    ``az.ess(method="mean")`` and ``"sd"`` (two more FFT autocovariances per
    parameter, about +50% time). Arguments as in :func:`rhat` and :func:`ess`.
    """
    want = ("rhat_rank", "ess_bulk", "ess_tail") + (("ess_mean", "ess_sd") if mean_sd else ())
    out, treedef = _map_leaves(draws, want, chunk_size, dtype, prob)

    def tree(name):
        return jax.tree.unflatten(treedef, [o[name] for o in out])

    def flat(name):
        return np.concatenate([o[name].ravel() for o in out])

    r = flat("rhat_rank")
    with np.errstate(invalid="ignore"):
        above = _nan_reduce(lambda a: np.mean(a > 1.01), r)
    return ConvergenceSummary(
        rhat=tree("rhat_rank"),
        ess_bulk=tree("ess_bulk"),
        ess_tail=tree("ess_tail"),
        num_parameters=int(r.size),
        rhat_max=_nan_reduce(np.max, r),
        ess_bulk_min=_nan_reduce(np.min, flat("ess_bulk")),
        ess_tail_min=_nan_reduce(np.min, flat("ess_tail")),
        fraction_rhat_above_1_01=above,
        num_nan_rhat=int(np.isnan(r).sum()),
        ess_mean=tree("ess_mean") if mean_sd else None,
        ess_sd=tree("ess_sd") if mean_sd else None,
    )


# -- function space -----------------------------------------------------------------------------


def predicted_class_log_probs(log_probs: Any) -> np.ndarray:
    """Per-draw log probability of each test point's posterior-predictive class.

    ``log_probs`` is ``(chain, draw, n_test, n_classes)``; the predicted class of a
    test point is the argmax of the mixture over all draws and chains, and the
    result ``(chain, draw, n_test)`` is each draw's log probability of it: a
    scalar per draw and test point whose R-hat / ESS says whether the chains
    agree on the predictions, which weight-space R-hat cannot (permutation and
    scaling symmetries make weights disagree between chains that predict alike).
    """
    lp = np.asarray(log_probs, dtype=np.float64)
    if lp.ndim != 4:
        raise ValueError(f"log_probs: expected shape (chain, draw, n_test, n_classes), got {lp.shape}")
    mixture = np.logaddexp.reduce(lp.reshape(-1, *lp.shape[2:]), axis=0)
    predicted = np.argmax(mixture, axis=-1)
    return np.take_along_axis(lp, predicted[None, None, :, None], axis=-1)[..., 0]


def function_space_summary(
    fn: Callable[[Any], Any] | None,
    samples: Any,
    *,
    batch_size: int = 256,
    mean_sd: bool = False,
    chunk_size: int = _DEFAULT_CHUNK,
    dtype=None,
) -> ConvergenceSummary:
    """R-hat and ESS of per-draw functions of the parameters (predictions), not of the weights.

    Args:
        fn: ``params -> pytree of arrays`` for one draw (e.g. the log probability
            of each test point's class, or any scalar of interest), or ``None`` when
            ``samples`` already holds the per-draw values ``(chain, draw, ...)``
            (e.g. the output of :func:`predicted_class_log_probs`).
        samples: pytree of draws with leading axes ``(chain, draw)``
            (``result.samples``).
        batch_size: draws evaluated per compiled call of ``fn`` (memory).
        mean_sd, chunk_size, dtype: as in :func:`summary`.
    """
    if fn is None:
        return summary(samples, mean_sd=mean_sd, chunk_size=chunk_size, dtype=dtype)
    leaves = jax.tree.leaves(samples)
    if not leaves or any(np.ndim(leaf) < 2 for leaf in leaves):
        raise ValueError("samples: expected a pytree of arrays with leading axes (chain, draw)")
    c, d = np.shape(leaves[0])[:2]
    flat = jax.tree.map(lambda a: jnp.reshape(jnp.asarray(a), (c * d, *np.shape(a)[2:])), samples)
    batched = jax.jit(jax.vmap(fn))
    parts = []
    for start in range(0, c * d, batch_size):
        batch = jax.tree.map(lambda a, s=start: a[s : s + batch_size], flat)
        parts.append(jax.tree.map(np.asarray, batched(batch)))
    values = jax.tree.map(lambda *xs: np.concatenate(xs).reshape(c, d, *xs[0].shape[1:]), *parts)
    return summary(values, mean_sd=mean_sd, chunk_size=chunk_size, dtype=dtype)
