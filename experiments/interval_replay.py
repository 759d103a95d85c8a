"""Which resampling should the fraction's condition interval use? Replayed on finished runs' predictions.

    python experiments/interval_replay.py <sweep or run folders…> [--out intervals.csv]

For every run on built-in wells (the cells' truth is in its predictions) it recomputes, from
``test_predictions.csv`` and ``val_predictions.csv`` alone (no store, no checkpoint), each condition's
affected fraction and two 95 % intervals over the condition's held-out wells:

- ``refit`` — what a run reports (``protocell.evaluate.fraction.affected_fractions``): wells resampled with
  replacement, the reference (anchors and isotonic curve) refitted on every draw;
- ``fixed`` — the same wells resampled with the reference fitted once (``bootstrap_wells``): the wells'
  own spread, without the anchors' uncertainty.

Per condition: the estimate, the truth, each interval, whether it covers the truth; per run: whether
``fraction_precision``'s rule (half-width > 0.10 or fewer than 3 wells) fires on each, and the status
the run would have had with that interval (its stored status with every other check as it recorded
them). docs/results.md reads the table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from protocell.artifacts import positive_class  # noqa: E402
from protocell.diagnostics.wells import MIN_WELLS, PRECISION  # noqa: E402
from protocell.evaluate.fraction import affected_fractions, bootstrap_wells, ci, reference_lr  # noqa: E402


def held_out(run: Path) -> tuple[dict, pd.DataFrame]:
    """The run's metrics and its held-out cells as ``affected_fractions`` reads them (test cells are the target)."""
    metrics = json.loads((run / "metrics.json").read_text())
    names = metrics.get("class_names") or ["Ref", "Exp"]
    parts = [pd.read_csv(run / "test_predictions.csv").assign(target=True)]
    if (run / "val_predictions.csv").exists():
        parts.append(pd.read_csv(run / "val_predictions.csv").assign(target=False))
    cells = pd.concat(parts, ignore_index=True)
    cells["exposed"] = (cells["label"] == positive_class(names)).to_numpy()
    return metrics, cells[["well", "condition", "score", "target", "true_label", "exposed"]]


def fixed_reference(cells: pd.DataFrame, fit: dict, n_boot: int = 200, seed: int = 0) -> dict:
    """Each condition's interval over its test wells with the reference ``fit`` held fixed."""
    rng = np.random.default_rng(seed)
    target = cells[cells["target"]]
    lr = reference_lr(target["score"].to_numpy(), fit)
    wells = target["well"].to_numpy()
    out = {}
    for cond in dict.fromkeys(target["condition"]):
        sel = (target["condition"] == cond).to_numpy()
        out[cond] = ci(bootstrap_wells(lr[sel], wells[sel], n_boot, rng))
    return out


def replay(run: Path) -> list[dict]:
    metrics, cells = held_out(run)
    if not (cells["true_label"] >= 0).all():
        return []  # real data: no truth to measure an interval against
    fraction = affected_fractions(cells)
    if not fraction.get("available"):
        return []
    fixed = fixed_reference(cells, fraction["fit"])
    others = [k for k, v in (metrics.get("diagnostics") or {}).items() if v.get("fires") and k != "fraction_precision"]
    rows = []
    for cond, est in fraction["conditions"].items():
        row = {
            "run": str(run),
            "condition": cond,
            "stored_status": metrics.get("status"),
            "other_checks": ";".join(others),
        }
        row |= {"true_auroc": metrics.get("true_label_auroc"), "n_wells": est["n_wells"]}
        row |= {"estimate": est["estimate"], "true": est["true"]}
        for name, (lo, hi) in (("refit", (est["ci_low"], est["ci_high"])), ("fixed", fixed[cond])):
            row |= {f"{name}_low": lo, f"{name}_high": hi, f"{name}_covers": bool(lo <= est["true"] <= hi)}
        rows.append(row)
    for name in ("refit", "fixed"):
        fires = any((r[f"{name}_high"] - r[f"{name}_low"]) / 2 > PRECISION or r["n_wells"] < MIN_WELLS for r in rows)
        status = rows[0]["stored_status"]  # failed / incomplete stay; ok / warning follow the checks
        if status in ("ok", "warning"):
            status = "warning" if fires or others else "ok"
        for r in rows:
            r[f"{name}_fires"], r[f"{name}_status"] = fires, status
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    runs = sorted({m.parent.resolve() for f in args.folders for m in Path(f).rglob("test_predictions.csv")})
    out = pd.DataFrame([row for run in runs for row in replay(run)])
    if args.out:
        out.to_csv(args.out, index=False)
    with pd.option_context("display.width", 250, "display.max_columns", 40, "display.max_colwidth", 60):
        print(out.drop(columns=["run", "other_checks"]).round(3).to_string(index=False))
    if len(out):
        for name in ("refit", "fixed"):
            print(f"{name}: covers the truth in {out[f'{name}_covers'].mean():.3f} of {len(out)} condition estimates")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
