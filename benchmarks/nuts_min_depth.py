"""NUTS's adapted minimum tree depth against Stan's NUTS on posteriordb's nine posteriors.

For every posterior of ``tests/posteriordb_models.py`` (the test suite's NumPyro
models, precision, ``target_accept`` and metric), 4 vmapped chains, 1000 warmup
+ 1000 draws, the same seed: ``sgmcmc.nuts(..., min_tree_depth="auto")`` (the
default) against ``min_tree_depth=0`` (Stan's NUTS). Reports the minimum tree
depth warmup chose per chain, the smallest bulk ESS over all parameters, the
mean leapfrog steps per draw, and the ESS per 1000 *lockstep* gradient
evaluations (per draw, the largest step count among the chains: what vmapped
chains pay). One seed per posterior: read each ratio as +-10%.

    python benchmarks/nuts_min_depth.py     # ~3 min on 2 cores; writes results/nuts_min_depth.json
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
from _posteriordb import min_bulk_ess, posteriordb_targets

import sgmcmc

RESULTS = Path(__file__).parent / "results" / "nuts_min_depth.json"
NUM_CHAINS, NUM_WARMUP, NUM_SAMPLES, SEED = 4, 1000, 1000, 0


def run(target, spec, min_tree_depth) -> dict:
    sampler = sgmcmc.nuts(target, target_accept=spec.target_accept, metric=spec.metric, min_tree_depth=min_tree_depth)
    result = sgmcmc.sample(
        sampler, num_samples=NUM_SAMPLES, num_warmup=NUM_WARMUP, num_chains=NUM_CHAINS, seed=SEED, progress=False
    )
    min_ess = min_bulk_ess(result, NUM_CHAINS, NUM_SAMPLES)
    steps = np.asarray(result.info.num_grad_evals)
    lockstep = float(steps.max(axis=0).sum())
    return {
        "min_tree_depth": np.asarray(result.last_state.min_tree_depth).tolist(),
        "min_ess": min_ess,
        "grads_per_draw": float(steps.mean()),
        "ess_per_1k_lockstep_grads": 1000.0 * min_ess / lockstep,
        "sampling_s": result.timing["sampling_s"],
        "divergences": int(result.num_divergent),
    }


def main() -> dict:
    rows = {}
    start = time.perf_counter()
    for name, spec, target in posteriordb_targets():
        auto, stan = run(target, spec, "auto"), run(target, spec, 0)
        rows[name] = {"auto": auto, "stan": stan}
        print(f"[{name}] m = {auto['min_tree_depth']}", file=sys.stderr, flush=True)
    lines = [
        "| posterior | `m` chosen per chain | min ESS auto / Stan | grads per draw auto / Stan "
        "| ESS per 1k lockstep grads auto / Stan | ratio |",
        "|---|---|---|---|---|---|",
    ]
    ratios = []
    for name, row in rows.items():
        a, s = row["auto"], row["stan"]
        ratio = a["ess_per_1k_lockstep_grads"] / s["ess_per_1k_lockstep_grads"]
        ratios.append(ratio)
        lines.append(
            f"| {name} | {' '.join(map(str, a['min_tree_depth']))} | {a['min_ess']:,.0f} / {s['min_ess']:,.0f} "
            f"| {a['grads_per_draw']:.1f} / {s['grads_per_draw']:.1f} "
            f"| {a['ess_per_1k_lockstep_grads']:,.1f} / {s['ess_per_1k_lockstep_grads']:,.1f} | {ratio:.2f} |"
        )
    geomean = float(np.exp(np.mean(np.log(ratios))))
    table = "\n".join(lines)
    print(f"{NUM_CHAINS} chains, {NUM_WARMUP} + {NUM_SAMPLES}, seed {SEED}; geometric mean ratio {geomean:.2f}")
    print(table)
    out = {
        "benchmark": "nuts_min_depth",
        "command": "python benchmarks/nuts_min_depth.py",
        "settings": {"num_chains": NUM_CHAINS, "num_warmup": NUM_WARMUP, "num_samples": NUM_SAMPLES, "seed": SEED},
        "results": rows,
        "geometric_mean_ratio": geomean,
        "total_s": time.perf_counter() - start,
        "table": table,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=1) + "\n")
    return out


if __name__ == "__main__":
    main()
