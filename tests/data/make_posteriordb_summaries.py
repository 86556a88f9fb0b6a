"""Summarise posteriordb reference draws into the small files the tests read.

Run from the repository root with the shared posteriordb folder beside it:

    python tests/data/make_posteriordb_summaries.py ../shared/posteriordb

For each posterior and each reference column it stores the mean, the sd, and
their Monte Carlo standard errors (mean: sd / sqrt(ESS); sd: the MCSE of the
mean of (x - mean)^2, ESS-based, propagated to the sd by the delta method)
in ``posteriordb_summaries.json``, keyed by posterior name, then column.
The reference draws are 10 chains x 1000 near-independent draws.

It also copies each posterior's ``data.json`` byte for byte to
``posteriordb/<posterior name>/data.json`` beside this script (after checking
its SHA-256 against ``reference_info.json``), so the tests need nothing
outside the repository.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import sys

import arviz as az
import numpy as np

POSTERIORS = [
    "eight_schools-eight_schools_noncentered",
    "kidiq-kidscore_interaction",
    "mesquite-logmesquite_logvas",
    "sblrc-blr",
    "kilpisjarvi_mod-kilpisjarvi",
    "arK-arK",
    "arma-arma11",
    "gp_pois_regr-gp_regr",
    "low_dim_gauss_mix-low_dim_gauss_mix",
]

HERE = pathlib.Path(__file__).parent


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


def copy_data(folder: pathlib.Path, name: str) -> None:
    raw = (folder / "data.json").read_bytes()
    info = json.loads((folder / "reference_info.json").read_text())
    expected = info["source"]["sha256_unzipped_data_json"]
    if hashlib.sha256(raw).hexdigest() != expected:
        raise ValueError(f"{folder / 'data.json'} does not match the SHA-256 in reference_info.json")
    dest = HERE / "posteriordb" / name / "data.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(raw)


def main(root: str) -> None:
    root_path = pathlib.Path(root)
    summary = {}
    for name in POSTERIORS:
        summary[name] = summarise(root_path / name)
        copy_data(root_path / name, name)
    target = HERE / "posteriordb_summaries.json"
    target.write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
    print(f"wrote {target} and the data of {len(POSTERIORS)} posteriors under {HERE / 'posteriordb'}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/posteriordb")
