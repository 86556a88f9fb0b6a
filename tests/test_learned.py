"""Learned Metropolis proposals (L2HMC, A-NICE-MC): exact for any parameters, the training loop, bad input."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_moments

import sgmcmc
from sgmcmc.learned import a_nice_mc, a_nice_mc_kernel, cost_ledger, l2hmc, l2hmc_kernel, l2hmc_map, train
from sgmcmc.learned.a_nice_mc import nice_map

# Strongly correlated 2-d Gaussian: unit variances, correlation 0.99 (eigenvalues 1.99 and 0.01).
RHO = 0.99
COV = np.array([[1.0, RHO], [RHO, 1.0]])
PREC = jnp.asarray(np.linalg.inv(COV), jnp.float32)
# Two-component mixture, equal weights, N(+-MU, SD^2 I): close enough for untrained kernels to cross.
MU, SD = np.array([1.0, 0.5]), 0.6
MIX_VAR = SD**2 + MU**2


def scg_target():
    return sgmcmc.Target.from_logdensity(lambda x: -0.5 * x @ PREC @ x, jnp.zeros(2), name="scg")


def mixture_target():
    mu = jnp.asarray(MU, jnp.float32)

    def logdensity(x):
        a = -0.5 * jnp.sum((x - mu) ** 2) / SD**2
        b = -0.5 * jnp.sum((x + mu) ** 2) / SD**2
        return jnp.logaddexp(a, b)

    return sgmcmc.Target.from_logdensity(logdensity, jnp.zeros(2), name="mixture")


def _perturb(params, key, scale):
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(
        treedef, [x + scale * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)]
    )


def _check(sampler, means, variances, label, num_samples=1500):
    result = sgmcmc.sample(sampler, num_samples=num_samples, num_chains=4, seed=11, progress=False, chunk_size=1500)
    draws = np.asarray(result.position)
    assert np.all(np.isfinite(draws))
    assert_moments(draws, means, variances, label=label)
    return result


def _quartic(x):
    return -0.25 * jnp.sum(x**4) - 0.5 * jnp.sum(x**2) + 0.3 * x[0] * x[1]


def test_l2hmc_log_jacobian_is_autodiff_and_inverse_returns_start():
    """Random parameters: tracked log-Jacobian = autodiff's, F^{-1} F = id. Initial ones: F is the leapfrog."""
    dim, steps, eps = 3, 3, 0.3
    kernel = l2hmc_kernel(dim, num_leapfrog_steps=steps, step_size=eps, hidden=(6,))
    initial = kernel.init_params(jax.random.key(0))
    params = _perturb(initial, jax.random.key(1), 0.3)
    vg = jax.value_and_grad(_quartic)
    z0 = jnp.array([0.3, -0.7, 1.1, 0.5, 0.2, -1.3])

    def fmap(params, z, d):
        x, v, logdet, _, _ = l2hmc_map(kernel.config, params, z[:dim], z[dim:], d, *vg(z[:dim]), vg)
        return jnp.concatenate([x, v]), logdet

    @jax.jit
    def there_and_back(params, d):
        z1, logdet = fmap(params, z0, d)
        jac = jax.jacfwd(lambda z: fmap(params, z, d)[0])(z0)
        z2, logdet_back = fmap(params, z1, -d)
        return z1, logdet, jac, z2, logdet_back

    def leapfrog(x, v):  # numpy, with _quartic's gradient written out
        grad = lambda x: -(x**3) - x + 0.3 * np.array([x[1], x[0], 0.0])  # noqa: E731
        for _ in range(steps):
            v = v + 0.5 * eps * grad(x)
            x = x + eps * v
            v = v + 0.5 * eps * grad(x)
        return x, v

    # Output layers at zero: F is L leapfrog steps of size eps, F^{-1} the same run with v negated.
    for d in (1, -1):
        z1, logdet, _, _, _ = there_and_back(initial, jnp.int32(d))
        x, v = leapfrog(np.asarray(z0[:dim], np.float64), d * np.asarray(z0[dim:], np.float64))
        np.testing.assert_allclose(z1, np.concatenate([x, d * v]), rtol=1e-5, atol=1e-5)
        assert float(logdet) == 0.0

    for d in (1, -1):
        z1, logdet, jac, z2, logdet_back = there_and_back(params, jnp.int32(d))
        sign, ref = np.linalg.slogdet(np.asarray(jac, np.float64))
        assert sign != 0 and abs(float(logdet)) > 1e-3  # the map really changes volume
        np.testing.assert_allclose(float(logdet), ref, rtol=1e-4, atol=1e-4)
        assert float(jnp.max(jnp.abs(z1 - z0))) > 0.1
        np.testing.assert_allclose(z2, z0, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(float(logdet_back), -float(logdet), rtol=1e-4, atol=1e-5)


def test_nice_is_volume_preserving_and_inverse_returns_start():
    kernel = a_nice_mc_kernel(3, aux_dim=2, hidden=(8,), init_noise=1.0)
    params = kernel.init_params(jax.random.key(2))
    z0 = jnp.array([0.3, -0.7, 1.1, 0.5, -1.3])

    def fmap(z, d):
        return jnp.concatenate(nice_map(kernel.config, params, z[:3], z[3:], d))

    @jax.jit
    def there_and_back(d):
        z1 = fmap(z0, d)
        return z1, jax.jacfwd(lambda z: fmap(z, d))(z0), fmap(z1, -d)

    for d in (1, -1):
        z1, jac, z2 = there_and_back(jnp.int32(d))
        assert float(jnp.max(jnp.abs(z1 - z0))) > 0.1
        _, logdet = np.linalg.slogdet(np.asarray(jac, np.float64))
        assert abs(logdet) < 1e-4
        np.testing.assert_allclose(z2, z0, rtol=1e-5, atol=1e-5)


# One target object and one kernel per kind, shared by the tests below: train() reuses its compiled
# program for the same kernel, target, optimizer and shapes (compilation dominates these tests).
SCG, MIX = scg_target(), mixture_target()
L2HMC = l2hmc_kernel(2, num_leapfrog_steps=2, step_size=0.15, hidden=(4,), length_scale=0.5)
TRAIN = dict(num_chains=8, chunk_size=10, learning_rate=3e-3, progress=False)


def test_untrained_random_kernels_are_exact():
    """Random networks (never trained): slow, never wrong. Each kernel on the target the trained test does not use."""
    params = _perturb(L2HMC.init_params(jax.random.key(3)), jax.random.key(4), 0.3)
    _check(L2HMC.sampler(MIX, params), np.zeros(2), MIX_VAR, "l2hmc random on the mixture")
    nice = a_nice_mc_kernel(2, hidden=(8,), init_noise=0.5)
    _check(a_nice_mc(SCG, kernel=nice, seed=5), np.zeros(2), np.ones(2), "a_nice_mc random on scg", 3000)


def test_briefly_trained_kernels_are_exact_and_report_their_cost():
    trained = train(L2HMC, SCG, 0, 50, **TRAIN)
    report = trained.report
    assert report.num_steps == 50 and report.loss.shape == (50,) and np.all(np.isfinite(report.loss))
    assert report.num_grad_evals == 50 * 8 * (2 + 3)
    assert report.wall_s > 0 and 0 <= report.acceptance.min() <= report.acceptance.max() <= 1
    assert float(jnp.exp(trained.params["log_step_size"])) != pytest.approx(0.15)  # it did train
    result = _check(L2HMC.sampler(SCG, trained.params), np.zeros(2), np.ones(2), "l2hmc trained on scg")
    ledger = cost_ledger(report, result, ess=100.0)
    assert ledger["training"]["grad_evals"] == report.num_grad_evals
    assert ledger["sampling"]["grad_evals"] == 4 * 1500 * 2
    assert ledger["ess_per_grad_total"] < ledger["ess_per_grad_sampling"]

    nice = a_nice_mc_kernel(2, hidden=(4,), length_scale=0.5)
    trained = train(nice, MIX, 1, 50, **TRAIN)
    assert np.all(np.isfinite(trained.report.loss)) and trained.report.num_grad_evals == 50 * 8 * 3
    sampler = nice.sampler(MIX, trained.params, num_local_steps=1, step_size=0.3)
    _check(sampler, np.zeros(2), MIX_VAR, "a_nice_mc (esjd-trained) + MALA on the mixture")


def test_train_resumes_from_checkpoint_and_stops_early(tmp_path):
    """Adversarial A-NICE-MC (discriminator and bootstrap buffer in the checkpoint); L2HMC for early stopping."""
    kernel = a_nice_mc_kernel(
        2, hidden=(4,), disc_hidden=(8,), mode="adversarial", bootstrap="hmc", hmc_step_size=0.3, hmc_steps=2
    )
    full = train(kernel, MIX, 3, 30, **TRAIN)
    assert np.all(np.isfinite(full.report.loss)) and full.report.num_grad_evals == 30 * 8 * (3 + 3)

    def stop_at_20(steps_done):
        if steps_done == 20:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(kernel, MIX, 3, 30, checkpoint=tmp_path, callback=stop_at_20, **TRAIN)
    # The same directory refuses another run (here: another seed) ...
    with pytest.raises(ValueError, match="different run"):
        train(kernel, MIX, 4, 30, checkpoint=tmp_path, **TRAIN)
    # ... and continues this one, with the result of the uninterrupted run.
    resumed = train(kernel, MIX, 3, 30, checkpoint=tmp_path, **TRAIN)
    assert resumed.report.num_steps == 30
    for a, b in zip(jax.tree.leaves(full.params), jax.tree.leaves(resumed.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(full.report.loss, resumed.report.loss)

    stopped = train(L2HMC, SCG, 0, 10_000, patience=10, min_delta=1e9, **TRAIN)
    assert stopped.report.stopped_early and stopped.report.num_steps == 20 and stopped.report.best_step == 10


def test_bad_input_and_non_finite_proposals():
    target = SCG
    with pytest.raises(ValueError, match="dimension 3"):
        train(l2hmc_kernel(3), target, 0, 10, progress=False)
    with pytest.raises(ValueError, match="dimension 3"):
        l2hmc(target, kernel=l2hmc_kernel(3))
    with pytest.raises(TypeError, match="a_nice_mc_kernel"):  # another family's kernel
        a_nice_mc(target, kernel=l2hmc_kernel(2))
    with pytest.raises(TypeError, match="l2hmc_kernel"):
        l2hmc(target, kernel=a_nice_mc_kernel(2))
    with pytest.raises(ValueError, match="dimension 3"):
        a_nice_mc(target, kernel=a_nice_mc_kernel(3))
    wrong = l2hmc_kernel(2, hidden=(5,)).init_params(jax.random.key(0))
    with pytest.raises(ValueError, match="params"):
        l2hmc(target, wrong, kernel=l2hmc_kernel(2, hidden=(6,)))
    bad = jax.tree.map(lambda x: x * jnp.nan, wrong)
    with pytest.raises(ValueError, match="non-finite"):
        l2hmc(target, bad, kernel=l2hmc_kernel(2, hidden=(5,)))
    with pytest.raises(ValueError, match="num_steps"):
        train(l2hmc_kernel(2), target, 0, 0)
    with pytest.raises(ValueError, match="mode"):
        a_nice_mc_kernel(2, mode="gan")

    # A density that is NaN outside the unit box and -inf in part of it: proposals there are rejected.
    def logdensity(x):
        inside = jnp.all(jnp.abs(x) < 1.0)
        lp = jnp.where(x[0] > 0.8, -jnp.inf, -0.5 * jnp.sum(x**2))
        return jnp.where(inside, lp, jnp.nan)

    box = sgmcmc.Target.from_logdensity(logdensity, jnp.zeros(2), name="box")
    for sampler in (
        l2hmc(box, num_leapfrog_steps=3, step_size=0.5, hidden=(4,)),
        a_nice_mc(box, kernel=a_nice_mc_kernel(2, hidden=(4,), init_noise=2.0), num_local_steps=1, step_size=0.5),
    ):
        with pytest.warns(RuntimeWarning, match="divergent"):
            result = sgmcmc.sample(sampler, num_samples=200, num_chains=2, seed=0, progress=False)
        draws = np.asarray(result.position)
        assert np.all(np.isfinite(draws)) and np.all(np.abs(draws) < 1.0) and np.all(draws[..., 0] <= 0.8)
        assert np.all(np.isfinite(np.asarray(result.info.logdensity)))
        assert result.info.is_divergent.any() and not result.info.is_accepted.all()
