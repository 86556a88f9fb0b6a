"""Constant SGD as approximate inference (Mandt, Hoffman & Blei 2017): stationary law, optimal rate, guard.

The target is a Bayesian linear regression, whose posterior is Gaussian and whose
minibatch SGD recursion is linear with random coefficients, so the stationary mean
and covariance of the iterates are known exactly (see ``lyapunov_covariance``).
"""

from __future__ import annotations

import warnings

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sgmcmc
from sgmcmc import gradient_noise, noise
from sgmcmc.gradients import take_batch
from sgmcmc.samplers.constant_sgd import StabilityWarning

N, D, S = 500, 3, 32
PRIOR_VAR = 100.0


def regression(num_data=N, scales=(1.0, 2.0, 0.5), seed=0, correlated=False):
    """``y ~ N(X w, 1)``, ``w ~ N(0, 100 I)``: data arrays and the target.

    Chains start at the posterior mode, so short runs measure the stationary law
    rather than the transient (at small rates the slowest direction relaxes over
    hundreds of steps).
    """
    rng = np.random.default_rng(seed)
    dim = len(scales)
    x = rng.normal(size=(num_data, dim))
    if correlated:
        x = x @ (np.eye(dim) + 0.5 * rng.normal(size=(dim, dim)))
    x = x * np.asarray(scales)
    y = x @ rng.normal(size=dim) + rng.normal(size=num_data)

    def logprior(w):
        return -0.5 * jnp.sum(w**2) / PRIOR_VAR

    def loglik(w, batch):
        return -0.5 * (batch["y"] - batch["x"] @ w) ** 2

    data = {"x": jnp.asarray(x, jnp.float32), "y": jnp.asarray(y, jnp.float32)}
    mode, _ = posterior(x, y)
    return x, y, sgmcmc.Target.from_data(logprior, loglik, data, jnp.asarray(mode, jnp.float32))


def posterior(x, y):
    precision = x.T @ x + np.eye(x.shape[1]) / PRIOR_VAR
    cov = np.linalg.inv(precision)
    return cov @ x.T @ y, cov


def lyapunov_covariance(x, y, lr, batch_size, continuous=False):
    """Exact stationary covariance of ``w' = w - lr * g_S(w)`` for this regression.

    With ``a_i = x_i x_i^T + I / (N prior_var)`` and ``e_i = a_i w* - x_i y_i`` (mean 0 at
    the mode ``w*``), the minibatch gradient of the mean loss is ``A_B d + e_B``
    (``d = w - w*``, ``A_B``, ``e_B`` means of ``a_i``, ``e_i`` over S indices drawn
    with replacement). Since the batch is independent of ``d``, ``E d = 0`` and

        Sigma = M Sigma M^T + (lr^2 / S) [mean_i (a_i - A) Sigma (a_i - A) + C_e],  M = I - lr A,

    linear in Sigma (solved in vec form). ``continuous=True`` is the Ornstein-Uhlenbeck
    (continuous-time) approximation ``A Sigma + Sigma A = (lr / S) C_e`` instead, which
    ignores the discretisation: the test checks the data can tell them apart.
    """
    n, dim = x.shape
    mean, _ = posterior(x, y)
    a = x[:, :, None] * x[:, None, :] + np.eye(dim) / (n * PRIOR_VAR)
    a_bar = a.mean(0)
    e = a @ mean - x * y[:, None]
    c_e = e.T @ e / n
    eye = np.eye(dim)
    if continuous:
        op = np.kron(a_bar, eye) + np.kron(eye, a_bar)
        return np.linalg.solve(op, (lr / batch_size) * c_e.reshape(-1)).reshape(dim, dim)
    m = eye - lr * a_bar
    dev = a - a_bar
    kron_dev = np.einsum("nij,nkl->ikjl", dev, dev).reshape(dim * dim, dim * dim) / n
    op = np.eye(dim * dim) - np.kron(m, m) - (lr**2 / batch_size) * kron_dev
    return np.linalg.solve(op, (lr**2 / batch_size) * c_e.reshape(-1)).reshape(dim, dim)


def gaussian_kl(m0, c0, m1, c1):
    """KL(N(m0, c0) || N(m1, c1))."""
    dim = len(m0)
    inv = np.linalg.inv(c1)
    diff = m1 - m0
    _, logdet0 = np.linalg.slogdet(c0)
    _, logdet1 = np.linalg.slogdet(c1)
    return 0.5 * (np.trace(inv @ c0) + diff @ inv @ diff - dim + logdet1 - logdet0)


def run(target, lr, num_samples, num_warmup=200, chains=4, seed=0, **kw):
    sampler = sgmcmc.constant_sgd(target, lr, batch_size=S, **kw)
    return sgmcmc.sample(
        sampler, num_samples=num_samples, num_warmup=num_warmup, num_chains=chains, seed=seed, progress=False
    )


def moments_and_ess(result):
    draws = np.asarray(result.position, np.float64)
    ess = float(np.min(az.ess(az.convert_to_dataset(draws)).x.values))
    flat = draws.reshape(-1, draws.shape[-1])
    return flat.mean(0), np.cov(flat.T), ess


def test_iterates_match_the_discrete_time_lyapunov_covariance():
    x, y, target = regression()
    lr = 0.4  # lr * lam_max = 1.47: far from the small-rate limit, the discrete-time terms matter
    result = run(target, lr, num_samples=5000)
    mean, cov, ess = moments_and_ess(result)
    exact = lyapunov_covariance(x, y, lr, S)
    w_star, _ = posterior(x, y)
    # For n_eff independent Gaussian draws, E KL(N(mean_hat, cov_hat) || N(mu, Sigma)) is about
    # D (D + 1) / (4 n_eff) (covariance) + D / (2 n_eff) (mean); allow 5x that. The minimum ESS
    # over coordinates is conservative for the others.
    tolerance = 5 * (D * (D + 1) / 4 + D / 2) / ess
    kl = gaussian_kl(mean, cov, w_star, exact)
    assert kl < tolerance, (kl, tolerance, ess)
    # The same data reject the continuous-time (Ornstein-Uhlenbeck) prediction: the test has power.
    kl_ou = gaussian_kl(mean, cov, w_star, lyapunov_covariance(x, y, lr, S, continuous=True))
    assert kl_ou > 3 * tolerance, (kl_ou, tolerance)


def test_optimal_rate_and_preconditioner_beat_arbitrary_rates():
    x, y, target = regression()
    w_post, cov_post = posterior(x, y)

    def kl_to_posterior(result):
        mean, cov, _ = moments_and_ess(result)
        return gaussian_kl(mean, cov, w_post, cov_post)

    optimal = run(target, "optimal", num_samples=4000, num_warmup=400, preconditioner="optimal")
    kl_opt = kl_to_posterior(optimal)
    rate = float(np.mean(optimal.last_state.learning_rate))
    # The optimal rate follows Mandt et al.'s formula from the per-example gradient noise at the mode.
    est = gradient_noise.estimate_gradient_noise(
        target, w_post.astype(np.float32), jax.random.key(0), batch_size=S, num_batches=200
    )
    expected = gradient_noise.optimal_learning_rate(float(gradient_noise.noise_trace(est)), N, S, D)
    assert rate == pytest.approx(expected, rel=0.25)
    kl_arbitrary = {lr: kl_to_posterior(run(target, lr, num_samples=4000)) for lr in (0.2 * rate, 5 * rate)}
    for lr, kl in kl_arbitrary.items():
        assert kl_opt < 0.5 * kl, (lr, kl_opt, kl)
    # And the scalar optimal rate alone does better than an arbitrary one too.
    kl_scalar = kl_to_posterior(run(target, "optimal", num_samples=4000, num_warmup=400))
    assert kl_scalar < min(kl_arbitrary.values()), (kl_scalar, kl_arbitrary)


def test_same_iterates_as_optax_sgd_with_momentum():
    _, _, target = regression()
    sampler = sgmcmc.constant_sgd(target, 0.05, batch_size=S, momentum=0.9)
    state = sampler.init(target.initial_position)
    opt = optax.sgd(0.05, momentum=0.9)
    params = target.initial_position
    opt_state = opt.init(params)

    def mean_loss(w, batch):
        return -(target.logprior_fn(w) + (N / S) * jnp.sum(target.loglik_fn(w, batch))) / N

    for i in range(10):
        key = jax.random.key(i)
        state, info = sampler.step(key, state)
        batch = take_batch(target.data, noise.uniform_indices(key, S, N))
        updates, opt_state = opt.update(jax.grad(mean_loss)(params, batch), opt_state)
        params = optax.apply_updates(params, updates)
    np.testing.assert_allclose(state.position, params, rtol=1e-5, atol=1e-6)
    assert float(info.step_size) == pytest.approx(0.05)


def hessian_lam_max(x):
    return float(np.linalg.eigvalsh((x.T @ x + np.eye(x.shape[1]) / PRIOR_VAR) / x.shape[0])[-1])


def test_stability_guard_fires_only_on_the_ill_conditioned_problem():
    # Mandt et al.'s rate is 2 S D / (N tr BB^T) ~ (2 S / N) / mean eigenvalue, so it overshoots the
    # bound 2 / lam_max when lam_max / mean eigenvalue > N / S: ill-conditioned, few examples per batch.
    x_bad, _, ill = regression(num_data=200, scales=np.r_[np.full(15, 0.3), 3.0], seed=1)
    x_ok, _, well = regression(num_data=200, scales=np.ones(16), seed=1)
    kw = dict(num_samples=10, num_warmup=60, chains=2)
    with pytest.warns(StabilityWarning, match="stability bound"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the chains then diverge, as warned
        bad = run(ill, "optimal", **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("error", StabilityWarning)
        ok = run(well, "optimal", **kw)
    # Power iteration finds the largest Hessian eigenvalue of the mean loss when it stands out,
    # and approaches it from below when the spectrum is flat (slow convergence, documented).
    np.testing.assert_allclose(bad.last_state.lambda_max, hessian_lam_max(x_bad), rtol=0.02)
    lam_ok = ok.last_state.lambda_max / hessian_lam_max(x_ok)
    assert np.all((lam_ok > 0.8) & (lam_ok < 1.001)), lam_ok
    assert np.all(bad.last_state.learning_rate * bad.last_state.lambda_max >= 2)
    assert np.all(ok.last_state.learning_rate * ok.last_state.lambda_max < 1)
    # "clip" lowers the rate to half the bound (and still says so).
    with pytest.warns(StabilityWarning, match="clipped"):
        clipped = run(ill, "optimal", stability="clip", **kw)
    np.testing.assert_allclose(clipped.last_state.learning_rate * clipped.last_state.lambda_max, 1.0, rtol=1e-4)
    assert clipped.num_divergent == 0
    # A fixed rate is checked too; momentum moves the bound to 2 (1 + mu).
    lam = hessian_lam_max(x_ok)
    with pytest.warns(StabilityWarning):
        run(well, 2.2 / lam, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("error", StabilityWarning)
        run(well, 2.2 / lam, momentum=0.5, **kw)


def test_low_rank_noise_estimate_recovers_a_planted_direction():
    rng = np.random.default_rng(3)
    dim, n, batches = 30, 64, 50
    u = rng.normal(size=dim)
    u /= np.linalg.norm(u)
    state = gradient_noise.noise_init(dim, jnp.float32, rank=2, key=jax.random.key(0))
    sample_cov = np.zeros((dim, dim))
    for _ in range(batches):
        g = rng.normal(size=(n, dim)) * 0.3 + 3.0 * rng.normal(size=(n, 1)) * u  # BB^T = 0.09 I + 9 u u^T
        state = gradient_noise.noise_update(state, jnp.asarray(g, jnp.float32))
        sample_cov += np.cov(g.T) / batches
    low = gradient_noise.noise_low_rank(state, 2)
    assert abs(float(np.asarray(low.factor[:, 0]) @ u)) > 0.99
    # The streaming sketch loses little of the top eigenvalue of the batches' own covariance
    # (Nystrom is a lower bound), which is itself within sampling error of 9.09.
    top = np.linalg.eigvalsh(sample_cov)[-1]
    assert 0.95 * top < float(low.eigenvalues[0]) <= top * 1.001
    assert top == pytest.approx(9.09, rel=0.1)
    np.testing.assert_allclose(float(gradient_noise.noise_trace(state)), np.trace(sample_cov), rtol=1e-4)
    np.testing.assert_allclose(np.asarray(low.diag), 0.09, rtol=0.35)


def test_low_rank_preconditioner_captures_correlations():
    # With correlated inputs a diagonal preconditioner cannot reach the posterior's long axis;
    # the rank-r + diagonal estimate of BB^T (Woodbury-applied) does much better.
    x, y, target = regression(scales=(0.3, 1.0, 3.0), correlated=True, seed=2)
    w_post, cov_post = posterior(x, y)
    kls = {}
    for rank in (0, 2):
        result = run(target, "optimal", num_samples=3000, num_warmup=400, preconditioner="optimal", noise_rank=rank)
        mean, cov, _ = moments_and_ess(result)
        kls[rank] = gaussian_kl(mean, cov, w_post, cov_post)
    assert kls[2] < 0.5 * kls[0], kls


def test_non_finite_step_is_rejected_and_reported():
    _, _, target = regression()
    sampler = sgmcmc.constant_sgd(target, 1e30, batch_size=S, stability="off")
    state = sampler.init(target.initial_position + 1.0)
    state, info = jax.jit(sampler.step)(jax.random.key(0), state)
    state, info = jax.jit(sampler.step)(jax.random.key(1), state)
    assert bool(info.is_divergent)
    assert np.all(np.isfinite(state.position))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(learning_rate=0.0), "learning_rate"),
        (dict(learning_rate=-1.0), "learning_rate"),
        (dict(learning_rate="best"), "learning_rate"),
        (dict(learning_rate="optimal", batch_size=None), "batch_size"),
        (dict(learning_rate="optimal", batch_size=1), "batch_size"),
        (dict(learning_rate=0.1, preconditioner="optimal"), "optimal"),
        (dict(learning_rate="optimal", noise_rank=2), "noise_rank"),
        (dict(learning_rate=0.1, momentum=1.0), "momentum"),
        (dict(learning_rate=0.1, stability="maybe"), "stability"),
        (dict(learning_rate="optimal", initial_learning_rate=0.0), "initial_learning_rate"),
        (dict(learning_rate=0.1, batch_size=N + 1), "batch_size"),
    ],
)
def test_bad_settings(kwargs, match):
    _, _, target = regression()
    kwargs.setdefault("batch_size", S)
    with pytest.raises((ValueError, TypeError), match=match):
        sgmcmc.constant_sgd(target, **kwargs)


def test_optimal_rate_needs_a_noise_estimate():
    _, _, target = regression()
    sampler = sgmcmc.constant_sgd(target, "optimal", batch_size=S)
    with pytest.raises(ValueError, match="num_warmup >= 20"):
        sgmcmc.sample(sampler, num_samples=10, num_warmup=0, seed=0)
    quad = sgmcmc.Target.from_logdensity(lambda w: -0.5 * jnp.sum(w**2), jnp.zeros(2))
    with pytest.raises(ValueError, match="per-example likelihood"):
        sgmcmc.constant_sgd(quad, "optimal", batch_size=4)
    with pytest.raises(ValueError, match="batch_size"):
        gradient_noise.estimate_gradient_noise(target, target.initial_position, jax.random.key(0), batch_size=1)
