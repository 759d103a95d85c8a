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


def gather_rows(*tensors):
    """The 1-D ``tensors`` (equal lengths on a rank, possibly different between ranks) concatenated
    over all ranks, in rank order, on every rank; themselves without a process group. Each rank's
    rows are padded to the longest for ``all_gather`` and the padding dropped again."""
    rank, world = rank_and_world()
    if world == 1:
        return tensors
    n = torch.tensor([len(tensors[0])], device=tensors[0].device)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n)
    sizes = [int(s) for s in sizes]
    out = []
    for t in tensors:
        padded = t.new_zeros(max(sizes))
        padded[:len(t)] = t
        parts = [torch.zeros_like(padded) for _ in range(world)]
        dist.all_gather(parts, padded)
        out.append(torch.cat([p[:s] for p, s in zip(parts, sizes)]))
    return tuple(out)
