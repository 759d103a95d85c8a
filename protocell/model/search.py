"""Nearest latent patches of every prototype over a set of cells: the one search push and explain use.

For each cell of ``loader`` and prototype j, the cell's best patch is the in-cell latent unit
(y, x) minimising ‖z[:, y, x] − p_j‖² (units outside the cell excluded outright when the network
uses the mask). ``nearest_patches`` keeps, per prototype, the ``k`` cells whose best patch is
nearest, nearest first, streaming over the loader (memory O(k·P·D), flat in the number of cells).
Ties go to the earlier cell in loader order, and within a cell to the first unit in row-major order.

``own_class=True`` restricts prototype j to cells of its own class: push (k = 1) projects each
prototype onto that patch. ``own_class=False`` searches all cells: explain's mosaics (k = 20).
Under DDP each rank searches its shard and the ranks' tables are merged (distance, then cell id),
so every rank ends with the same answer.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from protocell.distributed import is_distributed

KEYS = ("distance", "cell_id", "latent_yx", "vector")


def _merge(a: dict, b: dict, k: int) -> dict:
    """The k nearest of two candidate tables (first axis: candidates), earlier table first on ties."""
    cat = {key: torch.cat([a[key], b[key]]) for key in KEYS}
    order = torch.sort(cat["distance"], dim=0, stable=True).indices[:k]  # (k, P)
    P = order.shape[1]
    ar = torch.arange(P, device=order.device)
    return {
        "distance": cat["distance"][order, ar],
        "cell_id": cat["cell_id"][order, ar],
        "latent_yx": cat["latent_yx"][order, ar],
        "vector": cat["vector"][order, ar],
    }


@torch.no_grad()
def nearest_patches(net, loader, k: int = 1, own_class: bool = False, device=None) -> dict:
    """Returns distance (k, P), cell_id (k, P), latent_yx (k, P, 2), vector (k, P, D) the latent
    patch itself, and latent_size (2,); fewer than k rows when fewer cells qualify for any
    prototype, and cell_id −1 (distance inf) where a prototype has fewer qualifying cells than others."""
    was_training = net.training
    net.eval()
    device = device or net.prototypes.device
    P, D = net.prototypes.shape
    best = {
        "distance": torch.full((k, P), float("inf"), device=device),
        "cell_id": torch.full((k, P), -1, dtype=torch.long, device=device),
        "latent_yx": torch.full((k, P, 2), -1, dtype=torch.long, device=device),
        "vector": torch.zeros((k, P, D), device=device),
    }
    latent_size = torch.zeros(2, dtype=torch.long)
    for x, mask, y, cell_id in loader:
        x, mask, y, cell_id = x.to(device), mask.to(device), y.to(device), cell_id.to(device)
        z = net.latent(x)  # (B, D, H, W)
        B, _, H, W = z.shape
        latent_size = torch.tensor([H, W])
        d = net.distances(z, None)  # unmasked (B, P, H, W)
        inside = net.inside(mask, (H, W))
        if inside is not None:
            d = d.masked_fill(~inside, float("inf"))
        if own_class:
            own = net.prototype_class[None, :] == y[:, None]  # (B, P)
            d = d.masked_fill(~own[:, :, None, None], float("inf"))
        v, i = d.flatten(2).min(dim=2)  # (B, P) best unit per cell
        yy, xx = i // W, i % W
        bb = torch.arange(B, device=device)[:, None].expand(B, P)
        vector = z[bb, :, yy, xx]  # (B, P, D)
        missing = torch.isinf(v)
        # the chosen patch's distance again, directly and in float64: ‖z‖² − 2z·p + ‖p‖² in float32 is
        # quantised to ~‖z‖²·1e-7, which made distinct patches tie in the nearest-patch tables
        exact = ((vector.double() - net.prototypes.double()[None]) ** 2).sum(-1).to(v.dtype)
        v = torch.where(missing, v, exact)
        batch = {
            "distance": v,
            "cell_id": cell_id[:, None].expand(B, P),
            "latent_yx": torch.stack([yy, xx], -1),
            "vector": vector,
        }
        batch["cell_id"] = batch["cell_id"].masked_fill(missing, -1)
        best = _merge(best, batch, k)
    net.train(was_training)
    best["latent_size"] = latent_size
    if is_distributed():
        best = _merge_ranks(best, k)
    filled = int((best["cell_id"] >= 0).any(dim=1).sum())  # fewer cells than k: fewer rows
    return {key: (v[: max(filled, 1)] if key != "latent_size" else v) for key, v in best.items()}


def _merge_ranks(local: dict, k: int) -> dict:
    """Merge every rank's table: nearest first, ties to the lowest cell id (a rank-independent order)."""
    world = dist.get_world_size()
    gathered = {}
    for key in KEYS:
        t = local[key].contiguous()
        out = [torch.empty_like(t) for _ in range(world)]
        dist.all_gather(out, t)
        gathered[key] = torch.cat(out)  # (world·k, P, ...)
    size = local["latent_size"].to(local["distance"].device)
    sizes = [torch.empty_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    cell_key = torch.where(gathered["cell_id"] < 0, torch.iinfo(torch.long).max, gathered["cell_id"])
    by_cell = torch.sort(cell_key, dim=0, stable=True).indices
    P = by_cell.shape[1]
    ar = torch.arange(P, device=by_cell.device)
    pre = {key: v[by_cell, ar] for key, v in gathered.items()}
    empty = {key: v[:0] for key, v in pre.items()}
    merged = _merge(empty, pre, k)
    merged["latent_size"] = torch.stack(sizes).amax(0).cpu()
    return merged
