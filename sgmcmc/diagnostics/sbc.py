"""Simulation-based calibration (SBC) of a sampler, every replication in one compiled program.

Algorithm (Talts, Betancourt, Simpson, Vehtari & Gelman 2018, "Validating
Bayesian inference algorithms with simulation-based calibration",
arXiv:1804.06788): for ``r = 1..R`` draw ``theta_r`` from the prior, data
``y_r ~ p(y | theta_r)``, and ``L`` draws ``theta_r^(1..L)`` from the sampler
run on ``p(theta | y_r)``. Then ``theta_r`` is itself a draw from
``p(theta | y_r)``, so if the sampler is exact and its ``L`` draws are
independent, the rank of every coordinate of ``theta_r`` among the ``L``
draws is uniform on ``{0, ..., L}``.

The check: the ranks of each coordinate of the flattened position are binned
into ``num_bins`` bins and tested for uniformity with Pearson's chi-square
test (``num_bins - 1`` degrees of freedom), each at level ``alpha / P``
(Bonferroni over the ``P`` coordinates). The whole check therefore raises a
false alarm with probability at most ``alpha`` for an exact sampler whose
draws are independent (up to the chi-square approximation, which asks for at
least 5 expected ranks per bin; :func:`sbc` refuses fewer). Correlated draws
make the rank histogram over-dispersed and can fail an exact sampler: thin
until the draws are near independent. :attr:`SBCResult.autocorrelation`
reports the lag-1 autocorrelation of the thinned draws to check this.

Speed: the model's target is built once on template data; the sampler is
rebuilt over each replication's simulated data (a traced argument, through
``Sampler.rebuild``), and prior draw, simulation, warmup (the sampler's own
adaptation, per replication) and sampling of all replications run as one
``jit`` of ``lax.map`` (``batch_size`` replications vmapped at a time) over
``lax.scan`` loops, compiled once.

This is a test of a sampler, not an approximation: it is exact in the sense
that an exact sampler with independent draws passes with probability
``>= 1 - alpha``. Models: :mod:`sgmcmc.diagnostics.sbc_models`.
"""

from __future__ import annotations

import numbers
import time
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.flatten_util import ravel_pytree

from sgmcmc import noise
from sgmcmc._tree import PyTree, describe_tree, tree_leaf_names
from sgmcmc.samplers.base import Sampler
from sgmcmc.target import Target

__all__ = ["SBCModel", "SBCResult", "sbc", "rank_uniformity"]


class SBCModel(NamedTuple):
    """A generative model for SBC.

    Attributes:
        prior_sample: ``key -> position``: a prior draw, in the space the
            sampler moves in (the target's unconstrained position).
        simulate: ``(key, position) -> data``: a data set drawn from the
            likelihood at ``position`` (a pytree of arrays of fixed shapes).
        make_target: ``data -> Target`` for concrete data; the target must
            take its data as an argument (``Target.from_data`` or
            ``Target.from_numpyro``), since it is reused over traced data.
        name: a label for reports.
    """

    prior_sample: Callable[[jax.Array], PyTree]
    simulate: Callable[[jax.Array, PyTree], PyTree]
    make_target: Callable[[PyTree], Target]
    name: str = "model"


class SBCResult(NamedTuple):
    """What :func:`sbc` measured.

    Attributes:
        ranks: ``(num_replicates, P)`` int ranks in ``{0, ..., num_draws}``.
        p_values: ``(P,)`` chi-square p-values of each coordinate's ranks.
        passed: every p-value is above ``alpha / P``.
        alpha: the check's false-alarm rate (Bonferroni over coordinates).
        names: the ``P`` coordinate names (leaf name and flat index).
        num_draws: ``L``, thinned posterior draws per replication.
        num_bins: bins of the chi-square test.
        histogram: ``(P, num_bins)`` rank counts.
        autocorrelation: ``(P,)`` lag-1 autocorrelation of the thinned draws
            (mean over chains and replications); near 0 means near independent.
        acceptance_rate: mean ``info.acceptance_rate`` over sampling steps.
        divergences: divergent sampling steps, all replications and chains.
        seconds: wall time including compilation.
    """

    ranks: np.ndarray
    p_values: np.ndarray
    passed: bool
    alpha: float
    names: list
    num_draws: int
    num_bins: int
    histogram: np.ndarray
    autocorrelation: np.ndarray
    acceptance_rate: float
    divergences: int
    seconds: float

    def summary(self) -> str:
        worst = int(np.argmin(self.p_values))
        return (
            f"SBC {'PASS' if self.passed else 'FAIL'}: {len(self.ranks)} replications x {self.num_draws} draws, "
            f"min p = {self.p_values[worst]:.3g} ({self.names[worst]}) vs alpha/P = "
            f"{self.alpha / len(self.p_values):.3g}; max |lag-1 acf| = {np.max(np.abs(self.autocorrelation)):.2f}; "
            f"acceptance {self.acceptance_rate:.2f}; {self.divergences} divergences; {self.seconds:.1f} s"
        )


def _int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}.")
    if int(value) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}.")
    return int(value)


def _bin_sizes(num_draws: int, num_bins: int) -> np.ndarray:
    """How many of the ``num_draws + 1`` rank values fall in each bin (``rank * B // (L + 1)``)."""
    return np.bincount(np.arange(num_draws + 1) * num_bins // (num_draws + 1), minlength=num_bins)


def rank_uniformity(ranks: np.ndarray, num_draws: int, num_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Chi-square p-values of the uniformity of ``ranks`` (replications, P) on ``{0..num_draws}``.

    Rank ``k`` goes to bin ``k * num_bins // (num_draws + 1)``; the expected
    count of a bin is proportional to the rank values it holds. Returns
    ``(p_values (P,), histogram (P, num_bins))``.
    """
    from scipy import stats

    ranks = np.asarray(ranks)
    if ranks.ndim == 1:
        ranks = ranks[:, None]
    if ranks.min() < 0 or ranks.max() > num_draws:
        raise ValueError(f"ranks must lie in [0, {num_draws}], got [{ranks.min()}, {ranks.max()}].")
    bins = ranks * num_bins // (num_draws + 1)
    hist = np.stack([np.bincount(bins[:, j], minlength=num_bins) for j in range(ranks.shape[1])])
    expected = len(ranks) * _bin_sizes(num_draws, num_bins) / (num_draws + 1)
    chi2 = np.sum((hist - expected) ** 2 / expected, axis=1)
    return stats.chi2.sf(chi2, num_bins - 1), hist


def _check_model(model: SBCModel, key: jax.Array) -> tuple[Target, PyTree]:
    if not isinstance(model, SBCModel):
        raise TypeError(f"model must be an SBCModel(prior_sample, simulate, make_target), got {model!r}.")
    for name in ("prior_sample", "simulate", "make_target"):
        if not callable(getattr(model, name)):
            raise TypeError(f"model.{name} must be callable.")
    k_prior, k_sim = jax.random.split(key)
    theta = model.prior_sample(k_prior)
    data = model.simulate(k_sim, theta)
    target = model.make_target(jax.tree.map(np.asarray, data))
    if not isinstance(target, Target):
        raise TypeError(f"model.make_target must return an sgmcmc.Target, got {type(target).__name__}.")
    if target.data is None:
        raise ValueError(
            "model.make_target must return a target that takes its data as an argument (Target.from_data or "
            "Target.from_numpyro): SBC reruns it on each replication's simulated data."
        )
    ref = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), jnp.result_type(x)), target.initial_position)
    got = jax.eval_shape(model.prior_sample, k_prior)
    if jax.tree.structure(got) != jax.tree.structure(ref) or any(
        a.shape != b.shape for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(ref))
    ):
        raise ValueError(
            f"model.prior_sample must return a position shaped like the target's: got {describe_tree(got)}, "
            f"expected {describe_tree(ref)}."
        )
    return target, data


def _names(position: PyTree) -> list:
    names = []
    for name, leaf in zip(tree_leaf_names(position, root="x"), jax.tree.leaves(position)):
        size = int(np.size(leaf))
        names += [name] if np.ndim(leaf) == 0 else [f"{name}[{i}]" for i in range(size)]
    return names


_FAST_COMPILE = {"xla_backend_optimization_level": 0}


def _program(model, sampler, target, num_chains, draws_per_chain, thin, num_warmup, adapt, batch_size, fast_compile):
    """``keys (R,) -> (ranks, lag-1 acf, mean acceptance, divergences)``, one jitted program.

    Warmup and sampling are one ``lax.scan`` over all steps, as in the driver,
    so the transition is traced and compiled once: with an adaptation its
    ``prepare`` / ``update`` run under a ``lax.cond`` on the step index, and
    every ``thin``-th sampling step writes its position into a draw buffer.
    """
    adaptive = adapt and num_warmup > 0 and sampler.warmup is not None
    total = num_warmup + draws_per_chain * thin

    def one(key):
        k_prior, k_sim, k_init, k_run = jax.random.split(key, 4)
        theta = model.prior_sample(k_prior)
        data = model.simulate(k_sim, theta)
        bound = sampler.rebuild(target.with_data(data))
        # Chains start at independent prior draws (over-dispersed for the posterior).
        starts = jax.vmap(model.prior_sample)(jax.random.split(k_init, num_chains))
        states = jax.vmap(bound.init)(starts)
        chain_keys = jax.random.split(k_run, num_chains)
        if adaptive:
            w = bound.warmup
            states, adapt_state = w.init(states, num_warmup)
            transition = jax.vmap(w.transition)
        else:
            adapt_state = None

            def plain(key, state):
                new, info = bound.step(key, state)
                return new, info, None

            transition = jax.vmap(plain)
        flat0 = jax.vmap(lambda p: ravel_pytree(p)[0])(states.position)
        buffer = jnp.zeros((draws_per_chain, *flat0.shape), flat0.dtype)
        zero = jnp.zeros((), flat0.dtype)

        def body(carry, t):
            states, a, buffer, acc_sum, div_sum = carry
            keys = jax.vmap(noise.fold_in, in_axes=(0, None))(chain_keys, t)
            in_warmup = t < num_warmup
            if adaptive:
                states, a = lax.cond(in_warmup, lambda c: w.prepare(keys, *c, t), lambda c: c, (states, a))
            new, info, aux = transition(keys, states)
            if adaptive:
                new, a = lax.cond(
                    in_warmup, lambda c: w.update(keys, states, c[0], info, aux, c[1], t), lambda c: c, (new, a)
                )
                new = lax.cond(t + 1 == num_warmup, lambda s: w.finalize(s, a), lambda s: s, new)
            offset = t - num_warmup
            write = (~in_warmup) & (offset % thin == thin - 1)
            slot = jnp.clip(offset // thin, 0, draws_per_chain - 1)
            flat = jax.vmap(lambda p: ravel_pytree(p)[0])(new.position)
            buffer = buffer.at[slot].set(jnp.where(write, flat, buffer[slot]))
            acc_sum = acc_sum + jnp.where(in_warmup, zero, jnp.mean(info.acceptance_rate).astype(zero.dtype))
            div_sum = div_sum + jnp.where(in_warmup, 0, jnp.sum(info.is_divergent).astype(jnp.int32))
            return (new, a, buffer, acc_sum, div_sum), None

        carry = (states, adapt_state, buffer, zero, jnp.zeros((), jnp.int32))
        (_, _, draws, acc_sum, div_sum), _ = lax.scan(body, carry, jnp.arange(total))  # draws (D, C, P)
        truth = ravel_pytree(theta)[0]
        ranks = jnp.sum(draws < truth, axis=(0, 1)).astype(jnp.int32)
        centred = draws - jnp.mean(draws, axis=0)
        num = jnp.sum(centred[1:] * centred[:-1], axis=0)
        den = jnp.sum(centred**2, axis=0)
        acf = jnp.mean(jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), 1.0), axis=0)
        return ranks, acf, acc_sum / (total - num_warmup), div_sum

    def run(keys):
        if batch_size >= keys.shape[0]:
            return jax.vmap(one)(keys)
        return lax.map(one, keys, batch_size=batch_size)

    # The program is compile-bound (sampling 1000 replications takes well under
    # a second): XLA's backend optimisation level 0 halved its compile time
    # (15 s -> 7 s for MALA) for twice the (tiny) run time.
    return jax.jit(run, compiler_options=_FAST_COMPILE if fast_compile else None)


def sbc(
    model: SBCModel,
    build_sampler: Callable[[Target], Sampler],
    *,
    num_replicates: int = 100,
    num_draws: int = 99,
    num_chains: int = 1,
    thin: int = 1,
    num_warmup: int = 200,
    adapt: bool = True,
    num_bins: int = 10,
    alpha: float = 0.01,
    seed: int = 0,
    batch_size: int | None = None,
    fast_compile: bool = True,
) -> SBCResult:
    """Simulation-based calibration of ``build_sampler`` on ``model`` (module docstring).

    Args:
        model: an :class:`SBCModel` (see :mod:`sgmcmc.diagnostics.sbc_models`).
        build_sampler: ``target -> Sampler``, e.g. ``lambda t: sgmcmc.hmc(t, 0.2, 10)``;
            called once, on the template target (the sampler is then rebuilt
            over every replication's data).
        num_replicates: ``R``, prior draws / simulated data sets.
        num_draws: ``L``, posterior draws per replication, pooled over
            ``num_chains`` chains (a multiple of it); ranks lie in ``{0..L}``.
        num_chains: chains per replication, each started at its own prior draw.
        thin: steps per kept draw (raise it until ``autocorrelation`` is near 0).
        num_warmup: steps before the first kept draw; with ``adapt`` and a
            sampler with a warmup adaptation, the sampler's own adaptation
            runs in them (per replication), else they are burn-in.
        num_bins: bins of the chi-square test; ``R / num_bins`` expected per
            bin must be at least 5.
        alpha: false-alarm rate of the whole check (Bonferroni over the coordinates).
        seed: an integer; same seed, same ranks.
        batch_size: replications vmapped together (``lax.map`` runs the
            batches in sequence); default all of them. Smaller batches help
            NUTS, whose vmapped trajectories wait for the longest one.
        fast_compile: compile with XLA's backend optimisation off (the
            program is compile-bound); the ranks can differ in the last bits
            from an optimised build, and so can accept decisions downstream.

    Returns:
        An :class:`SBCResult`.
    """
    num_replicates = _int(num_replicates, "num_replicates", 2)
    num_draws = _int(num_draws, "num_draws", 1)
    num_chains = _int(num_chains, "num_chains", 1)
    thin = _int(thin, "thin", 1)
    num_warmup = _int(num_warmup, "num_warmup", 0)
    num_bins = _int(num_bins, "num_bins", 2)
    seed = _int(seed, "seed", 0)
    batch_size = num_replicates if batch_size is None else _int(batch_size, "batch_size", 1)
    if num_draws % num_chains:
        raise ValueError(f"num_draws ({num_draws}) must be a multiple of num_chains ({num_chains}).")
    if num_bins > num_draws + 1:
        raise ValueError(f"num_bins ({num_bins}) must be at most num_draws + 1 ({num_draws + 1}).")
    smallest = num_replicates * _bin_sizes(num_draws, num_bins).min() / (num_draws + 1)
    if smallest < 5:
        raise ValueError(
            f"num_replicates={num_replicates} gives {smallest:.1f} expected ranks in the smallest of num_bins="
            f"{num_bins} bins; the chi-square test needs at least 5: raise num_replicates or lower num_bins."
        )
    if not 0 < float(alpha) < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}.")
    if not isinstance(adapt, bool):
        raise TypeError(f"adapt must be True or False, got {adapt!r}.")
    if not callable(build_sampler):
        raise TypeError("build_sampler must be a function target -> Sampler, e.g. lambda t: sgmcmc.hmc(t).")

    start = time.perf_counter()
    key = jax.random.key(seed)
    target, _ = _check_model(model, jax.random.fold_in(key, 0x5BC))
    sampler = build_sampler(target)
    if not isinstance(sampler, Sampler):
        raise TypeError(f"build_sampler must return an sgmcmc Sampler, got {type(sampler).__name__}.")
    if sampler.rebuild is None or sampler.target is not target:
        raise ValueError("build_sampler must build the sampler from the target it is given (with a rebuild).")
    if not isinstance(fast_compile, bool):
        raise TypeError(f"fast_compile must be True or False, got {fast_compile!r}.")
    draws_per_chain = num_draws // num_chains
    run = _program(
        model, sampler, target, num_chains, draws_per_chain, thin, num_warmup, adapt, batch_size, fast_compile
    )
    ranks, acf, acc, div = jax.device_get(run(jax.random.split(key, num_replicates)))
    p_values, hist = rank_uniformity(ranks, num_draws, num_bins)
    num_params = ranks.shape[1]
    alpha = float(alpha)
    return SBCResult(
        ranks=np.asarray(ranks),
        p_values=p_values,
        passed=bool(np.all(p_values > alpha / num_params)),
        alpha=alpha,
        names=_names(target.initial_position),
        num_draws=num_draws,
        num_bins=num_bins,
        histogram=hist,
        autocorrelation=np.mean(acf, axis=0),
        acceptance_rate=float(np.mean(acc)),
        divergences=int(np.sum(div)),
        seconds=time.perf_counter() - start,
    )
