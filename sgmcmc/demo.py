"""``python -m sgmcmc``: a Bayesian MLP on the shipped handwritten digits, SGD vs SGLD.

What it does, end to end on a laptop CPU in well under a minute:

1. loads the 8x8 digits shipped with the package (:func:`sgmcmc.datasets.load_digits`);
2. builds a one-hidden-layer tanh MLP (64-32-10) as a data-driven
   :class:`~sgmcmc.Target` with a Gaussian prior and a categorical likelihood
   (:func:`make_mlp_target`);
3. trains a point estimate (the MAP of the same posterior) with Adam on
   minibatches, all steps inside one jitted ``lax.scan`` (:func:`train_map`);
4. samples the posterior with SGLD at temperature 1 over several chains,
   started at the point estimate, with warmup and thinning;
5. compares the point estimate with the SGLD posterior predictive (the mean
   over every kept draw of the predicted class probabilities) on the test set:
   accuracy, NLL, ECE and Brier score, printed as a markdown table;
6. prints ``arviz.summary`` of a handful of weights and saves their trace plot.

Run ``python -m sgmcmc --help`` for the options. :func:`make_mlp_target` and
:func:`mlp_logits` are importable by benchmarks.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
import warnings
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

import sgmcmc
from sgmcmc.datasets import load_digits
from sgmcmc.diagnostics.predictive import (
    accuracy,
    brier_score,
    expected_calibration_error,
    nll,
    posterior_predictive_probs,
)

__all__ = [
    "DemoConfig",
    "QUICK",
    "FULL",
    "init_mlp_params",
    "mlp_logits",
    "make_mlp_target",
    "train_map",
    "posterior_predictive",
    "predictive_metrics",
    "markdown_table",
    "main",
]

#: Weights shown by ``az.summary`` and the trace plot: variable -> coordinates.
#: Dimension names follow :func:`sgmcmc.diagnostics.to_arviz` (``"<name>_dim_<i>"``).
#: ``hidden.w[36, 0]`` connects a centre pixel (inked in 84% of the images) and
#: ``hidden.w[0, 0]`` a corner pixel that is blank in every image (its weight
#: only feels the prior) to hidden unit 0.
SHOWN_WEIGHTS = {
    "hidden.w": {"hidden.w_dim_0": [36, 0], "hidden.w_dim_1": [0]},
    "out.w": {"out.w_dim_0": [0], "out.w_dim_1": [0]},
    "out.b": {"out.b_dim_0": [0, 1]},
}


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """Settings of one demo run (see :data:`FULL` and :data:`QUICK`).

    Attributes:
        num_hidden: width of the hidden layer.
        prior_scale: standard deviation of the N(0, s^2) prior on every weight and bias.
        map_steps, map_batch_size, map_learning_rate: Adam on the MAP objective.
        step_size, batch_size: SGLD step size ``eps`` and minibatch size. At
            posterior draws the largest Hessian eigenvalue of ``-log p`` is
            about 400, so ``eps * lambda_max / 4 ~ 0.1`` (the stiffest
            direction's variance is inflated by ~10%, see
            :mod:`sgmcmc.samplers.sgld`), and the minibatch gradient noise adds
            at most 10% (1% on average over coordinates) to the injected
            noise's variance. Smaller steps only move the chains less.
        num_warmup: SGLD steps discarded before the kept draws.
        num_samples: kept draws per chain.
        thin: SGLD steps per kept draw.
        num_chains: SGLD chains.
    """

    num_hidden: int = 32
    prior_scale: float = 1.0
    map_steps: int = 600
    map_batch_size: int = 128
    map_learning_rate: float = 1e-2
    step_size: float = 1e-3
    batch_size: int = 128
    num_warmup: int = 2000
    num_samples: int = 100
    thin: int = 20
    num_chains: int = 4


FULL = DemoConfig()
QUICK = dataclasses.replace(FULL, map_steps=300, num_warmup=500, num_samples=50, thin=10, num_chains=2)


# -- the model ---------------------------------------------------------------
def init_mlp_params(key: jax.Array, num_inputs: int, num_hidden: int, num_classes: int) -> dict:
    """Glorot-style random parameters ``{"hidden": {"w", "b"}, "out": {"w", "b"}}``.

    Weights are N(0, 1/fan_in) and biases 0, so the tanh units start in their
    linear range whatever the prior scale. Both weight matrices are cut from
    one flat normal draw: one small program to compile instead of one per
    shape (eager ``jax.random.normal`` compiles per shape, 0.3-5 s each here).
    """
    sizes = (num_inputs * num_hidden, num_hidden * num_classes)
    z = jax.random.normal(key, (sum(sizes),))
    return {
        "hidden": {
            "w": z[: sizes[0]].reshape(num_inputs, num_hidden) / np.sqrt(num_inputs),
            "b": jnp.zeros((num_hidden,)),
        },
        "out": {
            "w": z[sizes[0] :].reshape(num_hidden, num_classes) / np.sqrt(num_hidden),
            "b": jnp.zeros((num_classes,)),
        },
    }


def mlp_logits(params: dict, x: jax.Array) -> jax.Array:
    """Class logits ``(n, K)`` of the one-hidden-layer tanh MLP for inputs ``x (n, d)``."""
    hidden = jnp.tanh(x @ params["hidden"]["w"] + params["hidden"]["b"])
    return hidden @ params["out"]["w"] + params["out"]["b"]


def make_mlp_target(
    x: np.ndarray,
    y: np.ndarray,
    *,
    num_hidden: int = 32,
    num_classes: int | None = None,
    prior_scale: float | Mapping[str, float] = 1.0,
    seed: int = 0,
    name: str = "digits_mlp",
) -> sgmcmc.Target:
    """A Bayesian MLP classifier as a data-driven target.

    ``log p(theta | D) = sum_j log N(theta_j; 0, s^2) + sum_i log softmax(f(x_i; theta))[y_i]``
    with ``f`` = :func:`mlp_logits` and ``s = prior_scale`` on every weight and bias.

    Why N(0, 1) by default: the inputs are standardised (average variance 1),
    so unit-scale weights are the conventional default for a BNN of this
    size, and the prior is weak next to N ~ 1350 examples (the point estimate
    is nearly the maximum-likelihood fit with a light L2 penalty). On this
    data the choice matters little for the comparison the demo makes: with
    per-layer scales from 0.125 to 2 the T=1 posterior predictive had NLL
    0.15-0.17 in every case (measured with SGLD, and for N(0, 1) checked with
    exact HMC, which gave NLL 0.147 / ECE 0.071, as SGLD does).

    Parameters
    ----------
    x, y
        Features ``(N, d)`` and integer labels ``(N,)``; they become the
        target's data ``{"x": x, "y": y}``.
    num_hidden
        Width of the tanh hidden layer.
    num_classes
        Number of classes K (default ``max(y) + 1``).
    prior_scale
        Prior standard deviation ``s`` (> 0), one for all parameters or a
        mapping ``{"hidden": s_h, "out": s_o}`` with one per layer.
    seed
        Seed of the random initial position (:func:`init_mlp_params`).
    name
        The target's name.
    """
    x = np.asarray(x)
    y = np.asarray(y)
    if x.ndim != 2 or y.ndim != 1 or x.shape[0] != y.shape[0]:
        raise ValueError(f"x must be (N, d) and y (N,) with the same N; got {x.shape} and {y.shape}.")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"y must hold integer labels, got dtype {y.dtype}.")
    num_classes = int(y.max()) + 1 if num_classes is None else int(num_classes)
    if y.min() < 0 or y.max() >= num_classes:
        raise ValueError(f"labels must be in 0..{num_classes - 1}, got {y.min()}..{y.max()}.")

    scales = _layer_scales(prior_scale)

    @jax.jit
    def logprior(params):
        total = 0.0
        for layer, scale in scales.items():
            for w in jax.tree.leaves(params[layer]):
                total = total + _gaussian_logpdf_sum(w, scale)
        return total

    @jax.jit
    def loglik(params, batch):
        log_probs = jax.nn.log_softmax(mlp_logits(params, batch["x"]), axis=-1)
        return jnp.take_along_axis(log_probs, batch["y"][:, None], axis=-1)[:, 0]

    init = init_mlp_params(jax.random.key(seed), x.shape[1], num_hidden, num_classes)
    return sgmcmc.Target.from_data(logprior, loglik, {"x": x, "y": y}, init, name=name)


LAYERS = ("hidden", "out")


def _layer_scales(prior_scale: float | Mapping[str, float]) -> dict[str, float]:
    """``{"hidden": s_h, "out": s_o}`` from one scale or a per-layer mapping, validated."""
    if isinstance(prior_scale, Mapping):
        if set(prior_scale) != set(LAYERS):
            raise ValueError(f"a per-layer prior_scale needs exactly the keys {LAYERS}, got {sorted(prior_scale)}.")
        scales = {layer: float(prior_scale[layer]) for layer in LAYERS}
    else:
        scales = dict.fromkeys(LAYERS, float(prior_scale))
    for layer, scale in scales.items():
        if not (np.isfinite(scale) and scale > 0):
            raise ValueError(f"prior_scale of layer {layer!r} must be finite and positive, got {scale}.")
    return scales


def _gaussian_logpdf_sum(w: jax.Array, scale: float) -> jax.Array:
    """``sum_j log N(w_j; 0, scale^2)``."""
    return -0.5 * jnp.sum(w**2) / scale**2 - w.size * (0.5 * np.log(2 * np.pi) + np.log(scale))


# -- point estimate ----------------------------------------------------------
def train_map(
    target: sgmcmc.Target,
    *,
    num_steps: int,
    batch_size: int,
    learning_rate: float,
    seed: int = 0,
) -> dict:
    """The MAP of ``target`` by Adam on minibatches, from its initial position.

    The loss is the minibatch estimate of ``-log p(theta | D) / N`` (mean
    negative log-likelihood plus the prior divided by N), i.e. the SGLD
    drift of the same posterior, rescaled. Minibatches are drawn with
    replacement inside one jitted ``lax.scan``: no Python loop per step.
    """
    num_data = target.num_data
    optimizer = optax.adam(learning_rate)

    def loss_fn(params, batch):
        return -(target.logprior_fn(params) / num_data + jnp.mean(target.loglik_fn(params, batch)))

    @jax.jit
    def run(params, data, key):
        def step(carry, key):
            params, opt_state = carry
            idx = jax.random.randint(key, (batch_size,), 0, num_data)
            batch = jax.tree.map(lambda a: a[idx], data)
            grads = jax.grad(loss_fn)(params, batch)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), None

        keys = jax.random.split(key, num_steps)
        (params, _), _ = lax.scan(step, (params, optimizer.init(params)), keys)
        return params

    return run(target.initial_position, target.data, jax.random.key(seed))


# -- evaluation --------------------------------------------------------------
@jax.jit
def _draw_logits(params: dict, x: jax.Array) -> jax.Array:
    """Logits ``(draws, n, K)`` of a stack of draws on inputs ``x``."""
    return jax.vmap(mlp_logits, in_axes=(0, None))(params, x)


def posterior_predictive(samples: dict, x: np.ndarray, *, chunk_size: int = 200) -> jax.Array:
    """Mean over all draws ``(chain, draw, ...)`` of the MLP's class probabilities on ``x``.

    Draws are processed ``chunk_size`` at a time, so memory stays at
    ``chunk_size * n * K`` logits however many draws were kept.
    """
    flat = jax.tree.map(lambda a: np.reshape(a, (-1, *np.shape(a)[2:])), samples)
    num_draws = jax.tree.leaves(flat)[0].shape[0]
    total = 0.0
    for start in range(0, num_draws, chunk_size):
        block = jax.tree.map(lambda a, s=start: a[s : s + chunk_size], flat)
        probs = posterior_predictive_probs(_draw_logits(block, x), axis=0)
        total = total + probs * jax.tree.leaves(block)[0].shape[0]
    return total / num_draws


def predictive_metrics(probs: jax.Array, y: np.ndarray) -> dict[str, float]:
    """Accuracy, NLL, ECE (15 bins), Brier score and mean confidence of class probabilities ``(n, K)``.

    The mean confidence (average largest probability) next to the accuracy
    tells over- from underconfidence, which ECE alone does not.
    """
    return {
        "accuracy": float(accuracy(probs, y)),
        "nll": float(nll(probs, y)),
        "ece": float(expected_calibration_error(probs, y)),
        "brier": float(brier_score(probs, y)),
        "confidence": float(jnp.mean(jnp.max(probs, axis=-1))),
    }


def markdown_table(rows: dict[str, dict[str, float]]) -> str:
    """A markdown table, one row per method, one column per metric."""
    metrics = list(next(iter(rows.values())))
    lines = [
        "| method | " + " | ".join(metrics) + " |",
        "|---|" + "---:|" * len(metrics),
    ]
    for method, values in rows.items():
        lines.append(f"| {method} | " + " | ".join(f"{values[m]:.4f}" for m in metrics) + " |")
    return "\n".join(lines)


def _calibration_note(sgld: dict[str, float]) -> str:
    """One sentence reading the SGLD row: which way its calibration error goes."""
    if sgld["confidence"] < sgld["accuracy"]:
        return (
            f"\nSGLD's mean confidence ({sgld['confidence']:.3f}) is below its accuracy ({sgld['accuracy']:.3f}): "
            "at temperature 1 the posterior predictive is underconfident on this clean, curated data set, the "
            "'cold posterior' effect (Wenzel et al. 2020; Aitchison 2021). With the default settings exact HMC on "
            "the same target gives about the same (NLL 0.147, ECE 0.071), so this is the posterior itself, not "
            "SGLD's bias."
        )
    return f"\nSGLD's mean confidence ({sgld['confidence']:.3f}) is at or above its accuracy ({sgld['accuracy']:.3f})."


def _import_arviz():
    """Import ArviZ without its once-a-day FutureWarning about the 1.x refactor."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*ArviZ is undergoing a major refactor.*", category=FutureWarning)
        import arviz as az
    return az


def select_weights(posterior, selection: Mapping[str, Mapping[str, Sequence[int]]] = SHOWN_WEIGHTS):
    """A small ``xarray.Dataset`` with the chosen coordinates of a few variables.

    ``posterior`` is an ArviZ posterior group as :func:`sgmcmc.diagnostics.to_arviz`
    writes it: every dimension has integer coordinates, so the selected entries
    keep their true indices in labels (``hidden.w[36, 0]``).
    """
    import xarray as xr

    shown = {}
    for name, sel in selection.items():
        shown[name] = posterior[name].sel({dim: list(idx) for dim, idx in sel.items()})
    return xr.Dataset(shown)


def summarize_weights(idata, out: str) -> str:
    """``az.summary`` of :data:`SHOWN_WEIGHTS` as text; their trace plot is saved to ``out`` (PNG, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    az = _import_arviz()
    posterior = select_weights(idata.posterior)
    summary = az.summary(posterior, kind="all", round_to=3)
    num_rows = len(summary)
    with warnings.catch_warnings():
        # ArviZ 0.23 calls a matplotlib helper that matplotlib 3.11 deprecates; not ours to act on.
        warnings.filterwarnings("ignore", message=".*alias_mapping to normalize_kwargs.*")
        axes = az.plot_trace(posterior, compact=False, figsize=(10, 1.6 * num_rows + 0.6))
    fig = np.asarray(axes).ravel()[0].figure
    fig.suptitle("SGLD posterior of a few MLP weights (one line per chain)")
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return summary.to_string()


# -- CLI -----------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m sgmcmc",
        description="Bayesian MLP on the 8x8 digits: SGD (MAP) point estimate vs the SGLD posterior predictive.",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the split, initialisation, SGD and SGLD")
    parser.add_argument("--num-chains", type=int, default=None, help=f"SGLD chains (default {FULL.num_chains})")
    parser.add_argument(
        "--num-samples", type=int, default=None, help=f"kept SGLD draws per chain (default {FULL.num_samples})"
    )
    parser.add_argument("--out", default="sgmcmc_demo_trace.png", help="where to save the trace plot (PNG)")
    parser.add_argument("--quick", action="store_true", help="fewer steps (for tests and smoke runs)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
    """Run the demo; print the comparison, the weight summary and where the plot went.

    Returns the test metrics ``{"sgd": {...}, "sgld": {...}}``
    (``accuracy``, ``nll``, ``ece``, ``brier``, ``confidence``).
    """
    args = parse_args(argv)
    config = QUICK if args.quick else FULL
    if args.num_chains is not None:
        config = dataclasses.replace(config, num_chains=args.num_chains)
    if args.num_samples is not None:
        config = dataclasses.replace(config, num_samples=args.num_samples)
    start = time.perf_counter()

    data = load_digits(seed=args.seed)
    target = make_mlp_target(
        data.x_train, data.y_train, num_hidden=config.num_hidden, prior_scale=config.prior_scale, seed=args.seed
    )
    num_params = sum(np.size(w) for w in jax.tree.leaves(target.initial_position))
    print(
        f"digits: {target.num_data} train / {len(data.y_test)} test images; "
        f"MLP 64-{config.num_hidden}-10 tanh, {num_params} parameters, prior N(0, {config.prior_scale:g}^2)"
    )

    map_params = train_map(
        target,
        num_steps=config.map_steps,
        batch_size=config.map_batch_size,
        learning_rate=config.map_learning_rate,
        seed=args.seed,
    )
    sgd_probs = jax.nn.softmax(mlp_logits(map_params, data.x_test), axis=-1)

    sampler = sgmcmc.sgld(target, step_size=config.step_size, batch_size=config.batch_size, temperature=1.0)
    result = sgmcmc.sample(
        sampler,
        num_samples=config.num_samples,
        num_warmup=config.num_warmup,
        num_chains=config.num_chains,
        thin=config.thin,
        seed=args.seed,
        initial_position=map_params,
        progress=sys.stderr.isatty(),
    )
    sgld_probs = posterior_predictive(result.samples, data.x_test)

    metrics = {"sgd": predictive_metrics(sgd_probs, data.y_test), "sgld": predictive_metrics(sgld_probs, data.y_test)}
    num_draws = config.num_chains * config.num_samples
    print(
        f"\nSGD: Adam, {config.map_steps} steps of {config.map_batch_size}. "
        f"SGLD: step size {config.step_size:g}, batch {config.batch_size}, T=1, {config.num_chains} chains x "
        f"({config.num_warmup} warmup + {config.num_samples} draws x thin {config.thin}), from the SGD solution; "
        f"{result.num_divergent} divergent draws.\n"
    )
    print(
        markdown_table(
            {
                "SGD (Adam) point estimate": metrics["sgd"],
                f"SGLD posterior predictive ({num_draws} draws)": metrics["sgld"],
            }
        )
    )

    print(_calibration_note(metrics["sgld"]))

    idata = result.to_arviz(log_likelihood=False)
    print("\nA few weights (arviz.summary):\n")
    print(summarize_weights(idata, args.out))
    print(
        "\nWeight-space R-hat far above 1 is expected here: a network's posterior is multimodal (hidden units can be "
        "permuted and sign-flipped) and many weights are barely identified, so chains drift apart in weight space "
        "while agreeing in function space; judge the draws by the predictive metrics above."
    )
    print(f"\ntrace plot saved to {args.out}; total {time.perf_counter() - start:.1f} s")
    return metrics
