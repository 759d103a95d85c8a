"""What a prepare reports beside its store: ``prepare_summary.json`` (the store's totals, and per image its
cells, what was dropped, thresholds, normalisation and background), the confound report (``confounds.csv``)
and overlay PNGs of a segmented tile.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from protocell.fsutil import atomic_write, atomic_write_text
from protocell.prepare.settings import atomic_json

log = logging.getLogger("protocell.prepare")


def write_summary(
    out: Path,
    chash: str,
    sources,
    by_id,
    records,
    stats,
    df,
    order: list[str],
    seconds: float,
    shares: list[dict] | None = None,
) -> None:
    """``prepare_summary.json`` of the store ``df`` (its manifest) just written in ``out``; overlays of images
    it no longer holds are deleted. ``shares``: the share tasks' reports, for a merged store."""
    orig = df[df["aug_of"] < 0]
    per_image = []
    for s in sources:
        e, rec = by_id[s.image_id], records[s.image_id]
        n = int((orig["image_id"] == s.image_id).sum())
        per_image.append(
            {
                "image_id": s.image_id,
                "plate": e.plate,
                "well": e.well,
                "field": e.field,
                "condition": e.condition,
                "height": s.shape[0],
                "width": s.shape[1],
                "tiles": rec["tiles"],
                "cells": n,
                "status": "ok" if n else "no cells found",
                "dropped": {k: v for k, v in rec["counts"].items() if k not in ("objects", "kept")},
                "thresholds": stats[s.image_id]["thresholds"],
                "normalisation": stats[s.image_id]["channels"],
                "background": rec.get("background", {}),
                "meta": dict(e.meta),
            }
        )
    summary = {
        "store": str(out),
        "config_hash": chash,
        "seconds": round(seconds, 2),
        "images": len(sources),
        "cells": int(len(orig)),
        "augmented": int((df["aug_of"] >= 0).sum()),
        "megapixels": round(sum(s.shape[0] * s.shape[1] for s in sources) / 1e6, 3),
        "cells_per_well": {f"{p}/{w}": int(v) for (p, w), v in orig.groupby(["plate", "well"]).size().items()},
        "cells_per_condition": {k: int(v) for k, v in orig.groupby("condition").size().items()},
        "cells_per_split": {k: int(v) for k, v in df.groupby("split").size().items()},
        "images_without_cells": [r["image_id"] for r in per_image if r["cells"] == 0],
        "overlays": [p for s in sources for p in records[s.image_id]["overlays"]],
        "confounds": confound_report(out, orig, per_image, order),
        "per_image": per_image,
    }
    if shares:  # a merged store: what each share task did
        summary["shares"] = shares
    atomic_json(out / "prepare_summary.json", summary)
    for f in (out / "overlays").glob("*.png"):  # figures of images this store no longer holds
        if f"overlays/{f.name}" not in summary["overlays"]:
            f.unlink()


def confound_report(out: Path, orig: pd.DataFrame, per_image: list[dict], order: list[str]) -> dict:
    """The confound report (``protocell.prepare.confounds``): could cell count, mask shape, a
    channel's mean inside the cells or the background alone tell the conditions apart, over wells?
    Logged, written to ``confounds.csv`` and returned for ``prepare_summary.json``."""
    from protocell.prepare.confounds import FLAG_AUROC, confound_table, summary_lines

    images = pd.DataFrame(
        [
            {"plate": r["plate"], "well": r["well"], **{f"background_{k}": v for k, v in r["background"].items()}}
            for r in per_image
        ]
    )
    table = confound_table(orig, images, order)
    for line in summary_lines(table):
        log.info("%s", line)
    path = out / "confounds.csv"
    if table.empty:
        path.unlink(missing_ok=True)
        return {"available": False, "reason": "needs two conditions with cells"}
    atomic_write_text(path, table.to_csv(index=False))
    flagged = table.loc[table["flag"], "feature"].tolist()
    if flagged:
        log.warning(
            "confound report: %s alone separate(s) %s from %s over wells (strength > %.2f) and "
            "describe(s) imaging or segmentation, not the cells: a network may read them instead of "
            "the biology (for the mask: segmentation=distance grows cells from the nuclei by a fixed "
            "distance); see %s",
            ", ".join(flagged),
            order[-1],
            order[0],
            FLAG_AUROC,
            path,
        )
    return {
        "available": True,
        "reference": order[0],
        "exposed": order[-1],
        "flag_auroc": FLAG_AUROC,
        "flagged": flagged,
        "unit": "well (per-well means of the cells; background: of the images)",
        "table": table.to_dict(orient="records"),
    }


def write_overlay(path: Path, main: np.ndarray, second: np.ndarray, labels: np.ndarray, kept: set) -> Path:
    """RGB PNG: main channel grey, nuclei blue, kept cells outlined green, dropped objects red."""
    import matplotlib
    from skimage.segmentation import find_boundaries

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # annotated, in steps: numpy's overloads made mypy spend 12 s on the nested one-line form
    g: np.ndarray = np.clip(main, 0, 1)
    blue: np.ndarray = np.clip(g + 0.6 * np.clip(second, 0, 1), 0, 1)
    rgb = np.stack([g, g, blue], -1)
    edges = find_boundaries(labels, mode="inner")
    kept_mask = np.isin(labels, list(kept)) if kept else np.zeros(labels.shape, bool)
    rgb[edges & kept_mask] = (0.1, 1.0, 0.1)
    rgb[edges & ~kept_mask] = (1.0, 0.2, 0.2)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda fh: plt.imsave(fh, rgb, format="png"), fsync=False)
