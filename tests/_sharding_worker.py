"""Subprocess side of tests/test_sharding.py: runs with forced CPU devices, saves arrays for the test to check.

``python tests/_sharding_worker.py single OUT.npz``: one process with 4 forced
CPU devices (XLA_FLAGS set by the caller, before JAX starts).
``python tests/_sharding_worker.py host PID PORT OUT.npz``: process PID of 2,
each with 2 forced CPU devices, joined by ``jax.distributed.initialize`` on
127.0.0.1:PORT into 4 global devices.

Both run the same data-parallel SGLD run (:func:`sgld_run`) so the test can
compare the two-process draws with the single-process ones.
"""

from __future__ import annotations

import re
import sys
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

NUM_DATA, BATCH = 203, 20  # N not a multiple of 2 or 4: unequal strata, padded rows


_TARGETS: list = []


def logistic_target():
    """One target object per process (the driver caches its programs by target)."""
    if _TARGETS:
        return _TARGETS[0]
    import sgmcmc

    rng = np.random.RandomState(0)
    x = rng.randn(NUM_DATA, 3).astype(np.float32)
    y = (x @ np.array([1.0, -1.0, 0.5]) + rng.randn(NUM_DATA) > 0).astype(np.float32)

    def loglik(w, batch):
        z = batch["x"] @ w
        return batch["y"] * z - jnp.logaddexp(0.0, z)

    _TARGETS.append(sgmcmc.Target.from_data(lambda w: -0.5 * jnp.sum(w**2), loglik, {"x": x, "y": y}, jnp.zeros(3)))
    return _TARGETS[0]


class LoopState(NamedTuple):
    position: jax.Array


def loop_sampler(target):
    """A toy kernel whose step runs a while_loop for a random, per-chain number of iterations.

    Vmapped, the loop runs until every chain's condition is false; left to the
    SPMD partitioner that "any" is an all-reduce at every iteration, which the
    driver's shard_map over the chains axis avoids.
    """
    from sgmcmc import noise
    from sgmcmc.samplers.base import Sampler
    from sgmcmc.samplers.sg_common import SGInfo

    def step(key, state, batch=None):
        trips = lax.while_loop(lambda i: noise.uniform_at(key, i) > 0.3, lambda i: i + 1, 0)
        moved = LoopState(0.5 * state.position + trips.astype(state.position.dtype))
        one = jnp.ones(())
        return moved, SGInfo(one, jnp.zeros((), bool), one, trips, -jnp.sum(moved.position**2))

    return Sampler(LoopState, step, target, None, "loop")


def sgld_run(mesh):
    import sgmcmc

    sampler = sgmcmc.sgld(logistic_target(), 1e-3, batch_size=BATCH)
    return sgmcmc.sample(sampler, num_samples=30, num_chains=2, seed=1, progress=False, mesh=mesh).samples


def collectives(mesh_shape: tuple) -> dict:
    """Collective ops in the driver's compiled chunk programs for a mesh of this shape."""
    from sgmcmc.run import _COMPILED

    texts = [
        c.as_text()
        for k, c in _COMPILED.items()
        if k[0] == "chunk" and k[3] and tuple(k[3][0].shape.values()) == mesh_shape
    ]
    ops = ("all-reduce", "all-gather", "collective-permute", "all-to-all", "reduce-scatter")
    return {op: sum(len(re.findall(rf"\b{op}(?:-start)?\(", t)) for t in texts) for op in ops} | {
        "programs": len(texts)
    }


def estimator_checks(out: dict) -> None:
    """Gradient estimates over 2 and 4 data devices against one device, for the same minibatch."""
    from sgmcmc import noise, sharding
    from sgmcmc.gradients import minibatch

    target = logistic_target()
    position = jnp.array([0.3, -0.2, 0.1])
    key = jax.random.key(5)
    rows = np.asarray(noise.uniform_indices(jax.random.key(9), BATCH, NUM_DATA))
    batch = jax.tree.map(lambda x: x[rows], target.data)
    references = {}
    for devices in (2, 4):
        data = sharding.shard_data(target.data, sharding.make_mesh(1, devices))
        sharded = sharding.data_parallel_target(target, data)
        parallel = minibatch(sharded, BATCH)

        def estimates(key, position, batch, estimate=parallel.estimate, full=sharded.logdensity):
            return estimate(key, position, batch), estimate(key, position), jax.value_and_grad(full)(position)

        # the caller's batch split over the devices, the stratified batch the estimator draws itself,
        # and the full-data log density exact samplers use
        given, drawn, full = jax.jit(estimates)(key, position, batch)
        out[f"full_grad_{devices}"] = np.asarray(full[1])
        out[f"full_value_{devices}"] = np.asarray(full[0])
        out[f"batch_grad_{devices}"] = np.asarray(given.grad)
        out[f"drawn_grad_{devices}"] = np.asarray(drawn.grad)
        out[f"drawn_value_{devices}"] = np.asarray(drawn.value)
        # the drawn stratified batch's rows, gathered on one device and weighted N_s / m
        counts = np.asarray(data.counts)
        per = BATCH // devices
        local = np.asarray(noise.uniform_indices(key, BATCH, np.repeat(counts, per)))
        global_rows = np.repeat(np.cumsum(counts) - counts, per) + local
        references[devices] = (
            jax.tree.map(lambda x, r=global_rows: x[r], target.data),
            np.repeat(counts / per, per).astype(np.float32),
        )

    def one_device(position, batch, references):
        def weighted(w, rows, weights):
            return target.logprior_fn(w) + jnp.sum(weights * target.loglik_fn(w, rows))

        grads = {d: jax.value_and_grad(weighted)(position, *r) for d, r in references.items()}
        full = jax.value_and_grad(target.logdensity)(position)
        return minibatch(target, BATCH).estimate(None, position, batch).grad, grads, full

    plain, grads, full = jax.jit(one_device)(position, batch, references)
    out["plain_batch_grad"] = np.asarray(plain)
    out["full_grad_1"], out["full_value_1"] = np.asarray(full[1]), np.asarray(full[0])
    for devices, (value, grad) in grads.items():
        out[f"gathered_grad_{devices}"] = np.asarray(grad)
        out[f"gathered_value_{devices}"] = np.asarray(value)


def error_message(fn) -> str:
    try:
        fn()
    except (ValueError, TypeError) as err:
        return f"{type(err).__name__}: {err}"
    return "no error"


def single(path: str) -> None:
    import sgmcmc
    from sgmcmc import sharding

    assert len(jax.devices()) == 4, jax.devices()
    out: dict = {}
    clock = time.process_time()

    def lap(what):
        nonlocal clock
        now = time.process_time()
        print(f"{what}: {now - clock:.2f} s CPU", file=sys.stderr)
        clock = now

    # 1. chains over 4 devices: the same draws as on one device
    gaussian = sgmcmc.Target.from_logdensity(
        lambda p: -0.5 * jnp.sum(p**2 * jnp.arange(1.0, 5.0)), jnp.zeros(4), name="gaussian"
    )
    hmc = sgmcmc.hmc(gaussian, 0.3, 5)
    out["hmc_1"] = sgmcmc.sample(hmc, num_samples=25, num_chains=8, seed=3, progress=False).samples
    hmc_mesh = sgmcmc.sample(hmc, num_samples=25, num_chains=8, seed=3, progress=False, mesh=sharding.make_mesh(4))
    out["hmc_4"] = hmc_mesh.samples
    out["hmc_4_state_spec"] = np.array(str(hmc_mesh.last_state.position.sharding.spec))
    # a while_loop with a per-chain trip count (NUTS' shape, compiled in a fraction of NUTS' time)
    loop = loop_sampler(gaussian)
    out["loop_1"] = sgmcmc.sample(loop, num_samples=20, num_chains=8, seed=4, progress=False).samples
    out["loop_4"] = sgmcmc.sample(
        loop, num_samples=20, num_chains=8, seed=4, progress=False, mesh=sharding.make_mesh(4)
    ).samples
    lap("chains")
    # 2. data-parallel gradient estimates
    estimator_checks(out)
    lap("estimators")
    # 3. the driver with a data axis: the chains axis does not change the draws
    out["sgld_chains2_data2"] = sgld_run(sharding.make_mesh(2, 2))
    out["sgld_chains1_data2"] = sgld_run(sharding.make_mesh(1, 2))
    lap("sgld runs")
    for shape in ((2, 2), (4, 1)):
        for op, count in collectives(shape).items():
            out[f"collectives_{shape[0]}x{shape[1]}_{op}"] = np.array(count)
    # 4. clear errors
    out["error_chains"] = np.array(
        error_message(
            lambda: sgmcmc.sample(hmc, num_samples=5, num_chains=6, seed=0, progress=False, mesh=sharding.make_mesh(4))
        )
    )
    out["error_batch"] = np.array(
        error_message(
            lambda: sgmcmc.sample(
                sgmcmc.sgld(logistic_target(), 1e-3, batch_size=18),
                num_samples=5,
                num_chains=1,
                seed=0,
                progress=False,
                mesh=sharding.make_mesh(1, 4),
            )
        )
    )
    out["error_no_data"] = np.array(
        error_message(
            lambda: sgmcmc.sample(
                hmc, num_samples=5, num_chains=2, seed=0, progress=False, mesh=sharding.make_mesh(2, 2)
            )
        )
    )
    out["error_cv"] = np.array(
        error_message(
            lambda: sgmcmc.sample(
                sgmcmc.sgld_cv(logistic_target(), 1e-3, batch_size=BATCH),
                num_samples=5,
                num_chains=1,
                seed=0,
                progress=False,
                mesh=sharding.make_mesh(1, 2),
            )
        )
    )
    lap("errors")
    np.savez(path, **out)


def host(process_id: int, port: int, path: str) -> None:
    jax.distributed.initialize(
        coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=process_id, initialization_timeout=60
    )
    from sgmcmc import sharding

    assert len(jax.devices()) == 4 and len(jax.local_devices()) == 2, (jax.devices(), jax.local_devices())
    samples = sgld_run(sharding.make_mesh(2, 2))
    np.savez(path, sgld_chains2_data2=samples, process_count=np.array(jax.process_count()))


if __name__ == "__main__":
    if sys.argv[1] == "single":
        single(sys.argv[2])
    else:
        host(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
