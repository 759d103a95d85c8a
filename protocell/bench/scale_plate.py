"""The raw plate of the scale bench (``protocell.bench.scale``): a 96-well layout (column 1 ``Ref``, column
12 ``Exp``, columns 2–11 a compound at ten doses, scored) rendered by the project's synthetic field
generator with a third channel, uint16 TIFFs, cached on disk per parameter set.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from protocell.fsutil import atomic_write

CHANNELS = ["actin", "nuclei", "mito"]
DOSES = [0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0]  # columns 2–11
GENERATOR_VERSION = 2


def plate_layout(n_wells: int) -> list[dict]:
    """The first ``n_wells`` wells of a 96-well plate in row order: well, condition, compound, dose."""
    wells: list[dict[str, Any]] = []
    for r in "ABCDEFGH":
        for col in range(1, 13):
            cond = {1: "Ref", 12: "Exp"}.get(col, "")
            dose = "" if cond else DOSES[col - 2]
            wells.append({"well": f"{r}{col:02d}", "condition": cond, "compound": "" if cond else "C1", "dose": dose})
    # controls of both kinds among the first wells, whatever n_wells: order by column pairs (1, 12), then the rest
    wells.sort(key=lambda w: (0 if w["condition"] else 1, w["well"][1:], w["well"][0]))
    return wells[:n_wells]


def _write_field(job: tuple) -> None:
    """One field: ``render_field`` (actin, nuclei) and a third channel; written as (3, H, W) uint16."""
    import tifffile
    from scipy import ndimage as ndi

    from protocell.data.synthetic import DoseSeries, WellSpec
    from protocell.data.synthetic_render import render_field

    path, size, seed, well_index, field, cond, dose = job
    spec = WellSpec(field_size=size, cells_per_field=int(600 * (size / 1080) ** 2), cell_radius=(13.0, 18.0))
    rng_well = np.random.default_rng([seed, well_index])
    gain = float(rng_well.uniform(0.8, 1.2))
    rng = np.random.default_rng([seed, well_index, field])
    render: dict[str, Any] = {}
    if not cond:  # a dose well: its fraction from the curve, no condition
        ds = DoseSeries(doses=DOSES, ec50=1.0)
        p = ds.fraction(float(dose))
        render = {"affected": p, "confound": float(np.clip((p - ds.bottom) / (ds.top - ds.bottom), 0, 1))}
    img, _, _, _ = render_field(rng, spec, cond or "Ref", gain, **render)
    actin = img[0].astype(np.float32) - 100
    mito = ndi.gaussian_filter(actin, 2.5) * 0.6 + rng.normal(100, 6, actin.shape)
    out = np.concatenate([img, np.clip(mito, 0, 65535).astype(np.uint16)[None]])
    atomic_write(
        path, lambda fh: tifffile.imwrite(fh, out, metadata={"axes": "CYX"}, photometric="minisblack"), fsync=False
    )


def write_plate(data: Path, wells: int, fields: int, size: int, seed: int = 0, workers: int = 2) -> Path:
    """The raw plate (cached: a folder per parameter set, complete once ``plate_map.csv`` exists)."""
    key = hashlib.sha1(json.dumps([GENERATOR_VERSION, wells, fields, size, seed]).encode()).hexdigest()[:8]
    folder = data / f"plate-{wells}w{fields}f{size}px-{key}"
    if (folder / "plate_map.csv").exists():
        return folder
    (folder / "fields").mkdir(parents=True, exist_ok=True)
    rows, jobs = [], []
    for i, w in enumerate(plate_layout(wells)):
        for f in range(fields):
            name = f"fields/plate1_{w['well']}_f{f}.tif"
            rows.append(
                {
                    "image": name,
                    "plate": "plate1",
                    "well": w["well"],
                    "field": f,
                    "condition": w["condition"],
                    "compound": w["compound"],
                    "dose": w["dose"],
                }
            )
            if not (folder / name).exists():
                jobs.append((folder / name, size, seed, i, f, w["condition"], w["dose"]))
    if jobs:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(workers) as pool:
            for _ in pool.imap_unordered(_write_field, jobs):
                pass
    table = pd.DataFrame(rows)
    quarter = table[table["well"].isin([w["well"] for w in plate_layout(wells)[::4]])]  # every 4th well
    atomic_write(folder / "plate_map_quarter.csv", lambda fh: fh.write(quarter.to_csv(index=False).encode()))
    atomic_write(folder / "plate_map.csv", lambda fh: fh.write(table.to_csv(index=False).encode()))
    return folder
