"""How a store was normalised decides the training normalisation; brightness alone must not separate the conditions unseen."""

import numpy as np

from protocell.data.normalization import auto_normalization, brightness_warnings, intensity_separation, separation_auroc


def test_auto_normalization_follows_store_json():
    assert (
        auto_normalization({"normalization": {"method": "per_image_percentiles", "low": 1, "high": 99.8}})[0]
        == "dataset"
    )
    assert auto_normalization({"source": "prepare"})[0] == "dataset"  # a prepare store from before the record
    for info in ({"normalization": {"method": "as_given"}}, {"normalization": {"method": "raw"}}, {}):
        choice, why = auto_normalization(info)
        assert choice == "cell" and "data.normalize=auto → cell" in why


def test_separation_auroc_by_hand_either_way_round():
    # positives 3, 4 vs negatives 1, 2, 3.5: pairs ordered 2 + 3 = 5 of 6 (3 > 1, 2; 4 > all)
    assert np.isclose(separation_auroc(np.array([3, 4, 1, 2, 3.5]), np.array([1, 1, 0, 0, 0])), 5 / 6)
    assert np.isclose(separation_auroc(-np.array([3, 4, 1, 2, 3.5]), np.array([1, 1, 0, 0, 0])), 5 / 6)
    assert np.isnan(separation_auroc(np.array([1.0, 2.0]), np.array([1, 1])))


def test_a_brighter_condition_is_flagged(tiny_store):
    from protocell.data.store import CropStore

    class Brighter:  # the tiny wells with every Exp cell's actin doubled: a gain difference
        def __init__(self, store):
            self.store, self.manifest, self.channels = store, store.manifest, store.channels

        def crop(self, i):
            x = self.store.crop(i).astype(np.float32)
            return x * np.array([2.0 if self.manifest["label"].iloc[i] == 1 else 1.0, 1.0])[:, None, None]

        def mask(self, i):
            return self.store.mask(i)

    store = CropStore(tiny_store)
    plain = intensity_separation(store, np.arange(len(store)), [0, 1], 1)
    bright = intensity_separation(Brighter(store), np.arange(len(store)), [0, 1], 1)
    assert plain["actin"] < 0.9 and bright["actin"] > 0.9 and np.isclose(bright["nuclei"], plain["nuclei"])
    warnings = brightness_warnings(bright, "dataset")
    assert len(warnings) == 1 and "mean actin intensity" in warnings[0] and "read brightness" in warnings[0]
