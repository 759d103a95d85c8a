"""The prepare pipeline: raw plate images → the crop store that ``train.py data=prepared`` reads.

    python prepare.py input=/data/plate1 plate_map=/data/plate1/plate_map.csv segmentation=watershed

Stages (each image streamed tile by tile; memory does not grow with image size):

1. inputs: settings checked (``protocell.prepare.settings``); plate map or pattern → images
   (``protocell.prepare.plate``); every file header checked before any work;
2. statistics pass per image (exact histograms / bounded sample): percentiles for normalisation,
   automatic thresholds; NaN/inf pixels and constant channels refused here, before anything is
   written for any image (``protocell.prepare.passes``);
3. per image, per tile (with halo, in a process pool): normalise → Gaussian denoise → segment →
   cells owned by the tile → filters → crops + masks; written as shards of ``shard_size`` cells
   (``protocell.prepare.passes``);
4. split by source image (stratified by plate and condition, seeded), offline augmentation of training
   crops, manifest + ``store.json`` (written last; ``protocell.prepare.assemble``),
   ``prepare_summary.json`` and overlay PNGs (``protocell.prepare.report``).

Resumable: a re-run with the same config skips the images already done (``protocell.prepare.settings``).
Safe for an existing store (docs/reliability.md): every input check (files, plate map, conditions,
pixels) runs before anything is written; the output folder is then locked, and the old store stays
readable until the new one replaces it (``protocell.prepare.assemble``); a refused prepare into a new
folder leaves no folder.

In shares (a cluster, docs/prepare.md): ``shards=N shard=k`` runs stages 1–3 on every N-th image of the
plate map from the k-th (statistics are per image, so a share needs nothing from another) and writes
``.prepare/shares/k-of-N.json``; ``shard=merge`` runs stage 4 once every image of the plate map has its
finished records (else it is refused, naming the shares), giving the store one process writes, byte for
byte (``store.json`` records the settings that make the store, not ``assemble.RUN_KEYS``).
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import time
from pathlib import Path

from tqdm import tqdm

from protocell.fsutil import output_errors
from protocell.prepare.assemble import StoreAssembly
from protocell.prepare.classes import class_order
from protocell.prepare.crops import CellFilters
from protocell.prepare.io import InputError
from protocell.prepare.passes import ImagePasses, worker_pool
from protocell.prepare.plate import ImageEntry, match_pattern, open_images, read_plate_map
from protocell.prepare.report import write_summary
from protocell.prepare.segment import build_segmenter
from protocell.prepare.settings import atomic_json, config_hash, halo_of, image_key, validate

log = logging.getLogger("protocell.prepare")

SEGMENTATION_KEYS_NOT_FOR_BUILDER = (
    "method",
    "nuclei_threshold",
    "cell_threshold",
    "threshold_method",
    "min_nuclei_snr",
)


class Preparer(ImagePasses, StoreAssembly):
    """One prepare: its settings, checked and built once (segmenter, filters, halo, config hash), and the
    run that drives the passes over the images (``ImagePasses``) and the store (``StoreAssembly``)."""

    def __init__(self, c: dict):
        validate(c)
        self.c = c
        ch = c["channels"]
        self.names = list(ch["names"])
        self.main, self.second = self.names.index(ch["main"]), self.names.index(ch["second"])
        seg = dict(c["segmentation"])
        params = {k: v for k, v in seg.items() if k not in SEGMENTATION_KEYS_NOT_FOR_BUILDER}
        self.segmenter = build_segmenter(seg["method"], **params)  # refuses a missing model file now
        self.filters = CellFilters(
            c["cells"]["min_area"],
            c["cells"]["max_area"],
            c["cells"].get("min_solidity", 0.0),
            c["cells"].get("max_eccentricity", 1.0),
        )
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
        tag = hashlib.sha1(
            f"{Path(self.c['input']).resolve()}|{self.c.get('plate_map')}|{self.c.get('pattern')}|{self.chash}".encode()
        ).hexdigest()[:8]
        return Path("outputs") / "prepared" / f"{Path(self.c['input']).resolve().name}-{tag}"

    def _bar(self, it, **kw):
        return tqdm(
            it, disable=None if self.progress else True, dynamic_ncols=True, **kw
        )  # None: off when not a terminal

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
            raise InputError(
                f"image(s) {', '.join(tiny)} have fewer pixels than one cell (cells.min_area={min_area}): "
                "check that they are field images (not thumbnails or masks) and remove them from the "
                "input, or lower cells.min_area"
            )
        # a tile larger than an image is the whole image (tile_grid clips it): nothing to refuse
        work = out / ".prepare"
        keys = {s.image_id: image_key(s, self.chash) for s in sources}
        by_id = {e.image_id: e for e in entries}
        if share == "merge":
            return self.merge(out, work, sources, keys, by_id, order, t_start)
        pool = worker_pool(int(self.c["workers"]))
        created = not out.exists()
        try:
            stats, fresh = self.stats_pass(sources, keys, work, pool)  # refuses bad pixels; writes nothing
            # every input check has passed: from here on the output folder is written
            with output_errors(out, "output", InputError), self.lock(out, work):
                try:
                    self.check_output(out)  # again, under the lock
                    if share == "all":  # share tasks may be writing theirs: the merge removes them
                        for f in out.rglob("*.tmp"):  # left by a killed writer; no writer is alive now
                            f.unlink()
                    for image_id, rec in fresh.items():
                        atomic_json(work / "stats" / f"{image_id}.json", rec)
                    (work / "images").mkdir(parents=True, exist_ok=True)
                    records, n_cells = {}, 0
                    writer = self.writer(out)
                    n_overlay = int(self.c["summary"].get("overlays", 0))
                    for k, s in zip(index, self._bar(sources, desc="images", unit="image")):
                        rec = self.image_pass(
                            s, keys[s.image_id], stats[s.image_id], writer, work, pool, overlay=k < n_overlay
                        )  # k: the image's place in the plate map
                        n_cells += len(rec["rows"])
                        if share == "all":  # a share task keeps none: its memory stays that of one image
                            records[s.image_id] = rec
                    if share != "all":
                        self.share_done(work, sources, n_cells, time.perf_counter() - t_start)
                        return out
                    df = self.finish(out, work, writer, sources, by_id, records, order)
                    write_summary(
                        out, self.chash, sources, by_id, records, stats, df, order, time.perf_counter() - t_start
                    )
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

    def condition_order(self, entries: list[ImageEntry]) -> list[str]:
        """Class order (label 0, 1, …; ``protocell.prepare.classes``): ``conditions`` as given, else the
        reference-like name first; refused before any pixel is read when ``conditions`` and the plate map's
        conditions differ. Images without a condition (scoring only) are not a class."""
        return class_order(
            [e.condition for e in entries],
            self.c.get("conditions"),
            f"the plate map {self.c.get('plate_map') or ''}".rstrip(),
        )


def prepare(c: dict) -> Path:
    """Run the pipeline on a plain config dict (``conf/prepare.yaml`` resolved)."""
    return Preparer(c).run()
