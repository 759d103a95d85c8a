"""Replay the fraction-precision check on finished runs from what they stored (no store, no checkpoint).

    python experiments/precision_replay.py <sweep or run folders…> [--statuses replayed.csv] [--out table.csv]

``protocell.diagnostics.wells.fraction_precision`` reads only ``metrics.json → affected_fraction`` (each
condition's estimate, its 95 % CI over held-out wells and the number of wells), so it can be applied to
any finished run. A run's status after the check: its stored status (or the one ``--statuses`` gives for
it: a CSV with ``run`` and ``status``, e.g. from an ``experiments/diagnose.py --imaging`` replay under a
newer rule), made ``warning`` when it was ``ok`` and the check fires. On built-in wells each row has the
truth: the exposed fraction's error and the true-label AUROC.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from protocell.diagnostics.wells import fraction_precision  # noqa: E402


def replay(run: Path, status: str | None) -> dict | None:
    metrics = json.loads((run / "metrics.json").read_text())
    frac = metrics.get("affected_fraction") or {}
    if not frac.get("available"):
        return None
    check = fraction_precision(frac)
    before = status or metrics.get("status")
    row = {"run": str(run), "status_before": before, "true_auroc": metrics.get("true_label_auroc")}
    for cond, est in frac["conditions"].items():
        row[f"frac_{cond}"] = est["estimate"]
        row[f"half_width_{cond}"] = (est["ci_high"] - est["ci_low"]) / 2
        row[f"wells_{cond}"] = est.get("n_wells")
        if "true" in est:
            row[f"err_{cond}"] = est["estimate"] - est["true"]
    row["precision_fires"] = check["fires"]
    row["status_after"] = "warning" if before == "ok" and check["fires"] else before
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+")
    ap.add_argument("--statuses", default=None, help="CSV with run,status: statuses replayed under newer rules")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    given = {}
    if args.statuses:
        table = pd.read_csv(args.statuses)
        given = dict(zip(table["run"].map(lambda r: str(Path(r).resolve())), table["status"]))
    runs = sorted({m.parent.resolve() for f in args.folders for m in Path(f).rglob("metrics.json")})
    rows = [r for r in (replay(run, given.get(str(run))) for run in runs) if r is not None]
    out = pd.DataFrame(rows)
    if args.out:
        out.to_csv(args.out, index=False)
    with pd.option_context("display.width", 250, "display.max_columns", 40, "display.max_colwidth", 70):
        print(out.round(3).to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
