"""prepare.py end to end as a user runs it, resumability, and train.py on the prepared store."""

import json
import os
import sys
from pathlib import Path

import pandas as pd
import pytest
import warm
from conftest import assert_store_folder, prepare_config

from protocell.data.store import CropStore
from protocell.prepare.pipeline import prepare

ROOT = Path(__file__).resolve().parents[2]


def test_prepare_cli_then_train_on_the_store(tmp_path, synthetic_fields):
    out = tmp_path / "store"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PROTOCELL_CACHE": str(tmp_path / "cache")}
    cmd = [
        sys.executable,
        "prepare.py",
        f"input={synthetic_fields}",
        f"plate_map={synthetic_fields / 'plate_map.csv'}",
        "segmentation=watershed",
        f"output={out}",
        "tile.size=128",
        "progress=false",
        f"hydra.run.dir={tmp_path / 'prep_run'}",
    ]
    proc = warm.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"train on it: python train.py data=prepared data.path={out}" in proc.stdout

    store = CropStore(out)
    m = store.manifest
    orig, aug = m[m["aug_of"] < 0], m[m["aug_of"] >= 0]
    assert store.channels == ["actin", "nuclei"] and store.crop_size == 64
    assert len(orig) > 80 and len(aug) == 2 * (orig["split"] == "train").sum()
    assert set(orig["split"]) == {"train", "test"}
    for _cond, g in orig.groupby("condition"):  # split by image, stratified: 2 of 4 images each
        assert g.groupby("split")["image_id"].nunique().to_dict() == {"train": 2, "test": 2}
    assert (aug["split"] == "train").all() and aug["aug"].str.startswith("rot=").all()
    parent = orig.set_index("cell_id").loc[aug["aug_of"]]
    assert (parent["image_id"].to_numpy() == aug["image_id"].to_numpy()).all()
    crop, mask = store[int(orig.index[0])]
    assert crop.shape == (2, 64, 64) and mask[32, 32] == 1
    summary = json.loads((out / "prepare_summary.json").read_text())
    assert summary["cells"] == len(orig) and len(summary["overlays"]) == 3
    assert all((out / p).stat().st_size > 1000 for p in summary["overlays"])
    assert sum(summary["cells_per_condition"].values()) == len(orig)

    train = [
        sys.executable,
        "train.py",
        "data=prepared",
        f"data.path={out}",
        f"hydra.run.dir={tmp_path / 'run'}",
        "data.val_fraction=0.5",
        "data.min_epoch_cells=0",
        "schedule.pretrain_epochs=1",
        "schedule.epochs=2",
        "schedule.warm_epochs=1",
        "schedule.push_every=2",
        "schedule.push_start=2",
        "schedule.last_layer_epochs=1",
        "protopnet.prototypes_per_class=2",
        "explain=false",
        "trainer.enable_progress_bar=false",
        "threads=1",
    ]
    proc = warm.run(train, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    preds = pd.read_csv(tmp_path / "run" / "test_predictions.csv")
    test_cells = orig[orig["split"] == "test"]
    # every test cell of the prepared store predicted once, and the accuracy is that of these predictions
    assert sorted(preds["cell_id"]) == sorted(test_cells["cell_id"])
    assert metrics["n_cells"] == len(test_cells)
    call = (preds["call"] if "call" in preds else preds["pred"] == 1).astype(bool)
    assert metrics["well_label_accuracy"] == pytest.approx((call == (preds["label"] == 1)).mean())
    assert metrics["well_label_accuracy_argmax"] == pytest.approx((preds["pred"] == preds["label"]).mean())


def test_a_killed_run_resumes_and_skips_finished_images(tmp_path, synthetic_fields):
    out = tmp_path / "store"
    cfg = prepare_config(
        f"input={synthetic_fields}",
        f"plate_map={synthetic_fields / 'plate_map.csv'}",
        f"output={out}",
        "tile.size=128",
        "augment.copies=1",
        "summary.overlays=1",
    )
    prepare(cfg)
    first = pd.read_csv(out / "manifest.csv")
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "shards").glob("*.npy")}
    assert_store_folder(out)
    # simulate a run killed while on one image: its record and the finishing files are gone,
    # half-written temporary files are left behind
    (out / ".prepare" / "images" / "plate1_B02_f1.json").unlink()
    (out / "store.json").unlink()
    (shard,) = {p.name.split(".")[0] for p in (out / "shards").glob("plate1_B02_f1-*.crops.npy")}
    (out / "shards" / f"{shard}.crops.npy.tmp").write_bytes(b"half")
    (out / ".prepare" / "images" / "plate1_B02_f1.json.tmp").write_bytes(b"{")
    prepare(cfg)
    again = pd.read_csv(out / "manifest.csv")
    pd.testing.assert_frame_equal(first, again)
    assert_store_folder(out)  # the temporary files are gone, nothing else was added
    now = {p.name: p.stat().st_mtime_ns for p in (out / "shards").glob("*.npy")}
    redone = sorted(n for n in stamps if now[n] != stamps[n])
    assert redone and all(n.startswith("plate1_B02_f1") for n in redone)
    # a changed setting that alters crops re-does every image; store.json is rewritten last
    prepare({**cfg, "denoise_sigma": 0.5})
    assert all(p.stat().st_mtime_ns != stamps.get(p.name) for p in (out / "shards").glob("*.npy"))
    assert CropStore(out).info["prepare"]["config"]["denoise_sigma"] == 0.5
    assert_store_folder(out)  # the earlier store's shards were removed after the switch


def test_a_store_of_wells_to_score_only_is_followed_by_the_score_command(tmp_path, synthetic_fields):
    """Before: "train on it: python train.py …" for a store without conditions, which train.py refuses."""
    plate = pd.read_csv(synthetic_fields / "plate_map.csv").head(2).assign(condition="")
    plate["image"] = [str(synthetic_fields / p) for p in plate["image"]]
    plate.to_csv(tmp_path / "plate_map.csv", index=False)
    out = tmp_path / "store"
    proc = warm.run(
        [
            sys.executable,
            "prepare.py",
            f"input={synthetic_fields}",
            f"plate_map={tmp_path / 'plate_map.csv'}",
            f"output={out}",
            "tile.size=128",
            "progress=false",
            "augment.copies=0",
            "summary.overlays=0",
            f"hydra.run.dir={tmp_path / 'prep_run'}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "train on it" not in proc.stdout
    assert (
        f"score it with a trained run (it holds no condition, nothing to train on): python score.py "
        f"run=<run folder> data.path={out}"
    ) in proc.stdout
