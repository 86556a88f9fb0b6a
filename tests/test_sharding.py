"""Chains and data over several devices and hosts (sgmcmc.sharding, sample(mesh=...)).

The forced CPU device count must be set before JAX starts, so the checks run
in subprocesses (tests/_sharding_worker.py): one process with 4 forced CPU
devices, and two processes with 2 devices each joined by
``jax.distributed.initialize`` on the loopback interface, all started at
once by one fixture. Each subprocess has a timeout; the tests then compare
the arrays the workers saved.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

import sgmcmc
from sgmcmc import sharding

WORKER = Path(__file__).with_name("_sharding_worker.py")
TIMEOUT_S = 240


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args, devices: int, log: Path) -> subprocess.Popen:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}".strip()
    env["JAX_PLATFORMS"] = "cpu"
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    handle = open(log, "w")  # closed by the fixture once the process ends
    proc = subprocess.Popen([sys.executable, str(WORKER), *map(str, args)], env=env, stdout=handle, stderr=handle)
    proc.log, proc.handle = log, handle
    return proc


def _run_workers(tmp: Path) -> list[str]:
    """Runs the single-process (4 devices) and two-process (2 x 2 devices) workers concurrently; their failures."""
    port = _free_port()
    procs = {
        "single": _start(["single", tmp / "single.npz"], 4, tmp / "single.log"),
        "host0": _start(["host", 0, port, tmp / "host0.npz"], 2, tmp / "host0.log"),
        "host1": _start(["host", 1, port, tmp / "host1.npz"], 2, tmp / "host1.log"),
    }
    failures = []
    deadline = time.monotonic() + TIMEOUT_S  # one limit for all three, however they fail
    for name, proc in procs.items():
        try:
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            failures.append(f"{name} timed out after {TIMEOUT_S} s")
        finally:
            proc.handle.close()
        if proc.returncode:
            failures.append(f"{name} exited with {proc.returncode}:\n{proc.log.read_text()[-3000:]}")
    for proc in procs.values():  # never leave a process behind
        if proc.poll() is None:
            proc.kill()
    return failures


@pytest.fixture(scope="module")
def worker_results(tmp_path_factory):
    """The workers' saved arrays (``None`` for a worker that failed) and the failures.

    Under pytest-xdist the workers run once per session, whichever test
    process gets there first (a lock in the session's shared temporary
    directory), not once per test process.
    """
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        tmp = tmp_path_factory.mktemp("sharding")
        failures = _run_workers(tmp)
    else:
        tmp = tmp_path_factory.getbasetemp().parent / "sharding_workers"
        tmp.mkdir(exist_ok=True)
        with open(tmp / "lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (tmp / "failures.json").exists():
                (tmp / "failures.json").write_text(json.dumps(_run_workers(tmp)))
            failures = json.loads((tmp / "failures.json").read_text())
    names = ("single", "host0", "host1")
    return {n: np.load(tmp / f"{n}.npz") if (tmp / f"{n}.npz").exists() else None for n in names}, failures


def _single(worker_results):
    results, failures = worker_results
    if results["single"] is None:
        pytest.fail("the 4-device worker failed: " + "\n".join(failures))
    return results["single"]


def test_chains_over_four_devices_give_the_same_draws_as_one_device(worker_results):
    """8 chains, 2 per device: HMC, and a kernel with a per-chain while loop (NUTS' shape)."""
    out = _single(worker_results)
    np.testing.assert_array_equal(out["hmc_4"], out["hmc_1"])
    assert str(out["hmc_4_state_spec"]) == "P('chains',)"  # the final state really is split over the chains axis
    assert len(np.unique(out["loop_1"][:, -1])) > 1  # the chains took different numbers of loop iterations
    np.testing.assert_array_equal(out["loop_4"], out["loop_1"])


@pytest.mark.parametrize("devices", [2, 4])
def test_data_parallel_gradient_equals_one_device_for_the_same_minibatch(worker_results, devices):
    """Split over 2 or 4 devices, the minibatch gradient is the one-device gradient of the same rows.

    A psum of the gradient inside the shard_map (it is already summed there)
    would give ``devices`` times the gradient: these tolerances are 1e-5.
    """
    out = _single(worker_results)
    # a caller's batch, split over the devices
    np.testing.assert_allclose(out[f"batch_grad_{devices}"], out["plain_batch_grad"], rtol=1e-5, atol=1e-4)
    # the stratified batch the estimator draws (unequal strata: N = 203), gathered on one device
    np.testing.assert_allclose(out[f"drawn_grad_{devices}"], out[f"gathered_grad_{devices}"], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(out[f"drawn_value_{devices}"], out[f"gathered_value_{devices}"], rtol=1e-5)
    assert np.abs(out[f"drawn_grad_{devices}"]).max() > 1.0  # not a vacuous comparison of zeros


def test_chains_axis_does_not_change_data_parallel_draws(worker_results):
    out = _single(worker_results)
    draws = out["sgld_chains2_data2"]
    assert draws.shape == (2, 30, 3) and np.all(np.isfinite(draws))
    np.testing.assert_array_equal(draws, out["sgld_chains1_data2"])
    assert not np.allclose(draws[0], draws[1])  # noise drawn per chain


@pytest.mark.parametrize("devices", [2, 4])
def test_full_data_log_density_over_data_devices_equals_one_device(worker_results, devices):
    """What exact samplers (HMC, NUTS, MALA) and full-batch SG samplers evaluate over sharded data."""
    out = _single(worker_results)
    np.testing.assert_allclose(out[f"full_grad_{devices}"], out["full_grad_1"], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(out[f"full_value_{devices}"], out["full_value_1"], rtol=1e-6)


def test_communication_one_all_reduce_per_step_for_data_none_for_chains(worker_results):
    out = _single(worker_results)
    assert int(out["collectives_4x1_programs"]) == 2 and int(out["collectives_2x2_programs"]) == 1  # HMC, loop; SGLD
    for op in ("all-reduce", "all-gather", "collective-permute", "all-to-all", "reduce-scatter"):
        # independent chains exchange nothing, not even a vmapped while loop's condition
        assert int(out[f"collectives_4x1_{op}"]) == 0, op
    assert int(out["collectives_2x2_all-reduce"]) == 1  # the gradient (and value) once per step
    for op in ("all-gather", "collective-permute", "all-to-all", "reduce-scatter"):
        assert int(out[f"collectives_2x2_{op}"]) == 0, op


def test_sharding_errors_are_clear(worker_results):
    out = _single(worker_results)
    assert "num_chains=6 is not a multiple of the 4 devices" in str(out["error_chains"])
    assert "batch_size=18 must be a multiple of the 4 devices" in str(out["error_batch"])
    assert "no per-example likelihood" in str(out["error_no_data"])
    assert "needs all 203 examples in one place" in str(out["error_cv"])


def test_two_processes_on_loopback_match_one_process(worker_results):
    results, failures = worker_results
    if results["host0"] is None or results["host1"] is None:
        pytest.fail("a host worker failed: " + "\n".join(failures))
    single = _single(worker_results)["sgld_chains2_data2"]
    for name in ("host0", "host1"):  # every process receives all the draws
        assert int(results[name]["process_count"]) == 2
        np.testing.assert_array_equal(results[name]["sgld_chains2_data2"], single)


def test_bad_mesh_arguments():
    target = sgmcmc.Target.from_logdensity(lambda p: -0.5 * jnp.sum(p**2), jnp.zeros(2))
    sampler = sgmcmc.hmc(target, 0.3, 3)
    with pytest.raises(TypeError, match=r"mesh must be a jax\.sharding\.Mesh"):
        sgmcmc.sample(sampler, num_samples=5, seed=0, progress=False, mesh="gpu")
    bad_axes = jax_mesh(("batch",))
    with pytest.raises(ValueError, match="mesh axes must be named"):
        sgmcmc.sample(sampler, num_samples=5, seed=0, progress=False, mesh=bad_axes)
    with pytest.raises(ValueError, match="data must be a positive integer"):
        sharding.make_mesh(data=0)
    with pytest.raises(ValueError, match="needs 2 devices"):
        sharding.make_mesh(chains=2, devices=sharding.make_mesh().devices.ravel()[:1])


def jax_mesh(names):
    import jax

    return jax.sharding.Mesh(np.array(jax.devices()[:1]).reshape((1,) * len(names)), names)
