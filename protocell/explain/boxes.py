"""Where a prototype matched inside a crop: the receptive-field box (the cell paper) and the
original ProtoPNet 95th-percentile box, from a latent similarity map.

``sim_map: (H, W)`` latent similarities → ``upsample(sim_map, S)``: (S, S) by bicubic
interpolation, as ProtoPNet renders its heat maps. Boxes are (y0, x0, y1, x1), end-exclusive,
in crop pixels.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def upsample(sim_map: np.ndarray | torch.Tensor, size: int) -> np.ndarray:
    t = torch.as_tensor(np.asarray(sim_map, np.float32))[None, None]
    return F.interpolate(t, size=(size, size), mode="bicubic", align_corners=False)[0, 0].numpy()


def rf_box(rf, iy: int, ix: int, size: int) -> tuple[int, int, int, int]:
    """The receptive field of latent unit (iy, ix): a square of the backbone's RF side centred on
    the unit's centre, clipped to the (size × size) crop. ``rf``: a ReceptiveField."""
    return rf.box(int(iy), int(ix), clip=int(size))


def percentile_box(upsampled: np.ndarray, q: float = 95.0) -> tuple[int, int, int, int]:
    """ProtoPNet's box: the bounding box of the pixels at or above the q-th percentile of the
    upsampled activation."""
    mask = upsampled >= np.percentile(upsampled, q)
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1
