"""The NUTS reference posterior predictive of the digits MLP, cached for the SGD-vs-MCMC benchmarks.

Target: the 64-32-10 tanh MLP of :mod:`sgmcmc.demo` on the shipped 8x8 digits
(``load_digits(seed=0)``: 1347 training, 450 test images), prior N(0, 1) on
every weight and bias (2410 parameters), categorical likelihood, full batch.

Reference: :func:`sgmcmc.reference.reference_predictive`, i.e. ``sgmcmc.nuts``
(target acceptance 0.8, diagonal metric, max tree depth 10) through
``sgmcmc.sample`` with Stan's windowed warmup, 4 chains each started from its
own random Glorot initialisation (:func:`sgmcmc.demo.init_mlp_params` with a
per-chain key), 500 warmup steps and 300 kept draws per chain by default.

Printed (markdown) and written to ``benchmarks/results/reference_mlp.json``:
the ceiling agreement and total variation (each chain's predictive against the
pooled predictive of the other three), the reference's test accuracy, NLL,
ECE (15 equal-width and 15 equal-mass bins) and Brier score, the same per
chain, NUTS statistics and function-space R-hat/ESS, and the wall time of the
run that built the reference. For scale, the MAP point estimate (Adam, as in
the demo) is scored against the reference too.

The predictive is cached in ``benchmarks/results/reference_mlp_digits.npz``
(keyed by a hash of the settings, data and functions: a run with other
settings samples again and overwrites it). Load it from another benchmark with

    from reference_mlp import load_reference   # a script in benchmarks/; or reference_predictive, same arguments
    ref = load_reference()                     # samples only if the cache is missing or stale

Commands:

    python benchmarks/reference_mlp.py                     # 4 chains x (500 warmup + 300 draws)
    python benchmarks/reference_mlp.py --num-samples 50 --num-warmup 100 --cache /tmp/r.npz --out /tmp/r.json
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import sys
import time

import jax
import numpy as np

from sgmcmc.datasets import load_digits
from sgmcmc.demo import init_mlp_params, make_mlp_target, mlp_logits, train_map
from sgmcmc.diagnostics import accuracy, agreement, brier_score, expected_calibration_error, nll, total_variation
from sgmcmc.reference import ReferencePredictive, reference_predictive

RESULTS = pathlib.Path(__file__).with_name("results")
CACHE = RESULTS / "reference_mlp_digits.npz"

#: The settings of the committed reference.
DEFAULTS = {"num_chains": 4, "num_warmup": 500, "num_samples": 300, "thin": 1, "seed": 0}
NUM_HIDDEN = 32
PRIOR_SCALE = 1.0


def glorot_init(key: jax.Array) -> dict:
    """A random starting point of the 64-32-10 MLP (one per chain, each from its own key)."""
    return init_mlp_params(key, 64, NUM_HIDDEN, 10)


def problem(seed: int = 0):
    """``(target, data)``: the demo's MLP posterior on ``load_digits(seed=seed)``."""
    data = load_digits(seed=seed)
    target = make_mlp_target(data.x_train, data.y_train, num_hidden=NUM_HIDDEN, prior_scale=PRIOR_SCALE, seed=seed)
    return target, data


def load_reference(cache: str | os.PathLike = CACHE, progress: bool = False, **settings) -> ReferencePredictive:
    """The digits-MLP reference (``DEFAULTS`` unless overridden), from ``cache`` when it is current."""
    settings = {**DEFAULTS, **settings}
    target, data = problem(settings["seed"])
    return reference_predictive(
        target, mlp_logits, data.x_test, init=glorot_init, cache=cache, progress=progress, **settings
    )


def _relative(path) -> str:
    """``path`` relative to the repository root when it lies inside it."""
    path = pathlib.Path(path).resolve()
    root = pathlib.Path(__file__).resolve().parents[1]
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def scores(probs, y) -> dict[str, float]:
    return {
        "accuracy": float(accuracy(probs, y)),
        "nll": float(nll(probs, y)),
        "ece": float(expected_calibration_error(probs, y, 15)),
        "ece_equal_mass": float(expected_calibration_error(probs, y, 15, binning="equal_mass")),
        "brier": float(brier_score(probs, y)),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, value in DEFAULTS.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=value)
    parser.add_argument("--cache", default=str(CACHE), help="the .npz cache of the reference")
    parser.add_argument("--out", default=str(RESULTS / "reference_mlp.json"))
    args = parser.parse_args(argv)
    settings = {name: getattr(args, name) for name in DEFAULTS}

    start = time.perf_counter()
    ref = load_reference(args.cache, progress=sys.stderr.isatty(), **settings)
    call_s = time.perf_counter() - start
    target, data = problem(settings["seed"])
    y = data.y_test

    pooled = scores(ref.probs, y)
    per_chain = [scores(p, y) for p in ref.chain_probs]
    map_params = train_map(target, num_steps=600, batch_size=128, learning_rate=1e-2, seed=settings["seed"])
    map_probs = np.asarray(jax.nn.softmax(mlp_logits(map_params, data.x_test), axis=-1), np.float64)
    map_row = {
        **scores(map_probs, y),
        "agreement": float(agreement(map_probs, ref.probs)),
        "tv": float(total_variation(map_probs, ref.probs)),
    }
    diag = ref.diagnostics
    fs = diag["function_space"]
    num_draws = settings["num_chains"] * settings["num_samples"]

    lines = [
        f"Reference: NUTS, {settings['num_chains']} chains x ({settings['num_warmup']} warmup + "
        f"{settings['num_samples']} draws, thin {settings['thin']}), each chain from its own Glorot init; "
        f"MLP 64-{NUM_HIDDEN}-10 tanh, prior N(0, {PRIOR_SCALE:g}^2), {ref.settings['num_params']} parameters, "
        f"{ref.settings['num_data']} train / {len(y)} test digits.",
        "",
        "| | agreement | TV | accuracy | NLL | ECE (15 eq.-width) | ECE (15 eq.-mass) | Brier |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        f"| reference, all {num_draws} draws | 1 | 0 | {pooled['accuracy']:.4f} | {pooled['nll']:.4f} | "
        f"{pooled['ece']:.4f} | {pooled['ece_equal_mass']:.4f} | {pooled['brier']:.4f} |",
        f"| ceiling: one chain vs the other {settings['num_chains'] - 1} (mean) | {ref.ceiling_agreement:.4f} | "
        f"{ref.ceiling_tv:.4f} | {np.mean([c['accuracy'] for c in per_chain]):.4f} | "
        f"{np.mean([c['nll'] for c in per_chain]):.4f} | {np.mean([c['ece'] for c in per_chain]):.4f} | "
        f"{np.mean([c['ece_equal_mass'] for c in per_chain]):.4f} | {np.mean([c['brier'] for c in per_chain]):.4f} |",
        f"| MAP (Adam, 600 steps), for scale | {map_row['agreement']:.4f} | {map_row['tv']:.4f} | "
        f"{map_row['accuracy']:.4f} | {map_row['nll']:.4f} | {map_row['ece']:.4f} | "
        f"{map_row['ece_equal_mass']:.4f} | {map_row['brier']:.4f} |",
        "",
        f"Per chain: agreement {', '.join(f'{a:.4f}' for a in ref.chain_agreement)}; "
        f"TV {', '.join(f'{t:.4f}' for t in ref.chain_tv)}.",
        f"NUTS: {diag['num_divergent']} divergent draws ({diag['num_divergent_warmup']} in warmup); step sizes "
        f"{', '.join(f'{s:.4f}' for s in diag['step_size'])}; mean tree depth "
        f"{', '.join(f'{d:.2f}' for d in diag['mean_tree_depth'])}; "
        f"{sum(diag['grad_evals'])} gradient evaluations in all.",
        f"Function space (log probability of each test point's reference class, {len(y)} points): R-hat max "
        f"{fs['rhat_max']:.3f}, median {fs['rhat_median']:.3f}, {100 * fs['fraction_rhat_above_1.01']:.0f}% "
        f"above 1.01; bulk ESS min {fs['ess_bulk_min']:.0f}, median {fs['ess_bulk_median']:.0f}. Log density: "
        f"R-hat {diag['lp']['rhat']:.3f}, bulk ESS {diag['lp']['ess_bulk']:.0f}.",
        f"Wall time of the reference run: {ref.wall_time_s:.0f} s (compile {diag['timing']['compile_s']:.0f} s, "
        f"warmup {diag['timing']['warmup_s']:.0f} s, sampling {diag['timing']['sampling_s']:.0f} s) on "
        f"{os.cpu_count()} CPU cores"
        + (f"; this call loaded it from {ref.cache_path} in {call_s:.1f} s." if ref.from_cache else "."),
    ]
    print("\n".join(lines))

    out = {
        "benchmark": "reference_mlp",
        "command": " ".join(["python benchmarks/reference_mlp.py", *(sys.argv[1:] if argv is None else argv)]),
        "settings": ref.settings,
        "key": ref.key,
        "cache": _relative(ref.cache_path),
        "from_cache": ref.from_cache,
        "ceiling_agreement": ref.ceiling_agreement,
        "ceiling_tv": ref.ceiling_tv,
        "chain_agreement": ref.chain_agreement.tolist(),
        "chain_tv": ref.chain_tv.tolist(),
        "reference": pooled,
        "per_chain": per_chain,
        "map": map_row,
        "diagnostics": diag,
        "wall_time_s": ref.wall_time_s,
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "jax": jax.__version__,
            "python": platform.python_version(),
        },
    }
    pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    print(f"\nwrote {args.out}")
    return out


if __name__ == "__main__":
    main()
