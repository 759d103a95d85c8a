"""prepare's settings, checked before any file is touched, and what makes a prepare resumable.

``validate`` refuses impossible settings, each refusal an ``InputError`` naming the setting and what it
takes; ``halo_of`` gives the width of a tile's halo.

Resumable: ``<output>/.prepare/`` holds one record per finished image, keyed by the image's
files (path, size, mtime) and the hash of every setting that changes its crops (``image_key``,
``config_hash``); a re-run with the same config skips those images. Every file is written under a
temporary name and renamed.
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import partial
from pathlib import Path

import numpy as np

from protocell.config_check import validate_node
from protocell.config_commands import SHARES, PrepareConfig
from protocell.errors import ConfigError, check
from protocell.fsutil import atomic_write_json, folder_problem
from protocell.prepare.io import ImageSource, InputError
from protocell.prepare.segment import METHODS

_check = partial(check, error=InputError)  # prepare's bad settings are input errors


def validate(c: dict) -> None:
    """Refuse impossible settings before any file is touched: every key's range (the schema,
    ``protocell.config_commands.PrepareConfig``), then what needs several keys or the files."""
    try:
        validate_node(c, PrepareConfig)
    except ConfigError as e:
        raise InputError(str(e)) from None
    _check(bool(c.get("input")), "input", c.get("input"), "the folder of TIFF images (input=/path/to/plate)")
    _check(Path(c["input"]).is_dir(), "input", c["input"], "an existing folder of TIFF images")
    _check(
        bool(c.get("plate_map")) != bool(c.get("pattern")),
        "plate_map/pattern",
        (c.get("plate_map"), c.get("pattern")),
        "give exactly one: plate_map=<csv> or pattern=<regex>",
    )
    ch = c["channels"]
    names = list(ch["names"])
    _check(
        len(names) == len(set(names)) and len(names) >= 2,
        "channels.names",
        names,
        "at least two distinct channel names (main and second)",
    )
    _check(ch["main"] in names, "channels.main", ch["main"], f"one of channels.names {names}")
    _check(
        ch["second"] in names and ch["second"] != ch["main"],
        "channels.second",
        ch["second"],
        f"another one of channels.names {names}",
    )
    seg = c["segmentation"]
    _check(
        seg.get("method") in METHODS,
        "segmentation.method",
        seg.get("method"),
        f"one of {METHODS} (segmentation=watershed needs no weights)",
    )
    t, cells = c["tile"], c["cells"]
    S = cells["crop_size"]
    halo = halo_of(c)
    _check(
        halo >= S // 2 + 1,
        "tile.halo",
        t.get("halo"),
        f"at least crop_size/2 + 1 = {S // 2 + 1} pixels (a crop centred on a core pixel must lie inside the halo)",
    )
    _check(
        0 < cells["min_area"] <= cells["max_area"],
        "cells.min_area/max_area",
        (cells["min_area"], cells["max_area"]),
        "0 < min_area ≤ max_area",
    )
    n = c["normalize"]
    _check(0 <= n["low"] < n["high"] <= 100, "normalize.low/high", (n["low"], n["high"]), "0 ≤ low < high ≤ 100")
    shards, share = c.get("shards", 1), c.get("shard", "all")
    _check(
        share in SHARES or share < shards,
        "shard",
        share,
        f"all (every image here, then the store), one share 0 … {shards - 1} (shards={shards}), "
        "or merge (the store from the finished shares)",
    )
    out = c.get("output")
    problem = folder_problem(out) if out else None
    _check(problem is None, "output", out, f"a folder for the crop store (created if absent), not a file; it {problem}")


def halo_of(c: dict) -> int:
    """Halo width: given, or enough for a crop and for the largest allowed cell."""
    if c["tile"].get("halo") is not None:
        return int(c["tile"]["halo"])
    S = c["cells"]["crop_size"]
    max_diameter = int(np.ceil(2 * np.sqrt(c["cells"]["max_area"] / np.pi)))
    return max(S // 2 + 1, max_diameter)


def config_hash(c: dict) -> str:
    """Hash of every setting that changes an image's crops (not split, augmentation or summary)."""
    keys = ("channels", "normalize", "denoise_sigma", "segmentation", "tile", "cells", "store_dtype", "shard_size")
    blob = json.dumps({k: c[k] for k in keys}, sort_keys=True, default=str).encode()
    return hashlib.sha1(blob).hexdigest()[:12]


def image_key(source: ImageSource, chash: str) -> str:
    files = sorted({r.path for r in source.channels})
    finger = [(str(Path(f).resolve()), os.stat(f).st_size, os.stat(f).st_mtime_ns) for f in files]
    blob = json.dumps([chash, source.image_id, finger]).encode()
    return hashlib.sha1(blob).hexdigest()[:16]


def read_record(path: Path) -> dict | None:
    """A resumability record of ``.prepare/``, or None when it is absent or unreadable (then its work is
    done again: a record is only ever a shortcut)."""
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


def atomic_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, obj, indent=1)
