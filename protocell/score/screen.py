"""The screen's statistics over every scored plate (``plates`` and ``hits`` put together): control QC
per plate, the per-plate normalisation, the plate-effect and trend checks, the B-score, the hits.

Control wells are read over the cells the run did **not** train on (a trained-on cell scores
optimistically): on the run's own store a control well's value is that of its held-out cells, and a
well whose every cell was trained on (``data.split_by=well``) is left out of the plate statistics.
Wells without a condition are never trained on.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from protocell.data.store import cell_feature_columns
from protocell.plate import outer_ring
from protocell.score.export import feature_name
from protocell.score.hits import hit_table
from protocell.score.plates import b_scores, normalise, on_grid, plate_effects, plate_qc, trends
from protocell.score.tables import well_key, well_readouts
from protocell.score.zones import matched, zone_name

# the network's readouts in the QC table (names as in well_table.csv) → the control wells' column
NETWORK = {
    "Protocell_AffectedFraction": "untrained_fraction",
    "Protocell_MeanPAffected": "mean_p_affected",
    "Protocell_ScoreShift": "score_shift",
}


def control_wells(cells: pd.DataFrame, wells: pd.DataFrame, reference_scores) -> pd.DataFrame:
    """One row per control well (reference or exposed) with cells the run did not train on: plate, well,
    role, n_cells and every readout of ``tables.well_readouts`` over those cells (the fraction named
    ``untrained_fraction``)."""
    untrained = cells[(cells["run_split"] != "train").to_numpy()]
    r = well_readouts(untrained, reference_scores).rename(columns={"affected_fraction": "untrained_fraction"})
    ctrl = wells.loc[wells["role"].isin(["reference", "exposed"]), ["plate", "well", "role"]].copy()
    key = well_key(ctrl)
    for col in r.columns:
        ctrl[col] = key.map(r[col]).to_numpy()
    return ctrl[ctrl["n_cells"].fillna(0) > 0].reset_index(drop=True)


def qc_readouts(cells: pd.DataFrame, mixture: bool = False) -> dict[str, str]:
    """The readouts the QC table judges: the network's, then the classic per-well means (``mixture``: the
    cell call is the fraction's own posterior, so the mean P(affected) is the fraction and not judged twice)."""
    network = {k: v for k, v in NETWORK.items() if not (mixture and v == "mean_p_affected")}
    return {**network, **{feature_name(c): c for c in ["intensity"] + cell_feature_columns(cells.columns)}}


def screen(
    cells: pd.DataFrame,
    wells: pd.DataFrame,
    reference_scores,
    fdr: float = 0.05,
    bscore: bool = False,
    mixture: bool = False,
    zones: dict | None = None,
) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """(``wells`` with percent_of_control, robust_z, normalised_fraction and, with ``bscore``, b_score;
    the tables: ``qc`` (plate × readout), ``plate_effects`` (several plates), ``trends`` (plate ×
    measure), ``hits`` (treatment)). ``zones`` (``score.match_imaging``; ``wells`` then has ``zone``): each
    plate is normalised on its wells' ``imaging_matched_fraction`` (``protocell.score.zones.matched``)."""
    ctrl = control_wells(cells, wells, reference_scores)
    plates = sorted(wells["plate"].astype(str).unique())
    qc = plate_qc(ctrl, qc_readouts(cells, mixture), plates)
    own = cells.loc[cells["run_split"].astype(str) != "", "plate"].astype(str).unique()  # the run's own store
    value = "untrained_fraction"
    if zones:
        value = "imaging_matched_fraction"
        wells = wells.assign(**{value: matched(wells["untrained_fraction"], wells["zone"], zones)})
        zone_of = dict(zip(well_key(wells), wells["zone"]))
        ctrl = ctrl.assign(**{value: matched(ctrl["untrained_fraction"], well_key(ctrl).map(zone_of), zones)})
    wells = normalise(wells, ctrl, value, anchors=own)
    wells, reads = plates_read_differently(wells, ctrl, own)
    if bscore:
        wells["b_score"] = b_scores(wells, "untrained_fraction")
    effects = plate_effects(ctrl, "untrained_fraction") if len(plates) > 1 else pd.DataFrame()
    log_intensity = np.log2(wells["intensity"].clip(lower=1e-12))
    trend = trends(
        wells.assign(log2_intensity=log_intensity),
        {"affected fraction": ("untrained_fraction", True), "log2 intensity": ("log2_intensity", False)},
    )
    wells = ring_flags(wells, trend, zones=zones)
    hits = hit_table(wells, "normalised_fraction", "untrained_fraction", fdr)
    return wells, {"qc": qc, "plate_effects": effects, "trends": trend, "hits": hits, "plates_read_differently": reads}


def plates_read_differently(
    wells: pd.DataFrame, ctrl: pd.DataFrame, own, alpha: float = 0.01, margin: float = 0.05
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Plates whose **reference** control wells the network reads differently from the reference wells of
    the run's own plates (``own``): their unaffected cells do not score like the training plate's, so
    every fraction on the plate is biased by what the network reads (gain, focus, another batch), and
    the normalised fraction corrects it only as far as it is a shift and a scale. Flagged (each well of
    the plate and the returned table) when the two sets of wells differ by more than ``margin`` in median
    and a Mann–Whitney test says p < ``alpha``. Returns (wells with the flag, one row per other plate)."""
    from scipy.stats import mannwhitneyu

    ref = ctrl[(ctrl["role"] == "reference") & ctrl["untrained_fraction"].notna()]
    on_own = ref["plate"].astype(str).isin({str(p) for p in own})
    base = ref.loc[on_own, "untrained_fraction"].to_numpy()
    rows = []
    for plate, g in ref[~on_own].groupby("plate", sort=True):
        v = g["untrained_fraction"].to_numpy()
        if len(v) < 2 or len(base) < 2:
            continue
        diff = float(np.median(v) - np.median(base))
        p = float(mannwhitneyu(v, base, alternative="two-sided").pvalue)
        flagged = abs(diff) > margin and p < alpha
        rows.append(
            {
                "plate": plate,
                "n_reference_wells": len(v),
                "reference_median": float(np.median(v)),
                "training_plates_reference_median": float(np.median(base)),
                "difference": diff,
                "mann_whitney_p": p,
                "flag": flagged,
            }
        )
        if flagged:
            note = (
                f"plate read differently: its reference wells {np.median(v):.2f} vs {np.median(base):.2f} on the "
                "run's plates — fractions biased, normalised only as far as a shift and scale"
            )
            on = wells["plate"].astype(str) == str(plate)
            wells.loc[on, "flag"] = [f"{f}; {note}" if f else note for f in wells.loc[on, "flag"]]
    return wells, pd.DataFrame(rows)


def ring_flags(
    wells: pd.DataFrame, trend: pd.DataFrame, measure: str = "log2 intensity", zones: dict | None = None
) -> pd.DataFrame:
    """Each outer-ring well of a plate whose ring is imaged differently from its inner wells (the ``trends``
    row of the brightness flagged) says so in its flag: the plate's flag alone does not name the wells. Once
    each cell is normalised, a dimmer well is a noisier one, and the network reads a noisier well's change as
    weaker: on the built-in two-plate screen, ring wells at 0.7 of the gain read 0.07–0.12 low at high doses
    after normalisation to controls that sit on the ring themselves (docs/score.md). The flag says what reads it
    at the ring's own imaging (``match_imaging=true``), or that it was read so (``zones``: its zone mapped)."""
    for t in trend[(trend["measure"] == measure) & trend["flag"]].itertuples():
        on = (wells["plate"].astype(str) == str(t.plate)) & on_grid(wells)
        ring = wells[on].index[outer_ring(wells[on])]
        ratio = float(2.0 ** float(t.outer_minus_inner))
        note = f"outer ring imaged at {ratio:.2f}× the inner wells' brightness (p = {float(t.p_value):.1g}): " + (
            "a dimmer well is a noisier one, its fraction may read low"
            if ratio < 1
            else "its fraction may read unlike the inner wells'"
        )
        zone = (zones or {}).get(zone_name(str(t.plate), True))
        if zone is not None and zone["mapped"]:
            note += "; read against the run's control cells imaged as the ring is (match_imaging)"
        elif zones is None:
            note += "; match_imaging=true reads it against the run's control cells imaged as the ring is"
        wells.loc[ring, "flag"] = [f"{f}; {note}" if f else note for f in wells.loc[ring, "flag"]]
    return wells
