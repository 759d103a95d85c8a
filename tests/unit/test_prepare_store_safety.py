"""A prepare never wrecks a good store: refusals and crashes leave it byte-identical and readable, a
store of other inputs is not replaced without overwrite=true, and one output has one writer."""

import os
import shutil

import numpy as np
import pandas as pd
import pytest
import tifffile

from conftest import assert_store_folder, prepare_config
from protocell.data.store import CropStore
from protocell.prepare.io import InputError
from protocell.prepare.pipeline import Preparer, prepare


@pytest.fixture()
def plate(tmp_path, synthetic_fields):
    root = tmp_path / "plate"
    (root / "fields").mkdir(parents=True)
    pm = pd.read_csv(synthetic_fields / "plate_map.csv").groupby("condition").head(2).reset_index(drop=True)
    for img in pm["image"]:
        shutil.copy(synthetic_fields / img, root / img)
    pm.to_csv(root / "plate_map.csv", index=False)
    return root


def config(plate, out, *overrides):
    return prepare_config(f"input={plate}", f"plate_map={plate / 'plate_map.csv'}", f"output={out}", "tile.size=128",
                          "augment.copies=1", "summary.overlays=1", *overrides)


def snapshot(out):
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != "lock"}


@pytest.fixture()
def good(plate, tmp_path):
    out = tmp_path / "store"
    prepare(config(plate, out))
    assert_store_folder(out)
    return out


def test_a_refused_prepare_leaves_the_store_byte_identical(plate, good):
    before = snapshot(good)
    path = plate / "fields" / "plate1_B01_f1.tif"
    img = tifffile.imread(path).astype(np.float32)
    img[1, 40, 50] = np.nan
    tifffile.imwrite(path, img, metadata={"axes": "CYX"})
    with pytest.raises(InputError, match="NaN"):
        prepare(config(plate, good))
    assert snapshot(good) == before
    assert len(CropStore(good)) > 0


def test_a_prepare_that_crashes_midway_leaves_the_old_store_readable_and_the_next_run_finishes(plate, good,
                                                                                                 monkeypatch):
    before = snapshot(good)
    calls = []
    real = Preparer.image_pass

    def crash_on_third(self, *a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt("killed")       # as a kill or Ctrl-C mid-run
        return real(self, *a, **k)

    monkeypatch.setattr(Preparer, "image_pass", crash_on_third)
    changed = config(plate, good, "denoise_sigma=0.5")   # changes every image's crops
    with pytest.raises(KeyboardInterrupt):
        prepare(changed)
    old = CropStore(good)                                # the old store, untouched, still validates
    store_files = {k: v for k, v in before.items() if not k.startswith(".prepare/")}
    assert {k: v for k, v in snapshot(good).items() if k in store_files} == store_files
    assert old.info["prepare"]["config"]["denoise_sigma"] == 1.0
    monkeypatch.setattr(Preparer, "image_pass", real)
    prepare(changed)                                     # resumes: the two finished images are kept
    new = CropStore(good)
    assert new.info["prepare"]["config"]["denoise_sigma"] == 0.5
    assert not set(old.manifest["shard"]) & set(new.manifest["shard"])
    assert_store_folder(good)                            # the old store's shards are gone now


def test_a_store_of_other_inputs_is_replaced_only_with_overwrite(plate, good, tmp_path):
    other = tmp_path / "other_plate"
    shutil.copytree(plate, other)
    before = snapshot(good)
    with pytest.raises(InputError, match=f"output={good} holds a crop store of other inputs.*overwrite=true"):
        prepare(config(other, good))
    assert snapshot(good) == before
    old_shards = set(CropStore(good).manifest["shard"])
    prepare(config(other, good, "overwrite=true"))
    new = CropStore(good)
    assert new.info["prepare"]["config"]["input"] == str(other) and not set(new.manifest["shard"]) & old_shards
    assert_store_folder(good)


def test_a_folder_of_other_files_is_not_written_into(plate, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    with pytest.raises(InputError, match="holds other files and no crop store"):
        prepare(config(plate, out))
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_one_output_has_one_writer_and_the_refusal_names_the_holder(plate, good):
    from protocell.fsutil import exclusive_lock

    before = snapshot(good)
    with exclusive_lock(good / ".prepare" / "lock", RuntimeError):     # as a running prepare holds it
        with pytest.raises(InputError, match=rf"output={good} is being written by another prepare "
                                             rf"\(pid {os.getpid()} on [^)]+\)"):
            prepare(config(plate, good, "denoise_sigma=0.5"))
    assert snapshot(good) == before
