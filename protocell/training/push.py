"""Push: project every prototype onto its nearest in-cell latent patch of its own class.

Over the whole push set (training originals, no augmentation), prototype j of class c becomes the
latent vector z[b, :, y, x] minimising ‖z − p_j‖² over cells b of class c and units (y, x) inside
the cell (the global argmin; ties go to the first cell in loader order; ``model.search``). Under
DDP the global best is taken over all ranks, so every rank ends with identical prototypes.

Provenance (cell id, latent position, distance) is stored in the network's buffers; the push
callback writes it with the pixel boxes to ``prototypes.pt`` (``protocell.artifacts``).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from protocell.distributed import is_distributed
from protocell.model.protopnet import ProtoPNet
from protocell.model.search import nearest_patches


@torch.no_grad()
def broadcast_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Under DDP, copy rank ``src``'s buffers (batch-norm running statistics) to every rank.

    DDP keeps parameters equal, but each rank's last training forward updates its running
    statistics from its own batch (SyncBatchNorm, which would avoid that, runs on GPUs only); push
    and evaluation in eval mode must see the same network on every rank."""
    if is_distributed():
        for b in module.buffers():
            dist.broadcast(b.data, src=src)


@torch.no_grad()
def push_prototypes(net: ProtoPNet, loader) -> dict[str, torch.Tensor]:
    """Replace the prototypes by their nearest patches and record the provenance in ``net``.

    Returns distance (P,), vector (P, D), cell_id (P,), latent_yx (P, 2), latent_size (2,)."""
    near = nearest_patches(net, loader, k=1, own_class=True)
    found = {key: near[key][0] for key in ("distance", "cell_id", "latent_yx", "vector")}
    found["latent_size"] = near["latent_size"]
    missing = found["cell_id"] < 0
    if missing.any():
        raise RuntimeError(f"push found no in-cell patch for prototypes {missing.nonzero().flatten().tolist()}: "
                           "the push set has no cell of their class")
    net.prototypes.copy_(found["vector"])
    net.proto_cell_id.copy_(found["cell_id"])
    net.proto_latent_yx.copy_(found["latent_yx"])
    net.proto_distance.copy_(found["distance"])
    net.pushes += 1
    return found
