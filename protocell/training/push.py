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
def broadcast_tensor(t: torch.Tensor, src: int = 0) -> None:
    """Under DDP, rank ``src``'s values of ``t`` on every rank (in place)."""
    if is_distributed():
        dist.broadcast(t, src=src)


def assign_unique(near: dict) -> torch.Tensor:
    """Rank (row of ``near``) each prototype takes so that no two share a source cell: prototypes in
    order of their nearest distance, each takes its nearest candidate cell no earlier one took.
    ``near``: nearest_patches tables (k, P) with k ≥ P. A prototype with no free candidate keeps its
    nearest (possible only when the push set has fewer cells than prototypes of its class)."""
    k, P = near["cell_id"].shape
    pick = torch.zeros(P, dtype=torch.long)
    taken: set[int] = set()
    for j in torch.argsort(near["distance"][0], stable=True).tolist():
        for r in range(k):
            cell = int(near["cell_id"][r, j])
            if cell >= 0 and cell not in taken:
                pick[j] = r
                break
        taken.add(int(near["cell_id"][pick[j], j]))
    return pick


@torch.no_grad()
def push_prototypes(net: ProtoPNet, loader, unique: bool = False) -> dict[str, torch.Tensor]:
    """Replace the prototypes by their nearest patches and record the provenance in ``net``; with
    ``unique``, no two prototypes come from the same cell (``assign_unique``).

    Returns distance (P,), vector (P, D), cell_id (P,), latent_yx (P, 2), latent_size (2,)."""
    P = net.prototypes.shape[0]
    near = nearest_patches(net, loader, k=P if unique else 1, own_class=True)
    pick = assign_unique(near) if unique else torch.zeros(P, dtype=torch.long)
    ar = torch.arange(P)
    found = {
        key: near[key][pick.to(near[key].device), ar.to(near[key].device)]
        for key in ("distance", "cell_id", "latent_yx", "vector")
    }
    found["latent_size"] = near["latent_size"]
    missing = found["cell_id"] < 0
    if missing.any():
        raise RuntimeError(
            f"push found no in-cell patch for prototypes {missing.nonzero().flatten().tolist()}: "
            "the push set has no cell of their class"
        )
    net.prototypes.copy_(found["vector"])
    net.proto_cell_id.copy_(found["cell_id"])
    net.proto_latent_yx.copy_(found["latent_yx"])
    net.proto_distance.copy_(found["distance"])
    net.pushes += 1
    return found
