"""SGD as inference against SG-MCMC on a Bayesian MLP, scored against a NUTS reference posterior.

Target: the 64-32-10 tanh MLP of :mod:`sgmcmc.demo` on the shipped 8x8 digits
(1347 training, 450 test images; N(0, 1) prior on all 2410 weights), the same
posterior as ``benchmarks/reference_mlp.py``, whose cached full-batch NUTS
predictive (4 chains, 300 draws each) is the reference.

Every method gets the same gradient budget per run: ``--steps`` minibatch
gradients of ``--batch-size`` examples, warmup/burn-in included, from the
same random Glorot starting point (run ``r`` starts where reference chain
``r`` did not: the keys differ). Methods:

* **SGD (point)**: SGD with momentum 0.9 and a cosine-decayed learning rate;
  the last iterate (``sgmcmc.constant_sgd`` with an optax schedule).
* **deep ensemble (4)**: four such runs, equal-weight mixture of their last iterates.
* **constant SGD**: ``sgmcmc.constant_sgd(learning_rate="optimal")``, Mandt et
  al.'s rate estimated in the first half of the budget (warmup), iterates of
  the second half thinned to ``--draws`` draws. Its warmup also spends one
  per-example gradient pass of a minibatch per step in the second half of
  warmup to estimate the noise (counted in the gradient column).
* **SWAG**: ``sgmcmc.swag`` over constant-rate SGD with momentum 0.9 (rate
  ``--swag-lr``), collecting once per epoch over the second half, then
  ``--draws`` draws from the fitted Gaussian (K = 20).
* **MultiSWAG (4)**: four SWAG runs (four chains), ``--draws`` draws in all.
* **SGLD**, **SGHMC**: the demo's SGLD settings (step 1e-3) and SGHMC with
  the matching SGD form (learning rate ``--sghmc-lr``, momentum 0.9), half the
  budget as burn-in, ``--draws`` thinned draws.

Reported per method: test accuracy, NLL, ECE (15 equal-width bins), Brier,
agreement and total variation with the reference predictive (Izmailov et al.
2021; the reference's own chain-to-chain figures are the ceiling), gradient
evaluations (in minibatches of ``--batch-size``; per-example passes are
counted as one minibatch gradient each), and wall time (compile + run).
Printed as markdown and written to ``benchmarks/results/bnn_sgd_vs_mcmc.json``.

    python benchmarks/bnn_sgd_vs_mcmc.py              # about 2-3 minutes on 2 CPU cores with the cached reference
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import sys
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax

import sgmcmc
from sgmcmc.demo import posterior_predictive

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from reference_mlp import glorot_init, load_reference, problem, scores

RESULTS = pathlib.Path(__file__).with_name("results")


def starts(num_runs: int, seed: int):
    keys = jax.random.split(jax.random.key(10_000 + seed), num_runs)
    return jax.tree.map(lambda *xs: jnp.stack(xs), *[glorot_init(k) for k in keys])


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def run_sgd_point(target, args, runs):
    schedule = optax.cosine_decay_schedule(args.sgd_lr, args.steps, alpha=1e-3)  # never exactly 0
    sampler = sgmcmc.constant_sgd(target, schedule, batch_size=args.batch_size, momentum=0.9)
    result = sgmcmc.sample(
        sampler,
        num_samples=1,
        num_warmup=args.steps - 1,
        num_chains=runs,
        seed=args.seed,
        initial_position=starts(runs, args.seed),
        progress=False,
    )
    return result.samples, result


def burn_in_then_draws(sampler, args, runs):
    """Half the budget as warmup/burn-in, then ``args.draws`` draws in all, evenly thinned over the other half."""
    half = args.steps // 2
    thin = max(1, (args.steps - half) // args.draws)
    result = sgmcmc.sample(
        sampler,
        num_samples=max(1, args.draws // runs),
        num_warmup=half,
        thin=thin * runs,
        num_chains=runs,
        seed=args.seed,
        initial_position=starts(runs, args.seed),
        progress=False,
    )
    return result.samples, result


def run_constant_sgd(target, args, runs):
    sampler = sgmcmc.constant_sgd(target, "optimal", batch_size=args.batch_size, momentum=0.9, stability="clip")
    return burn_in_then_draws(sampler, args, runs)


def run_constant_sgd_preconditioned(target, args, runs):
    sampler = sgmcmc.constant_sgd(
        target, "optimal", batch_size=args.batch_size, momentum=0.9, preconditioner="optimal", stability="clip"
    )
    return burn_in_then_draws(sampler, args, runs)


def run_swag(target, args, runs):
    half = args.steps // 2
    sampler = sgmcmc.swag(target, args.swag_lr, batch_size=args.batch_size, momentum=0.9, max_rank=20)
    result = sgmcmc.sample(
        sampler,
        num_samples=args.steps - half,
        num_warmup=half,
        num_chains=runs,
        seed=args.seed,
        initial_position=starts(runs, args.seed),
        progress=False,
    )
    post = sgmcmc.fit_swag(result)
    draws = post.sample(jax.random.key(args.seed), max(1, args.draws // runs), logdensity=False)
    return draws.samples, result


def run_sgld(target, args, runs):
    return burn_in_then_draws(sgmcmc.sgld(target, args.sgld_step, batch_size=args.batch_size), args, runs)


def run_sghmc(target, args, runs):
    s = sgmcmc.convert.sghmc_from_sgd(args.sghmc_lr, 0.9, target.num_data)
    sampler = sgmcmc.sghmc(target, s.step_size, friction=s.friction, batch_size=args.batch_size)
    return burn_in_then_draws(sampler, args, runs)


METHODS = {
    "SGD (point)": (run_sgd_point, 1),
    "deep ensemble (4)": (run_sgd_point, 4),
    "constant SGD": (run_constant_sgd, 1),
    "constant SGD + precond.": (run_constant_sgd_preconditioned, 1),
    "SWAG": (run_swag, 1),
    "MultiSWAG (4)": (run_swag, 4),
    "SGLD": (run_sgld, 1),
    "SGHMC": (run_sghmc, 1),
}


def extra_grad_evals(name: str, args, runs: int) -> int:
    """Per-example gradient passes spent by constant SGD's noise estimate (one minibatch each, 2nd half of warmup)."""
    if not name.startswith("constant SGD"):
        return 0
    half = args.steps // 2
    return runs * (half - half // 2)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4000, help="gradient budget per run (minibatch steps)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--draws", type=int, default=100, help="draws per method (all runs together for ensembles)")
    parser.add_argument("--sgd-lr", type=float, default=0.05)
    parser.add_argument("--swag-lr", type=float, default=0.02)
    parser.add_argument("--sgld-step", type=float, default=1e-3)
    parser.add_argument("--sghmc-lr", type=float, default=0.02)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--out", default=str(RESULTS / "bnn_sgd_vs_mcmc.json"))
    parser.add_argument("--no-reference", action="store_true", help="skip the NUTS reference (for tuning)")
    args = parser.parse_args(argv)

    target, data = problem(0)
    ref = None if args.no_reference else load_reference()
    rows = []
    for name in args.methods.split(","):
        fn, runs = METHODS[name]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # divergence counts are reported in the table
            (samples, result), seconds = timed(lambda fn=fn, runs=runs: fn(target, args, runs))
        probs = np.asarray(posterior_predictive(samples, data.x_test))
        row = {"method": name, "runs": runs}
        row.update(scores(probs, data.y_test))
        row.update(ref.compare(probs) if ref else {"agreement": np.nan, "tv": np.nan})
        row["grad_evals"] = int(np.sum(result.num_grad_evals)) + extra_grad_evals(name, args, runs)
        row["divergent"] = int(result.num_divergent)
        row["wall_s"] = seconds
        if name.startswith("constant SGD"):
            row["learning_rate"] = float(np.mean(result.last_state.learning_rate))
            row["lr_x_lambda_max"] = float(np.mean(result.last_state.learning_rate * result.last_state.lambda_max))
        rows.append(row)
        print(
            f"{name}: acc {row['accuracy']:.3f} nll {row['nll']:.3f} agree {row['agreement']:.3f} "
            f"tv {row['tv']:.3f} ({seconds:.1f} s)",
            file=sys.stderr,
        )

    if ref is None:
        print("\n".join(f"{r['method']}: {r}" for r in rows))
        return {"rows": rows}
    ref_scores = scores(np.asarray(ref.probs), data.y_test)
    lines = [
        f"Digits MLP 64-32-10 (2410 parameters), budget {args.steps} minibatch gradients of {args.batch_size} per run;"
        f" reference: NUTS, {ref.num_chains} chains (ceiling agreement {ref.ceiling_agreement:.3f},"
        f" TV {ref.ceiling_tv:.3f}; its own test accuracy {ref_scores['accuracy']:.3f}, NLL {ref_scores['nll']:.3f}).",
        "",
        "| method | accuracy | NLL | ECE | Brier | agreement | TV | gradients | wall s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['accuracy']:.3f} | {r['nll']:.3f} | {r['ece']:.3f} | {r['brier']:.3f} | "
            f"{r['agreement']:.3f} | {r['tv']:.3f} | {r['grad_evals']} | {r['wall_s']:.1f} |"
        )
    lines.append(
        f"| NUTS reference | {ref_scores['accuracy']:.3f} | {ref_scores['nll']:.3f} | {ref_scores['ece']:.3f} | "
        f"{ref_scores['brier']:.3f} | {ref.ceiling_agreement:.3f} (ceiling) | {ref.ceiling_tv:.3f} (ceiling) | "
        f"- | - |"
    )
    table = "\n".join(lines)
    print(table)
    out = {
        "benchmark": "bnn_sgd_vs_mcmc",
        "command": "python benchmarks/bnn_sgd_vs_mcmc.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "settings": vars(args),
        "machine": {"platform": platform.platform(), "cpus": jax.device_count(), "jax": jax.__version__},
        "reference": {"ceiling_agreement": ref.ceiling_agreement, "ceiling_tv": ref.ceiling_tv, **ref_scores},
        "rows": rows,
        "table": table,
    }
    pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(args.out).write_text(json.dumps(out, indent=2, default=float))
    return out


if __name__ == "__main__":
    main()
