"""The prepare pipeline: raw plate images → the crop store that ``train.py data=prepared`` reads.

    python prepare.py input=/data/plate1 plate_map=/data/plate1/plate_map.csv segmentation=watershed

Stages (each image streamed tile by tile; memory does not grow with image size):

1. inputs: plate map or pattern → images; every file header checked before any work;
2. statistics pass per image (exact histograms / bounded sample): percentiles for normalisation,
   automatic thresholds; NaN/inf pixels and constant channels refused here, before anything is
   written for any image;
3. per image, per tile (with halo, in a process pool): normalise → Gaussian denoise → segment →
   cells owned by the tile → filters → crops + masks; written as shards of ``shard_size`` cells;
4. split by source image (stratified by condition, seeded), offline augmentation of training
   crops, manifest + ``store.json`` (written last), ``prepare_summary.json`` and overlay PNGs.

Resumable: ``<output>/.prepare/`` holds one record per finished image, keyed by the image's
files (path, size, mtime) and the hash of every setting that changes its crops; a re-run with the
same config skips those images. Every file is written under a temporary name and renamed.

Safe for an existing store (docs/reliability.md): every input check (files, plate map, conditions,
pixels) runs before anything is written; the output folder is then locked (``.prepare/lock``: a
second prepare on it is refused, naming the pid that holds it). Shard names carry the image's key,
so a re-run never overwrites a shard the current store uses: the old store stays readable until
the new ``manifest.csv`` and ``store.json`` (written last, with the manifest's hash) replace it, and
only then are the old shards deleted. An output holding a store of other inputs is refused unless
``overwrite=true``; a refused prepare into a new folder leaves no folder.

In shares (a cluster, docs/prepare.md): ``shards=N shard=k`` runs stages 1–3 on every N-th image of the
plate map from the k-th (statistics are per image, so a share needs nothing from another) and writes
``.prepare/shares/k-of-N.json``; ``shard=merge`` runs stage 4 once every image of the plate map has its
finished records (else it is refused, naming the shares), giving the store one process writes, byte for
byte (``store.json`` records the settings that make the store, not ``RUN_KEYS``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing as mp
import os
import shutil
import sys
import time
import zlib
from contextlib import contextmanager
from dataclasses import asdict
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from protocell.data.split import assign
from protocell.data.store import CropStoreWriter, StoreError
from protocell.errors import check
from protocell.fsutil import (
    atomic_write,
    atomic_write_json,
    atomic_write_text,
    exclusive_lock,
    folder_problem,
    output_errors,
)
from protocell.prepare.augment import AugmentParams, augment_crops
from protocell.prepare.classes import class_order
from protocell.prepare.crops import COUNT_KEYS, CellFilters, background_sums, extract_cells
from protocell.prepare.io import ImageSource, InputError, Tile, tile_grid
from protocell.prepare.plate import ImageEntry, match_pattern, open_images, read_plate_map
from protocell.prepare.preprocess import ChannelStats, block_stats, combine_stats, denoise, normalize
from protocell.prepare.segment import METHODS, build_segmenter

log = logging.getLogger("protocell.prepare")

SEGMENTATION_KEYS_NOT_FOR_BUILDER = ("method", "nuclei_threshold", "cell_threshold", "threshold_method",
                                     "min_nuclei_snr")
STORE_DTYPES = ("uint16", "float32")
# how a prepare ran, not what its store holds: left out of store.json, so a store merged from share tasks is
# byte for byte the store one process writes
RUN_KEYS = ("workers", "progress", "debug", "overwrite", "shards", "shard")


# ----------------------------------------------------------------------------- config

_check = partial(check, error=InputError)   # prepare's bad settings are input errors


def validate(c: dict) -> None:
    """Refuse impossible settings before any file is touched."""
    _check(bool(c.get("input")), "input", c.get("input"), "the folder of TIFF images (input=/path/to/plate)")
    _check(Path(c["input"]).is_dir(), "input", c["input"], "an existing folder of TIFF images")
    _check(bool(c.get("plate_map")) != bool(c.get("pattern")), "plate_map/pattern",
           (c.get("plate_map"), c.get("pattern")), "give exactly one: plate_map=<csv> or pattern=<regex>")
    ch = c["channels"]
    names = list(ch["names"])
    _check(len(names) == len(set(names)) and len(names) >= 2, "channels.names", names,
           "at least two distinct channel names (main and second)")
    _check(ch["main"] in names, "channels.main", ch["main"], f"one of channels.names {names}")
    _check(ch["second"] in names and ch["second"] != ch["main"], "channels.second", ch["second"],
           f"another one of channels.names {names}")
    seg = c["segmentation"]
    _check(seg.get("method") in METHODS, "segmentation.method", seg.get("method"),
           f"one of {METHODS} (segmentation=watershed needs no weights)")
    t, cells = c["tile"], c["cells"]
    _check(isinstance(t["size"], int) and t["size"] >= 64, "tile.size", t["size"], "an integer ≥ 64")
    S = cells["crop_size"]
    _check(isinstance(S, int) and S >= 16, "cells.crop_size", S, "an integer ≥ 16")
    halo = halo_of(c)
    _check(halo >= S // 2 + 1, "tile.halo", t.get("halo"), f"at least crop_size/2 + 1 = {S // 2 + 1} pixels "
           "(a crop centred on a core pixel must lie inside the halo)")
    _check(0 < cells["min_area"] <= cells["max_area"], "cells.min_area/max_area",
           (cells["min_area"], cells["max_area"]), "0 < min_area ≤ max_area")
    n = c["normalize"]
    _check(0 <= n["low"] < n["high"] <= 100, "normalize.low/high", (n["low"], n["high"]), "0 ≤ low < high ≤ 100")
    _check(c["denoise_sigma"] >= 0, "denoise_sigma", c["denoise_sigma"], "≥ 0 (0 = off)")
    _check(c["store_dtype"] in STORE_DTYPES, "store_dtype", c["store_dtype"], f"one of {STORE_DTYPES}")
    _check(0 < c["split"]["test_fraction"] < 1, "split.test_fraction", c["split"]["test_fraction"], "in (0, 1)")
    _check(int(c["augment"]["copies"]) >= 0, "augment.copies", c["augment"]["copies"], "≥ 0 (0 = off)")
    _check(int(c["workers"]) >= 1, "workers", c["workers"], "≥ 1")
    shards, share = c.get("shards", 1), c.get("shard", "all")
    _check(isinstance(shards, int) and not isinstance(shards, bool) and shards >= 1, "shards", shards,
           "an integer ≥ 1: the number of tasks the images are dealt to (docs/usage.md, 'A screen on SLURM')")
    _check(share in ("all", "merge") or (isinstance(share, int) and not isinstance(share, bool) and 0 <= share < shards),
           "shard", share, f"all (every image here, then the store), one share 0 … {shards - 1} (shards={shards}), "
           "or merge (the store from the finished shares)")
    _check(isinstance(c.get("overwrite", False), bool), "overwrite", c.get("overwrite"), "true or false")
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


def _record(path: Path) -> dict | None:
    """A resumability record of ``.prepare/``, or None when it is absent or unreadable (then its work is
    done again: a record is only ever a shortcut)."""
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


def _atomic_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, obj, indent=1)


# ----------------------------------------------------------------------------- workers

def _pool(workers: int):
    """A process pool, or None for in-process work. Fork is used while torch is not loaded in
    this process (cheap start); otherwise spawn (fork after torch/OpenMP may hang a child)."""
    if workers <= 1:
        return None
    method = "fork" if "torch" not in sys.modules and sys.platform != "win32" else "spawn"
    return mp.get_context(method).Pool(workers)


def _imap(pool, fn, items):
    return pool.imap(fn, items, chunksize=1) if pool is not None else map(fn, items)


def _tile_job(source: ImageSource, lows, highs, sigma: float, main: int, second: int, segmenter,
              thresholds: dict, crop_size: int, filters: CellFilters, store_dtype: str, overlay_tiles: set,
              names: list[str], tile: Tile):
    py0, py1, px0, px1 = tile.padded
    block = denoise(normalize(source.read(py0, py1, px0, px1), lows, highs), sigma)
    labels = segmenter(block[main], block[second], thresholds)
    crops, masks, rows, counts = extract_cells(labels, block, tile, source.shape, crop_size, filters, store_dtype,
                                               names)
    counts = {**counts, "background": background_sums(labels, block, tile)}
    overlay = None
    if tile.index in overlay_tiles:
        cy0, cy1, cx0, cx1 = tile.core
        win = (slice(cy0 - py0, cy1 - py0), slice(cx0 - px0, cx1 - px0))
        kept = {r["tile_label"] for r in rows}
        overlay = (block[main][win], block[second][win], labels[win], kept)
    return crops, masks, rows, counts, overlay


# ----------------------------------------------------------------------------- stages

def thresholds_of(stats: list[ChannelStats], names: list[str], seg: dict, main: str, second: str) -> dict:
    """Per-image thresholds in normalised units: given numbers, or Otsu/Li over the whole image."""
    from skimage.filters import threshold_li, threshold_otsu

    auto = {"otsu": threshold_otsu, "li": threshold_li}
    method = seg.get("threshold_method", "li")
    if method not in auto:
        raise InputError(f"segmentation.threshold_method={method!r}: use otsu or li")
    out = {}
    for key, channel in (("cell", main), ("nuclei", second)):
        given = seg.get(f"{key}_threshold")
        out[key] = float(given) if given is not None else float(auto[method](stats[names.index(channel)].sample))
    # An automatic threshold always splits *something*, even pure noise: seeds must stand
    # min_nuclei_snr robust SDs above the nuclei channel's median (its background, nuclei being
    # sparse), so an empty field yields no cells instead of segmented noise.
    snr = seg.get("min_nuclei_snr", 3.0)
    if seg.get("nuclei_threshold") is None and snr:
        sample = stats[names.index(second)].sample
        med = float(np.median(sample))
        sd = 1.4826 * float(np.median(np.abs(sample - med)))
        out["nuclei"] = max(out["nuclei"], med + float(snr) * sd)
    return out


def split_images(conditions: dict[str, str], test_fraction: float, seed: int,
                 plates: dict[str, str] | None = None) -> dict[str, str]:
    """image_id → 'train'/'test', stratified by plate and condition (``protocell.data.split``, the policy
    the DataModule uses too): each plate's images of a condition are split alike, so every plate of a
    store lies in train and in test in proportion; an only image of a plate's condition trains. One plate:
    the strata (and draws) of a split by condition alone."""
    strata: dict[tuple[str, str], list[str]] = {}
    for image, cond in conditions.items():
        strata.setdefault(((plates or {}).get(image, ""), cond), []).append(image)
    return assign(strata, {"test": test_fraction}, seed)


class Preparer:
    def __init__(self, c: dict):
        validate(c)
        self.c = c
        ch = c["channels"]
        self.names = list(ch["names"])
        self.main, self.second = self.names.index(ch["main"]), self.names.index(ch["second"])
        seg = dict(c["segmentation"])
        params = {k: v for k, v in seg.items() if k not in SEGMENTATION_KEYS_NOT_FOR_BUILDER}
        self.segmenter = build_segmenter(seg["method"], **params)   # refuses a missing model file now
        self.filters = CellFilters(c["cells"]["min_area"], c["cells"]["max_area"],
                                   c["cells"].get("min_solidity", 0.0), c["cells"].get("max_eccentricity", 1.0))
        self.halo = halo_of(c)
        self.chash = config_hash(c)
        self.progress = bool(c.get("progress", True))

    # -- inputs
    def entries(self) -> list[ImageEntry]:
        c, mapping = self.c, dict(self.c["channels"].get("map") or {})
        if c.get("plate_map"):
            return read_plate_map(c["plate_map"], c["input"], self.names, mapping)
        return match_pattern(c["pattern"], c["input"], self.names, mapping)

    def output_dir(self) -> Path:
        if self.c.get("output"):
            return Path(self.c["output"])
        tag = hashlib.sha1(f"{Path(self.c['input']).resolve()}|{self.c.get('plate_map')}|{self.c.get('pattern')}|"
                           f"{self.chash}".encode()).hexdigest()[:8]
        return Path("outputs") / "prepared" / f"{Path(self.c['input']).resolve().name}-{tag}"

    def _bar(self, it, **kw):
        return tqdm(it, disable=None if self.progress else True, dynamic_ncols=True, **kw)   # None: off when not a terminal

    # -- main
    def run(self) -> Path:
        """Prepare the store (``shard=all``), one share of its images (``shard=<k>``: no store yet), or write
        the store from finished shares (``shard=merge``); returns the output folder."""
        t_start = time.perf_counter()
        out = self.output_dir()
        self.check_output(out)
        entries = self.entries()
        order = self.condition_order(entries)
        share = self.share
        # a share is every shards-th image of the plate map, from its own place: the same images whatever
        # the machine, and each share a mix of wells and conditions
        index = [i for i in range(len(entries)) if not isinstance(share, int) or i % self.shards == share]
        sources = open_images([entries[i] for i in index], self.names)
        min_area = self.c["cells"]["min_area"]
        tiny = [f"{s.image_id} ({s.shape[0]}×{s.shape[1]})" for s in sources if s.shape[0] * s.shape[1] < min_area]
        if tiny:
            raise InputError(f"image(s) {', '.join(tiny)} have fewer pixels than one cell (cells.min_area={min_area}): "
                             "check that they are field images (not thumbnails or masks) and remove them from the "
                             "input, or lower cells.min_area")
        # a tile larger than an image is the whole image (tile_grid clips it): nothing to refuse
        work = out / ".prepare"
        keys = {s.image_id: image_key(s, self.chash) for s in sources}
        by_id = {e.image_id: e for e in entries}
        if share == "merge":
            return self.merge(out, work, sources, keys, by_id, order, t_start)
        pool = _pool(int(self.c["workers"]))
        created = not out.exists()
        try:
            stats, fresh = self.stats_pass(sources, keys, work, pool)   # refuses bad pixels; writes nothing
            # every input check has passed: from here on the output folder is written
            with output_errors(out, "output", InputError), self.lock(out, work):
                try:
                    self.check_output(out)          # again, under the lock
                    if share == "all":              # share tasks may be writing theirs: the merge removes them
                        for f in out.rglob("*.tmp"):    # left by a killed writer; no writer is alive now
                            f.unlink()
                    for image_id, rec in fresh.items():
                        _atomic_json(work / "stats" / f"{image_id}.json", rec)
                    (work / "images").mkdir(parents=True, exist_ok=True)
                    records, n_cells = {}, 0
                    writer = self.writer(out)
                    n_overlay = int(self.c["summary"].get("overlays", 0))
                    for k, s in zip(index, self._bar(sources, desc="images", unit="image")):
                        rec = self.image_pass(s, keys[s.image_id], stats[s.image_id], writer, work, pool,
                                              overlay=k < n_overlay)   # k: the image's place in the plate map
                        n_cells += len(rec["rows"])
                        if share == "all":          # a share task keeps none: its memory stays that of one image
                            records[s.image_id] = rec
                    if share != "all":
                        self.share_done(work, sources, n_cells, time.perf_counter() - t_start)
                        return out
                    df = self.finish(out, work, writer, sources, by_id, records, order)
                    self.summary(out, sources, by_id, records, stats, df, order, time.perf_counter() - t_start)
                except (InputError, OSError):
                    if created and share == "all":  # a refused prepare into a new folder leaves no folder
                        shutil.rmtree(out, ignore_errors=True)
                    raise
        finally:
            if pool is not None:
                pool.close()
                pool.join()
        log.info("crop store written: %s (%d rows)", out, len(df))
        return out

    @property
    def shards(self) -> int:
        return int(self.c.get("shards", 1))

    @property
    def share(self) -> int | str:
        """``all``, ``merge``, or the index of this task's share."""
        return self.c.get("shard", "all")

    def writer(self, out: Path) -> CropStoreWriter:
        writer = CropStoreWriter(out, self.names, self.c["cells"]["crop_size"], source="prepare")
        writer.dtype = self.c["store_dtype"]
        return writer

    @contextmanager
    def lock(self, out: Path, work: Path):
        """``.prepare/lock``, exclusive for a prepare that writes the store (``all``, ``merge``); a share task
        holds it shared (the other shares' tasks run beside it, a merge or a whole prepare is refused) and
        ``.prepare/lock-share-<k>`` exclusive (a second task of its share is refused)."""
        def refuse(holder):
            return InputError(f"output={out} is being written by another prepare ({holder}); wait for it to finish, "
                              "or give this one another output=")
        share = self.share
        with exclusive_lock(work / "lock", refuse, shared=isinstance(share, int)):
            if not isinstance(share, int):
                yield
                return
            with exclusive_lock(work / f"lock-share-{share}", lambda holder: InputError(
                    f"share {share} of output={out} is being prepared by another task ({holder}): a share runs in one "
                    "task at a time; wait for it, or stop it before re-running the share")):
                yield

    def share_done(self, work: Path, sources, n_cells: int, seconds: float) -> None:
        """``.prepare/shares/<k>-of-<n>.json``: what this share task did (the merge reports it; whether a share
        is complete is decided from the image records themselves)."""
        import resource
        import socket

        peak = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
        _atomic_json(work / "shares" / f"{self.share}-of-{self.shards}.json", {
            "share": self.share, "shards": self.shards, "images": len(sources), "cells": n_cells,
            "megapixels": round(sum(s.shape[0] * s.shape[1] for s in sources) / 1e6, 3),
            "seconds": round(seconds, 2), "peak_rss_mb": round(peak / 1024, 1), "workers": int(self.c["workers"]),
            "host": socket.gethostname()})
        log.info("share %s of %d prepared: %d images, %d cells in %s; when every share is done: prepare.py … "
                 "shard=merge", self.share, self.shards, len(sources), n_cells, work.parent)

    def merge(self, out: Path, work: Path, sources, keys: dict, by_id: dict, order: list[str], t_start: float) -> Path:
        """Write the store from the records and shards the share tasks left, exactly as ``shard=all`` would
        from its own (the same ``finish`` and ``summary``); refused, naming the shares, while an image of the
        plate map has no finished record (its statistics, its image record, every shard whole)."""
        if not (work / "images").is_dir():
            raise InputError(f"output={out} holds no prepared share: run the share tasks first (the same command with "
                             f"shards={self.shards} shard=0 … shard={self.shards - 1}), then shard=merge")
        with output_errors(out, "output", InputError), self.lock(out, work):
            self.check_output(out)
            for f in out.rglob("*.tmp"):            # left by killed share tasks; none is alive now (the lock)
                f.unlink()
            writer = self.writer(out)
            stats, records, missing = {}, {}, []
            for k, s in enumerate(sources):
                st = _record(work / "stats" / f"{s.image_id}.json")
                rec = self.finished_image(work, s.image_id, keys[s.image_id], writer)
                if st is None or st.get("key") != keys[s.image_id] or rec is None:
                    missing.append(k)
                else:
                    stats[s.image_id], records[s.image_id] = st, rec
            if missing:
                shares = sorted({k % self.shards for k in missing})
                names = ", ".join(str(k) for k in shares)
                example = sources[missing[0]].image_id
                raise InputError(f"output={out}: share(s) {names} of {self.shards} are not complete ({len(missing)} of "
                                 f"{len(sources)} images have no finished record, e.g. {example}; a task still running, "
                                 "failed or never run, or its inputs or settings changed since): run the share task(s) "
                                 f"again — the same command with shard={shares[0]}"
                                 f"{''.join(f', shard={k}' for k in shares[1:])} — then shard=merge; nothing was written")
            df = self.finish(out, work, writer, sources, by_id, records, order)
            self.summary(out, sources, by_id, records, stats, df, order, time.perf_counter() - t_start,
                         shares=self.share_records(work))
        log.info("crop store written: %s (%d rows, merged from %d shares)", out, len(df), self.shards)
        return out

    def share_records(self, work: Path) -> list[dict]:
        recs = [_record(work / "shares" / f"{k}-of-{self.shards}.json") for k in range(self.shards)]
        return [r for r in recs if r is not None]

    def check_output(self, out: Path) -> None:
        """Refuse an output that is a file, or holds something other than a store of these inputs
        (unless ``overwrite=true``): a prepare never silently replaces another plate's store."""
        if out.exists() and not out.is_dir():
            raise InputError(f"output={out} is a file: give a folder for the crop store (it is created)")
        if not out.is_dir() or self.c.get("overwrite") or not any(out.iterdir()):
            return
        info_path = out / "store.json"
        mine = {"input": str(Path(self.c["input"]).resolve()),
                "plate_map": str(Path(self.c["plate_map"]).resolve()) if self.c.get("plate_map") else None,
                "pattern": self.c.get("pattern")}
        if not info_path.exists():
            if (out / ".prepare").is_dir():         # an unfinished prepare: resume it
                return
            raise InputError(f"output={out} is a folder that holds other files and no crop store: give an empty or "
                             "new folder, or overwrite=true to write the store beside those files")
        try:
            old = json.loads(info_path.read_text()).get("prepare", {}).get("config") or {}
        except (ValueError, UnicodeDecodeError, AttributeError):
            old = {}
        theirs = {"input": str(Path(old["input"]).resolve()) if old.get("input") else None,
                  "plate_map": str(Path(old["plate_map"]).resolve()) if old.get("plate_map") else None,
                  "pattern": old.get("pattern")}
        if theirs != mine:
            differ = ", ".join(f"{k}: {theirs[k]} → {mine[k]}" for k in mine if theirs[k] != mine[k])
            raise InputError(f"output={out} holds a crop store of other inputs ({differ}); preparing into it would "
                             "replace that store: give another output=, or overwrite=true to replace it")

    def condition_order(self, entries: list[ImageEntry]) -> list[str]:
        """Class order (label 0, 1, …; ``protocell.prepare.classes``): ``conditions`` as given, else the
        reference-like name first; refused before any pixel is read when ``conditions`` and the plate map's
        conditions differ. Images without a condition (scoring only) are not a class."""
        return class_order([e.condition for e in entries], self.c.get("conditions"),
                           f"the plate map {self.c.get('plate_map') or ''}".rstrip())

    def stats_pass(self, sources, keys, work: Path, pool) -> tuple[dict, dict]:
        """Statistics of every image first: bad pixels are refused before anything is written.
        Returns (records of every image, the newly computed ones for ``.prepare/stats``)."""
        n = self.c["normalize"]
        out, fresh = {}, {}
        for s in self._bar(sources, desc="statistics", unit="image"):
            rec = _record(work / "stats" / f"{s.image_id}.json")
            if rec is not None and rec.get("key") == keys[s.image_id]:
                out[s.image_id] = rec
                continue
            cores = [t.core for t in tile_grid(s.shape, 2048, 0)]
            parts = _imap(pool, partial(block_stats, s, self.names), cores)
            stats = combine_stats(s, self.names, parts, n["low"], n["high"])
            thr = thresholds_of(stats, self.names, self.c["segmentation"], self.c["channels"]["main"],
                                self.c["channels"]["second"])
            rec = {"key": keys[s.image_id], "channels": [st.to_dict() for st in stats], "thresholds": thr}
            out[s.image_id] = fresh[s.image_id] = rec
        return out, fresh

    @staticmethod
    def finished_image(work: Path, image_id: str, key: str, writer: CropStoreWriter) -> dict | None:
        """The image's record when its work is done with these files and settings and every shard it lists is
        whole (a deleted or truncated shard: None, the image is done again)."""
        rec = _record(work / "images" / f"{image_id}.json")
        if rec is None or rec.get("key") != key or "background" not in rec:
            return None
        sizes = pd.Series([r["shard"] for r in rec["rows"]], dtype=object).value_counts()
        return rec if all(writer.shard_done(sh, int(sizes.get(sh, 0))) for sh in rec["shards"]) else None

    def image_pass(self, s: ImageSource, key: str, stats: dict, writer: CropStoreWriter, work: Path, pool,
                   overlay: bool = False) -> dict:
        rec_path = work / "images" / f"{s.image_id}.json"
        rec = self.finished_image(work, s.image_id, key, writer)
        if rec is not None:
            return rec
        c = self.c
        tiles = tile_grid(s.shape, c["tile"]["size"], self.halo)
        overlay_tiles = {len(tiles) // 2} if overlay else set()
        job = partial(_tile_job, s, [ch["low"] for ch in stats["channels"]], [ch["high"] for ch in stats["channels"]],
                      float(c["denoise_sigma"]), self.main, self.second, self.segmenter, stats["thresholds"],
                      c["cells"]["crop_size"], self.filters, c["store_dtype"], overlay_tiles, self.names)
        counts = dict.fromkeys(COUNT_KEYS, 0)
        bg_sum, bg_n = np.zeros(len(self.names)), 0
        buf_c, buf_m, buf_r, shards, rows_out = [], [], [], [], []
        shard_size = int(c["shard_size"])

        def flush():
            if not buf_r:
                return
            name = f"{s.image_id}-{key[:8]}-{len(shards):03d}"     # never the name of a shard of another key
            writer.write_shard(name, np.concatenate(buf_c), np.concatenate(buf_m), [{} for _ in buf_r])
            writer.rows.clear()            # rows are assembled in finish(), from the image records
            shards.append(name)
            rows_out.extend({**r, "shard": name, "shard_index": i} for i, r in enumerate(buf_r))
            buf_c.clear(), buf_m.clear(), buf_r.clear()

        overlays = []
        bar = self._bar(_imap(pool, job, tiles), total=len(tiles), desc=f"tiles {s.image_id}", unit="tile",
                        leave=False)
        n_buf = 0
        for crops, masks, rows, cnt, overlay in bar:
            for k in COUNT_KEYS:
                counts[k] += cnt[k]
            bg_sum += cnt["background"][0]
            bg_n += cnt["background"][1]
            if overlay is not None:
                overlays.append(overlay)
            if rows:
                buf_c.append(crops), buf_m.append(masks), buf_r.extend(rows)
                n_buf += len(rows)
            if n_buf >= shard_size:
                flush()
                n_buf = 0
        flush()
        overlay_files = []
        for ov in overlays:
            overlay_files.append(write_overlay(work.parent / "overlays" / f"{s.image_id}-{key[:8]}_tile{len(tiles) // 2}.png",
                                               *ov))
        if not rows_out:
            log.warning("image %s: no cell found (thresholds %s); recorded in prepare_summary.json, run goes on",
                        s.image_id, stats["thresholds"])
        # mean normalised level of the pixels outside every object (the confound report's background)
        background = {n: (round(float(v / bg_n), 6) if bg_n else None) for n, v in zip(self.names, bg_sum)}
        rec = {"key": key, "shards": shards, "rows": rows_out, "counts": counts, "tiles": len(tiles),
               "background": background,
               "overlays": [str(p.relative_to(work.parent)) for p in overlay_files]}
        _atomic_json(rec_path, rec)
        return rec

    def finish(self, out: Path, work: Path, writer: CropStoreWriter, sources, by_id, records, order: list[str]):
        c = self.c
        conditions = {s.image_id: by_id[s.image_id].condition for s in sources}
        # an image without a condition is scored only: label −1, no split (the DataModule skips it)
        with_cells = {i: cond for i, cond in conditions.items() if records[i]["rows"] and cond}
        split = split_images(with_cells, c["split"]["test_fraction"], int(c["split"]["seed"]),
                             {i: by_id[i].plate for i in with_cells})
        writer.rows.clear()
        next_id = 0
        originals: list[tuple[str, list[dict]]] = []
        for s in sources:
            e, rec = by_id[s.image_id], records[s.image_id]
            meta = {**e.meta, "image_id": e.image_id, "plate": e.plate, "well": e.well, "field": e.field,
                    "condition": e.condition, "label": order.index(e.condition) if e.condition else -1,
                    "split": split.get(e.image_id, "")}
            for shard in rec["shards"]:
                rows = [{**r, **meta, "cell_id": next_id + i} for i, r in
                        enumerate(r for r in rec["rows"] if r["shard"] == shard)]
                next_id += len(rows)
                for r in rows:
                    r.pop("shard"), r.pop("shard_index")
                writer.add_rows(shard, rows)
                originals.append((shard, rows))
        if not writer.rows:
            raise InputError(f"no cell was found in any of the {len(sources)} image(s) (see "
                             f"{work / 'stats'} for thresholds): check channels.main/second and the segmentation "
                             "thresholds, or cells.min_area/max_area")
        # offline augmentation of training originals, one augmented shard per original shard
        ap = AugmentParams(**{k: v for k, v in c["augment"].items()})
        if ap.copies > 0:
            akey = hashlib.sha1(json.dumps(asdict(ap), sort_keys=True).encode()).hexdigest()[:12]
            for shard, rows in self._bar(originals, desc="augment", unit="shard"):
                if not rows or rows[0]["split"] != "train":
                    continue
                name = f"{shard}.aug-{akey[:8]}"
                rec_path = work / "aug" / f"{name}.json"
                image_rec_key = records[rows[0]["image_id"]]["key"]
                meta = None
                rec = _record(rec_path)
                if rec is not None and rec.get("key") == [image_rec_key, akey] and \
                        writer.shard_done(name, len(rec["meta"])):
                    meta = rec["meta"]
                if meta is None:
                    crops = np.load(out / "shards" / f"{shard}.crops.npy", mmap_mode="r")
                    masks = np.load(out / "shards" / f"{shard}.masks.npy", mmap_mode="r")
                    crc = zlib.crc32(shard.encode())
                    a_c, a_m, meta = augment_crops(np.asarray(crops), np.asarray(masks),
                                                   [(crc, i) for i in range(len(rows))], ap)
                    writer.write_shard(name, a_c, a_m, [{} for _ in meta])
                    del writer.rows[-len(meta):]
                    _atomic_json(rec_path, {"key": [image_rec_key, akey], "meta": meta})
                aug_rows = []
                for i, desc in meta:
                    r = dict(rows[i])
                    r.update(cell_id=next_id, aug_of=rows[i]["cell_id"], aug=desc, split="train")
                    next_id += 1
                    aug_rows.append(r)
                writer.add_rows(name, aug_rows)
        kept = {k: v for k, v in c.items() if k not in RUN_KEYS}
        writer.extra = {"conditions": order, "prepare": {"config_hash": self.chash, "config": kept},
                        "normalization": {"method": "per_image_percentiles", **c["normalize"]}}
        try:
            df = writer.finish()
        except StoreError as err:
            raise InputError(str(err)) from None
        # shards of an earlier run that this manifest no longer uses (changed input or config)
        used = set(df["shard"])
        for f in (out / "shards").glob("*.npy"):
            if f.name.split(".crops.npy")[0].split(".masks.npy")[0].split(".texture.npy")[0] not in used:
                f.unlink()
        return df

    def summary(self, out: Path, sources, by_id, records, stats, df, order: list[str], seconds: float,
                shares: list[dict] | None = None) -> None:
        orig = df[df["aug_of"] < 0]
        per_image = []
        for s in sources:
            e, rec = by_id[s.image_id], records[s.image_id]
            n = int((orig["image_id"] == s.image_id).sum())
            per_image.append({"image_id": s.image_id, "plate": e.plate, "well": e.well, "field": e.field,
                              "condition": e.condition, "height": s.shape[0], "width": s.shape[1],
                              "tiles": rec["tiles"], "cells": n, "status": "ok" if n else "no cells found",
                              "dropped": {k: v for k, v in rec["counts"].items() if k not in ("objects", "kept")},
                              "thresholds": stats[s.image_id]["thresholds"],
                              "normalisation": stats[s.image_id]["channels"],
                              "background": rec.get("background", {}), "meta": dict(e.meta)})
        summary = {
            "store": str(out), "config_hash": self.chash, "seconds": round(seconds, 2),
            "images": len(sources), "cells": int(len(orig)), "augmented": int((df["aug_of"] >= 0).sum()),
            "megapixels": round(sum(s.shape[0] * s.shape[1] for s in sources) / 1e6, 3),
            "cells_per_well": {f"{p}/{w}": int(v) for (p, w), v in orig.groupby(["plate", "well"]).size().items()},
            "cells_per_condition": {k: int(v) for k, v in orig.groupby("condition").size().items()},
            "cells_per_split": {k: int(v) for k, v in df.groupby("split").size().items()},
            "images_without_cells": [r["image_id"] for r in per_image if r["cells"] == 0],
            "overlays": [p for s in sources for p in records[s.image_id]["overlays"]],
            "confounds": self.confounds(out, orig, per_image, order),
            "per_image": per_image,
        }
        if shares:                      # a merged store: what each share task did
            summary["shares"] = shares
        _atomic_json(out / "prepare_summary.json", summary)
        for f in (out / "overlays").glob("*.png"):        # figures of images this store no longer holds
            if f"overlays/{f.name}" not in summary["overlays"]:
                f.unlink()


    def confounds(self, out: Path, orig: pd.DataFrame, per_image: list[dict], order: list[str]) -> dict:
        """The confound report (``protocell.prepare.confounds``): could cell count, mask shape, a
        channel's mean inside the cells or the background alone tell the conditions apart, over wells?
        Logged, written to ``confounds.csv`` and returned for ``prepare_summary.json``."""
        from protocell.prepare.confounds import FLAG_AUROC, confound_table, summary_lines

        images = pd.DataFrame([{"plate": r["plate"], "well": r["well"],
                                **{f"background_{k}": v for k, v in r["background"].items()}} for r in per_image])
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
            log.warning("confound report: %s alone separate(s) %s from %s over wells (strength > %.2f) and "
                        "describe(s) imaging or segmentation, not the cells: a network may read them instead of "
                        "the biology (for the mask: segmentation=distance grows cells from the nuclei by a fixed "
                        "distance); see %s", ", ".join(flagged), order[-1], order[0], FLAG_AUROC, path)
        return {"available": True, "reference": order[0], "exposed": order[-1], "flag_auroc": FLAG_AUROC,
                "flagged": flagged, "unit": "well (per-well means of the cells; background: of the images)",
                "table": table.to_dict(orient="records")}


def write_overlay(path: Path, main: np.ndarray, second: np.ndarray, labels: np.ndarray, kept: set) -> Path:
    """RGB PNG: main channel grey, nuclei blue, kept cells outlined green, dropped objects red."""
    import matplotlib
    from skimage.segmentation import find_boundaries
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    g = np.clip(main, 0, 1)
    rgb = np.stack([g, g, np.clip(g + 0.6 * np.clip(second, 0, 1), 0, 1)], -1)
    edges = find_boundaries(labels, mode="inner")
    kept_mask = np.isin(labels, list(kept)) if kept else np.zeros(labels.shape, bool)
    rgb[edges & kept_mask] = (0.1, 1.0, 0.1)
    rgb[edges & ~kept_mask] = (1.0, 0.2, 0.2)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda fh: plt.imsave(fh, rgb, format="png"), fsync=False)


def prepare(c: dict) -> Path:
    """Run the pipeline on a plain config dict (``conf/prepare.yaml`` resolved)."""
    return Preparer(c).run()
