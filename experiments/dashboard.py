"""A W&B-style dashboard of a grid: one panel per metric, runs grouped by ablation.

    python experiments/dashboard.py <compare.py's …_runs.csv> --out docs/figures/ablations.png
        [--group backbone mask last_layer] [--metrics true_label_auroc well_cue_auroc …]

Each panel shows every run as a dot (one colour per group, seeds side by side) and the group's mean
as a bar with its sample SD, as a W&B report's grouped bar panels do; the panel's title names the
metric and the direction that is better. The figure is drawn from the per-run table
(``experiments/compare.py --out``), so it can be redrawn from the committed CSV without the runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

PANELS = {  # metric → (title, better)
    "true_label_auroc": ("true-label AUROC", "higher"),
    "true_label_accuracy": ("cell-call accuracy (truth)", "higher"),
    "well_label_auroc": ("well-label AUROC", "≈ what the biology allows"),
    "well_cue_auroc": ("well cue (unaffected Exp vs Ref)", "0.5"),
    "affected_fraction_error": ("affected fraction − truth (Exp)", "0"),
    "localisation_share": ("Exp prototypes on the change", "higher"),
    "background_prototype_share": ("prototypes in background", "0"),
    "significant_prototype_share": ("prototypes differing Ref/Exp (q < 0.05)", "—"),
    "train_seconds": ("training wall time (s)", "lower"),
}


def dashboard(runs: pd.DataFrame, out: str | Path, group: list[str], metrics: list[str]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [m for m in metrics if m in runs and runs[m].notna().any()]
    labels = runs[group].astype(str).agg(" · ".join, axis=1)
    order = sorted(labels.unique())
    colours = plt.get_cmap("tab10")(np.arange(len(order)) % 10)
    cols = min(3, len(metrics))
    rows = -(-len(metrics) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.3 * cols, 2.9 * rows), squeeze=False)
    for ax, metric in zip(axes.flat, metrics):
        for i, (name, colour) in enumerate(zip(order, colours)):
            v = runs.loc[labels == name, metric].astype(float).dropna().to_numpy()
            if len(v) == 0:
                continue
            ax.bar(
                i, v.mean(), color=colour, alpha=0.35, width=0.7, yerr=v.std(ddof=1) if len(v) > 1 else None, capsize=3
            )
            ax.scatter(i + np.linspace(-0.18, 0.18, len(v)), v, color=colour, s=14, zorder=3)
        title, better = PANELS.get(metric, (metric, ""))
        ax.set_title(f"{title}\n(better: {better})", fontsize=8.5)
        ax.set_xticks(range(len(order)), order, rotation=35, ha="right", fontsize=7)
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(metrics) :]:
        ax.axis("off")
    fig.suptitle(
        f"{len(runs)} runs grouped by {' · '.join(group)}: bars = mean ± SD over seeds, dots = runs", fontsize=9
    )
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", help="a per-run CSV (experiments/compare.py --out writes <out>_runs.csv)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--group", nargs="+", default=["backbone", "mask", "last_layer"])
    ap.add_argument("--metrics", nargs="+", default=list(PANELS))
    args = ap.parse_args(argv)
    print(dashboard(pd.read_csv(args.runs), args.out, args.group, args.metrics))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
