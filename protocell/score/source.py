"""What score reads: the run's calibration and fraction reference, a crop store checked against the
run, and the plate map the store's manifest carries (wells, conditions, compounds, doses).

A store is scored with the *run's* data handling (``CellDataModule.dataset_of``): the channels the
network was trained on (by name), its crop size, its normalisation (per cell, or the training
crops' fixed ranges), zeroed background and margin. A store of another crop size is refused: its
cells would be seen at another magnification.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from protocell import doses
from protocell.data.store import MANIFEST_COLUMNS, CropStore
from protocell.errors import ProtocellError
from protocell.plate import parse_well, treatment_name

# manifest columns that are per cell, not per well (the rest of the extra columns describe the well)
PER_CELL = set(MANIFEST_COLUMNS) | {"label_id"}


class ScoreError(ProtocellError):
    """Input score cannot use; the message names the file or well and the fix."""


def is_mixture(calibration: dict) -> bool:
    """The cell call is the affected-fraction fit's posterior (``calibration=mixture``, the default)."""
    return str(calibration.get("method", "")).startswith("mixture")


def run_status(metrics_path: Path) -> dict:
    """The run's ``status``, ``reasons`` and ``warnings`` from ``metrics.json``; a ``failed`` run is refused
    (its scores are not a readout: a screen scored with it would report fractions the run itself says are
    meaningless). ``warning`` and ``incomplete`` runs are scored, and the page says so on top."""
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    status = {
        "status": metrics.get("status", "unknown"),
        "reasons": list(metrics.get("reasons") or []),
        "warnings": list(metrics.get("warnings") or []),
    }
    if status["status"] == "failed":
        why = "; ".join(status["reasons"]) or "no reason recorded"
        raise ScoreError(
            f"{metrics_path} says status failed ({why}): a failed run's scores are not a readout; "
            "retrain (fix what the reasons name) and score with a run whose status is ok"
        )
    return status


def run_calibration(metrics_path: Path) -> dict:
    """The cell call train.py stored in ``metrics.json``: ``calibration=mixture`` (each cell's posterior
    at its well's affected fraction, ``protocell.evaluate.fraction``) or a noisy-label calibration (a, b, lo, hi);
    refused when there is none to use."""
    if not metrics_path.exists():
        raise ScoreError(
            f"{metrics_path} is missing: it holds the calibration the affected fraction needs; "
            "pass a run that finished training (train.py writes it after testing)"
        )
    cal = json.loads(metrics_path.read_text()).get("calibration") or {}
    if is_mixture(cal) and cal.get("used", False):
        return cal
    needed = ("a", "b", "lo", "hi", "prior")
    if not all(k in cal for k in needed) or not cal.get("used", False) or not cal.get("ok", False):
        why = (
            "no calibration (calibration=none)"
            if not cal
            else f"calibration '{cal.get('method', '?')}' without {[k for k in needed if k not in cal]}"
            if not all(k in cal for k in needed)
            else f"a noisy-label calibration that is degenerate (ok={cal.get('ok')}, used={cal.get('used')}, "
            f"hi − lo = {cal.get('hi', 0) - cal.get('lo', 0):.3f} on {cal.get('n_cells', '?')} held-out cells)"
        )
        raise ScoreError(
            f"{metrics_path} holds {why}: the affected fraction is the mixing weight of the noisy-label "
            "calibration's likelihood ratios; retrain with calibration=mixture (the default) or noisy_label, with "
            "enough validation wells (data.val_fraction) for a fit with cell-level evidence"
        )
    return cal


def run_reference(run_dir: Path, exp: str) -> dict:
    """The fraction reference (``protocell.evaluate.fraction.fit_reference``) train.py stored in ``metrics.json``
    → ``affected_fraction.fit``; refused when there is none (``exp``: the exposed condition, for the message)."""
    metrics_path = run_dir / "metrics.json"
    frac = json.loads(metrics_path.read_text()).get("affected_fraction") or {} if metrics_path.exists() else {}
    fit = frac.get("fit")
    if fit is None:
        raise ScoreError(
            f"{metrics_path} has no affected-fraction reference (affected_fraction.fit: "
            f"{frac.get('reason', 'absent')}), which every fraction of {exp} cells is measured against: "
            "pass a run that finished training with this protocell (train.py writes it after testing)"
        )
    if not fit.get("ok"):
        raise ScoreError(
            f"{metrics_path}: the affected-fraction reference fitted on the run's held-out cells is "
            f"unusable ({fit.get('reason', 'not ok')}); a run whose scores do not separate any "
            f"exposed cell from the reference cannot measure a fraction — check its metrics first"
        )
    return fit


def open_store(path: str | Path, run_store: CropStore) -> CropStore:
    """The store to score, refused when its crops differ in size from the run's store."""
    store = CropStore(path)
    if store.crop_size != run_store.crop_size:
        raise ScoreError(
            f"{store.root / 'store.json'} holds {store.crop_size} px crops, the run was trained on "
            f"{run_store.crop_size} px crops ({run_store.root}): prepare the plate again with "
            f"cells.crop_size={run_store.crop_size} (the same pixel size), so cells are seen at the "
            "magnification the network learnt"
        )
    originals = store.manifest["aug_of"].to_numpy() < 0
    if not originals.any():
        raise ScoreError(f"{store.root / 'manifest.csv'} lists no original cells (only offline augmentations)")
    return store


def _one_per_well(m: pd.DataFrame, col: str, where: Path) -> pd.Series:
    values = m.groupby(["plate", "well"])[col].agg(lambda v: sorted(set(map(str, v))))
    mixed = values[values.map(len) > 1]
    if len(mixed):
        (plate, well), vals = next(iter(mixed.items()))
        raise ScoreError(
            f"{where}: well {plate}/{well} has {col} values {vals} in its images; a well has one {col} "
            f"(fix the plate map and prepare again){f' — and {len(mixed) - 1} more wells' if len(mixed) > 1 else ''}"
        )
    return values.map(lambda v: v[0])


def parse_doses(text: pd.Series, where: Path) -> pd.Series:
    """Plate-map dose values (text) → float, NaN where empty; a value that is not a dose
    (``protocell.doses``: a finite number ≥ 0) is refused, naming its wells."""
    text = text.astype(str).str.strip()
    dose, bad = doses.parse_doses(text)
    if bad.any():
        shown = ", ".join(f"{'/'.join(map(str, k))} ({text[k]!r})" for k in list(bad[bad].index)[:5])
        raise ScoreError(
            f"{where}: dose must be a number ≥ 0, finite (or empty for wells without one); not so in "
            f"well(s) {shown}{' …' if bad.sum() > 5 else ''}: fix the plate map's dose column and "
            "prepare again"
        )
    return dose


def plate_wells(store: CropStore, ref: str, exp: str) -> pd.DataFrame:
    """One row per (plate, well) of the store: row, column (None when the name is no plate position),
    condition, compound, dose (float, NaN without), ``treatment`` (condition · compound · dose: the
    unit replicate wells share; a well with none of them is its own), ``role`` (reference, exposed or
    scored), n_images, and every extra manifest column that is constant within each well."""
    m = store.manifest[store.manifest["aug_of"].to_numpy() < 0]
    where = store.root / "manifest.csv"
    g = m.groupby(["plate", "well"], sort=True)
    wells = pd.DataFrame({"n_images": g["image_id"].nunique()})
    wells["condition"] = _one_per_well(m, "condition", where)
    wells["compound"] = _one_per_well(m, "compound", where) if "compound" in m else ""
    wells["compound"] = wells["compound"].replace({"nan": ""})
    dose_text = _one_per_well(m, "dose", where) if "dose" in m else pd.Series("", index=wells.index)
    wells["dose"] = parse_doses(dose_text, where)
    for col in [c for c in m.columns if c not in PER_CELL and c not in ("compound", "dose")]:
        values = g[col].nunique(dropna=False)
        if (values == 1).all():
            wells[col] = g[col].first()
    return _placed(wells.reset_index(), ref, exp)


def _placed(wells: pd.DataFrame, ref: str, exp: str) -> pd.DataFrame:
    """``wells`` (plate, well, condition, compound, dose) with row, column, treatment and role."""
    pos = wells["well"].map(parse_well)
    wells["row"] = pos.map(lambda p: None if p is None else p[0])
    wells["column"] = pos.map(lambda p: None if p is None else p[1])
    wells["treatment"] = [
        treatment_name(c, k, d) or f"well {p}/{w}"
        for c, k, d, p, w in zip(wells["condition"], wells["compound"], wells["dose"], wells["plate"], wells["well"])
    ]
    wells["role"] = np.select(
        [wells["condition"] == ref, wells["condition"] == exp], ["reference", "exposed"], "scored"
    )
    return wells


def empty_wells(store: CropStore, wells: pd.DataFrame, ref: str = "", exp: str = "") -> pd.DataFrame:
    """Wells ``prepare`` read images of but found no cell in (``prepare_summary.json``), so the manifest
    cannot list them: plate, well, condition, n_images, role, and the plate map's other columns (compound,
    dose, … as prepare recorded them per image: stores prepared before it did have none) with the dose
    parsed and the ``treatment`` named as for the other wells."""
    path = store.root / "prepare_summary.json"
    cols = ["plate", "well", "condition", "n_images"]
    if not path.exists():
        return pd.DataFrame(columns=cols)
    records = json.loads(path.read_text()).get("per_image", [])
    per_image = pd.DataFrame(
        [
            {k: v for k, v in r.items() if k != "meta"} | {f"meta:{k}": v for k, v in (r.get("meta") or {}).items()}
            for r in records
        ]
    )
    if per_image.empty:
        return pd.DataFrame(columns=cols)
    per_image[["plate", "well"]] = per_image[["plate", "well"]].astype(str)
    meta = [c for c in per_image.columns if c.startswith("meta:")]
    seen = set(zip(wells["plate"].astype(str), wells["well"].astype(str)))
    g = per_image.groupby(["plate", "well"], sort=True).agg(
        condition=("condition", "first"),
        n_images=("image_id", "nunique"),
        cells=("cells", "sum"),
        **{c[5:]: (c, "first") for c in meta},
    )
    g = g[np.array([k not in seen for k in g.index], bool) & (g["cells"] == 0).to_numpy()]
    out = g.drop(columns="cells").reset_index()
    if out.empty:
        return out[cols]
    out["compound"] = out["compound"].fillna("").astype(str) if "compound" in out else ""
    dose = out["dose"].fillna("").astype(str) if "dose" in out else pd.Series("", index=out.index)
    dose.index = pd.MultiIndex.from_frame(out[["plate", "well"]])
    out["dose"] = parse_doses(dose, path).to_numpy()
    return _placed(out, ref, exp)
