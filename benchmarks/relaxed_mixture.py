"""How far a Gumbel-softmax relaxation moves a mixture posterior, and whether SGHMC samples it.

Model (the same as ``notebooks/02_discrete_mixture.ipynb`` and ``tests/test_relaxed.py``):
150 points from ``0.3 N(-2, 1) + 0.7 N(2, 1)``; ``w ~ Dirichlet(1, 1)``; ordered means
``mu_1 < mu_2`` with ``N(0, 5^2)`` factors (no label switching); unit component scale.

Four posteriors over the continuous parameters ``(mu_1, mu_2, w_1)``:

* **exact**: assignments summed out per point (``MixtureSameFamily``, a logsumexp), NUTS.
* **relaxed, quadrature**: assignments replaced by ``z_i ~ RelaxedOneHotCategorical(tau, w)``
  with likelihood ``sum_k z_ik log N(x_i | mu_k, 1)`` (the mixture's when ``z_i`` is one-hot),
  and ``z_i`` integrated out numerically (``--nodes`` points per data point around the step of
  ``z_i``, exact logistic tails), NUTS: the relaxed model's own posterior, without any
  stochastic-gradient error.
* **relaxed, SGHMC (logit form)**: the same relaxed model with ``z_i`` kept as a latent, written
  as ``s_i ~ LogitRelaxedOneHotCategorical(1, w)``, ``z_i = alr_to_simplex(s_i / tau)``, sampled
  jointly by full-batch SGHMC.
* **relaxed, SGHMC (simplex site)**: the same, with ``z_i ~ RelaxedOneHotCategorical(tau, w)``
  as a NumPyro site (NumPyro's stick-breaking transform, float32).

Each relaxed posterior is reported as ``z = (mean - mean_exact) / sd_exact`` per parameter and
the sd ratio ``sd / sd_exact``. One NumPyro model carries an independent copy per temperature,
so each sampler compiles one program for all temperatures.

    python benchmarks/relaxed_mixture.py          # about 3-6 minutes on 2 CPU cores
    # SGHMC's own discretisation error: a quarter of the step, twice the steps
    python benchmarks/relaxed_mixture.py --skip quadrature sghmc_simplex --step-size 1.25e-4 \
        --steps 40000 --taus 0.5 0.1 --out /tmp/relaxed_mixture_small_step.json
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import sys
import time

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.distributions import constraints
from numpyro.infer import init_to_value

import sgmcmc
from sgmcmc.relaxed import LogitRelaxedOneHotCategorical, RelaxedOneHotCategorical, alr_to_simplex

RESULTS = pathlib.Path(__file__).with_name("results")
K = 2
PARAMS = ("mu_1", "mu_2", "w_1")


def data(seed: int = 1, n: int = 150) -> np.ndarray:
    rng = np.random.default_rng(seed)
    comp = rng.choice(K, size=n, p=[0.3, 0.7])
    return (np.array([-2.0, 2.0])[comp] + rng.normal(size=n)).astype(np.float32)


def priors():
    w = numpyro.sample("w", dist.Dirichlet(jnp.ones(K)))
    mu = numpyro.sample("mu", dist.ImproperUniform(constraints.ordered_vector, (), (K,)))
    numpyro.factor("mu_prior", dist.Normal(0.0, 5.0).log_prob(mu).sum(-1))
    return w, mu


def exact_mixture(x):
    w, mu = priors()
    with numpyro.plate("data", x.shape[0]):
        numpyro.sample("x", dist.MixtureSameFamily(dist.Categorical(w), dist.Normal(mu, 1.0)), obs=x)


def quadrature_mixture(x, temperatures, t_nodes):
    """The relaxed model with each z_i integrated out exactly up to quadrature error.

    With ``L = g_1 - g_2 ~ Logistic(0, 1)``, ``z_i1 = sigmoid((dl + L) / tau)``,
    ``dl = log(w_1 / w_2)``, the point's likelihood is ``E_L[exp(l_2 + z_i1 (l_1 - l_2))]``.
    Substituting ``L = -dl + tau t``: for ``|t| > c`` (``c = t_nodes`` half-range) ``z_i1`` is
    within ``sigmoid(-c)`` of 0 or 1 and the two tails are the logistic CDF times ``exp(l_2)``
    and ``exp(l_1)``; the middle is a midpoint rule in ``t``, which resolves the step of ``z``
    (unit width in ``t``) at every temperature.
    """
    with numpyro.plate("temperature", temperatures.shape[0]):
        w, mu = priors()
    ll = dist.Normal(mu[:, None, :], 1.0).log_prob(x[None, :, None])  # (T, N, K)
    l1, l2 = ll[..., 0], ll[..., 1]  # (T, N)
    tau = temperatures[:, None]
    lstar = -(jnp.log(w[:, 0]) - jnp.log(w[:, 1]))[:, None]  # (T, 1)
    half = -t_nodes[0] + 0.5 * (t_nodes[1] - t_nodes[0])  # c
    step = t_nodes[1] - t_nodes[0]
    y = lstar[..., None] + tau[..., None] * t_nodes  # (T, 1, M)
    log_pdf = jax.nn.log_sigmoid(y) + jax.nn.log_sigmoid(-y)
    middle = jax.nn.logsumexp(
        log_pdf + l2[..., None] + jax.nn.sigmoid(t_nodes) * (l1 - l2)[..., None], axis=-1
    ) + jnp.log(tau * step)
    lower = jax.nn.log_sigmoid(lstar - tau * half) + l2
    upper = jax.nn.log_sigmoid(-(lstar + tau * half)) + l1
    numpyro.factor("x", jnp.sum(jax.nn.logsumexp(jnp.stack([lower, middle, upper]), axis=0)))


def relaxed_logit(x, temperatures):
    with numpyro.plate("temperature", temperatures.shape[0]):
        w, mu = priors()
        with numpyro.plate("data", x.shape[0], dim=-2):
            s = numpyro.sample("s", LogitRelaxedOneHotCategorical(1.0, probs=w))
    z = alr_to_simplex(s / temperatures[:, None])
    numpyro.factor("x", jnp.sum(z * dist.Normal(mu, 1.0).log_prob(x[:, None, None])))


def relaxed_simplex(x, temperatures):
    with numpyro.plate("temperature", temperatures.shape[0]):
        w, mu = priors()
        with numpyro.plate("data", x.shape[0], dim=-2):
            z = numpyro.sample("z", RelaxedOneHotCategorical(temperatures, probs=w))
    numpyro.factor("x", jnp.sum(z * dist.Normal(mu, 1.0).log_prob(x[:, None, None])))


def latent_start(x, mu0, clip):
    """Each point's log-responsibility ratio under the starting means (unit scale), clipped."""
    ratio = -0.5 * (x[:, None] - mu0) ** 2
    return np.clip(ratio[:, :1] - ratio[:, 1:], -clip, clip)


def summarise(mu, w, reference=None) -> dict:
    draws = {"mu_1": mu[..., 0], "mu_2": mu[..., 1], "w_1": w[..., 0]}
    out = {}
    for name, d in draws.items():
        d = np.asarray(d, np.float64)
        row = {"mean": float(d.mean()), "sd": float(d.std()), "ess": float(az.ess(d)), "r_hat": float(az.rhat(d))}
        if reference is not None:
            row["z"] = (row["mean"] - reference[name]["mean"]) / reference[name]["sd"]
            row["sd_ratio"] = row["sd"] / reference[name]["sd"]
        out[name] = row
    return out


def table(results: dict, taus) -> str:
    lines = [
        "| tau | posterior | z(mu_1) | z(mu_2) | z(w_1) | sd ratio (mu_1, mu_2, w_1) | min ESS | max R-hat |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for tau in taus:
        for label, key in [
            ("relaxed, quadrature + NUTS", "quadrature"),
            ("relaxed, SGHMC, logit form", "sghmc_logit"),
            ("relaxed, SGHMC, simplex site", "sghmc_simplex"),
        ]:
            row = results.get(key, {}).get(str(tau))
            if row is None:
                continue
            zs = " | ".join(f"{row[p]['z']:+.2f}" for p in PARAMS)
            ratios = ", ".join(f"{row[p]['sd_ratio']:.2f}" for p in PARAMS)
            ess = min(row[p]["ess"] for p in PARAMS)
            rhat = max(row[p]["r_hat"] for p in PARAMS)
            lines.append(f"| {tau:g} | {label} | {zs} | {ratios} | {ess:.0f} | {rhat:.3f} |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--taus", type=float, nargs="+", default=[1.0, 0.5, 0.25, 0.1, 0.05])
    parser.add_argument("--steps", type=int, default=20_000, help="SGHMC steps after burn-in")
    parser.add_argument("--step-size", type=float, default=5e-4, help="SGHMC learning rate eta")
    parser.add_argument("--friction", type=float, default=0.1)
    parser.add_argument("--nodes", type=int, default=300, help="quadrature nodes per point, on |t| < 15")
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--num-chains", type=int, default=4)
    parser.add_argument("--skip", nargs="*", default=[], choices=["quadrature", "sghmc_logit", "sghmc_simplex"])
    parser.add_argument("--out", default=str(RESULTS / "relaxed_mixture.json"))
    args = parser.parse_args(argv)

    start_all = time.perf_counter()
    x = data()
    taus = np.asarray(args.taus, np.float32)
    num_t = len(taus)
    mu0 = np.array([-1.5, 1.5], np.float32)
    common = dict(num_samples=args.num_samples, num_chains=args.num_chains, progress=False)
    timings, results = {}, {}

    def run(name, fn):
        t0 = time.perf_counter()
        print(f"[{name}] ...", file=sys.stderr, flush=True)
        out = fn()
        timings[name] = time.perf_counter() - t0
        return out

    start = {"w": np.full(K, 0.5, np.float32), "mu": mu0}
    target = sgmcmc.Target.from_numpyro(exact_mixture, x, init_strategy=init_to_value(values=start))
    exact = run("exact", lambda: sgmcmc.sample(sgmcmc.nuts(target), num_warmup=1000, seed=0, **common))
    reference = summarise(exact.samples["mu"], exact.samples["w"])
    results["exact"] = reference

    replicated = {"w": np.full((num_t, K), 0.5, np.float32), "mu": np.broadcast_to(mu0, (num_t, K))}

    if "quadrature" not in args.skip:
        half = 15.0
        nodes = np.asarray(-half + (np.arange(args.nodes) + 0.5) * (2 * half / args.nodes), np.float32)
        target = sgmcmc.Target.from_numpyro(
            quadrature_mixture, x, taus, nodes, init_strategy=init_to_value(values=replicated)
        )
        r = run("quadrature", lambda: sgmcmc.sample(sgmcmc.nuts(target), num_warmup=500, seed=0, **common))
        results["quadrature"] = {
            str(float(t)): summarise(r.samples["mu"][:, :, j], r.samples["w"][:, :, j], reference)
            for j, t in enumerate(args.taus)
        }

    sg = dict(num_warmup=args.steps // 4, thin=max(1, args.steps // args.num_samples), seed=1, **common)
    s0 = latent_start(x, mu0, 3.0)
    if "sghmc_logit" not in args.skip:
        init = {**replicated, "s": np.broadcast_to(s0[:, None, :], (x.shape[0], num_t, 1))}
        target = sgmcmc.Target.from_numpyro(relaxed_logit, x, taus, init_strategy=init_to_value(values=init))
        sampler = sgmcmc.sghmc(target, args.step_size, friction=args.friction)
        r = run("sghmc_logit", lambda: sgmcmc.sample(sampler, initial_position=target.initial_position, **sg))
        results["sghmc_logit"] = {
            str(float(t)): summarise(r.samples["mu"][:, :, j], r.samples["w"][:, :, j], reference)
            for j, t in enumerate(args.taus)
        }

    if "sghmc_simplex" not in args.skip:
        u0 = np.clip(s0[:, None, :] / taus[None, :, None], -10.0, 10.0)  # the same start, u = s / tau
        z0 = np.asarray(alr_to_simplex(u0))
        init = {**replicated, "z": z0}
        target = sgmcmc.Target.from_numpyro(relaxed_simplex, x, taus, init_strategy=init_to_value(values=init))
        sampler = sgmcmc.sghmc(target, args.step_size, friction=args.friction)
        r = run("sghmc_simplex", lambda: sgmcmc.sample(sampler, initial_position=target.initial_position, **sg))
        results["sghmc_simplex"] = {
            str(float(t)): summarise(r.samples["mu"][:, :, j], r.samples["w"][:, :, j], reference)
            for j, t in enumerate(args.taus)
        }

    total_s = time.perf_counter() - start_all
    text = table(results, args.taus)
    print(
        "exact (NUTS, assignments summed out): "
        + ", ".join(f"{p} {reference[p]['mean']:.3f} ± {reference[p]['sd']:.3f}" for p in PARAMS)
    )
    print(
        f"SGHMC eta={args.step_size}, friction={args.friction}, {args.steps} steps + {args.steps // 4} burn-in, "
        f"{args.num_chains} chains; JAX {jax.__version__} on {jax.default_backend()}, {os.cpu_count()} CPU cores; "
        f"total {total_s:.0f} s"
    )
    print(text)
    command = " ".join(["python benchmarks/relaxed_mixture.py", *(sys.argv[1:] if argv is None else argv)])
    out = {
        "benchmark": "relaxed_mixture",
        "command": command,
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "results": results,
        "timings_s": timings,
        "total_s": total_s,
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "backend": jax.default_backend(),
            "python": platform.python_version(),
            "jax": jax.__version__,
            "numpyro": numpyro.__version__,
        },
        "table": text,
    }
    pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    return out


if __name__ == "__main__":
    main()
