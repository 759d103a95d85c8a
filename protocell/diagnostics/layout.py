"""``edge_layout``: the plate's outer ring lines up with the condition among the control wells, and the
ring is imaged differently.

Wells on a plate's outer ring dry, warm and are imaged differently from the inner wells (edge effects).
When one condition's control wells sit on the ring and the other's inside it, an edge effect *is* a
difference between the conditions, and a network trained on those wells can learn it: on the built-in
two-plate screen (reference controls 8 of 8 on row A, exposed 1 of 8 on the ring; plate 2's ring imaged
at 0.7 of its gain) a run trained on both plates said ``ok`` with the exposed fraction 0.61 for 0.50.
No check on the cells sees it — the reference wells agree (all on the ring), and the imaging
interventions perturb noise and focus, not a plate position. The layout and the plate's own brightness
do: per plate, a Fisher exact test of ring membership against the condition over its labelled wells,
and a Mann–Whitney test of the ring's against the inner wells' stored brightness, each well centred on its
treatment's median over the treatments with wells on both sides (so what a treatment does to the cells'
brightness is not read as a ring effect; ``ring_brightness``).
Fires when both hold on one plate (layout p < ``LAYOUT_P``, ring brightness p < ``RING_P``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from protocell.diagnostics.base import check

LAYOUT_P = 0.01
RING_P = 0.01  # as score's trend check (protocell.score.plates.TREND_P)
CELLS_PER_WELL = 40  # cells read per well for its brightness (the median of their mean stored pixel in the mask)


def well_brightness(store, rows: np.ndarray, rng: np.random.Generator) -> float:
    """log2 of the median over up to ``CELLS_PER_WELL`` cells of their mean stored pixel inside the mask."""
    pick = rows if len(rows) <= CELLS_PER_WELL else rng.choice(rows, CELLS_PER_WELL, replace=False)
    means = []
    for i in pick:
        crop, mask = store[int(i)]
        inside = np.asarray(mask) > 0
        if inside.any():
            means.append(float(np.asarray(crop, np.float64)[:, inside].mean()))
    positive = [m for m in means if m > 0]
    return float(np.log2(np.median(positive))) if positive else float("nan")


def wells_with_brightness(store, seed: int = 0) -> pd.DataFrame:
    """One row per plate position of the store's original cells (``protocell.data.plate_map.plate_wells``, the plate
    map validated as score reads it): plate, well, row, column, n_cells, condition ('' for wells whose
    cells carry no label), treatment (named from that condition, compound and dose; a well with none is
    its own) and ``log2 intensity``."""
    from protocell.data.plate_map import plate_wells
    from protocell.plate import treatment_name

    m = store.manifest[store.manifest["aug_of"].to_numpy() < 0]
    members = m.groupby(["plate", "well"], sort=True).indices
    rng = np.random.default_rng(seed)
    out = []
    for w in plate_wells(store, "", "").itertuples(index=False):
        if w.row is None:
            continue
        rows = m.index.to_numpy()[members[(w.plate, w.well)]]
        labelled = (store.manifest.loc[rows, "label"].to_numpy() >= 0).all()
        condition = str(w.condition) if labelled else ""
        out.append(
            {
                "plate": str(w.plate),
                "well": str(w.well),
                "row": int(w.row),
                "column": int(w.column),
                "n_cells": len(rows),
                "condition": condition,
                "treatment": treatment_name(condition, w.compound, float(w.dose)) or f"well {w.plate}/{w.well}",
                "log2 intensity": well_brightness(store, rows, rng),
            }
        )
    return pd.DataFrame(out)


def ring_brightness(w: pd.DataFrame) -> tuple[float, float]:
    """(Mann–Whitney p, median difference) of ring against inner wells' log2 brightness, each well centred
    on its treatment's median, over the treatments with wells on both sides of the ring only: a treatment
    wholly on the ring (or inside it) cannot tell a ring effect from what it does to the cells."""
    from scipy.stats import mannwhitneyu

    v = w[w["log2 intensity"].notna()]
    both = v.groupby("treatment")["ring"].transform(lambda r: r.any() and not r.all()).astype(bool)
    v = v[both]
    resid = v["log2 intensity"] - v.groupby("treatment")["log2 intensity"].transform("median")
    out, inner = resid[v["ring"]], resid[~v["ring"]]
    if len(out) < 2 or len(inner) < 2 or np.ptp(resid) == 0:
        return float("nan"), float("nan")
    return float(mannwhitneyu(out, inner).pvalue), float(out.median() - inner.median())


def edge_layout(wells: pd.DataFrame, conditions: list[str]) -> dict:
    """The check on ``wells_with_brightness``' table (``conditions``: reference first, exposed last)."""
    from scipy.stats import fisher_exact

    from protocell.plate import outer_ring

    worst: dict | None = None
    for plate, w in wells.groupby("plate", sort=True):
        ring = outer_ring(w)
        lab = w["condition"].isin(conditions).to_numpy()
        if not lab.any() or ring.all() or not ring.any():
            continue
        ref = (w["condition"] == conditions[0]).to_numpy()
        exp = (w["condition"] == conditions[-1]).to_numpy()
        table = [
            [int((ref & ring).sum()), int((ref & ~ring).sum())],
            [int((exp & ring).sum()), int((exp & ~ring).sum())],
        ]
        if min(sum(table[0]), sum(table[1])) < 2:
            continue
        p_layout = float(fisher_exact(table).pvalue)
        p_ring, diff = ring_brightness(w.assign(ring=ring))
        row = {
            "plate": plate,
            "layout_p": p_layout,
            "ring_p": p_ring,
            "ring_log2_difference": diff,
            "reference_on_ring": f"{table[0][0]} of {sum(table[0])}",
            "exposed_on_ring": f"{table[1][0]} of {sum(table[1])}",
            "fires": bool(p_layout < LAYOUT_P and np.isfinite(p_ring) and p_ring < RING_P),
        }
        if worst is None or (row["fires"], -row["layout_p"]) > (worst["fires"], -worst["layout_p"]):
            worst = row
    if worst is None:
        return check(
            None,
            LAYOUT_P,
            False,
            "not tested: no plate holds labelled wells both on its outer ring and inside it",
            plates=[],
        )
    why = (
        f"{worst['plate']}: {conditions[0]} wells {worst['reference_on_ring']} on the outer ring, {conditions[-1]} "
        f"{worst['exposed_on_ring']} (Fisher p = {worst['layout_p']:.2g}); the ring's brightness against the inner "
        f"wells {worst['ring_log2_difference']:+.2f} log2 (Mann–Whitney p = {worst['ring_p']:.2g})"
    )
    if worst["fires"]:
        why += (
            ": an edge effect lines up with the condition, and the network can learn it as the change. Fix: "
            "controls of both conditions on and inside the ring (or the ring left empty), or train on plates "
            "without the edge effect"
        )
    return check(worst["layout_p"], LAYOUT_P, worst["fires"], why, **{k: worst[k] for k in ("plate", "ring_p")})
