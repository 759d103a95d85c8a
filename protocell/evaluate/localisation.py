"""Ground-truth localisation of prototypes, for data whose planted change is known per pixel."""

from __future__ import annotations

import numpy as np
import torch

from protocell.model.prototypes import latent_inside


def box_overlaps_mask(box: tuple[int, int, int, int], mask: np.ndarray) -> bool:
    """Does the pixel box (y0, x0, y1, x1), end-exclusive, contain any pixel of ``mask``?"""
    y0, x0, y1, x1 = box
    return bool(np.asarray(mask)[max(0, y0) : y1, max(0, x0) : x1].any())


def texture_share(boxes: list[tuple[int, int, int, int]], textures: list[np.ndarray]) -> float:
    """Share of patches (boxes in their own cells' crops) that overlap their cell's planted change."""
    return float(np.mean([box_overlaps_mask(b, t) for b, t in zip(boxes, textures)]))


def background_share(latent_yx: torch.Tensor, masks: torch.Tensor, latent_size) -> float:
    """Share of (latent position, cell mask) pairs whose latent unit is not inside the cell.

    latent_yx: (P, 2); masks: (P, 1, S, S) the mask of each position's cell."""
    inside = latent_inside(masks, tuple(latent_size))[:, 0]  # (P, H, W)
    hit = inside[torch.arange(len(latent_yx)), latent_yx[:, 0], latent_yx[:, 1]]
    return float((~hit).float().mean())
