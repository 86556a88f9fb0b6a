"""Rank R-hat, bulk and tail ESS of 4 chains x 1,000 draws x 100k parameters: sgmcmc against ArviZ.

The draws are float32 AR(1) chains (what a JAX sampler returns), one autocorrelation
per parameter spread over [0, 0.95], with a small per-chain offset so that R-hat
is not all 1. sgmcmc's ``rhat``, ``ess`` and ``summary`` (R-hat + bulk ESS + tail
ESS in one pass) run on the whole array after one compile on a single chunk
(the compile time is reported separately). ArviZ 0.23 (``az.rhat(method="rank")``,
``az.ess(method="bulk")``, ``az.ess(method="tail")``) runs on a slice of
``--arviz-params`` parameters and its time is extrapolated linearly to all of
them (ArviZ loops over parameters in Python, so it is linear; running it on all
100k takes about 10 minutes). On that slice the script also reports the largest
relative difference between the two (float32 arithmetic in sgmcmc by default).

The machine's load average is recorded before and after: other processes on a
2-core machine slow every figure here.

    python benchmarks/convergence_diagnostics.py     # markdown table, writes results/convergence_diagnostics.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import warnings
from pathlib import Path

import jax
import numpy as np

from sgmcmc.diagnostics import convergence as cv

RESULTS = Path(__file__).parent / "results" / "convergence_diagnostics.json"


def make_draws(chains: int, draws: int, params: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rho = np.linspace(0.0, 0.95, params, dtype=np.float32)
    scale = np.sqrt(1 - rho**2)
    x = np.empty((chains, draws, params), np.float32)
    x[:, 0] = rng.standard_normal((chains, params), dtype=np.float32)
    for t in range(1, draws):
        x[:, t] = rho * x[:, t - 1] + scale * rng.standard_normal((chains, params), dtype=np.float32)
    x += 0.05 * rng.standard_normal((chains, 1, params), dtype=np.float32)
    return x


def timed(fn):
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--params", type=int, default=100_000)
    parser.add_argument("--arviz-params", type=int, default=200)
    parser.add_argument("--chunk-size", type=int, default=cv._DEFAULT_CHUNK)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*ArviZ is undergoing a major refactor.*", category=FutureWarning)
        import arviz as az

    load_before = os.getloadavg()
    x = make_draws(args.chains, args.draws, args.params)
    cs = args.chunk_size
    # compile once per program on one chunk (same chunk shape as the full run)
    _, compile_s, _ = timed(lambda: (cv.summary(x[:, :, :cs], chunk_size=cs), cv.rhat(x[:, :, :cs], chunk_size=cs)))
    _, _, _ = timed(lambda: cv.ess(x[:, :, :cs], chunk_size=cs))

    rows = {}
    s, wall, cpu = timed(lambda: cv.summary(x, chunk_size=cs))
    rows["summary (rank R-hat + bulk ESS + tail ESS)"] = (wall, cpu)
    _, wall, cpu = timed(lambda: cv.rhat(x, chunk_size=cs))
    rows["rank R-hat"] = (wall, cpu)
    _, wall, cpu = timed(lambda: cv.ess(x, chunk_size=cs))
    rows["bulk ESS"] = (wall, cpu)
    load_mid = os.getloadavg()

    # ArviZ on a slice spread over the autocorrelation range, extrapolated linearly
    idx = np.linspace(0, args.params - 1, args.arviz_params).astype(int)
    ds = az.convert_to_dataset({"v": x[:, :, idx]})
    az_r, az_r_s, _ = timed(lambda: az.rhat(ds, method="rank")["v"].values)
    az_b, az_b_s, _ = timed(lambda: az.ess(ds, method="bulk")["v"].values)
    az_t, az_t_s, _ = timed(lambda: az.ess(ds, method="tail")["v"].values)
    factor = args.params / args.arviz_params
    arviz = {
        "rank R-hat": az_r_s * factor,
        "bulk ESS": az_b_s * factor,
        "summary (rank R-hat + bulk ESS + tail ESS)": (az_r_s + az_b_s + az_t_s) * factor,
    }

    def rel(a, b):
        return float(np.max(np.abs(a - b) / np.abs(b)))

    agreement = {
        "rhat": rel(s.rhat[idx], az_r),
        "ess_bulk": rel(s.ess_bulk[idx], az_b),
        "ess_tail": rel(s.ess_tail[idx], az_t),
    }
    load_after = os.getloadavg()

    shape = f"{args.chains} x {args.draws} x {args.params:,}"
    print(
        f"\n{shape} float32 draws, {os.cpu_count()} CPU cores, load average {load_before[0]:.1f} -> {load_after[0]:.1f}"
    )
    print(f"(ArviZ timed on {args.arviz_params} parameters, x{factor:.0f}; sgmcmc compile {compile_s:.1f} s)\n")
    print("| diagnostic | sgmcmc wall (s) | sgmcmc CPU (s) | ArviZ 0.23, extrapolated (s) | speed-up |")
    print("|---|---|---|---|---|")
    for name, (wall, cpu) in rows.items():
        print(f"| {name} | {wall:.1f} | {cpu:.1f} | {arviz[name]:.0f} | {arviz[name] / wall:.0f}x |")
    print(f"\nlargest relative difference to ArviZ on the slice: {agreement}")
    print(f"worst cases: {s.worst()}")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "shape": [args.chains, args.draws, args.params],
        "dtype": "float32",
        "chunk_size": cs,
        "sgmcmc_seconds": {k: {"wall": w, "cpu": c} for k, (w, c) in rows.items()},
        "sgmcmc_compile_seconds": compile_s,
        "arviz_seconds_extrapolated": arviz,
        "arviz_params_timed": args.arviz_params,
        "max_relative_difference_on_slice": agreement,
        "worst": s.worst(),
        "load_average": {"before": load_before, "after_sgmcmc": load_mid, "after": load_after},
        "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "versions": {"jax": jax.__version__, "numpy": np.__version__, "arviz": az.__version__},
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
