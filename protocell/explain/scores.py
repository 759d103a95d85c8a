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
    ref_all = np.concatenate(wells[ref])
    return {"estimate": point, "ci_low": float(np.percentile(boots, 2.5)), "ci_high": float(np.percentile(boots, 97.5)),
            "estimator": "1 - P_Exp(s <= t) / P_Ref(s <= t), t = Ref median score (two-group mixture)",
            "assumption": "Ref cells are (nearly) all unaffected and affected cells score above the Ref median",
            "threshold_quantile_of_ref": 0.5, "threshold": float(np.quantile(ref_all, 0.5)),
            "n_wells_ref": len(wells[ref]), "n_wells_exp": len(wells[exp]), "n_boot": int(n_boot)}


def plot_scores(preds: pd.DataFrame, ref: str, exp: str, frac: dict, out) -> None:
    """Figure 5: the Exp score of every test cell, per condition, and the affected-fraction estimate."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    bins = np.linspace(0, 1, 41)
    for cond, colour in ((ref, "tab:blue"), (exp, "tab:red")):
        s = preds.loc[preds["condition"] == cond, "score"]
        ax.hist(s, bins, alpha=0.5, density=True, color=colour,
                label=f"{cond} ({len(s)} cells, {preds.loc[preds['condition'] == cond, 'well'].nunique()} wells)")
    t = frac.get("threshold")
    if t is not None:
        ax.axvline(t, color="k", ls="--", lw=0.8, label=f"{ref} median (threshold)")
    title = (f"estimated affected fraction of {exp}: {frac['estimate']:.2f} "
             f"(95 % CI {frac['ci_low']:.2f}–{frac['ci_high']:.2f}, bootstrap over wells)")
    if frac.get("true") is not None:
        title += f"\ntrue (ground truth): {frac['true']:.2f}"
    ax.set_title(title, fontsize=8)
    ax.set_xlabel(f"{exp} score of a test cell")
    ax.set_ylabel("density")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    plt.close(fig)
