"""The one place that asks whether this process is one rank of several (DDP)."""

from __future__ import annotations

import torch
import torch.distributed as dist


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of the default process group; (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_distributed() -> bool:
    return rank_and_world()[1] > 1


def gather_predictions(batches: list[dict]) -> list[dict]:
    """Under DDP, every rank's predictions in loader order (``ShardSampler``: rank r holds positions
    r, r + world, …); one process: ``batches`` unchanged."""
    if not is_distributed() or not batches:
        return batches
    world = dist.get_world_size()
    local = {k: torch.cat([b[k] for b in batches]).cpu() for k in batches[0]}
    shards: list = [None] * world
    dist.all_gather_object(shards, local)
    position = torch.cat([r + world * torch.arange(len(sh["cell_id"])) for r, sh in enumerate(shards)])
    order = torch.argsort(position)
    return [{k: torch.cat([sh[k] for sh in shards])[order] for k in local}]
