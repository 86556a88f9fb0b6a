"""SGLD step time against a plain optax SGD step on the same MLP, data and minibatches.

Both loops run ``num_steps`` steps inside one jitted ``lax.scan`` in this process:

* **SGD** -- what a JAX user writes: per step, split the key, draw a minibatch of
  indices, take the gradient of the minibatch loss ``-(log p(theta) + N/n sum log
  p(y|x, theta))``, apply ``optax.sgd``.
* **SGLD kernel** -- the same loop with ``sgmcmc.sgld(...).step`` in place of the
  gradient + optax update (same target, same index scheme: ``sgmcmc.noise.uniform_indices``).
* **SGLD via sample()** -- the public driver ``sgmcmc.sample`` (one chain, thin 1 and
  thin 10), timing its sampling phase only (compilation excluded); it also stores every
  kept draw and its statistics.

Times are the median over repeats of the whole scan divided by its number of steps.
The ratio SGLD / SGD is the overhead of sampling instead of optimising. The MLP is
64-100-10 tanh (7,510 parameters) on the 1,347 training digits shipped with sgmcmc.

The second table is the SG-MCMC family on the MLP of the SG-MCMC issue, 64-64-32-10 tanh
(6,570 parameters), batch 64, same loop for everyone (split the key, step, carry):

* optax SGD (the baseline, 1 gradient per step);
* sgmcmc SGLD, pSGLD (no correction term), SGHMC, SGNHT, BAOAB (1 gradient each) and
  SGLD-CV (2 minibatch gradients per step: at theta and at the centre);
* BlackJAX 1.7.1 SGLD and SGHMC, given the minibatch drawn with the same index scheme, with
  its own ``jax.random.normal`` noise. Its SGHMC discards the last momentum update, so with
  one integration step XLA removes the gradient as dead code (a random walk, 0 gradients);
  with two integration steps one gradient is live.

Ratios are per step and per gradient evaluation (step time / (SGD step time x gradients
per step)). The third table is the step time of SGD, SGLD and SGHMC on synthetic data with N = 1e3 ...
1e6 examples (64 features, 10 classes, same MLP): minibatch indices are drawn inside the
compiled step from device-resident data, so nothing in a step is O(N); what remains is the
memory latency of gathering n random rows from a larger array, which SGD pays too.

    python benchmarks/step_overhead.py            # prints markdown tables, writes results/step_overhead.json
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

import sgmcmc
from sgmcmc import noise
from sgmcmc.datasets import load_digits
from sgmcmc.demo import init_mlp_params, make_mlp_target

RESULTS = pathlib.Path(__file__).with_name("results")


def median_time(fn, repeats: int) -> float:
    jax.block_until_ready(fn())  # compile and warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved_median_times(calls: dict, repeats: int) -> dict:
    """Median wall time of each zero-argument call, repeats taken round-robin.

    On a shared machine the load drifts; timing the loops in turn, repeat after
    repeat, exposes every loop to the same drift, so their ratios are steadier
    than with each loop's repeats taken back to back.
    """
    for fn in calls.values():
        jax.block_until_ready(fn())  # compile and warm up
    times = {name: [] for name in calls}
    for _ in range(repeats):
        for name, fn in calls.items():
            start = time.perf_counter()
            jax.block_until_ready(fn())
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def sgd_loop(target, batch_size: int, learning_rate: float, num_steps: int):
    """A plain optax SGD loop with the same minibatch scheme as sgmcmc's estimator."""
    optimizer = optax.sgd(learning_rate)
    scale = target.num_data / batch_size

    def loss(params, batch):
        return -(target.logprior_fn(params) + scale * jnp.sum(target.loglik_fn(params, batch)))

    @jax.jit
    def run(params, data, key):
        def body(carry, _):
            params, opt_state, key = carry
            key, key_batch = jax.random.split(key)
            idx = noise.uniform_indices(key_batch, batch_size, target.num_data)
            batch = jax.tree.map(lambda x: jnp.take(x, idx, axis=0), data)
            grads = jax.grad(loss)(params, batch)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state, key), None

        (params, _, _), _ = lax.scan(body, (params, optimizer.init(params), key), None, length=num_steps)
        return params

    return run


def sgld_kernel_loop(target, batch_size: int, step_size: float, num_steps: int):
    """The same loop around ``sgmcmc.sgld(...).step``; data passed as an argument."""
    sampler = sgmcmc.sgld(target, step_size, batch_size=batch_size)

    @jax.jit
    def run(params, data, key):
        bound = sampler.rebuild(target.with_data(data))

        def body(carry, _):
            state, key = carry
            key, key_step = jax.random.split(key)
            state, _ = bound.step(key_step, state)
            return (state, key), None

        (state, _), _ = lax.scan(body, (bound.init(params), key), None, length=num_steps)
        return state.position

    return run


def init_mlp2_params(key: jax.Array, sizes: tuple[int, ...]) -> dict:
    """N(0, 1/fan_in) weights and zero biases for an MLP with layer ``sizes`` (inputs first)."""
    keys = jax.random.split(key, len(sizes) - 1)
    names = [f"l{i}" for i in range(len(sizes) - 2)] + ["out"]
    return {
        name: {
            "w": jax.random.normal(k, (m, n)) / np.sqrt(m),
            "b": jnp.zeros((n,)),
        }
        for name, k, m, n in zip(names, keys, sizes[:-1], sizes[1:])
    }


def make_deep_mlp_target(x, y, hidden=(64, 32), seed=0) -> sgmcmc.Target:
    """Bayesian tanh MLP ``64-hidden...-10`` with a N(0, 1) prior and a categorical likelihood."""
    sizes = (x.shape[1], *hidden, int(y.max()) + 1)

    def logits(params, inputs):
        h = inputs
        for i in range(len(hidden)):
            h = jnp.tanh(h @ params[f"l{i}"]["w"] + params[f"l{i}"]["b"])
        return h @ params["out"]["w"] + params["out"]["b"]

    @jax.jit
    def logprior(params):
        return -0.5 * sum(jnp.sum(w**2) for w in jax.tree.leaves(params))

    @jax.jit
    def loglik(params, batch):
        log_probs = jax.nn.log_softmax(logits(params, batch["x"]), axis=-1)
        return jnp.take_along_axis(log_probs, batch["y"][:, None], axis=-1)[:, 0]

    init = init_mlp2_params(jax.random.key(seed), sizes)
    return sgmcmc.Target.from_data(logprior, loglik, {"x": x, "y": y}, init, name="deep_mlp")


def kernel_loop(sampler, target, num_steps: int):
    """``num_steps`` steps of an sgmcmc sampler in a jitted scan (data passed as an argument)."""

    @jax.jit
    def run(params, data, key):
        bound = sampler.rebuild(target.with_data(data))

        def body(carry, _):
            state, key = carry
            key, key_step = jax.random.split(key)
            state, _ = bound.step(key_step, state)
            return (state, key), None

        (state, _), _ = lax.scan(body, (bound.init(params), key), None, length=num_steps)
        return state.position

    return run


def noise_loop(num_steps: int):
    """``sgmcmc.noise.normal_like`` of the parameters, added to them, in the same kind of scan."""

    @jax.jit
    def run(params, data, key):
        del data

        def body(carry, _):
            params, key = carry
            key, key_step = jax.random.split(key)
            z = noise.normal_like(key_step, params)
            return (jax.tree.map(lambda p, e: p + 1e-6 * e, params, z), key), None

        return lax.scan(body, (params, key), None, length=num_steps)[0][0]

    return run


def blackjax_loop(
    name: str, target, batch_size: int, step_size: float, num_steps: int, friction: float = 0.1, integration_steps=1
):
    """BlackJAX's SGLD / SGHMC with sgmcmc's minibatch index scheme (one minibatch per call).

    BlackJAX 1.7.1's SGHMC discards the last momentum update, so the gradient
    of its last integration step is dead code that XLA removes: with one
    integration step no gradient is computed at all, with two, one.
    """
    import blackjax

    def loglik_one(params, example):
        return target.loglik_fn(params, jax.tree.map(lambda v: v[None], example))[0]

    grad_fn = blackjax.sgmcmc.gradients.grad_estimator(target.logprior_fn, loglik_one, target.num_data)
    if name == "sgld":
        algorithm = blackjax.sgld(grad_fn)
    else:
        algorithm = blackjax.sghmc(grad_fn, num_integration_steps=integration_steps, alpha=friction)

    @jax.jit
    def run(params, data, key):
        def body(carry, _):
            position, key = carry
            key, key_batch, key_step = jax.random.split(key, 3)
            idx = noise.uniform_indices(key_batch, batch_size, target.num_data)
            batch = jax.tree.map(lambda v: jnp.take(v, idx, axis=0), data)
            return (algorithm.step(key_step, position, batch, step_size), key), None

        (position, _), _ = lax.scan(body, (algorithm.init(params), key), None, length=num_steps)
        return position

    return run


def family_table(args, data) -> tuple[list, str, int]:
    """Per-step time of the SG-MCMC family and BlackJAX against optax SGD on the 64-64-32-10 MLP."""
    target = make_deep_mlp_target(data.x_train, data.y_train, hidden=tuple(args.family_hidden))
    params = target.initial_position
    num_params = sum(int(np.size(x)) for x in jax.tree.leaves(params))
    n, steps, key = args.family_batch, args.steps, jax.random.key(1)
    eps = 1e-5
    loops = {
        "optax SGD": (sgd_loop(target, n, eps / 2, steps), 1),
        "sgmcmc SGLD": (kernel_loop(sgmcmc.sgld(target, eps, batch_size=n), target, steps), 1),
        "sgmcmc pSGLD": (kernel_loop(sgmcmc.psgld(target, eps, batch_size=n), target, steps), 1),
        "sgmcmc SGHMC": (kernel_loop(sgmcmc.sghmc(target, eps / 2, friction=0.1, batch_size=n), target, steps), 1),
        "sgmcmc SGNHT": (kernel_loop(sgmcmc.sgnht(target, eps / 2, diffusion=0.1, batch_size=n), target, steps), 1),
        "sgmcmc BAOAB": (kernel_loop(sgmcmc.baoab(target, 3e-3, friction=1.0, batch_size=n), target, steps), 1),
        "sgmcmc SGLD-CV": (
            kernel_loop(sgmcmc.sgld_cv(target, eps, batch_size=n, centre=params), target, steps),
            2,
        ),
    }
    # SGD as inference: the same SGD step on the mean loss (learning rate eps N / 2 matches optax SGD on the
    # sum-scaled loss at eps / 2), plus SWAG's once-per-epoch moment collection.
    num_data = target.num_data
    loops["sgmcmc constant SGD"] = (
        kernel_loop(sgmcmc.constant_sgd(target, eps * num_data / 2, batch_size=n), target, steps),
        1,
    )
    loops["sgmcmc SWAG"] = (kernel_loop(sgmcmc.swag(target, eps * num_data / 2, batch_size=n), target, steps), 1)
    # Without noise (T = 0) the samplers are their optimisers: what the update rule itself costs.
    loops["sgmcmc SGLD, T = 0"] = (
        kernel_loop(sgmcmc.sgld(target, eps, batch_size=n, temperature=0.0), target, steps),
        1,
    )
    loops["sgmcmc SGHMC, T = 0"] = (
        kernel_loop(sgmcmc.sghmc(target, eps / 2, friction=0.1, batch_size=n, temperature=0.0), target, steps),
        1,
    )
    loops["noise only (normal_like)"] = (noise_loop(steps), 0)
    try:
        loops["BlackJAX SGLD"] = (blackjax_loop("sgld", target, n, eps / 2, steps), 1)
        # One integration step computes no gradient (dead code); two compute one (the first).
        loops["BlackJAX SGHMC, 1 integration step (no gradient)"] = (
            blackjax_loop("sghmc", target, n, eps / 2, steps),
            0,
        )
        loops["BlackJAX SGHMC, 2 integration steps"] = (
            blackjax_loop("sghmc", target, n, eps / 2, steps, integration_steps=2),
            1,
        )
    except ImportError:  # pragma: no cover - blackjax is in the bench extra
        print("blackjax not installed: skipping its rows")
    calls = {name: (lambda loop=loop: loop(params, target.data, key)) for name, (loop, _) in loops.items()}
    times = {name: t / steps for name, t in interleaved_median_times(calls, args.repeats).items()}
    rows = []
    for name, (_, grads) in loops.items():
        ratio = times[name] / times["optax SGD"]
        rows.append(
            {
                "sampler": name,
                "step_us": times[name] * 1e6,
                "grads_per_step": grads,
                "ratio": ratio,
                "ratio_per_grad": ratio / grads if grads else None,
            }
        )
    lines = ["| loop | step (us) | gradients / step | ratio to SGD | ratio per gradient |", "|---|---|---|---|---|"]
    for r in rows:
        per_grad = "" if r["ratio_per_grad"] is None else f"**{r['ratio_per_grad']:.2f}**"
        lines.append(f"| {r['sampler']} | {r['step_us']:.1f} | {r['grads_per_step']} | {r['ratio']:.2f} | {per_grad} |")
    return rows, "\n".join(lines), num_params


def scaling_table(args) -> tuple[list, str]:
    """Step time against the number of examples N (synthetic data, same MLP): SGD, SGLD, SGHMC.

    Every (loop, N) is timed in the same round-robin, so load drift does not
    masquerade as an effect of N. Plain SGD with the same minibatch gather is
    measured too: the gather of n random rows from a large array costs more
    than from a small one (memory latency), for SGD and the samplers alike.
    """
    rng = np.random.default_rng(0)
    n, steps, key = args.family_batch, args.steps, jax.random.key(2)
    names = ("sgd", "sgld", "sghmc")
    calls = {}
    for size in args.scaling_sizes:
        x = rng.normal(size=(size, 64)).astype(np.float32)
        y = rng.integers(0, 10, size=size).astype(np.int32)
        target = make_deep_mlp_target(x, y, hidden=tuple(args.family_hidden))
        loops = {
            "sgd": sgd_loop(target, n, 5e-7, steps),
            "sgld": kernel_loop(sgmcmc.sgld(target, 1e-6, batch_size=n), target, steps),
            "sghmc": kernel_loop(sgmcmc.sghmc(target, 5e-7, friction=0.1, batch_size=n), target, steps),
        }
        for name, loop in loops.items():
            calls[name, size] = lambda loop=loop, p=target.initial_position, d=target.data: loop(p, d, key)
    times = interleaved_median_times(calls, args.repeats)
    rows = [
        {"num_data": size, **{f"{name}_step_us": times[name, size] / steps * 1e6 for name in names}}
        for size in args.scaling_sizes
    ]
    for r in rows:
        for name in names:
            r[f"{name}_relative"] = r[f"{name}_step_us"] / rows[0][f"{name}_step_us"]
        for name in ("sgld", "sghmc"):
            r[f"{name}_over_sgd"] = r[f"{name}_step_us"] / r["sgd_step_us"]
    lines = [
        "| N | SGD (us) | vs first N | SGLD (us) | vs first N | SGLD / SGD | SGHMC (us) | vs first N | SGHMC / SGD |",
        "|" + "---|" * 9,
    ]
    for r in rows:
        lines.append(
            f"| {r['num_data']:.0e} | {r['sgd_step_us']:.1f} | {r['sgd_relative']:.2f} | {r['sgld_step_us']:.1f} | "
            f"{r['sgld_relative']:.2f} | {r['sgld_over_sgd']:.2f} | {r['sghmc_step_us']:.1f} | "
            f"{r['sghmc_relative']:.2f} | {r['sghmc_over_sgd']:.2f} |"
        )
    return rows, "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 128, 512])
    parser.add_argument("--hidden", type=int, default=100)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--family-batch", type=int, default=64)
    parser.add_argument("--family-hidden", type=int, nargs="+", default=[64, 32])
    parser.add_argument("--scaling-sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000, 1_000_000])
    parser.add_argument("--skip", nargs="*", default=[], choices=["overhead", "family", "scaling"])
    parser.add_argument("--out", default=str(RESULTS / "step_overhead.json"))
    args = parser.parse_args(argv)

    data = load_digits()
    target = make_mlp_target(data.x_train, data.y_train, num_hidden=args.hidden)
    params = init_mlp_params(jax.random.key(0), data.x_train.shape[1], args.hidden, 10)
    num_params = sum(int(np.size(x)) for x in jax.tree.leaves(params))
    key = jax.random.key(1)
    step_size = 1e-5

    rows = []
    for batch_size in [] if "overhead" in args.skip else args.batch_sizes:
        sgd = sgd_loop(target, batch_size, step_size / 2, args.steps)
        sgld = sgld_kernel_loop(target, batch_size, step_size, args.steps)
        t_sgd = median_time(lambda sgd=sgd: sgd(params, target.data, key), args.repeats) / args.steps
        t_sgld = median_time(lambda sgld=sgld: sgld(params, target.data, key), args.repeats) / args.steps

        driver = {}
        sampler = sgmcmc.sgld(target, step_size, batch_size=batch_size)
        for thin in (1, 10):
            num_samples = args.steps // thin
            sample_times = []
            for r in range(args.repeats + 1):
                res = sgmcmc.sample(
                    sampler,
                    num_samples=num_samples,
                    num_chains=1,
                    thin=thin,
                    seed=r,
                    initial_position=params,
                    progress=False,
                    chunk_size=500 // thin,
                )
                sample_times.append(res.timing["sampling_s"])
            driver[thin] = statistics.median(sample_times[1:]) / (num_samples * thin)

        rows.append(
            {
                "batch_size": batch_size,
                "sgd_step_us": t_sgd * 1e6,
                "sgld_kernel_step_us": t_sgld * 1e6,
                "sgld_sample_thin1_step_us": driver[1] * 1e6,
                "sgld_sample_thin10_step_us": driver[10] * 1e6,
                "ratio_kernel": t_sgld / t_sgd,
                "ratio_sample_thin1": driver[1] / t_sgd,
                "ratio_sample_thin10": driver[10] / t_sgd,
            }
        )

    header = (
        "| batch | SGD step (us) | SGLD kernel (us) | ratio | sample() thin=10 (us) | ratio | "
        "sample() thin=1 (us) | ratio |"
    )
    lines = [header, "|" + "---|" * 8]
    for r in rows:
        lines.append(
            f"| {r['batch_size']} | {r['sgd_step_us']:.1f} | {r['sgld_kernel_step_us']:.1f} | "
            f"**{r['ratio_kernel']:.2f}** | {r['sgld_sample_thin10_step_us']:.1f} | {r['ratio_sample_thin10']:.2f} | "
            f"{r['sgld_sample_thin1_step_us']:.1f} | {r['ratio_sample_thin1']:.2f} |"
        )
    table = "\n".join(lines)
    print(
        f"MLP 64-{args.hidden}-10 ({num_params} parameters), {target.num_data} training digits, "
        f"{args.steps} steps, median of {args.repeats} repeats"
    )
    print(table)

    family_rows, family, family_params = [], "", None
    if "family" not in args.skip:
        family_rows, family, family_params = family_table(args, data)
        hidden = "-".join(str(h) for h in args.family_hidden)
        print(f"\nSG-MCMC family: MLP 64-{hidden}-10 ({family_params} parameters), batch {args.family_batch}")
        print(family)
    scaling_rows, scaling = [], ""
    if "scaling" not in args.skip:
        scaling_rows, scaling = scaling_table(args)
        print(f"\nStep time against N (synthetic data, batch {args.family_batch})")
        print(scaling)

    out = {
        "benchmark": "step_overhead",
        "command": "python benchmarks/step_overhead.py",
        "num_params": num_params,
        "num_data": target.num_data,
        "steps": args.steps,
        "repeats": args.repeats,
        "rows": rows,
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "jax": jax.__version__,
            "backend": jax.default_backend(),
        },
        "table": table,
        "family": {
            "num_params": family_params,
            "batch_size": args.family_batch,
            "hidden": args.family_hidden,
            "rows": family_rows,
            "table": family,
        },
        "scaling": {"batch_size": args.family_batch, "rows": scaling_rows, "table": scaling},
    }
    pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    return out


if __name__ == "__main__":
    main()
