"""Push: project every prototype onto its nearest in-cell latent patch of its own class.

Over the whole push set (training originals, no augmentation), prototype j of class c becomes the
latent vector z[b, :, y, x] minimising ‖z − p_j‖² over cells b of class c and units (y, x) inside
the cell (the global argmin; ties go to the first cell in loader order). Outside units are excluded
outright, whatever the mask penalty. With several processes (DDP), each rank finds its local best
and the global best is taken over all ranks, so every rank ends with identical prototypes.

Provenance (cell id, latent position, distance) is stored in the network's buffers and written
with the pixel boxes to ``prototypes.pt``: ``explain`` reads it and never searches again.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback

from protocell.model.protopnet import ProtoPNet

PROTOTYPES_FORMAT = "protocell-prototypes"
PROTOTYPES_VERSION = 1


@torch.no_grad()
def find_nearest_patches(net: ProtoPNet, loader, device=None) -> dict[str, torch.Tensor]:
    """Global nearest in-cell, own-class latent patch of every prototype over ``loader``.

    Returns distance (P,), vector (P, D), cell_id (P,), latent_yx (P, 2), latent_size (2,)."""
    was_training = net.training
    net.eval()
    device = device or net.prototypes.device
    P, D = net.prototypes.shape
    best_d = torch.full((P,), float("inf"), device=device)
    best_vec = net.prototypes.detach().clone()
    best_cell = torch.full((P,), -1, dtype=torch.long, device=device)
    best_yx = torch.full((P, 2), -1, dtype=torch.long, device=device)
    latent_size = torch.zeros(2, dtype=torch.long)
    for x, mask, y, cell_id in loader:
        x, mask, y, cell_id = x.to(device), mask.to(device), y.to(device), cell_id.to(device)
        z = net.latent(x)                                                  # (B, D, H, W)
        B, _, H, W = z.shape
        latent_size = torch.tensor([H, W])
        d = net.distances(z, None)                                         # unmasked (B, P, H, W)
        inside = net.inside(mask, (H, W))
        if inside is not None:
            d = d.masked_fill(~inside, float("inf"))
        own = net.prototype_class[None, :] == y[:, None]                   # (B, P)
        d = d.masked_fill(~own[:, :, None, None], float("inf"))
        flat = d.permute(1, 0, 2, 3).reshape(P, -1)                        # (P, B·H·W)
        vals, idx = flat.min(dim=1)
        better = vals < best_d
        if better.any():
            b, pos = idx // (H * W), idx % (H * W)
            yy, xx = pos // W, pos % W
            vecs = z[b, :, yy, xx]                                         # (P, D)
            best_d = torch.where(better, vals, best_d)
            best_vec[better] = vecs[better]
            best_cell[better] = cell_id[b][better]
            best_yx[better] = torch.stack([yy, xx], 1)[better]
    net.train(was_training)
    result = {"distance": best_d, "vector": best_vec, "cell_id": best_cell, "latent_yx": best_yx,
              "latent_size": latent_size}
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        result = _global_best(result)
    return result


def _global_best(local: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Take, per prototype, the best candidate over all ranks (ties: the lowest cell id)."""
    world = dist.get_world_size()
    gathered = {}
    for k in ("distance", "vector", "cell_id", "latent_yx", "latent_size"):
        t = local[k].contiguous()
        if k == "latent_size":
            t = t.to(local["distance"].device)
        out = [torch.empty_like(t) for _ in range(world)]
        dist.all_gather(out, t)
        gathered[k] = torch.stack(out)                                     # (world, ...)
    d, cells = gathered["distance"], gathered["cell_id"]
    # lexicographic argmin over ranks: distance first, then cell id
    key_cell = torch.where(cells < 0, torch.iinfo(torch.long).max, cells).double()
    best = torch.full_like(d[0], float("inf"))
    pick = torch.zeros(d.shape[1], dtype=torch.long, device=d.device)
    best_cell = torch.full_like(key_cell[0], float("inf"))
    for r in range(world):
        take = (d[r] < best) | ((d[r] == best) & (key_cell[r] < best_cell))
        best = torch.where(take, d[r], best)
        best_cell = torch.where(take, key_cell[r], best_cell)
        pick = torch.where(take, torch.full_like(pick, r), pick)
    ar = torch.arange(d.shape[1], device=d.device)
    return {"distance": best, "vector": gathered["vector"][pick, ar], "cell_id": cells[pick, ar],
            "latent_yx": gathered["latent_yx"][pick, ar], "latent_size": gathered["latent_size"].amax(0).cpu()}


@torch.no_grad()
def broadcast_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Under DDP, copy rank ``src``'s buffers (batch-norm running statistics) to every rank.

    DDP keeps parameters equal, but each rank's last training forward updates its running
    statistics from its own batch (SyncBatchNorm, which would avoid that, runs on GPUs only); push
    and evaluation in eval mode must see the same network on every rank."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        for b in module.buffers():
            dist.broadcast(b.data, src=src)


@torch.no_grad()
def push_prototypes(net: ProtoPNet, loader) -> dict[str, torch.Tensor]:
    """Replace the prototypes by their nearest patches and record the provenance in ``net``."""
    found = find_nearest_patches(net, loader)
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


def prototype_record(net: ProtoPNet, crop_size: int, latent_size, class_names: list[str], meta: dict) -> dict:
    """Everything ``explain`` needs about the prototypes, as plain tensors / Python values
    (loadable with ``torch.load(..., weights_only=True)``)."""
    rf = net.rf
    boxes = [rf.box(int(y), int(x)) for y, x in net.proto_latent_yx.tolist()]
    clipped = [rf.box(int(y), int(x), clip=crop_size) for y, x in net.proto_latent_yx.tolist()]
    return {
        "format": PROTOTYPES_FORMAT, "version": PROTOTYPES_VERSION,
        "vectors": net.prototypes.detach().cpu().clone(),
        "prototype_class": net.prototype_class.cpu().clone(),
        "class_names": list(class_names),
        "last_layer": net.last_layer.weight.detach().cpu().clone(),
        "cell_id": net.proto_cell_id.cpu().clone(),
        "latent_yx": net.proto_latent_yx.cpu().clone(),
        "distance": net.proto_distance.cpu().clone(),
        "box": torch.tensor(boxes, dtype=torch.long),            # RF box in crop pixels (y0, x0, y1, x1)
        "box_clipped": torch.tensor(clipped, dtype=torch.long),  # the same, clipped to the crop
        "rf": rf.as_dict(), "crop_size": int(crop_size), "latent_size": [int(v) for v in latent_size],
        "pushes": int(net.pushes), "use_mask": bool(net.use_mask), "mask_penalty": float(net.mask_penalty),
        "backbone": net.backbone_name, **meta,
    }


def save_prototypes(record: dict, path: str | Path) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(record, tmp)
    os.replace(tmp, path)


class PushCallback(Callback):
    """Pushes at the end of every planned push epoch and writes ``prototypes.pt``."""

    def __init__(self, plan, out_dir: str | Path, meta: dict | None = None):
        self.plan = plan
        self.out_dir = Path(out_dir)
        self.meta = dict(meta or {})
        self.last_record: dict | None = None

    def on_train_epoch_end(self, trainer, pl_module):
        e = trainer.current_epoch
        if e >= len(self.plan) or not self.plan[e].push:
            return
        dm = trainer.datamodule
        broadcast_buffers(pl_module)
        found = push_prototypes(pl_module.net, dm.push_dataloader())
        record = prototype_record(pl_module.net, dm.crop_size, found["latent_size"].tolist(),
                                  pl_module.class_names, {**self.meta, "epoch": e, "global_step": trainer.global_step})
        self.last_record = record
        pl_module.log("push/mean_distance", found["distance"].mean(), on_epoch=True)
        if trainer.is_global_zero:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            save_prototypes(record, self.out_dir / "prototypes.pt")
