"""Imaging levelling (``data.level_imaging``, protocell.data.levelling): each well's optics blur read from
its cells against the generator's truth, every well brought to the blurriest and noisiest one, and the
DataModule's wiring (seeded noise, refusals)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from protocell.data import levelling
from protocell.data.store import CropStore
from protocell.data.synthetic import WellSpec, build_store, well_imaging
from protocell.errors import ConfigError
from tests.conftest import tiny_data


def _high_band_power(store, rows, channels, plan=None):
    """Mean power above 0.42 cycles/px and in 0.2–0.32 of the cells as the DataModule reads them."""
    from protocell.data.dataset import CellDataset

    ds = CellDataset(store, rows, channels, 64, np.zeros(2), np.ones(2), per_cell=True, levelling=plan)
    edges = np.linspace(0, 0.5, 26)
    mid = (edges[:-1] + edges[1:]) / 2
    power = [
        levelling.radial_power(ds[i][0].numpy().astype(np.float64), ds[i][1][0].numpy(), edges) for i in range(len(ds))
    ]
    p = np.mean([q[0] for q in power if q is not None], axis=0)
    return p[:, mid > 0.42].mean(1), p[:, (mid > 0.2) & (mid < 0.32)].mean(1)


def test_the_blur_read_from_the_cells_follows_the_optics_and_levelling_removes_it(blurry):
    path, spec = blurry
    store = CropStore(path)
    m = store.manifest
    rows = np.flatnonzero(m["aug_of"].to_numpy() < 0)
    plan = levelling.estimate(store, rows, [0, 1], seed=0)
    truth = {w["well"]: w["blur"] ** 2 for w in well_imaging(spec)}
    keys = sorted(plan.offsets)
    t = np.array([truth[k.split("/")[1]] for k in keys])
    e = np.array([plan.offsets[k].mean() for k in keys])
    t, e = t - t.mean(), e - e.mean()
    assert np.corrcoef(t, e)[0, 1] > 0.95
    assert 0.75 < np.dot(t, e) / np.dot(t, t) < 1.25  # σ², not some other measure of sharpness
    # the blurriest well gets (almost) nothing, the sharpest the most
    blurriest, sharpest = keys[int(np.argmax(t))], keys[int(np.argmin(t))]
    assert plan.blur[blurriest].max() < 0.2 and plan.blur[sharpest].min() > 0.5
    assert set(plan.as_dict()["wells"]) == set(keys)

    # as read by the network: before, the exposed (blurrier) wells' cells hold far less fine structure;
    # levelled, the conditions agree at the finest scales and in the band the optics shape
    ref, exp = (rows[(m["condition"].to_numpy()[rows] == c)][::3] for c in ("Ref", "Exp"))
    (rf, rm), (ef, em) = _high_band_power(store, ref, [0, 1]), _high_band_power(store, exp, [0, 1])
    assert (np.log(em / rm) < -0.2).all()
    (rf, rm), (ef, em) = _high_band_power(store, ref, [0, 1], plan), _high_band_power(store, exp, [0, 1], plan)
    assert (np.abs(np.log(em / rm)) < 0.12).all() and (np.abs(np.log(ef / rf)) < 0.12).all()


def test_a_plate_imaged_alike_is_barely_touched(tiny_store):
    store = CropStore(tiny_store)
    rows = np.flatnonzero(store.manifest["aug_of"].to_numpy() < 0)
    plan = levelling.estimate(store, rows, [0, 1], seed=0)
    assert max(np.median(v) for v in plan.blur.values()) < 0.35  # the estimate's own scatter, not optics


def test_the_datamodule_levels_every_split_with_seeded_noise_and_refuses_what_it_cannot(blurry, tiny_store):
    path, _ = blurry
    dm = tiny_data(path, normalize="cell", level_imaging=True, zero_background=True, seed=0)
    dm.setup()
    assert dm.levelling is not None and set(dm.levelling.blur) == {
        f"{p}/{w}" for p, w in dm.store.manifest[["plate", "well"]].astype(str).itertuples(index=False)
    }
    test = dm.dataset("test")
    a, b = test[0][0], test[0][0]
    assert torch.equal(a, b)  # evaluation: the noise is the cell's own, every time
    plain = tiny_data(path, normalize="cell", level_imaging=False, zero_background=True, seed=0)
    plain.setup()
    assert not torch.equal(plain.dataset("test")[0][0], a)
    train = dm.dataset("train", augment=True)
    assert not torch.equal(train[(0, 0)][0], train[(0, 1)][0])  # a new draw each epoch
    x, mask, _, _ = train[(0, 0)]
    assert (x[mask.expand_as(x) == 0] == 0).all()  # the background stays zeroed
    # another store: the plan does not cover its wells, and score is told so
    with pytest.raises(ConfigError, match="level_imaging"):
        dm.dataset_of(CropStore(tiny_store), [0])
    # levelling reads cells normalised one by one
    with pytest.raises(ConfigError, match="data.level_imaging"):
        tiny_data(path, normalize="dataset", level_imaging=True).setup()


def test_a_well_whose_cells_are_too_small_to_read_is_refused_with_the_fix(tiny_store, monkeypatch):
    from protocell.data.store import StoreError

    monkeypatch.setattr(levelling, "radial_power", lambda *a: None)  # every cell smaller than the window
    store = CropStore(tiny_store)
    rows = np.flatnonzero(store.manifest["aug_of"].to_numpy() < 0)
    with pytest.raises(StoreError, match=r"data.level_imaging: no cell of well .* data.level_imaging=false"):
        levelling.estimate(store, rows, [0, 1], seed=0, cells_per_well=3)


def test_score_levels_each_plate_to_its_own_noisiest_well(tmp_path):
    """score.level_imaging (levelling.estimate_plates): plate2 imaged at half the gain with a dimmer outer ring
    (half again) — its wells' noise, as the network reads cells, spread 1.4–1.6× before; levelled within 1.25×,
    at the ring's level. plate1 (no ring) is brought to its own noisiest well, not to plate2's."""
    from protocell.data.store import well_key

    dose = {"compound": "C1", "doses": [0, 1.0], "replicates": 4, "ec50": 0.5, "hill": 1.0}
    spec = WellSpec(
        wells_per_condition=4,
        fields_per_well=1,
        field_size=256,
        cells_per_field=30,
        seed=3,
        dose_series={**dose, "bottom": 0.05, "top": 0.7, "stress": False},
        plates=[{"name": "plate1"}, {"name": "plate2", "gain": 0.5, "offset": 0.05, "edge": 0.5}],
    )
    store = CropStore(build_store(tmp_path, spec))
    rows = np.flatnonzero(store.manifest["aug_of"].to_numpy() < 0)
    plan = levelling.estimate_plates(store, rows, [0, 1], seed=0)
    keys = well_key(store.manifest).to_numpy()[rows]
    assert set(plan.blur) == set(keys)
    noise = {}
    for k in sorted(set(keys)):
        mine = rows[keys == k]
        before = levelling._noise_profile(store, mine, [0, 1], np.zeros(2), None)[0]
        after = levelling._noise_profile(store, mine, [0, 1], *plan.for_well(k))[0]
        noise[k] = np.sqrt(np.median(before, 1)), np.sqrt(np.median(after, 1))
    spread = {}
    for plate in ("plate1", "plate2"):
        b, a = (np.array([v[i] for k, v in noise.items() if k.startswith(plate)]) for i in (0, 1))
        spread[plate] = b.max(0) / b.min(0), a.max(0) / a.min(0), a.mean(0)
    assert (spread["plate2"][0] > 1.35).all() and (spread["plate2"][1] < 1.25).all(), spread
    assert (spread["plate1"][2] < 0.85 * spread["plate2"][2]).all(), spread


def test_camera_match_gives_one_set_of_cells_the_optics_and_noise_of_another(blurry):
    """score.match_imaging (levelling.camera_match): the reference wells' cells (optics σ 0.6–0.8 px) given the
    exposed wells' camera (0.8–1.0 px) get the σ² the optics differ by, and then read as noisy as the exposed
    wells' cells at every intensity; the other way round nothing can be added: the blur the target lacks is
    said (``sharper_px2``), none is added."""
    path, spec = blurry
    store = CropStore(path)
    m = store.manifest
    rows = np.flatnonzero(m["aug_of"].to_numpy() < 0)
    truth = {w["well"]: w["blur"] ** 2 for w in well_imaging(spec)}
    ref = rows[(m["condition"].to_numpy()[rows] == "Ref")][::2]
    exp = rows[(m["condition"].to_numpy()[rows] == "Exp")][::2]
    gap = np.mean([truth[w] for w in m["well"].to_numpy()[exp]]) - np.mean(
        [truth[w] for w in m["well"].to_numpy()[ref]]
    )
    got = levelling.camera_match((store, ref, [0, 1]), [(store, exp[::2], [0, 1]), (store, exp[1::2], [0, 1])])
    assert np.all(np.abs(got["blur"] ** 2 - gap) < 0.35 * gap), (got["blur"] ** 2, gap)
    assert np.all(got["sharper_px2"] == 0)
    want = levelling._noise_profile(store, exp, [0, 1], np.zeros(2), None)
    made = levelling._noise_profile(store, ref, [0, 1], got["blur"], got["add_var"])
    before = levelling._noise_profile(store, ref, [0, 1], np.zeros(2), None)
    ok = (want[1] >= 200) & (made[1] >= 200)
    ratio = np.sqrt(made[0][ok] / want[0][ok])
    assert np.all(np.abs(ratio - 1) < 0.15), ratio  # as noisy as the target at every intensity
    assert np.abs(np.sqrt(before[0][ok] / want[0][ok]) - 1).max() > np.abs(ratio - 1).max()  # and not before
    back = levelling.camera_match((store, exp, [0, 1]), [(store, ref, [0, 1])])
    assert np.all(back["blur"] < 0.2) and np.all(np.abs(back["sharper_px2"] - gap) < 0.35 * gap)


def test_a_cell_with_a_non_finite_pixel_carries_no_imaging(blurry):
    """A zone holding a cell with a NaN pixel (score refuses it by name after the pass) reads the camera of its
    other cells, not NaN (before: numpy warnings and a NaN camera for every cell of the zone)."""
    store = CropStore(blurry[0])
    rows = np.flatnonzero(store.manifest["aug_of"].to_numpy() < 0)
    ref, exp = rows[: len(rows) // 2 : 2], rows[len(rows) // 2 :: 2]

    class Damaged:  # the same store, its first exposed cell with one NaN pixel
        def mask(self, r):
            return store.mask(r)

        def crop(self, r):
            crop = store.crop(r).astype(np.float32)
            if r == exp[0]:
                crop[0, 10, 10] = np.nan
            return crop

    got = levelling.camera_match((store, ref, [0, 1]), [(Damaged(), exp, [0, 1])])
    want = levelling.camera_match((store, ref, [0, 1]), [(store, exp[1:], [0, 1])])
    assert np.isfinite(got["add_var"]).all() and np.isfinite(got["blur"]).all()
    assert np.allclose(got["blur"], want["blur"]) and np.allclose(got["add_var"], want["add_var"])
