"""Mode crossing on the A-NICE-MC 2-d targets: flow-MH against NUTS (and flowMC when installed).

Targets (Song, Zhao & Ermon 2017, "A-NICE-MC"): **mog2**, two N(., 0.5^2 I) at
(+-5, 0), equal weights; **mog6**, six N(., 0.5^2 I) on the circle of radius 5,
equal weights; **ring5**, ``sum_i exp(-(|x| - i)^2 / (2 * 0.2^2))`` for radii
i = 1..5 (ring i holds a share of the mass close to i/15; computed here by
quadrature). A draw belongs to the nearest mode (nearest ring).

Columns: the largest error of a mode's (ring's) weight against the truth, the
largest R-hat and the smallest bulk ESS over the two coordinates (ArviZ), the
wall time of the whole call (compilation, warmup, flow training, sampling),
and min ESS per second. Every sampler starts its chains spread uniformly over
[-6, 6]^2. flowMC runs only when ``pip install sgmcmc[bench]`` brought it
(``--no-flowmc`` skips it).

    python benchmarks/multimodal.py        # writes benchmarks/results/multimodal.json
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import tempfile
import time
import warnings

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np

import sgmcmc
from sgmcmc import flows
from sgmcmc.samplers.flow_mh import flow_mh

RESULTS = pathlib.Path(__file__).parent / "results" / "multimodal.json"


def _mog(centres, sd=0.5):
    centres = jnp.asarray(centres, jnp.float32)

    def logdensity(x):
        return jax.scipy.special.logsumexp(-0.5 * jnp.sum((x - centres) ** 2, -1) / sd**2)

    def assign(draws):
        d = np.linalg.norm(draws[..., None, :] - np.asarray(centres), axis=-1)
        return np.argmin(d, axis=-1)

    return logdensity, assign, np.full(len(centres), 1.0 / len(centres))


def _ring5(sd=0.2):
    radii = jnp.arange(1.0, 6.0)

    def logdensity(x):
        r = jnp.sqrt(jnp.sum(x**2) + 1e-12)
        return jax.scipy.special.logsumexp(-0.5 * ((r - radii) / sd) ** 2)

    def assign(draws):
        r = np.linalg.norm(draws, axis=-1)
        return np.clip(np.rint(r), 1, 5).astype(int) - 1

    # Truth by quadrature in r (the density is radial): p(r) ∝ r * exp(logdensity).
    r = np.linspace(1e-6, 8.0, 400001)
    dens = r * np.exp(np.asarray(jax.vmap(lambda v: logdensity(jnp.array([v, 0.0])))(jnp.asarray(r))))
    ring = np.clip(np.rint(r), 1, 5).astype(int) - 1
    weights = np.array([dens[ring == i].sum() for i in range(5)])
    return logdensity, assign, weights / weights.sum()


def targets():
    angles = np.arange(6) * np.pi / 3
    return {
        "mog2": _mog([[5.0, 0.0], [-5.0, 0.0]]),
        "mog6": _mog(np.stack([5 * np.cos(angles), 5 * np.sin(angles)], -1)),
        "ring5": _ring5(),
    }


def summarise(draws, assign, truth, seconds):
    draws = np.asarray(draws, np.float64)
    counts = np.bincount(assign(draws).ravel(), minlength=len(truth)) / assign(draws).size
    rhat = float(np.max(az.rhat(az.convert_to_dataset(draws[..., 0])).to_array().values))
    rhat = max(rhat, float(np.max(az.rhat(az.convert_to_dataset(draws[..., 1])).to_array().values)))
    ess = min(float(az.ess(draws[..., i], method="bulk")) for i in range(2))
    return {
        "weight_error": float(np.max(np.abs(counts - truth))),
        "max_rhat": rhat,
        "min_ess": ess,
        "wall_s": seconds,
        "ess_per_s": ess / seconds,
    }


def run_sgmcmc(name, logdensity, start, args):
    target = sgmcmc.Target.from_logdensity(logdensity, jnp.zeros(2), name=name)
    if args.sampler == "nuts":
        sampler = sgmcmc.nuts(target)
    else:
        sampler = flow_mh(
            target,
            0.3,
            flow=flows.realnvp(2, 4, (32, 32)),
            initial_scale=5.0,
            num_refits=args.refits,
            train_steps=args.train_steps,
        )
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = sgmcmc.sample(
            sampler,
            num_samples=args.samples,
            num_warmup=args.warmup,
            num_chains=args.chains,
            seed=args.seed,
            progress=False,
            initial_position=start,
        )
    draws = np.asarray(result.samples)
    return draws, time.perf_counter() - t0, result


def run_flowmc(logdensity, start, args):  # pragma: no cover - optional
    from flowMC.resource_strategy_bundle.RQSpline_MALA import RQSpline_MALA_Bundle
    from flowMC.Sampler import Sampler

    t0 = time.perf_counter()
    bundle = RQSpline_MALA_Bundle(
        rng_key=jax.random.key(args.seed),
        n_chains=args.chains,
        n_dims=2,
        logpdf=lambda x, data: logdensity(x),
        n_training_loops=args.flowmc_loops_training,
        n_production_loops=args.flowmc_loops_production,
        n_local_steps=args.flowmc_local,
        n_global_steps=args.flowmc_global,
        n_epochs=args.flowmc_epochs,
        mala_step_size=0.05,
        rq_spline_hidden_units=[32, 32],
        rq_spline_n_bins=8,
        rq_spline_n_layers=4,
        verbose=False,
    )
    outdir = tempfile.mkdtemp(prefix="flowmc_")  # flowMC checkpoints to ./outdir/ by default
    sampler = Sampler(
        n_dim=2,
        n_chains=args.chains,
        rng_key=jax.random.key(args.seed + 1),
        resource_strategy_bundles=bundle,
        outdir=outdir,
        checkpoint_interval=1e9,
    )
    sampler.sample(jnp.asarray(start), {})
    positions = np.asarray(sampler.resources["positions_production"].data)
    return positions, time.perf_counter() - t0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--chains", type=int, default=16)
    parser.add_argument("--refits", type=int, default=8)
    parser.add_argument("--train-steps", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--targets", default="mog2,mog6,ring5")
    parser.add_argument("--no-flowmc", action="store_true")
    parser.add_argument("--flowmc-loops-training", type=int, default=20)
    parser.add_argument("--flowmc-loops-production", type=int, default=20)
    parser.add_argument("--flowmc-local", type=int, default=50)
    parser.add_argument("--flowmc-global", type=int, default=50)
    parser.add_argument("--flowmc-epochs", type=int, default=20)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    start = jnp.asarray(rng.uniform(-6, 6, size=(args.chains, 2)), jnp.float32)
    rows = []
    for name in args.targets.split(","):
        logdensity, assign, truth = targets()[name]
        for sampler in ("flow_mh", "nuts"):
            args.sampler = sampler
            draws, seconds, _ = run_sgmcmc(name, logdensity, start, args)
            rows.append({"target": name, "sampler": f"sgmcmc.{sampler}", **summarise(draws, assign, truth, seconds)})
            print(rows[-1], flush=True)
        if not args.no_flowmc:
            try:
                draws, seconds = run_flowmc(logdensity, start, args)
            except ImportError as err:
                print(f"flowMC not run: {err}")
            else:
                rows.append({"target": name, "sampler": "flowMC", **summarise(draws, assign, truth, seconds)})
                print(rows[-1], flush=True)

    print("\n| target | sampler | weight error | max R-hat | min ESS | wall (s) | ESS/s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['target']} | {r['sampler']} | {r['weight_error']:.3f} | {r['max_rhat']:.3f} | "
            f"{r['min_ess']:.0f} | {r['wall_s']:.1f} | {r['ess_per_s']:.1f} |"
        )
    RESULTS.parent.mkdir(exist_ok=True)
    meta = {"machine": platform.platform(), "jax": jax.__version__, "args": {k: v for k, v in vars(args).items()}}
    RESULTS.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
