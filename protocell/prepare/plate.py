"""Which files make which image: a plate map CSV or a file-name pattern, checked before any work.

Plate map columns: ``image`` (path relative to the input folder, or absolute), ``plate``,
``well``, ``field``, ``condition``; optional ``channel`` (then one row per channel file, rows of
one image sharing plate/well/field, or ``image_id``) and ``image_id``. An empty ``condition`` marks a
well to score only (no class: compounds, doses). Any other column (``dose``, ``compound``,
``concentration``, any metadata) is carried into the manifest unchanged, as text; names the
manifest uses itself (``label``, ``split``, …) are refused. A pattern is a regular
expression matched against each TIFF's path relative to the input folder, with named groups
``well`` (required) and optionally ``plate``, ``field``, ``condition``, ``channel``, ``image_id``.

``open_images`` opens every file's header and returns ``ImageSource``s; all problems are
collected and raised together, each naming its file and the fix.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from protocell.data.store import MANIFEST_COLUMNS
from protocell.doses import DOSE_COLUMN, parse_doses
from protocell.doses import NEED as DOSE_NEED
from protocell.prepare.io import ImageSource, InputError, file_channels

REQUIRED_COLUMNS = ["image", "plate", "well", "field", "condition"]
OPTIONAL_COLUMNS = ["channel", "image_id"]
TIFF_SUFFIXES = (".tif", ".tiff")


@dataclass
class ImageEntry:
    image_id: str
    plate: str
    well: str
    field: str  # hides dataclasses.field in this class body (for type checkers): hence dataclasses.field below
    condition: str  # "" : no class, the image is scored only
    files: dict[str, str] = dataclasses.field(default_factory=dict)  # channel name → path; "*" = multi-channel file
    meta: dict[str, str] = dataclasses.field(default_factory=dict)  # the plate map's other columns (dose, compound, …)


def _safe_id(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "image"


def _channel_name(raw: str, names: list[str], mapping: dict, where: str) -> str:
    name = mapping.get(raw, raw)
    if name not in names:
        known = sorted(set(names) | set(mapping))
        raise InputError(
            f"{where}: channel '{raw}' is not a configured channel ({known}); add it to "
            "channels.names or map it with channels.map"
        )
    return name


def _same_id_fix(row: dict, per_channel: bool, where: str) -> str:
    """How to give two files that map to one image id an id each."""
    how = (
        "an image_id column to the plate map (one id per image, e.g. its path without the extension)"
        if where.startswith("plate_map")
        else "a named group (?P<image_id>…) to the pattern that differs between the two files (e.g. the folder)"
    )
    if row.get("image_id"):
        return f"both have image_id '{row['image_id']}': give each image its own image_id"
    if per_channel:
        return (
            f"per-channel files are grouped by plate, well and field, and both have plate={row['plate']} "
            f"well={row['well']} field={row['field']}: give them different fields, or add {how}"
        )
    return (
        f"without an image_id, an image is named after its file and both files are named "
        f"'{Path(row['path']).name}' (in different folders): add {how}"
    )


def _group(
    rows: list[dict], names: list[str], mapping: dict, where: str, extra: Sequence[str] = ()
) -> list[ImageEntry]:
    """Rows (one per file) → images; rows with a channel are grouped by image_id/plate/well/field.
    ``extra``: the metadata columns each image carries (equal in all rows of one image)."""
    entries: dict[str, ImageEntry] = {}
    for r in rows:
        per_channel = r.get("channel") not in (None, "")
        if r.get("image_id"):
            image_id = _safe_id(str(r["image_id"]))
        elif per_channel:
            image_id = _safe_id(f"{r['plate']}_{r['well']}_f{r['field']}")
        else:
            image_id = _safe_id(re.sub(r"(\.ome)?\.tiff?$", "", Path(r["path"]).name, flags=re.I))
        e = entries.get(image_id)
        meta = {k: r[k] for k in extra}
        if e is None:
            e = entries[image_id] = ImageEntry(
                image_id, str(r["plate"]), str(r["well"]), str(r["field"]), str(r["condition"]), meta=meta
            )
        elif meta != e.meta:
            differ = [k for k in extra if meta[k] != e.meta[k]]
            raise InputError(
                f"{where}: image '{image_id}' has channel files with different {differ} "
                f"({[e.meta[k] for k in differ]} and {[meta[k] for k in differ]} in {r['path']})"
            )
        elif not per_channel or "*" in e.files:
            raise InputError(
                f"{where}: two files for image '{image_id}' ({', '.join(e.files.values())} and "
                f"{r['path']}); {_same_id_fix(r, per_channel, where)}"
            )
        elif str(r["condition"]) != e.condition:
            raise InputError(
                f"{where}: image '{image_id}' has channel files with different conditions "
                f"('{e.condition}', '{r['condition']}')"
            )
        if per_channel:
            name = _channel_name(str(r["channel"]), names, mapping, f"{where} ({r['path']})")
            if name in e.files:
                raise InputError(
                    f"{where}: image '{image_id}' has two files for channel '{name}': {e.files[name]} and {r['path']}"
                )
            e.files[name] = r["path"]
        else:
            e.files["*"] = r["path"]
    return list(entries.values())


def read_table(csv_path: Path, key: str) -> pd.DataFrame:
    """A user's CSV (a plate map, a crops metadata table) as text: UTF-8 with or without the byte-order
    mark spreadsheets write, names and missing cells as "" (never NaN), column names stripped, a
    nameless empty column (a trailing comma) dropped. Refused in one line, naming ``key=csv_path``,
    when it cannot be read, names a column twice or has a nameless column with values."""
    try:
        raw = pd.read_csv(csv_path, dtype=str, keep_default_na=False, header=None, encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise InputError(
            f"{key}={csv_path} is not UTF-8 text ({err.reason} at byte {err.start}): save it as CSV UTF-8"
        ) from None
    except pd.errors.EmptyDataError:
        raise InputError(f"{key}={csv_path} is empty: it needs a header row and one row per file") from None
    except Exception as err:  # noqa: BLE001 - any parser failure is a bad file to the user
        raise InputError(f"{key}={csv_path} cannot be read as CSV ({type(err).__name__}: {str(err)[:200]})") from None
    raw = raw.fillna("")
    columns = [str(c).replace("\ufeff", "").strip() for c in raw.iloc[0]]
    df = raw.iloc[1:].reset_index(drop=True)
    df.columns = range(len(columns))
    keep = [k for k, c in enumerate(columns) if c or (df[k] != "").any()]
    nameless = [k + 1 for k in keep if not columns[k]]
    if nameless:
        raise InputError(f"{key}={csv_path}: column(s) {nameless} have values but no name in the header row: name them")
    df, columns = df[keep], [columns[k] for k in keep]
    twice = sorted({c for c in columns if columns.count(c) > 1})
    if twice:
        raise InputError(f"{key}={csv_path} has column(s) {twice} more than once: keep one of each")
    df.columns = columns
    return df


def same_rows(df: pd.DataFrame) -> list[list[int]]:
    """Groups (≥ 2) of positions of rows of a ``read_table`` frame that are equal in every column once
    stripped: an exact duplicate row."""
    stripped = df.apply(lambda c: c.str.strip())
    return [list(rows) for rows in stripped.groupby(list(df.columns), sort=False).indices.values() if len(rows) > 1]


def _describe(row: pd.Series, i: int) -> str:
    """'row 5 (plate1/B03 field 2, condition Exp)': a plate-map row as the user finds it (header = row 1)."""
    where = f"{row['plate']}/{row['well']} field {row['field']}"
    channel = f", channel {row['channel']}" if str(row.get("channel", "")).strip() else ""
    return f"row {i + 2} ({where}{channel}, condition {row['condition'] or '(none)'})"


def _duplicates(df: pd.DataFrame, files: dict[int, Path], csv_path: Path) -> list[str]:
    """An exact duplicate row, and a file named by two rows: the same cells would be stored twice (as two
    conditions, or in train and in test). ``files``: row → the resolved file it names."""
    problems, repeats = [], set()
    for rows in same_rows(df):
        repeats.update(rows[1:])
        problems.append(
            f"plate_map={csv_path} rows {', '.join(str(r + 2) for r in rows)} are the same row "
            "(every column equal): delete all but one"
        )
    by_file: dict[Path, list[int]] = {}
    for i, path in files.items():
        if i not in repeats:
            by_file.setdefault(path, []).append(i)
    for path, rows in by_file.items():
        if len(rows) > 1:
            listed = " and ".join(_describe(df.iloc[r], r) for r in rows)
            problems.append(
                f"plate_map={csv_path} names the file {path} in {listed}: one file is one image of one "
                "well, and its cells would be stored twice (as two conditions, or in train and in test); "
                "keep the row that is right and fix or delete the other"
            )
    return problems


def _dose_problems(df: pd.DataFrame, csv_path: Path) -> list[str]:
    """Each dose that is not a finite number ≥ 0 (``protocell.doses``), named by row and well."""
    if DOSE_COLUMN not in df:
        return []
    _, bad = parse_doses(df[DOSE_COLUMN])
    return [
        f"plate_map={csv_path} {_describe(df.iloc[i], i)}: dose {df[DOSE_COLUMN].iloc[i]!r} is not {DOSE_NEED}"
        for i in np.flatnonzero(bad.to_numpy())
    ]


def read_plate_map(csv_path: str | Path, input_dir: str | Path, names: list[str], mapping: dict) -> list[ImageEntry]:
    csv_path, input_dir = Path(csv_path), Path(input_dir)
    if not csv_path.is_file():
        raise InputError(f"plate_map={csv_path} does not exist; give the CSV path (columns {REQUIRED_COLUMNS})")
    df = read_table(csv_path, "plate_map")
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(
            f"plate_map={csv_path} lacks columns {missing} (it has {list(df.columns)}); the header "
            "must be: image,plate,well,field,condition[,channel][,image_id]"
        )
    if len(df) == 0:
        raise InputError(
            f"plate_map={csv_path} has no rows: list one row per image file under the header "
            "image,plate,well,field,condition"
        )
    extra = [c for c in df.columns if c not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    reserved = [c for c in extra if c in MANIFEST_COLUMNS or c == "path"]
    if reserved:
        raise InputError(
            f"plate_map={csv_path} has column(s) {reserved}, which the crop store's manifest uses itself; "
            "rename them (extra columns such as dose or compound are carried into the manifest as they are)"
        )
    rows, problems, files = [], [], {}
    for i, r in df.iterrows():
        p = Path(r["image"].strip())
        path = p if p.is_absolute() else input_dir / p
        try:
            found = r["image"].strip() != "" and path.is_file()
        except (OSError, ValueError) as err:  # a NUL byte, a name longer than the file system allows
            problems.append(
                f"plate_map={csv_path} row {i + 2}: image {r['image']!r} is not a usable file name "
                f"({type(err).__name__}): fix the path"
            )
            continue
        if not found:
            problems.append(
                f"plate_map={csv_path} row {i + 2} names image '{r['image']}', which is not in the input "
                f"folder {input_dir} (looked for {path}): fix the path or add the file"
            )
            continue
        files[i] = path.resolve()
        empty = [
            c for c in REQUIRED_COLUMNS if c != "condition" and str(r[c]).strip() == ""
        ]  # no condition: scored only
        if empty:
            problems.append(f"plate_map={csv_path} row {i + 2} ({r['image']}) has empty {empty}")
            continue
        rows.append({**{c: str(r[c]).strip() for c in df.columns}, "path": str(path)})
    problems += _duplicates(df, files, csv_path) + _dose_problems(df, csv_path)
    if problems:
        raise InputError("\n".join(problems))
    return _group(rows, names, mapping, f"plate_map={csv_path}", extra)


def match_pattern(pattern: str, input_dir: str | Path, names: list[str], mapping: dict) -> list[ImageEntry]:
    input_dir = Path(input_dir)
    try:
        rx = re.compile(pattern)
    except re.error as err:
        raise InputError(f"pattern={pattern!r} is not a valid regular expression ({err})") from None
    if "well" not in rx.groupindex:
        raise InputError(
            f"pattern={pattern!r} needs a named group 'well', e.g. "
            r"'(?P<well>[A-P]\d\d)_f(?P<field>\d+)\.tif'"
        )
    files = sorted(p for p in input_dir.rglob("*") if p.suffix.lower() in TIFF_SUFFIXES and p.is_file())
    rows = []
    for p in files:
        m = rx.fullmatch(p.relative_to(input_dir).as_posix())
        if m is None:
            continue
        g = {k: v for k, v in m.groupdict().items() if v is not None}
        rows.append(
            {
                "plate": g.get("plate", "plate1"),
                "well": g["well"],
                "field": g.get("field", "0"),
                "condition": g.get("condition", "unknown"),
                "channel": g.get("channel"),
                "image_id": g.get("image_id"),
                "path": str(p),
            }
        )
    if not rows:
        raise InputError(
            f"pattern={pattern!r} matches none of the {len(files)} TIFF files in {input_dir}; "
            "it must match the whole path relative to the input folder"
        )
    return _group(rows, names, mapping, f"pattern={pattern!r}")


def open_images(entries: list[ImageEntry], names: list[str]) -> list[ImageSource]:
    """Open every file's header; check channel count and shapes. All problems reported at once."""
    sources, problems = [], []
    for e in entries:
        try:
            if "*" in e.files:
                refs, shape, dtype = file_channels(e.files["*"])
                if len(refs) != len(names):
                    raise InputError(
                        f"{e.files['*']} has {len(refs)} channel(s), channels.names lists {len(names)} "
                        f"({names}): set channels.names to the file's channels in order"
                    )
            else:
                absent = [n for n in names if n not in e.files]
                if absent:
                    raise InputError(
                        f"image '{e.image_id}' has no file for channel(s) {absent} (it has "
                        f"{sorted(e.files)}): add the files or remove the channels from channels.names"
                    )
                refs, shapes, dtypes = [], {}, set()
                for n in names:
                    r, shape, dtype = file_channels(e.files[n])
                    if len(r) != 1:
                        raise InputError(
                            f"{e.files[n]} (channel '{n}') has {len(r)} channels; a per-channel file must hold one"
                        )
                    refs += r
                    shapes[e.files[n]] = shape
                    dtypes.add(np.dtype(dtype))
                if len(set(shapes.values())) > 1:
                    raise InputError(
                        f"image '{e.image_id}': channel files differ in shape ({shapes}); every channel "
                        "of an image must have the same height and width (same field, same binning)"
                    )
                if len(dtypes) > 1:
                    raise InputError(
                        f"image '{e.image_id}': channel files differ in pixel type {sorted(map(str, dtypes))}"
                    )
                shape, dtype = next(iter(shapes.values())), dtypes.pop()
            sources.append(ImageSource(e.image_id, refs, shape, np.dtype(dtype)))
        except InputError as err:
            problems.append(str(err))
    if problems:
        raise InputError(f"{len(problems)} input problem(s):\n- " + "\n- ".join(problems))
    return sources
