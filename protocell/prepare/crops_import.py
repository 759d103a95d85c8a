"""Pre-cut single-cell crops → the crop store: ``python prepare.py mode=crops input=<folder>``.

Public single-cell sets often ship as crops, one file per cell. ``import_crops`` writes them into
protocell's crop store (``protocell.data.store``) so that ``train.py data=prepared`` reads them like
any prepared plate (docs/crops.md walks through it).

Inputs:

- **crops**: one cell per file, all of one size (``protocell.prepare.crops_files``);
- **condition** and **where each cell came from** (plate, well, field, image): the folder, ``pattern``
  or ``metadata`` (``protocell.prepare.crops_table``);
- **masks**: mask files, or each crop segmented, or none (``crops.masks``, ``protocell.prepare.crops_masks``).

The store records ``normalization: {"method": "as_given"}`` (nothing was normalised here), so
training picks per-cell normalisation with ``data.normalize=auto``; bounding boxes and centroids in
the source image are unknown and left empty (figures then name the crop's file instead).
Bad inputs are refused before anything is written: a file that is not a crop, crops of mixed
sizes, crops without a metadata row (or rows without a file), channel counts that do not match.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from protocell.config_commands import MASK_MODES
from protocell.data.store import POSITION_COLUMNS, CropStoreWriter
from protocell.fsutil import atomic_write_json, folder_problem, output_errors
from protocell.prepare.classes import class_order
from protocell.prepare.crops_files import crop_shape, list_crops, read_array, read_header, store_dtype, to_cyx
from protocell.prepare.crops_masks import crop_mask, mask_file, segmentation_channels
from protocell.prepare.crops_table import LOCATION, META_COLUMNS, crop_table
from protocell.prepare.io import InputError

log = logging.getLogger("protocell.prepare")


def check_pixels(
    root: Path,
    table: pd.DataFrame,
    layouts: dict,
    floats: set[str],
    dtype: str,
    masks: str,
    mask_files: set[str],
    S: int,
) -> None:
    """Before anything is written: every crop's pixels are finite once stored as ``dtype`` (the crops of
    a float type, ``floats``, are read here; an integer one cannot hold NaN), and every mask file the
    import would read exists and is one (S, S) plane (``crops.masks=files``: every crop has one). All
    problems at once."""
    problems, nonfinite = [], []
    for _, r in table.iterrows():
        if r["file"] in floats:
            with np.errstate(over="ignore"):  # a value beyond the store's type becomes inf: found below
                x = to_cyx(read_array(root / r["file"]), layouts[r["file"]]).astype(dtype)
            bad = ~np.isfinite(x)
            if bad.any():
                c, y, xx = (int(v) for v in np.argwhere(bad)[0])
                nonfinite.append(f"{r['file']} ({int(bad.sum())} pixel(s), first at channel {c}, y={y}, x={xx})")
        if masks not in ("auto", "files"):
            continue
        path = mask_file(root, r, mask_files)
        if path is None:
            if masks == "files":
                problems.append(
                    f"crops.masks=files but {root / r['file']} has no mask file (<name>.mask.npy or .tif "
                    "beside it, or the metadata's mask column); use crops.masks=auto to segment the rest"
                )
        elif not path.is_file():
            problems.append(f"mask file {path} does not exist: fix the metadata's mask column or add the file")
        else:
            shape = tuple(d for d in read_header(path)[0] if d != 1)
            if shape != (S, S):
                problems.append(
                    f"mask file {path} has shape {shape}, its crop is {S}×{S}: a mask is one (H, W) plane "
                    "of the crop's size, non-zero inside the cell"
                )
    if nonfinite:
        problems.insert(
            0,
            f"{len(nonfinite)} crop(s) hold NaN or infinite pixel values (as {dtype}; a value beyond "
            f"float32's range is infinite there): {'; '.join(nonfinite[:5])}"
            f"{' …' if len(nonfinite) > 5 else ''}: a network cannot read them; fix or remove these crops",
        )
    if problems:
        raise InputError(
            f"{len(problems)} input problem(s) under input={root}:\n- "
            + "\n- ".join(problems[:20])
            + (f"\n- … and {len(problems) - 20} more" if len(problems) > 20 else "")
        )


def import_crops(
    input: str | Path,
    channels: list[str],
    output: str | Path | None = None,
    *,
    metadata: str | Path | None = None,
    pattern: str | None = None,
    masks: str = "auto",
    main: str | None = None,
    second: str | None = None,
    conditions: list[str] | None = None,
    shard_size: int = 2048,
    progress: bool = True,
) -> Path:
    """Write the crops under ``input`` as a crop store (see the module docstring); returns its folder.

    ``channels``: channel names in file order; ``main``/``second``: the cell-body and nuclei channels
    segmentation uses (default: the first channel, and a channel named like DNA/nuclei if any);
    ``output``: the store folder (default ``outputs/prepared/<input name>-crops-<hash>``; inside
    ``input``, its files are not read as crops). Every check — files, metadata, sizes, NaN/inf
    pixels, mask files — runs before anything is written; a refused import leaves no folder."""
    from tqdm import tqdm

    root = Path(input)
    if not root.is_dir():
        raise InputError(f"config value input={str(input)!r} is invalid: an existing folder of crops")
    if masks not in MASK_MODES:
        raise InputError(f"config value crops.masks={masks!r} is invalid: one of {MASK_MODES}")
    channels = list(channels)
    if len(set(channels)) != len(channels) or not channels:
        raise InputError(f"config value channels.names={channels} is invalid: distinct channel names, in file order")
    if metadata and not Path(metadata).is_file():
        raise InputError(f"config value metadata={str(metadata)!r} is invalid: an existing CSV file")
    out = Path(output) if output else default_output(root, metadata, pattern, channels, masks)
    problem = folder_problem(out)
    if problem or out.resolve() == root.resolve():
        raise InputError(
            f"config value output={str(out)!r} is invalid: a folder for the crop store (created if "
            f"absent), not a file and not the input folder; it {problem or 'is input='}"
        )
    crops, mask_files = list_crops(root, skip=((Path(metadata),) if metadata else ()) + (out,))
    table = crop_table(root, crops, metadata, pattern)
    order = class_order(table["condition"].tolist(), conditions, f"the crops under input={root}")

    # every header first: mixed sizes and wrong channel counts are refused before anything is written
    shapes, dtypes, layouts, floats = {}, set(), {}, set()
    for f in crops:
        shape, file_dtype = read_header(root / f)
        if file_dtype.kind not in "uif":
            raise InputError(
                f"{root / f}: pixel type {file_dtype} is not a number type; re-export as uint16 or float32"
            )
        shapes[f], layouts[f] = crop_shape(shape, len(channels), root / f)
        dtypes.add(file_dtype)
        if file_dtype.kind == "f":
            floats.add(f)
    sizes = pd.Series(shapes).map(lambda s: "×".join(map(str, s)))
    if sizes.nunique() > 1:
        counts = sizes.value_counts()
        odd = sizes[sizes != counts.index[0]]
        raise InputError(
            f"crops of mixed sizes: {counts.iloc[0]} are {counts.index[0]}, {len(odd)} others, e.g. "
            f"{odd.index[0]} ({odd.iloc[0]}): crop or pad them to one size (C × S × S) first"
        )
    C, H, W = next(iter(shapes.values()))
    if H != W:
        raise InputError(f"crops are {H}×{W} pixels: protocell's crops are square; pad them to {max(H, W)}×{max(H, W)}")
    dtype = store_dtype(dtypes)
    main_i, second_i = segmentation_channels(channels, main, second)
    check_pixels(root, table, layouts, floats, dtype, masks, mask_files, H)
    extra = [c for c in table.columns if c not in META_COLUMNS and c not in LOCATION]  # the metadata's own columns

    created = not out.exists()
    try:
        with output_errors(out, "output", InputError):
            (out / "store.json").unlink(missing_ok=True)  # unfinished until written again, last
            writer = CropStoreWriter(out, channels, H, source="crops")
            mask_count = _write(
                root,
                table,
                layouts,
                writer,
                dtype,
                masks,
                mask_files,
                main_i,
                second_i,
                order,
                extra,
                shard_size,
                tqdm(total=len(table), desc="crops", unit="crop", disable=None if progress else True),
            )
            if mask_count["whole crop"] and masks != "none":
                log.warning(
                    "%d crop(s) had no object to segment: their mask is the whole crop", mask_count["whole crop"]
                )
            writer.extra = {
                "conditions": order,
                "normalization": {"method": "as_given"},
                "crops": {
                    "input": str(root),
                    "metadata": str(metadata) if metadata else None,
                    "pattern": pattern,
                    "masks": masks,
                    "mask_sources": mask_count,
                },
            }
            df = writer.finish()
            atomic_write_json(
                out / "prepare_summary.json",
                {
                    "store": str(out),
                    "mode": "crops",
                    "cells": int(len(df)),
                    "crop": [C, H, W],
                    "dtype": dtype,
                    "conditions": order,
                    "cells_per_condition": {k: int(v) for k, v in df.groupby("condition").size().items()},
                    "cells_per_well": {
                        f"{p}/{w}": int(v) for (p, w), v in df.groupby(["plate", "well"]).size().items()
                    },
                    "images": int(df["image_id"].nunique()),
                    "mask_sources": mask_count,
                },
            )
    except BaseException:
        if created:  # a failed import into a new folder leaves no folder
            shutil.rmtree(out, ignore_errors=True)
        raise
    log.info(
        "crop store written: %s (%d crops, %d images, masks %s)", out, len(df), df["image_id"].nunique(), mask_count
    )
    return out


def _write(
    root: Path,
    table: pd.DataFrame,
    layouts: dict,
    writer: CropStoreWriter,
    dtype: str,
    masks: str,
    mask_files: set[str],
    main_i: int,
    second_i: int | None,
    order: list[str],
    extra: list[str],
    shard_size: int,
    bar,
) -> dict:
    """Every crop and its mask into shards of ``shard_size``; returns how many masks came from each
    source (file, segmented, whole crop)."""
    writer.dtype = dtype
    label = {c: k for k, c in enumerate(order)}
    mask_count = {"file": 0, "segmented": 0, "whole crop": 0}
    for start in range(0, len(table), shard_size):
        part = table.iloc[start : start + shard_size]
        xs, ms, rows = [], [], []
        for i, r in part.iterrows():
            x = to_cyx(read_array(root / r["file"]), layouts[r["file"]]).astype(dtype)
            m, how = crop_mask(root, r, mask_files, x, masks, main_i, second_i)
            mask_count[how] += 1
            xs.append(x)
            ms.append(m)
            rows.append(
                {
                    **{c: str(r[c]) for c in extra},
                    "cell_id": int(i),
                    "image_id": str(r["image_id"]),
                    "plate": str(r["plate"]),
                    "well": str(r["well"]),
                    "field": str(r["field"]),
                    "condition": r["condition"],
                    "label": label[r["condition"]],
                    "true_label": int(r.get("true_label") or -1),
                    **{c: np.nan for c in POSITION_COLUMNS},
                    "file": r["file"],
                    "mask_source": how,
                }
            )
            bar.update()
        writer.write_shard(f"crops_{start // shard_size:05d}", np.stack(xs), np.stack(ms).astype(np.uint8), rows)
    bar.close()
    return mask_count


def default_output(root: Path, metadata, pattern, channels, masks) -> Path:
    tag = hashlib.sha1(json.dumps([str(root.resolve()), str(metadata), pattern, channels, masks]).encode()).hexdigest()[
        :8
    ]
    return Path("outputs") / "prepared" / f"{root.resolve().name}-crops-{tag}"


def import_from_config(c: dict) -> Path:
    """``prepare.py mode=crops``: conf/prepare.yaml (resolved) → ``import_crops``."""
    crops = c.get("crops") or {}
    ch = c.get("channels") or {}
    if not c.get("input"):
        raise InputError("config value input is missing: prepare.py mode=crops input=<folder of crops>")
    return import_crops(
        c["input"],
        list(ch.get("names") or []),
        c.get("output"),
        metadata=c.get("metadata"),
        pattern=c.get("pattern"),
        masks=crops.get("masks", "auto"),
        main=ch.get("main"),
        second=ch.get("second"),
        conditions=c.get("conditions"),
        shard_size=int(c.get("shard_size", 2048)),
        progress=bool(c.get("progress", True)),
    )
