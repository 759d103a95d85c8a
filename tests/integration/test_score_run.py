"""score end to end at tiny size: experiments/score_dose.py trains on the controls of a dose-series
plate and scores every well through score.py; then every table, figure and score.html (also in a real
headless browser), the numbers against the run's own predictions and hand computations, bad inputs
refused with their file or well named and nothing half-written, W&B wiring."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from protocell.data.store import CropStore, CropStoreWriter
from protocell.errors import ProtocellError
from protocell.evaluate.fraction import mixture_fraction, posterior, reference_lr
from protocell.model.prototypes import log_similarity

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments"))
sys.path.insert(0, str(Path(__file__).parent))
import score_dose  # noqa: E402
import warm  # noqa: E402
from test_explain_run import browser_images, require_chromium  # noqa: E402

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """A tiny run on plate=dose_series, scored by score.py (through the measurement script)."""
    tmp = tmp_path_factory.mktemp("score")
    os.environ["PROTOCELL_CACHE"] = str(tmp / "cache")
    score_dose.RUNNER = warm.run  # train.py and score.py in a warm interpreter, as the other tests start them
    try:
        table = score_dose.main(["--tiny", "--seeds", "0", "--threads", "1", "--out", str(tmp / "sd")])
    finally:
        score_dose.RUNNER = subprocess.run
    return tmp / "sd" / "seed0" / "run", table


def _store(run):
    return CropStore(torch.load(run / "prototypes.pt", weights_only=True)["store"])


def test_score_writes_every_table_figure_and_the_page(scored):
    run, _ = scored
    out = run / "score"
    store = _store(run)
    originals = store.manifest[store.manifest["aug_of"] < 0]
    cells = pd.read_csv(out / "cells.csv", keep_default_na=False, na_values=[""])
    wells = pd.read_csv(out / "wells.csv", keep_default_na=False, na_values=[""])
    assert len(cells) == len(originals) and cells["cell_id"].tolist() == originals["cell_id"].tolist()
    assert len(wells) == originals.groupby(["plate", "well"]).ngroups == 2 * 2 + 8 * 3 + 3
    assert set(wells["role"]) == {"reference", "exposed", "scored"}
    dosed = wells[wells["dose"].notna()]
    assert len(dosed) == 24 and set(dosed["treatment"].str.split(" · ").str[0]) == {"C1"}
    assert (dosed.groupby("treatment")["well"].count() == 3).all()  # 3 replicates per dose
    assert wells.loc[wells["dose"].isna() & (wells["role"] == "scored"), "stress"].tolist() == [
        "gain x0.5",
        "gain x2",
        "density x0.25",
    ]  # no dose: listed, not dropped
    for col in ("affected_fraction", "ci_low", "ci_high", "truth", "intensity_vs_reference", "density_vs_reference"):
        assert wells[col].notna().all(), col
    assert (
        (wells["ci_low"] <= wells["affected_fraction"] + 1e-12)
        & (wells["affected_fraction"] <= wells["ci_high"] + 1e-12)
    ).all()
    c1 = wells[wells["treatment"] == "C1 · 1"]
    assert (c1["n_replicates"] == 3).all() and c1["treatment_fraction"].nunique() == 1
    # the stress wells are flagged: brightness or density unlike the reference wells'
    flags = wells.set_index("well")["flag"].fillna("")
    assert "intensity ×0." in flags["F01"] and "intensity ×1." in flags["F02"] and "cells per image ×0." in flags["F03"]
    # the dose wells were never trained on; some control cells were, and their wells say so
    assert (cells.loc[cells["condition"].isna(), "run_split"].isna()).all()
    assert wells.loc[wells["n_train_cells"] > 0, "flag"].str.contains("trained on").all()
    fits = pd.read_csv(out / "dose_response.csv")
    frac = fits[fits["measure"] == "affected_fraction"].iloc[0]
    assert frac["compound"] == "C1" and frac["n_doses"] == 8 and frac["n_wells"] + frac["n_excluded"] == 24
    assert fits["measure"].str.contains("similarity").sum() == 3  # the top 3 prototypes' curves
    treatments = pd.read_csv(out / "treatments.csv", keep_default_na=False, na_values=[""])
    c1 = treatments[treatments["compound"] == "C1"]
    assert len(c1) == 8 and (c1["n_wells"] == 3).all() and c1["ci_low"].notna().all()
    enrich = pd.read_csv(out / "prototype_enrichment.csv", keep_default_na=False, na_values=[""])
    P = len(torch.load(run / "prototypes.pt", weights_only=True)["cell_id"])
    assert len(enrich) == P * (len(wells) + len(treatments))
    for name in ("plate_plate1.png", "dose_C1.png", "dose_C1_prototypes.png", "enrichment.png", "score.json"):
        assert (out / name).stat().st_size > 1000, name
    summary = json.loads((out / "score.json").read_text())
    assert summary["cells"] == len(cells) and summary["design"]["ec50"] == 0.5
    assert "mean absolute error" in summary["truth"] and "C1: EC50 fitted / design" in summary["truth"]
    page = (run / "score.html").read_text()
    for src in re.findall(r'(?:src|href)="([^"]+)"', page):
        assert (run / src).exists(), src
    assert (
        "unaffected cells of a scored well look like the reference" in page and "Wells without a dose (7)" in page
    )  # 4 controls, 3 stress wells
    assert "known only as a lower bound" in page
    assert [p.name for p in run.glob(".score*")] == [".score.lock"]  # no partial folder left


def test_cell_numbers_equal_the_runs_predictions_and_the_calibration_by_hand(scored):
    run, _ = scored
    cells = pd.read_csv(run / "score" / "cells.csv", keep_default_na=False, na_values=[""]).set_index("cell_id")
    preds = pd.read_csv(run / "test_predictions.csv").set_index("cell_id")
    P = len([c for c in preds if c.startswith("min_d_")])
    test = cells.loc[preds.index]
    assert (test["run_split"] == "test").all()
    # the same network on the same cells: float32 distances agree to ~1e-5 across batch compositions, which
    # log((d + 1)/(d + 1e-4)) magnifies near d = 0 (explain's test says the same): similarities to 2e-3,
    # scores to 1e-2
    sims = log_similarity(torch.as_tensor(preds[[f"min_d_{j}" for j in range(P)]].to_numpy(), dtype=torch.float64))
    assert np.allclose(test[[f"sim_p{j}" for j in range(P)]].to_numpy(), sims.numpy(), rtol=2e-3)
    assert np.allclose(test["score"], preds["score"], atol=1e-2)
    # and each score is the last layer on the cell's own similarities, by hand
    w = torch.load(run / "prototypes.pt", weights_only=True)["last_layer"].double().numpy()  # (K, P)
    logits = cells[[f"sim_p{j}" for j in range(P)]].to_numpy() @ w.T
    assert np.allclose(cells["score"], np.exp(logits[:, -1]) / np.exp(logits).sum(1), atol=1e-4)
    cal = json.loads((run / "metrics.json").read_text())["calibration"]
    assert cal["method"].startswith("mixture")  # the default: the call is the fraction's own posterior
    fit = json.loads((run / "metrics.json").read_text())["affected_fraction"]["fit"]  # the fraction's reference
    zones = json.loads((run / "score" / "score.json").read_text())["imaging_zones"]  # match_imaging, the default
    wells = pd.read_csv(run / "score" / "wells.csv", keep_default_na=False, na_values=[""])
    zone = cells["well"].map(dict(zip(wells["well"], wells["zone"])))
    assert set(zone) == set(zones) == {"plate1 ring", "plate1 inner"}
    for name, z in zones.items():  # each cell read with its zone's reference: the run's, refitted at its imaging
        assert z["fit"]["rho_exp"] == fit["rho_exp"] and z["fit"]["rho_ref"] == fit["rho_ref"]
        # refitted on every cell the run's reference was fitted on (zones.HELD_CELLS), not a resample of them
        assert (z["fit"]["n_ref"], z["fit"]["n_exp"]) == (fit["n_ref"], fit["n_exp"])
        on = (zone == name).to_numpy()
        lr = reference_lr(cells.loc[on, "score"].to_numpy(), z["fit"])
        assert np.allclose(cells.loc[on, "likelihood_ratio"], lr, rtol=1e-6)
    p = pd.Series(np.nan, index=cells.index)
    for _, g in cells.groupby("well"):  # each cell at its well's maximum-likelihood fraction
        lr = g["likelihood_ratio"].to_numpy()
        p[g.index] = posterior(lr, mixture_fraction(lr))
    assert np.allclose(cells["p_affected"], p, rtol=1e-6, atol=1e-12)
    assert (cells["call"] == (p > 0.5)).all()
    best = cells[[f"sim_p{j}" for j in range(P)]].to_numpy().argmax(1)
    assert (cells["nearest_1"].to_numpy() == best).all()
    for w in wells.itertuples():  # one estimator, per well
        lr = cells.loc[cells["well"] == w.well, "likelihood_ratio"]
        assert w.affected_fraction == pytest.approx(mixture_fraction(lr.to_numpy()), abs=1e-9)
        # one model: the mean P(affected) of a well is its fraction
        assert cells.loc[cells["well"] == w.well, "p_affected"].mean() == pytest.approx(w.affected_fraction, abs=1e-6)
        truth = (cells.loc[cells["well"] == w.well, "true_label"] == 1).mean()
        assert w.truth == pytest.approx(truth)


def test_score_store_returns_the_cells_table_and_another_store_is_scored_alike(scored, tmp_path):
    from protocell.score import score_store

    run, _ = scored
    cells = score_store(run, progress=False)
    written = pd.read_csv(run / "score" / "cells.csv", keep_default_na=False, na_values=[""])
    assert np.allclose(cells["score"], written["score"]) and list(cells.columns) == list(written.columns)
    # read as score.py reads them by default (each zone's reference: match_imaging), and as read when asked
    assert np.allclose(cells["likelihood_ratio"], written["likelihood_ratio"], rtol=1e-6)
    plain = score_store(run, progress=False, match_imaging=False)
    assert np.allclose(plain["score"], cells["score"]) and not np.allclose(
        plain["likelihood_ratio"], cells["likelihood_ratio"], rtol=1e-6
    )
    # a copy of the store (as another plate prepared alike): same cells, same scores, none marked trained on
    copy = tmp_path / "other_plate"
    shutil.copytree(_store(run).root, copy)
    other = score_store(run, copy, progress=False, batch_size=7)
    sims = [f"sim_p{j}" for j in range(len([c for c in cells if c.startswith("sim_p")]))]
    # float32 sums in another batch size: equal to ~1e-6, except on a prototype's own source patch, where
    # d ≈ 0 and log((d + 1) / (d + 1e-4)) is steepest (9.19 against 9.21 at one thread: 0.2 %)
    worst = float((other[sims] - cells[sims]).abs().to_numpy().max())
    assert np.allclose(other[sims], cells[sims], rtol=5e-3, atol=1e-5), f"largest difference {worst}"
    assert np.allclose(other["score"], cells["score"], atol=1e-2)
    assert (other["run_split"] == "").all()


def test_the_measurement_script_tabulates_the_bar(scored):
    run, table = scored
    row = table.iloc[0]
    assert row["seed"] == 0 and row["dose_wells"] == 24 and 0 <= row["within_tol"] <= 1
    assert row["bar"].startswith(("met", "missed")) and table.iloc[-1]["seed"] == "mean"
    wells = pd.read_csv(run / "score" / "wells.csv", keep_default_na=False, na_values=[""])
    dosed = wells[wells["dose"].notna()]
    assert row["mae"] == pytest.approx((dosed["affected_fraction"] - dosed["truth"]).abs().mean())
    assert {"stress gain x0.5: error", "stress gain x2: error", "stress density x0.25: error"} <= set(table.columns)
    assert (run.parent.parent / "score_dose.md").read_text().startswith("| seed |")


# ----------------------------------------------------------------------------- bad inputs


def _score(run, *args, **kw):
    from protocell.score.run import score_run

    return score_run(run, *args, n_boot=10, progress=False, log_wandb=False, **kw)


def _untouched(out):
    assert not (out / "score").exists() and not (out / "score.html").exists()
    assert not [p for p in out.glob(".score*") if p.name != ".score.lock"]


def test_a_run_folder_without_prototypes_is_refused_by_the_cli_in_one_line(scored, tmp_path):
    run, _ = scored
    broken = tmp_path / "run"
    shutil.copytree(run, broken, ignore=shutil.ignore_patterns("score", "score.html"))
    (broken / "prototypes.pt").unlink()
    proc = warm.run(
        [sys.executable, "score.py", f"run={broken}", "threads=1"],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    line = [ln for ln in proc.stderr.splitlines() if ln.startswith("score:")]
    assert len(line) == 1 and "prototypes.pt is missing" in line[0]
    _untouched(broken)


def test_a_degenerate_calibration_is_refused_naming_metrics_json(scored, tmp_path):
    run, _ = scored
    broken = tmp_path / "run"
    shutil.copytree(run, broken, ignore=shutil.ignore_patterns("score", "score.html"))
    m = json.loads((broken / "metrics.json").read_text())
    m["calibration"] = {
        "method": "noisy-label calibration on validation well labels (P(affected | score))",
        "a": 1.0,
        "b": 0.0,
        "lo": 0.5,
        "hi": 0.5,
        "prior": 0.5,
        "ok": False,
        "used": False,
    }
    (broken / "metrics.json").write_text(json.dumps(m))
    with pytest.raises(ProtocellError, match=r"metrics.json holds a noisy-label calibration that is degenerate"):
        _score(broken)
    _untouched(broken)


def test_a_failed_run_is_refused_and_a_warning_run_is_scored_under_a_banner(scored, tmp_path):
    """Before: score read any run, a failed one included, and its page looked like any other."""
    run, _ = scored
    copy = tmp_path / "run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("score", "score.html"))
    m = json.loads((copy / "metrics.json").read_text())
    (copy / "metrics.json").write_text(json.dumps({**m, "status": "failed", "reasons": ["no epoch beat chance"]}))
    proc = warm.run(
        [sys.executable, "score.py", f"run={copy}", "threads=1", "progress=false", "wandb=false", "bootstrap=10"],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    line = [ln for ln in proc.stderr.splitlines() if ln.startswith("score")]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert len(line) == 1 and "metrics.json says status failed (no epoch beat chance)" in line[0]
    _untouched(copy)
    reason = "the reference wells disagree more than cell sampling explains"
    (copy / "metrics.json").write_text(json.dumps({**m, "status": "warning", "reasons": [reason]}))
    _score(copy)
    summary = json.loads((copy / "score" / "score.json").read_text())
    assert summary["run_status"] == {"status": "warning", "reasons": [reason], "warnings": m.get("warnings", [])}
    page = (copy / "score.html").read_text()
    assert "answer may be WRONG" in page and reason in page
    # the fixture run's own page: the banner exactly when its status is warning (a run of two wells a
    # condition cannot pin its fraction: fraction_precision)
    assert ("answer may be WRONG" in (run / "score.html").read_text()) == (m["status"] == "warning"), m["status"]


def test_a_missing_or_unusable_fraction_reference_is_refused_naming_metrics_json(scored, tmp_path):
    """No refit for runs evaluated before metrics.json carried ``affected_fraction.fit`` (a 0.1 project
    carries no compatibility code): refused, as is a reference with no evidence."""
    run, _ = scored
    stored = json.loads((run / "metrics.json").read_text())["affected_fraction"]["fit"]
    older = tmp_path / "older"
    shutil.copytree(run, older, ignore=shutil.ignore_patterns("score", "score.html"))
    m = json.loads((older / "metrics.json").read_text())
    del m["affected_fraction"]["fit"]
    (older / "metrics.json").write_text(json.dumps(m))
    with pytest.raises(ProtocellError, match=r"metrics.json has no affected-fraction reference"):
        _score(older)
    m["affected_fraction"]["fit"] = {**stored, "ok": False, "reason": "no exposed cells unlike the reference"}
    (older / "metrics.json").write_text(json.dumps(m))
    with pytest.raises(ProtocellError, match=r"metrics.json: the affected-fraction reference .* is unusable"):
        _score(older)
    _untouched(older)


def _write_store(root, channels, crop_size, wells, extra=None):
    """A store of a few real-looking cells (from the tiny store) under other channel names or sizes."""
    w = CropStoreWriter(root, channels, crop_size, source="test")
    rng = np.random.default_rng(0)
    for k, well in enumerate(wells):
        crops = rng.integers(100, 400, (4, len(channels), crop_size, crop_size)).astype(np.uint16)
        masks = np.zeros((4, crop_size, crop_size), np.uint8)
        masks[:, 8:-8, 8:-8] = 1
        w.write_shard(
            f"s{k}",
            crops,
            masks,
            [
                {
                    "cell_id": k * 4 + i,
                    "image_id": f"i{k}",
                    "well": well,
                    "condition": "",
                    "label": -1,
                    "bbox_y0": 0,
                    "bbox_x0": 0,
                    "bbox_y1": crop_size,
                    "bbox_x1": crop_size,
                    "centroid_y": 0,
                    "centroid_x": 0,
                    **(extra or {}).get(well, {}),
                }
                for i in range(4)
            ],
        )
    w.finish()
    return root


def test_a_store_with_other_channels_or_crop_size_is_refused_naming_its_file(scored, tmp_path):
    run, _ = scored
    other = _write_store(tmp_path / "dapi", ["actin", "dapi"], 64, ["A01"])
    with pytest.raises(ProtocellError, match=r"dapi/store.json has channels \['actin', 'dapi'\].*\['nuclei'\] missing"):
        _score(run, other, out=tmp_path / "o1")
    small = _write_store(tmp_path / "small", ["actin", "nuclei"], 48, ["A01"])
    with pytest.raises(ProtocellError, match=r"small/store.json holds 48 px crops.*64 px.*cells.crop_size=64"):
        _score(run, small, out=tmp_path / "o2")
    for o in ("o1", "o2"):
        assert not (tmp_path / o / "score").exists()


def test_a_non_numeric_dose_is_refused_naming_the_well_and_an_empty_well_is_reported(scored, tmp_path):
    run, _ = scored
    bad = _write_store(
        tmp_path / "bad",
        ["actin", "nuclei"],
        64,
        ["C01", "C02"],
        {"C01": {"compound": "X", "dose": "1"}, "C02": {"compound": "X", "dose": "10 µM"}},
    )
    with pytest.raises(ProtocellError, match=r"bad/manifest.csv: dose must be a number.*plate1/C02 \('10 µM'\)"):
        _score(run, bad, out=tmp_path / "o")
    assert not (tmp_path / "o" / "score").exists()
    # prepare found no cell in well H12's image: it cannot be in the manifest, score lists it
    # (prepare records each image's plate-map columns: the empty well keeps its compound and dose)
    ok = _write_store(tmp_path / "ok", ["actin", "nuclei"], 64, ["C01", "C02"])
    (ok / "prepare_summary.json").write_text(
        json.dumps(
            {
                "per_image": [
                    {"image_id": "i0", "plate": "plate1", "well": "C01", "condition": "", "cells": 4},
                    {
                        "image_id": "h12",
                        "plate": "plate1",
                        "well": "H12",
                        "condition": "",
                        "cells": 0,
                        "meta": {"compound": "X", "dose": "3"},
                    },
                ]
            }
        )
    )
    out = _score(run, ok, out=tmp_path / "o", min_cells=2)
    wells = pd.read_csv(out / "wells.csv", keep_default_na=False, na_values=[""]).set_index("well")
    assert wells.loc["H12", "n_cells"] == 0 and "no cells" in wells.loc["H12", "flag"]
    assert (
        wells.loc["H12", "compound"] == "X"
        and wells.loc["H12", "dose"] == 3.0
        and wells.loc["H12", "treatment"] == "X · 3"
    )
    table = pd.read_parquet(out / "well_table.parquet").set_index("Metadata_Well")
    assert table.loc["H12", "Metadata_Compound"] == "X" and table.loc["H12", "Metadata_Count_Cells"] == 0
    assert "H12" in (tmp_path / "o" / "score.html").read_text()
    assert "no Ref wells" in json.loads((out / "score.json").read_text())["reference for enrichment"]
    # a plate without controls: "no controls" in its QC, no normalisation, no crash
    qc = pd.read_csv(out / "qc.csv", keep_default_na=False, na_values=[""])
    assert set(qc["verdict"]) == {"no controls"} and qc["z_prime"].isna().all()
    assert (
        wells["normalised_fraction"].isna().all()
        and "No controls on plate(s) plate1" in (tmp_path / "o" / "score.html").read_text()
    )


def test_an_interrupted_score_leaves_the_previous_results_whole(scored, tmp_path, monkeypatch):
    import protocell.score.write as score_write

    run, _ = scored
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    before = {p.name: p.read_bytes() for p in (copy / "score").iterdir()}
    page = (copy / "score.html").read_bytes()

    def broken(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(score_write, "plot_enrichment", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        _score(copy)
    assert {p.name: p.read_bytes() for p in (copy / "score").iterdir()} == before
    assert (copy / "score.html").read_bytes() == page and [p.name for p in copy.glob(".score*")] == [".score.lock"]


# ----------------------------------------------------------------------------- W&B and the browser


def test_wandb_gets_the_score_tables_and_figures_offline(scored, tmp_path):
    pytest.importorskip("wandb")
    from omegaconf import OmegaConf

    run, _ = scored
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    cfg = OmegaConf.load(copy / "config.yaml")
    cfg.logger = {"_target_": "lightning.pytorch.loggers.WandbLogger", "project": "protocell-test", "offline": True}
    OmegaConf.save(cfg, copy / "config.yaml")
    (copy / "wandb_run_id.txt").write_text("scoretest01")
    os.environ.setdefault("WANDB_SILENT", "true")
    from protocell.score.run import score_run

    score_run(copy, n_boot=10, progress=False, log_wandb=True, min_cells=5)
    offline = list((copy / "wandb").glob("offline-run-*-scoretest01"))
    assert len(offline) == 1
    images = [p.name for p in offline[0].rglob("media/images/**/*.png")]
    tables = [p.name for p in offline[0].rglob("media/table/**/*.json")]
    assert any("plate" in n for n in images) and len(images) == len(list((copy / "score").glob("*.png")))
    assert any("wells" in n for n in tables) and any("prototype_enrichment" in n for n in tables)


# ----------------------------------------------------------------------------- several plates and stores


@pytest.fixture(scope="module")
def several(scored, tmp_path_factory):
    """The tiny run scores three stores in one call: its own (plate1), a two-plate store of the same design
    (plate p2 at half the gain with extra light and a dimmer outer ring, plate p3 without effects) and a
    store of one plate without controls."""
    from protocell.data.synthetic import WellSpec, build_store

    run, _ = scored
    tmp = tmp_path_factory.mktemp("several")
    spec = {**_store(run).info["synthetic"], "fields_per_well": 1}  # the run's design, one field a well
    two = build_store(
        tmp / "cache",
        WellSpec(**{**spec, "plates": [{"name": "p2", "gain": 0.5, "offset": 0.05, "edge": 0.3}, {"name": "p3"}]}),
    )
    bare = _write_store(
        tmp / "bare",
        ["actin", "nuclei"],
        64,
        ["C01", "C02", "D01"],
        {w: {"plate": "bare", "compound": "Z", "dose": "1"} for w in ("C01", "C02", "D01")},
    )
    proc = warm.run(
        [
            sys.executable,
            "score.py",
            f"run={run}",
            f"data.path=[{_store(run).root},{two},{bare}]",
            f"out={tmp / 'o'}",
            "threads=1",
            "bootstrap=20",
            "min_cells=5",
            "progress=false",
            "bscore=true",
            "wandb=false",
            "match_imaging=false",  # as read: the several-plates baseline the match_imaging test compares with
        ],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp / "o", [_store(run).root, two, bare]


def test_several_stores_and_plates_are_scored_in_one_call_each_plate_against_its_own_controls(scored, several):
    out, stores = several
    wells = pd.read_csv(out / "score" / "wells.csv", keep_default_na=False, na_values=[""])
    cells = pd.read_csv(out / "score" / "cells.csv", keep_default_na=False, na_values=[""])
    assert sorted(wells["plate"].unique()) == ["bare", "p2", "p3", "plate1"]
    assert set(wells["store"]) == {str(s) for s in stores} and cells.columns[0] == "store"
    assert len(cells) == len(cells.drop_duplicates(["store", "cell_id"]))  # cell ids are per store
    qc = pd.read_csv(out / "score" / "qc.csv", keep_default_na=False, na_values=[""]).set_index(["plate", "readout"])
    assert qc.loc[("bare", "Protocell_AffectedFraction"), "verdict"] == "no controls"
    for plate in ("p2", "p3"):  # 2 + 2 controls, none trained on: a Z′ of their own
        row = qc.loc[(plate, "Protocell_AffectedFraction")]
        assert (row["n_neg"], row["n_pos"]) == (2, 2) and np.isfinite(row["z_prime"]), plate
        assert np.isfinite(qc.loc[(plate, "Cells_Intensity_MeanIntensity_Stored"), "z_prime"])  # the classic readout's
    # the normalisation by hand on plate p2: its controls' medians define percent of control and the normalised fraction
    p2 = wells[wells["plate"] == "p2"]
    mn = p2.loc[p2["role"] == "reference", "untrained_fraction"].median()
    mp = p2.loc[p2["role"] == "exposed", "untrained_fraction"].median()
    share = (p2["untrained_fraction"] - mn) / (mp - mn)
    assert np.allclose(p2["percent_of_control"], 100 * share)
    own = cells.loc[cells["run_split"].fillna("").astype(str) != "", "plate"].unique()
    assert list(own) == ["plate1"]  # the run's own store: the plate the fraction is defined on
    ctrl = wells[(wells["role"] != "scored") & (wells["plate"] == "plate1") & wells["untrained_fraction"].notna()]
    level = ctrl.groupby("role")["untrained_fraction"].median()  # the other plates go onto its levels
    assert np.allclose(p2["normalised_fraction"], level["reference"] + share * (level["exposed"] - level["reference"]))
    assert wells.loc[wells["plate"] == "bare", "normalised_fraction"].isna().all()
    assert (
        wells.loc[(wells["role"] == "scored") & wells["row"].notna() & (wells["plate"] != "bare"), "b_score"]
        .notna()
        .any()
    )
    # p2's outer ring is dimmer: the trend check on the brightness says so
    trends = pd.read_csv(out / "score" / "trends.csv").set_index(["plate", "measure"])
    assert trends.loc[("p2", "log2 intensity"), "outer_minus_inner"] < -0.2
    effects = pd.read_csv(out / "score" / "plate_effects.csv")
    assert set(effects["plate"]) == {"plate1", "p2", "p3"} and set(effects["role"]) == {"reference", "exposed"}
    hits = pd.read_csv(out / "score" / "hits.csv", keep_default_na=False, na_values=[""])
    assert "Ref" not in set(hits["treatment"]) and (hits["q_value"] >= hits["p_value"] - 1e-12).all()
    assert (
        hits.loc[hits["treatment"] == "Z · 1", "basis"].item() == "untrained_fraction"
    )  # no controls: the raw fraction
    fits = pd.read_csv(out / "score" / "dose_response.csv", keep_default_na=False, na_values=[""])
    per_plate = fits[(fits["measure"] == "normalised_fraction") & (fits["compound"] == "C1")]
    assert sorted(per_plate["plate"]) == ["p2", "p3", "plate1"]
    table = pd.read_parquet(out / "score" / "well_table.parquet")
    assert len(table) == len(wells) and {
        "Metadata_Plate",
        "Metadata_Well",
        "Metadata_Store",
        "Protocell_NormalisedFraction",
        "Protocell_BScore",
        "Metadata_true_fraction",
    } <= set(table.columns)
    summary = json.loads((out / "score" / "score.json").read_text())
    assert (
        summary["plates"] == 4
        and len(summary["stores"]) == 3
        and "p2: normalised fraction: share within ±0.08" in summary["truth"]
    )
    page = (out / "score.html").read_text()
    for src in re.findall(r'(?:src|href)="([^"]+)"', page):
        assert (out / src).exists(), src
    assert (
        "No controls on plate(s) bare" in page
        and "Z′ &gt; 0.5: excellent" in page
        and (out / "score" / "dose_C1_plates.png").exists()
    )


def test_the_plates_measurement_script_tabulates_each_plate(scored, several, tmp_path):
    """experiments/score_plates.py's table, per plate, against the scored tables it reads."""
    import score_plates

    out, _ = several
    run = tmp_path / "run"
    shutil.copytree(out / "score", run / "score")
    shutil.copy(scored[0] / "metrics.json", run / "metrics.json")
    rows = pd.DataFrame(score_plates.plate_rows("both", run)).set_index("plate")
    wells = pd.read_csv(out / "score" / "wells.csv", keep_default_na=False, na_values=[""])
    for plate in ("plate1", "p2", "p3"):
        w = wells[(wells["plate"] == plate) & wells["dose"].notna()]
        err = (w["normalised_fraction"] - w["truth"]).abs()
        assert rows.loc[plate, "dose_wells"] == 24 and rows.loc[plate, "norm_within"] == pytest.approx(
            (err <= 0.08).mean()
        )
        assert rows.loc[plate, "raw_mae"] == pytest.approx((w["affected_fraction"] - w["truth"]).abs().mean())
        assert rows.loc[plate, "bar"].startswith(("met", "missed"))
    assert rows.loc["p2", "z_prime"] == pytest.approx(
        pd.read_csv(out / "score" / "qc.csv")
        .set_index(["plate", "readout"])
        .loc[("p2", "Protocell_AffectedFraction"), "z_prime"]
    )


def test_a_well_in_two_stores_is_refused_naming_both(scored, tmp_path):
    run, _ = scored
    copy = tmp_path / "copy"
    shutil.copytree(_store(run).root, copy)
    with pytest.raises(
        ProtocellError, match=r"well plate1/A01 is in .*manifest.csv and in .*manifest.csv.*different names"
    ):
        _score(run, [_store(run).root, copy], out=tmp_path / "o")
    _untouched(tmp_path / "o")


def test_the_several_plates_page_loads_every_image_in_a_real_headless_browser(several, tmp_path):
    require_chromium()
    out, _ = several
    n, broken = browser_images(out / "score.html", tmp_path)
    assert n == len(list((out / "score").glob("*.png"))) and broken == [], f"{n} images, broken: {broken}"


def test_score_page_loads_every_image_in_a_real_headless_browser(scored, tmp_path):
    require_chromium()
    run, _ = scored
    n, broken = browser_images(run / "score.html", tmp_path)
    assert n == len(list((run / "score").glob("*.png"))) and broken == [], f"{n} images, broken: {broken}"


def test_a_plate_prepared_from_raw_images_with_its_plate_map_is_scored(scored, tmp_path):
    """Another plate, the raw way: TIFF fields + a plate map with compound and dose columns and empty
    conditions → prepare.py → score.py with data.path (per-image normalisation said on the page)."""
    from conftest import prepare_config

    from protocell.data.synthetic import WellSpec, write_fields
    from protocell.prepare.pipeline import prepare

    run, _ = scored
    before = (run / "score" / "score.json").read_bytes()
    fields = write_fields(
        tmp_path / "fields",
        WellSpec(
            wells_per_condition=1,
            fields_per_well=1,
            field_size=192,
            cells_per_field=12,
            seed=9,
            dose_series={"doses": [0.01, 0.1, 1, 10], "replicates": 1},
        ),
    )
    store = prepare(
        prepare_config(
            f"input={fields}",
            f"plate_map={fields / 'plate_map.csv'}",
            f"output={tmp_path / 'store'}",
            "tile.size=128",
            "augment.copies=0",
            "summary.overlays=0",
        )
    )
    proc = warm.run(
        [
            sys.executable,
            "score.py",
            f"run={run}",
            f"data.path={store}",
            f"out={tmp_path / 'o'}",
            "threads=1",
            "bootstrap=20",
            "min_cells=1",
            "progress=false",
        ],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    wells = pd.read_csv(tmp_path / "o" / "score" / "wells.csv", keep_default_na=False, na_values=[""])
    assert wells["well"].tolist() == ["A01", "B01", "C01", "C02", "C03", "C04"]
    assert wells["dose"].tolist()[2:] == [0.01, 0.1, 1.0, 10.0] and (wells["compound"].fillna("")[2:] == "C1").all()
    assert wells["role"].tolist() == ["reference", "exposed"] + ["scored"] * 4
    page = (tmp_path / "o" / "score.html").read_text()
    assert "prepare stored each image normalised by its own percentiles" in page and "is not the one the run" in page
    assert (run / "score" / "score.json").read_bytes() == before  # out= leaves the run's own results alone


def test_a_well_imaged_at_twice_the_gain_keeps_its_fraction_and_is_flagged(scored, tmp_path):
    """A measured example of the assumption under a gain change: the same plate with well C04's crops at
    2× the gain (camera offset 100 kept). Per-cell normalisation (the run's data.normalize=cell) gives
    the network the same cells, so the well's estimate stays (up to the uint16 rounding); its raw
    brightness against the reference wells flags it all the same."""
    from protocell.score.run import score_run

    run, _ = scored
    copy = tmp_path / "gain"
    shutil.copytree(_store(run).root, copy)
    m = CropStore(copy).manifest
    for shard in m.loc[m["well"] == "C04", "shard"].unique():
        path = copy / "shards" / f"{shard}.crops.npy"
        crops = np.load(path).astype(np.float64)
        np.save(path, np.clip((crops - 100) * 2 + 100, 0, 65535).round().astype(np.uint16))
    out = score_run(run, copy, out=tmp_path / "o", n_boot=10, progress=False, log_wandb=False, min_cells=5)
    wells = pd.read_csv(out / "wells.csv", keep_default_na=False, na_values=[""]).set_index("well")
    before = pd.read_csv(run / "score" / "wells.csv", keep_default_na=False, na_values=[""]).set_index("well")
    assert wells.loc["C04", "intensity_vs_reference"] > 1.5 * before.loc["C04", "intensity_vs_reference"]
    assert "intensity ×" in wells.loc["C04", "flag"]
    assert wells.loc["C04", "affected_fraction"] == pytest.approx(before.loc["C04", "affected_fraction"], abs=0.02)
    cells, plain = (pd.read_csv(o / "cells.csv", keep_default_na=False, na_values=[""]) for o in (out, run / "score"))
    c04 = (cells["well"] == "C04").to_numpy()
    assert (cells["cell_id"] == plain["cell_id"]).all()
    assert np.allclose(cells.loc[c04, "score"], plain.loc[c04, "score"], atol=0.02)


# ----------------------------------------------------------------------------- issue 25: NaN, out=, leftovers, lock


def test_cells_with_nan_or_inf_pixels_are_refused_naming_them(scored, tmp_path):
    """Before: score.py scored them (a NaN score: call 0, counted in n_cells), exit 0."""
    run, _ = scored
    src = _store(run)
    w = CropStoreWriter(tmp_path / "nan", src.channels, src.crop_size, source="test")
    rows = [i for i in range(len(src)) if src.manifest["aug_of"].iloc[i] < 0][:6]
    crops = np.stack([src.crop(i) for i in rows]).astype(np.float32)
    crops[4, 1, 30, 31] = np.nan
    crops[5, 0, 2, 2] = np.inf
    w.write_shard(
        "s0",
        crops,
        np.stack([src.mask(i) for i in rows]),
        [
            {
                "cell_id": k,
                "image_id": "i0",
                "well": "C01",
                "condition": "",
                "label": -1,
                **{c: 0 for c in ("bbox_y0", "bbox_x0", "bbox_y1", "bbox_x1", "centroid_y", "centroid_x")},
            }
            for k in range(6)
        ],
    )
    w.finish()
    with pytest.raises(
        ProtocellError,
        match=r"nan: 2 of 6 cells have NaN or infinite pixel values, e\.g\. cell_id 4 "
        r"\(plate plate1, well C01: shards/s0\.crops\.npy \[4\]\); cell_id 5 .*prepare",
    ):
        _score(run, tmp_path / "nan", out=tmp_path / "o")
    _untouched(tmp_path / "o")


def test_an_out_that_is_a_file_or_cannot_be_written_is_one_line(scored, tmp_path, unwritable):
    """Before: FileExistsError and PermissionError tracebacks (debug=false). The first through score.py (one
    line, exit 2), the others where score.py meets them, in ``score_run``."""
    run, _ = scored
    afile = tmp_path / "afile"
    afile.write_text("x")
    proc = warm.run(
        [sys.executable, "score.py", f"run={run}", f"out={afile}", "threads=1", "progress=false", "debug=false"],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    line = [ln for ln in proc.stderr.splitlines() if ln.startswith("score: ")]
    fragment = (
        f"config value out='{afile}' is invalid: a folder for score/ and score.html (created if absent); it is a file"
    )
    assert len(line) == 1 and fragment in line[0], proc.stderr[-2000:]
    for out, fragment in (
        (afile / "o", f"it lies under the file {afile}"),
        (unwritable / "o", f"out={unwritable / 'o'} cannot be written ("),
    ):
        with pytest.raises(ProtocellError) as err:
            _score(run, out=out)
        assert fragment in str(err.value) and "\n" not in str(err.value), str(err.value)
    assert afile.read_text() == "x"


def test_level_imaging_levels_each_plate_before_the_pass_and_says_so(scored, tmp_path):
    """score.level_imaging: every plate's wells read at its own worst imaging (the scores change), said in
    score.json and on the page; a share scored without it is not merged into a levelled score."""
    from protocell.score import shares

    run, _ = scored
    out = _score(run, out=tmp_path / "lv", level_imaging=True, match_imaging=False).parent
    info = json.loads((out / "score" / "score.json").read_text())
    assert info["options"]["level_imaging"] is True and "worst imaging" in info["imaging levelled"]
    assert "imaging levelled" in (out / "score.html").read_text()
    plain = pd.read_csv(run / "score" / "cells.csv")
    levelled = pd.read_csv(out / "score" / "cells.csv")
    assert (plain["cell_id"] == levelled["cell_id"]).all() and not np.allclose(plain["score"], levelled["score"])
    store = _store(run)
    n = len(levelled)
    numbers = {k: np.zeros(n) for k in shares.ARRAYS}
    shares.write_share(tmp_path / "sh", numbers, shares.identity(run, store, 64, n, 1, 0), 1.0)
    assert len(shares.read_shares(tmp_path / "sh", run, store, 64, n, 1)["score"]) == n
    with pytest.raises(ProtocellError, match=r"share count or level_imaging, or damaged: share\(s\) 0"):
        shares.read_shares(tmp_path / "sh", run, store, 64, n, 1, levelled=True)


def test_a_run_that_is_a_file_is_named_as_a_file(scored, tmp_path):
    """Before: "run folder … does not exist" for a file that exists."""
    run, _ = scored
    with pytest.raises(ProtocellError, match=r"run=\S+metrics.json is a file, not a run folder: .* e\.g\. run="):
        _score(run / "metrics.json", out=tmp_path / "o")


def test_a_score_killed_with_sigkill_leaves_a_folder_the_next_score_removes(scored, tmp_path):
    """Before: each SIGKILL while score/ was written left a .score.partial-<pid>-… folder for good."""
    import signal
    import time

    run, _ = scored
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    before = {p.name: p.read_bytes() for p in (copy / "score").iterdir()}
    proc = warm.Popen(
        [sys.executable, "score.py", f"run={copy}", "threads=1", "progress=false", "wandb=false", "bootstrap=10"],
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 240
        while not list(copy.glob(".score.partial-*")) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.005)
        assert list(copy.glob(".score.partial-*")), "score.py finished before it could be killed while writing"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    left = [p.name for p in copy.glob(".score.*") if p.name != ".score.lock"]
    assert left and all(n.startswith(f".score.partial-{proc.pid}-") for n in left), left
    assert {p.name: p.read_bytes() for p in (copy / "score").iterdir()} == before  # the previous results whole
    _score(copy)
    assert [p.name for p in copy.glob(".score*")] == [".score.lock"]
    assert (copy / "score" / "cells.csv").exists()


def test_two_scores_on_one_out_the_second_is_refused_naming_the_holder(scored, tmp_path):
    """Before: no lock; the second score silently replaced the first's results."""
    from protocell.fsutil import exclusive_lock

    run, _ = scored
    out = tmp_path / "o"
    with exclusive_lock(out / ".score.lock", RuntimeError):  # as a running score.py holds it
        with pytest.raises(
            ProtocellError,
            match=rf"out={out} is being written by another score.py "
            rf"\(pid {os.getpid()} on [^)]+\); wait for it to finish",
        ):
            _score(run, out=out)
    _untouched(out)


def test_a_score_in_shares_through_the_local_launcher_equals_the_one_process_score(scored, tmp_path):
    """Two share tasks (hydra/launcher=local: the code path of hydra/launcher=slurm_cpu), each the network's pass
    over its whole batches of cells, then one merge: the tables of a one-process score, byte for byte; the merge
    is refused, naming the share, while a share is missing or was scored at another batch size."""
    run, _ = scored
    common = [
        f"run={run}",
        "threads=1",
        "progress=false",
        "wandb=false",
        "bootstrap=20",
        "min_cells=5",
        "data.batch_size=64",
    ]
    score = [sys.executable, "score.py"]
    from protocell.score.run import score_run

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as score.py threads=1: the one-process score, here in-process
    try:
        score_run(run, out=tmp_path / "one", n_boot=20, min_cells=5, batch_size=64, progress=False, log_wandb=False)
    finally:
        torch.set_num_threads(threads)
    out = tmp_path / "shares"
    _score(run, out=out, batch_size=64, shards=2, shard=0)
    with pytest.raises(
        ProtocellError,
        match=r"1 of 2 shares are not ready \(not scored: share\(s\) 1; .* with "
        r"shard=1 \(a multirun: shard=1\), then shard=merge; nothing was written",
    ):
        _score(run, out=out, batch_size=64, shards=2, shard="merge")
    assert not (out / "score").exists() and not (out / "score.html").exists()
    proc = warm.run(
        [
            *score,
            "-m",
            "hydra/launcher=local",
            *common,
            f"out={out}",
            "shards=2",
            "shard=0,1",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
        ],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(list((tmp_path / "sweep" / ".submitit").glob("*/*_log.out"))) == 2
    with pytest.raises(
        ProtocellError,
        match=r"2 of 2 shares are not ready \(scored from another run checkpoint, "
        r"store, batch size, share count or level_imaging, or damaged: share\(s\) 0, 1",
    ):
        _score(run, out=out, batch_size=32, shards=2, shard="merge")
    proc = warm.run(
        [*score, *common, f"out={out}", "shards=2", "shard=merge"],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("cells", "wells", "treatments", "prototype_enrichment", "dose_response"):
        assert (out / "score" / f"{name}.csv").read_bytes() == (tmp_path / "one" / "score" / f"{name}.csv").read_bytes()
    cells = pd.read_csv(out / "score" / "cells.csv")
    assert len(cells) > 128 and (out / "score.html").exists() and not (out / ".score-shares").exists()


def test_a_run_that_levels_its_own_wells_is_scored_without_match_imaging_and_says_so(scored, tmp_path):
    """A run trained with data.level_imaging=true reads every well of its store at the plate's worst imaging: the
    default match_imaging does not read its zones again (said in score.json and on the page), it is refused
    another store, and score's own level_imaging is refused for it, each naming the fix."""
    run, _ = scored
    copy = tmp_path / "run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("score", "score.html"))
    config = (copy / "config.yaml").read_text()
    assert "  level_imaging: false\n" in config
    (copy / "config.yaml").write_text(config.replace("  level_imaging: false\n", "  level_imaging: true\n"))
    out = _score(copy, out=tmp_path / "o", min_cells=5).parent
    info = json.loads((out / "score" / "score.json").read_text())
    assert info["options"]["match_imaging"] is False and info["imaging_zones"] == {}
    assert "levels its own wells' imaging in training" in info["imaging matched"]
    assert "levels its own wells&#x27; imaging in training" in (out / "score.html").read_text()
    other = tmp_path / "other_plate"
    shutil.copytree(_store(run).root, other)
    with pytest.raises(
        ProtocellError, match=r"cannot yet level another store's .* retrain with data.level_imaging=false"
    ):
        _score(copy, other, out=tmp_path / "o2")
    with pytest.raises(ProtocellError, match=r"levels its own wells already; score it with level_imaging=false"):
        _score(copy, out=tmp_path / "o3", level_imaging=True, match_imaging=False)


def test_match_imaging_reads_each_plate_zone_against_the_runs_controls_imaged_as_it_is(scored, several, tmp_path):
    """score.match_imaging (protocell.score.zones): plate p2 (half the gain, extra light, a dimmer ring) gets
    noise added to the run's control cells in both its zones, more on its ring than the run's own plate gets;
    each zone's fit gives its cells their likelihood ratio; a plate is normalised on its wells' fractions mapped
    by the zone's virtual controls; said in score.json, wells.csv and the page. With level_imaging it is refused."""
    from protocell.score.plates import normalise

    run, _ = scored
    own, two, _bare = several[1]
    out = _score(run, [own, two], out=tmp_path / "m", min_cells=5).parent  # on by default
    info = json.loads((out / "score" / "score.json").read_text())
    assert info["options"]["match_imaging"] is True and "imaging matched" in info
    zones = info["imaging_zones"]
    assert {"p2 ring", "p2 inner", "plate1 ring", "plate1 inner", "p3 ring", "p3 inner"} <= set(zones), sorted(zones)
    noise = {k: np.mean([a for a, _ in z["noise_var"]]) for k, z in zones.items() if "noise_var" in z}
    assert noise["p2 ring"] > noise["p2 inner"] > max(noise["plate1 ring"], noise["plate1 inner"]), noise
    for z in zones.values():
        assert z["said"] and len(z["levels_as_run_imaged"]) == 2
    assert zones["plate1 inner"]["mapped"] and zones["p2 ring"]["mapped"], {k: z["said"] for k, z in zones.items()}
    wells = pd.read_csv(out / "score" / "wells.csv", keep_default_na=False, na_values=[""])
    assert {"zone", "imaging_matched_fraction"} <= set(wells.columns)
    for name, z in zones.items():
        w = wells[wells["zone"] == name]
        if z["mapped"]:
            (r0, e0), (rz, ez) = z["levels_as_run_imaged"], z["levels_at_zone_imaging"]
            want = r0 + (w["untrained_fraction"] - rz) * (e0 - r0) / (ez - rz)
            assert np.allclose(w["imaging_matched_fraction"], want, equal_nan=True)
        else:
            assert np.allclose(w["imaging_matched_fraction"], w["untrained_fraction"], equal_nan=True)
            assert w["flag"].str.contains("imaging not matched").all()
    ctrl = wells[wells["role"].isin(["reference", "exposed"])][["plate", "well", "role", "imaging_matched_fraction"]]
    again = normalise(
        wells.drop(columns=["percent_of_control", "robust_z", "normalised_fraction"]),
        ctrl,
        "imaging_matched_fraction",
        anchors=["plate1"],
    )
    assert np.allclose(again["normalised_fraction"], wells["normalised_fraction"], equal_nan=True)
    cells = pd.read_csv(out / "score" / "cells.csv", keep_default_na=False, na_values=[""])
    plain = pd.read_csv(several[0] / "score" / "cells.csv", keep_default_na=False, na_values=[""])
    both = cells.merge(plain, on=["plate", "well", "cell_id"], suffixes=("", "_plain"))
    assert len(both) == len(cells)
    assert np.allclose(both["score"], both["score_plain"])  # the same pass; only the reading of it differs
    on_p2 = (both["plate"] == "p2").to_numpy()
    assert not np.allclose(both.loc[on_p2, "likelihood_ratio"], both.loc[on_p2, "likelihood_ratio_plain"])
    assert "imaging matched" in (out / "score.html").read_text()
    # a ring the trend check flags names the option as read, and says it was applied when it was
    before = pd.read_csv(several[0] / "score" / "wells.csv", keep_default_na=False, na_values=[""])
    ringed = before["flag"].fillna("").str.contains("outer ring imaged")
    assert ringed.any() and before.loc[ringed, "flag"].str.contains("match_imaging=true reads it").all()
    ringed = wells["flag"].fillna("").str.contains("outer ring imaged")
    assert ringed.any() and wells.loc[ringed, "flag"].str.contains(r"imaged as the ring is \(match_imaging\)").all()
    with pytest.raises(ProtocellError, match="level_imaging=true and match_imaging=true"):
        _score(run, out=tmp_path / "both", level_imaging=True, match_imaging=True)
