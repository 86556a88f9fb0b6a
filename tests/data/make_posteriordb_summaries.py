"""Summarise posteriordb reference draws into the small JSON the tests read.

Run from the repository root with the shared posteriordb folder beside it:

    python tests/data/make_posteriordb_summaries.py ../shared/posteriordb

For each posterior and each reference column it stores the mean, the sd, and
their Monte Carlo standard errors (mean: sd / sqrt(ESS); sd: the MCSE of the
mean of (x - mean)^2, ESS-based, propagated to the sd by the delta method).
The reference draws are 10 chains x 1000 near-independent draws.
"""

from __future__ import annotations

import json
import pathlib
import sys

import arviz as az
import numpy as np

POSTERIORS = ["eight_schools-eight_schools_noncentered"]


def summarise(folder: pathlib.Path) -> dict:
    chains = json.loads((folder / "reference_draws.json").read_text())
    out = {}
    for name in chains[0]:
        draws = np.array([c[name] for c in chains], np.float64)  # (10, 1000)
        mean, sd = draws.mean(), draws.std()
        ess_mean = float(az.ess(draws, method="bulk"))
        sq = (draws - mean) ** 2
        ess_sq = float(az.ess(sq, method="bulk"))
        se_var = sq.std() / np.sqrt(ess_sq)
        out[name] = {
            "mean": mean,
            "sd": sd,
            "mcse_mean": sd / np.sqrt(ess_mean),
            "mcse_sd": se_var / (2 * sd),
        }
    return out


def main(root: str) -> None:
    root_path = pathlib.Path(root)
    summary = {name: summarise(root_path / name) for name in POSTERIORS}
    target = pathlib.Path(__file__).with_name("posteriordb_summaries.json")
    target.write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
    print(f"wrote {target}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/posteriordb")
