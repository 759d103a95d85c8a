import numpy as np
import pandas as pd
import pytest
import tifffile
from conftest import tiny_data

from protocell.data.dataset import zeroing_mask
from protocell.data.split import split_by_image
from protocell.data.store import CropStore, StoreError
from protocell.data.synthetic import WellSpec, build_store, crop_cell, write_fields
from protocell.data.synthetic_render import render_field
from protocell.errors import ConfigError


def test_generator_is_deterministic_and_cached(tmp_path):
    spec = WellSpec(wells_per_condition=1, fields_per_well=1, field_size=160, cells_per_field=6, seed=5)
    a = build_store(tmp_path / "a", spec)
    b = build_store(tmp_path / "b", spec)
    sa, sb = CropStore(a), CropStore(b)
    assert len(sa) == len(sb) > 0
    for i in range(len(sa)):
        assert np.array_equal(sa.crop(i), sb.crop(i)) and np.array_equal(sa.mask(i), sb.mask(i))
    mtime = (a / "store.json").stat().st_mtime
    assert build_store(tmp_path / "a", spec) == a and (a / "store.json").stat().st_mtime == mtime
    other = build_store(tmp_path / "a", WellSpec(**{**spec.__dict__, "seed": 6}))
    assert other != a


def test_true_labels_and_masks_line_up_with_the_pixels():
    spec = WellSpec(field_size=256, cells_per_field=20, affected_fraction={"Ref": 0.0, "Exp": 1.0})
    rng = np.random.default_rng(0)
    img, labels, texture, cells = render_field(rng, spec, "Exp", 1.0)
    assert len(cells) >= 5 and img.dtype == np.uint16 and img.shape == (2, 256, 256)
    for c in cells:
        body = labels == c["label_id"]
        assert c["true_label"] == 1
        tex = (texture > 0) & body
        assert tex.sum() > 20  # every affected cell carries its change
        cy, cx = np.nonzero(body)
        assert abs(cy.mean() - c["centroid_y"]) < 1e-6
    _, labels_ref, texture_ref, cells_ref = render_field(np.random.default_rng(1), spec, "Ref", 1.0)
    assert texture_ref.sum() == 0 and all(c["true_label"] == 0 for c in cells_ref)
    # the crop's mask is exactly this cell's pixels
    c = cells[0]
    crop, mask, (y0, x0, y1, x1) = crop_cell(img, labels, c["label_id"], c["centroid_y"], c["centroid_x"], 64)
    assert mask.sum() == (labels == c["label_id"]).sum() and crop.shape == (2, 64, 64)


def test_planted_change_is_exactly_where_its_mask_says():
    """Same cell drawn twice from one seed, with and without the change: the pixels differ only
    inside the texture mask (noise-free rendering, before optics and noise)."""
    from protocell.data.synthetic_render import _render_cell

    p = {"isolated_puncta": 2.0, "cluster_radius": 5.0}
    for seed in range(5):
        a, _, body, tex = _render_cell(np.random.default_rng(seed), 18.0, True, p)
        b, _, body_b, tex_b = _render_cell(np.random.default_rng(seed), 18.0, False, p)
        diff = a - b
        assert np.array_equal(body, body_b) and not tex_b.any()
        assert diff[~tex].max() < 0.01 * diff.max()  # outside: at most the 3-sigma tail of a punctum
        assert diff[tex].max() > 0.3  # bright puncta inside it
        assert tex.sum() < 0.35 * body.sum()  # local: a part of the cytoplasm


def test_write_fields_writes_tiffs_with_ground_truth(tmp_path):
    out = write_fields(
        tmp_path, WellSpec(wells_per_condition=1, fields_per_well=1, field_size=128, cells_per_field=4, seed=2)
    )
    img = tifffile.imread(out / "fields" / "plate1_A01_f0.tif")
    lab = tifffile.imread(out / "fields" / "plate1_A01_f0.labels.tif")
    assert img.shape == (2, 128, 128) and lab.shape == (128, 128) and lab.max() >= 1
    plate = (out / "plate_map.csv").read_text().splitlines()
    assert plate[0] == "image,plate,well,field,condition" and len(plate) == 3


def test_split_keeps_each_image_and_well_in_one_split(tiny_store):
    m = CropStore(tiny_store).manifest
    for unit in ("image", "well"):
        s = split_by_image(m, 0.5, 0.3, seed=0, unit=unit)
        assert (m.assign(split=s).groupby("image_id")["split"].nunique() == 1).all()
        assert {"train", "test"} <= set(s)
    s = split_by_image(m, 0.5, 0.3, seed=0, unit="well")
    assert (
        m.assign(split=s)[s == "test"].groupby("well")["split"].size() == m[s == "test"].groupby("well").size()
    ).all()
    with pytest.raises(ConfigError, match="split_by"):
        split_by_image(m, 0.5, 0.3, 0, unit="field")


@pytest.fixture(scope="module")
def eight_wells(tmp_path_factory):
    return build_store(
        tmp_path_factory.mktemp("eight"),
        WellSpec(wells_per_condition=8, fields_per_well=3, field_size=128, cells_per_field=3, seed=5),
    )


@pytest.mark.parametrize("unit", ["image", "well"])
def test_validation_cells_come_from_wells_that_never_train(eight_wells, unit):
    """Pretrain keeps its epoch by the validation AUROC: on images of training wells that score rewards
    memorising the wells (issue 22), so validation takes whole wells whatever the test split is."""
    from protocell.data.split import split_rows

    m = CropStore(eight_wells).manifest
    s, info = split_rows(m, 0.5, 0.2, seed=0, unit=unit)
    wells = m.assign(split=s).groupby("well")["split"].agg(set)
    val_wells = [w for w, ss in wells.items() if "val" in ss]
    assert len(val_wells) >= 2  # round(0.2 · wells with training images) ≥ 1 a condition
    assert all("train" not in wells[w] for w in val_wells)
    assert info["val_unit"] == {"Exp": "well", "Ref": "well"}
    if unit == "well":
        assert all(len(ss) == 1 for ss in wells)  # every well in one split
        assert info["wells"] == {
            "train": {"Exp": 3, "Ref": 3},
            "val": {"Exp": 1, "Ref": 1},
            "test": {"Exp": 4, "Ref": 4},
        }
    else:  # test images from every well
        assert sum(info["wells"]["test"].values()) > 8 and min(info["wells"]["train"].values()) >= 5


def test_a_run_says_at_its_start_what_its_validation_cells_can_show(eight_wells, caplog):
    """Before training the DataModule records and says the smallest difference of affected shares its
    validation cells can show (``stats.validation_power``), and warns when even a perfect network needs
    more than ``WEAK_VALIDATION``: a few cells a well here, so it warns."""
    from protocell.data import datamodule
    from protocell.stats import validation_power

    dm = tiny_data(eight_wells, test_fraction=0.5, val_fraction=0.2, seed=0)
    with caplog.at_level("INFO", logger="protocell.data"):
        dm.setup()
    power = dm.split_info["validation_power"]
    m = dm.store.manifest.loc[dm.rows["val"]]
    assert power["cells"] == {c: int((m["condition"] == c).sum()) for c in ("Exp", "Ref")}
    assert power["wells"] == {"Exp": 1, "Ref": 1}
    perfect, good = validation_power(*power["cells"].values())
    assert power["difference_perfect"] == pytest.approx(perfect, abs=1e-4) and good > perfect
    assert perfect > datamodule.WEAK_VALIDATION  # ≈ 10 cells a condition
    said = [r for r in caplog.records if "keep rule" in r.getMessage()]
    assert len(said) == 1 and said[0].levelname == "WARNING" and "data.val_fraction" in said[0].getMessage()
    # with enough cells the same line is information, not a warning
    assert validation_power(2000, 2000)[0] < datamodule.WEAK_VALIDATION


def two_plate_manifest(wells_per_plate: int = 8, images_per_well: int = 3) -> pd.DataFrame:
    """A labelled manifest over two plates, each holding both conditions (one row per image)."""
    rows = [
        {
            "plate": p,
            "well": f"{'AB'[c]}{w:02d}",
            "image_id": f"{p}_{'AB'[c]}{w:02d}_f{f}",
            "condition": cond,
            "label": c,
        }
        for p in ("plate1", "plate2")
        for c, cond in enumerate(("Ref", "Exp"))
        for w in range(1, wells_per_plate + 1)
        for f in range(images_per_well)
    ]
    return pd.DataFrame(rows).assign(aug_of=-1, split="")


@pytest.mark.parametrize("unit", ["image", "well"])
def test_a_store_spanning_plates_gives_every_split_each_plates_share_of_each_condition(unit):
    """Drawn per condition only, the two-plate store's seed 0 put both validation reference wells on plate 1
    and both exposed ones on plate 2 (training 1 of 6 reference wells on plate 1, 2 of 6 exposed): a plate's
    imaging lined up with the condition, and the run read it. Per (plate, condition), as prepare draws."""
    from protocell.data.split import choose_split, split_rows

    m = two_plate_manifest()
    assert choose_split(m, 0.5, 0.2, "auto")[0] == "well"  # 16 wells a condition: 8 test, 2 val, 6 train
    for seed in range(6):
        s, info = split_rows(m, 0.5, 0.2, seed=seed, unit=unit)
        images = m.assign(s=s).groupby(["s", "condition", "plate"])["image_id"].nunique().unstack("plate")
        assert (images.loc["test", "plate1"] == images.loc["test", "plate2"]).all(), (seed, images)
        wells = m.assign(s=s).groupby(["s", "condition", "plate"])["well"].nunique().unstack("plate")
        assert (wells.loc["val"] >= 1).all().all(), (seed, wells)  # validation wells from both plates
        assert info["val_unit"] == {"Exp": "well", "Ref": "well"}
        if unit == "well":  # whole wells: every split and condition holds as many wells of each plate
            assert (wells["plate1"] == wells["plate2"]).all(), (seed, wells)
            assert info["wells"] == {
                "train": {"Exp": 6, "Ref": 6},
                "val": {"Exp": 2, "Ref": 2},
                "test": {"Exp": 8, "Ref": 8},
            }


def test_split_auto_splits_by_well_only_when_every_condition_keeps_five_training_wells(
    eight_wells, tiny_store, tmp_path_factory
):
    from protocell.data.split import choose_split

    unit, why = choose_split(CropStore(eight_wells).manifest, 0.5, 0.2, "auto")
    assert unit == "image" and "Exp: 3, Ref: 3 training well(s)" in why  # 8 wells: 4 test, 1 val, 3 train
    unit, why = choose_split(CropStore(tiny_store).manifest, 0.5, 0.2, "auto")
    assert unit == "image" and "Exp: 1, Ref: 1 training well(s)" in why
    assert choose_split(CropStore(tiny_store).manifest, 0.5, 0.2, "well")[0] == "well"
    twelve = build_store(
        tmp_path_factory.mktemp("twelve"),
        WellSpec(wells_per_condition=12, fields_per_well=1, field_size=128, cells_per_field=3, seed=5),
    )
    dm = tiny_data(twelve, seed=0)  # 6 test, 1 val, 5 train
    dm.setup()
    assert dm.split_unit == "well" and "keeps ≥ 5 training wells" in dm.split_why
    m = dm.store.manifest
    assert set(m.loc[dm.rows["val"], "well"]).isdisjoint(set(m.loc[dm.rows["train"], "well"]))
    assert set(m.loc[dm.rows["test"], "well"]).isdisjoint(set(m.loc[dm.rows["train"], "well"]))


def test_datamodule_items_zeroed_background_and_channel_selection(tiny_store):
    dm = tiny_data(tiny_store, crop_size=48, zero_background=True, channels=["actin"], seed=0)
    dm.setup()
    x, m, y, cid = dm.dataset("train")[0]
    assert x.shape == (1, 48, 48) and m.shape == (1, 48, 48)
    assert (x[m.expand_as(x) == 0] == 0).all()
    with pytest.raises(StoreError, match="dapi"):
        tiny_data(tiny_store, channels=["dapi"]).setup()


def test_zero_margin_hides_the_outline_but_keeps_the_cells_mask(tiny_store):
    import torch

    plain = tiny_data(tiny_store, crop_size=64, zero_background=True, seed=0).dataset("test")
    shrunk = tiny_data(tiny_store, crop_size=64, zero_background=True, zero_margin=2, seed=0).dataset("test")
    for i in range(5):
        x0, m0, *_ = plain[i]
        x2, m2, *_ = shrunk[i]
        assert torch.equal(m0, m2)  # distance term and figures: the cell's mask
        keep = torch.from_numpy(zeroing_mask(m0[0].numpy(), 2)).bool()
        assert 0 < keep.sum() < (m0[0] > 0).sum()
        assert (x2[:, ~keep] == 0).all() and torch.equal(x2[:, keep], x0[:, keep])
    tiny = np.zeros((9, 9), np.uint8)
    tiny[3:6, 3:6] = 1
    assert np.array_equal(zeroing_mask(tiny, 2), tiny)  # a cell erosion would erase stays whole
    assert zeroing_mask(tiny, 1).sum() == 1
    for bad in (-1, 1.5):
        with pytest.raises(ConfigError, match="zero_margin"):
            tiny_data(tiny_store, zero_margin=bad)


def test_zero_margin_erosion_equals_scipys_city_block_erosion():
    from scipy import ndimage as ndi

    rng = np.random.default_rng(0)
    for _trial in range(40):
        mask = (ndi.gaussian_filter(rng.random((37, 41)), 3) > 0.5).astype(np.uint8)
        mask[rng.integers(0, 37), :] = 1  # cells that touch the crop's border too
        for margin in (1, 2, 3):
            want = ndi.binary_erosion(mask > 0, iterations=margin)
            got = zeroing_mask(mask, margin)
            assert np.array_equal(got > 0, want) if want.any() else np.array_equal(got, mask)


def test_per_cell_normalisation_removes_a_well_gain(tiny_store, tmp_path):
    """The same cells imaged at 1.6× the gain (camera offset 100 kept) give the same items with
    data.normalize=cell (the embedded default), and different ones with dataset normalisation."""
    import torch

    from protocell.data.dataset import CellDataset
    from protocell.data.store import CropStoreWriter

    src = CropStore(tiny_store)
    crops = np.stack([src.crop(i) for i in range(6)])
    masks = np.stack([src.mask(i) for i in range(6)])
    bright = np.clip((crops.astype(np.float64) - 100) * 1.6 + 100, 0, 65535).round().astype(crops.dtype)
    w = CropStoreWriter(tmp_path / "gain", src.channels, crops.shape[-1], source="test")
    for k, (name, c) in enumerate((("dim", crops), ("bright", bright))):
        w.write_shard(
            name,
            c,
            masks,
            [
                {
                    "cell_id": k * 6 + i,
                    "image_id": name,
                    "well": name,
                    "condition": "Ref",
                    "label": 0,
                    "bbox_y0": 0,
                    "bbox_x0": 0,
                    "bbox_y1": 1,
                    "bbox_x1": 1,
                    "centroid_y": 0,
                    "centroid_x": 0,
                }
                for i in range(6)
            ],
        )
    w.finish()
    store = CropStore(tmp_path / "gain")
    lo, hi = np.zeros(2, np.float32), np.full(2, 1000.0, np.float32)
    for per_cell in (True, False):
        ds = CellDataset(store, np.arange(12), [0, 1], crops.shape[-1], lo, hi, per_cell=per_cell)
        for i in range(6):
            (x0, m0, *_), (x1, *_) = ds[i], ds[6 + i]
            inside = m0[0] > 0
            if per_cell:
                assert torch.allclose(x0[:, inside], x1[:, inside], atol=0.02)
                q = torch.quantile(x0[:, inside], torch.tensor([0.01, 0.998]), dim=1)
                assert torch.allclose(q, torch.tensor([[0.0], [1.0]]).expand_as(q), atol=1e-4)
            else:
                assert not torch.allclose(x0[:, inside], x1[:, inside], atol=0.02)


def test_background_confound_reaches_the_outline_and_a_2px_margin_removes_it():
    """The optics blur the Exp wells' brighter background across each cell's outline: on unaffected
    cells the nuclei channel's outermost pixel ring, relative to the ring just inside it, tells Exp
    from Ref almost perfectly (the 'well cue'). Zeroing the background leaves it; a 2 px margin hides it."""
    from scipy import ndimage as ndi

    from protocell.stats import auroc

    spec = WellSpec(field_size=256, cells_per_field=25, affected_fraction={"Ref": 0.0, "Exp": 0.0})
    steps = {0: [], 2: []}
    conds = []
    for k, cond in enumerate(["Ref", "Exp"] * 4):
        img, labels, _, cells = render_field(np.random.default_rng(k), spec, cond, 1.0)
        for c in cells:
            crop, mask, _ = crop_cell(img, labels, c["label_id"], c["centroid_y"], c["centroid_x"], 64)
            conds.append(cond == "Exp")
            for margin in steps:
                keep = zeroing_mask(mask, margin) > 0
                d = ndi.distance_transform_edt(keep)
                nuc = crop[1].astype(np.float64)
                steps[margin].append(nuc[keep & (d <= 1)].mean() - nuc[keep & (d > 1) & (d <= 3)].mean())
    y = np.array(conds, int)
    assert min(y.sum(), len(y) - y.sum()) >= 40
    assert auroc(np.array(steps[0]), y) > 0.9
    assert abs(auroc(np.array(steps[2]), y) - 0.5) < 0.15


def test_photometric_augmentation_is_seeded_keeps_background_zero_and_is_off_by_zeros(tiny_store):
    import torch

    def items(photometric, augment=True, epoch=3):
        dm = tiny_data(tiny_store, crop_size=64, zero_background=True, seed=1, photometric=photometric)
        ds = dm.dataset("train", augment=augment)
        return [ds[(i, epoch)] for i in range(6)]

    plain = items(None)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(plain, items({"gain": 0, "blur": 0, "noise": 0})))
    on = items({"gain": 0.4, "blur": 1.0, "noise": 0.03})
    again = items({"gain": 0.4, "blur": 1.0, "noise": 0.03})
    for (x0, m0, *_), (x1, m1, *_), (x2, *_) in zip(plain, on, again):
        assert torch.equal(m0, m1) and torch.equal(x1, x2)  # same geometry, same draw for (seed, epoch, cell)
        assert (x1[m1.expand_as(x1) == 0] == 0).all()  # background stays exactly zero
        assert not torch.allclose(x0, x1)  # the intensities did change
    other_epoch = items({"gain": 0.4, "blur": 1.0, "noise": 0.03}, epoch=4)
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(on, other_epoch))
    # evaluation crops (no augmentation) are never jittered
    assert all(
        torch.equal(a[0], b[0])
        for a, b in zip(items(None, augment=False), items({"gain": 0.4, "blur": 1.0, "noise": 0.03}, augment=False))
    )
    # a gain alone scales each channel of the whole crop by one factor
    x0, x1 = plain[0][0], items({"gain": 0.4})[0][0]
    inside = plain[0][1][0] > 0
    ratio = x1[:, inside] / x0[:, inside].clamp_min(1e-6)
    big = x0[:, inside] > 0.05
    for c in range(x0.shape[0]):
        r = ratio[c][big[c]]
        assert torch.allclose(r, r.median().expand_as(r), rtol=1e-4) and 0.66 < float(r.median()) < 1.5
    with pytest.raises(ValueError, match="photometric"):
        tiny_data(tiny_store, photometric={"gain": -1})


def test_missing_store_names_the_fix(tmp_path):
    with pytest.raises(StoreError, match="data.path at a folder in protocell's crop-store format"):
        CropStore(tmp_path)


def test_platt_calibration_recovers_a_known_posterior_and_metrics_use_the_call():
    import pandas as pd

    from protocell.evaluate.calibration import platt_apply, platt_fit
    from protocell.evaluate.truth import cell_metrics

    rng = np.random.default_rng(0)
    s = rng.uniform(0.05, 0.95, 20000)
    a_true, b_true = 1.7, -0.6
    p = 1 / (1 + np.exp(-(a_true * np.log(s / (1 - s)) + b_true)))
    y = rng.random(len(s)) < p
    a, b = platt_fit(s, y)
    assert abs(a - a_true) < 0.1 and abs(b - b_true) < 0.1
    assert np.allclose(platt_apply(np.array([0.5]), a, b), 1 / (1 + np.exp(-b)))
    df = pd.DataFrame(
        {
            "label": [1, 1, 0, 0],
            "pred": [1, 1, 1, 0],
            "score": [0.9, 0.6, 0.55, 0.1],
            "true_label": [1, 0, 0, 0],
            "call": [1, 0, 0, 0],
        }
    )
    m = cell_metrics(df)
    assert m["true_label_accuracy"] == 1.0 and m["true_label_accuracy_argmax"] == 0.5
    assert m["well_label_accuracy"] == 0.75 and m["well_label_accuracy_argmax"] == 0.75
    assert m["true_label_auroc"] == 1.0


def test_noisy_label_calibration_recovers_the_affected_posterior_and_the_fractions():
    """Half the Exp cells and 5 % of the Ref cells affected; scores Gaussian in logit space, so
    P(affected | s) = σ(3·logit(s) + log(π/(1 − π))) with π = 0.275 exactly."""
    from protocell.evaluate.calibration import noisy_label_apply, noisy_label_fit, platt_apply, platt_fit

    rng = np.random.default_rng(0)
    n = 20000
    exp = np.arange(n) < n // 2
    affected = rng.random(n) < np.where(exp, 0.5, 0.05)
    s = 1 / (1 + np.exp(-rng.normal(np.where(affected, 1.5, -1.5), 1.0)))
    fit = noisy_label_fit(s, exp)
    assert fit["ok"]
    assert abs(fit["a"] - 3.0) < 0.3 and abs(fit["b"] - np.log(0.275 / 0.725)) < 0.2
    assert abs(fit["lo"] - 0.5 / 1.45) < 0.03 and abs(fit["hi"] - 0.5 / 0.55) < 0.03
    assert abs(fit["rho_exp"] - 0.5) < 0.05 and abs(fit["rho_ref"] - 0.05) < 0.03
    truth = 1 / (1 + np.exp(-(3 * np.log(s / (1 - s)) + np.log(0.275 / 0.725))))
    assert np.abs(noisy_label_apply(s, fit) - truth).max() < 0.08
    # its call is the Bayes call for the affected state; Platt's 0.5 on P(Exp | s) over-calls
    acc_noisy = ((noisy_label_apply(s, fit) > 0.5) == affected).mean()
    acc_platt = ((platt_apply(s, *platt_fit(s, exp)) > 0.5) == affected).mean()
    assert acc_noisy > acc_platt + 0.03 and (platt_apply(s, *platt_fit(s, exp)) > 0.5).mean() > 0.4
    # scores that carry nothing about the wells: a degenerate fit, flagged
    assert not noisy_label_fit(rng.uniform(0.05, 0.95, 4000), rng.random(4000) < 0.5)["ok"]


def test_parallel_builders_of_one_store_do_not_collide(tmp_path):
    """Hydra multiruns start several jobs that build the same synthetic store at once."""
    from concurrent.futures import ProcessPoolExecutor

    spec = WellSpec(wells_per_condition=2, fields_per_well=2, field_size=160, cells_per_field=8, seed=11)
    with ProcessPoolExecutor(3) as pool:
        paths = list(pool.map(build_store, [tmp_path] * 3, [spec] * 3))
    assert len(set(paths)) == 1
    store = CropStore(paths[0])
    assert len(store) > 0 and store.crop(len(store) - 1).shape == (2, 64, 64)
    assert [p.name for p in tmp_path.iterdir()] == [paths[0].name]  # no partial folders left


def test_plates_without_a_dose_series_keep_their_cache_key_and_bytes(tmp_path):
    """The dose-series option must not change the plates that existed before it: same key (so the
    same cached store), no new key in store.json or spec.json, no new manifest column."""
    import json

    assert WellSpec().key() == "f01ee44b53e5"  # the schema's defaults: conf/data/synthetic.yaml's plate
    assert WellSpec(wells_per_condition=6, fields_per_well=4).key() == "daabd7049fb1"  # the generator's old default
    path = build_store(tmp_path, WellSpec(wells_per_condition=1, fields_per_well=1, field_size=128, cells_per_field=4))
    assert "dose_series" not in json.loads((path / "store.json").read_text())["synthetic"]
    assert "dose_series" not in json.loads((path / "spec.json").read_text())
    assert not {"dose", "compound", "true_fraction"} & set(CropStore(path).manifest.columns)


def test_dose_series_wells_follow_the_logistic_and_leave_the_controls_alone(tmp_path):
    from protocell.data.synthetic import DoseSeries

    base = {"wells_per_condition": 2, "fields_per_well": 2, "field_size": 160, "cells_per_field": 10, "seed": 5}
    series = {
        "doses": [0.1, 1.0, 10.0],
        "replicates": 2,
        "ec50": 1.0,
        "hill": 2.0,
        "bottom": 0.0,
        "top": 1.0,
        "stress": True,
    }
    plain, dosed = (
        CropStore(build_store(tmp_path, WellSpec(**base))),
        CropStore(build_store(tmp_path, WellSpec(**base, dose_series=series))),
    )
    # the controls are the plate without the series, cell for cell
    n = len(plain)
    assert (dosed.manifest["label"].to_numpy()[:n] >= 0).all() and (dosed.manifest["label"].to_numpy()[n:] == -1).all()
    for i in range(n):
        assert np.array_equal(plain.crop(i), dosed.crop(i)) and np.array_equal(plain.mask(i), dosed.mask(i))
    m = dosed.manifest.iloc[n:]
    wells = m.groupby("well").agg(
        dose=("dose", "first"),
        truth=("true_fraction", "first"),
        stress=("stress", "first"),
        observed=("true_label", "mean"),
        cells=("cell_id", "size"),
    )
    assert set(wells.index) == {"C01", "C02", "C03", "D01", "D02", "D03", "E01", "E02", "E03"}
    assert (m["condition"] == "").all() and set(m["compound"]) <= {"C1", ""}
    doses = wells.loc[["C01", "C02", "C03"], "dose"].astype(float).tolist()
    assert doses == [0.1, 1.0, 10.0]
    expected = [DoseSeries(**series).fraction(d) for d in doses]  # 1 / (1 + (1/d)²): 1/101, 1/2, 100/101
    assert np.allclose(wells.loc[["C01", "C02", "C03"], "truth"], expected) and np.isclose(expected[1], 0.5)
    assert wells.loc["C01", "observed"] <= 0.2 and wells.loc["C03", "observed"] >= 0.8  # cells drawn at those fractions
    assert wells.loc["E01":"E03", "stress"].tolist() == ["gain x0.5", "gain x2", "density x0.25"]
    assert wells.loc["E03", "cells"] < wells.loc["E01", "cells"]
    # a DataModule on the dose plate trains on its controls only
    dm = tiny_data(dosed.root, seed=0)
    dm.setup()
    assert set(dm.splits[n:]) == {"unlabelled"} and dm.class_names == ["Ref", "Exp"]
    assert all((dm.rows[s] < n).all() for s in ("train", "val", "test", "push"))


def test_optional_config_sections_have_their_ranges_checked():
    from pathlib import Path

    from hydra import compose, initialize_config_dir

    from protocell.config import register
    from protocell.config_check import validate

    register()
    conf = Path(__file__).resolve().parents[2] / "conf"
    for override, message in (
        ("data.synthetic.wells_per_condition=0", "wells_per_condition=0 is invalid"),
        ("data.synthetic.dose_series.ec50=-1", "dose_series.ec50=-1.0 is invalid"),
    ):
        with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
            cfg = compose("train", overrides=["plate=dose_series", override])
        with pytest.raises(ConfigError, match=message):
            validate(cfg)


def test_well_effects_default_is_the_plain_plate_and_align_orders_the_wells():
    """The well-effects knob (issue 22): its defaults keep the plain plate's cache key (and bytes: the
    gain comes from the same draw); ``align=1`` images every Exp well above every Ref well on each axis,
    with the same spread; ``align=0`` leaves them independent of the condition."""
    from protocell.data.synthetic import well_imaging

    plain = WellSpec(wells_per_condition=6, seed=4)
    assert WellSpec(wells_per_condition=6, seed=4, well_effects={"gain": 0.2, "align": 0.0}).key() == plain.key()
    assert "well_effects" not in plain.as_dict()
    base = well_imaging(plain)
    gains = [w["gain"] for w in base]
    assert all(0.8 <= g <= 1.2 for g in gains) and {w["blur"] for w in base} == {0.8}
    aligned = well_imaging(
        WellSpec(wells_per_condition=6, seed=4, well_effects={"gain": 0.2, "blur": 0.25, "noise": 0.5, "align": 1.0})
    )
    for key in ("gain", "blur", "read_noise"):
        ref = [w[key] for w in aligned if w["condition"] == "Ref"]
        exp = [w[key] for w in aligned if w["condition"] == "Exp"]
        assert max(ref) <= min(exp), key
    # the same magnitudes as the plain plate's draws: only the signs follow the condition
    assert sorted(abs(w["gain"] - 1) for w in aligned) == pytest.approx(sorted(abs(g - 1) for g in gains))
    with pytest.raises(ValueError, match="well_effects.align"):
        WellSpec(well_effects={"align": 2})


def test_the_built_in_plates_pixels_are_pinned(tmp_path):
    """The generator's bytes, pinned (digest from the generator before the several-plates option): the
    merge of that option let the plate's ``offset`` argument be shadowed by the background level, so every
    pixel of every built-in plate got 0.04 (Ref) or 0.07 (Exp) extra light — a condition cue inside
    the cells that no mask removes — while a plate's own offset was ignored; no test compared pixels."""
    import hashlib

    s = CropStore(
        build_store(
            tmp_path, WellSpec(wells_per_condition=2, fields_per_well=1, field_size=160, cells_per_field=6, seed=3)
        )
    )
    h = hashlib.sha1()
    for i in range(len(s)):
        h.update(np.ascontiguousarray(s.crop(i)).tobytes())
        h.update(np.ascontiguousarray(s.mask(i)).tobytes())
    assert (len(s), h.hexdigest()[:16]) == (18, "1b618b4775e802e8")


def test_a_plates_offset_adds_light_and_nothing_else():
    from protocell.data.synthetic_render import render_field

    spec = WellSpec(field_size=128, cells_per_field=4, seed=1)
    plain, _, _, _ = render_field(np.random.default_rng(7), spec, "Ref", 1.0)
    lit, _, _, _ = render_field(np.random.default_rng(7), spec, "Ref", 1.0, offset=0.1)
    gain = spec.photons * 0.1  # 0.1 of the brightest structure, in counts
    assert float(lit.mean() - plain.mean()) == pytest.approx(gain, rel=0.05)
