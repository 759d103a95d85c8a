"""The per-image passes of prepare (stages 2 and 3), each image streamed tile by tile.

The statistics pass reads every image before anything is written: per-image percentiles for
normalisation and automatic thresholds (``thresholds_of``), bad pixels refused. The image pass then
cuts each image into tiles with a halo (``_tile_job``, in a process pool when ``workers`` > 1): normalise
→ denoise → segment → the cells the tile owns → filters → crops and masks, written as shards of
``shard_size`` cells named after the image's key (a re-run never overwrites a shard the current store
uses). An image's statistics and its crops are recorded in ``.prepare/`` (``stats/``, ``images/``; the
statistics once every image has passed), so a re-run does only the images whose record, or one of its
shards, is missing or out of date.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import sys
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import pandas as pd

from protocell.data.store import CropStoreWriter
from protocell.prepare.crops import COUNT_KEYS, CellFilters, background_sums, extract_cells
from protocell.prepare.io import ImageSource, InputError, Tile, tile_grid
from protocell.prepare.preprocess import ChannelStats, block_stats, combine_stats, denoise, normalize
from protocell.prepare.report import write_overlay
from protocell.prepare.settings import atomic_json, read_record

log = logging.getLogger("protocell.prepare")

T = TypeVar("T")
# a segmenter: (main, second, thresholds) → labels (H, W); protocell.prepare.segment
Segmenter = Callable[[np.ndarray, np.ndarray, dict], np.ndarray]
# a tile's overlay: main, second, labels of its core, the labels kept as cells
Overlay = tuple[np.ndarray, np.ndarray, np.ndarray, set]


def worker_pool(workers: int):
    """A process pool, or None for in-process work. Fork is used while torch is not loaded in
    this process (cheap start); otherwise spawn (fork after torch/OpenMP may hang a child)."""
    if workers <= 1:
        return None
    method = "fork" if "torch" not in sys.modules and sys.platform != "win32" else "spawn"
    return mp.get_context(method).Pool(workers)


def _imap(pool, fn, items):
    return pool.imap(fn, items, chunksize=1) if pool is not None else map(fn, items)


def _tile_job(
    source: ImageSource,
    lows,
    highs,
    sigma: float,
    main: int,
    second: int,
    segmenter: Segmenter,
    thresholds: dict,
    crop_size: int,
    filters: CellFilters,
    store_dtype: str,
    overlay_tiles: set,
    names: list[str],
    tile: Tile,
) -> tuple[np.ndarray, np.ndarray, list[dict], dict, Overlay | None]:
    """One tile's crops (n, C, S, S), masks (n, S, S), rows, counts and overlay (None unless asked)."""
    py0, py1, px0, px1 = tile.padded
    block = denoise(normalize(source.read(py0, py1, px0, px1), lows, highs), sigma)
    labels = segmenter(block[main], block[second], thresholds)
    crops, masks, rows, cell_counts = extract_cells(
        labels, block, tile, source.shape, crop_size, filters, store_dtype, names
    )
    counts = {**cell_counts, "background": background_sums(labels, block, tile)}
    overlay: Overlay | None = None
    if tile.index in overlay_tiles:
        cy0, cy1, cx0, cx1 = tile.core
        win = (slice(cy0 - py0, cy1 - py0), slice(cx0 - px0, cx1 - px0))
        kept = {r["tile_label"] for r in rows}
        overlay = (block[main][win], block[second][win], labels[win], kept)
    return crops, masks, rows, counts, overlay


def thresholds_of(stats: list[ChannelStats], names: list[str], seg: dict, main: str, second: str) -> dict:
    """Per-image thresholds in normalised units: given numbers, or Otsu/Li over the whole image."""
    from skimage.filters import threshold_li, threshold_otsu

    auto: dict[str, Callable[[np.ndarray], float]] = {"otsu": threshold_otsu, "li": threshold_li}
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


def finished_image(work: Path, image_id: str, key: str, writer: CropStoreWriter) -> dict | None:
    """The image's record when its work is done with these files and settings and every shard it lists is
    whole (a deleted or truncated shard: None, the image is done again)."""
    rec = read_record(work / "images" / f"{image_id}.json")
    if rec is None or rec.get("key") != key or "background" not in rec:
        return None
    sizes = pd.Series([r["shard"] for r in rec["rows"]], dtype=object).value_counts()
    return rec if all(writer.shard_done(sh, int(sizes.get(sh, 0))) for sh in rec["shards"]) else None


class ImagePasses:
    """``Preparer``'s passes over the images (``protocell.prepare.pipeline`` mixes them in): they read its
    settings (``c``, ``names``, ``main``, ``second``, ``segmenter``, ``filters``, ``halo``) and show its
    progress bars (``_bar``)."""

    c: dict[str, Any]
    names: list[str]
    main: int
    second: int
    segmenter: Segmenter
    filters: CellFilters
    halo: int
    if TYPE_CHECKING:

        def _bar(self, it: Iterable[T], **kw: Any) -> Iterator[T]: ...

    def stats_pass(self, sources, keys, work: Path, pool) -> tuple[dict, dict]:
        """Statistics of every image first: bad pixels are refused before anything is written.
        Returns (records of every image, the newly computed ones for ``.prepare/stats``)."""
        n = self.c["normalize"]
        out, fresh = {}, {}
        for s in self._bar(sources, desc="statistics", unit="image"):
            rec = read_record(work / "stats" / f"{s.image_id}.json")
            if rec is not None and rec.get("key") == keys[s.image_id]:
                out[s.image_id] = rec
                continue
            cores = [t.core for t in tile_grid(s.shape, 2048, 0)]
            parts = _imap(pool, partial(block_stats, s, self.names), cores)
            stats = combine_stats(s, self.names, parts, n["low"], n["high"])
            thr = thresholds_of(
                stats, self.names, self.c["segmentation"], self.c["channels"]["main"], self.c["channels"]["second"]
            )
            rec = {"key": keys[s.image_id], "channels": [st.to_dict() for st in stats], "thresholds": thr}
            out[s.image_id] = fresh[s.image_id] = rec
        return out, fresh

    def image_pass(
        self, s: ImageSource, key: str, stats: dict, writer: CropStoreWriter, work: Path, pool, overlay: bool = False
    ) -> dict:
        rec_path = work / "images" / f"{s.image_id}.json"
        rec = finished_image(work, s.image_id, key, writer)
        if rec is not None:
            return rec
        c = self.c
        tiles = tile_grid(s.shape, c["tile"]["size"], self.halo)
        overlay_tiles = {len(tiles) // 2} if overlay else set()
        job = partial(
            _tile_job,
            s,
            [ch["low"] for ch in stats["channels"]],
            [ch["high"] for ch in stats["channels"]],
            float(c["denoise_sigma"]),
            self.main,
            self.second,
            self.segmenter,
            stats["thresholds"],
            c["cells"]["crop_size"],
            self.filters,
            c["store_dtype"],
            overlay_tiles,
            self.names,
        )
        counts = dict.fromkeys(COUNT_KEYS, 0)
        bg_sum, bg_n = np.zeros(len(self.names)), 0
        buf_c: list[np.ndarray] = []
        buf_m: list[np.ndarray] = []
        buf_r: list[dict] = []
        shards: list[str] = []
        rows_out: list[dict] = []
        shard_size = int(c["shard_size"])

        def flush() -> None:
            if not buf_r:
                return
            name = f"{s.image_id}-{key[:8]}-{len(shards):03d}"  # never the name of a shard of another key
            writer.write_shard(name, np.concatenate(buf_c), np.concatenate(buf_m), [{} for _ in buf_r])
            writer.rows.clear()  # rows are assembled in finish(), from the image records
            shards.append(name)
            rows_out.extend({**r, "shard": name, "shard_index": i} for i, r in enumerate(buf_r))
            buf_c.clear()
            buf_m.clear()
            buf_r.clear()

        overlays: list[Overlay] = []
        bar = self._bar(_imap(pool, job, tiles), total=len(tiles), desc=f"tiles {s.image_id}", unit="tile", leave=False)
        n_buf = 0
        for crops, masks, rows, cnt, tile_overlay in bar:
            for k in COUNT_KEYS:
                counts[k] += cnt[k]
            bg_sum += cnt["background"][0]
            bg_n += cnt["background"][1]
            if tile_overlay is not None:
                overlays.append(tile_overlay)
            if rows:
                buf_c.append(crops)
                buf_m.append(masks)
                buf_r.extend(rows)
                n_buf += len(rows)
            if n_buf >= shard_size:
                flush()
                n_buf = 0
        flush()
        overlay_files = []
        for ov in overlays:
            overlay_files.append(
                write_overlay(work.parent / "overlays" / f"{s.image_id}-{key[:8]}_tile{len(tiles) // 2}.png", *ov)
            )
        if not rows_out:
            log.warning(
                "image %s: no cell found (thresholds %s); recorded in prepare_summary.json, run goes on",
                s.image_id,
                stats["thresholds"],
            )
        # mean normalised level of the pixels outside every object (the confound report's background)
        background = {n: (round(float(v / bg_n), 6) if bg_n else None) for n, v in zip(self.names, bg_sum)}
        rec = {
            "key": key,
            "shards": shards,
            "rows": rows_out,
            "counts": counts,
            "tiles": len(tiles),
            "background": background,
            "overlays": [str(p.relative_to(work.parent)) for p in overlay_files],
        }
        atomic_json(rec_path, rec)
        return rec
