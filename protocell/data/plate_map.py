"""A store's wells as its plate map describes them: one row per (plate, well) with its condition, compound,
dose, treatment and role, the map validated as it is read (a well with two conditions, a dose that is no
finite number ≥ 0: ``PlateMapError`` naming the well and the fix).

One tabulation for every stage that reads a store's wells: score (its tables, QC, hits), the layout check
of a run's diagnostics and the bench.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from protocell.data.store import MANIFEST_COLUMNS, CropStore
from protocell.doses import parse_doses as _parse_doses
from protocell.errors import ProtocellError
from protocell.plate import parse_well, treatment_name

# manifest columns that are per cell, not per well (the rest of the extra columns describe the well)
PER_CELL = set(MANIFEST_COLUMNS) | {"label_id"}


class PlateMapError(ProtocellError):
    """A plate map (a store's manifest) that cannot describe its wells: the message names the file, the
    well and the fix."""


def _one_per_well(m: pd.DataFrame, col: str, where: Path) -> pd.Series:
    values = m.groupby(["plate", "well"])[col].agg(lambda v: sorted(set(map(str, v))))
    mixed = values[values.map(len) > 1]
    if len(mixed):
        (plate, well), vals = next(iter(mixed.items()))
        raise PlateMapError(
            f"{where}: well {plate}/{well} has {col} values {vals} in its images; a well has one {col} "
            f"(fix the plate map and prepare again){f' — and {len(mixed) - 1} more wells' if len(mixed) > 1 else ''}"
        )
    return values.map(lambda v: v[0])


def parse_doses(text: pd.Series, where: Path) -> pd.Series:
    """Plate-map dose values (text) → float, NaN where empty; a value that is not a dose
    (``protocell.doses``: a finite number ≥ 0) is refused, naming its wells."""
    text = text.astype(str).str.strip()
    dose, bad = _parse_doses(text)
    if bad.any():
        shown = ", ".join(f"{'/'.join(map(str, k))} ({text[k]!r})" for k in list(bad[bad].index)[:5])
        raise PlateMapError(
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
