"""The per-well table for downstream tools (pycytominer, a LIMS, a notebook): ``well_table.csv`` and
``well_table.parquet``, one row per well, CellProfiler / pycytominer-style names.

- ``Metadata_*``: where the well is and what it holds — plate, well, row letter, column, condition,
  compound, dose, treatment, role, cell and image counts, the flag, and every other plate-map column
  constant in the well (``Metadata_<column>``), the store with several stores;
- ``Protocell_*``: the network's readouts — the affected fraction and its CI over cells, the graded
  readouts (mean P(affected), the mean score shift in reference-SD units), the per-plate
  normalisations (percent of control, robust z, normalised fraction), the B-score when asked for, and
  each prototype's similarity shift from the reference (``Protocell_SimilarityShift_p<j>``);
- ``Cells_*``: the per-well mean of the per-cell features — prepare's mask shape
  (``Cells_AreaShape_Area``, ``_Eccentricity``, ``_Solidity``) and mean intensity per channel
  (``Cells_Intensity_MeanIntensity_<channel>``), and score's own mean stored intensity inside the cell
  over the run's channels (``Cells_Intensity_MeanIntensity_Stored``).

pycytominer reads every column that does not start with ``Metadata_`` as a feature.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from protocell.score.plots import row_label

METADATA = {
    "plate": "Plate",
    "well": "Well",
    "row": "Row",
    "column": "Column",
    "condition": "Condition",
    "compound": "Compound",
    "dose": "Dose",
    "treatment": "Treatment",
    "role": "Role",
    "n_cells": "Count_Cells",
    "n_images": "Count_Images",
    "flag": "Flag",
    "store": "Store",
}
READOUTS = {
    "affected_fraction": "AffectedFraction",
    "ci_low": "AffectedFraction_CILow",
    "ci_high": "AffectedFraction_CIHigh",
    "mean_p_affected": "MeanPAffected",
    "score_shift": "ScoreShift",
    "untrained_fraction": "AffectedFraction_NotTrainedOn",
    "percent_of_control": "PercentOfControl",
    "robust_z": "RobustZ",
    "normalised_fraction": "NormalisedFraction",
    "b_score": "BScore",
}


def feature_name(col: str) -> str:
    """A per-cell feature column (``store.cell_feature_columns``, or score's ``intensity``) → its CellProfiler-style name."""
    if col == "intensity":
        return "Cells_Intensity_MeanIntensity_Stored"
    if col.startswith("mean_"):
        return f"Cells_Intensity_MeanIntensity_{col[len('mean_') :]}"
    return f"Cells_AreaShape_{col.capitalize()}"


def well_export(wells: pd.DataFrame, features: pd.DataFrame, enrich: pd.DataFrame, extra: list[str]) -> pd.DataFrame:
    """The downstream table: ``wells`` (score's wells table) renamed, ``features`` (per-well means, index
    ``plate/well``, columns ``intensity`` and prepare's features) and each prototype's well-level
    similarity difference from ``enrich`` joined; ``extra``: plate-map columns to carry as metadata."""
    key = wells["plate"].astype(str) + "/" + wells["well"].astype(str)
    out = pd.DataFrame(index=wells.index)
    for col, name in METADATA.items():
        if col in wells:
            out[f"Metadata_{name}"] = (
                wells[col].map(lambda r: row_label(int(r)) if pd.notna(r) else "") if col == "row" else wells[col]
            )
    for col in extra:
        if col in wells and f"Metadata_{col}" not in out:
            out[f"Metadata_{col}"] = wells[col]
    for col, name in READOUTS.items():
        if col in wells:
            out[f"Protocell_{name}"] = wells[col]
    if len(enrich):
        shift = (
            enrich[enrich["level"] == "well"]
            .assign(key=lambda d: d["plate"].astype(str) + "/" + d["well"].astype(str))
            .pivot(index="key", columns="prototype", values="difference")
        )
        for j in shift.columns:
            out[f"Protocell_SimilarityShift_p{j}"] = key.map(shift[j]).to_numpy()
    for col in features.columns:
        out[feature_name(col)] = key.map(features[col]).to_numpy()
    return out.reset_index(drop=True)


def write_well_table(table: pd.DataFrame, folder: Path) -> None:
    """``well_table.csv`` and ``well_table.parquet`` in ``folder`` (text columns as strings, so that a
    column mixing numbers and text in a plate map still has one Parquet type)."""
    table.to_csv(folder / "well_table.csv", index=False)
    typed = table.copy()
    for col in typed.columns:
        if typed[col].dtype == object:
            typed[col] = typed[col].map(lambda v: None if pd.isna(v) else str(v))
    typed.to_parquet(folder / "well_table.parquet", index=False)
