"""Long SGLD runs keep memory flat with on-the-fly reducers and ``keep_draws=False`` (issue 10).

A 4-chain minibatch SGLD run on a 100-parameter Bayesian logistic regression
(N = 2,000, batch 100), thinned by 10, with running moments and a running
posterior-predictive mean (:mod:`sgmcmc.reducers`) folded in on the device.
Each (run length, mode) runs in a fresh subprocess: a short run first compiles
every program, then the measured run; a thread samples ``VmRSS`` from
``/proc/self/status`` every 20 ms, and the table reports the peak RSS during
the measured run above the RSS just before it, next to the process's
``ru_maxrss``. Modes: ``lean`` (``reducers=..., keep_draws=False``) and
``draws`` (the same run keeping its draws, for contrast).

    python benchmarks/long_run.py                 # 1e4, 1e5, 1e6 steps; ~5 min on 2 busy cores
    python benchmarks/long_run.py --steps 10000,100000 --modes lean
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import threading
import time

NUM_CHAINS, DIM, NUM_DATA, BATCH, THIN = 4, 100, 2000, 100, 10


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class PeakRSS(threading.Thread):
    """Samples VmRSS until stopped; ``peak`` is the largest value seen (MB)."""

    def __init__(self, interval: float = 0.02):
        super().__init__(daemon=True)
        self.interval, self.peak, self._stop_event = interval, rss_mb(), threading.Event()

    def run(self):
        while not self._stop_event.is_set():
            self.peak = max(self.peak, rss_mb())
            time.sleep(self.interval)

    def stop(self):
        self._stop_event.set()
        self.join()
        self.peak = max(self.peak, rss_mb())


def child(num_steps: int, mode: str) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    import sgmcmc
    from sgmcmc.reducers import running_mean, running_moments

    rng = np.random.default_rng(0)
    x = rng.normal(size=(NUM_DATA, DIM)).astype(np.float32) / np.sqrt(DIM)
    w_true = rng.normal(size=DIM).astype(np.float32)
    y = (rng.uniform(size=NUM_DATA) < 1 / (1 + np.exp(-x @ w_true))).astype(np.float32)
    x_test = jnp.asarray(rng.normal(size=(50, DIM)).astype(np.float32) / np.sqrt(DIM))

    def loglik(p, batch):
        logits = batch["x"] @ p["w"]
        return batch["y"] * jax.nn.log_sigmoid(logits) + (1 - batch["y"]) * jax.nn.log_sigmoid(-logits)

    target = sgmcmc.Target.from_data(
        lambda p: -0.5 * jnp.sum(p["w"] ** 2), loglik, {"x": x, "y": y}, {"w": jnp.zeros(DIM)}, name="logreg100"
    )
    sampler = sgmcmc.sgld(target, 1e-4, batch_size=BATCH)
    reducers = {"moments": running_moments(), "predictive": running_mean(lambda p: jax.nn.sigmoid(x_test @ p["w"]))}
    lean = mode == "lean"
    kw = dict(num_chains=NUM_CHAINS, thin=THIN, seed=0, progress=False, chunk_size=1000, reducers=reducers)
    kw["keep_draws"] = not lean
    sgmcmc.sample(sampler, num_samples=2000, num_warmup=1000, **kw)  # compiles every program
    before = rss_mb()
    monitor = PeakRSS()
    monitor.start()
    start = time.perf_counter()
    result = sgmcmc.sample(sampler, num_samples=num_steps // THIN, num_warmup=1000, **kw)
    seconds = time.perf_counter() - start
    monitor.stop()
    moments = result.reductions["moments"]
    assert int(moments.count[0]) == num_steps // THIN
    assert np.all(np.isfinite(moments.mean["w"])) and np.all(np.isfinite(result.reductions["predictive"]))
    return {
        "steps": num_steps,
        "mode": mode,
        "draws_per_chain": num_steps // THIN,
        "rss_before_mb": before,
        "peak_rss_mb": monitor.peak,
        "peak_above_before_mb": monitor.peak - before,
        "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "draws_bytes_mb": 0.0 if lean else result.position["w"].nbytes / 2**20,
        "info_bytes_mb": sum(np.asarray(v).nbytes for v in result.info) / 2**20,
        "seconds": seconds,
        "us_per_step": 1e6 * seconds / (num_steps + 1000),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", default="10000,100000,1000000")
    parser.add_argument("--modes", default="lean,draws")
    parser.add_argument("--child", nargs=2, metavar=("STEPS", "MODE"), help=argparse.SUPPRESS)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "long_run.json"))
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(int(args.child[0]), args.child[1])))
        return

    rows = []
    print(
        "| steps | mode | draws/chain | RSS before (MB) | peak RSS (MB) | peak above before (MB) | draws held (MB) "
        "| info held (MB) | us/step (4 chains) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for mode in args.modes.split(","):
        for steps in map(int, args.steps.split(",")):
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(steps), mode], capture_output=True, text=True, check=True
            )
            row = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(
                f"| {steps:.0e} | {mode} | {row['draws_per_chain']} | {row['rss_before_mb']:.0f} | "
                f"{row['peak_rss_mb']:.0f} | {row['peak_above_before_mb']:.1f} | {row['draws_bytes_mb']:.1f} | "
                f"{row['info_bytes_mb']:.1f} | {row['us_per_step']:.1f} |",
                flush=True,
            )
    import jax

    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(
            {
                "command": "python " + " ".join([os.path.relpath(__file__), *(argv or sys.argv[1:])]),
                "machine": f"{platform.machine()} {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}",
                "jax": jax.__version__,
                "date": time.strftime("%Y-%m-%d"),
                "setup": {
                    "num_chains": NUM_CHAINS,
                    "dim": DIM,
                    "num_data": NUM_DATA,
                    "batch_size": BATCH,
                    "thin": THIN,
                    "sampler": "sgld(step_size=1e-4)",
                },
                "rows": rows,
            },
            f,
            indent=1,
        )


if __name__ == "__main__":
    main()
