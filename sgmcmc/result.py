"""What :func:`sgmcmc.sample` returns: draws, per-step statistics, timings."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from sgmcmc._tree import PyTree
from sgmcmc.target import Target

__all__ = ["SampleResult"]


@dataclasses.dataclass
class SampleResult:
    """Draws and statistics of one call of :func:`sgmcmc.sample`.

    Every array has leading axes ``(chain, draw)``.

    Attributes:
        samples: the draws in the user's parameters (constrained values and
            deterministic sites for NumPyro targets; the position itself
            otherwise).
        position: the draws in the unconstrained space the sampler moved in.
        info: the sampler's per-step ``info`` NamedTuple (of the last step of
            each thinned block; ``is_divergent`` is OR-ed and
            ``num_grad_evals`` summed over the block).
        last_state: the vmapped sampler state after the last step (device
            arrays), to continue sampling.
        target: the target that was sampled.
        sampler_name: the sampler's name.
        num_warmup, thin, seed: the settings used.
        warmup_divergences: divergent steps per chain during warmup.
        warmup_grad_evals: gradient evaluations per chain during warmup.
        timing: seconds spent compiling, in warmup and in sampling.
        num_compilations: programs compiled by this call (0 when every
            program came from the cache of an earlier call).
        dropped_grad_evals: gradient evaluations per chain of the sampling
            steps whose draws the collection policy (``keep``) dropped, or
            ``None`` without a policy.
        reductions: ``{name: value}`` of the run's ``reducers`` (leading
            chain axis); empty without reducers.
    """

    samples: PyTree
    position: PyTree
    info: Any
    last_state: Any
    target: Target
    sampler_name: str
    num_warmup: int
    thin: int
    seed: Any
    warmup_divergences: np.ndarray
    warmup_grad_evals: np.ndarray
    timing: dict
    num_compilations: int
    dropped_grad_evals: np.ndarray | None = None
    reductions: dict | None = None

    @property
    def num_chains(self) -> int:
        return int(np.shape(self.info.is_divergent)[0])

    @property
    def num_samples(self) -> int:
        return int(np.shape(self.info.is_divergent)[1])

    @property
    def num_divergent(self) -> int:
        """Divergent draws after warmup, all chains together."""
        return int(np.sum(self.info.is_divergent))

    @property
    def num_grad_evals(self) -> np.ndarray:
        """Gradient evaluations per chain, warmup (and draws dropped by ``keep``) included."""
        total = np.sum(np.asarray(self.info.num_grad_evals), axis=1) + self.warmup_grad_evals
        return total if self.dropped_grad_evals is None else total + self.dropped_grad_evals

    def to_arviz(self, *, log_likelihood: bool = True, observed_data: bool = True):
        """ArviZ InferenceData (see :func:`sgmcmc.diagnostics.to_arviz`)."""
        if self.samples is None:
            raise ValueError(
                "this run kept no draws (keep_draws=False); its reducers' results are in result.reductions."
            )
        from sgmcmc.diagnostics.arviz import to_arviz

        return to_arviz(self, log_likelihood=log_likelihood, observed_data=observed_data)

    def __repr__(self) -> str:
        return (
            f"SampleResult(sampler={self.sampler_name!r}, target={self.target.name!r}, "
            f"num_chains={self.num_chains}, num_samples={self.num_samples}, thin={self.thin}, "
            f"num_divergent={self.num_divergent}, sampling_s={self.timing.get('sampling_s', float('nan')):.3g})"
        )
