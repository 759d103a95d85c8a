"""From a segmented tile to single-cell crops: ownership, filters, fixed-size crops and masks.

A tile is segmented with a halo of context (``io.tile_grid``). A cell belongs to the tile whose
*core* holds its centroid, so a cell on a tile border is taken once; it is kept only if it lies
whole inside the padded window (a cell reaching the window's edge is larger than the halo and
counted as ``halo_cut``). Cells touching the image border are dropped (``border``), then the
size and shape filters apply. Each kept cell gives a ``crop_size`` crop centred on its centroid
(zero padded past the image border) and a binary mask of this cell only.

Shapes: ``block`` (C, h, w) float32 normalised pixels of the padded window; ``labels`` (h, w).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage.measure import regionprops

from protocell.prepare.io import Tile

COUNT_KEYS = ("objects", "border", "halo_cut", "too_small", "too_large", "shape", "kept")


@dataclass
class CellFilters:
    min_area: int = 80
    max_area: int = 6000
    min_solidity: float = 0.0  # area / convex area; 0 = off
    max_eccentricity: float = 1.0  # of the fitted ellipse; 1 = off


def to_store_dtype(x: np.ndarray, dtype: str) -> np.ndarray:
    """Normalised float pixels → stored values: uint16 maps [0, 1] to [0, 65535] (clipped)."""
    if dtype == "float32":
        return x.astype(np.float32)
    if dtype == "uint16":
        return np.round(np.clip(x, 0.0, 1.0) * 65535.0).astype(np.uint16)
    raise ValueError(f"store_dtype={dtype!r}: use uint16 or float32")


def extract_cells(
    labels: np.ndarray,
    block: np.ndarray,
    tile: Tile,
    image_shape: tuple[int, int],
    crop_size: int,
    filters: CellFilters,
    store_dtype: str = "uint16",
    channel_names: list[str] | None = None,
) -> tuple[np.ndarray, np.ndarray, list[dict], dict[str, int]]:
    """Crops, masks and manifest rows of the cells this tile owns, and counts of what was dropped.

    Each row also carries the cell's shape (``area``, ``eccentricity``, ``solidity``) and its mean
    normalised intensity per channel as stored (``mean_<channel>``; ``channel_names`` default ``c0, c1, …``):
    the features of prepare's confound report (``protocell.prepare.confounds``).
    Returns (crops (n, C, S, S), masks (n, S, S) uint8, rows list[dict], counts dict)."""
    H, W = image_shape
    py0, py1, px0, px1 = tile.padded
    cy0, cy1, cx0, cx1 = tile.core
    h, w = labels.shape
    S = crop_size
    counts = dict.fromkeys(COUNT_KEYS, 0)
    C = block.shape[0]
    names = list(channel_names) if channel_names is not None else [f"c{i}" for i in range(C)]
    # the intensity features are of the pixels as stored (a uint16 store clips to [0, 1])
    stored = (lambda v: np.clip(v, 0.0, 1.0)) if store_dtype == "uint16" else (lambda v: v)
    empty: tuple[np.ndarray, np.ndarray, list[dict], dict[str, int]] = (
        np.zeros((0, C, S, S), np.float32 if store_dtype == "float32" else np.uint16),
        np.zeros((0, S, S), np.uint8),
        [],
        counts,
    )
    n = int(labels.max())
    if n == 0:
        return empty
    ids = np.arange(n + 1)
    flat = labels.ravel()
    area = np.bincount(flat, minlength=n + 1)
    yy, xx = np.indices(labels.shape)
    sy = np.bincount(flat, weights=yy.ravel(), minlength=n + 1)
    sx = np.bincount(flat, weights=xx.ravel(), minlength=n + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        gy, gx = sy / area + py0, sx / area + px0
    present = (area > 0) & (ids > 0)
    owned = present & (gy >= cy0) & (gy < cy1) & (gx >= cx0) & (gx < cx1)
    counts["objects"] = int(owned.sum())
    slices = ndi.find_objects(labels)
    crops, masks, rows = [], [], []
    for lab in np.flatnonzero(owned):
        sl = slices[lab - 1]
        ys, xs = sl
        # image border: the cell is cut by the field of view
        if ys.start + py0 == 0 or xs.start + px0 == 0 or ys.stop + py0 == H or xs.stop + px0 == W:
            counts["border"] += 1
            continue
        # window border that is not the image border: the cell is larger than the halo
        if ys.start == 0 or xs.start == 0 or ys.stop == h or xs.stop == w:
            counts["halo_cut"] += 1
            continue
        a = int(area[lab])
        if a < filters.min_area:
            counts["too_small"] += 1
            continue
        if a > filters.max_area:
            counts["too_large"] += 1
            continue
        inside = labels[sl] == lab
        region = regionprops(inside.astype(np.uint8))[0]
        solidity = float(region.solidity)
        ecc = float(region.eccentricity)
        if (filters.min_solidity > 0 and solidity < filters.min_solidity) or ecc > filters.max_eccentricity:
            counts["shape"] += 1
            continue
        cy, cx = int(round(gy[lab])), int(round(gx[lab]))
        y0, x0 = cy - S // 2, cx - S // 2
        # window in padded-tile coordinates, clipped; the rest stays zero (past the image border)
        ly0, lx0 = y0 - py0, x0 - px0
        sy0, sx0, sy1, sx1 = max(0, ly0), max(0, lx0), min(h, ly0 + S), min(w, lx0 + S)
        crop = np.zeros((C, S, S), np.float32)
        mask = np.zeros((S, S), np.uint8)
        crop[:, sy0 - ly0 : sy1 - ly0, sx0 - lx0 : sx1 - lx0] = block[:, sy0:sy1, sx0:sx1]
        mask[sy0 - ly0 : sy1 - ly0, sx0 - lx0 : sx1 - lx0] = labels[sy0:sy1, sx0:sx1] == lab
        crops.append(to_store_dtype(crop, store_dtype))
        masks.append(mask)
        rows.append(
            {
                "bbox_y0": y0,
                "bbox_x0": x0,
                "bbox_y1": y0 + S,
                "bbox_x1": x0 + S,
                "centroid_y": round(float(gy[lab]), 2),
                "centroid_x": round(float(gx[lab]), 2),
                "area": a,
                "eccentricity": round(ecc, 4),
                "solidity": round(solidity, 4),
                **{f"mean_{n}": round(float(stored(block[c][sl][inside]).mean()), 5) for c, n in enumerate(names)},
                "tile": tile.index,
                "tile_label": int(lab),
            }
        )
        counts["kept"] += 1
    if not rows:
        return empty[:3] + (counts,)
    return np.stack(crops), np.stack(masks), rows, counts


def background_sums(labels: np.ndarray, block: np.ndarray, tile: Tile) -> tuple[list[float], int]:
    """Per-channel sums of the normalised pixels outside every object in the tile's core (each pixel
    of the image counted once over its tiles), and how many pixels: an image's background level is
    the sums over its tiles divided by the count."""
    py0, _, px0, _ = tile.padded
    cy0, cy1, cx0, cx1 = tile.core
    win = (slice(cy0 - py0, cy1 - py0), slice(cx0 - px0, cx1 - px0))
    outside = labels[win] == 0
    return [float(block[c][win][outside].sum(dtype=np.float64)) for c in range(block.shape[0])], int(outside.sum())
