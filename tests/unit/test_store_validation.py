"""A damaged crop store is refused when it is opened (before any epoch), naming the file and the fix."""

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import warm
from conftest import tiny_data

from protocell.data.store import CropStore, StoreError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def store(tiny_store, tmp_path):
    """A writable copy of the tiny synthetic store, marked as a prepared one (for the fix it is told)."""
    root = tmp_path / "store"
    shutil.copytree(tiny_store, root)
    info = json.loads((root / "store.json").read_text())
    (root / "store.json").write_text(json.dumps({**info, "source": "prepare"}))
    return root


def first_shard(root: Path, kind: str = "crops") -> Path:
    return sorted((root / "shards").glob(f"*.{kind}.npy"))[0]


def test_an_intact_store_opens(store):
    s = CropStore(store)
    assert len(s) > 0 and s.crop(0).shape == (2, 64, 64)


@pytest.mark.parametrize(
    "damage,message",
    [
        ("missing_shard", r"shards/\S+\.crops\.npy: missing"),
        ("truncated_shard", r"shards/\S+\.masks\.npy: truncated \(\d+ of \d+ bytes\)"),
        (
            "short_shard",
            r"shards/\S+\.crops\.npy: shape \(3, 2, 64, 64\), the manifest and store.json need \(\d+, 2, 64, 64\)",
        ),
        (
            "wrong_crop_size",
            r"crops\.npy: shape \(\d+, 2, 64, 64\), the manifest and store.json need \(\d+, 2, 96, 96\)",
        ),
        ("not_npy", r"crops\.npy: not a readable \.npy file"),
    ],
)
def test_damaged_shards_are_named_with_the_fix(store, damage, message):
    crops = first_shard(store)
    if damage == "missing_shard":
        crops.unlink()
    elif damage == "truncated_shard":
        masks = first_shard(store, "masks")
        masks.write_bytes(masks.read_bytes()[:-100])
    elif damage == "short_shard":
        np.save(crops, np.load(crops)[:3])
    elif damage == "wrong_crop_size":
        info = json.loads((store / "store.json").read_text())
        (store / "store.json").write_text(json.dumps({**info, "crop_size": 96}))
    else:
        crops.write_bytes(b"not numpy at all")
    with pytest.raises(StoreError, match=message) as err:
        CropStore(store)
    assert f"the crop store {store} is damaged" in str(err.value)
    assert f"python prepare.py … output={store}" in str(err.value)


def test_corrupt_store_json_and_missing_or_broken_manifest(store, tiny_store, tmp_path):
    (store / "store.json").write_text('{"format": "protocell-cells", "chan')
    with pytest.raises(StoreError, match=f"{store / 'store.json'} is not valid JSON.*re-create the store"):
        CropStore(store)
    shutil.copy(tiny_store / "store.json", store / "store.json")
    (store / "manifest.csv").unlink()
    with pytest.raises(StoreError, match=f"{store / 'manifest.csv'} is missing.*delete {store} and run again"):
        CropStore(store)  # a synthetic store's fix: regenerate it
    shutil.copy(tiny_store / "manifest.csv", store / "manifest.csv")
    with open(store / "manifest.csv", "a") as fh:  # an edit after store.json was written
        fh.write("\n")
    with pytest.raises(StoreError, match=r"manifest.csv is not the manifest .*store.json was written with"):
        CropStore(store)
    info = json.loads((store / "store.json").read_text())
    del info["manifest_sha1"]  # as a writer without the hash (or an edit on purpose)
    (store / "store.json").write_text(json.dumps(info))
    (store / "manifest.csv").write_text("cell_id,image_id\n0,a\n")
    with pytest.raises(StoreError, match=r"manifest.csv lacks columns \['plate', 'well'"):
        CropStore(store)


def test_the_datamodule_refuses_a_damaged_store_at_setup(store):
    first_shard(store).unlink()
    dm = tiny_data(store, batch_size=8)
    with pytest.raises(StoreError, match="crops.npy: missing"):
        dm.setup()


def test_a_crop_size_above_the_stores_is_warned(tiny_store, caplog):
    dm = tiny_data(tiny_store, crop_size=96, batch_size=8, val_fraction=0.0)
    dm.setup()
    assert "data.crop_size=96 is larger than the store's 64 px crops" in caplog.text
    assert "upscaled ×1.50" in caplog.text and "data.crop_size=64 or smaller" in caplog.text


@pytest.mark.slow  # runs prepare.py / train.py end to end
def test_train_refuses_a_damaged_store_before_the_first_epoch(store, tmp_path):
    first_shard(store, "masks").write_bytes(b"\x93NUMPY")
    run = tmp_path / "run"
    proc = warm.run(
        [
            sys.executable,
            "train.py",
            "data=prepared",
            f"data.path={store}",
            f"hydra.run.dir={run}",
            "threads=1",
            "trainer.enable_progress_bar=false",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert f"\ntrain: the crop store {store} is damaged" in proc.stderr and "masks.npy" in proc.stderr
    assert not (run / "checkpoints").exists() and not (run / "metrics.csv").exists()


def test_a_manifest_without_rows_is_named_with_the_fix(store):
    """Before: train.py said "the 'train' split is empty", score.py "lists no original cells (only offline
    augmentations)" — neither true, neither with a fix (issue 25.7)."""
    header = (store / "manifest.csv").read_text().splitlines()[0] + "\n"
    (store / "manifest.csv").write_text(header)
    info = json.loads((store / "store.json").read_text())
    del info["manifest_sha1"]
    (store / "store.json").write_text(json.dumps(info))
    with pytest.raises(StoreError, match=r"manifest.csv lists no cells \(a header without rows\).*re-create the store"):
        CropStore(store)
