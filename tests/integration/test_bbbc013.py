"""The real BBBC013 plate at CI size (docs/examples/bbbc013.md): 3 untreated + 3 PI3K-inhibited wells
of the shared data folder (read-only) → prepare.py with the distance-grown mask → the confound table
(checked against the manifest by hand) → train.py experiment=bbbc013 for a few epochs → report.html
with the confound section, in GFP green / DNA magenta, opened in a real headless browser."""

import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]
DATA = (ROOT / ".." / "shared" / "data" / "bbbc013_controls").resolve()
WELLS = ["A01", "A02", "B01", "A12", "B12", "C12"]  # 3 untreated, 3 PI3K_inhibited
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
sys.path.insert(0, str(Path(__file__).parent))
import warm  # noqa: E402
from conftest import require_shared_data  # noqa: E402
from test_explain_run import browser_images, require_chromium  # noqa: E402


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    require_shared_data(DATA, "the BBBC013 controls")
    tmp = tmp_path_factory.mktemp("bbbc013")
    plate = pd.read_csv(DATA / "plate_map.csv")
    plate[plate["well"].isin(WELLS)].to_csv(tmp / "plate_map.csv", index=False)
    out = tmp / "store"
    proc = warm.run(
        [
            sys.executable,
            "prepare.py",
            f"input={DATA}",
            f"plate_map={tmp / 'plate_map.csv'}",
            "channels=bbbc013",
            "conditions=[untreated,PI3K_inhibited]",
            "segmentation=distance",
            "augment.copies=0",
            "workers=1",
            "progress=false",
            f"output={out}",
        ],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "confound report" in proc.stderr + proc.stdout
    return out


def test_the_confound_table_is_the_per_well_means_of_the_manifest(store):
    summary = json.loads((store / "prepare_summary.json").read_text())
    conf = summary["confounds"]
    assert conf["available"] and conf["reference"] == "untreated" and conf["exposed"] == "PI3K_inhibited"
    table = pd.read_csv(store / "confounds.csv").set_index("feature")
    assert pd.DataFrame(conf["table"]).set_index("feature")["auroc"].equals(table["auroc"])
    m = pd.read_csv(store / "manifest.csv", keep_default_na=False)
    for feature in ("area", "eccentricity", "solidity", "mean_gfp", "mean_dna"):
        per_well = m.groupby(["condition", "well"])[feature].mean()
        x, y = per_well["untreated"].to_numpy(), per_well["PI3K_inhibited"].to_numpy()
        assert table.loc[feature, "mean_untreated"] == pytest.approx(x.mean())
        direct = ((y[:, None] > x[None, :]).sum() + 0.5 * (y[:, None] == x[None, :]).sum()) / (len(x) * len(y))
        assert table.loc[feature, "auroc"] == pytest.approx(direct)
    cells = m.groupby("well").size()
    assert table.loc["cells_per_field", "mean_untreated"] == pytest.approx(cells[["A01", "A02", "B01"]].mean())
    # background: in every image, between 0 and the cells' own level (per-image normalised units)
    for r in summary["per_image"]:
        assert 0 <= r["background"]["dna"] < 0.2 and 0 <= r["background"]["gfp"] < 0.5
    flags = {f: bool(table.loc[f, "flag"]) for f in table.index}
    assert not any(flags[f] for f in ("mean_gfp", "mean_dna"))  # biology is never flagged


def test_the_features_are_those_of_the_stored_cells(store):
    from protocell.data.store import CropStore

    s = CropStore(store)
    m = s.manifest
    gfp = s.channels.index("gfp")
    for i in range(0, len(m), max(1, len(m) // 40)):
        mask = s.mask(i) > 0
        if mask.sum() != m.at[i, "area"]:  # a cell wider than its crop: the crop holds part of it
            continue
        crop = s.crop(i).astype(np.float64) / 65535.0  # uint16 store: [0, 1] → [0, 65535]
        assert crop[gfp][mask].mean() == pytest.approx(m.at[i, "mean_gfp"], abs=2e-4)


def test_train_and_explain_show_the_confound_table_in_the_report(store, tmp_path):
    run = tmp_path / "run"
    proc = warm.run(
        [
            sys.executable,
            "train.py",
            "experiment=bbbc013",
            f"data.path={store}",
            f"hydra.run.dir={run}",
            "threads=1",
            "trainer.enable_progress_bar=false",
            "schedule.pretrain_epochs=2",
            "data.min_epoch_cells=0",
            "schedule.epochs=3",
            "schedule.warm_epochs=1",
            "schedule.push_every=2",
            "schedule.push_start=2",
            "schedule.last_layer_epochs=1",
            "protopnet.prototypes_per_class=2",
            "report.unit=image",
            "views=1",  # the report and its confound table, not the 8-orientation reading (tested elsewhere)
        ],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    page = (run / "report.html").read_text()
    assert "Confound check (from prepare)" in page and "mean_gfp" in page and "background_gfp" in page
    # the channel legend: GFP green, DNA magenta (experiment=bbbc013's report.display)
    assert 'rgb(0,255,0)"></span>gfp' in page and 'rgb(255,0,255)"></span>dna' in page
    require_chromium()
    n, broken = browser_images(run / "report.html", tmp_path)
    assert n > 2 and broken == [], broken
