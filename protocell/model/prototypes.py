"""Prototype layer g: masked squared-L2 distances between latent patches and prototypes.

Shapes: latent ``z: (B, D, H, W)``, prototypes ``p: (P, D)``, cell mask ``m: (B, 1, S, S)``
→ distances ``(B, P, H, W)``.

The **mask term** (the cell paper's adaptation): the cell mask is brought to the latent grid by
area averaging, so each latent unit gets the fraction of its ``jump × jump`` footprint that lies in
the cell. A unit counts as *inside* when that fraction is ≥ 0.5, and, so that every cell with any
mask pixel has at least one inside unit, also the unit(s) with the cell's largest fraction. Distances
at outside units get ``+ penalty`` (``d ← d + a·(1 − M)``). The add-on ends in a sigmoid, so any
squared distance is ≤ D; a penalty > D therefore makes every inside unit closer than every outside
one: background can never be a prototype's nearest patch, in training, push or explanation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def squared_distances(z: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """‖z − p‖² for every latent unit and prototype in one pass: ‖z‖² − 2 z·p + ‖p‖², clamped ≥ 0.

    z: (B, D, H, W), prototypes: (P, D) → (B, P, H, W)."""
    z2 = (z * z).sum(dim=1, keepdim=True)  # (B, 1, H, W)
    zp = torch.einsum("bdhw,pd->bphw", z, prototypes)  # (B, P, H, W)
    p2 = (prototypes * prototypes).sum(dim=1).view(1, -1, 1, 1)  # (1, P, 1, 1)
    return (z2 - 2 * zp + p2).clamp_min(0)


def latent_inside(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Boolean (B, 1, H, W): which latent units count as inside the cell (see module doc).

    mask: (B, 1, S, S) or (B, S, S), values in {0, 1}."""
    if mask.dim() == 3:
        mask = mask[:, None]
    frac = F.adaptive_avg_pool2d(mask.float(), size)  # (B, 1, H, W)
    best = frac.flatten(1).amax(dim=1).view(-1, 1, 1, 1)
    return (frac >= 0.5) | ((frac == best) & (best > 0))


def masked_distances(distances: torch.Tensor, inside: torch.Tensor | None, penalty: float) -> torch.Tensor:
    """d + penalty · (1 − M); ``inside`` None means no mask term."""
    if inside is None:
        return distances
    return distances + penalty * (~inside).to(distances.dtype)


SIMILARITY_EPS = 1e-4  # ε of log_similarity (``protocell.model.views.distance_of`` inverts it)


def log_similarity(distances: torch.Tensor, eps: float = SIMILARITY_EPS) -> torch.Tensor:
    """ProtoPNet's similarity log((d + 1) / (d + ε)): large for near, → 0 for far."""
    return torch.log((distances + 1) / (distances + eps))
