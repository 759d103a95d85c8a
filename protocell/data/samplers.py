"""Samplers of the DataModule's loaders under DDP and in bags (``protocell.data.datamodule``).

``ShardSampler``: a rank's evaluation share, unpadded; ``DistributedEpochSampler``: a rank's training
share of ``EpochSampler``'s permutation, padded; ``BagSampler``: runs of ``bag_size`` items from one
well. All subclass ``DistributedSampler``, so Lightning keeps them instead of wrapping its own
(padding) sampler.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DistributedSampler

from protocell.data.dataset import EpochSampler, epoch_passes


class ShardSampler(DistributedSampler):
    """Evaluation share of one rank: indices ``rank, rank + world, …``, unpadded (every cell once)."""

    def __init__(self, n: int, rank: int, world: int):  # no super().__init__: it wants a dataset
        self.n, self.rank, self.num_replicas, self.epoch, self.shuffle = n, rank, world, 0, False

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.num_replicas))

    def __iter__(self):
        return iter(range(self.rank, self.n, self.num_replicas))


class DistributedEpochSampler(DistributedSampler):
    """Training share of one rank: ``EpochSampler``'s (seed, epoch) permutation, padded by wrapping to
    a multiple of ``world``, then every ``world``-th item from ``rank``; yields (index, epoch) pairs."""

    def __init__(self, n: int, seed: int, rank: int, world: int, repeats: int = 1):
        self.base = EpochSampler(n, seed, repeats)
        self.rank, self.num_replicas, self.epoch, self.shuffle = rank, world, 0, True
        self.per_rank = -(-len(self.base) // world)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.base.set_epoch(epoch)

    def __len__(self) -> int:
        return self.per_rank

    def __iter__(self):
        items = list(self.base)
        items += items[: self.per_rank * self.num_replicas - len(items)]
        return iter(items[self.rank :: self.num_replicas])


class BagSampler(DistributedSampler):
    """Items in *bags*: runs of ``bag_size`` items from one well (``groups``: a well id per item).

    Per pass, each well's items are permuted with a generator seeded by (seed, pass) and cut into
    bags (a well's last < ``bag_size`` items sit the pass out); the bags are shuffled (``shuffle``)
    and, under DDP, padded by wrapping to a multiple of ``world`` and dealt round-robin. A loader
    whose batch size is a multiple of ``bag_size`` then yields whole bags. An epoch is ``repeats`` passes
    (``EpochSampler``: pass ``epoch·repeats + r``; one pass, pass = epoch, by default). Yields (index, pass)."""

    def __init__(
        self, groups, bag_size: int, seed: int, shuffle: bool = True, rank: int = 0, world: int = 1, repeats: int = 1
    ):
        self.groups = np.asarray(groups)
        self.bag_size, self.seed, self.shuffle, self.repeats = int(bag_size), int(seed), shuffle, int(repeats)
        self.rank, self.num_replicas, self.epoch = rank, world, 0
        self._order = {g: np.flatnonzero(self.groups == g) for g in sorted(set(self.groups.tolist()))}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def bags(self) -> list[tuple[int, np.ndarray]]:
        """(pass, the bag's items) in the order this rank yields them."""
        bags: list[tuple[int, np.ndarray]] = []
        for p in epoch_passes(self.epoch, self.repeats) if self.shuffle else (0,):
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + p)
            passed = []
            for items in self._order.values():
                items = items[torch.randperm(len(items), generator=g).numpy()] if self.shuffle else items
                passed += [
                    (p, items[i : i + self.bag_size]) for i in range(0, len(items) - self.bag_size + 1, self.bag_size)
                ]
            if self.shuffle and passed:
                passed = [passed[i] for i in torch.randperm(len(passed), generator=g).tolist()]
            bags += passed
        if self.num_replicas > 1 and bags:
            per_rank = -(-len(bags) // self.num_replicas)
            bags = (bags + bags[: per_rank * self.num_replicas - len(bags)])[self.rank :: self.num_replicas]
        return bags

    def __len__(self) -> int:
        return sum(len(b) for _, b in self.bags())

    def __iter__(self):
        return iter([(int(i), p) for p, b in self.bags() for i in b])
