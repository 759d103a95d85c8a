"""The mask of each imported crop (``protocell.prepare.crops_import``), by ``crops.masks``.

``masks=auto`` takes a mask file where one exists (``<name>.mask.npy`` / ``.mask.tif`` beside the crop,
or the metadata's ``mask`` column) and segments the crop otherwise; ``files`` requires one for every
crop; ``segment`` always segments (``centre_object_mask``: the watershed of ``protocell.prepare.segment``
on the crop's own main and nuclei channels, the object under the crop's centre); ``none`` uses the
whole crop.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from protocell.prepare.crops_files import CROP_SUFFIXES, read_array
from protocell.prepare.io import InputError


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
        raise InputError(
            f"mask file {path} has shape {m.shape}, its crop is {S}×{S}: a mask is one (H, W) plane "
            "of the crop's size, non-zero inside the cell"
        )
    return m > 0


def segmentation_channels(channels: list[str], main: str | None, second: str | None) -> tuple[int, int | None]:
    """(main, nuclei) channel indices for segmenting a crop: the given names when the crops have
    them, else the first channel not named like DNA and the first one that is (or none)."""
    dna = [i for i, c in enumerate(channels) if re.search(r"dna|nuc|dapi|hoechst", c.lower())]
    main_i = channels.index(main) if main in channels else next((i for i in range(len(channels)) if i not in dna), 0)
    if second in channels and channels.index(second) != main_i:
        return main_i, channels.index(second)
    return main_i, next((i for i in dna if i != main_i), None)


def crop_mask(
    root: Path, row: pd.Series, mask_files: set[str], crop: np.ndarray, mode: str, main: int, second: int | None
) -> tuple[np.ndarray, str]:
    """(mask (S, S) bool, how it was made: file | segmented | whole crop) of one crop."""
    S = crop.shape[-1]
    if mode in ("auto", "files"):
        path = mask_file(root, row, mask_files)
        if path is not None:
            return read_mask(path, S), "file"
        if mode == "files":
            raise InputError(
                f"crops.masks=files but {root / row['file']} has no mask file (<name>.mask.npy or .tif "
                "beside it, or the metadata's mask column); use crops.masks=auto to segment the rest"
            )
    if mode != "none":
        m = centre_object_mask(crop, main, second)
        if m is not None and m.any():
            return m, "segmented"
    return np.ones((S, S), bool), "whole crop"
