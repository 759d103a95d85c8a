"""Pre-cut crops → crop store (``prepare.py mode=crops``): the same pixels and masks back, bad inputs refused."""

import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import warm

from protocell.data.normalization import auto_normalization
from protocell.data.store import CropStore
from protocell.prepare.classes import class_order
from protocell.prepare.crops_import import import_crops
from protocell.prepare.crops_masks import centre_object_mask
from protocell.prepare.io import InputError

ROOT = Path(__file__).resolve().parents[2]
CHANNELS = ["DNA", "tubulin", "actin"]


def disk(S, cy, cx, r):
    yy, xx = np.mgrid[:S, :S]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def cell_crop(rng, S=40, shift=0):
    """(3, S, S) uint16: a nucleus (DNA) inside a cell body (tubulin, actin) at the centre, a piece of a
    neighbouring cell in a corner, camera noise."""
    body, nucleus = disk(S, S // 2 + shift, S // 2, 11), disk(S, S // 2 + shift, S // 2, 5)
    other, other_nuc = disk(S, 2, 2, 7), disk(S, 2, 2, 3)
    x = rng.normal(100, 5, (3, S, S))
    x[0] += 900 * (nucleus | other_nuc)
    x[1] += 500 * (body | other)
    x[2] += 700 * (body | other)
    return x.clip(0, 65535).astype(np.uint16), body


@pytest.fixture()
def crops_folder(tmp_path):
    """Ref/ as .npy (C, S, S), Exp/ as .tif (S, S, C); two wells per condition, names carry well and cell;
    the first Ref crop has its own mask file."""
    rng = np.random.default_rng(0)
    root = tmp_path / "crops"
    truth = {}
    for cond in ("Ref", "Exp"):
        (root / cond).mkdir(parents=True)
        for well in ("A01", "A02") if cond == "Ref" else ("B01", "B02"):
            for k in range(3):
                x, body = cell_crop(rng, shift=k - 1)
                name = f"{cond}/{well}_s1_c{k}"
                if cond == "Ref":
                    np.save(root / f"{name}.npy", x)
                    truth[f"{name}.npy"] = (x, body)
                else:
                    # YXC with the samples contiguous, as exports write them (said, not left to tifffile's default)
                    tifffile.imwrite(root / f"{name}.tif", np.moveaxis(x, 0, -1), photometric="rgb")
                    truth[f"{name}.tif"] = (x, body)
    given = disk(40, 20, 20, 9)
    np.save(root / "Ref/A01_s1_c0.mask.npy", given.astype(np.uint8))
    truth["Ref/A01_s1_c0.npy"] = (truth["Ref/A01_s1_c0.npy"][0], given)
    return root, truth


PATTERN = r"(?P<well>[A-Z]\d\d)_s(?P<field>\d+)_c\d+"


def test_crops_round_trip_to_the_store_with_the_same_pixels_and_masks(crops_folder, tmp_path):
    root, truth = crops_folder
    out = import_crops(root, CHANNELS, tmp_path / "store", pattern=PATTERN, progress=False)
    store = CropStore(out)
    m = store.manifest
    assert store.channels == CHANNELS and store.crop_size == 40 and len(store) == 12
    assert store.info["normalization"] == {"method": "as_given"}
    assert auto_normalization(store.info)[0] == "cell"  # training normalises per cell
    assert store.info["conditions"] == ["Ref", "Exp"]  # the reference first
    assert m["bbox_y0"].isna().all() and m["centroid_x"].isna().all()  # unknown, not invented
    assert set(m["well"]) == {"A01", "A02", "B01", "B02"} and m["image_id"].nunique() == 4
    for i, row in m.iterrows():
        x, body = truth[row["file"]]
        assert np.array_equal(store.crop(i), x), row["file"]  # same pixels (the .tif was YXC)
        assert store.crop(i).dtype == np.uint16
        mask = store.mask(i) > 0
        if row["file"] == "Ref/A01_s1_c0.npy":
            assert row["mask_source"] == "file" and np.array_equal(mask, body)
        else:  # segmented: the centre cell only
            assert row["mask_source"] == "segmented"
            iou = (mask & body).sum() / (mask | body).sum()
            assert iou > 0.8 and not mask[:5, :5].any(), (row["file"], iou)
        assert row["label"] == (0 if row["condition"] == "Ref" else 1)


def test_metadata_gives_condition_and_wells(crops_folder, tmp_path):
    root, truth = crops_folder
    files = sorted(truth)
    meta = pd.DataFrame(
        {
            "file": files,
            "condition": ["DMSO" if f.startswith("Ref") else "drug" for f in files],
            "well": [f.split("/")[1][:3] for f in files],
            "field": 1,
        }
    )
    meta.to_csv(tmp_path / "meta.csv", index=False)
    out = import_crops(root, CHANNELS, tmp_path / "store", metadata=tmp_path / "meta.csv", masks="none", progress=False)
    store = CropStore(out)
    assert store.info["conditions"] == ["DMSO", "drug"] and (store.manifest["mask_source"] == "whole crop").all()
    assert class_order(["b", "a"], None) == ["a", "b"] and class_order(["x", "control"], None) == ["control", "x"]


def test_bad_inputs_are_refused_clearly(crops_folder, tmp_path):
    root, truth = crops_folder
    files = sorted(truth)
    pd.DataFrame({"file": files[1:], "condition": "Ref"}).to_csv(tmp_path / "short.csv", index=False)
    with pytest.raises(InputError, match=r"1 crop file\(s\) have no row in metadata=.*short.csv, e.g. " + files[0]):
        import_crops(root, CHANNELS, tmp_path / "s1", metadata=tmp_path / "short.csv")
    with pytest.raises(
        InputError, match=r"has shape \(.*\), which does not hold the 2 channels that channels.names lists"
    ):
        import_crops(root, ["DNA", "actin"], tmp_path / "s2")
    np.save(root / "Exp" / "B01_s1_c9.npy", np.zeros((3, 36, 36), np.uint16))
    with pytest.raises(InputError, match=r"mixed sizes: 12 are 3×40×40, 1 others, e.g. Exp/B01_s1_c9.npy \(3×36×36\)"):
        import_crops(root, CHANNELS, tmp_path / "s3")
    (root / "Exp" / "B01_s1_c9.npy").unlink()
    (root / "Exp" / "notes.txt").write_text("not a crop")
    with pytest.raises(InputError, match=r"notes.txt is not a crop \(.npy, .tif, .tiff\)"):
        import_crops(root, CHANNELS, tmp_path / "s4")
    (root / "Exp" / "notes.txt").unlink()
    (root / "Exp" / "broken.npy").write_bytes(b"not numpy")
    with pytest.raises(InputError, match=r"broken.npy cannot be read as a crop"):
        import_crops(root, CHANNELS, tmp_path / "s5")
    assert not any((tmp_path / f"s{i}").exists() for i in range(1, 6))  # refused before anything is written


def test_prepare_cli_refuses_a_bad_crop_folder_in_one_line(crops_folder, tmp_path):
    root, _ = crops_folder
    (root / "Ref" / "README.md").write_text("hi")
    proc = warm.run(
        [
            sys.executable,
            "prepare.py",
            "mode=crops",
            f"input={root}",
            "channels.names=[DNA,tubulin,actin]",
            f"output={tmp_path / 'store'}",
            "progress=false",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("prepare: ") and "README.md is not a crop" in proc.stderr


def test_centre_object_mask_takes_the_cell_under_the_centre():
    rng = np.random.default_rng(1)
    x, body = cell_crop(rng)
    m = centre_object_mask(x.astype(np.float32), main=2, second=0)
    assert m[20, 20] and not m[:4, :4].any() and (m & body).sum() / (m | body).sum() > 0.8
    assert centre_object_mask(np.zeros((3, 16, 16), np.float32), main=2) is None


# ----------------------------------------------------------------------------- issue 25


@pytest.mark.parametrize("masks", ["none", "auto"])
def test_float_crops_with_nan_or_inf_are_refused_before_anything_is_written(crops_folder, tmp_path, masks):
    """Before: crops.masks=none imported them (exit 0, and score.py then scored them); the default masks
    crashed with a traceback and left an empty shards/."""
    root, truth = crops_folder
    for f in sorted(truth):  # float crops, as many exports write them
        x = truth[f][0].astype(np.float32)
        if f.endswith(".npy"):
            np.save(root / f, x)
        else:
            tifffile.imwrite(root / f, np.moveaxis(x, 0, -1), photometric="rgb")
    x = np.load(root / "Ref/A02_s1_c1.npy")
    x[1, 7, 9] = np.nan  # tubulin: the channel the default masks segment
    np.save(root / "Ref/A02_s1_c1.npy", x)
    big = np.load(root / "Ref/A01_s1_c2.npy").astype(np.float64)
    big[0, 0, 3] = 1e300  # finite as float64, inf as the store's float32
    np.save(root / "Ref/A01_s1_c2.npy", big)
    with pytest.raises(
        InputError,
        match=r"2 crop\(s\) hold NaN or infinite pixel values \(as float32.*"
        r"Ref/A01_s1_c2.npy \(1 pixel\(s\), first at channel 0, y=0, x=3\); "
        r"Ref/A02_s1_c1.npy \(1 pixel\(s\), first at channel 1, y=7, x=9\)",
    ):
        import_crops(root, CHANNELS, tmp_path / "store", pattern=PATTERN, masks=masks, progress=False)
    assert not (tmp_path / "store").exists()


def test_a_refused_mask_import_leaves_no_folder(crops_folder, tmp_path):
    """Before: an empty shards/ (and, over an existing store, no store.json any more)."""
    root, _ = crops_folder
    with pytest.raises(InputError, match=r"crops.masks=files but \S+Exp/B01_s1_c0.tif has no mask file"):
        import_crops(root, CHANNELS, tmp_path / "s1", pattern=PATTERN, masks="files", progress=False)
    np.save(root / "Ref/A01_s1_c1.mask.npy", np.ones((30, 30), np.uint8))
    with pytest.raises(InputError, match=r"mask file \S+A01_s1_c1.mask.npy has shape \(30, 30\), its crop is 40×40"):
        import_crops(root, CHANNELS, tmp_path / "s2", pattern=PATTERN, progress=False)
    assert not (tmp_path / "s1").exists() and not (tmp_path / "s2").exists()
    (root / "Ref/A01_s1_c1.mask.npy").unlink()
    store = import_crops(root, CHANNELS, tmp_path / "s3", pattern=PATTERN, progress=False)
    before = (store / "store.json").read_bytes()
    np.save(root / "Ref/A01_s1_c1.mask.npy", np.ones((30, 30), np.uint8))
    with pytest.raises(InputError, match="has shape"):
        import_crops(root, CHANNELS, store, pattern=PATTERN, progress=False)
    assert (store / "store.json").read_bytes() == before and len(CropStore(store)) == 12  # the old store intact


def test_an_output_inside_the_input_is_not_read_as_crops_on_the_next_run(crops_folder):
    """Before: the rerun refused its own store ("…/manifest.csv is not a crop")."""
    root, _ = crops_folder
    out = root / "store"
    for _ in range(2):
        import_crops(root, CHANNELS, out, pattern=PATTERN, progress=False)
        assert len(CropStore(out)) == 12
    with pytest.raises(InputError, match="not a file and not the input folder; it is input="):
        import_crops(root, CHANNELS, root, pattern=PATTERN, progress=False)


def test_metadata_problems_are_refused_naming_rows_and_other_columns_reach_the_manifest(crops_folder, tmp_path):
    root, truth = crops_folder
    files = sorted(truth)
    base = pd.DataFrame(
        {
            "file": files,
            "condition": [f.split("/")[0] for f in files],
            "well": [f.split("/")[1][:3] for f in files],
            "dose": "1",
            "compound": "X",
        }
    )

    def refused(meta, match, encoding="utf-8"):
        meta.to_csv(tmp_path / "meta.csv", index=False, encoding=encoding)
        with pytest.raises(InputError, match=match):
            import_crops(
                root, CHANNELS, tmp_path / "store", metadata=tmp_path / "meta.csv", masks="none", progress=False
            )
        assert not (tmp_path / "store").exists()

    assert files[3] == "Exp/B02_s1_c0.tif"
    twice = pd.concat([base, base.iloc[[3]].assign(condition="Ref", well="B09")], ignore_index=True)
    refused(
        twice,
        r"names the crop Exp/B02_s1_c0.tif in row 5 \(condition 'Exp', well 'B02'\) and row 14 "
        r"\(condition 'Ref', well 'B09'\): one crop is one cell",
    )
    refused(pd.concat([base, base.iloc[[0]]], ignore_index=True), r"rows 2, 14 are the same row")
    refused(
        base.assign(file=["../crops/" + files[0]] + files[1:]),
        r"row 2: file '../crops/\S+' does not name a file "
        r"under input=",
    )
    refused(
        base.assign(file=[str(tmp_path / "elsewhere.npy")] + files[1:]), r"row 2: file '/\S+elsewhere.npy' does not"
    )
    refused(base.assign(well=[""] + list(base["well"][1:])), r"row\(s\) 2 have an empty well")
    refused(base.assign(true_label=["1.0"] + ["0"] * 11), r"row 2: true_label '1.0' is not 1 \(affected\), 0")
    refused(base.assign(dose=["1"] * 11 + ["inf"]), r"row 13 \(\S+\): dose 'inf' is not a finite number ≥ 0")
    refused(base.assign(label="x"), r"column\(s\) \['label'\], which the crop store's manifest uses itself")
    refused(base.assign(mask_source="x"), r"column\(s\) \['mask_source'\]")
    base.assign(file=["./" + files[0]] + files[1:]).to_csv(tmp_path / "meta.csv", index=False, encoding="utf-8-sig")
    out = import_crops(root, CHANNELS, tmp_path / "store", metadata=tmp_path / "meta.csv", masks="none", progress=False)
    m = CropStore(out).manifest
    assert (m["dose"].astype(str) == "1").all() and (m["compound"] == "X").all() and len(m) == 12


def test_a_damaged_imported_store_names_its_import_command_and_that_command_repairs_it(crops_folder, tmp_path):
    """The repair the store's error prints works for imported crops too (issue 25.3): the import rewrites
    every shard."""
    from protocell.data.store import StoreError

    root, _ = crops_folder
    out = import_crops(root, CHANNELS, tmp_path / "store", pattern=PATTERN, progress=False)
    original = {p.name: p.read_bytes() for p in (out / "shards").iterdir()} | {
        "manifest": (out / "manifest.csv").read_bytes()
    }
    shard = next((out / "shards").glob("*.crops.npy"))
    shard.write_bytes(shard.read_bytes()[:500])
    with pytest.raises(
        StoreError, match=rf"python prepare.py mode=crops input={root} … output={out}, the same settings"
    ):
        CropStore(out)
    import_crops(root, CHANNELS, out, pattern=PATTERN, progress=False)
    assert len(CropStore(out)) == 12
    assert {p.name: p.read_bytes() for p in (out / "shards").iterdir()} | {
        "manifest": (out / "manifest.csv").read_bytes()
    } == original
