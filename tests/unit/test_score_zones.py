"""score.match_imaging (protocell.score.zones): a plate's zones and the virtual controls' map."""

from __future__ import annotations

import numpy as np
import pandas as pd

from protocell.score.zones import matched, zone_names


def _wells(plate: str, rows: int, cols: int) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"plate": plate, "well": f"{chr(65 + r)}{c:02d}", "row": r, "column": c}
            for r in range(rows)
            for c in range(1, cols + 1)
        ]
    )


def test_a_plate_with_positions_has_a_ring_and_inner_wells_and_one_without_is_one_zone():
    grid = _wells("p1", 4, 6)
    loose = pd.DataFrame({"plate": "p2", "well": ["x", "y"], "row": [None, None], "column": [None, None]})
    thin = _wells("p3", 2, 3)  # every well on the ring: one zone
    zone = zone_names(pd.concat([grid, loose, thin], ignore_index=True))
    z1 = zone[:24].to_numpy().reshape(4, 6)
    assert (z1[1:3, 1:5] == "p1 inner").all()
    assert (z1[0] == "p1 ring").all() and (z1[3] == "p1 ring").all() and (z1[:, 0] == "p1 ring").all()
    assert (z1[:, 5] == "p1 ring").all()
    assert (zone[24:26] == "p2").all() and (zone[26:] == "p3").all()


def test_the_virtual_controls_map_each_mapped_zone_onto_the_runs_levels():
    zones = {
        "p ring": {"mapped": True, "levels_as_run_imaged": [0.05, 0.5], "levels_at_zone_imaging": [0.03, 0.38]},
        "p inner": {"mapped": False, "levels_as_run_imaged": [0.05, 0.5], "levels_at_zone_imaging": [0.0, 0.02]},
    }
    values = pd.Series([0.03, 0.38, 0.6, 0.2, 0.3])
    zone = pd.Series(["p ring", "p ring", "p ring", "p inner", "q"])
    out = matched(values, zone, zones)
    assert np.allclose(out[:2], [0.05, 0.5])  # the zone's controls read as the run's
    assert np.isclose(out[2], 0.05 + (0.6 - 0.03) * 0.45 / 0.35)  # affine beyond them
    assert np.allclose(out[3:], values[3:])  # a zone not mapped, or without an entry, keeps its reading
