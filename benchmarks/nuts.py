"""Exact samplers side by side in one process: NUTS and ChEES-HMC from NumPyro, BlackJAX and sgmcmc.

Targets (float32, position a flat vector):

* ``gaussian`` -- 100-d independent Gaussian, standard deviations log-spaced in [0.01, 1];
* ``funnel``   -- Neal's funnel in 10-d, centred: ``v ~ N(0, 3^2)``, ``x_i | v ~ N(0, exp(v))``
  (variance ``exp(v)``), i = 1..9. The true 1% quantile of ``v`` is ``3 * z_0.01 = -6.98``;
  exact samplers that do not reach the neck stall near -4;
* ``logistic`` -- Bayesian logistic regression on scikit-learn's breast-cancer data (569 x 30),
  features standardised, 30 weights + intercept (31 parameters), ``N(0, 1)`` prior on all.

Libraries, all with the same chains, warmup and draws, started from the same points (drawn
once per chain from uniform(-2, 2), like Stan, and passed to every library):

* ``numpyro``        -- ``numpyro.infer.MCMC(NUTS(potential_fn=...), chain_method="vectorized")``,
  defaults (target acceptance 0.8, diagonal mass matrix, max tree depth 10);
* ``blackjax_nuts``  -- ``blackjax.window_adaptation(blackjax.nuts, ...)`` then ``blackjax.nuts``,
  each phase one jitted, chain-vmapped ``lax.scan`` (as a careful user writes it);
* ``blackjax_chees`` -- ``blackjax.chees_adaptation`` hand-tuned: ``optax.adam(0.5, b1=0, b2=0.95)``,
  ``mass_matrix_estimation="diagonal"``, then ``blackjax.dynamic_hmc`` with the returned parameters
  (all chains share one jittered trajectory length per step, so they run in lockstep);
* ``sgmcmc_nuts`` / ``sgmcmc_chees`` -- ``sgmcmc.nuts(target)`` / ``sgmcmc.chees_hmc(target)`` through
  ``sgmcmc.sample`` (reported as "not available" when this sgmcmc has no such sampler);
* ``sgmcmc_chees_esjd`` -- ``sgmcmc.chees_hmc(target, criterion="esjd")``: the trajectory length tuned
  for expected squared jump distance (means) instead of ChEES (variances).

Context rows, run only when named in ``--libraries`` and left out of the ratios:
``blackjax_nuts_dense`` (BlackJAX's window adaptation with ``is_mass_matrix_diagonal=False``) and
``sgmcmc_chees_diag`` (``sgmcmc.chees_hmc(target, metric="diag")``), which show what the metric
contributes (sgmcmc's ChEES-HMC defaults to ``metric="auto"``, dense where the warmup draws call
for it; BlackJAX's ChEES has no dense metric).

Reported per target and library: min and median bulk ESS and min tail ESS over all coordinates
(ArviZ, ``method="bulk"`` / ``"tail"``), min-ESS per second of the sampling phase, min-ESS per 1000 gradient
evaluations of the sampling phase (per-chain counts: NumPyro ``num_steps``, BlackJAX
``info.num_integration_steps``, sgmcmc ``info.num_grad_evals``; the JSON also has the lockstep
count, the slowest chain of every draw times the number of chains, which is what a vmapped
sampler executes), compile time, warmup and sampling time, first-call wall time (building the
sampler + compile + warmup + sampling), second-call wall time with the same shapes, divergences
after warmup, max rank-normalised R-hat and, for the funnel, the 1% quantile of ``v``.

How compile time is separated from run time:

* BlackJAX: each phase is ``jax.jit(f).trace(...).lower().compile()`` (timed as compile), then the
  compiled executable is called and timed up to ``block_until_ready``. The executables are kept
  per argument signature, so the second call compiles nothing (what ``jax.jit``'s cache gives a
  user who keeps the jitted function).
* NumPyro: ``MCMC.warmup`` then ``MCMC.run`` (two timed phases). NumPyro traces and compiles
  inside both calls, so the compile share is measured with JAX's own monitoring events: the
  union of the time spans of ``jaxpr_trace``, ``jaxpr_to_mlir_module`` and ``backend_compile``
  events during the phase is the compile time, the rest of the phase's wall time is run time.
  The second call is ``MCMC.run`` again on the same object (warmup + sampling in one call, the
  post-warmup state reset) and recompiles, as every ``MCMC.run`` does.
* sgmcmc: its own ``result.timing`` (the driver compiles ahead of time and times phases apart);
  the second call is the same ``sgmcmc.sample`` call again (``num_compilations`` should be 0).

The same monitoring clock is also run around the BlackJAX and sgmcmc calls, as a cross-check
(``compile_monitor_s`` in the JSON).

    python benchmarks/nuts.py                                    # everything, 1000 warmup + 1000 draws
    python benchmarks/nuts.py --libraries numpyro blackjax_nuts blackjax_chees
    python benchmarks/nuts.py --quick --targets gaussian         # smoke run, 200 + 200
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import platform
import sys
import time
import traceback
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

RESULTS = pathlib.Path(__file__).with_name("results")
TARGET_NAMES = ("gaussian", "funnel", "logistic")
LIBRARY_NAMES = ("numpyro", "blackjax_nuts", "blackjax_chees", "sgmcmc_nuts", "sgmcmc_chees", "sgmcmc_chees_esjd")
# Context rows, only with --libraries (not in the default run or in the ratios): the metric's share
# of a result. BlackJAX's NUTS can be told to adapt a dense metric (its ChEES cannot); sgmcmc's
# ChEES-HMC with its metric held diagonal (its default, metric="auto", goes dense on the logistic
# regression).
EXTRA_LIBRARY_NAMES = ("blackjax_nuts_dense", "sgmcmc_chees_diag")
LABELS = {
    "numpyro": "NumPyro NUTS",
    "blackjax_nuts": "BlackJAX NUTS",
    "blackjax_chees": "BlackJAX ChEES (tuned)",
    "sgmcmc_nuts": "sgmcmc NUTS",
    "sgmcmc_chees": "sgmcmc ChEES-HMC",
    "sgmcmc_chees_esjd": "sgmcmc ChEES-HMC (ESJD)",
    "blackjax_nuts_dense": "BlackJAX NUTS (dense metric)",
    "sgmcmc_chees_diag": "sgmcmc ChEES-HMC (diagonal metric)",
}
FUNNEL_V_Q01 = 3.0 * -2.3263478740408408  # 3 * Phi^{-1}(0.01)
CHEES_LEARNING_RATE = 0.5
CHEES_INITIAL_STEP_SIZE = 0.1


# -- targets ---------------------------------------------------------------------------
class Spec:
    """A target: a log density over a flat float32 vector."""

    def __init__(self, name: str, dim: int, logdensity_fn, description: str):
        self.name = name
        self.dim = dim
        self.logdensity_fn = logdensity_fn
        self.description = description


def gaussian_target(dim: int = 100) -> Spec:
    scales = jnp.asarray(np.logspace(-2.0, 0.0, dim), jnp.float32)

    def logdensity_fn(x):
        return -0.5 * jnp.sum(jnp.square(x / scales))

    spec = Spec("gaussian", dim, logdensity_fn, f"{dim}-d Gaussian, sd log-spaced in [0.01, 1]")
    spec.scales = np.asarray(scales)
    return spec


def funnel_target(dim: int = 10) -> Spec:
    def logdensity_fn(z):
        v, x = z[0], z[1:]
        return -(v**2) / 18.0 - 0.5 * jnp.sum(x**2) * jnp.exp(-v) - 0.5 * (dim - 1) * v

    return Spec("funnel", dim, logdensity_fn, f"Neal's funnel, {dim}-d, centred")


def logistic_target() -> Spec:
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    x = np.asarray(data.data, np.float64)
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    x = jnp.asarray(np.concatenate([np.ones((x.shape[0], 1)), x], axis=1), jnp.float32)
    sign = jnp.asarray(2.0 * data.target - 1.0, jnp.float32)

    def logdensity_fn(w):
        return -0.5 * jnp.sum(w**2) + jnp.sum(jax.nn.log_sigmoid(sign * (x @ w)))

    return Spec("logistic", x.shape[1], logdensity_fn, f"logistic regression, breast cancer ({x.shape[0]} x 30 + 1)")


BUILDERS = {"gaussian": gaussian_target, "funnel": funnel_target, "logistic": logistic_target}


# -- timing ----------------------------------------------------------------------------
_COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
)


class CompileClock:
    """Wall time spent tracing, lowering and compiling, from JAX's monitoring events.

    Spans of nested events (a jit traced inside another's trace) overlap; their union is counted.
    """

    def __init__(self):
        self.spans: list[tuple[float, float]] = []
        jax.monitoring.register_event_time_span_listener(self._on_span)

    def _on_span(self, event, start_time, end_time, **kwargs):
        if event in _COMPILE_EVENTS:
            self.spans.append((start_time, end_time))

    @contextlib.contextmanager
    def measure(self):
        """Yields a dict; on exit ``["compile_s"]`` and ``["wall_s"]`` hold the figures of the block."""
        out = {}
        first = len(self.spans)
        start = time.perf_counter()
        try:
            yield out
        finally:
            out["wall_s"] = time.perf_counter() - start
            out["compile_s"] = _union_length(self.spans[first:])


def _union_length(spans) -> float:
    total, end = 0.0, -np.inf
    for a, b in sorted(spans):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


CLOCK: CompileClock | None = None


class AOTProgram:
    """``jax.jit(fn)`` compiled once per argument signature; compile and run timed apart."""

    def __init__(self, fn):
        self.jitted = jax.jit(fn)
        self.cache = {}

    def __call__(self, *args):
        leaves, treedef = jax.tree.flatten(args)
        key = (treedef, tuple(jax.typeof(x) for x in leaves))
        compile_s = 0.0
        if key not in self.cache:
            start = time.perf_counter()
            self.cache[key] = self.jitted.trace(*args).lower().compile()
            compile_s = time.perf_counter() - start
        start = time.perf_counter()
        out = jax.block_until_ready(self.cache[key](*args))
        return out, compile_s, time.perf_counter() - start


# -- libraries -------------------------------------------------------------------------
# Every runner returns a session: ``first()`` and ``second()`` each run warmup + sampling and
# return a dict with samples (chain, draw, dim), grads and divergent (chain, draw) and timings.


class NumPyroNUTS:
    def __init__(self, spec: Spec, init, seed: int, num_warmup: int, num_samples: int):
        from numpyro.infer import MCMC, NUTS

        self.init = jnp.asarray(init)
        self.seed = seed

        def potential_fn(x):
            return -spec.logdensity_fn(x)

        start = time.perf_counter()
        self.mcmc = MCMC(
            NUTS(potential_fn=potential_fn),
            num_warmup=num_warmup,
            num_samples=num_samples,
            num_chains=init.shape[0],
            chain_method="vectorized",
            progress_bar=False,
        )
        self.build_s = time.perf_counter() - start

    def _collect(self):
        samples = self.mcmc.get_samples(group_by_chain=True)
        extra = self.mcmc.get_extra_fields(group_by_chain=True)
        jax.block_until_ready((samples, extra))
        return samples, extra

    def first(self):
        key_warm, key_run = jax.random.split(jax.random.key(self.seed))
        with CLOCK.measure() as warm:
            self.mcmc.warmup(key_warm, init_params=self.init, extra_fields=("num_steps",), collect_warmup=True)
            _, warm_extra = self._collect()
            jax.block_until_ready(self.mcmc.post_warmup_state)
        with CLOCK.measure() as run:
            self.mcmc.run(key_run, init_params=self.init, extra_fields=("num_steps",))
            samples, extra = self._collect()
        return {
            "samples": np.asarray(samples),
            "grads": np.asarray(extra["num_steps"]),
            "divergent": np.asarray(extra["diverging"]),
            "warmup_grads": np.asarray(warm_extra["num_steps"]).sum(axis=1),
            "warmup_divergent": np.asarray(warm_extra["diverging"]).sum(axis=1),
            "compile_s": warm["compile_s"] + run["compile_s"],
            "warmup_s": warm["wall_s"] - warm["compile_s"],
            "sampling_s": run["wall_s"] - run["compile_s"],
            "first_call_s": self.build_s + warm["wall_s"] + run["wall_s"],
            "compile_how": "JAX monitoring spans inside MCMC.warmup / MCMC.run",
        }

    def second(self):
        # Calling warmup() twice on one vectorised MCMC object crashes; run() with the
        # post-warmup state reset does warmup + sampling in one call, as a user re-running does.
        self.mcmc.post_warmup_state = None
        with CLOCK.measure() as call:
            self.mcmc.run(jax.random.key(self.seed), init_params=self.init, extra_fields=("num_steps",))
            self._collect()
        return {"second_call_s": call["wall_s"], "second_call_compile_s": call["compile_s"]}


class BlackJAXNUTS:
    diagonal_metric = True

    def __init__(self, spec: Spec, init, seed: int, num_warmup: int, num_samples: int):
        import blackjax
        from blackjax.adaptation.base import get_filter_adapt_info_fn

        self.init = jnp.asarray(init)
        self.seed = seed
        logdensity_fn = spec.logdensity_fn
        start = time.perf_counter()
        warmup = blackjax.window_adaptation(
            blackjax.nuts,
            logdensity_fn,
            is_mass_matrix_diagonal=self.diagonal_metric,
            target_acceptance_rate=0.8,
            adaptation_info_fn=get_filter_adapt_info_fn(info_keys={"num_integration_steps", "is_divergent"}),
        )

        def warm_one(key, position):
            (state, params), info = warmup.run(key, position, num_steps=num_warmup)
            stats = (info.info.num_integration_steps, info.info.is_divergent)
            return state, params["step_size"], params["inverse_mass_matrix"], stats

        def sample_one(key, state, step_size, inverse_mass_matrix):
            step = blackjax.nuts(logdensity_fn, step_size, inverse_mass_matrix).step

            def body(state, key):
                state, info = step(key, state)
                return state, (state.position, info.num_integration_steps, info.is_divergent)

            _, out = lax.scan(body, state, jax.random.split(key, num_samples))
            return out

        self.warm = AOTProgram(jax.vmap(warm_one))
        self.sample = AOTProgram(jax.vmap(sample_one))
        self.build_s = time.perf_counter() - start

    def _call(self, seed):
        num_chains = self.init.shape[0]
        key_warm, key_run = jax.random.split(jax.random.key(seed))
        (states, step_sizes, imms, (w_steps, w_div)), c_warm, t_warm = self.warm(
            jax.random.split(key_warm, num_chains), self.init
        )
        (positions, steps, div), c_run, t_run = self.sample(
            jax.random.split(key_run, num_chains), states, step_sizes, imms
        )
        return {
            "samples": np.asarray(positions),
            "grads": np.asarray(steps),
            "divergent": np.asarray(div),
            "warmup_grads": np.asarray(w_steps).sum(axis=1),
            "warmup_divergent": np.asarray(w_div).sum(axis=1),
            "compile_s": c_warm + c_run,
            "warmup_s": t_warm,
            "sampling_s": t_run,
            "step_size": np.asarray(step_sizes).tolist(),
        }

    def first(self):
        with CLOCK.measure() as call:
            out = self._call(self.seed)
        out["first_call_s"] = self.build_s + call["wall_s"]
        out["compile_monitor_s"] = call["compile_s"]
        out["compile_how"] = "jit(...).trace().lower().compile() per phase, compiled call timed apart"
        return out

    def second(self):
        with CLOCK.measure() as call:
            self._call(self.seed)
        return {"second_call_s": call["wall_s"], "second_call_compile_s": call["compile_s"]}


class BlackJAXChEES:
    def __init__(self, spec: Spec, init, seed: int, num_warmup: int, num_samples: int):
        import blackjax
        import optax
        from blackjax.adaptation.base import get_filter_adapt_info_fn

        self.init = jnp.asarray(init)
        self.seed = seed
        num_chains = init.shape[0]
        logdensity_fn = spec.logdensity_fn
        start = time.perf_counter()
        warmup = blackjax.chees_adaptation(
            logdensity_fn,
            num_chains,
            mass_matrix_estimation="diagonal",
            adaptation_info_fn=get_filter_adapt_info_fn(info_keys={"num_integration_steps", "is_divergent"}),
        )
        # chees_adaptation returns Python callables (the Halton jitter of the trajectory
        # length) next to the tuned arrays; a jitted function can only return arrays, so the
        # callables are picked up while the warmup is traced (they close over no tracer).
        callables = {}

        def warm(key, positions):
            optim = optax.adam(CHEES_LEARNING_RATE, b1=0.0, b2=0.95)
            (states, params), info = warmup.run(
                key, positions, CHEES_INITIAL_STEP_SIZE, optim, num_warmup, max_sampling_steps=num_samples
            )
            callables.update({k: params[k] for k in ("next_random_arg_fn", "integration_steps_fn")})
            arrays = {k: params[k] for k in ("step_size", "inverse_mass_matrix", "integration_steps_params")}
            # info is a Python wrapper class (not a pytree): take the arrays out of it here.
            return states, arrays, (info.info.num_integration_steps, info.info.is_divergent)

        def sample(key, states, arrays):
            step = blackjax.dynamic_hmc(logdensity_fn, **arrays, **callables).step

            def body(states, key):
                states, info = jax.vmap(step)(jax.random.split(key, num_chains), states)
                return states, (states.position, info.num_integration_steps, info.is_divergent)

            _, out = lax.scan(body, states, jax.random.split(key, num_samples))
            return jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), out)  # (draw, chain) -> (chain, draw)

        self.warm = AOTProgram(warm)
        self.sample = AOTProgram(sample)
        self.build_s = time.perf_counter() - start

    def _call(self, seed):
        key_warm, key_run = jax.random.split(jax.random.key(seed))
        (states, arrays, (w_steps, w_div)), c_warm, t_warm = self.warm(key_warm, self.init)
        (positions, steps, div), c_run, t_run = self.sample(key_run, states, arrays)
        return {
            "samples": np.asarray(positions),
            "grads": np.asarray(steps),
            "divergent": np.asarray(div),
            "warmup_grads": np.asarray(w_steps).sum(axis=0),
            "warmup_divergent": np.asarray(w_div).sum(axis=0),
            "compile_s": c_warm + c_run,
            "warmup_s": t_warm,
            "sampling_s": t_run,
            "step_size": float(arrays["step_size"]),
            "mean_integration_steps": float(arrays["integration_steps_params"][0]),
        }

    first = BlackJAXNUTS.first
    second = BlackJAXNUTS.second


class SgmcmcRunner:
    factory_name = ""
    factory_kwargs: tuple = ()  # (name, value) pairs passed to the factory

    def __init__(self, spec: Spec, init, seed: int, num_warmup: int, num_samples: int):
        try:
            import sgmcmc
        except ImportError as err:
            raise NotAvailable(f"sgmcmc is not importable ({err}); install it or set PYTHONPATH=.") from err

        factory = getattr(sgmcmc, self.factory_name, None)
        if factory is None:
            raise NotAvailable(f"sgmcmc {sgmcmc.__version__} has no sgmcmc.{self.factory_name}")
        self.factory = factory
        self.sgmcmc = sgmcmc
        self.spec = spec
        self.init = np.asarray(init)
        self.seed = seed
        self.num_warmup = num_warmup
        self.num_samples = num_samples
        self.sampler = None

    def _call(self):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # divergences are counted, not warned about
            return self.sgmcmc.sample(
                self.sampler,
                num_samples=self.num_samples,
                num_warmup=self.num_warmup,
                num_chains=self.init.shape[0],
                seed=self.seed,
                progress=False,
                initial_position=self.init,
            )

    def first(self):
        with CLOCK.measure() as call:
            target = self.sgmcmc.Target.from_logdensity(self.spec.logdensity_fn, self.init[0], name=self.spec.name)
            self.sampler = self.factory(target, **dict(self.factory_kwargs))
            res = self._call()
        return {
            "samples": np.asarray(res.samples),
            "grads": np.asarray(res.info.num_grad_evals),
            "divergent": np.asarray(res.info.is_divergent),
            "warmup_grads": np.asarray(res.warmup_grad_evals),
            "warmup_divergent": np.asarray(res.warmup_divergences),
            "compile_s": res.timing["compile_s"],
            "warmup_s": res.timing["warmup_s"],
            "sampling_s": res.timing["sampling_s"],
            "first_call_s": call["wall_s"],
            "compile_monitor_s": call["compile_s"],
            "num_compilations": res.num_compilations,
            "compile_how": "sgmcmc result.timing (ahead-of-time compile in the driver)",
        }

    def second(self):
        with CLOCK.measure() as call:
            res = self._call()
        return {
            "second_call_s": call["wall_s"],
            "second_call_compile_s": call["compile_s"],
            "second_call_num_compilations": res.num_compilations,
        }


class SgmcmcNUTS(SgmcmcRunner):
    factory_name = "nuts"


class SgmcmcChEES(SgmcmcRunner):
    factory_name = "chees_hmc"


class SgmcmcChEESESJD(SgmcmcRunner):
    factory_name = "chees_hmc"
    factory_kwargs = (("criterion", "esjd"),)


class BlackJAXNUTSDense(BlackJAXNUTS):
    diagonal_metric = False


class SgmcmcChEESDiag(SgmcmcRunner):
    factory_name = "chees_hmc"
    factory_kwargs = (("metric", "diag"),)


class NotAvailable(Exception):
    pass


RUNNERS = {
    "numpyro": NumPyroNUTS,
    "blackjax_nuts": BlackJAXNUTS,
    "blackjax_chees": BlackJAXChEES,
    "sgmcmc_nuts": SgmcmcNUTS,
    "sgmcmc_chees": SgmcmcChEES,
    "sgmcmc_chees_esjd": SgmcmcChEESESJD,
    "blackjax_nuts_dense": BlackJAXNUTSDense,
    "sgmcmc_chees_diag": SgmcmcChEESDiag,
}


# -- diagnostics -----------------------------------------------------------------------
def diagnose(spec: Spec, out: dict) -> dict:
    import arviz as az

    samples = np.asarray(out["samples"], np.float64).reshape(*out["samples"].shape[:2], -1)
    posterior = {"x": samples}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ess = np.asarray(az.ess(posterior, method="bulk")["x"].values)
        tail = np.asarray(az.ess(posterior, method="tail")["x"].values)
        rhat = np.asarray(az.rhat(posterior)["x"].values)
    grads = np.asarray(out["grads"], np.float64)
    num_chains = grads.shape[0]
    min_ess = float(np.nanmin(ess))
    row = {
        "min_ess": min_ess,
        "median_ess": float(np.nanmedian(ess)),
        "min_tail_ess": float(np.nanmin(tail)),
        "argmin_ess": int(np.nanargmin(ess)),
        "ess_per_s": min_ess / out["sampling_s"],
        "ess_per_1k_grads": 1000.0 * min_ess / grads.sum(),
        "grads_per_draw": float(grads.mean()),
        # what a vmapped (lockstep) sampler executes: the slowest chain at every draw
        "lockstep_grads_per_draw": float(grads.max(axis=0).mean()),
        "ess_per_1k_lockstep_grads": 1000.0 * min_ess / (num_chains * grads.max(axis=0).sum()),
        "divergences": int(np.sum(out["divergent"])),
        "warmup_divergences": int(np.sum(out.get("warmup_divergent", 0))),
        "warmup_grads_per_chain": float(np.mean(out["warmup_grads"])) if out.get("warmup_grads") is not None else None,
        "max_rhat": float(np.nanmax(rhat)),
    }
    if spec.name == "funnel":
        row["v_q01"] = float(np.quantile(samples[..., 0], 0.01))
        row["v_q01_true"] = FUNNEL_V_Q01
    if spec.name == "gaussian":
        sd = samples.reshape(-1, samples.shape[-1]).std(axis=0)
        row["max_rel_sd_error"] = float(np.max(np.abs(sd / spec.scales - 1.0)))
    return row


# -- report ----------------------------------------------------------------------------
def _fmt(x, spec=".3g"):
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "n/a"
    return format(x, spec)


def _fmt_int(x):
    return "n/a" if x is None else f"{x:,.0f}"


def ratios(rows: dict) -> dict:
    def get(lib, key):
        r = rows.get(lib)
        return None if r is None or "error" in r else r.get(key)

    def div(a, b):
        return None if a is None or b is None or b == 0 else a / b

    nuts = [x for x in (get("numpyro", "ess_per_s"), get("blackjax_nuts", "ess_per_s")) if x is not None]
    best_nuts = max(nuts) if nuts else None
    ours = [get(lib, "ess_per_s") for lib in ("sgmcmc_nuts", "sgmcmc_chees", "sgmcmc_chees_esjd")]
    ours = [x for x in ours if x is not None]
    return {
        "sgmcmc_nuts_over_best_nuts": div(get("sgmcmc_nuts", "ess_per_s"), best_nuts),
        "sgmcmc_best_over_best_nuts": div(max(ours) if ours else None, best_nuts),
        "sgmcmc_chees_over_blackjax_chees": div(get("sgmcmc_chees", "ess_per_s"), get("blackjax_chees", "ess_per_s")),
        "sgmcmc_chees_esjd_over_blackjax_chees": div(
            get("sgmcmc_chees_esjd", "ess_per_s"), get("blackjax_chees", "ess_per_s")
        ),
        "sgmcmc_nuts_first_call_over_blackjax_nuts": div(
            get("sgmcmc_nuts", "first_call_s"), get("blackjax_nuts", "first_call_s")
        ),
        "blackjax_chees_over_best_nuts": div(get("blackjax_chees", "ess_per_s"), best_nuts),
        "numpyro_over_blackjax_nuts": div(get("numpyro", "ess_per_s"), get("blackjax_nuts", "ess_per_s")),
    }


def tables(results: dict) -> str:
    header = (
        "| target | sampler | min ESS | median ESS | min tail ESS | min-ESS/s | ESS/1k grads | grads/draw (lockstep) | "
        "compile s | warmup s | sampling s | 1st call s | 2nd call s (compile) | div | max R-hat | v q1% |"
    )
    lines = [header, "|" + "---|" * 16]
    for target, rows in results.items():
        for lib, r in rows.items():
            if "error" in r:
                lines.append(f"| {target} | {LABELS[lib]} | {r['error']} |" + " |" * 13)
                continue
            q = _fmt(r.get("v_q01"), ".2f") if target == "funnel" else ""
            lines.append(
                f"| {target} | {LABELS[lib]} | {_fmt_int(r['min_ess'])} | {_fmt_int(r['median_ess'])} | "
                f"{_fmt_int(r.get('min_tail_ess'))} | "
                f"**{_fmt_int(r['ess_per_s'])}** | {_fmt(r['ess_per_1k_grads'])} | "
                f"{r['grads_per_draw']:.1f} ({r['lockstep_grads_per_draw']:.1f}) | "
                f"{r['compile_s']:.2f} | {r['warmup_s']:.2f} | {r['sampling_s']:.2f} | {r['first_call_s']:.2f} | "
                f"{_fmt(r.get('second_call_s'), '.2f')} ({_fmt(r.get('second_call_compile_s'), '.2f')}) | "
                f"{r['divergences']} | {r['max_rhat']:.3f} | {q} |"
            )
    lines += [
        "",
        "| target | sgmcmc NUTS / best NUTS | sgmcmc best / best NUTS | sgmcmc ChEES / BlackJAX ChEES | "
        "sgmcmc ChEES (ESJD) / BlackJAX ChEES | "
        "sgmcmc NUTS 1st call / BlackJAX NUTS 1st call | BlackJAX ChEES / best NUTS | NumPyro / BlackJAX NUTS |",
        "|" + "---|" * 8,
    ]
    for target, rows in results.items():
        r = ratios(rows)
        lines.append(
            f"| {target} | {_fmt(r['sgmcmc_nuts_over_best_nuts'], '.2f')} | "
            f"{_fmt(r['sgmcmc_best_over_best_nuts'], '.2f')} | {_fmt(r['sgmcmc_chees_over_blackjax_chees'], '.2f')} | "
            f"{_fmt(r['sgmcmc_chees_esjd_over_blackjax_chees'], '.2f')} | "
            f"{_fmt(r['sgmcmc_nuts_first_call_over_blackjax_nuts'], '.2f')} | "
            f"{_fmt(r['blackjax_chees_over_best_nuts'], '.2f')} | {_fmt(r['numpyro_over_blackjax_nuts'], '.2f')} |"
        )
    return "\n".join(lines)


def _versions() -> dict:
    out = {"python": platform.python_version(), "jax": jax.__version__}
    for name in ("numpyro", "blackjax", "arviz", "optax", "sgmcmc"):
        try:
            out[name] = __import__(name).__version__
        except Exception:  # a missing optional library is reported, not fatal
            out[name] = None
    return out


def main(argv=None) -> dict:
    global CLOCK
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", nargs="+", choices=TARGET_NAMES, default=list(TARGET_NAMES))
    parser.add_argument(
        "--libraries", nargs="+", choices=LIBRARY_NAMES + EXTRA_LIBRARY_NAMES, default=list(LIBRARY_NAMES)
    )
    parser.add_argument("--num-warmup", type=int, default=1000)
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--num-chains", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="smoke run: 200 warmup + 200 draws")
    parser.add_argument("--no-second-call", action="store_true", help="skip the second (same shapes) call")
    parser.add_argument("--out", default=str(RESULTS / "nuts.json"))
    args = parser.parse_args(argv)
    if args.quick:
        args.num_warmup, args.num_samples = 200, 200
    if CLOCK is None:
        CLOCK = CompileClock()

    start_all = time.perf_counter()
    results: dict = {}
    for target_name in args.targets:
        spec = BUILDERS[target_name]()
        rng = np.random.default_rng(args.seed)
        init = rng.uniform(-2.0, 2.0, size=(args.num_chains, spec.dim)).astype(np.float32)
        results[target_name] = {}
        for lib in args.libraries:
            print(f"[{target_name}] {LABELS[lib]} ...", file=sys.stderr, flush=True)
            try:
                runner = RUNNERS[lib](spec, init, args.seed, args.num_warmup, args.num_samples)
                out = runner.first()
                if not args.no_second_call:
                    out.update(runner.second())
                row = diagnose(spec, out)
                row.update({k: v for k, v in out.items() if k not in ("samples", "grads", "divergent")})
                row = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in row.items()}
            except NotAvailable as err:
                row = {"error": "not available", "detail": str(err)}
            except Exception as err:  # one failing library must not sink the benchmark
                traceback.print_exc()
                row = {"error": f"failed: {type(err).__name__}", "detail": str(err)[:500]}
            results[target_name][lib] = row
            print(f"[{target_name}] {LABELS[lib]}: " + json.dumps(_brief(row)), file=sys.stderr, flush=True)
    total_s = time.perf_counter() - start_all

    table = tables(results)
    print(
        f"{args.num_chains} chains, {args.num_warmup} warmup + {args.num_samples} draws, float32, "
        f"JAX {jax.__version__} on {jax.default_backend()}, {os.cpu_count()} CPU cores; total {total_s:.0f} s"
    )
    print(table)

    command = " ".join(["python benchmarks/nuts.py", *(sys.argv[1:] if argv is None else argv)])
    out = {
        "benchmark": "nuts",
        "command": command,
        "settings": {
            "num_warmup": args.num_warmup,
            "num_samples": args.num_samples,
            "num_chains": args.num_chains,
            "seed": args.seed,
            "initial_positions": "uniform(-2, 2) per chain and coordinate, numpy default_rng(seed), shared",
            "chees": {
                "optimizer": f"optax.adam({CHEES_LEARNING_RATE}, b1=0.0, b2=0.95)",
                "initial_step_size": CHEES_INITIAL_STEP_SIZE,
                "mass_matrix_estimation": "diagonal",
            },
        },
        "targets": {name: BUILDERS[name]().description for name in args.targets},
        "results": results,
        "ratios": {name: ratios(rows) for name, rows in results.items()},
        "total_s": total_s,
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "backend": jax.default_backend(),
            **_versions(),
        },
        "table": table,
    }
    pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    return out


def _brief(row: dict) -> dict:
    keys = ("error", "min_ess", "ess_per_s", "ess_per_1k_grads", "compile_s", "sampling_s", "first_call_s")
    return {k: (round(row[k], 3) if isinstance(row[k], float) else row[k]) for k in keys if k in row}


if __name__ == "__main__":
    main()
