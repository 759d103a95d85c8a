"""The real CC0 CellProfiler 'ExampleHuman' field (one file per channel), read-only."""

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import prepare_config, require_shared_data

from protocell.data.store import CropStore
from protocell.prepare.pipeline import prepare

ROOT = Path(__file__).resolve().parents[2]
# the shared data folder beside the repository (<repo>/../shared/data); a worktree beside it finds it too
DATA = (ROOT / ".." / "shared" / "data" / "cellprofiler_example_human").resolve()
PATTERN = r"(?P<plate>AS_\d+_\d+)_(?P<well>[A-P]\d\d)f(?P<field>\d\d)(?P<channel>d\d)\.tif"


@pytest.fixture(autouse=True)
def real_data():
    require_shared_data(DATA, "the CC0 example field")


def test_cellprofiler_field_gives_sane_crops_and_masks(tmp_path):
    cfg = prepare_config(
        f"input={DATA}",
        f"pattern='{PATTERN}'",
        "channels=cellprofiler_human",
        f"output={tmp_path / 'store'}",
        "tile.size=256",
        "augment.copies=0",
        "summary.overlays=1",
    )
    store = CropStore(prepare(cfg))
    m = store.manifest
    summary = json.loads((store.root / "prepare_summary.json").read_text())
    print(f"CC0 field: {len(m)} cells, dropped {summary['per_image'][0]['dropped']}")
    # the field holds roughly 300 cells (about 40 of them on the border); watershed keeps 262
    assert 200 <= len(m) <= 330
    assert store.channels == ["cell", "dna", "extra"]
    assert m["image_id"].unique().tolist() == ["AS_09125_050116030001_D03_f00"] and (m["well"] == "D03").all()
    areas, aligned = [], []
    # thresholds in normalised units; crops are stored as uint16 (normalised × 65535), denoised
    cell_t, dna_t = (summary["per_image"][0]["thresholds"][k] for k in ("cell", "nuclei"))
    for i in range(0, len(m), 3):
        crop, mask = store[i]
        assert mask[31:34, 31:34].any()  # centred on its own cell
        assert crop[1][mask > 0].max() > crop[1][mask == 0].mean()  # with a nucleus inside
        # crop and mask are aligned: the masked pixels are foreground (cell body above its threshold,
        # or nucleus), those of the segmentation, not of a shifted window
        fg = (crop[0] > cell_t * 65535) | (crop[1] > dna_t * 65535)
        aligned.append(fg[mask > 0].mean())
        areas.append(mask.sum())
    assert np.median(aligned) > 0.95
    assert 80 <= np.median(areas) <= 1500
    assert (store.root / summary["overlays"][0]).stat().st_size > 10_000
