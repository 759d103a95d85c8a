"""Figure 5: cell scores per condition and the affected fraction of each condition.

The fraction is the one estimator of ``protocell.evaluate.fraction`` (computed at evaluation and stored in
``metrics.json`` → ``affected_fraction``); this figure only shows it beside the scores it rests on:
the calibrated P(affected | score) of every test cell per condition (the raw Exp score when the run
has no calibration).
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def fraction_lines(frac: dict) -> list[str]:
    """One line per condition: estimate, 95 % CI over wells, truth when known."""
    if not frac or not frac.get("available"):
        return [f"affected fraction: not available ({(frac or {}).get('reason', 'no calibration')})"]
    lines = []
    for cond, est in frac["conditions"].items():
        ci = (
            f"95 % CI {est['ci_low']:.2f}–{est['ci_high']:.2f}"
            if np.isfinite([est["ci_low"], est["ci_high"]]).all()
            else "no CI: a condition has fewer than 2 wells"
        )
        line = f"{cond}: affected fraction {est['estimate']:.2f} ({ci}, {est['n_wells']} wells)"
        if est.get("called_share") is not None and np.isfinite(est["called_share"]):
            line += f" · {est['called_share']:.2f} called"
        if est.get("true") is not None:
            line += f" · true {est['true']:.2f}"
        lines.append(line)
    if frac.get("reliable") is False:
        lines.append("UNRELIABLE: a check without ground truth says it cannot be trusted (metrics.json → reasons)")
    return lines


def plot_scores(preds: pd.DataFrame, conditions: list[str], frac: dict, out) -> None:
    import matplotlib.pyplot as plt

    col = "calibrated" if "calibrated" in preds else "score"
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    bins = np.linspace(0, 1, 41).tolist()
    for cond, colour in zip(conditions, ("tab:blue", "tab:red", "tab:green", "tab:purple")):
        s = preds.loc[preds["condition"] == cond, col]
        ax.hist(
            s,
            bins,
            alpha=0.5,
            density=True,
            color=colour,
            label=f"{cond} ({len(s)} cells, {preds.loc[preds['condition'] == cond, 'well'].nunique()} wells)",
        )
    if col == "calibrated":
        ax.axvline(0.5, color="k", ls="--", lw=0.8, label="cell call (P = 0.5)")
    ax.set_title("\n".join(fraction_lines(frac)), fontsize=7.5)
    ax.set_xlabel("P(affected | score) of a test cell" if col == "calibrated" else "Exp score of a test cell")
    ax.set_ylabel("density")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    plt.close(fig)
