"""The several-plates bar on the two-plate ground truth (``plate=two_plates``): train, score, tabulate.

    python experiments/score_plates.py                        # seeds 0 1 2 at 2 threads, one process at a time
    python experiments/score_plates.py --seeds 0              # one seed
    python experiments/score_plates.py --tiny --seeds 0       # minutes: the wiring; its numbers mean nothing

Two plates of one screen (``conf/plate/two_plates.yaml``): each holds 8 Ref + 8 Exp control wells and the
compound C1 at a vehicle and 8 doses × 3 replicate wells (EC50 0.5); plate2 is imaged at half the gain with
extra uniform light (a plate effect) and its outer ring of wells at 0.7 of that (an edge effect). Per seed k
(plate seed = training seed, as in experiments/robustness.sh), two scenarios:

- ``both``: ``train.py plate=two_plates`` on the controls of both plates, then ``score.py`` on its own store
  (both plates, one store);
- ``plate1``: training sees plate1 only (``data.synthetic.plates=[{name: plate1}]``: the same cells as
  plate1 of the two-plate store), then ``score.py data.path=[<its store>, <plate2's store>]`` (two stores
  in one call; plate2's store is plate2 of the two-plate store, cell for cell).

``--scenarios plate1`` runs one scenario. ``score/`` is score.py's default (``match_imaging=true``: each plate
zone read against the run's control cells imaged as it is); ``--as-read`` also scores with ``match_imaging=false``
(every cell against the run's own imaging) into ``score_as_read/`` beside it, tabulated as the scenario
``<name>+as_read`` (the same trained runs); ``--level-imaging`` likewise with ``level_imaging=true`` (each plate's
wells read at its own noisiest well's imaging) into ``score_levelled/``, ``<name>+levelled``. Tables of
2026-12-07 and before: ``score/`` was then scored as read and ``<name>+matched`` with the option.

Runs already finished (``score/score.json`` present) are tabulated, not run again. Table
(``<out>/score_plates.csv`` and ``.md``, printed): per seed, scenario and plate, over its 27 dose wells
(vehicle included) the share of wells whose raw / per-plate normalised fraction is within ±0.08 of the share
of their cells truly affected and the mean absolute error, the EC50 of the plate's curve against the design's
(0.5), the plate's Z′ of the affected fraction (its own held-out controls), whether the hits at 5 % FDR hold
every dose above the EC50 and no vehicle well, and the bar: normalised fractions within ±0.08 in ≥ 90 % of
wells, EC50 within ×1.5, Z′ reported, the hits as said.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))
from score_dose import TINY, seeds_main  # noqa: E402

TOL, EC50_FACTOR, SHARE = 0.08, 1.5, 0.90
PLATE1_ONLY = "data.synthetic.plates=[{name: plate1}]"


def plate_spec(overrides: list[str], name: str):
    """The ``WellSpec`` of one plate of ``plate=two_plates`` (with ``overrides``): the plate's own store, cell
    for cell that plate of the two-plate store (its seed spelt out)."""
    from dataclasses import replace

    from hydra import compose, initialize_config_dir

    from protocell.build import synthetic_spec
    from protocell.config import register

    register()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        spec = synthetic_spec(compose(config_name="train", overrides=["plate=two_plates", *overrides]))
    return replace(spec, plates=[p for p in spec.plates if p["name"] == name])


# a scoring option measured beside the default: scenario suffix → (folder beside score/, score.py override)
VARIANTS = {
    "+levelled": ("score_levelled", ["level_imaging=true", "match_imaging=false"]),
    "+as_read": ("score_as_read", ["match_imaging=false"]),
}


def run_seed(
    seed: int,
    out: Path,
    threads: int,
    tiny: bool,
    scenarios=("both", "plate1"),
    level_imaging: bool = False,
    as_read: bool = False,
) -> dict[str, Path]:
    """Train and score the scenarios of one seed (skipped when done); returns scenario → run folder (with
    ``level_imaging`` / ``as_read``: also ``<scenario>+levelled`` / ``+as_read`` → the same folder, scored
    into ``score_levelled/`` / ``score_as_read/``)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    py = sys.executable
    common = [
        "plate=two_plates",
        f"seed={seed}",
        f"data.synthetic.seed={seed}",
        f"threads={threads}",
        "explain=false",
        "trainer.enable_progress_bar=false",
        *(TINY if tiny else []),
    ]
    score = [f"threads={threads}", "progress=false", "wandb=false", *(["bootstrap=50", "min_cells=5"] if tiny else [])]
    runs = {name: out / f"seed{seed}" / name for name in scenarios}
    wanted = [suffix for suffix, on in (("+levelled", level_imaging), ("+as_read", as_read)) if on]
    for scenario, run in list(runs.items()):
        outs = [(run / "score", [])] + [(run / VARIANTS[s][0] / "score", VARIANTS[s][1]) for s in wanted]
        for suffix in wanted:
            runs[f"{scenario}{suffix}"] = run
        if all((folder / "score.json").exists() for folder, _ in outs):
            continue
        extra = [] if scenario == "both" else [PLATE1_ONLY]
        if not (run / "metrics.json").exists():
            subprocess.run([py, "train.py", *common, *extra, f"hydra.run.dir={run}"], cwd=ROOT, env=env, check=True)
        stores = []
        if scenario == "plate1":
            import torch

            from protocell.data.synthetic import build_store

            cache = Path(os.environ.get("PROTOCELL_CACHE", ROOT / "outputs" / "cache"))
            own = torch.load(run / "prototypes.pt", weights_only=True)["store"]
            plate2 = build_store(cache, plate_spec([f"data.synthetic.seed={seed}", *(TINY if tiny else [])], "plate2"))
            stores = [f"data.path=[{own},{plate2}]"]
        for folder, more in outs:
            if not (folder / "score.json").exists():
                where = [f"out={folder.parent}"] if more else []
                subprocess.run(
                    [py, "score.py", f"run={run}", *stores, *score, *where, *more], cwd=ROOT, env=env, check=True
                )
    return runs


def plate_rows(scenario: str, run: Path) -> list[dict]:
    """One row per plate of a scored run (score/wells.csv, dose_response.csv, qc.csv, hits.csv, score.json;
    a ``+levelled`` scenario: score_levelled/score/…)."""
    suffix = next((s for s in VARIANTS if scenario.endswith(s)), None)
    score = run / VARIANTS[suffix][0] / "score" if suffix else run / "score"
    wells = pd.read_csv(score / "wells.csv", keep_default_na=False, na_values=[""])
    fits = pd.read_csv(score / "dose_response.csv", keep_default_na=False, na_values=[""])
    fits["plate"] = fits["plate"].fillna("")  # "": the curve over every plate
    qc = pd.read_csv(score / "qc.csv", keep_default_na=False, na_values=[""])
    hits = pd.read_csv(score / "hits.csv", keep_default_na=False, na_values=[""])
    info = json.loads((score / "score.json").read_text())
    design = info["design"]
    metrics = json.loads((run / "metrics.json").read_text())
    seed = metrics.get("seed", -1)
    above = hits[(hits["compound"] == design["compound"]) & (hits["dose"] > design["ec50"])]
    vehicle = hits[(hits["compound"] == design["compound"]) & (hits["dose"] == 0)]
    rows = []
    for plate, w in wells.groupby("plate", sort=True):
        dosed = w[w["dose"].notna() & (w["n_cells"] > 0)]
        raw, norm = ((dosed[c] - dosed["truth"]).abs() for c in ("affected_fraction", "normalised_fraction"))
        fit = fits[
            (fits["plate"] == plate)
            & (fits["measure"] == "affected_fraction")
            & (fits["compound"] == design["compound"])
        ]
        if fit.empty:  # one plate: the curve over every plate is this plate's
            fit = fits[
                (fits["plate"] == "")
                & (fits["measure"] == "affected_fraction")
                & (fits["compound"] == design["compound"])
            ]
        fit = fit.iloc[0]
        z = qc[(qc["plate"] == plate) & (qc["readout"] == "Protocell_AffectedFraction")].iloc[0]
        ratio = float(fit["ec50"] / design["ec50"]) if fit["ok"] else float("nan")
        row = {
            "seed": seed,
            "scenario": scenario,
            "plate": plate,
            "trained_on": "both plates" if scenario.startswith("both") else "plate1",
            "match_imaging": bool(info["options"].get("match_imaging", False)),  # absent: scored before the option
            "true_auroc": metrics.get("true_label_auroc"),
            "dose_wells": len(dosed),
            "raw_within": float((raw <= TOL).mean()),
            "raw_mae": float(raw.mean()),
            "norm_within": float((norm <= TOL).mean()),
            "norm_mae": float(norm.mean()),
            "norm_max": float(norm.max()),
            "ec50": float(fit["ec50"]),
            "ec50_ci": f"{fit['ec50_ci_low']:.3g}–{fit['ec50_ci_high']:.3g}",
            "ec50_ratio": ratio,
            "z_prime": float(z["z_prime"]),
            "robust_z_prime": float(z["robust_z_prime"]),
            "qc_verdict": z["verdict"],
            "hits_above_ec50": f"{above['hit'].sum()} of {len(above)}",
            "vehicle_hit": bool(vehicle["hit"].any()),
        }
        misses = [
            name
            for name, ok in (
                ("within ±0.08", row["norm_within"] >= SHARE),
                ("EC50", 1 / EC50_FACTOR <= ratio <= EC50_FACTOR),
                ("Z′", pd.notna(row["z_prime"])),
                ("hits", bool(above["hit"].all()) and not row["vehicle_hit"]),
            )
            if not ok
        ]
        row["bar"] = "met" if not misses else "missed: " + ", ".join(misses)
        rows.append(row)
    return rows


def tabulate(runs: list[dict[str, Path]]) -> pd.DataFrame:
    return pd.DataFrame([r for scenarios in runs for name, run in scenarios.items() for r in plate_rows(name, run)])


def options(ap) -> None:
    ap.add_argument("--scenarios", nargs="+", choices=["both", "plate1"], default=["both", "plate1"])
    ap.add_argument("--level-imaging", action="store_true", help="also score with level_imaging=true")
    ap.add_argument("--as-read", action="store_true", help="also score with match_imaging=false")


def main(argv=None) -> pd.DataFrame:
    return seeds_main(argv, __doc__, "score_plates", run_seed, tabulate, options)


if __name__ == "__main__":
    main()
