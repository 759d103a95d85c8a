"""Writing a score (``compute.ScoreResult``): its tables, ``score.json``, figures and ``score.html``,
under ``out``::

    score/cells.csv                 one row per cell (tables.cell_table)
    score/wells.csv                 one row per well: fraction + CI over cells, graded readouts, per-plate
                                    normalisation, diagnostics, flags
    score/well_table.csv, .parquet  the same wells for downstream tools (export: Metadata_*, Protocell_*, Cells_*)
    score/treatments.csv            replicate wells pooled: fraction + CI over wells
    score/qc.csv                    per plate × readout: Z′, robust Z′, SSMD, signal window (screen, plates)
    score/hits.csv                  per treatment: against the reference wells, p and BH q (hits)
    score/trends.csv                per plate: outer ring against inner wells, row/column effects
    score/plate_effects.csv         several plates: the same controls on every plate
    score/prototype_enrichment.csv  per well and treatment × prototype: similarity − reference, CI
    score/dose_response.csv         per compound (and plate): 4PL of the fraction (and top prototypes) vs log dose
    score/score.json                what was scored, how, and the ground-truth checks where known
    score/plate_<plate>.png, dose_<compound>.png, dose_<compound>_prototypes.png, dose_<compound>_plates.png,
    enrichment.png
    score.html                      all of it on one page

The ``score/`` folder is written under a temporary name and renamed into place, and ``score.html``
atomically after it: an interrupted run leaves the previous results whole (the next run removes the
temporary folder a SIGKILL left: ``run.remove_leftovers``).
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

from protocell.fsutil import atomic_write_json, atomic_write_text
from protocell.score.compute import ScoreResult
from protocell.score.export import write_well_table
from protocell.score.plots import (
    plot_compound,
    plot_compound_plates,
    plot_compound_prototypes,
    plot_enrichment,
    plot_plate,
    safe_name,
)
from protocell.score.report import score_page


def write_score(out: Path, result: ScoreResult, t0: float) -> None:
    """Write ``result`` as ``out/score/`` (under a temporary name, then renamed) and ``out/score.html``;
    ``t0``: when the score started (``score.json``'s seconds)."""
    r = result
    tmp = out / f".score.partial-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    tmp.mkdir()
    try:
        figures: dict[str, list[tuple[str, str]]] = {"plate": [], "dose": [], "enrichment": []}
        for plate in sorted(r.wells["plate"].unique()):
            if r.wells.loc[r.wells["plate"] == plate, "row"].notna().any():
                name = f"plate_{safe_name(plate)}.png"
                plot_plate(r.wells, plate, tmp / name)
                figures["plate"].append((f"score/{name}", f"plate {plate}"))
        figures["dose"] = plot_doses(r, tmp)
        if len(r.enrichment):
            plot_enrichment(r.enrichment, r.treatments, tmp / "enrichment.png")
            figures["enrichment"].append(("score/enrichment.png", "prototype enrichment per treatment"))

        r.cells.to_csv(tmp / "cells.csv", index=False)
        r.wells_out.to_csv(tmp / "wells.csv", index=False)
        write_well_table(r.well_export, tmp)
        r.treatments.to_csv(tmp / "treatments.csv", index=False)
        r.enrichment.to_csv(tmp / "prototype_enrichment.csv", index=False)
        r.fits.to_csv(tmp / "dose_response.csv", index=False)
        for name, table in r.tables.items():
            if len(table) or name not in ("plate_effects", "plates_read_differently"):
                table.to_csv(tmp / f"{name}.csv", index=False)
        tables = r.tables
        atomic_write_json(
            tmp / "score.json",
            {
                **r.summary,
                "stores": r.stores,
                "calibration": r.calibration,
                "fraction_reference": r.fraction_reference,
                "run_status": r.run_status,
                "notes": r.notes,
                "truth": r.truth,
                "design": r.design,
                "options": r.options,
                "imaging_zones": r.imaging_zones,
                "qc": _records(tables["qc"]),
                "plate_effects": _records(tables["plate_effects"]),
                "trends": _records(tables["trends"]),
                "hits": _records(tables["hits"]),
                "plates_read_differently": _records(tables["plates_read_differently"]),
                "dose_response": _records(r.fits),
                "seconds": round(time.time() - t0, 1),
            },
        )
        page = score_page(
            r.summary,
            r.wells_out,
            r.treatments,
            r.fits,
            r.top_rows,
            figures,
            r.notes,
            r.truth,
            tables,
            r.options["fdr"],
            r.run_status,
        )
        _publish(tmp, out / "score")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_text(out / "score.html", page)


def plot_doses(result: ScoreResult, folder: Path) -> list:
    """Per compound with doses (``compute.dose_fits``): its fraction against dose, with several plates
    plate by plate, and its most enriched prototypes against dose, in ``folder``. Returns the figures
    (path relative to the page, caption)."""
    figures = []
    for c in result.doses:
        name = f"dose_{safe_name(c.label)}.png"
        plot_compound(c.wells, c.fit, c.label, folder / name, truth_col="true_fraction")
        figures.append((f"score/{name}", f"{c.label}: affected fraction against dose"))
        if c.plates is not None:
            name = f"dose_{safe_name(c.label)}_plates.png"
            plot_compound_plates(c.wells, c.plates, c.label, folder / name, truth_col="true_fraction")
            figures.append((f"score/{name}", f"{c.label}: normalised fraction against dose, plate by plate"))
        if c.prototypes:
            name = f"dose_{safe_name(c.label)}_prototypes.png"
            plot_compound_prototypes(c.prototypes, c.prototype_fits, c.prototype_names, c.label, folder / name)
            figures.append(
                (f"score/{name}", f"{c.label}: the {len(c.prototypes)} most enriched prototypes against dose")
            )
    return figures


def _publish(tmp: Path, final: Path) -> None:
    """Put the finished folder ``tmp`` at ``final`` (the previous one removed only once it is replaced)."""
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def _records(df: pd.DataFrame) -> list[dict]:
    """A table as JSON records, NaN and ±inf as null."""
    finite = df.replace([np.inf, -np.inf], np.nan)
    return finite.astype(object).where(finite.notna(), None).to_dict(orient="records") if len(df) else []
