"""``InitPrototypes`` sets the prototypes from real latent patches when the first prototype-network
epoch starts.
"""

from __future__ import annotations

import logging

import torch
from lightning.pytorch.callbacks import Callback

from protocell.model.init import initial_prototypes
from protocell.training.push import broadcast_tensor
from protocell.training.schedule import Phase

log = logging.getLogger("protocell.train")


class InitPrototypes(Callback):
    """Sets the prototypes from real latent patches (``prototypes.init``) when the first prototype-network
    epoch starts, after the kept pretrain epoch is restored; once per run (state in checkpoints)."""

    def __init__(self, schedule: list[Phase], method: str = "evidence", max_cells: int = 4000):
        self.pretrain = [p.name == "pretrain" for p in schedule]
        self.method, self.max_cells = method, max_cells
        self.done = method == "random"

    def on_train_epoch_start(self, trainer, pl_module):
        e = min(trainer.current_epoch, len(self.pretrain) - 1)
        if self.done or self.pretrain[e]:
            return
        from torch.utils.data import DataLoader, Subset

        dm = trainer.datamodule
        ds = dm.dataset("push")
        g = torch.Generator().manual_seed(int(getattr(dm, "seed", 0)))
        pick = torch.randperm(len(ds), generator=g)[: self.max_cells].sort().values.tolist()
        loader = DataLoader(Subset(ds, pick), batch_size=dm.eval_batch_size)
        trained_probe = any(self.pretrain)
        protos = initial_prototypes(
            pl_module.net,
            loader,
            self.method,
            probe=pl_module.probe if trained_probe else None,
            positive=pl_module.positive,
            seed=int(getattr(dm, "seed", 0)),
        )
        broadcast_tensor(protos)
        with torch.no_grad():
            pl_module.net.prototypes.copy_(protos.to(pl_module.net.prototypes.device))
        log.info("prototypes initialised from latent patches (%s, %d cells)", self.method, len(pick))
        self.done = True

    def state_dict(self):
        return {"done": self.done}

    def load_state_dict(self, state_dict):
        self.done = bool(state_dict.get("done", self.done))
