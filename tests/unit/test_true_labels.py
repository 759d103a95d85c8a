import json
import shutil

import numpy as np
import pandas as pd
import pytest
from conftest import tiny_data

from protocell.errors import ConfigError


def test_truth_labels_the_cells_the_network_learns_from_and_leaves_the_test_cells_their_wells(tiny_store):
    dm = tiny_data(tiny_store, labels="truth")
    dm.setup()
    m = dm.store.manifest
    for split in ("train", "val", "push"):
        rows = dm.rows[split]
        assert np.array_equal(dm.dataset(split).labels, m["true_label"].to_numpy()[rows]), split
    test = dm.rows["test"]
    assert np.array_equal(dm.dataset("test").labels, m["label"].to_numpy()[test])
    # the two differ: an exposed well's unaffected cells (and a reference well's affected ones)
    train = dm.rows["train"]
    assert (m["true_label"].to_numpy()[train] != m["label"].to_numpy()[train]).any()
    # the default is the wells' labels
    well = tiny_data(tiny_store)
    well.setup()
    assert np.array_equal(well.dataset("train").labels, m["label"].to_numpy()[well.rows["train"]])


def test_truth_labels_refuse_bags(tiny_store):
    with pytest.raises(ConfigError, match=r"data.bag_size=4 is invalid: 1 with data.labels=truth"):
        tiny_data(tiny_store, labels="truth", bag_size=4)


def test_truth_labels_refuse_a_store_that_does_not_know_them(tiny_store, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(tiny_store, store)
    m = pd.read_csv(store / "manifest.csv")
    m["true_label"] = -1  # what a prepared plate's manifest holds: nobody knows which cell changed
    m.to_csv(store / "manifest.csv", index=False)
    info = json.loads((store / "store.json").read_text())
    info.pop("manifest_sha1", None)  # an edit on purpose, as the store's own message says
    (store / "store.json").write_text(json.dumps(info))
    with pytest.raises(ConfigError, match=r"data.labels=truth .* does not know it .* Set data.labels=well"):
        tiny_data(store, labels="truth").setup()
