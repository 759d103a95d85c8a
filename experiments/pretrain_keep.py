"""Which pretrain epoch to keep: the rules compared on finished runs of the built-in wells.

    python experiments/pretrain_keep.py outputs/multirun/robustness [more folders] [--out table.csv]

A run's pretrain trajectory does not depend on the rule that picks an epoch from it (the rule only
reads validation metrics), so every rule can be replayed on any run that logged ``val/auroc``,
``val/auroc_se`` (protocell ≥ this version), ``val/ce`` and the ground-truth monitor's
``val/true_auroc`` (the probe's true-label AUROC on the validation cells: built-in wells only).
Per run and rule: the epoch kept and its probe's true AUROC, beside the best the pretrain reached.

Rules: ``ce`` the lowest validation cross-entropy (protocell before 2026-11-28); ``auroc_max`` the
highest validation AUROC against the well labels; ``auroc_tied`` the last epoch within 1.96 standard
errors of the highest (``KeepBestPretrain``, the current default); ``last`` the last pretrain epoch.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from protocell.compare import run_factors  # noqa: E402
from protocell.training.callbacks import KeepBestPretrain  # noqa: E402


def replay(p: pd.DataFrame) -> dict[str, int]:
    """The epoch each rule keeps from ``p`` (one row per pretrain epoch, indexed by epoch)."""
    kept = {"ce": int(p["val/ce"].idxmin()), "auroc_max": int(p["val/auroc"].idxmax()), "last": int(p.index.max())}
    keep = KeepBestPretrain([], monitor="val/auroc", mode="max", se="val/auroc_se", z=1.96)
    for epoch, row in p.iterrows():
        if keep.offer(float(row["val/auroc"]), float(row["val/auroc_se"])):
            kept["auroc_tied"] = int(epoch)
    return kept


def run_table(run: Path) -> dict | None:
    """The rules' kept epochs of one finished run; None for a run still going (no metrics.json) or one
    that did not log what the rules read."""
    if not (run / "metrics.json").exists():
        return None
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    m = pd.read_csv(run / "metrics.csv")
    need = ["val/ce", "val/auroc", "val/auroc_se", "val/true_auroc"]
    if any(c not in m for c in need):
        return None
    p = m.dropna(subset=["val/auroc"]).groupby("epoch")[need].last()
    p = p.loc[p.index < int(cfg["schedule"]["pretrain_epochs"])]
    if p.empty:
        return None
    kept = replay(p)
    row = {
        "run": run.name,
        "plate": run_factors(run).get("plate") or "default",
        "split": cfg["data"]["split_by"],
        "seed": cfg["seed"],
        "threads": cfg.get("threads"),
        "best_true": p["val/true_auroc"].max(),
    }
    for rule, epoch in kept.items():
        row[f"{rule}_epoch"], row[f"{rule}_true"] = epoch, p.loc[epoch, "val/true_auroc"]
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folders", nargs="+", type=Path)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    rows = [
        r
        for f in args.folders
        for c in sorted(f.rglob("config.yaml"))
        if (c.parent / "metrics.csv").exists() and (r := run_table(c.parent)) is not None
    ]
    if not rows:
        sys.exit("pretrain_keep: no run with val/auroc, val/auroc_se, val/ce and val/true_auroc in its metrics.csv")
    df = pd.DataFrame(rows).sort_values(["threads", "plate", "split", "seed"])
    rules = ["ce", "auroc_max", "auroc_tied", "last"]
    print(df.round(3).to_string(index=False))
    print(
        "\nprobe's true AUROC at the kept epoch, mean (min) over runs; best reachable:",
        f"{df['best_true'].mean():.3f} ({df['best_true'].min():.3f})",
    )
    for r in rules:
        gap = df["best_true"] - df[f"{r}_true"]
        print(
            f"  {r:10s} {df[f'{r}_true'].mean():.3f} ({df[f'{r}_true'].min():.3f})   "
            f"short of the best by > 0.02 in {(gap > 0.02).sum()} of {len(df)} runs"
        )
    if args.out:
        df.to_csv(args.out, index=False)


if __name__ == "__main__":
    main()
