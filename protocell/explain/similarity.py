"""Population statistics of prototype similarities, with wells as the unit of replication.

Input: a table with one row per cell (``well``, ``condition``) and one column per prototype
(max similarity of the cell to that prototype). Cells of one well are not independent, so
confidence intervals resample wells and tests compare well means.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import mannwhitneyu


def similarity_from_distance(d) -> np.ndarray:
    d = np.asarray(d, np.float64)
    return np.log((d + 1) / (d + 1e-4))


def population_means(cells: pd.DataFrame, protos: list[str], ref: str, exp: str,
                     n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Mean max-similarity per prototype in Ref and Exp, Exp − Ref, each with a 95 % CI from a
    bootstrap over wells (wells resampled with replacement within each condition)."""
    rng = np.random.default_rng(seed)
    groups = {c: [g[protos].to_numpy() for _, g in cells[cells["condition"] == c].groupby("well")]
              for c in (ref, exp)}

    def pooled_mean(wells):
        return np.concatenate(wells).mean(0)

    point = {c: pooled_mean(w) for c, w in groups.items()}
    boots = {c: np.stack([pooled_mean([w[i] for i in rng.integers(0, len(w), len(w))]) for _ in range(n_boot)])
             for c, w in groups.items()}
    diff = boots[exp] - boots[ref]
    out = pd.DataFrame({"prototype": protos,
                        f"mean_{ref}": point[ref], f"mean_{exp}": point[exp],
                        f"ci_low_{ref}": np.percentile(boots[ref], 2.5, 0), f"ci_high_{ref}": np.percentile(boots[ref], 97.5, 0),
                        f"ci_low_{exp}": np.percentile(boots[exp], 2.5, 0), f"ci_high_{exp}": np.percentile(boots[exp], 97.5, 0),
                        "difference": point[exp] - point[ref],
                        "diff_ci_low": np.percentile(diff, 2.5, 0), "diff_ci_high": np.percentile(diff, 97.5, 0)})
    return out


def benjamini_hochberg(p: np.ndarray) -> np.ndarray:
    """BH-adjusted p-values (q-values), monotone, capped at 1."""
    p = np.asarray(p, np.float64)
    n = len(p)
    order = np.argsort(p)
    ranked = p[order] * n / np.arange(1, n + 1)
    q = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(n)
    out[order] = np.minimum(q, 1.0)
    return out


def rank_differences(cells: pd.DataFrame, protos: list[str], ref: str, exp: str) -> pd.DataFrame:
    """Per prototype: well means compared by a two-sided Mann–Whitney U test, effect size as
    Cohen's d of the well means, BH FDR over prototypes; sorted by q then |effect|."""
    wm = cells.groupby(["condition", "well"])[protos].mean()
    a, b = wm.loc[ref], wm.loc[exp]
    rows = []
    for j in protos:
        x, y = a[j].to_numpy(), b[j].to_numpy()
        p = mannwhitneyu(y, x, alternative="two-sided").pvalue if len(x) > 1 and len(y) > 1 else np.nan
        sd = np.sqrt((x.var(ddof=1) + y.var(ddof=1)) / 2) if len(x) > 1 and len(y) > 1 else np.nan
        rows.append({"prototype": j, "well_mean_ref": x.mean(), "well_mean_exp": y.mean(),
                     "difference": y.mean() - x.mean(), "cohens_d": (y.mean() - x.mean()) / sd if sd else np.nan,
                     "p_value": p, "n_wells_ref": len(x), "n_wells_exp": len(y)})
    df = pd.DataFrame(rows)
    df["q_value"] = benjamini_hochberg(df["p_value"].fillna(1.0).to_numpy())
    return df.sort_values(["q_value", "cohens_d"], key=lambda s: s if s.name == "q_value" else -s.abs()).reset_index(drop=True)
