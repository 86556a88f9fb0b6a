"""ChEES-HMC's metric on posteriordb's nine posteriors: ``metric="auto"`` (the default) against ``"diag"``.

For every posterior of ``tests/posteriordb_models.py`` (the test suite's NumPyro
models and precision), 4 vmapped chains, 1000 warmup + 1000 draws, the same seed:
``sgmcmc.chees_hmc(target)`` (``metric="auto"``) and ``sgmcmc.chees_hmc(target,
metric="diag")``. Reports whether warmup's last window went dense, the largest
|z| of any reference column's mean or sd against posteriordb's gold-standard
summary (the test suite's ``reference_z``: both Monte Carlo errors; |z| < 4 is
what the NUTS tests require), the smallest bulk ESS over all parameters, leapfrog
steps per draw (the same in every chain), ESS per 1000 gradient evaluations, and
divergences. posteriordb's own note says which posteriors want a dense metric
(``Posterior.metric``); the table shows it next to what ``"auto"`` chose. One seed
per posterior: read each ESS ratio as +-20% (ChEES's trajectory length is noisy).

    python benchmarks/chees_posteriordb.py [NAME ...]   # all 9 by default; writes results/chees_posteriordb.json;
                                                       # needs the test extra (pytest)
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from _posteriordb import min_bulk_ess, posteriordb_targets
from jax.flatten_util import ravel_pytree

import sgmcmc

RESULTS = Path(__file__).parent / "results" / "chees_posteriordb.json"
NUM_CHAINS, NUM_WARMUP, NUM_SAMPLES, SEED = 4, 1000, 1000, 0


def run(target, spec, metric: str) -> dict:
    from conftest import reference_z
    from posteriordb_models import load_reference

    sampler = sgmcmc.chees_hmc(target, metric=metric)
    result = sgmcmc.sample(
        sampler, num_samples=NUM_SAMPLES, num_warmup=NUM_WARMUP, num_chains=NUM_CHAINS, seed=SEED, progress=False
    )
    min_ess = min_bulk_ess(result, NUM_CHAINS, NUM_SAMPLES)
    reference = load_reference(spec.name)
    columns = spec.to_columns(result.samples)
    z = [max(abs(a), abs(b)) for a, b in (reference_z(columns[c], ref) for c, ref in reference.items())]
    steps = np.asarray(result.info.num_grad_evals)
    return {
        "dense": bool(np.asarray(result.last_state.dense_metric).all()),
        "max_abs_z": float(max(z)),
        "num_columns": len(z),
        "min_ess": min_ess,
        "grads_per_draw": float(steps.mean()),
        "ess_per_1k_grads": 1000.0 * min_ess / float(steps.max(axis=0).sum()),
        "step_size": float(np.asarray(result.last_state.step_size)[0]),
        "trajectory_length": float(np.asarray(result.last_state.trajectory_length)[0]),
        "sampling_s": result.timing["sampling_s"],
        "divergences": int(result.num_divergent),
    }


def main(names: Sequence[str] = ()) -> dict:
    rows = {}
    start = time.perf_counter()
    for name, spec, target in posteriordb_targets(names):
        dim = int(np.size(ravel_pytree(target.initial_position)[0]))
        rows[name] = {"dim": dim, "posteriordb_metric": spec.metric}
        rows[name]["auto"] = run(target, spec, "auto")
        rows[name]["diag"] = run(target, spec, "diag")
        print(f"[{name}] auto dense = {rows[name]['auto']['dense']}", file=sys.stderr, flush=True)
    lines = [
        "| posterior | d | posteriordb's metric | auto went dense | max abs z auto / diag | min ESS auto / diag "
        "| grads per draw auto / diag | ESS per 1k grads auto / diag | ratio | divergences auto / diag |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    ratios = []
    for name, row in rows.items():
        a, d = row["auto"], row["diag"]
        ratio = a["ess_per_1k_grads"] / d["ess_per_1k_grads"]
        ratios.append(ratio)
        lines.append(
            f"| {name} | {row['dim']} | {row['posteriordb_metric']} | {'yes' if a['dense'] else 'no'} "
            f"| {a['max_abs_z']:.2f} / {d['max_abs_z']:.2f} | {a['min_ess']:,.0f} / {d['min_ess']:,.0f} "
            f"| {a['grads_per_draw']:.1f} / {d['grads_per_draw']:.1f} "
            f"| {a['ess_per_1k_grads']:,.1f} / {d['ess_per_1k_grads']:,.1f} | {ratio:.2f} "
            f"| {a['divergences']} / {d['divergences']} |"
        )
    geomean = float(np.exp(np.mean(np.log(ratios))))
    table = "\n".join(lines)
    print(f"{NUM_CHAINS} chains, {NUM_WARMUP} + {NUM_SAMPLES}, seed {SEED}; geometric mean ratio {geomean:.2f}")
    print(table)
    out = {
        "benchmark": "chees_posteriordb",
        "command": "python benchmarks/chees_posteriordb.py",
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
    main(sys.argv[1:])
