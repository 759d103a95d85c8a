"""A score's ground-truth checks, where the truth is known (synthetic plates): the design's dose series
and how far the scored wells, the fitted EC50s and the hits are from it.
"""

from __future__ import annotations

import pandas as pd

from protocell.data.store import CropStore

TOLERANCE = 0.08  # the bar's per-well tolerance, reported in the ground-truth checks


def dose_design(stores: list[CropStore]) -> dict | None:
    """The synthetic plates' dose series (the known curve), from the first store that has one."""
    return next((d for s in stores if (d := (s.info.get("synthetic") or {}).get("dose_series"))), None)


def truth_checks(wells: pd.DataFrame, fits: pd.DataFrame, hits: pd.DataFrame, design: dict | None) -> dict:
    """Ground-truth checks where the truth is known (synthetic plates): per-well error of the scored
    wells (no condition) — of the fraction and of the per-plate normalised fraction, per plate when there
    are several — each compound's EC50 against the design's, and which doses the hits found."""
    if "truth" not in wells:
        return {}
    w = wells[(wells["role"] == "scored") & wells["truth"].notna() & (wells["n_cells"] > 0)]
    if "stress" in w:
        w = w[w["stress"].fillna("").astype(str) == ""]  # the stress wells break the assumption on purpose
    out: dict[str, object] = {}
    if len(w):
        err = w["error"].abs()
        out.update(
            {
                "scored wells with truth": int(len(w)),
                f"share within ±{TOLERANCE}": float((err <= TOLERANCE).mean()),
                "mean absolute error": float(err.mean()),
                "max absolute error": float(err.max()),
                "CI over cells covers the truth": float(w["ci_covers_truth"].mean()),
            }
        )
    plates = sorted(w["plate"].unique())
    design = design or {}
    for plate in plates if len(plates) > 1 else [None]:
        on = w if plate is None else w[w["plate"] == plate]
        tag = "" if plate is None else f"{plate}: "
        for col, what in (() if plate is None else (("affected_fraction", "fraction"),)) + (
            ("normalised_fraction", "normalised fraction"),
        ):
            err = (on[col] - on["truth"]).abs().dropna()
            if len(err):
                out[f"{tag}{what}: share within ±{TOLERANCE}"] = float((err <= TOLERANCE).mean())
                out[f"{tag}{what}: mean absolute error"] = float(err.mean())
    for f in fits[fits["measure"].isin(["affected_fraction", "normalised_fraction"])].itertuples():
        if design.get("compound") == f.compound and f.ok:
            tag = f"{f.plate}: " if f.plate else ""
            what = "" if f.measure == "affected_fraction" else " (normalised fraction)"
            out[f"{tag}{f.compound}: EC50 fitted / design{what}"] = float(f.ec50 / design["ec50"])
            if not tag and not what:
                out[f"{f.compound}: EC50 design"] = float(design["ec50"])
                out[f"{f.compound}: curve rises as the design's"] = bool(
                    (f.top - f.bottom) * (design["top"] - design["bottom"]) > 0
                )
    if design and len(hits):
        h = hits[hits["compound"] == design.get("compound")]
        above, vehicle = h[h["dose"] > design["ec50"]], h[h["dose"] == 0]
        out[f"{design['compound']}: doses above the EC50 called hits"] = f"{int(above['hit'].sum())} of {len(above)}"
        if len(vehicle):
            out[f"{design['compound']}: vehicle called a hit"] = bool(vehicle["hit"].any())
    return out
