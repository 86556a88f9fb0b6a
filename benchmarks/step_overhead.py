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

    python benchmarks/step_overhead.py            # prints a markdown table, writes results/step_overhead.json
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


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 128, 512])
    parser.add_argument("--hidden", type=int, default=100)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default=str(RESULTS / "step_overhead.json"))
    args = parser.parse_args(argv)

    data = load_digits()
    target = make_mlp_target(data.x_train, data.y_train, num_hidden=args.hidden)
    params = init_mlp_params(jax.random.key(0), data.x_train.shape[1], args.hidden, 10)
    num_params = sum(int(np.size(x)) for x in jax.tree.leaves(params))
    key = jax.random.key(1)
    step_size = 1e-5

    rows = []
    for batch_size in args.batch_sizes:
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
    }
    pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    return out


if __name__ == "__main__":
    main()
