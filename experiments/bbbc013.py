"""BBBC013 (FKHR-GFP translocation): the classic readout as a proxy truth, and protocell against it.

    python experiments/bbbc013.py <run folder> [--out <json>]
    python experiments/bbbc013.py --table <folder of run_seed*/>      # the seeds' table (markdown)

The plate's biology is known: PI3K inhibition stops FKHR's nuclear export, so GFP leaves the
cytoplasm and fills the nucleus. CellProfiler's translocation pipeline reads it per cell as the
nuclear / cytoplasmic GFP ratio. Here, per cell of the crop store the run trained on (prepare's
per-image normalised crops, the cell's mask):

- nucleus = the cell's pixels whose DNA signal is at least half its 99th percentile in the cell;
- cytoplasm ring = the cell's pixels at least 2 px away from the nucleus;
- N/C = mean GFP in the nucleus / mean GFP in the ring;
- "translocated" (the proxy truth) = N/C above the 95th percentile of the untreated *training* cells.

This is an example's measurement, not a library feature: the library never knows which channel is
a reporter. The script prints and writes the issue's bar for one run: protocell's cell AUROC
against the proxy (held-out wells), its well-label AUROC against that of the N/C ratio alone on the
same cells, the top exposed prototype's nearest patches and box, background prototypes and
duplicates, and the affected fraction of the treated wells against the proxy's.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def nc_ratio(crop: np.ndarray, mask: np.ndarray, gfp: int, dna: int, ring_gap: int = 2) -> tuple[float, np.ndarray]:
    """(N/C GFP ratio, nucleus mask) of one cell: crop (C, S, S), mask (S, S)."""
    cell = mask > 0
    d = crop[dna].astype(np.float64)
    g = crop[gfp].astype(np.float64)
    if cell.sum() < 10:
        return float("nan"), np.zeros_like(cell)
    nucleus = cell & (d >= 0.5 * np.percentile(d[cell], 99))
    nucleus = ndi.binary_opening(nucleus) if nucleus.sum() > 20 else nucleus
    if nucleus.sum() == 0:
        return float("nan"), nucleus
    ring = cell & ~ndi.binary_dilation(nucleus, iterations=ring_gap)
    if ring.sum() < 5:
        return float("nan"), nucleus
    return float(g[nucleus].mean() / max(g[ring].mean(), 1e-6)), nucleus


def store_ratios(store, channels: list[str]) -> pd.DataFrame:
    """N/C ratio of every original cell of the store: cell_id, well, condition, nc."""
    gfp, dna = channels.index("gfp"), channels.index("dna")
    m = store.manifest
    rows = []
    for i in np.flatnonzero(m["aug_of"].to_numpy() < 0):
        r, _ = nc_ratio(store.crop(int(i)), store.mask(int(i)), gfp, dna)
        rows.append(
            {"cell_id": int(m.at[i, "cell_id"]), "well": m.at[i, "well"], "condition": m.at[i, "condition"], "nc": r}
        )
    return pd.DataFrame(rows)


def evaluate(run_dir: Path) -> dict:
    from protocell.runs import load_run
    from protocell.stats import auroc

    run = load_run(run_dir)
    store = run.dm.store
    ref, exp = run.ref, run.exp
    ratios = store_ratios(store, store.channels).set_index("cell_id")
    train_ids = set(store.manifest["cell_id"].to_numpy()[run.dm.rows["push"]].tolist())
    untreated_train = ratios.loc[[c for c in ratios.index if c in train_ids]]
    threshold = float(np.nanpercentile(untreated_train.loc[untreated_train["condition"] == ref, "nc"], 95))
    ratios["translocated"] = (ratios["nc"] > threshold).astype(int)

    test = run.preds.join(ratios[["nc", "translocated"]], on="cell_id").dropna(subset=["nc"])
    exposed = (test["condition"] == exp).astype(int)
    out = {
        "run": run_dir.name,
        "threshold_nc": threshold,
        "n_test_cells": len(test),
        "n_test_wells": int(test["well"].nunique()),
        "cell_auroc_vs_proxy": auroc(test["score"], test["translocated"]),
        "well_label_auroc": auroc(test["score"], exposed),
        "well_label_auroc_nc_ratio": auroc(test["nc"], exposed),
    }
    out["well_label_auroc_ratio"] = out["well_label_auroc"] / out["well_label_auroc_nc_ratio"]

    # the top exposed prototype that is more similar in exposed wells
    em = json.loads((run.dir / "explain" / "explain_metrics.json").read_text())
    ranked = pd.read_csv(run.dir / "explain" / "prototype_differences.csv")
    up = ranked[(ranked["class"] == exp) & (ranked["difference"] > 0)]
    if "q_value" in up:
        up = up[up["q_value"] < 0.05]
    if len(up):
        j = int(str(up.iloc[0]["prototype"]).lstrip("p"))
        mosaic = pd.read_csv(run.dir / "explain" / "mosaics" / f"mosaic_{j:02d}.csv")
        near_nc = ratios.reindex(mosaic["cell_id"])["nc"]
        rec = run.record
        cell = int(rec["cell_id"][j])
        row = run.row(cell)
        _, nucleus = nc_ratio(
            store.crop(row), store.mask(row), store.channels.index("gfp"), store.channels.index("dna")
        )
        iy, ix = (int(v) for v in rec["latent_yx"][j])
        cy, cx = run.net.rf.centre(iy), run.net.rf.centre(ix)
        scale = store.crop_size / run.crop_size
        centre_on = bool(
            nucleus[
                min(int(round(cy * scale)), nucleus.shape[0] - 1), min(int(round(cx * scale)), nucleus.shape[1] - 1)
            ]
        )
        # the box the report draws (receptive field clipped to the crop, crop pixels of the network)
        y0, x0, y1, x1 = (float(v) * scale for v in rec["box_clipped"][j])
        inside = np.zeros_like(nucleus)
        inside[int(round(y0)) : int(round(y1)), int(round(x0)) : int(round(x1))] = True
        share = float((nucleus & inside).sum() / max(nucleus.sum(), 1))
        out.update(
            {
                "top_exp_prototype": j,
                "top_prototype_nearest_median_nc": float(np.nanmedian(near_nc)),
                "top_prototype_nearest_above_threshold": bool(np.nanmedian(near_nc) > threshold),
                "top_prototype_box_nucleus_share": share,
                "top_prototype_box_on_nucleus": share >= 0.5,
                "top_prototype_centre_on_nucleus": centre_on,
            }
        )
    else:
        out["top_exp_prototype"] = None
    health = pd.read_csv(run.dir / "explain" / "prototype_health.csv")
    out["background_prototype_share"] = em.get("background_prototype_share")
    dup = health["duplicate_of"]
    out["duplicate_share"] = float((dup.notna() & (dup.astype(str) != "")).mean())
    frac = json.loads((run.dir / "metrics.json").read_text()).get("affected_fraction", {})
    est = (frac.get("conditions") or {}).get(exp, {})
    proxy = float(test.loc[test["condition"] == exp, "translocated"].mean())
    out.update(
        {
            "affected_fraction_treated": est.get("estimate"),
            "affected_fraction_ci": [est.get("ci_low"), est.get("ci_high")],
            "proxy_fraction_treated": proxy,
            "proxy_fraction_untreated": float(test.loc[test["condition"] == ref, "translocated"].mean()),
        }
    )
    if est.get("estimate") is not None:
        out["affected_fraction_error"] = est["estimate"] - proxy
    return out


# the bar, per seed
BAR = {
    "cell_auroc_vs_proxy": ("≥", 0.95),
    "well_label_auroc_ratio": ("≥", 0.98),
    "duplicate_share": ("≤", 0.10),
    "background_prototype_share": ("≤", 0.0),
    "abs_affected_fraction_error": ("≤", 0.10),
}
COLUMNS = [
    "seed",
    "n_test_wells",
    "n_test_cells",
    "cell_auroc_vs_proxy",
    "well_label_auroc",
    "well_label_auroc_nc_ratio",
    "well_label_auroc_ratio",
    "top_exp_prototype",
    "top_prototype_nearest_median_nc",
    "threshold_nc",
    "top_prototype_nearest_above_threshold",
    "top_prototype_box_nucleus_share",
    "top_prototype_centre_on_nucleus",
    "background_prototype_share",
    "duplicate_share",
    "affected_fraction_treated",
    "proxy_fraction_treated",
    "affected_fraction_error",
]


def meets(row: dict) -> list[str]:
    """The bar items a seed misses."""
    row = {
        **row,
        "abs_affected_fraction_error": abs(row["affected_fraction_error"])
        if row.get("affected_fraction_error") is not None
        else None,
    }
    missed = [k for k, (op, v) in BAR.items() if row.get(k) is None or (row[k] < v if op == "≥" else row[k] > v)]
    if not row.get("top_prototype_nearest_above_threshold"):
        missed.append("top prototype's nearest above the untreated 95th percentile")
    if not row.get("top_prototype_box_on_nucleus"):
        missed.append("top prototype's box on the nucleus")
    return missed


def table(out: Path) -> str:
    """Markdown table of every ``run_seed*/bbbc013.json`` under ``out``: one row a seed, mean ± SD."""
    rows = []
    for f in sorted(out.glob("run_seed*/bbbc013.json")):
        r = json.loads(f.read_text())
        rows.append(
            {
                "seed": f.parent.name.removeprefix("run_seed"),
                **{k: r.get(k) for k in COLUMNS[1:]},
                "missed": ", ".join(meets(r)) or "—",
            }
        )
    if not rows:
        raise SystemExit(f"no run_seed*/bbbc013.json under {out}: run experiments/bbbc013.sh first")
    df = pd.DataFrame(rows)
    num = [c for c in COLUMNS[1:] if pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])]
    summary = {
        "seed": "mean ± SD",
        **{c: f"{df[c].mean():.3f} ± {df[c].std(ddof=1) if len(df) > 1 else 0:.3f}" for c in num},
    }
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(COLUMNS + ["missed"]) + " |", "|" + "---|" * (len(COLUMNS) + 1)]
    lines += ["| " + " | ".join(fmt(r[c]) for c in COLUMNS + ["missed"]) + " |" for r in df.to_dict("records")]
    lines.append("| " + " | ".join(str(summary.get(c, "")) for c in COLUMNS + ["missed"]) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path, nargs="?", help="a run folder trained on the BBBC013 store")
    ap.add_argument("--out", type=Path, help="write the run's numbers here (JSON)")
    ap.add_argument(
        "--table",
        type=Path,
        metavar="FOLDER",
        help="the seeds' table (markdown) of FOLDER/run_seed*/bbbc013.json, also written to FOLDER/bbbc013.md",
    )
    args = ap.parse_args(argv)
    if args.table:
        md = table(args.table)
        (args.table / "bbbc013.md").write_text(md + "\n")
        print(md)
        return 0
    if args.run is None:
        ap.error("give a run folder, or --table FOLDER")
    res = evaluate(args.run)
    text = json.dumps(res, indent=2, default=float)
    if args.out:
        args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
