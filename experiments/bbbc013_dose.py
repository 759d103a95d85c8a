"""BBBC013's dose–response (docs/examples/bbbc013_dose.md): protocell's readouts against the classic ones.

    python experiments/bbbc013_dose.py <run folder> [<run folder> …] --out <folder>

Each run folder is an ``experiment=bbbc013`` run trained on the 24 control wells and scored on the whole
plate (``score.py run=<run> data.path=[<controls store>,<dose store>]``: its ``score/`` folder). The classic
readouts are computed here, per cell of both stores, with the N/C ratio of ``experiments/bbbc013.py``
(nuclear / cytoplasmic GFP, the nucleus from the DNA channel inside the cell's mask):

- ``nc_share``: the share of a well's cells whose N/C ratio is above the 95th percentile of every untreated
  control cell (CellProfiler's "percent translocated");
- ``nc_median``: the well's median N/C ratio;

and, for the graded-response question, the share of a well's cells whose protocell score is above the 95th
percentile of the untreated cells the run did not train on (``score_share``: the N/C share's definition on
the network's score).

Per run: Z′ (and robust Z′, SSMD) of every readout over the same held-out control wells as score's plate
QC (and of the classic readouts over all 24 controls, as they train on nothing); a four-parameter logistic
per series (A–D, E–H) with the EC50 (as a dose rank: 9 + log2 EC50) and its 95 % CI over wells; each
readout's mean per dose rank; a figure of every readout per dose rank as percent of control. Writes
``<out>/bbbc013_dose.json``, ``<out>/bbbc013_dose.md`` (the tables) and ``<out>/readouts_by_rank.png``;
the per-cell N/C ratios are cached in ``<out>/nc_ratios.csv``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))
from bbbc013 import store_ratios  # noqa: E402

from protocell.score.dose import dose_response  # noqa: E402
from protocell.score.plates import control_stats  # noqa: E402

READOUTS = {
    "affected_fraction": "protocell affected fraction",
    "mean_p_affected": "protocell mean P(affected)",
    "score_shift": "protocell score shift (reference SD)",
    "score_share": "protocell: share of cells with score > untreated 95th pct",
    "nc_share": "classic: share of cells with N/C > untreated 95th pct",
    "nc_median": "classic: median N/C per well",
}
CLASSIC = ("nc_share", "nc_median")


def nc_table(stores: list[str], cache: Path) -> pd.DataFrame:
    """Per cell of every store: store, cell_id, well, condition, nc (cached in ``cache``)."""
    from protocell.data.store import CropStore

    if cache.exists():
        return pd.read_csv(cache, keep_default_na=False, na_values=[""])
    parts = []
    for s in stores:
        store = CropStore(s)
        parts.append(store_ratios(store, store.channels).assign(store=str(s)))
    df = pd.concat(parts, ignore_index=True)
    df.to_csv(cache, index=False)
    return df


def well_readouts(run: Path, nc: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """One row per well: plate, well, role, compound, dose, dose_rank, untrained (the well's cells were not
    trained on: it counts in the plate QC) and every readout; and the thresholds used."""
    cells = pd.read_csv(run / "score" / "cells.csv", keep_default_na=False, na_values=[""], low_memory=False)
    wells = pd.read_csv(run / "score" / "wells.csv", keep_default_na=False, na_values=[""])
    cells = cells.merge(nc[["store", "cell_id", "nc"]], on=["store", "cell_id"], how="left")
    untreated = cells[cells["condition"] == "untreated"]
    nc_cut = float(np.nanpercentile(untreated["nc"], 95))
    score_cut = float(np.nanpercentile(untreated.loc[untreated["run_split"] != "train", "score"], 95))
    g = cells.assign(above_nc=cells["nc"] > nc_cut, above_score=cells["score"] > score_cut).groupby("well")
    out = wells[
        [
            "plate",
            "well",
            "role",
            "compound",
            "dose",
            "dose_rank",
            "n_cells",
            "n_train_cells",
            "affected_fraction",
            "untrained_fraction",
            "mean_p_affected",
            "score_shift",
        ]
    ].copy()
    out["nc_share"] = out["well"].map(g["above_nc"].mean())
    out["nc_median"] = out["well"].map(g["nc"].median())
    out["score_share"] = out["well"].map(g["above_score"].mean())
    out["untrained"] = out["n_train_cells"] == 0
    return out, {"nc_threshold": nc_cut, "score_threshold": score_cut}


def run_numbers(run: Path, nc: pd.DataFrame, n_boot: int = 200) -> dict:
    wells, cuts = well_readouts(run, nc)
    ctrl = wells[wells["role"] != "scored"]
    held = ctrl[ctrl["untrained"]]
    qc = {}
    for col in READOUTS:
        for name, c in (("held_out", held), ("all", ctrl)):
            if name == "all" and col not in CLASSIC:
                continue  # the network's readouts on trained-on wells would flatter it
            s = control_stats(c.loc[c["role"] == "exposed", col], c.loc[c["role"] == "reference", col])
            qc[f"{col}|{name}"] = {k: s[k] for k in ("n_neg", "n_pos", "z_prime", "robust_z_prime", "ssmd", "verdict")}
    dosed = wells[wells["dose"].notna()]
    fits = {}
    for col in READOUTS:
        f = dose_response(dosed, col, n_boot=n_boot, seed=0)
        for r in f.itertuples():
            fits[f"{col}|{r.compound}"] = {
                "ec50_rank": 9 + np.log2(r.ec50),
                "ci_low_rank": 9 + np.log2(r.ec50_ci_low),
                "ci_high_rank": 9 + np.log2(r.ec50_ci_high),
                "hill": r.hill,
                "r2": r.r2,
                "ok": bool(r.ok),
            }
    by_rank = dosed.groupby("dose_rank")[list(READOUTS)].mean()
    return {
        "run": str(run),
        "seed": json.loads((run / "metrics.json").read_text()).get("seed"),
        **cuts,
        "qc": qc,
        "fits": fits,
        "by_rank": by_rank.reset_index().to_dict(orient="list"),
        "controls": {
            "held_out_reference": int((held["role"] == "reference").sum()),
            "held_out_exposed": int((held["role"] == "exposed").sum()),
        },
        "wells": wells.to_dict(orient="list"),
    }


def plot_by_rank(res: dict, out: Path) -> None:
    """Every readout's mean per dose rank as percent of control (0: untreated wells' median, 100: inhibited)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    wells = pd.DataFrame(res["wells"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for ax, (series, label) in zip(axes, (("series_AD", "rows A–D"), ("series_EH", "rows E–H"))):
        d = wells[wells["compound"] == series]
        for col, name in READOUTS.items():
            lo = wells.loc[wells["role"] == "reference", col].median()
            hi = wells.loc[wells["role"] == "exposed", col].median()
            m = d.groupby("dose_rank")[col].mean()
            ax.plot(
                m.index, 100 * (m - lo) / (hi - lo), "o-" if col not in CLASSIC else "s--", ms=3.5, lw=1.2, label=name
            )
        ax.axhline(0, color="k", lw=0.5)
        ax.axhline(100, color="k", lw=0.5)
        ax.set_xlabel("dose rank (two-fold dilutions; 9 = top dose)", fontsize=8)
        ax.set_title(f"{label}: each readout as percent of control (mean of 4 wells)", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].set_ylabel("percent of control", fontsize=8)
    fig.legend(*axes[0].get_legend_handles_labels(), fontsize=7, loc="lower center", ncol=3, frameon=False)
    fig.tight_layout(rect=(0, 0.13, 1, 1))
    fig.savefig(out, dpi=100)
    plt.close(fig)


def markdown(results: list[dict]) -> str:
    """The EC50 / QC table (one row per readout and seed; the classic readouts depend on the seed only through
    which control wells were held out) and the per-rank table."""

    def f(v, d=3):
        return "" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.{d}f}"

    lines = [
        "| readout | seed | EC50 A–D (dose rank, 95 % CI) | Hill A–D | EC50 E–H (dose rank, 95 % CI) | Hill E–H | "
        "Z′ held-out controls | robust Z′ | SSMD | Z′ all 24 controls |",
        "|" + "---|" * 10,
    ]
    for col, name in READOUTS.items():
        for res in results:
            cells = []
            for series in ("series_AD", "series_EH"):
                fit = res["fits"].get(f"{col}|{series}", {})
                cells += [
                    f"{f(fit.get('ec50_rank'), 2)} ({f(fit.get('ci_low_rank'), 2)}–{f(fit.get('ci_high_rank'), 2)})",
                    f(fit.get("hill"), 1),
                ]
            q = res["qc"][f"{col}|held_out"]
            allq = res["qc"].get(f"{col}|all", {})
            lines.append(
                f"| {name} | {res['seed']} | {cells[0]} | {cells[1]} | {cells[2]} | {cells[3]} | "
                f"{f(q['z_prime'])} | {f(q['robust_z_prime'])} | {f(q['ssmd'], 1)} | {f(allq.get('z_prime'))} |"
            )
    ranks = results[0]["by_rank"]["dose_rank"]
    lines += [
        "",
        "| readout | seed | " + " | ".join(f"rank {r:g}" for r in ranks) + " |",
        "|" + "---|" * (2 + len(ranks)),
    ]
    for col, name in READOUTS.items():
        for res in results if col not in CLASSIC else results[:1]:
            lines.append(
                f"| {name} | {res['seed'] if col not in CLASSIC else 'any'} | "
                + " | ".join(f(v, 2 if col in ("score_shift", "nc_median") else 3) for v in res["by_rank"][col])
                + " |"
            )
    return "\n".join(lines) + "\n"


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", type=Path, nargs="+", help="scored experiment=bbbc013 run folders")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--bootstrap", type=int, default=200)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    stores = json.loads((args.runs[0] / "score" / "score.json").read_text())["stores"]
    nc = nc_table(stores, args.out / "nc_ratios.csv")
    results = [run_numbers(r, nc, args.bootstrap) for r in args.runs]
    (args.out / "bbbc013_dose.json").write_text(json.dumps(results, indent=1, default=float))
    md = markdown(results)
    (args.out / "bbbc013_dose.md").write_text(md)
    plot_by_rank(results[0], args.out / "readouts_by_rank.png")
    print(md)
    return results


if __name__ == "__main__":
    main()
