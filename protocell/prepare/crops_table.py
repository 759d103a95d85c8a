"""Where each imported crop came from (``protocell.prepare.crops_import``): one row per crop file.

- **condition**: the first folder under ``input`` (``input/Ref/…``, ``input/Exp/…``), or a ``condition``
  group of ``pattern``, or the ``condition`` column of ``metadata``;
- **where each cell came from**: ``plate``, ``well``, ``field``, ``image_id`` from the metadata CSV
  (columns ``file`` — the path relative to ``input`` — and ``condition``, optionally ``plate``,
  ``well``, ``field``, ``image_id``, ``mask``, ``true_label``) or from the named groups of ``pattern``
  (a regular expression on the path relative to ``input``). Without a well every crop is its own
  image: the split then separates cells, not images (a warning says so).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from protocell.data.store import MANIFEST_COLUMNS
from protocell.doses import DOSE_COLUMN, parse_doses
from protocell.doses import NEED as DOSE_NEED
from protocell.prepare.io import InputError
from protocell.prepare.plate import read_table, same_rows

log = logging.getLogger("protocell.prepare")

LOCATION = ("plate", "well", "field", "image_id")
PATTERN_GROUPS = ("condition", *LOCATION)  # the named groups of ``pattern`` that say where a crop came from


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
OWN_COLUMNS = ("file", "mask_source")  # manifest columns the import writes besides MANIFEST_COLUMNS


def read_metadata(metadata: Path, root: Path, crops: list[str]) -> pd.DataFrame:
    """The metadata CSV, one row per crop (``file`` relative to ``root``); every problem (a row naming no
    crop under ``input``, a crop named twice, a crop without a row, an empty well, a ``true_label`` that
    is not -1/0/1, a dose that is not a finite number ≥ 0) refused at once, naming rows."""
    meta = read_table(metadata, "metadata")
    for col in ("file", "condition"):
        if col not in meta:
            raise InputError(
                f"metadata={metadata} has no '{col}' column: it needs file (path relative to input) "
                "and condition, optionally plate, well, field, image_id, mask, true_label"
            )
    reserved = [c for c in meta.columns if c not in META_COLUMNS and (c in MANIFEST_COLUMNS or c in OWN_COLUMNS)]
    if reserved:
        raise InputError(
            f"metadata={metadata} has column(s) {reserved}, which the crop store's manifest uses itself; "
            "rename them (other columns such as dose or compound are carried into the manifest as they are)"
        )
    if len(meta) == 0:
        raise InputError(f"metadata={metadata} has no rows: list one row per crop (file, condition, …)")
    files = [_relative(f, root) for f in meta["file"]]
    problems = [
        f"metadata={metadata} row {i + 2}: file {meta['file'].iloc[i]!r} does not name a file under input={root}"
        for i, f in enumerate(files)
        if f is None
    ]
    meta["file"] = [f or "" for f in files]
    repeats = set()
    for rows in same_rows(meta):
        repeats.update(rows[1:])
        problems.append(
            f"metadata={metadata} rows {', '.join(str(r + 2) for r in rows)} are the same row (every "
            "column equal): delete all but one"
        )
    named = meta[(meta["file"] != "") & ~meta.index.isin(repeats)]
    for f, rows in named.groupby("file").indices.items():
        if len(rows) > 1:
            rows = named.index[rows]
            listed = " and ".join(
                f"row {r + 2} (condition {meta['condition'][r]!r}"
                + (f", well {meta['well'][r]!r}" if "well" in meta else "")
                + ")"
                for r in rows
            )
            problems.append(
                f"metadata={metadata} names the crop {f} in {listed}: one crop is one cell, and it would "
                "be stored twice (as two conditions, or in train and in test); keep one row"
            )
    for col in ("well", "image_id"):
        if col in meta and (meta[col].str.strip() == "").any():
            empty = [str(i + 2) for i in np.flatnonzero((meta[col].str.strip() == "").to_numpy())]
            problems.append(
                f"metadata={metadata} row(s) {', '.join(empty[:5])}{' …' if len(empty) > 5 else ''} have an "
                f"empty {col}: give every crop its {col}, or drop the column"
            )
    if "true_label" in meta:
        bad = ~meta["true_label"].str.strip().isin(["", "-1", "0", "1"])
        problems += [
            f"metadata={metadata} row {i + 2}: true_label {meta['true_label'].iloc[i]!r} is not 1 (affected), "
            "0 (not) or -1/empty (unknown)"
            for i in np.flatnonzero(bad.to_numpy())
        ]
    if DOSE_COLUMN in meta:
        _, bad = parse_doses(meta[DOSE_COLUMN])
        problems += [
            f"metadata={metadata} row {i + 2} ({meta['file'].iloc[i]}): dose {meta[DOSE_COLUMN].iloc[i]!r} is "
            f"not {DOSE_NEED}"
            for i in np.flatnonzero(bad.to_numpy())
        ]
    if problems:
        raise InputError("\n".join(problems))
    missing = sorted(set(crops) - set(meta["file"]))
    if missing:
        raise InputError(
            f"{len(missing)} crop file(s) have no row in metadata={metadata}, e.g. {missing[0]}: add "
            "their rows (file, condition, …) or remove the files from input"
        )
    extra = sorted(set(meta["file"]) - set(crops))
    if extra:
        raise InputError(
            f"metadata={metadata} lists {len(extra)} file(s) that are not crops under input={root}, "
            f"e.g. {extra[0]}: fix the paths (relative to input) or drop the rows"
        )
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
                raise InputError(
                    f"pattern={pattern!r} does not match the crop {f}: every crop path (relative to "
                    'input) must match; test it with python -c "import re; print(re.search(…))"'
                )
            found.append({k: v for k, v in m.groupdict().items() if v is not None and k in PATTERN_GROUPS})
        groups = pd.DataFrame(found, index=table.index, columns=[g for g in PATTERN_GROUPS if g in rx.groupindex])
        for col in groups:
            if groups[col].notna().any() and (col not in table or (table[col] == "").all()):
                table[col] = groups[col].fillna("")
    if "condition" not in table or (table["condition"] == "").any():
        no_folder = [f for f in table["file"] if "/" not in f]
        if no_folder and ("condition" not in table or (table["condition"] == "").any()):
            raise InputError(
                f"cannot tell the condition of {no_folder[0]}: put the crops in one folder per condition "
                "(input/<condition>/…), or give metadata=<csv> with a condition column, or a pattern "
                "with a (?P<condition>…) group"
            )
        folder = table["file"].str.split("/").str[0]
        table["condition"] = (
            table["condition"].where(table["condition"] != "", folder) if "condition" in table else folder
        )
    for col, default in (("plate", "plate1"), ("field", "0")):
        if col not in table:
            table[col] = default
        table[col] = table[col].replace("", default)
    if "well" not in table and "image_id" not in table:
        log.warning(
            "no well or image given (metadata columns or pattern groups): every crop is its own image, so "
            "the split and the statistics treat cells as independent; give well (and field) to keep the "
            "cells of one image together"
        )
        table["image_id"] = table["file"].str.rsplit(".", n=1).str[0]
    if "image_id" not in table:
        table["image_id"] = table["plate"] + "_" + table["well"] + "_f" + table["field"].astype(str)
    if "well" not in table:
        table["well"] = table["image_id"]
    return table
