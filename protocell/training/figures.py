"""``training_curves.png``: what happened during training, per epoch, phases shaded."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

PHASE_NAMES = {0: "pretrain", 1: "warm-up", 2: "joint", 3: "last layer"}
PHASE_COLOURS = {0: "#eeeeee", 1: "#fff2cc", 2: "#ffffff", 3: "#dde8f7"}


def plot_training_curves(metrics_csv: str | Path, out_png: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    log = pd.read_csv(metrics_csv)
    per_epoch = log.groupby("epoch").mean(numeric_only=True)
    panels = [
        ("loss terms", ["train/ce", "train/clst", "train/sep"]),
        (
            "accuracy and AUROC (well labels; val/true_auroc: per-cell truth, built-in wells only)",
            ["train/acc", "val/acc", "val/auroc", "val/true_auroc"],
        ),
        ("push: mean distance to nearest patch", ["push/mean_distance"]),
    ]
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 8), sharex=True)
    for ax, (title, cols) in zip(axes, panels):
        if "phase" in per_epoch:
            for epoch, phase in per_epoch["phase"].dropna().items():
                ax.axvspan(epoch - 0.5, epoch + 0.5, color=PHASE_COLOURS.get(int(phase), "white"), lw=0)
        for col in cols:
            if col in per_epoch and per_epoch[col].notna().any():
                series = per_epoch[col].dropna()
                ax.plot(series.index, series.values, "o-" if col.startswith("push") else "-", label=col, ms=4)
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8, loc="upper right")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c, ec="grey") for c in PHASE_COLOURS.values()]
    fig.legend(handles, PHASE_NAMES.values(), loc="lower center", ncol=4, fontsize=8, title="phase (background)")
    axes[-1].set_xlabel("epoch")
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    out_png = Path(out_png)
    fig.savefig(out_png, dpi=90)
    plt.close(fig)
    return out_png
