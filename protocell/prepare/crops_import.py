"""Pre-cut single-cell crops → the crop store: ``python prepare.py mode=crops input=<folder>``.

Public single-cell sets often ship as crops, one file per cell. ``import_crops`` writes them into
protocell's crop store (``protocell.data.store``) so that ``train.py data=prepared`` reads them like
any prepared plate (docs/crops.md walks through it).

Inputs:

- **crops**: ``.npy`` or ``.tif``/``.tiff``, one cell per file, all of one size (C, S, S) — (S, S, C)
  and (S, S) are read too; ``channels`` names the C channels in file order;
- **condition**: the first folder under ``input`` (``input/Ref/…``, ``input/Exp/…``), or a ``condition``
  group of ``pattern``, or the ``condition`` column of ``metadata``;
- **where each cell came from**: ``plate``, ``well``, ``field``, ``image_id`` from the metadata CSV
  (columns ``file`` — the path relative to ``input`` — and ``condition``, optionally ``plate``,
  ``well``, ``field``, ``image_id``, ``mask``, ``true_label``) or from the named groups of ``pattern``
  (a regular expression on the path relative to ``input``). Without a well every crop is its own
  image: the split then separates cells, not images (a warning says so);
- **masks**: ``masks=auto`` takes a mask file where one exists (``<name>.mask.npy`` / ``.mask.tif``
  beside the crop, or the metadata's ``mask`` column) and segments the crop otherwise; ``files``
  requires one for every crop; ``segment`` always segments (``centre_object_mask``: the watershed
  of ``protocell.prepare.segment`` on the crop's own main and nuclei channels, the object under
  the crop's centre); ``none`` uses the whole crop.

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
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from protocell.data.store import MANIFEST_COLUMNS, POSITION_COLUMNS, CropStoreWriter
from protocell.doses import DOSE_COLUMN, parse_doses
from protocell.doses import NEED as DOSE_NEED
from protocell.fsutil import atomic_write_json, folder_problem, output_errors
from protocell.prepare.classes import class_order
from protocell.prepare.io import InputError
from protocell.prepare.plate import read_table, same_rows

log = logging.getLogger("protocell.prepare")

CROP_SUFFIXES = (".npy", ".tif", ".tiff")
MASK_MODES = ("auto", "files", "segment", "none")
LOCATION = ("plate", "well", "field", "image_id")
PATTERN_GROUPS = ("condition", *LOCATION)      # the named groups of ``pattern`` that say where a crop came from
STORE_DTYPES = ("uint8", "uint16", "float32")


# ----------------------------------------------------------------------------- reading

def _is_mask(path: Path) -> bool:
    return path.suffix.lower() in CROP_SUFFIXES and path.stem.lower().endswith(".mask")


def list_crops(root: Path, skip: tuple[Path, ...] = ()) -> tuple[list[str], set[str]]:
    """(crop files, mask files) under ``root`` as posix paths relative to it, sorted. Hidden files
    and ``skip`` (the metadata CSV, the store's own folder when it lies inside ``root``, and whatever
    is in it) are ignored; any other file that is not a crop is refused."""
    crops, masks = [], set()
    skip = {p.resolve() for p in skip}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if p.is_dir() or any(part.startswith(".") for part in rel.parts) or \
                any(q == p.resolve() or q in p.resolve().parents for q in skip):
            continue
        if _is_mask(p):
            masks.add(rel.as_posix())
        elif p.suffix.lower() in CROP_SUFFIXES:
            crops.append(rel.as_posix())
        else:
            raise InputError(f"{p} is not a crop ({', '.join(CROP_SUFFIXES)}): remove it from input={root}, or "
                             "move the crops into a folder of their own")
    if not crops:
        raise InputError(f"input={root} holds no crops ({', '.join(CROP_SUFFIXES)} files, one cell per file)")
    return crops, masks


def _header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of a crop file without reading its pixels."""
    try:
        if path.suffix.lower() == ".npy":
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
            return tuple(arr.shape), arr.dtype
        import tifffile

        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            return tuple(series.shape), np.dtype(series.dtype)
    except Exception as err:  # noqa: BLE001 - any reader failure is a bad file to the user
        raise InputError(f"{path} cannot be read as a crop ({type(err).__name__}: {str(err)[:200]}); re-export it "
                         "as .npy or .tif, or remove it") from None


def read_array(path: Path) -> np.ndarray:
    try:
        if path.suffix.lower() == ".npy":
            return np.load(path, allow_pickle=False)
        import tifffile

        return tifffile.imread(path)
    except Exception as err:  # noqa: BLE001
        raise InputError(f"{path} cannot be read as a crop ({type(err).__name__}: {str(err)[:200]}); re-export it "
                         "as .npy or .tif, or remove it") from None


def crop_shape(shape: tuple[int, ...], n_channels: int, path) -> tuple[tuple[int, int, int], str]:
    """(C, H, W) of a crop file's array shape, and its layout (``CYX``, ``YXC`` or ``YX``)."""
    if len(shape) == 2 and n_channels == 1:
        return (1, *shape), "YX"
    if len(shape) == 3 and shape[0] == n_channels:
        return tuple(shape), "CYX"
    if len(shape) == 3 and shape[-1] == n_channels:
        return (shape[2], shape[0], shape[1]), "YXC"
    raise InputError(f"{path} has shape {tuple(shape)}, which does not hold the {n_channels} channels that "
                     f"channels.names lists: give one name per channel (C, H, W or H, W, C), e.g. "
                     "channels.names=[DNA,tubulin,actin]")


def to_cyx(arr: np.ndarray, layout: str) -> np.ndarray:
    return arr[None] if layout == "YX" else np.moveaxis(arr, -1, 0) if layout == "YXC" else arr


def store_dtype(dtypes: set) -> str:
    """The store's pixel type: the crops' own when they share uint8, uint16 or float32, else float32."""
    names = {np.dtype(d).name for d in dtypes}
    return names.pop() if len(names) == 1 and next(iter(names)) in STORE_DTYPES else "float32"


# ----------------------------------------------------------------------------- where each crop came from

def _relative(name: str, root: Path) -> str | None:
    """A metadata ``file`` value → the crop's path relative to ``root`` (posix, normalised), or None when
    it cannot name a file under ``root`` (empty, outside it, a NUL byte)."""
    name = name.strip()
    if not name or "\x00" in name:
        return None
    p = Path(name)
    if p.is_absolute():
        try:
            return p.resolve().relative_to(root.resolve()).as_posix()
        except (ValueError, OSError):
            return None
    rel = Path(os.path.normpath(name)).as_posix()
    return None if rel == ".." or rel.startswith("../") or rel == "." else rel


# the metadata columns crop_table reads itself; any other column is carried into the manifest as text
META_COLUMNS = ("file", "condition", "plate", "well", "field", "image_id", "mask", "true_label")
OWN_COLUMNS = ("file", "mask_source")          # manifest columns the import writes besides MANIFEST_COLUMNS


def read_metadata(metadata: Path, root: Path, crops: list[str]) -> pd.DataFrame:
    """The metadata CSV, one row per crop (``file`` relative to ``root``); every problem (a row naming no
    crop under ``input``, a crop named twice, a crop without a row, an empty well, a ``true_label`` that
    is not -1/0/1, a dose that is not a finite number ≥ 0) refused at once, naming rows."""
    meta = read_table(metadata, "metadata")
    for col in ("file", "condition"):
        if col not in meta:
            raise InputError(f"metadata={metadata} has no '{col}' column: it needs file (path relative to input) "
                             "and condition, optionally plate, well, field, image_id, mask, true_label")
    reserved = [c for c in meta.columns if c not in META_COLUMNS and (c in MANIFEST_COLUMNS or c in OWN_COLUMNS)]
    if reserved:
        raise InputError(f"metadata={metadata} has column(s) {reserved}, which the crop store's manifest uses itself; "
                         "rename them (other columns such as dose or compound are carried into the manifest as they are)")
    if len(meta) == 0:
        raise InputError(f"metadata={metadata} has no rows: list one row per crop (file, condition, …)")
    files = [_relative(f, root) for f in meta["file"]]
    problems = [f"metadata={metadata} row {i + 2}: file {meta['file'].iloc[i]!r} does not name a file under input={root}"
                for i, f in enumerate(files) if f is None]
    meta["file"] = [f or "" for f in files]
    repeats = set()
    for rows in same_rows(meta):
        repeats.update(rows[1:])
        problems.append(f"metadata={metadata} rows {', '.join(str(r + 2) for r in rows)} are the same row (every "
                        "column equal): delete all but one")
    named = meta[(meta["file"] != "") & ~meta.index.isin(repeats)]
    for f, rows in named.groupby("file").indices.items():
        if len(rows) > 1:
            rows = named.index[rows]
            listed = " and ".join(f"row {r + 2} (condition {meta['condition'][r]!r}"
                                  + (f", well {meta['well'][r]!r}" if "well" in meta else "") + ")" for r in rows)
            problems.append(f"metadata={metadata} names the crop {f} in {listed}: one crop is one cell, and it would "
                            "be stored twice (as two conditions, or in train and in test); keep one row")
    for col in ("well", "image_id"):
        if col in meta and (meta[col].str.strip() == "").any():
            rows = [str(i + 2) for i in np.flatnonzero((meta[col].str.strip() == "").to_numpy())]
            problems.append(f"metadata={metadata} row(s) {', '.join(rows[:5])}{' …' if len(rows) > 5 else ''} have an "
                            f"empty {col}: give every crop its {col}, or drop the column")
    if "true_label" in meta:
        bad = ~meta["true_label"].str.strip().isin(["", "-1", "0", "1"])
        problems += [f"metadata={metadata} row {i + 2}: true_label {meta['true_label'].iloc[i]!r} is not 1 (affected), "
                     "0 (not) or -1/empty (unknown)" for i in np.flatnonzero(bad.to_numpy())]
    if DOSE_COLUMN in meta:
        _, bad = parse_doses(meta[DOSE_COLUMN])
        problems += [f"metadata={metadata} row {i + 2} ({meta['file'].iloc[i]}): dose {meta[DOSE_COLUMN].iloc[i]!r} is "
                     f"not {DOSE_NEED}" for i in np.flatnonzero(bad.to_numpy())]
    if problems:
        raise InputError("\n".join(problems))
    missing = sorted(set(crops) - set(meta["file"]))
    if missing:
        raise InputError(f"{len(missing)} crop file(s) have no row in metadata={metadata}, e.g. {missing[0]}: add "
                         "their rows (file, condition, …) or remove the files from input")
    extra = sorted(set(meta["file"]) - set(crops))
    if extra:
        raise InputError(f"metadata={metadata} lists {len(extra)} file(s) that are not crops under input={root}, "
                         f"e.g. {extra[0]}: fix the paths (relative to input) or drop the rows")
    return meta.apply(lambda c: c if c.name == "file" else c.str.strip())


def crop_table(root: Path, crops: list[str], metadata: str | Path | None, pattern: str | None) -> pd.DataFrame:
    """One row per crop file: file, condition, plate, well, field, image_id (+ mask, true_label and any
    other column the metadata has), from the metadata CSV (``read_metadata``), the pattern's named
    groups and the folder name."""
    table = pd.DataFrame({"file": crops})
    if metadata:
        table = table.merge(read_metadata(Path(metadata), root, crops), on="file", how="left")
    if pattern:
        try:
            rx = re.compile(pattern)
        except re.error as err:
            raise InputError(f"pattern={pattern!r} is not a valid regular expression ({err})") from None
        found = []
        for f in table["file"]:
            m = rx.search(f)
            if m is None:
                raise InputError(f"pattern={pattern!r} does not match the crop {f}: every crop path (relative to "
                                 "input) must match; test it with python -c \"import re; print(re.search(…))\"")
            found.append({k: v for k, v in m.groupdict().items() if v is not None and k in PATTERN_GROUPS})
        groups = pd.DataFrame(found, index=table.index, columns=[g for g in PATTERN_GROUPS if g in rx.groupindex])
        for col in groups:
            if groups[col].notna().any() and (col not in table or (table[col] == "").all()):
                table[col] = groups[col].fillna("")
    if "condition" not in table or (table["condition"] == "").any():
        no_folder = [f for f in table["file"] if "/" not in f]
        if no_folder and ("condition" not in table or (table["condition"] == "").any()):
            raise InputError(f"cannot tell the condition of {no_folder[0]}: put the crops in one folder per condition "
                             "(input/<condition>/…), or give metadata=<csv> with a condition column, or a pattern "
                             "with a (?P<condition>…) group")
        folder = table["file"].str.split("/").str[0]
        table["condition"] = table["condition"].where(table["condition"] != "", folder) if "condition" in table \
            else folder
    for col, default in (("plate", "plate1"), ("field", "0")):
        if col not in table:
            table[col] = default
        table[col] = table[col].replace("", default)
    if "well" not in table and "image_id" not in table:
        log.warning("no well or image given (metadata columns or pattern groups): every crop is its own image, so "
                    "the split and the statistics treat cells as independent; give well (and field) to keep the "
                    "cells of one image together")
        table["image_id"] = table["file"].str.rsplit(".", n=1).str[0]
    if "image_id" not in table:
        table["image_id"] = table["plate"] + "_" + table["well"] + "_f" + table["field"].astype(str)
    if "well" not in table:
        table["well"] = table["image_id"]
    return table


# ----------------------------------------------------------------------------- masks

def _unit(x: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(x, (1, 99.8))
    return np.clip((x.astype(np.float32) - lo) / max(hi - lo, 1e-6), 0, 1)


def centre_object_mask(crop: np.ndarray, main: int, second: int | None = None) -> np.ndarray | None:
    """The cell under the crop's centre, (S, S) bool; None when nothing is found.

    Each channel is scaled to its own [1st, 99.8th] percentiles; with a nuclei channel (``second``)
    the nuclei-seeded watershed of ``protocell.prepare.segment`` splits touching cells (Otsu
    thresholds on this crop), else the main channel above Otsu is labelled. The object under the
    centre pixel is kept, or the one nearest to it."""
    from scipy import ndimage as ndi
    from skimage.filters import threshold_otsu

    from protocell.prepare.segment import WatershedSegmenter

    a = _unit(crop[main])
    if a.max() <= a.min():
        return None
    if second is not None:
        b = _unit(crop[second])
        thr = {"cell": float(threshold_otsu(a)), "nuclei": float(threshold_otsu(b)) if b.max() > b.min() else 1.0}
        labels = WatershedSegmenter(min_nucleus_area=max(4, crop.shape[-1] // 4))(a, b, thr)
    else:
        labels = np.zeros(a.shape, np.int32)
    if labels.max() == 0:
        labels, _ = ndi.label(ndi.binary_fill_holes(a > threshold_otsu(a)))
    if labels.max() == 0:
        return None
    S = a.shape[0]
    c = labels[S // 2, a.shape[1] // 2]
    if c == 0:
        yy, xx = np.nonzero(labels)
        k = np.argmin((yy - S / 2) ** 2 + (xx - a.shape[1] / 2) ** 2)
        c = labels[yy[k], xx[k]]
    return labels == c


def mask_file(root: Path, row: pd.Series, masks: set[str]) -> Path | None:
    """The mask file of a crop: the metadata's ``mask`` column, else ``<name>.mask.<suffix>`` beside it."""
    given = row.get("mask", "")
    if isinstance(given, str) and given:
        return root / given
    stem = row["file"].rsplit(".", 1)[0]
    for suffix in CROP_SUFFIXES:
        if f"{stem}.mask{suffix}" in masks:
            return root / f"{stem}.mask{suffix}"
    return None


def read_mask(path: Path, S: int) -> np.ndarray:
    if not path.exists():
        raise InputError(f"mask file {path} does not exist: fix the metadata's mask column or add the file")
    m = np.squeeze(read_array(path))
    if m.shape != (S, S):
        raise InputError(f"mask file {path} has shape {m.shape}, its crop is {S}×{S}: a mask is one (H, W) plane "
                         "of the crop's size, non-zero inside the cell")
    return m > 0


# ----------------------------------------------------------------------------- the import

def check_pixels(root: Path, table: pd.DataFrame, layouts: dict, floats: set[str], dtype: str, masks: str,
                 mask_files: set[str], S: int) -> None:
    """Before anything is written: every crop's pixels are finite once stored as ``dtype`` (the crops of
    a float type, ``floats``, are read here; an integer one cannot hold NaN), and every mask file the
    import would read exists and is one (S, S) plane (``crops.masks=files``: every crop has one). All
    problems at once."""
    problems, nonfinite = [], []
    for _, r in table.iterrows():
        if r["file"] in floats:
            with np.errstate(over="ignore"):          # a value beyond the store's type becomes inf: found below
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
                problems.append(f"crops.masks=files but {root / r['file']} has no mask file (<name>.mask.npy or .tif "
                                "beside it, or the metadata's mask column); use crops.masks=auto to segment the rest")
        elif not path.is_file():
            problems.append(f"mask file {path} does not exist: fix the metadata's mask column or add the file")
        else:
            shape = tuple(d for d in _header(path)[0] if d != 1)
            if shape != (S, S):
                problems.append(f"mask file {path} has shape {shape}, its crop is {S}×{S}: a mask is one (H, W) plane "
                                "of the crop's size, non-zero inside the cell")
    if nonfinite:
        problems.insert(0, f"{len(nonfinite)} crop(s) hold NaN or infinite pixel values (as {dtype}; a value beyond "
                           f"float32's range is infinite there): {'; '.join(nonfinite[:5])}"
                           f"{' …' if len(nonfinite) > 5 else ''}: a network cannot read them; fix or remove these crops")
    if problems:
        raise InputError(f"{len(problems)} input problem(s) under input={root}:\n- " + "\n- ".join(problems[:20])
                         + (f"\n- … and {len(problems) - 20} more" if len(problems) > 20 else ""))


def import_crops(input: str | Path, channels: list[str], output: str | Path | None = None, *,
                 metadata: str | Path | None = None, pattern: str | None = None, masks: str = "auto",
                 main: str | None = None, second: str | None = None, conditions: list[str] | None = None,
                 shard_size: int = 2048, progress: bool = True) -> Path:
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
        raise InputError(f"config value output={str(out)!r} is invalid: a folder for the crop store (created if "
                         f"absent), not a file and not the input folder; it {problem or 'is input='}")
    crops, mask_files = list_crops(root, skip=((Path(metadata),) if metadata else ()) + (out,))
    table = crop_table(root, crops, metadata, pattern)
    order = class_order(table["condition"].tolist(), conditions, f"the crops under input={root}")

    # every header first: mixed sizes and wrong channel counts are refused before anything is written
    shapes, dtypes, layouts, floats = {}, set(), {}, set()
    for f in crops:
        shape, dtype = _header(root / f)
        if dtype.kind not in "uif":
            raise InputError(f"{root / f}: pixel type {dtype} is not a number type; re-export as uint16 or float32")
        shapes[f], layouts[f] = crop_shape(shape, len(channels), root / f)
        dtypes.add(dtype)
        if dtype.kind == "f":
            floats.add(f)
    sizes = pd.Series(shapes).map(lambda s: "×".join(map(str, s)))
    if sizes.nunique() > 1:
        counts = sizes.value_counts()
        odd = sizes[sizes != counts.index[0]]
        raise InputError(f"crops of mixed sizes: {counts.iloc[0]} are {counts.index[0]}, {len(odd)} others, e.g. "
                         f"{odd.index[0]} ({odd.iloc[0]}): crop or pad them to one size (C × S × S) first")
    C, H, W = next(iter(shapes.values()))
    if H != W:
        raise InputError(f"crops are {H}×{W} pixels: protocell's crops are square; pad them to {max(H, W)}×{max(H, W)}")
    dtype = store_dtype(dtypes)
    main_i, second_i = segmentation_channels(channels, main, second)
    check_pixels(root, table, layouts, floats, dtype, masks, mask_files, H)
    extra = [c for c in table.columns if c not in META_COLUMNS and c not in LOCATION]   # the metadata's own columns

    created = not out.exists()
    try:
        with output_errors(out, "output", InputError):
            (out / "store.json").unlink(missing_ok=True)      # unfinished until written again, last
            writer = CropStoreWriter(out, channels, H, source="crops")
            mask_count = _write(root, table, layouts, writer, dtype, masks, mask_files, main_i, second_i, order,
                                    extra, shard_size, tqdm(total=len(table), desc="crops", unit="crop",
                                                            disable=None if progress else True))
            if mask_count["whole crop"] and masks != "none":
                log.warning("%d crop(s) had no object to segment: their mask is the whole crop", mask_count["whole crop"])
            writer.extra = {"conditions": order, "normalization": {"method": "as_given"},
                            "crops": {"input": str(root), "metadata": str(metadata) if metadata else None,
                                      "pattern": pattern, "masks": masks, "mask_sources": mask_count}}
            df = writer.finish()
            atomic_write_json(out / "prepare_summary.json", {
                "store": str(out), "mode": "crops", "cells": int(len(df)), "crop": [C, H, W], "dtype": dtype,
                "conditions": order,
                "cells_per_condition": {k: int(v) for k, v in df.groupby("condition").size().items()},
                "cells_per_well": {f"{p}/{w}": int(v) for (p, w), v in df.groupby(["plate", "well"]).size().items()},
                "images": int(df["image_id"].nunique()), "mask_sources": mask_count})
    except BaseException:
        if created:                 # a failed import into a new folder leaves no folder
            shutil.rmtree(out, ignore_errors=True)
        raise
    log.info("crop store written: %s (%d crops, %d images, masks %s)", out, len(df), df["image_id"].nunique(), mask_count)
    return out


def _write(root: Path, table: pd.DataFrame, layouts: dict, writer: CropStoreWriter, dtype: str, masks: str,
           mask_files: set[str], main_i: int, second_i: int | None, order: list[str], extra: list[str],
           shard_size: int, bar) -> dict:
    """Every crop and its mask into shards of ``shard_size``; returns how many masks came from each
    source (file, segmented, whole crop)."""
    writer.dtype = dtype
    label = {c: k for k, c in enumerate(order)}
    mask_count = {"file": 0, "segmented": 0, "whole crop": 0}
    for start in range(0, len(table), shard_size):
        part = table.iloc[start:start + shard_size]
        xs, ms, rows = [], [], []
        for i, r in part.iterrows():
            x = to_cyx(read_array(root / r["file"]), layouts[r["file"]]).astype(dtype)
            m, how = crop_mask(root, r, mask_files, x, masks, main_i, second_i)
            mask_count[how] += 1
            xs.append(x)
            ms.append(m)
            rows.append({**{c: str(r[c]) for c in extra},
                         "cell_id": int(i), "image_id": str(r["image_id"]), "plate": str(r["plate"]),
                         "well": str(r["well"]), "field": str(r["field"]), "condition": r["condition"],
                         "label": label[r["condition"]], "true_label": int(r.get("true_label") or -1),
                         **{c: np.nan for c in POSITION_COLUMNS}, "file": r["file"], "mask_source": how})
            bar.update()
        writer.write_shard(f"crops_{start // shard_size:05d}", np.stack(xs), np.stack(ms).astype(np.uint8), rows)
    bar.close()
    return mask_count


def segmentation_channels(channels: list[str], main: str | None, second: str | None) -> tuple[int, int | None]:
    """(main, nuclei) channel indices for segmenting a crop: the given names when the crops have
    them, else the first channel not named like DNA and the first one that is (or none)."""
    dna = [i for i, c in enumerate(channels) if re.search(r"dna|nuc|dapi|hoechst", c.lower())]
    main_i = channels.index(main) if main in channels else next((i for i in range(len(channels)) if i not in dna), 0)
    if second in channels and channels.index(second) != main_i:
        return main_i, channels.index(second)
    return main_i, next((i for i in dna if i != main_i), None)


def crop_mask(root: Path, row: pd.Series, mask_files: set[str], crop: np.ndarray, mode: str, main: int,
              second: int | None) -> tuple[np.ndarray, str]:
    """(mask (S, S) bool, how it was made: file | segmented | whole crop) of one crop."""
    S = crop.shape[-1]
    if mode in ("auto", "files"):
        path = mask_file(root, row, mask_files)
        if path is not None:
            return read_mask(path, S), "file"
        if mode == "files":
            raise InputError(f"crops.masks=files but {root / row['file']} has no mask file (<name>.mask.npy or .tif "
                             "beside it, or the metadata's mask column); use crops.masks=auto to segment the rest")
    if mode != "none":
        m = centre_object_mask(crop, main, second)
        if m is not None and m.any():
            return m, "segmented"
    return np.ones((S, S), bool), "whole crop"


def default_output(root: Path, metadata, pattern, channels, masks) -> Path:
    tag = hashlib.sha1(json.dumps([str(root.resolve()), str(metadata), pattern, channels, masks]).encode()).hexdigest()[:8]
    return Path("outputs") / "prepared" / f"{root.resolve().name}-crops-{tag}"


def import_from_config(c: dict) -> Path:
    """``prepare.py mode=crops``: conf/prepare.yaml (resolved) → ``import_crops``."""
    crops = c.get("crops") or {}
    ch = c.get("channels") or {}
    if not c.get("input"):
        raise InputError("config value input is missing: prepare.py mode=crops input=<folder of crops>")
    return import_crops(c["input"], list(ch.get("names") or []), c.get("output"), metadata=c.get("metadata"),
                        pattern=c.get("pattern"), masks=crops.get("masks", "auto"), main=ch.get("main"),
                        second=ch.get("second"), conditions=c.get("conditions"),
                        shard_size=int(c.get("shard_size", 2048)), progress=bool(c.get("progress", True)))
