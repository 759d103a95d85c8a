"""A folder of 3-channel pre-cut crops → prepare.py mode=crops → train.py → explain.py → report.html in a
real headless browser: the walk of docs/crops.md, at tiny size."""

import json
import os
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage as ndi

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).parent))
import warm  # noqa: E402
from test_explain_run import browser_images, require_chromium  # noqa: E402
from test_train_cli import train  # noqa: E402

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def write_crops(tmp_path) -> Path:
    """The tiny synthetic wells as a public set would ship them: one .npy per cell, (DNA, tubulin,
    actin), in a folder per condition, well / field / cell in the file name; no masks."""
    from protocell.data.store import CropStore
    from protocell.data.synthetic import WellSpec, build_store

    store = CropStore(
        build_store(
            tmp_path / "stores",
            WellSpec(wells_per_condition=2, fields_per_well=2, field_size=192, cells_per_field=12, seed=3),
        )
    )
    root = tmp_path / "crops"
    for i, row in store.manifest.iterrows():
        actin, dna = store.crop(i).astype(np.float32)
        tubulin = ndi.gaussian_filter(actin, 2) * 0.8 + 20
        folder = root / row["condition"]
        folder.mkdir(parents=True, exist_ok=True)
        np.save(
            folder / f"{row['well']}_s{row['field']}_c{row['cell_id']}.npy",
            np.stack([dna, tubulin, actin]).astype(np.uint16),
        )
    return root


@pytest.fixture(scope="module")
def crops_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("crops_run")
    crops = write_crops(tmp)
    proc = warm.run(
        [
            sys.executable,
            "prepare.py",
            "mode=crops",
            f"input={crops}",
            f"output={tmp / 'store'}",
            "channels.names=[DNA,tubulin,actin]",
            "channels.main=actin",
            "channels.second=DNA",
            r"pattern='(?P<well>[A-Z]\d\d)_s(?P<field>\d+)_c\d+'",
            "progress=false",
        ],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "train on it: python train.py data=prepared" in proc.stdout
    train(tmp, store=tmp / "store")
    proc = warm.run(
        [
            sys.executable,
            "explain.py",
            f"run={tmp / 'run'}",
            "bootstrap=50",
            "wandb=false",
            "threads=1",
            "report.channel_panels=true",
        ],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp / "run"


def test_a_crop_folder_trains_and_explains_in_colour(crops_run):
    metrics = json.loads((crops_run / "metrics.json").read_text())
    assert metrics["normalization"]["store"] == "as_given" and metrics["normalization"]["training"] == "cell"
    assert set(metrics["intensity_auroc"]) == {"DNA", "tubulin", "actin"}
    assert metrics["status"] in ("ok", "failed", "incomplete") and "reasons" in metrics
    page = (crops_run / "report.html").read_text()
    assert "box in image" not in page and "Replicate unit" in page and "Test set" in page
    assert all(name in page for name in ("DNA", "tubulin", "actin"))
    assert "Ground-truth checks" not in page  # imported crops carry no per-cell truth
    protos = pd.read_csv(crops_run / "explain" / "prototypes.csv", keep_default_na=False)
    assert (protos["box_image"] == "").all() and protos["file"].str.endswith(".npy").all()
    import matplotlib.image as mpimg

    rgb = mpimg.imread(crops_run / "explain" / "prototypes" / "prototype_00.png")[..., :3]
    coloured = (np.abs(rgb[..., 0] - rgb[..., 1]) > 0.2) | (np.abs(rgb[..., 1] - rgb[..., 2]) > 0.2)
    assert coloured.mean() > 0.01  # a composite, not one grey channel
    em = json.loads((crops_run / "explain" / "explain_metrics.json").read_text())
    assert em["run"] == "run" and em["replicate_unit"]["unit"] in ("well", "image", "field")


def test_the_crop_report_loads_every_image_in_a_real_headless_browser(crops_run, tmp_path):
    require_chromium()
    n, broken = browser_images(crops_run / "report.html", tmp_path)
    figures = [p for sub in ("prototypes", "cells") for p in (crops_run / "explain" / sub).glob("*.png")]
    assert n == 2 + len(figures) and broken == [], f"{n} images, broken: {broken}"
    assert re.search(r"DNA|tubulin|actin", (crops_run / "report.html").read_text())
