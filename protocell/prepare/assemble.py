"""Stage 4 of prepare: the crop store assembled from the image records, and the output folder kept safe
while it is written.

``finish`` splits by source image (stratified by plate and condition, seeded: ``split_images``), augments
the training crops offline and writes ``manifest.csv`` and ``store.json``; ``merge`` does the same from the
records and shards that share tasks left (``shard=merge``).

Safe for an existing store (docs/reliability.md): the output folder is locked while it is written
(``.prepare/lock``: a second prepare on it is refused, naming the pid that holds it). Shard names carry the
image's key, so a re-run never overwrites a shard the current store uses: the old store stays readable until
the new ``manifest.csv`` and ``store.json`` (written last, with the manifest's hash) replace it, and only then
are the old shards deleted. An output holding a store of other inputs is refused unless ``overwrite=true``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from protocell.data.split import assign
from protocell.data.store import CropStoreWriter, StoreError
from protocell.fsutil import exclusive_lock, output_errors
from protocell.prepare.augment import AugmentParams, augment_crops
from protocell.prepare.io import InputError
from protocell.prepare.passes import finished_image
from protocell.prepare.report import write_summary
from protocell.prepare.settings import atomic_json, read_record

log = logging.getLogger("protocell.prepare")

# how a prepare ran, not what its store holds: left out of store.json, so a store merged from share tasks is
# byte for byte the store one process writes
RUN_KEYS = ("workers", "progress", "debug", "overwrite", "shards", "shard")

T = TypeVar("T")


def split_images(
    conditions: dict[str, str], test_fraction: float, seed: int, plates: dict[str, str] | None = None
) -> dict[str, str]:
    """image_id → 'train'/'test', stratified by plate and condition (``protocell.data.split``, the policy
    the DataModule uses too): each plate's images of a condition are split alike, so every plate of a
    store lies in train and in test in proportion; an only image of a plate's condition trains. One plate:
    the strata (and draws) of a split by condition alone."""
    strata: dict[tuple[str, str], list[str]] = {}
    for image, cond in conditions.items():
        strata.setdefault(((plates or {}).get(image, ""), cond), []).append(image)
    return assign(strata, {"test": test_fraction}, seed)


class StoreAssembly:
    """``Preparer``'s output folder and store (``protocell.prepare.pipeline`` mixes them in): they read its
    settings (``c``, ``names``, ``chash``, ``share``, ``shards``) and show its progress bars (``_bar``)."""

    c: dict[str, Any]
    names: list[str]
    chash: str
    if TYPE_CHECKING:

        @property
        def share(self) -> int | str: ...
        @property
        def shards(self) -> int: ...
        def _bar(self, it: Iterable[T], **kw: Any) -> Iterator[T]: ...

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
            return InputError(
                f"output={out} is being written by another prepare ({holder}); wait for it to finish, "
                "or give this one another output="
            )

        share = self.share
        with exclusive_lock(work / "lock", refuse, shared=isinstance(share, int)):
            if not isinstance(share, int):
                yield
                return
            with exclusive_lock(
                work / f"lock-share-{share}",
                lambda holder: InputError(
                    f"share {share} of output={out} is being prepared by another task ({holder}): a share runs in one "
                    "task at a time; wait for it, or stop it before re-running the share"
                ),
            ):
                yield

    def share_done(self, work: Path, sources, n_cells: int, seconds: float) -> None:
        """``.prepare/shares/<k>-of-<n>.json``: what this share task did (the merge reports it; whether a share
        is complete is decided from the image records themselves)."""
        import resource
        import socket

        peak = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
        atomic_json(
            work / "shares" / f"{self.share}-of-{self.shards}.json",
            {
                "share": self.share,
                "shards": self.shards,
                "images": len(sources),
                "cells": n_cells,
                "megapixels": round(sum(s.shape[0] * s.shape[1] for s in sources) / 1e6, 3),
                "seconds": round(seconds, 2),
                "peak_rss_mb": round(peak / 1024, 1),
                "workers": int(self.c["workers"]),
                "host": socket.gethostname(),
            },
        )
        log.info(
            "share %s of %d prepared: %d images, %d cells in %s; when every share is done: prepare.py … shard=merge",
            self.share,
            self.shards,
            len(sources),
            n_cells,
            work.parent,
        )

    def merge(self, out: Path, work: Path, sources, keys: dict, by_id: dict, order: list[str], t_start: float) -> Path:
        """Write the store from the records and shards the share tasks left, exactly as ``shard=all`` would
        from its own (the same ``finish`` and ``summary``); refused, naming the shares, while an image of the
        plate map has no finished record (its statistics, its image record, every shard whole)."""
        if not (work / "images").is_dir():
            raise InputError(
                f"output={out} holds no prepared share: run the share tasks first (the same command with "
                f"shards={self.shards} shard=0 … shard={self.shards - 1}), then shard=merge"
            )
        with output_errors(out, "output", InputError), self.lock(out, work):
            self.check_output(out)
            for f in out.rglob("*.tmp"):  # left by killed share tasks; none is alive now (the lock)
                f.unlink()
            writer = self.writer(out)
            stats, records, missing = {}, {}, []
            for k, s in enumerate(sources):
                st = read_record(work / "stats" / f"{s.image_id}.json")
                rec = finished_image(work, s.image_id, keys[s.image_id], writer)
                if st is None or st.get("key") != keys[s.image_id] or rec is None:
                    missing.append(k)
                else:
                    stats[s.image_id], records[s.image_id] = st, rec
            if missing:
                shares = sorted({k % self.shards for k in missing})
                names = ", ".join(str(k) for k in shares)
                example = sources[missing[0]].image_id
                raise InputError(
                    f"output={out}: share(s) {names} of {self.shards} are not complete ({len(missing)} of "
                    f"{len(sources)} images have no finished record, e.g. {example}; a task still running, "
                    "failed or never run, or its inputs or settings changed since): run the share task(s) "
                    f"again — the same command with shard={shares[0]}"
                    f"{''.join(f', shard={k}' for k in shares[1:])} — then shard=merge; nothing was written"
                )
            df = self.finish(out, work, writer, sources, by_id, records, order)
            write_summary(
                out,
                self.chash,
                sources,
                by_id,
                records,
                stats,
                df,
                order,
                time.perf_counter() - t_start,
                shares=self.share_records(work),
            )
        log.info("crop store written: %s (%d rows, merged from %d shares)", out, len(df), self.shards)
        return out

    def share_records(self, work: Path) -> list[dict]:
        recs = [read_record(work / "shares" / f"{k}-of-{self.shards}.json") for k in range(self.shards)]
        return [r for r in recs if r is not None]

    def check_output(self, out: Path) -> None:
        """Refuse an output that is a file, or holds something other than a store of these inputs
        (unless ``overwrite=true``): a prepare never silently replaces another plate's store."""
        if out.exists() and not out.is_dir():
            raise InputError(f"output={out} is a file: give a folder for the crop store (it is created)")
        if not out.is_dir() or self.c.get("overwrite") or not any(out.iterdir()):
            return
        info_path = out / "store.json"
        mine = {
            "input": str(Path(self.c["input"]).resolve()),
            "plate_map": str(Path(self.c["plate_map"]).resolve()) if self.c.get("plate_map") else None,
            "pattern": self.c.get("pattern"),
        }
        if not info_path.exists():
            if (out / ".prepare").is_dir():  # an unfinished prepare: resume it
                return
            raise InputError(
                f"output={out} is a folder that holds other files and no crop store: give an empty or "
                "new folder, or overwrite=true to write the store beside those files"
            )
        try:
            old = json.loads(info_path.read_text()).get("prepare", {}).get("config") or {}
        except (ValueError, UnicodeDecodeError, AttributeError):
            old = {}
        theirs = {
            "input": str(Path(old["input"]).resolve()) if old.get("input") else None,
            "plate_map": str(Path(old["plate_map"]).resolve()) if old.get("plate_map") else None,
            "pattern": old.get("pattern"),
        }
        if theirs != mine:
            differ = ", ".join(f"{k}: {theirs[k]} → {mine[k]}" for k in mine if theirs[k] != mine[k])
            raise InputError(
                f"output={out} holds a crop store of other inputs ({differ}); preparing into it would "
                "replace that store: give another output=, or overwrite=true to replace it"
            )

    def finish(self, out: Path, work: Path, writer: CropStoreWriter, sources, by_id, records, order: list[str]):
        c = self.c
        conditions = {s.image_id: by_id[s.image_id].condition for s in sources}
        # an image without a condition is scored only: label −1, no split (the DataModule skips it)
        with_cells = {i: cond for i, cond in conditions.items() if records[i]["rows"] and cond}
        split = split_images(
            with_cells, c["split"]["test_fraction"], int(c["split"]["seed"]), {i: by_id[i].plate for i in with_cells}
        )
        writer.rows.clear()
        next_id = 0
        originals: list[tuple[str, list[dict]]] = []
        for s in sources:
            e, rec = by_id[s.image_id], records[s.image_id]
            meta = {
                **e.meta,
                "image_id": e.image_id,
                "plate": e.plate,
                "well": e.well,
                "field": e.field,
                "condition": e.condition,
                "label": order.index(e.condition) if e.condition else -1,
                "split": split.get(e.image_id, ""),
            }
            for shard in rec["shards"]:
                rows = [
                    {**r, **meta, "cell_id": next_id + i}
                    for i, r in enumerate(r for r in rec["rows"] if r["shard"] == shard)
                ]
                next_id += len(rows)
                for r in rows:
                    r.pop("shard"), r.pop("shard_index")
                writer.add_rows(shard, rows)
                originals.append((shard, rows))
        if not writer.rows:
            raise InputError(
                f"no cell was found in any of the {len(sources)} image(s) (see "
                f"{work / 'stats'} for thresholds): check channels.main/second and the segmentation "
                "thresholds, or cells.min_area/max_area"
            )
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
                aug_meta: list | None = None  # (i, desc) of each augmented crop
                rec = read_record(rec_path)
                if (
                    rec is not None
                    and rec.get("key") == [image_rec_key, akey]
                    and writer.shard_done(name, len(rec["meta"]))
                ):
                    aug_meta = rec["meta"]
                if aug_meta is None:
                    crops = np.load(out / "shards" / f"{shard}.crops.npy", mmap_mode="r")
                    masks = np.load(out / "shards" / f"{shard}.masks.npy", mmap_mode="r")
                    crc = zlib.crc32(shard.encode())
                    a_c, a_m, aug_meta = augment_crops(
                        np.asarray(crops), np.asarray(masks), [(crc, i) for i in range(len(rows))], ap
                    )
                    writer.write_shard(name, a_c, a_m, [{} for _ in aug_meta])
                    del writer.rows[-len(aug_meta) :]
                    atomic_json(rec_path, {"key": [image_rec_key, akey], "meta": aug_meta})
                aug_rows = []
                for i, desc in aug_meta:
                    r = dict(rows[i])
                    r.update(cell_id=next_id, aug_of=rows[i]["cell_id"], aug=desc, split="train")
                    next_id += 1
                    aug_rows.append(r)
                writer.add_rows(name, aug_rows)
        kept = {k: v for k, v in c.items() if k not in RUN_KEYS}
        writer.extra = {
            "conditions": order,
            "prepare": {"config_hash": self.chash, "config": kept},
            "normalization": {"method": "per_image_percentiles", **c["normalize"]},
        }
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
