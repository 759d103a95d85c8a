"""What a score computes, nothing written: the network's pass over the cells of every store
(``protocell.score.cells``: a cell with NaN or inf pixels refused), then the tables — cells, wells (fraction + CI over cells, graded
readouts, per-plate normalisation, diagnostics, flags), treatments, plate QC, trends and hits
(``screen``), prototype enrichment, dose–response fits — the ground-truth checks where the truth is
known (synthetic plates: ``truth``), and the notes (``notes``) and summary the page and ``score.json`` show: one
``ScoreResult``, which ``protocell.score.write`` writes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from protocell.data.plate_map import empty_wells
from protocell.data.store import CropStore
from protocell.evaluate.fraction import ASSUMPTION, ESTIMATOR, IDENTIFIED
from protocell.runs import Run
from protocell.score.cells import score_stores
from protocell.score.dose import dose_response
from protocell.score.export import METADATA, well_export
from protocell.score.notes import call_note, normalisation_note, read_differently_note
from protocell.score.screen import screen
from protocell.score.source import is_mixture
from protocell.score.tables import (
    enrichment,
    similarities,
    top_prototypes,
    treatment_table,
    well_readouts,
    well_table,
)
from protocell.score.truth import dose_design, truth_checks
from protocell.score.zones import said, zone_names
from protocell.score.zones import summary as zone_summary

log = logging.getLogger("protocell.score")


@dataclass
class CompoundDose:
    """One compound's dose–response, what its figures show (``write``: ``dose_<compound>*.png``)."""

    label: str  # the compound, or "(no compound)"
    wells: pd.DataFrame  # its wells with cells
    fit: dict  # the 4PL of the affected fraction over every plate
    plates: dict | None  # several plates: plate → the 4PL of the normalised fraction on it; else None
    prototypes: dict  # j → the wells' similarity to prototype j − reference (the top enriched)
    prototype_fits: dict  # j → the 4PL of that difference
    prototype_names: dict  # j → "p<j> (<class>)"


@dataclass
class ScoreResult:
    """Everything a score found, ready to write: the tables (``score/*.csv``), the figures' inputs, and
    what ``score.json`` and the page say."""

    cells: pd.DataFrame  # cells.csv
    wells: pd.DataFrame  # the wells with cells (the plate figures)
    wells_out: pd.DataFrame  # wells.csv: those and the wells without cells
    well_export: pd.DataFrame  # well_table.csv, .parquet
    treatments: pd.DataFrame  # treatments.csv
    enrichment: pd.DataFrame  # prototype_enrichment.csv
    fits: pd.DataFrame  # dose_response.csv
    doses: list[CompoundDose]  # the dose figures, compound by compound
    tables: dict  # qc, hits, trends, plate_effects, plates_read_differently (screen)
    summary: dict  # the page's summary, the first keys of score.json
    notes: dict  # estimator, assumption, normalisation, reference, empty wells, no controls
    truth: dict  # the ground-truth checks ({} without truth)
    design: dict | None  # the synthetic plates' dose series
    top_rows: pd.DataFrame  # the page's most enriched prototypes per treatment
    stores: list[str]
    calibration: dict  # the cell call
    fraction_reference: dict  # the fraction's reference (protocell.evaluate.fraction)
    run_status: dict
    options: dict  # fdr, bscore, min_cells
    imaging_zones: dict  # score.match_imaging: each zone's camera, levels, note and fit (protocell.score.zones)


def _reference(run: Run, cells: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Cells (plate, well, score, sim_p<j>) whose mean similarities are the enrichment baseline and whose
    scores the score shift is measured from, and a sentence saying which."""
    ref = cells[(cells["condition"] == run.ref) & (cells["run_split"] != "train")]
    if len(ref):
        n_wells = ref.groupby(["plate", "well"]).ngroups
        trained = " not trained on" if (cells["run_split"] == "train").any() else ""
        return ref, f"{len(ref)} {run.ref} cells{trained} in {n_wells} wells of the scored store(s)"
    P = len(run.record["cell_id"])
    cols = [f"min_d_{j}" for j in range(P)]
    preds = run.preds[run.preds["condition"] == run.ref]
    if len(preds) and all(c in preds for c in cols):
        sims = pd.DataFrame(similarities(preds[cols].to_numpy()), columns=[f"sim_p{j}" for j in range(P)])
        return (
            pd.concat(
                [
                    pd.DataFrame(
                        {
                            "plate": "run",
                            "well": preds["well"].astype(str).to_numpy(),
                            "score": preds["score"].to_numpy(np.float64),
                        }
                    ),
                    sims,
                ],
                axis=1,
            ),
            f"the store has no {run.ref} wells: the run's {len(preds)} {run.ref} test cells of its own plate",
        )
    return pd.DataFrame(
        columns=["plate", "well", "score"] + [f"sim_p{j}" for j in range(P)]
    ), f"none: the store has no {run.ref} wells and the run's test predictions no distances"


def dose_fits(
    wells: pd.DataFrame, enrich: pd.DataFrame, classes: list[str], n_boot: int, seed: int, min_cells: int, top: int
) -> tuple[pd.DataFrame, list[CompoundDose]]:
    """Per compound with doses: the 4PL of the affected fraction and of its ``top`` most enriched
    prototypes' similarity differences over every plate, and with several plates per plate the 4PL of
    the fraction and of the per-plate normalised fraction. Returns (fits, each compound's curves for its
    figures)."""
    fits = [dose_response(wells, "affected_fraction", n_boot, seed, min_cells)]
    curves = []
    several = wells["plate"].nunique() > 1
    by_plate = None  # the per-plate fits of the normalised fraction (each compound's figure)
    if several:
        fits += [
            dose_response(wells, m, n_boot, seed, min_cells, by_plate=True)
            for m in ("affected_fraction", "normalised_fraction")
        ]
        by_plate = fits[-1]
    dosed = wells[wells["dose"].notna() & (wells["n_cells"] > 0)]
    for compound, g in dosed.groupby("compound", sort=True):
        fit = fits[0].set_index("compound").loc[compound].to_dict()
        plates = None
        if by_plate is not None:  # several plates
            per_plate = by_plate[by_plate["compound"] == compound].set_index("plate")
            plates = {p: per_plate.loc[p].to_dict() for p in per_plate.index}
        per, pfits = {}, {}
        for j in top_prototypes(enrich, g["treatment"].unique().tolist(), top):
            e = enrich[(enrich["level"] == "well") & (enrich["prototype"] == j)].drop(columns=["treatment", "n_cells"])
            per[j] = g[["plate", "well", "dose", "compound", "n_cells"]].merge(e, on=["plate", "well"])
            pfits[j] = dose_response(per[j], "difference", n_boot, seed, min_cells).assign(
                measure=f"p{j} similarity − reference"
            )
        if per:
            fits += list(pfits.values())
        curves.append(
            CompoundDose(
                compound or "(no compound)",
                g,
                fit,
                plates,
                per,
                {j: f.iloc[0].to_dict() for j, f in pfits.items()},
                {j: f"p{j} ({classes[j]})" for j in per},
            )
        )
    return pd.concat(fits, ignore_index=True), curves


def compute_score(
    run: Run,
    models: dict,
    stores: list[CropStore],
    wells: pd.DataFrame,
    *,
    n_boot: int,
    nearest: int,
    top: int,
    min_cells: int,
    batch_size: int | None,
    num_workers: int,
    progress: bool,
    seed: int,
    fdr: float,
    bscore: bool,
    result: dict | None = None,
) -> ScoreResult:
    """Score the cells (``result``: the network's numbers from the shares, else computed here) and
    compute every table, figure input, check and note of the score; nothing is written."""
    calibration, anchors = models["call"], models["fraction"]
    cells = score_stores(run, stores, wells, models, batch_size, num_workers, progress, nearest, result=result)
    reference, ref_note = _reference(run, cells)

    extra = [c for c in wells.columns if c not in METADATA]  # the plate map's other columns
    wells = well_table(cells, wells, n_boot, seed, min_cells, reference["score"].to_numpy(np.float64))
    zones = models.get("zones")
    if zones:  # score.match_imaging (protocell.score.zones)
        wells["zone"] = zone_names(wells)
        unmapped = wells["zone"].map(
            {k: "" if z["mapped"] else f"imaging not matched: {z['note']}" for k, z in zones.items()}
        )
        wells["flag"] = ["; ".join(f for f in fs if f) for fs in zip(wells["flag"], unmapped)]
    empty = pd.concat(
        [
            empty_wells(s, wells, run.ref, run.exp).assign(**({"store": str(s.root)} if len(stores) > 1 else {}))
            for s in stores
        ],
        ignore_index=True,
    )
    if len(empty):
        log.warning(
            "score: %d well(s) without cells: %s",
            len(empty),
            ", ".join(f"{p}/{w}" for p, w in zip(empty["plate"], empty["well"])),
        )
    treatments = treatment_table(cells, wells, n_boot, seed)
    per = treatments.set_index("treatment")  # each well carries its treatment's pooled estimate too
    for col, src in (
        ("n_replicates", "n_wells"),
        ("treatment_fraction", "affected_fraction"),
        ("treatment_ci_low", "ci_low"),
        ("treatment_ci_high", "ci_high"),
    ):
        wells[col] = wells["treatment"].map(per[src])
    wells, tables = screen(
        cells, wells, reference["score"].to_numpy(np.float64), fdr, bscore, is_mixture(calibration), zones
    )
    classes = [run.class_names[int(c)] for c in run.record["prototype_class"]]
    enrich = enrichment(cells, wells, reference, classes, n_boot, seed)
    fits, doses = dose_fits(wells, enrich, classes, n_boot, seed, min_cells, top)

    wells_out = (
        pd.concat(
            [wells, empty.assign(n_cells=0, flag="no cells: prepare found none in its images")], ignore_index=True
        )
        if len(empty)
        else wells
    )
    export = well_export(
        wells_out,
        well_readouts(cells, reference["score"]).drop(
            columns=["n_cells", "affected_fraction", "mean_p_affected", "score_shift"]
        ),
        enrich,
        extra,
    )
    design = dose_design(stores)  # synthetic plates: the known curve
    truth = truth_checks(wells, fits, tables["hits"], design)
    no_controls = sorted(tables["qc"].loc[tables["qc"]["verdict"] == "no controls", "plate"].unique())
    notes = {
        "estimator": f"The affected fraction of a well is the {ESTIMATOR}, fitted on the run's held-out "
        f"control cells ({anchors['n_ref']} reference, {anchors['n_exp']} exposed: "
        f"ρ_Ref {anchors['rho_ref']:.3f}, ρ_Exp {anchors['rho_exp']:.3f}) and applied to "
        "every cell. " + call_note(calibration),
        "assumption": f"{ASSUMPTION}: the unaffected cells of a scored well look like the reference's. A well "
        "whose unaffected cells differ in a way the network reads (focus, gain it can see, "
        "density, another cell line) gets a biased fraction; the reference is held fixed, so "
        "the CIs do not include its own uncertainty.",
        "identified": f"What a fraction can be: {IDENTIFIED}.",
        "normalisation": normalisation_note(run, stores),
        "reference": ref_note,
        "empty": (
            f"Wells prepare found no cell in: {', '.join(f'{p}/{w}' for p, w in zip(empty['plate'], empty['well']))}."
            if len(empty)
            else ""
        ),
        "no_controls": (
            f"No controls on plate(s) {', '.join(no_controls)}: no Z′, no normalisation to "
            "the plate's controls (its wells are tested on their raw fractions)."
            if no_controls
            else ""
        ),
    }
    summary = {
        "run": str(run.dir),
        "run status": models["status"]["status"],
        "store": ", ".join(str(s.root) for s in stores),
        "plates": int(wells["plate"].nunique()),
        "cells": int(len(cells)),
        "wells": int(len(wells_out)),
        "treatments": int(len(treatments)),
        "compounds with a dose": int(fits.loc[fits["measure"] == "affected_fraction", "compound"].nunique()),
        f"hits at FDR {fdr:g}": int(tables["hits"]["hit"].sum()),
        "plates read differently": read_differently_note(tables["plates_read_differently"]),
        "bootstrap resamples": n_boot,
        "reference for enrichment": ref_note,
    }
    if models.get("level_imaging"):
        summary["imaging levelled"] = (
            "each plate's wells brought to its own blurriest and noisiest well's imaging before the network read them "
            "(level_imaging=true): fractions are read at that plate's worst imaging; compare wells of a plate, and "
            "plates through their normalised fractions"
        )
    if zones:
        summary["imaging matched"] = (
            "each plate zone (outer ring, inner wells) read against the run's held-out control cells re-imaged as "
            "that zone is, and its fractions mapped onto the run's imaging by those cells (match_imaging=true): "
            + "; ".join(f"{k}: {said(z)}" for k, z in zones.items())
        )
    elif models.get("imaging_note"):  # match_imaging asked for and not applied, and why
        summary["imaging matched"] = models["imaging_note"]
    top_rows = (
        enrich[enrich["level"] == "treatment"]
        .assign(a=lambda d: d["difference"].abs())
        .sort_values("a", ascending=False)
        .groupby("treatment", sort=False)
        .head(3)[["treatment", "name", "class", "mean_similarity", "reference_mean", "difference", "ci_low", "ci_high"]]
        if len(enrich)
        else pd.DataFrame()
    )
    return ScoreResult(
        cells=cells,
        wells=wells,
        wells_out=wells_out,
        well_export=export,
        treatments=treatments,
        enrichment=enrich,
        fits=fits,
        doses=doses,
        tables=tables,
        summary=summary,
        notes=notes,
        truth=truth,
        design=design,
        top_rows=top_rows,
        stores=[str(s.root) for s in stores],
        calibration=calibration,
        fraction_reference=anchors,
        run_status=models["status"],
        options={
            "fdr": fdr,
            "bscore": bscore,
            "min_cells": min_cells,
            "level_imaging": bool(models.get("level_imaging")),
            "match_imaging": bool(zones),
        },
        imaging_zones=zone_summary(zones) if zones else {},
    )
