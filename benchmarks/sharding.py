"""Step time of chains and data split over forced CPU devices (``sample(mesh=...)``).

What this measures: the sampling phase of ``sgmcmc.sample`` (compilation
excluded, ``result.timing["sampling_s"]`` divided by the steps) of SGLD on a
Bayesian MLP regression (32 -> 256 -> 256 -> 1 tanh, 74k parameters,
N = 32,768 synthetic examples), on ``--devices`` forced host-platform CPU
devices (``XLA_FLAGS=--xla_force_host_platform_device_count``, set here
before JAX starts), for

* chains: 4 chains of batch 1,024 on no mesh, ``chains=2`` and ``chains=4``
  (draws compared with the single-device run: XLA:CPU compiles some sums
  differently for 4, 2 or 1 chains per device, so they agree to float32
  rounding, not bit for bit; the largest difference is printed);
* data: 1 chain of batch 4,096 on no mesh, ``data=2`` and ``data=4`` (a
  stratified minibatch, one all-reduce of the 74k-float gradient per step).

It also counts the collective operations in each compiled sampling program.
Forced CPU devices share the host's cores, so these times say how much of
the host the layout lets XLA use, not what several accelerators would give;
on a 2-core machine no layout can be more than ~2x faster than the
single-device program, and XLA:CPU already runs one device's program on
several threads. The cost model for real accelerators is in
``docs/scaling.md``.

    python benchmarks/sharding.py                  # prints a markdown table, writes results/sharding.json
    python benchmarks/sharding.py --devices 4 --steps 100 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import re
import statistics
import sys


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=4)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(pathlib.Path(__file__).with_name("results") / "sharding.json"))
    return parser.parse_args(argv)


ARGS = parse_args()
if "jax" in sys.modules:
    raise RuntimeError("benchmarks/sharding.py must set the device count before JAX is imported.")
os.environ["XLA_FLAGS"] = (
    f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={ARGS.devices}".strip()
)
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import sgmcmc  # noqa: E402
from sgmcmc import sharding  # noqa: E402
from sgmcmc.run import _COMPILED  # noqa: E402

NUM_DATA, FEATURES, HIDDEN = 32_768, 32, 256
OPS = ("all-reduce", "all-gather", "collective-permute", "all-to-all", "reduce-scatter")


def make_target() -> sgmcmc.Target:
    rng = np.random.RandomState(0)
    x = rng.randn(NUM_DATA, FEATURES).astype(np.float32)
    y = (np.sin(x[:, :4]).sum(1) + 0.1 * rng.randn(NUM_DATA)).astype(np.float32)
    sizes = [(FEATURES, HIDDEN), (HIDDEN, HIDDEN), (HIDDEN, 1)]
    params = [{"w": rng.randn(a, b).astype(np.float32) / np.sqrt(a), "b": np.zeros(b, np.float32)} for a, b in sizes]

    def apply(params, x):
        for layer in params[:-1]:
            x = jnp.tanh(x @ layer["w"] + layer["b"])
        return (x @ params[-1]["w"] + params[-1]["b"])[:, 0]

    def logprior(params):
        return -0.5 * sum(jnp.sum(leaf**2) for leaf in jax.tree.leaves(params))

    def loglik(params, batch):
        return -0.5 * ((batch["y"] - apply(params, batch["x"])) / 0.1) ** 2

    return sgmcmc.Target.from_data(logprior, loglik, {"x": x, "y": y}, params, name="mlp_regression")


def collectives(mesh) -> dict:
    """Collective ops in the compiled sampling programs the driver holds for this mesh."""
    texts = [c.as_text() for k, c in _COMPILED.items() if k[0] == "chunk" and k[3] and k[3][0] is mesh]
    return {op: sum(len(re.findall(rf"\b{op}(?:-start)?\(", t)) for t in texts) for op in OPS}


def run(target, layout: str, num_chains: int, batch_size: int, chains: int, data: int):
    mesh = None if layout == "none" else sharding.make_mesh(chains, data)
    sampler = sgmcmc.sgld(target, 1e-7, batch_size=batch_size)
    kwargs = dict(num_samples=ARGS.steps, num_chains=num_chains, progress=False, mesh=mesh, chunk_size=ARGS.steps)
    first = sgmcmc.sample(sampler, seed=0, **kwargs)  # compiles
    times = []
    for _ in range(ARGS.repeats):
        result = sgmcmc.sample(sampler, seed=0, **kwargs)
        assert result.num_compilations == 0
        times.append(result.timing["sampling_s"] / ARGS.steps)
    flat = np.concatenate(
        [np.asarray(x).reshape(num_chains, ARGS.steps, -1) for x in jax.tree.leaves(result.samples)], -1
    )
    return {
        "layout": layout,
        "num_chains": num_chains,
        "batch_size": batch_size,
        "mesh": None if mesh is None else dict(mesh.shape),
        "step_ms_median": 1e3 * statistics.median(times),
        "step_ms_all": [1e3 * t for t in times],
        "compile_s": first.timing["compile_s"],
        "collectives": None if mesh is None else collectives(mesh),
        "finite": bool(np.all(np.isfinite(flat))),
    }, flat


def main():
    target = make_target()
    num_params = sum(np.size(x) for x in jax.tree.leaves(target.initial_position))
    rows = []
    chain_draws = {}
    for layout, chains in (("none", 1), ("chains=2", 2), ("chains=4", 4)):
        if chains > ARGS.devices:
            continue
        row, flat = run(target, layout, 4, 1024, chains, 1)
        chain_draws[layout] = flat
        rows.append({"experiment": "4 chains, batch 1024", **row})
    for layout, data in (("none", 1), ("data=2", 2), ("data=4", 4)):
        if data > ARGS.devices:
            continue
        row, _ = run(target, layout, 1, 4096, 1, data)
        rows.append({"experiment": "1 chain, batch 4096", **row})
    diff = max(float(np.abs(chain_draws["none"] - v).max()) for v in chain_draws.values())
    scale = float(np.abs(chain_draws["none"]).max())

    print(f"\nSGLD on an MLP regression ({num_params:,} parameters, N = {NUM_DATA:,}), {ARGS.steps} steps, ")
    print(f"{ARGS.devices} forced CPU devices on {os.cpu_count()} cores; median of {ARGS.repeats} runs.\n")
    print("| experiment | layout | step time (ms) | vs none | collectives per step program |")
    print("|---|---|---:|---:|---|")
    base = {}
    for r in rows:
        base.setdefault(r["experiment"], r["step_ms_median"])
        coll = (
            "-"
            if r["collectives"] is None
            else ", ".join(f"{k} {v}" for k, v in r["collectives"].items() if v) or "none"
        )
        ratio = base[r["experiment"]] / r["step_ms_median"]
        print(f"| {r['experiment']} | {r['layout']} | {r['step_ms_median']:.2f} | {ratio:.2f}x | {coll} |")
    print(f"\nlargest difference of a chains layout's draws from no mesh: {diff:.3g} (draws up to {scale:.3g})")

    out = {
        "benchmark": "sharding",
        "command": "python benchmarks/sharding.py " + " ".join(sys.argv[1:]),
        "devices": ARGS.devices,
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
        "platform": platform.platform(),
        "jax": jax.__version__,
        "num_params": int(num_params),
        "num_data": NUM_DATA,
        "chain_layouts_max_abs_diff": diff,
        "draws_max_abs": scale,
        "rows": rows,
    }
    pathlib.Path(ARGS.out).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(ARGS.out).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
