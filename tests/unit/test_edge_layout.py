"""``edge_layout`` (protocell/diagnostics/layout.py): a plate whose outer ring holds one condition's wells and
is imaged differently — the built-in two-plate screen's plate 2 — fires; the same layout without a ring
effect, and a ring effect under a balanced layout, do not."""

import numpy as np
import pandas as pd
import pytest

from protocell.diagnostics.layout import edge_layout, ring_brightness, wells_with_brightness


def plate(ring_log2: float, ref_on_ring: bool, seed: int = 0) -> pd.DataFrame:
    """5 × 9 wells: Ref on row A (the ring) or spread, Exp on row B, a compound's 9 doses × 3 replicates on
    rows C–E; every ring well's brightness shifted by ``ring_log2``, the doses' own brightness rising."""
    rng = np.random.default_rng(seed)
    rows = []
    for r in range(5):
        for c in range(1, 10):
            if r < 2 and c == 9:
                continue
            if r < 2:
                cond = ("Ref" if r == 0 else "Exp") if ref_on_ring else ("Ref" if c % 2 else "Exp")
                treatment = f"{cond}||"
            else:
                cond, treatment = "", f"|C1|{c}"
            ring = r in (0, 4) or c in (1, 9)
            value = 8.0 + 0.05 * (c if r >= 2 else 0) + rng.normal(0, 0.03) + (ring_log2 if ring else 0.0)
            rows.append(
                {
                    "plate": "p",
                    "well": f"{'ABCDE'[r]}{c:02d}",
                    "row": r,
                    "column": c,
                    "n_cells": 50,
                    "condition": cond,
                    "treatment": treatment,
                    "log2 intensity": value,
                }
            )
    return pd.DataFrame(rows)


def test_a_ring_imaged_differently_under_one_conditions_wells_fires_and_names_the_fix():
    out = edge_layout(plate(-0.2, ref_on_ring=True), ["Ref", "Exp"])
    assert out["fires"] and out["value"] < 0.01 and out["ring_p"] < 0.01
    assert "Ref wells 8 of 8 on the outer ring, Exp 1 of 8" in out["why"] and "inside the ring" in out["why"]


@pytest.mark.parametrize("ring_log2, ref_on_ring", [(0.0, True), (-0.2, False)])
def test_no_ring_effect_or_a_balanced_layout_does_not_fire(ring_log2, ref_on_ring):
    out = edge_layout(plate(ring_log2, ref_on_ring), ["Ref", "Exp"])
    assert not out["fires"], out["why"]


def test_ring_brightness_reads_treatments_on_both_sides_only():
    w = plate(-0.2, ref_on_ring=True)
    w["ring"] = w["row"].isin([0, 4]) | (w["column"] == 1) | (w["column"] == w["column"].max())
    p, diff = ring_brightness(w)
    assert p < 0.01 and diff == pytest.approx(-0.2, abs=0.05)
    w.loc[w["condition"] == "Ref", "log2 intensity"] -= 5  # what a treatment wholly on the ring does: not read
    assert ring_brightness(w)[1] == pytest.approx(diff)


def test_wells_with_brightness_reads_the_stored_brightness_per_well(tiny_store):
    from protocell.data.store import CropStore

    store = CropStore(tiny_store)
    wells = wells_with_brightness(store)
    m = store.manifest[store.manifest["aug_of"] < 0]
    assert len(wells) == m.groupby(["plate", "well"]).ngroups
    first = wells.iloc[0]
    rows = m.index[(m["plate"].astype(str) == first["plate"]) & (m["well"].astype(str) == first["well"])]
    means = [store.crop(i)[:, store.mask(i) > 0].mean() for i in rows]
    assert first["log2 intensity"] == pytest.approx(np.log2(np.median(means)))  # ≤ 40 cells: every one read
    assert set(wells["condition"]) <= {"Ref", "Exp", ""}


def test_run_diagnostics_runs_the_layout_check_on_the_runs_own_store(tiny_store):
    """Wired into every run with its DataModule: the built-in plate's two rows are all ring wells, so the
    check says it could not test (and does not fire)."""
    from types import SimpleNamespace

    from protocell.data.store import CropStore
    from protocell.diagnostics import run_diagnostics

    store = CropStore(tiny_store)
    cells = pd.DataFrame({"well": ["A01"], "condition": ["Ref"], "label": [0], "score": [0.5], "split": ["test"]})
    out = run_diagnostics(cells, None, set(), ["Ref", "Exp"], {"available": False}, dm=SimpleNamespace(store=store))
    assert not out["edge_layout"]["fires"] and "not tested" in out["edge_layout"]["why"]


def test_a_plate_map_score_would_refuse_leaves_the_layout_untested_and_names_the_well(tiny_store):
    """The diagnostics tabulate wells as score does (``protocell.plate.plate_wells``); a store whose map it
    refuses (a dose that is no number) does not crash the end of a run: the layout check says why it could
    not test, naming the well."""
    from types import SimpleNamespace

    from protocell.data.store import CropStore
    from protocell.diagnostics import run_diagnostics

    store = CropStore(tiny_store)
    first = store.manifest.index[0]
    store.manifest["dose"] = ""
    store.manifest.loc[store.manifest["well"] == store.manifest.at[first, "well"], "dose"] = "high"
    cells = pd.DataFrame({"well": ["A01"], "condition": ["Ref"], "label": [0], "score": [0.5], "split": ["test"]})
    out = run_diagnostics(cells, None, set(), ["Ref", "Exp"], {"available": False}, dm=SimpleNamespace(store=store))
    why = out["edge_layout"]["why"]
    assert not out["edge_layout"]["fires"] and why.startswith("not tested:")
    assert f"/{store.manifest.at[first, 'well']} ('high')" in why and "dose must be a number" in why
