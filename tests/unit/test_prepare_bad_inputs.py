"""Every bad input is refused before anything is written, with a message naming the file and the fix."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from conftest import prepare_config

from protocell.data.store import CropStore
from protocell.prepare.io import InputError
from protocell.prepare.pipeline import prepare


@pytest.fixture()
def plate(tmp_path, synthetic_fields):
    """A writable copy of four synthetic fields (2 per condition) and their plate map."""
    root = tmp_path / "plate"
    (root / "fields").mkdir(parents=True)
    pm = pd.read_csv(synthetic_fields / "plate_map.csv")
    pm = pm.groupby("condition").head(2).reset_index(drop=True)
    for img in pm["image"]:
        shutil.copy(synthetic_fields / img, root / img)
    pm.to_csv(root / "plate_map.csv", index=False)
    return root


def run(plate, *overrides):
    out = plate.parent / "store"
    cfg = prepare_config(
        f"input={plate}",
        f"plate_map={plate / 'plate_map.csv'}",
        f"output={out}",
        "tile.size=128",
        "augment.copies=0",
        "summary.overlays=0",
        *overrides,
    )
    return prepare(cfg), out


def refused(plate, *overrides, match):
    with pytest.raises(InputError, match=match) as err:
        run(plate, *overrides)
    out = plate.parent / "store"
    # nothing at all is written: no folder, no .prepare/ records, no stats
    assert not out.exists(), sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    return str(err.value)


def test_the_good_plate_prepares(plate):
    out, _ = run(plate)
    assert (out / "store.json").exists()


def test_missing_tiff(plate):
    (plate / "fields" / "plate1_A01_f1.tif").unlink()
    msg = refused(plate, match="not in the input folder")
    assert "plate1_A01_f1.tif" in msg and "row 3" in msg


def test_corrupt_tiff(plate):
    (plate / "fields" / "plate1_A01_f0.tif").write_bytes(b"II*\x00garbage" * 10)
    msg = refused(plate, match="cannot be read as a TIFF")
    assert "plate1_A01_f0.tif" in msg and "re-export" in msg


def test_truncated_tiff_data(plate):
    path = plate / "fields" / "plate1_A01_f0.tif"
    img = tifffile.imread(path)
    tifffile.imwrite(path, img, tile=(64, 64), compression="zlib", metadata={"axes": "CYX"})
    data = path.read_bytes()
    with tifffile.TiffFile(path) as tif:  # cut the file inside the last tile's compressed data
        cut = int(tif.pages[1].dataoffsets[-1]) + 5
    path.write_bytes(data[:cut])
    msg = refused(plate, match="truncated or corrupt")
    assert "plate1_A01_f0" in msg


def test_channels_of_different_shapes(plate, tmp_path):
    # one file per channel; the nuclei file of one image is smaller
    rows = []
    for img in pd.read_csv(plate / "plate_map.csv").itertuples():
        data = tifffile.imread(plate / img.image)
        stem = Path(img.image).stem
        for c, name in enumerate(["actin", "nuclei"]):
            plane = data[c] if not (stem == "plate1_A01_f0" and name == "nuclei") else data[c][:200, :200]
            tifffile.imwrite(plate / f"{stem}_{name}.tif", plane)
            rows.append(
                {
                    "image": f"{stem}_{name}.tif",
                    "plate": img.plate,
                    "well": img.well,
                    "field": img.field,
                    "condition": img.condition,
                    "channel": name,
                }
            )
    pd.DataFrame(rows).to_csv(plate / "plate_map.csv", index=False)
    msg = refused(plate, match="differ in shape")
    assert "plate1_A01_f0_nuclei.tif" in msg


def test_wrong_channel_count(plate):
    path = plate / "fields" / "plate1_B01_f0.tif"
    img = tifffile.imread(path)
    tifffile.imwrite(path, np.concatenate([img, img[:1]]), photometric="minisblack", metadata={"axes": "CYX"})
    msg = refused(plate, match="has 3 channel")
    assert "plate1_B01_f0.tif" in msg and "channels.names" in msg


def test_nan_pixels(plate):
    path = plate / "fields" / "plate1_B01_f1.tif"
    img = tifffile.imread(path).astype(np.float32)
    img[1, 40, 50] = np.nan
    tifffile.imwrite(path, img, metadata={"axes": "CYX"})
    msg = refused(plate, match="NaN/inf")
    assert "plate1_B01_f1" in msg and "nuclei" in msg and "y=40, x=50" in msg


def test_constant_image(plate):
    path = plate / "fields" / "plate1_A01_f1.tif"
    tifffile.imwrite(path, np.full((2, 256, 256), 7, np.uint16), metadata={"axes": "CYX"})
    msg = refused(plate, match="constant")
    assert "plate1_A01_f1" in msg and "every pixel = 7" in msg


def test_plate_map_missing_columns(plate):
    pm = pd.read_csv(plate / "plate_map.csv").drop(columns=["condition"])
    pm.to_csv(plate / "plate_map.csv", index=False)
    msg = refused(plate, match=r"lacks columns \['condition'\]")
    assert "plate_map.csv" in msg and "image,plate,well,field,condition" in msg


def test_plate_map_naming_unknown_image(plate):
    pm = pd.read_csv(plate / "plate_map.csv")
    pm.loc[len(pm)] = ["fields/nope.tif", "plate1", "C01", 0, "Exp"]
    pm.to_csv(plate / "plate_map.csv", index=False)
    msg = refused(plate, match="names image 'fields/nope.tif'")
    assert "fix the path or add the file" in msg


def test_image_without_cells_is_warned_recorded_and_the_run_goes_on(plate, caplog):
    rng = np.random.default_rng(0)
    empty = rng.normal(100, 3, (2, 256, 256))
    empty[:, 100, 100] += 400  # one speck: not constant, but no cell
    tifffile.imwrite(plate / "fields" / "empty.tif", empty.astype(np.uint16), metadata={"axes": "CYX"})
    pm = pd.read_csv(plate / "plate_map.csv")
    pm.loc[len(pm)] = ["fields/empty.tif", "plate1", "A09", 0, "Ref"]
    pm.to_csv(plate / "plate_map.csv", index=False)
    out, _ = run(plate)
    import json

    summary = json.loads((out / "prepare_summary.json").read_text())
    assert summary["images_without_cells"] == ["empty"]
    assert [r["status"] for r in summary["per_image"] if r["image_id"] == "empty"] == ["no cells found"]
    assert summary["cells"] > 20 and "no cell found" in caplog.text


def test_a_tile_larger_than_the_image_is_the_whole_image(tmp_path):
    """640×640 and 512×512 fields (common camera sizes) with the default tile.size=650: prepared, one
    tile each, the same cells as with tiles smaller than the images."""
    from protocell.data.synthetic import write_fields

    root = tmp_path / "plate"
    maps = []
    for size in (640, 512):
        write_fields(
            root / f"s{size}", wells_per_condition=1, fields_per_well=1, field_size=size, cells_per_field=20, seed=size
        )
        pm = pd.read_csv(root / f"s{size}" / "plate_map.csv")
        maps.append(
            pm.assign(image=f"s{size}/" + pm["image"], field=size, image_id=f"s{size}_" + pm["image"].str.slice(7, -4))
        )
    pd.concat(maps).to_csv(root / "plate_map.csv", index=False)
    stores = {}
    for tile in (650, 200):
        cfg = prepare_config(
            f"input={root}",
            f"plate_map={root / 'plate_map.csv'}",
            f"output={tmp_path / str(tile)}",
            f"tile.size={tile}",
            "augment.copies=0",
            "summary.overlays=0",
        )
        stores[tile] = json.loads((prepare(cfg) / "prepare_summary.json").read_text())
    per_image = stores[650]["per_image"]
    assert sorted((r["height"], r["width"]) for r in per_image) == [(512, 512)] * 2 + [(640, 640)] * 2
    assert all(r["tiles"] == 1 and r["cells"] >= 10 for r in per_image), per_image
    assert {r["image_id"]: r["cells"] for r in per_image} == {
        r["image_id"]: r["cells"] for r in stores[200]["per_image"]
    }


def test_an_image_smaller_than_one_cell_is_refused(plate):
    tifffile.imwrite(
        plate / "fields" / "plate1_A01_f1.tif",
        np.arange(128, dtype=np.uint16).reshape(2, 8, 8),
        metadata={"axes": "CYX"},
    )
    msg = refused(plate, match="fewer pixels than one cell")
    assert "plate1_A01_f1 (8×8)" in msg and "cells.min_area=80" in msg and "tile.size" not in msg


def test_conditions_that_do_not_match_the_plate_map_are_refused_before_any_pixel_is_read(plate, monkeypatch):
    from protocell.prepare.pipeline import Preparer

    def no_pixels(*a, **k):
        raise AssertionError("pixels were read before the conditions were checked")

    monkeypatch.setattr(Preparer, "stats_pass", no_pixels)
    msg = refused(plate, "conditions=[DMSO,drug]", match=r"conditions=\['DMSO', 'drug'\] does not match")
    assert "not listed: ['Ref', 'Exp']" in msg and "no image has ['DMSO', 'drug']" in msg
    msg = refused(plate, "conditions=[Ref]", match="does not match")
    assert "not listed: ['Exp']" in msg


def test_output_that_is_a_file_is_refused(plate):
    (plate.parent / "store").write_text("not a folder")
    with pytest.raises(InputError, match="output=.*store.* is invalid: a folder for the crop store"):
        run(plate)
    assert (plate.parent / "store").read_text() == "not a folder"


def test_a_plate_map_entry_that_is_not_a_tiff_names_its_kind_not_its_content(plate):
    (plate / "fields" / "plate1_A01_f0.tif").write_text("image,plate,well\nsecret-token-123,p,w\n")
    msg = refused(plate, match="cannot be read as a TIFF")
    assert "plate1_A01_f0.tif" in msg and "looks like text" in msg
    assert "secret" not in msg and "header=" not in msg
    (plate / "fields" / "plate1_A01_f0.tif").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    assert "looks like a PNG image" in refused(plate, match="cannot be read as a TIFF")


def test_same_named_files_in_two_folders_get_advice_that_fixes_it(plate):
    pm = pd.read_csv(plate / "plate_map.csv")
    (plate / "other").mkdir()
    shutil.copy(plate / pm.loc[0, "image"], plate / "other" / Path(pm.loc[0, "image"]).name)
    pm.loc[len(pm)] = [f"other/{Path(pm.loc[0, 'image']).name}", "plate1", "C01", 0, pm.loc[0, "condition"]]
    pm.to_csv(plate / "plate_map.csv", index=False)
    msg = refused(plate, match="two files for image")
    assert "add an image_id column to the plate map" in msg and "in different folders" in msg
    pm["image_id"] = pm["image"].str.replace(".tif", "", regex=False)  # the advice, followed
    pm.to_csv(plate / "plate_map.csv", index=False)
    out, _ = run(plate)
    assert CropStore(out).manifest["image_id"].nunique() == len(pm)


def test_unknown_segmentation_method(plate):
    refused(plate, "segmentation.method=magic", match="segmentation.method='magic' is invalid")


def test_missing_model_file(plate, tmp_path):
    msg = refused(
        plate,
        "segmentation=cellpose",
        f"segmentation.model={tmp_path / 'none' / 'model.pt'}",
        match="no such Cellpose model file",
    )
    assert "model.pt" in msg


def test_missing_builtin_cellpose_model_names_the_download(plate, tmp_path, monkeypatch):
    from cellpose import models

    monkeypatch.setattr(models, "MODEL_DIR", tmp_path / "cp_models")
    msg = refused(plate, "segmentation=cellpose", "segmentation.model=cyto3", match="is not on this machine")
    assert str(tmp_path / "cp_models" / "cyto3") in msg and "https://www.cellpose.org/models/cyto3" in msg


def test_extra_plate_map_columns_reach_the_manifest_and_empty_conditions_are_scored_only(plate):
    """dose, compound, concentration or any metadata are carried into the manifest as they are; an
    image without a condition gets label −1 and no split (never trained on, never augmented)."""
    from protocell.data.store import CropStore

    pm = pd.read_csv(plate / "plate_map.csv")
    pm["dose"] = ["0.1", "1", "", "1e-3"]
    pm["compound"] = ["C1", "C1", "", "C2, salt"]  # a comma survives the CSV round trip
    pm["concentration"] = ["10 µM", "", "", "x"]
    pm.loc[3, "condition"] = ""
    pm.to_csv(plate / "plate_map.csv", index=False)
    out, _ = run(plate, "augment.copies=1")
    m = CropStore(out).manifest
    by_image = m[m["aug_of"] < 0].groupby("image_id").first()
    for r in pm.itertuples():
        image_id = Path(r.image).stem
        got = by_image.loc[image_id]
        want = {k: "" if pd.isna(getattr(r, k)) else str(getattr(r, k)) for k in ("dose", "compound", "concentration")}
        assert {k: str(got[k]) for k in want} == want, image_id
    unscored = m["image_id"] == Path(pm.loc[3, "image"]).stem
    assert (m.loc[unscored, "label"] == -1).all() and (m.loc[unscored, "split"] == "").all()
    assert (m.loc[unscored, "aug_of"] < 0).all() and (m.loc[~unscored, "label"] >= 0).all()
    aug = m[m["aug_of"] >= 0]
    assert (
        len(aug)
        and (
            aug["dose"].astype(str).to_numpy()
            == m.set_index("cell_id").loc[aug["aug_of"], "dose"].astype(str).to_numpy()
        ).all()
    )
    assert m.loc[~unscored & (m["aug_of"] < 0), "split"].isin(["train", "test"]).all()


def test_plate_map_columns_the_manifest_uses_are_refused(plate):
    pm = pd.read_csv(plate / "plate_map.csv")
    pm["split"] = "train"
    pm.to_csv(plate / "plate_map.csv", index=False)
    msg = refused(plate, match=r"column\(s\) \['split'\].*manifest uses itself")
    assert "plate_map.csv" in msg and "rename" in msg


# ----------------------------------------------------------------------------- issue 25: duplicates and doses


def test_one_file_under_two_wells_is_refused_naming_both_rows(plate):
    """Before: the same cells were stored as Ref *and* Exp (or, under two wells of one condition, in train
    and in test), silently."""
    pm = pd.read_csv(plate / "plate_map.csv")
    first = pm.iloc[0]
    pm.loc[len(pm)] = ["./" + first["image"], "plate1", "C01", 0, "Exp"]  # another spelling of one file
    pm.to_csv(plate / "plate_map.csv", index=False)
    msg = refused(plate, match="names the file")
    assert str((plate / first["image"]).resolve()) in msg
    assert f"row 2 (plate1/{first['well']} field {first['field']}, condition {first['condition']})" in msg
    assert "row 6 (plate1/C01 field 0, condition Exp)" in msg and "stored twice" in msg
    pm.loc[len(pm) - 1, "condition"] = first["condition"]  # one condition: train and test
    pm.to_csv(plate / "plate_map.csv", index=False)
    refused(plate, match=r"names the file .* in row 2 .* and row 6")


def test_an_exact_duplicate_row_is_named_as_such(plate):
    """Before, with per-channel files: "image '…' has two files for channel 'nuclei': X and X"."""
    rows = []
    for img in pd.read_csv(plate / "plate_map.csv").itertuples():
        data = tifffile.imread(plate / img.image)
        for c, name in enumerate(["actin", "nuclei"]):
            tifffile.imwrite(plate / f"{Path(img.image).stem}_{name}.tif", data[c])
            rows.append(
                {
                    "image": f"{Path(img.image).stem}_{name}.tif",
                    "plate": img.plate,
                    "well": img.well,
                    "field": img.field,
                    "condition": img.condition,
                    "channel": name,
                }
            )
    rows.insert(4, dict(rows[1]))
    pd.DataFrame(rows).to_csv(plate / "plate_map.csv", index=False)
    msg = refused(plate, match=r"rows 3, 6 are the same row \(every column equal\): delete all but one")
    assert "two files for channel" not in msg and "names the file" not in msg


@pytest.mark.parametrize("dose", ["high", "-1", "inf", "-inf", "1e400", "10 µM"])
def test_a_dose_that_is_not_a_finite_number_is_refused_at_prepare_time_naming_the_well(plate, dose):
    """Before: refused only by score.py (after prepare and train), and ``inf`` not even there (issue 23.7)."""
    pm = pd.read_csv(plate / "plate_map.csv")
    pm["dose"] = ["0", "", "2.5", "1"]
    pm.loc[2, "dose"] = dose
    pm.to_csv(plate / "plate_map.csv", index=False)
    r = pm.iloc[2]
    msg = refused(plate, match="is not a finite number ≥ 0")
    assert f"row 4 (plate1/{r['well']} field {r['field']}, condition {r['condition']}): dose '{dose}'" in msg


def test_a_plate_map_listing_the_treated_wells_first_keeps_the_reference_as_label_0(plate, caplog):
    """Before: prepare took the plate map's order of first appearance (treated first → treated was the
    reference, silently) while the crops importer put a reference-like name first; now one rule for both,
    and the order chosen is logged."""
    import logging

    pm = pd.read_csv(plate / "plate_map.csv")
    names = {"Ref": "untreated", "Exp": "drug"}
    pm["condition"] = pm["condition"].map(names)
    pm = pd.concat([pm[pm["condition"] == "drug"], pm[pm["condition"] == "untreated"]])  # treated rows first
    pm.to_csv(plate / "plate_map.csv", index=False)
    with caplog.at_level(logging.WARNING, logger="protocell.prepare"):
        out, _ = run(plate)
    assert CropStore(out).info["conditions"] == ["untreated", "drug"]
    said = [r.getMessage() for r in caplog.records if "class order" in r.getMessage()]
    assert said and "['untreated', 'drug']" in said[0] and "'drug' is the exposed class" in said[0]
    shutil.rmtree(out)
    out, _ = run(plate, "conditions=[drug,untreated]")  # the setting still decides
    assert CropStore(out).info["conditions"] == ["drug", "untreated"]


def test_class_order_is_one_rule():
    from protocell.prepare.classes import class_order

    assert class_order(["drug", "DMSO", "drug", ""]) == ["DMSO", "drug"]
    assert class_order(["b", "a"]) == ["a", "b"]  # no reference-like name: by name, logged
    assert class_order(["x", "y"], ["y", "x"]) == ["y", "x"]
    for given, match in (
        (["x"], r"not listed: \['y'\]"),
        (["x", "y", "z"], r"no image has \['z'\]"),
        (["x", "x", "y"], "listed twice"),
    ):
        with pytest.raises(InputError, match=match):
            class_order(["x", "y"], given, "the plate map p.csv")
