"""Learned Metropolis proposals (L2HMC, A-NICE-MC) against tuned HMC and NUTS: ESS per gradient evaluation.

Targets (Levy, Hoffman & Sohl-Dickstein 2018, "L2HMC", section 5; Song, Zhao &
Ermon 2017, "A-NICE-MC", section 5):

* **icg50**: 50-d Gaussian, independent, variances log-spaced 1e-2 .. 1e2;
* **scg**: 2-d Gaussian, variances 1e2 and 1e-2 rotated by pi/4;
* **rough_well**: ``U(x) = |x|^2 / 2 + eta sum cos(x_i / eta)``, eta = 1e-2, 2-d;
* **mog**: two N(+-(2, 0), 0.1 I) (centres 4 apart), equal weights, 2-d;
* **blr**: Bayesian logistic regression on scikit-learn's breast cancer data
  (569 x 30, standardised, plus an intercept: 31-d), prior N(0, I).

Methods: ``hmc`` (our HMC, L leapfrog steps, step size and diagonal mass
matrix tuned by Stan's windowed warmup), ``hmc_unit`` (the papers' baseline:
identity mass matrix, step size tuned), ``nuts`` (same warmup), ``l2hmc``
(L learned leapfrog steps, trained by :func:`sgmcmc.learned.train` as in the
paper's code, starting from ``hmc_unit``'s adapted step size and burnt-in
chains, then frozen; see :func:`build_l2hmc`), ``a_nice_mc`` (NICE proposal alone, ESJD-trained; one target
evaluation per step) and ``a_nice_mc_adv`` (adversarially trained with an HMC
bootstrap; full mode only). Every method runs 4 chains: HMC and NUTS from
the target's initial position through their warmup, the learned samplers
from four of the training batch's final states (a learned proposal may work
only where it was trained: on the logistic regression, A-NICE-MC chains
started at 0 never accepted a move) through a burn-in. ESS is ArviZ's
multi-chain bulk ESS, the minimum over coordinates, and 0 when a chain never
moved (ArviZ would report the number of draws).

Columns: the costs of training (learned kernels), warmup/burn-in and
sampling in target gradient evaluations (a density-only evaluation counts as
one) and seconds, the minimum ESS, ESS per gradient evaluation of the
sampling phase ("w/o training") and of everything ("with training": training
+ warmup + sampling), and ``x HMC``: ESS per MH step against our tuned HMC
with the same L (equal cost per step; the published L2HMC figures use this
ratio, against HMC of equal length: x4.4 ICG, x49.5 SCG, x5.4 rough well).

    python benchmarks/learned.py            # writes benchmarks/results/learned.json
    python benchmarks/learned.py --quick    # a short smoke run (results/learned_quick.json)
    python benchmarks/learned.py --targets scg,rough_well --methods l2hmc   # replaces those rows only
"""

from __future__ import annotations

import argparse
import functools
import json
import pathlib
import platform
import time
import warnings

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

import sgmcmc
from sgmcmc.adaptation.window import window_adaptation
from sgmcmc.learned import a_nice_mc_kernel, cost_ledger, l2hmc_kernel, train
from sgmcmc.samplers.step_size_search import find_reasonable_step_size

RESULTS = pathlib.Path(__file__).parent / "results"
PUBLISHED = {"icg50": 4.4, "scg": 49.5, "rough_well": 5.4}


def targets() -> dict:
    """name -> (Target, settings for the learned kernels)."""
    out = {}
    var = jnp.asarray(np.logspace(-2, 2, 50), jnp.float32)
    out["icg50"] = (
        sgmcmc.Target.from_logdensity(lambda x: -0.5 * jnp.sum(x**2 / var), jnp.zeros(50), name="icg50"),
        {"length_scale": 3.0, "step_size": 0.05, "init_scale": 1.0},
    )
    c, s = np.cos(np.pi / 4), np.sin(np.pi / 4)
    rot = np.array([[c, -s], [s, c]])
    prec = jnp.asarray(np.linalg.inv(rot @ np.diag([1e2, 1e-2]) @ rot.T), jnp.float32)
    out["scg"] = (
        sgmcmc.Target.from_logdensity(lambda x: -0.5 * x @ prec @ x, jnp.zeros(2), name="scg"),
        {"length_scale": 1.0, "step_size": 0.05, "init_scale": 1.0},
    )
    eta = 1e-2
    out["rough_well"] = (
        sgmcmc.Target.from_logdensity(
            lambda x: -(0.5 * jnp.sum(x**2) + eta * jnp.sum(jnp.cos(x / eta))), jnp.zeros(2), name="rough_well"
        ),
        {"length_scale": 1.0, "step_size": 0.1, "init_scale": 1.0},
    )
    centres = jnp.asarray([[2.0, 0.0], [-2.0, 0.0]], jnp.float32)
    out["mog"] = (
        sgmcmc.Target.from_logdensity(
            lambda x: jax.scipy.special.logsumexp(-0.5 * jnp.sum((x - centres) ** 2, -1) / 0.1),
            jnp.zeros(2),
            name="mog",
        ),
        {"length_scale": 2.0, "step_size": 0.1, "init_scale": 2.0},
    )
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True)
    x = (x - x.mean(0)) / x.std(0)
    x = np.concatenate([x, np.ones((x.shape[0], 1))], 1).astype(np.float32)

    def logprior(w):
        return -0.5 * jnp.sum(w**2)

    def loglik(w, batch):
        logits = batch["x"] @ w
        return batch["y"] * logits - jax.nn.softplus(logits)

    out["blr"] = (
        sgmcmc.Target.from_data(
            logprior, loglik, {"x": x, "y": y.astype(np.float32)}, jnp.zeros(x.shape[1]), name="blr"
        ),
        {"length_scale": 0.3, "step_size": 0.02, "init_scale": 0.3, "init_noise": 0.01},
    )
    return out


def min_ess(draws: np.ndarray) -> float:
    """Minimum bulk ESS over coordinates; 0 when a chain never moved (ArviZ would report the draw count)."""
    draws = np.asarray(draws, np.float64)
    if np.any(np.ptp(draws, axis=1) == 0):
        return 0.0
    return min(float(az.ess(draws[..., i], method="bulk")) for i in range(draws.shape[-1]))


def max_rhat(draws: np.ndarray) -> float:
    draws = np.asarray(draws, np.float64)
    return max(float(az.rhat(draws[..., i])) for i in range(draws.shape[-1]))


def build(target, method: str, settings: dict, args):
    """``(sampler, training report or None, num_warmup)`` for one method on one target."""
    loc = np.asarray(ravel_pytree(target.initial_position)[0])
    dim = loc.size
    if method == "hmc":
        return sgmcmc.hmc(target, step_size=0.1, num_integration_steps=args.L), None, args.warmup
    if method == "hmc_unit":  # the papers' baseline: identity mass matrix, only the step size tuned
        sampler = sgmcmc.hmc(target, step_size=0.1, num_integration_steps=args.L)
        search = functools.partial(find_reasonable_step_size, target=target)
        warmup = window_adaptation(sampler.step, search, target_accept=0.8, adapt_mass_matrix=False)
        # rebuild=None: the driver keeps this sampler (and its warmup) instead of rebuilding it over traced data
        return sampler._replace(warmup=warmup, rebuild=None), None, args.warmup
    if method == "nuts":
        return sgmcmc.nuts(target), None, args.warmup
    common = dict(length_scale=settings["length_scale"], init_scale=settings["init_scale"], init_loc=loc)
    if method == "l2hmc":
        return build_l2hmc(target, loc, settings, args)
    if method == "a_nice_mc":
        kernel = a_nice_mc_kernel(
            dim, hidden=(args.nice_hidden,) * 2, init_noise=settings.get("init_noise", 0.1), **common
        )
    elif method == "a_nice_mc_adv":
        kernel = a_nice_mc_kernel(
            dim,
            hidden=(args.nice_hidden,) * 2,
            mode="adversarial",
            init_noise=settings.get("init_noise", 0.1),
            bootstrap="hmc",
            hmc_step_size=settings["step_size"],
            hmc_steps=args.L,
            **common,
        )
    else:
        raise ValueError(f"unknown method {method!r}")
    trained = train(
        kernel,
        target,
        args.seed,
        args.train_steps,
        num_chains=args.train_chains,
        learning_rate=args.lr,
        init_scale=settings["init_scale"],
        chunk_size=100,
        progress=False,
    )
    return kernel.sampler(target, trained.params), trained.report, args.burn_in


def l2hmc_optimizer(learning_rate: float, clip: float | None):
    """Adam with the paper's schedule (rate decayed x0.96 every 1000 steps), after global-norm clipping if ``clip``."""
    adam = optax.adam(optax.exponential_decay(learning_rate, 1000, 0.96, staircase=True))
    return adam if clip is None else optax.chain(optax.zero_nans(), optax.clip_by_global_norm(clip), adam)


def build_l2hmc(target, loc: np.ndarray, settings: dict, args):
    """L2HMC trained from where the unit-mass HMC baseline's warmup ends (the rest as the paper's code).

    With its networks' output layers at zero the kernel *is* HMC with step
    size eps (same ESS per step, checked), so training starts from the HMC
    baseline: the training batch (``l2hmc_chains`` chains from ``loc +
    init_scale * N(0, I)``) first runs the baseline's warmup (Stan's step-size
    adaptation to 80% acceptance, identity mass matrix), then eps starts at the
    median adapted step size and the chains at their burnt-in states. The
    warmup's gradient evaluations and seconds are added to the training cost.
    """
    dim = loc.size
    z = np.random.default_rng(args.seed + 2).standard_normal((args.l2hmc_chains, dim)).astype(np.float32)
    _, unravel = ravel_pytree(target.initial_position)
    start = jax.vmap(unravel)(jnp.asarray(loc + settings["init_scale"] * z))
    baseline, _, _ = build(target, "hmc_unit", settings, args)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        warm = sgmcmc.sample(
            baseline,
            num_samples=1,
            num_warmup=args.warmup,
            num_chains=args.l2hmc_chains,
            seed=args.seed + 2,
            progress=False,
            initial_position=start,
        )
    warm_s = time.perf_counter() - t0
    step_size = float(np.median(np.asarray(warm.info.step_size)[:, -1]))
    positions = np.asarray(jax.vmap(lambda p: ravel_pytree(p)[0])(jax.tree.map(lambda a: a[:, -1], warm.position)))
    kernel = l2hmc_kernel(
        dim,
        num_leapfrog_steps=args.L,
        step_size=step_size,
        hidden=(args.hidden,) * 2,
        length_scale=settings["length_scale"],
        init_scale=settings["init_scale"],
        init_loc=loc,
    )
    trained = train(
        kernel,
        target,
        args.seed,
        args.l2hmc_steps,
        num_chains=args.l2hmc_chains,
        optimizer=l2hmc_optimizer(args.l2hmc_lr, args.l2hmc_clip),
        initial_positions=positions,
        chunk_size=100,
        patience=args.l2hmc_steps,  # never stops early: returns the parameters of the best chunk (mean loss)
        progress=False,
    )
    report = trained.report._replace(
        num_grad_evals=trained.report.num_grad_evals + int(np.sum(warm.num_grad_evals)),
        wall_s=trained.report.wall_s + warm_s,
    )
    return kernel.sampler(target, trained.params), report, args.burn_in, step_size


def run(target, name: str, method: str, settings: dict, args) -> dict:
    t0 = time.perf_counter()
    sampler, report, num_warmup, *initial_eps = build(target, method, settings, args)
    start = None  # HMC / NUTS: the target's initial position, then warmup
    if report is not None:  # learned kernels: 4 of the training batch's final states, then burn-in
        _, unravel = ravel_pytree(target.initial_position)
        start = jax.vmap(unravel)(jnp.asarray(report.final_positions[:4]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = sgmcmc.sample(
            sampler,
            num_samples=args.samples,
            num_warmup=num_warmup,
            num_chains=4,
            seed=args.seed + 1,
            progress=False,
            initial_position=start,
        )
    wall = time.perf_counter() - t0
    draws = np.asarray(result.position)
    ess = min_ess(draws)
    ledger = cost_ledger(report, result, ess)
    row = {
        "target": name,
        "method": method,
        "wall_s": wall,
        "acceptance": float(np.mean(result.info.acceptance_rate)),
        "divergences": int(np.sum(result.info.is_divergent)),
        "max_rhat": max_rhat(draws),
        "mean_abs_error_of_means": None,
        **ledger,
    }
    if initial_eps:
        row["initial_step_size"] = initial_eps[0]
        row["learned_step_size"] = float(np.asarray(result.info.step_size).ravel()[0])
        row["best_train_step"] = int(report.best_step)
    if report is not None:
        row["final_train_acceptance"] = float(np.nanmean(report.acceptance[-50:]))
        row["final_train_esjd"] = float(np.nanmean(report.esjd[-50:]))
    if name in ("icg50", "scg", "rough_well"):  # zero-mean targets: a check that nothing is biased
        row["mean_abs_error_of_means"] = float(np.max(np.abs(draws.mean((0, 1)))))
    return row


def _ratio(row, ref) -> str:
    """ESS per MH step against HMC of the same L (L2HMC, HMC: equal grads per step), else ESS per gradient."""
    if ref is None:
        return ""
    if row["method"] in ("hmc", "hmc_unit", "l2hmc"):
        steps, ref_steps = row["sampling"]["grad_evals"], ref["sampling"]["grad_evals"]
        return f"{(row['ess'] / steps) / max(ref['ess'] / ref_steps, 1e-12):.2f}x"
    return f"{row['ess_per_grad_sampling'] / max(ref['ess_per_grad_sampling'], 1e-12):.2f}x/grad"


def table(rows: list[dict]) -> str:
    unit = {r["target"]: r for r in rows if r["method"] == "hmc_unit"}
    diag = {r["target"]: r for r in rows if r["method"] == "hmc"}
    lines = [
        "| target | method | train grads | train s | warmup grads | sample grads | min ESS | "
        "max R-hat | ESS/1k grads w/o training | ESS/1k grads with training | vs HMC unit mass | vs HMC adapted | "
        "published L2HMC |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        published = f"x{PUBLISHED[r['target']]}" if r["method"] == "l2hmc" and r["target"] in PUBLISHED else ""
        lines.append(
            f"| {r['target']} | {r['method']} | {r['training']['grad_evals']:,} | {r['training']['seconds']:.0f} | "
            f"{r['warmup']['grad_evals']:,} | {r['sampling']['grad_evals']:,} | {r['ess']:.0f} | "
            f"{r['max_rhat']:.2f} | "
            f"{1000 * r['ess_per_grad_sampling']:.3g} | {1000 * r['ess_per_grad_total']:.3g} | "
            f"{_ratio(r, unit.get(r['target']))} | {_ratio(r, diag.get(r['target']))} | {published} |"
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run")
    parser.add_argument("--targets", default="icg50,scg,rough_well,mog,blr")
    parser.add_argument("--methods", default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    quick = args.quick
    args.L = 10
    args.samples = 500 if quick else 2000
    args.warmup = 300 if quick else 1000
    args.burn_in = 100 if quick else 500
    args.train_steps = 200 if quick else 2000
    args.train_chains = 32 if quick else 64
    args.lr = 3e-3  # A-NICE-MC
    # L2HMC: Adam at 3e-3 decayed x0.96 / 1000 steps (the paper's schedule) after global-norm clipping at 10, 2000
    # steps on 64 chains. The paper's own budget (5000 steps, 200 chains, 1e-3, no clipping) did worse here: SCG
    # min ESS 86 unclipped, 274 clipped, against 419 with these settings (the gradients are heavy-tailed).
    args.l2hmc_steps = 200 if quick else 2000
    args.l2hmc_chains = 32 if quick else 64
    args.l2hmc_lr = 3e-3
    args.l2hmc_clip = 10.0
    args.hidden = 10
    args.nice_hidden = 32
    methods = args.methods or (
        "hmc_unit,hmc,nuts,l2hmc,a_nice_mc" if quick else "hmc_unit,hmc,nuts,l2hmc,a_nice_mc,a_nice_mc_adv"
    )
    all_targets = targets()
    rows = []
    for name in args.targets.split(","):
        target, settings = all_targets[name]
        for method in methods.split(","):
            row = run(target, name, method, settings, args)
            rows.append(row)
            print(
                f"{name:10s} {method:14s} min ESS {row['ess']:8.1f}  "
                f"ESS/1k grads {1000 * row['ess_per_grad_sampling']:8.3f}"
                f" (with training {1000 * row['ess_per_grad_total']:8.3f})  acc {row['acceptance']:.2f}"
                f"  {row['wall_s']:.0f} s",
                flush=True,
            )
    path = RESULTS / ("learned_quick.json" if quick else "learned.json")
    if path.exists() and (args.targets != parser.get_default("targets") or args.methods):
        # a partial run replaces its (target, method) rows and keeps the others
        done = {(r["target"], r["method"]) for r in rows}
        old = [r for r in json.loads(path.read_text())["rows"] if (r["target"], r["method"]) not in done]
        order = parser.get_default("targets").split(",")
        all_methods = "hmc_unit,hmc,nuts,l2hmc,a_nice_mc,a_nice_mc_adv".split(",")
        rows = sorted(old + rows, key=lambda r: (order.index(r["target"]), all_methods.index(r["method"])))
    print()
    print(table(rows))
    out = {
        "settings": {k: v for k, v in vars(args).items()},
        "machine": {"platform": platform.platform(), "jax": jax.__version__, "devices": str(jax.devices())},
        "published_l2hmc_ratios": PUBLISHED,
        "rows": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
