"""A prepare never wrecks a good store: refusals and crashes leave it byte-identical and readable, a
store of other inputs is not replaced without overwrite=true, and one output has one writer."""

import os
import shutil

import numpy as np
import pandas as pd
import pytest
import tifffile
import warm
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
    return prepare_config(
        f"input={plate}",
        f"plate_map={plate / 'plate_map.csv'}",
        f"output={out}",
        "tile.size=128",
        "augment.copies=1",
        "summary.overlays=1",
        *overrides,
    )


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


def test_a_prepare_that_crashes_midway_leaves_the_old_store_readable_and_the_next_run_finishes(
    plate, good, monkeypatch
):
    before = snapshot(good)
    calls = []
    real = Preparer.image_pass

    def crash_on_third(self, *a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt("killed")  # as a kill or Ctrl-C mid-run
        return real(self, *a, **k)

    monkeypatch.setattr(Preparer, "image_pass", crash_on_third)
    changed = config(plate, good, "denoise_sigma=0.5")  # changes every image's crops
    with pytest.raises(KeyboardInterrupt):
        prepare(changed)
    old = CropStore(good)  # the old store, untouched, still validates
    store_files = {k: v for k, v in before.items() if not k.startswith(".prepare/")}
    assert {k: v for k, v in snapshot(good).items() if k in store_files} == store_files
    assert old.info["prepare"]["config"]["denoise_sigma"] == 1.0
    monkeypatch.setattr(Preparer, "image_pass", real)
    prepare(changed)  # resumes: the two finished images are kept
    new = CropStore(good)
    assert new.info["prepare"]["config"]["denoise_sigma"] == 0.5
    assert not set(old.manifest["shard"]) & set(new.manifest["shard"])
    assert_store_folder(good)  # the old store's shards are gone now


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
    with exclusive_lock(good / ".prepare" / "lock", RuntimeError):  # as a running prepare holds it
        with pytest.raises(
            InputError,
            match=rf"output={good} is being written by another prepare "
            rf"\(pid {os.getpid()} on [^)]+\)",
        ):
            prepare(config(plate, good, "denoise_sigma=0.5"))
    assert snapshot(good) == before


@pytest.mark.slow  # runs prepare.py / train.py end to end
def test_the_repair_the_store_error_prints_repairs_the_store(plate, tmp_path):
    """Issue 25.3, end to end: a truncated shard, a deleted one, a truncated augmented mask and a damaged
    resumability record; the error names the command that wrote the store, and that command (also with
    overwrite=true) gives back the original store, byte for byte. Before, the rerun exited 0 with "crop
    store written" and left the shards broken (prepare kept every shard whose masks file existed)."""
    import json
    import sys
    from pathlib import Path

    from protocell.data.store import StoreError

    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "store"
    command = [
        sys.executable,
        "prepare.py",
        f"input={plate}",
        f"plate_map={plate / 'plate_map.csv'}",
        f"output={out}",
        "tile.size=128",
        "augment.copies=1",
        "summary.overlays=0",
        "progress=false",
        "workers=1",
    ]

    def prepare_cli(*extra):
        proc = warm.run(
            command + list(extra),
            cwd=root,
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        assert proc.returncode == 0, proc.stderr[-3000:]

    def store_files():
        return {k: v for k, v in snapshot(out).items() if k.startswith("shards/") or k == "manifest.csv"}

    prepare_cli()
    original = store_files()
    for extra in ((), ("overwrite=true",)):
        shards = sorted(CropStore(out).manifest["shard"].unique())
        originals, augmented = [s for s in shards if ".aug-" not in s], [s for s in shards if ".aug-" in s]
        first = out / "shards" / f"{originals[0]}.crops.npy"
        first.write_bytes(first.read_bytes()[:-1000])
        (out / "shards" / f"{originals[1]}.crops.npy").unlink()
        aug_masks = out / "shards" / f"{augmented[0]}.masks.npy"
        aug_masks.write_bytes(aug_masks.read_bytes()[:200])
        next((out / ".prepare" / "images").glob("*.json")).write_text('{"key": "trunc')
        with pytest.raises(StoreError) as err:
            CropStore(out)
        assert (
            f"python prepare.py input={plate} plate_map={plate / 'plate_map.csv'} … output={out}, the same "
            "settings: prepare checks every shard it keeps and redoes what is missing or damaged"
        ) in str(err.value)
        prepare_cli(*extra)  # the command the message prints
        assert len(CropStore(out)) > 0  # opens and validates
        assert store_files() == original, extra  # the original store, byte for byte
        assert json.loads((out / "store.json").read_text())["manifest_sha1"]
        assert_store_folder(out)
