"""Prototype health: near-duplicates, prototypes living on the cell border, and purity.

Collapsed or duplicate prototypes are the most common failure users of prototype networks report.
"""

from __future__ import annotations

import numpy as np
import torch



def duplicate_pairs(vectors: torch.Tensor, cell_id, latent_yx, tol: float = 1e-3) -> list[tuple[int, int]]:
    """Pairs (i, j), i < j, whose squared distance is below ``tol`` or that share a source patch."""
    d = torch.cdist(vectors.double(), vectors.double()) ** 2
    P = len(vectors)
    pairs = []
    for i in range(P):
        for j in range(i + 1, P):
            same = int(cell_id[i]) == int(cell_id[j]) and latent_yx[i].tolist() == latent_yx[j].tolist()
            if same or float(d[i, j]) < tol:
                pairs.append((i, j))
    return pairs


def border_share(masks: torch.Tensor, latent_yx: torch.Tensor, latent_size) -> float:
    """Share of patches whose latent unit straddles the cell border (footprint partly outside).

    masks: (k, 1, S, S) cell masks of the patches' cells; latent_yx: (k, 2)."""
    frac = torch.nn.functional.adaptive_avg_pool2d(masks.float(), tuple(latent_size))[:, 0]   # (k, H, W)
    vals = frac[torch.arange(len(latent_yx)), latent_yx[:, 0], latent_yx[:, 1]]
    return float((vals < 1).float().mean())


def purity(neighbour_labels: np.ndarray, prototype_class: int) -> float:
    return float(np.mean(np.asarray(neighbour_labels) == prototype_class))
