"""Cell scores per population and the fraction of the exposed population that is affected.

Estimator (a two-group mixture, as in Storey's π₀): the Exp score distribution is a mix of
unaffected cells, distributed like the Ref cells, and affected cells that score high. Below a
threshold t taken in the Ref distribution (its median), almost only unaffected cells remain, so

    1 − π̂ = P_Exp(s ≤ t) / P_Ref(s ≤ t),    π̂ = fraction of Exp cells affected.

Assumptions, stated in the report: Ref cells are (nearly) all unaffected — if a share π_R of them
is affected too, π̂ estimates 1 − (1 − π_E)/(1 − π_R), slightly below π_E — and affected cells score
above the Ref median. The 95 % CI resamples wells of both conditions.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def affected_fraction(ref_scores: np.ndarray, exp_scores: np.ndarray, q: float = 0.5) -> float:
    t = np.quantile(ref_scores, q)
    below_ref = np.mean(ref_scores <= t)
    below_exp = np.mean(exp_scores <= t)
    return float(np.clip(1 - below_exp / below_ref, 0.0, 1.0))


def affected_fraction_ci(cells: pd.DataFrame, ref: str, exp: str, n_boot: int = 1000, seed: int = 0) -> dict:
    """cells: columns well, condition, score. Point estimate and 95 % well-bootstrap interval."""
    rng = np.random.default_rng(seed)
    wells = {c: [g["score"].to_numpy() for _, g in cells[cells["condition"] == c].groupby("well")] for c in (ref, exp)}

    def est(sample):
        return affected_fraction(np.concatenate(sample[ref]), np.concatenate(sample[exp]))

    point = est(wells)
    boots = [est({c: [w[i] for i in rng.integers(0, len(w), len(w))] for c, w in wells.items()}) for _ in range(n_boot)]
    return {"estimate": point, "ci_low": float(np.percentile(boots, 2.5)), "ci_high": float(np.percentile(boots, 97.5)),
            "threshold_quantile_of_ref": 0.5}
