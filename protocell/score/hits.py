"""Hits: each treatment against the reference wells, a p-value over wells, FDR across treatments.

The unit is the well (cells of a well share its history): a treatment's wells against the reference
wells, both as the per-plate normalised fraction where the well's plate has controls (else the raw
fraction), by Welch's two-sided t-test; a treatment of one well by the prediction-interval t-test of a
new observation, t = (x − m) / (s · √(1 + 1/n)) with n − 1 degrees of freedom (m, s, n: the reference
wells' mean, SD, count). p-values are Benjamini–Hochberg adjusted across every tested treatment
(``explain.similarity.benjamini_hochberg``); a hit is q < ``fdr``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from protocell.stats import benjamini_hochberg


def welch(a, b) -> tuple[float, float]:
    """(t, two-sided p) of Welch's t-test of the means of ``a`` and ``b`` (≥ 2 values each); two samples
    without spread give p 0 when their means differ, 1 when not."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    diff = a.mean() - b.mean()
    if va + vb == 0:
        return (float(np.sign(diff) * np.inf), 0.0) if diff != 0 else (0.0, 1.0)
    t = diff / np.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return float(t), float(2 * stats.t.sf(abs(t), df))


def single_well(x: float, ref) -> tuple[float, float]:
    """(t, two-sided p) of one new value ``x`` against the sample ``ref`` (≥ 2 values): the prediction
    interval's t."""
    ref = np.asarray(ref, np.float64)
    n, m, s = len(ref), ref.mean(), ref.std(ddof=1)
    if s == 0:
        return (float(np.sign(x - m) * np.inf), 0.0) if x != m else (0.0, 1.0)
    t = (x - m) / (s * np.sqrt(1 + 1 / n))
    return float(t), float(2 * stats.t.sf(abs(t), n - 1))


def hit_table(wells: pd.DataFrame, value: str, fallback: str, fdr: float = 0.05) -> pd.DataFrame:
    """One row per treatment other than the reference: role, compound, dose, n_wells, ``basis`` (the
    column its wells were tested on: ``value`` where a well has it, else ``fallback``; "mixed" when
    both), its wells' mean, the reference wells' mean, the difference, t, p_value, q_value (BH) and
    ``hit`` (q < fdr). ``wells``: one row per well with treatment, role, compound, dose and the two
    columns; wells with neither (no cells) are left out."""
    used = wells[value].notna()
    w = wells.assign(_v=wells[value].where(used, wells[fallback]), _basis=np.where(used, value, fallback))
    w = w[w["_v"].notna()]
    ref = w.loc[w["role"] == "reference", "_v"].to_numpy(np.float64)
    rows = []
    for name, g in w[w["role"] != "reference"].groupby("treatment", sort=False):
        x = g["_v"].to_numpy(np.float64)
        t = p = np.nan
        why = ""
        if len(ref) < 2:
            why = f"{len(ref)} reference well(s) with a value: 2 are needed"
        elif len(x) >= 2:
            t, p = welch(x, ref)
        else:
            t, p = single_well(float(x[0]), ref)
        basis = g["_basis"].unique()
        rows.append(
            {
                "treatment": name,
                "role": g["role"].iloc[0],
                "compound": g["compound"].iloc[0],
                "dose": g["dose"].iloc[0],
                "n_wells": int(len(x)),
                "n_reference_wells": int(len(ref)),
                "basis": basis[0] if len(basis) == 1 else "mixed",
                "mean": float(x.mean()),
                "reference_mean": float(ref.mean()) if len(ref) else np.nan,
                "difference": float(x.mean() - ref.mean()) if len(ref) else np.nan,
                "t": t,
                "p_value": p,
                "note": why,
            }
        )
    out = pd.DataFrame(
        rows,
        columns=[
            "treatment",
            "role",
            "compound",
            "dose",
            "n_wells",
            "n_reference_wells",
            "basis",
            "mean",
            "reference_mean",
            "difference",
            "t",
            "p_value",
            "note",
        ],
    )
    out["q_value"] = benjamini_hochberg(out["p_value"].to_numpy()) if len(out) else []
    out["hit"] = out["q_value"] < fdr
    return out.sort_values(["hit", "q_value"], ascending=[False, True], kind="stable").reset_index(drop=True)
