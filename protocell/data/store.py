"""The crop store: the one on-disk format for single-cell crops.

Both the synthetic generator and the prepare pipeline write it; the DataModule reads it.

Layout of a store folder::

    store.json                     format, version, channels, crop size, dtype, source, manifest_sha1,
                                   normalization (how the pixels were normalised: {"method":
                                   "per_image_percentiles" | "raw" | "as_given", ...}; data.normalize=auto reads it)
    manifest.csv                   one row per cell (columns: ``MANIFEST_COLUMNS``)
    shards/<shard>.crops.npy       (n, C, S, S) crops in their native dtype (uint8/uint16/float32)
    shards/<shard>.masks.npy       (n, S, S) uint8 binary cell masks (1 = this cell)
    shards/<shard>.texture.npy     optional (n, S, S) uint8 ground-truth change masks (synthetic)

A shard is the unit of writing (one source image, or one field of a synthetic well): it is
written atomically (temporary name, then rename), so a killed writer never leaves half a shard.
Rows of the manifest point into shards with ``shard`` and ``shard_index``. Reading is lazy:
shards are memory-mapped, so a store larger than memory trains fine.

Manifest columns:

- ``cell_id``      unique integer over the store (the index the DataModule yields)
- ``image_id``     source image (the split unit: never one image in two splits)
- ``plate``, ``well``, ``field``   where the cell came from
- ``condition``    population name (e.g. ``Ref`` / ``Exp``), ``label`` its class index
- ``bbox_y0, bbox_x0, bbox_y1, bbox_x1``  the crop window in source-image pixels
  (may extend past the image border, which is then zero padded); empty (NaN) when unknown
  (imported pre-cut crops)
- ``centroid_y, centroid_x``  cell centroid in source-image pixels; empty (NaN) when unknown
- ``split``        ``train`` / ``val`` / ``test``, or empty: the DataModule splits by image
- ``true_label``   per-cell ground truth (1 affected, 0 not) when known, else -1
- ``aug_of``       ``cell_id`` of the original when this row is an offline augmentation, else -1
- ``aug``          augmentation description (empty for originals)
- ``shard``, ``shard_index``  where the pixels are
"""

from __future__ import annotations

import hashlib
import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, overload

import numpy as np
import pandas as pd

from protocell.errors import ProtocellError
from protocell.fsutil import atomic_save_npy, atomic_write_bytes, atomic_write_text


def well_key(frame: pd.DataFrame) -> pd.Series:
    """``plate/well`` of each row: the key a well has over a store spanning plates."""
    return frame["plate"].astype(str) + "/" + frame["well"].astype(str)


FORMAT = "protocell-cells"
VERSION = 1

MANIFEST_COLUMNS = [
    "cell_id",
    "image_id",
    "plate",
    "well",
    "field",
    "condition",
    "label",
    "bbox_y0",
    "bbox_x0",
    "bbox_y1",
    "bbox_x1",
    "centroid_y",
    "centroid_x",
    "split",
    "true_label",
    "aug_of",
    "aug",
    "shard",
    "shard_index",
]


POSITION_COLUMNS = ("bbox_y0", "bbox_x0", "bbox_y1", "bbox_x1", "centroid_y", "centroid_x")


def cell_feature_columns(columns) -> list[str]:
    """The per-cell features ``prepare`` writes beside the manifest columns, those of ``columns``: the
    mask's ``area``, ``eccentricity``, ``solidity`` and the mean stored intensity per channel, ``mean_<channel>``."""
    columns = list(columns)
    return [c for c in ("area", "eccentricity", "solidity") if c in columns] + sorted(
        c for c in columns if c.startswith("mean_")
    )


class StoreError(ProtocellError):
    """A crop store that cannot be read or written as asked; the message names the path and fix."""


@dataclass
class StoreInfo:
    channels: list[str]
    crop_size: int
    dtype: str
    source: str
    extra: dict

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": FORMAT,
                "version": VERSION,
                "channels": self.channels,
                "crop_size": self.crop_size,
                "dtype": self.dtype,
                "source": self.source,
                **self.extra,
            },
            indent=2,
        )


class CropStoreWriter:
    """Writes shards, then the manifest and ``store.json`` last (a store without them is unfinished).

    >>> w = CropStoreWriter(root, channels=["actin", "nuclei"], crop_size=64, source="synthetic")
    >>> w.write_shard("plate1_A01_f0", crops, masks, rows)   # rows: list of dicts, one per crop
    >>> w.finish()
    """

    def __init__(self, root: str | Path, channels: list[str], crop_size: int, source: str, extra: dict | None = None):
        self.root = Path(root)
        self.channels = list(channels)
        self.crop_size = int(crop_size)
        self.source = source
        self.extra = dict(extra or {})
        self.rows: list[dict] = []
        self.dtype: str | None = None
        (self.root / "shards").mkdir(parents=True, exist_ok=True)

    def shard_done(self, shard: str, n: int) -> bool:
        """Are the shard's crops and masks on disk and whole, with exactly ``n`` cells of this store's
        shape and pixel type? From the ``.npy`` headers and file sizes (``npy_problem``): a resumed or
        repeated writer keeps a shard only when this holds, so a deleted, truncated or foreign shard
        is written again."""
        C, S = len(self.channels), self.crop_size
        return all(
            npy_problem(self.root / "shards" / f"{shard}.{kind}.npy", n, tail, exact=True, dtype=dtype) is None
            for kind, tail, dtype in (("crops", (C, S, S), self.dtype), ("masks", (S, S), "uint8"))
        )

    def write_shard(
        self, shard: str, crops: np.ndarray, masks: np.ndarray, rows: list[dict], texture: np.ndarray | None = None
    ) -> None:
        n, c, s = len(crops), len(self.channels), self.crop_size
        if crops.shape != (n, c, s, s):
            raise StoreError(f"shard {shard}: crops have shape {crops.shape}, expected ({n}, {c}, {s}, {s})")
        if masks.shape != (n, s, s) or len(rows) != n:
            raise StoreError(f"shard {shard}: {len(rows)} rows and masks {masks.shape} for {n} crops")
        if self.dtype is None:
            self.dtype = str(crops.dtype)
        elif str(crops.dtype) != self.dtype:
            raise StoreError(f"shard {shard}: dtype {crops.dtype} differs from the store's {self.dtype}")
        base = self.root / "shards"
        if texture is not None:
            atomic_save_npy(base / f"{shard}.texture.npy", texture.astype(np.uint8))
        atomic_save_npy(base / f"{shard}.crops.npy", np.ascontiguousarray(crops))
        # masks last: a killed writer leaves no masks, or no crops at all (see shard_done)
        atomic_save_npy(base / f"{shard}.masks.npy", (masks > 0).astype(np.uint8))
        self.add_rows(shard, rows)

    def add_rows(self, shard: str, rows: list[dict]) -> None:
        """Record manifest rows for an existing shard (used when resuming a writer)."""
        for i, row in enumerate(rows):
            full = {"split": "", "true_label": -1, "aug_of": -1, "aug": "", "field": 0, "plate": "plate1"}
            full.update(row)
            full["shard"], full["shard_index"] = shard, i
            self.rows.append(full)

    def finish(self) -> pd.DataFrame:
        if not self.rows:
            raise StoreError(f"{self.root}: no cells were written, so there is no store to finish")
        df = pd.DataFrame(self.rows)
        if "cell_id" not in df:
            df["cell_id"] = np.arange(len(df))
        missing = [c for c in MANIFEST_COLUMNS if c not in df]
        if missing:
            raise StoreError(f"{self.root}: manifest rows lack columns {missing}")
        if df["cell_id"].duplicated().any():
            raise StoreError(f"{self.root}: duplicate cell_id values in the manifest")
        df = df[MANIFEST_COLUMNS + [c for c in df.columns if c not in MANIFEST_COLUMNS]]
        csv = df.to_csv(index=False).encode("utf-8")
        atomic_write_bytes(self.root / "manifest.csv", csv)
        # store.json, written last, commits the store; the hash ties it to this manifest (a writer killed
        # between the two files leaves a mismatch that CropStore names, never a silent mix)
        info = StoreInfo(
            self.channels,
            self.crop_size,
            self.dtype or "uint16",
            self.source,
            {**self.extra, "manifest_sha1": hashlib.sha1(csv).hexdigest()},
        )
        atomic_write_text(self.root / "store.json", info.to_json())
        return df


def npy_problem(
    path: Path, rows: int, tail: tuple[int, ...], exact: bool = False, dtype: str | None = None
) -> str | None:
    """What is wrong with the ``.npy`` file at ``path`` as ``(≥ rows, *tail)`` — exactly ``rows`` with
    ``exact``, of pixel type ``dtype`` when given — (None: nothing), from its header and size alone."""
    if not path.is_file():
        return "missing"
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, stored = read(fh)
            data_start = fh.tell()
    except (ValueError, OSError, EOFError) as err:
        return f"not a readable .npy file ({type(err).__name__}: {str(err)[:80]})"
    size = path.stat().st_size
    expected = data_start + int(np.prod(shape)) * stored.itemsize
    if size < expected:
        return f"truncated ({size} of {expected} bytes)"
    if tuple(shape[1:]) != tuple(tail) or shape[0] < rows or (exact and shape[0] != rows):
        return f"shape {tuple(shape)}, the manifest and store.json need ({rows}, {', '.join(map(str, tail))})"
    if dtype is not None and np.dtype(dtype) != stored:
        return f"pixel type {stored}, the store's is {np.dtype(dtype)}"
    return None


class CropStore:
    """Lazy reader: ``store[i]`` → (crop (C, S, S) native dtype, mask (S, S) uint8) for manifest row i.

    Shards are memory-mapped on first use in each process (safe with DataLoader workers).
    """

    def __init__(self, root: str | Path, validate: bool = True):
        self.root = Path(root)
        info_path = self.root / "store.json"
        if not info_path.exists():
            raise StoreError(
                f"{self.root} is not a finished crop store (no store.json). Point data.path at a folder in "
                "protocell's crop-store format (README: 'The crop store'), or use data=synthetic; a writer "
                "that was killed leaves no store.json, so run it again."
            )
        try:
            info = json.loads(info_path.read_text())
        except (ValueError, UnicodeDecodeError) as err:
            raise StoreError(
                f"{info_path} is not valid JSON ({type(err).__name__}: {str(err)[:120]}): the store's "
                f"description is damaged; {self._fix(None)}"
            ) from None
        if not isinstance(info, dict) or info.get("format") != FORMAT or int(info.get("version", -1)) > VERSION:
            info = info if isinstance(info, dict) else {}
            raise StoreError(
                f"{info_path}: format {info.get('format')} v{info.get('version')} is not "
                f"{FORMAT} v≤{VERSION}; upgrade protocell or re-create the store"
            )
        self.info = info
        self.channels: list[str] = list(info["channels"])
        self.crop_size: int = int(info["crop_size"])
        manifest = self.root / "manifest.csv"
        if not manifest.is_file():
            raise StoreError(f"{manifest} is missing: the store lists its cells there; {self._fix(info)}")
        if info.get("manifest_sha1") and hashlib.sha1(manifest.read_bytes()).hexdigest() != info["manifest_sha1"]:
            raise StoreError(
                f"{manifest} is not the manifest {info_path} was written with (a writer was stopped "
                f"between the two, or the file was edited); {self._fix(info)} (an edit on purpose: "
                "delete manifest_sha1 from store.json)"
            )
        try:
            self.manifest = pd.read_csv(
                manifest,
                keep_default_na=False,
                na_values={c: [""] for c in POSITION_COLUMNS},  # unknown: NaN, not ""
                dtype={
                    "split": str,
                    "aug": str,
                    "well": str,
                    "plate": str,
                    "image_id": str,
                    "condition": str,
                    "shard": str,
                },
            )
        except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as err:
            raise StoreError(
                f"{manifest} cannot be read as CSV ({type(err).__name__}: {str(err)[:120]}); {self._fix(info)}"
            ) from None
        missing = [c for c in MANIFEST_COLUMNS if c not in self.manifest]
        if missing:
            raise StoreError(f"{manifest} lacks columns {missing}; {self._fix(info)}")
        if len(self.manifest) == 0:  # no writer of protocell's finishes a store without cells
            raise StoreError(
                f"{manifest} lists no cells (a header without rows): the file was emptied or written by "
                f"another tool; {self._fix(info)}"
            )
        self._shards: dict[tuple[str, str], np.ndarray | None] = {}  # None: a shard without texture
        self._shard_col = self.manifest["shard"].to_numpy()
        self._index_col = self.manifest["shard_index"].to_numpy()
        if validate:
            self.validate()

    def _fix(self, info: dict | None) -> str:
        """How to repair this store: the command that wrote it, as far as ``store.json`` tells."""
        info = info or {}
        if info.get("source") == "synthetic":
            return f"delete {self.root} and run again (the built-in wells are regenerated)"
        given = ""
        if isinstance(info.get("crops"), dict):  # prepare.py mode=crops rewrites every shard
            given = "mode=crops " + shlex.quote(f"input={info['crops'].get('input')}") + " "
        elif isinstance((info.get("prepare") or {}).get("config"), dict):
            c = info["prepare"]["config"]
            given = " ".join(shlex.quote(f"{k}={c[k]}") for k in ("input", "plate_map", "pattern") if c.get(k)) + " "
        return (
            f"re-create the store with the command that wrote it (python prepare.py {given}… output={self.root}, "
            "the same settings: prepare checks every shard it keeps and redoes what is missing or damaged) or "
            "restore the folder from a backup"
        )

    def validate(self) -> None:
        """Every shard file the manifest uses is present and whole, with the shape ``store.json``
        promises: ``(n, C, S, S)`` crops, ``(n, S, S)`` masks (and texture), n above every
        ``shard_index``. Reads only the ``.npy`` headers and file sizes, so it costs milliseconds,
        and a missing or truncated shard is named now instead of failing mid-run."""
        C, S = len(self.channels), self.crop_size
        need = self.manifest.groupby("shard")["shard_index"].max() + 1 if len(self.manifest) else {}
        problems = []
        for shard, n in dict(need).items():
            for kind, tail in (("crops", (C, S, S)), ("masks", (S, S)), ("texture", (S, S))):
                path = self.root / "shards" / f"{shard}.{kind}.npy"
                if kind == "texture" and not path.exists():
                    continue
                problem = npy_problem(path, int(n), tail)
                if problem:
                    problems.append(f"{path}: {problem}")
        if problems:
            shown = "\n- ".join(problems[:10]) + (f"\n- … and {len(problems) - 10} more" if len(problems) > 10 else "")
            raise StoreError(
                f"the crop store {self.root} is damaged: {len(problems)} shard file(s) do not match "
                f"its manifest:\n- {shown}\nto fix: {self._fix(self.info)}"
            )

    def __len__(self) -> int:
        return len(self.manifest)

    @overload
    def _array(self, shard: str, kind: Literal["crops", "masks"]) -> np.ndarray: ...
    @overload
    def _array(self, shard: str, kind: Literal["texture"]) -> np.ndarray | None: ...
    def _array(self, shard: str, kind: str) -> np.ndarray | None:
        """A shard's crops, masks (a missing file: StoreError) or texture (a missing file: None)."""
        key = (shard, kind)
        if key not in self._shards:
            path = self.root / "shards" / f"{shard}.{kind}.npy"
            if not path.exists():
                if kind == "texture":
                    self._shards[key] = None
                    return None
                raise StoreError(f"{path} is missing: the store is incomplete; re-create it")
            self._shards[key] = np.load(path, mmap_mode="r")
        return self._shards[key]

    def __getstate__(self):  # DataLoader workers re-open their own memory maps
        state = self.__dict__.copy()
        state["_shards"] = {}
        return state

    def release(self, shard: str | None = None) -> None:
        """Unmap one shard's arrays (or every shard's): a reader that goes through the store once
        (``score``) then holds one shard's pages at a time instead of every page it has read."""
        for key in [k for k in self._shards if shard is None or k[0] == shard]:
            del self._shards[key]

    def crop(self, i: int) -> np.ndarray:
        return np.asarray(self._array(self._shard_col[i], "crops")[self._index_col[i]])

    def mask(self, i: int) -> np.ndarray:
        return np.asarray(self._array(self._shard_col[i], "masks")[self._index_col[i]])

    def texture(self, i: int) -> np.ndarray | None:
        arr = self._array(self._shard_col[i], "texture")
        return None if arr is None else np.asarray(arr[self._index_col[i]])

    @property
    def has_texture(self) -> bool:
        return len(self) > 0 and self.texture(0) is not None

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        return self.crop(i), self.mask(i)
