"""The callbacks that decide *what happens when*; the LightningModule only computes losses.

- ``PhaseCallback`` applies the epoch's ``Phase`` (``training.schedule``) at its start, in the
  style of Lightning's ``BaseFinetuning``: it freezes and unfreezes parameter groups, puts frozen
  feature layers in eval mode (their batch-norm statistics must not drift) and sets every group's
  learning rate. Nothing else writes a learning rate.
- ``KeepBestPretrain`` remembers the pretrain epoch with the lowest validation cross-entropy and
  loads it when the first prototype-network epoch starts (see its docstring).
- ``PushCallback`` pushes at the end of every planned push epoch and is the one writer of
  ``prototypes.pt`` (at every push, and at the end of training with the final last layer).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback

from protocell.artifacts import prototype_record, write_prototypes
from protocell.training.push import broadcast_buffers, push_prototypes
from protocell.training.schedule import Phase

log = logging.getLogger("protocell.train")
PRETRAIN_KEEP = ("best", "last")


def apply_phase(module, phase: Phase, optimizer: torch.optim.Optimizer | None = None) -> None:
    """Put ``module`` (a ProtoPNetModule) in ``phase``: trainable groups, train/eval modes, rates."""
    module.phase = phase.name
    for name, params in module.groups().items():
        for p in params:
            p.requires_grad_(phase.trains(name))
    if optimizer is not None:
        for group in optimizer.param_groups:
            group["lr"] = phase.lr[group["name"]]
    if module.training:
        module.train()
        for name, sub in module.group_modules().items():
            sub.train(phase.trains(name))


class PhaseCallback(Callback):
    """Applies ``schedule[epoch]`` at the start of every training epoch."""

    def __init__(self, schedule: list[Phase]):
        self.schedule = list(schedule)

    def phase_at(self, epoch: int) -> Phase:
        return self.schedule[min(epoch, len(self.schedule) - 1)]

    def on_train_epoch_start(self, trainer, pl_module):
        apply_phase(pl_module, self.phase_at(trainer.current_epoch),
                    trainer.optimizers[0] if trainer.optimizers else None)


class KeepBestPretrain(Callback):
    """Pretrain keeps its best epoch (``schedule.pretrain_keep=best``).

    A from-scratch backbone trained at a from-scratch rate oscillates from epoch to epoch, so the
    last pretrain epoch is a random draw from that oscillation. This callback remembers the
    features and probe of the pretrain epoch with the lowest validation cross-entropy (validation
    *well* labels only, never ground truth; as early stopping would) and loads them when the first
    prototype-network epoch starts. The remembered state is callback state, so it is in every
    checkpoint and a resumed run makes the same choice."""

    def __init__(self, schedule: list[Phase], monitor: str = "val/ce"):
        self.pretrain = [p.name == "pretrain" for p in schedule]
        self.monitor = monitor
        self.best = {"value": math.inf, "epoch": -1, "state": None, "restored": False}

    @staticmethod
    def _modules(pl_module) -> dict[str, torch.nn.Module]:
        return {"features": pl_module.net.features, "probe": pl_module.probe}

    def _is_pretrain(self, epoch: int) -> bool:
        return bool(self.pretrain) and self.pretrain[min(epoch, len(self.pretrain) - 1)]

    def on_train_epoch_start(self, trainer, pl_module):
        if self._is_pretrain(trainer.current_epoch) or self.best["state"] is None or self.best["restored"]:
            return
        for name, module in self._modules(pl_module).items():
            module.load_state_dict(self.best["state"][name])
        log.info("pretrain: kept epoch %d (%s %.4f) of %d", self.best["epoch"], self.monitor,
                 self.best["value"], sum(self.pretrain))
        self.best.update(state=None, restored=True)   # no need to carry it in later checkpoints

    def on_validation_end(self, trainer, pl_module):
        if trainer.sanity_checking or not self._is_pretrain(trainer.current_epoch) or self.best["restored"]:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:       # no validation cells: nothing to select on, the last epoch is kept
            return
        value = float(value)
        if value < self.best["value"]:
            state = {name: {k: v.detach().cpu().clone() for k, v in m.state_dict().items()}
                     for name, m in self._modules(pl_module).items()}
            self.best.update(value=value, epoch=trainer.current_epoch, state=state)

    def state_dict(self):
        return dict(self.best)

    def load_state_dict(self, state_dict):
        self.best = dict(state_dict)


class PushCallback(Callback):
    """Pushes at the end of every planned push epoch; writes ``prototypes.pt`` (rank 0)."""

    def __init__(self, schedule: list[Phase], out_dir: str | Path | None = None, meta: dict | None = None):
        self.push = [p.push for p in schedule]
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.meta = dict(meta or {})
        self.latent_size: list[int] | None = None

    def record(self, trainer, pl_module) -> dict:
        dm = trainer.datamodule
        meta = {**self.meta, "epoch": trainer.current_epoch, "global_step": trainer.global_step}
        return prototype_record(pl_module.net, dm.crop_size, self.latent_size or [0, 0], pl_module.class_names, meta)

    def _write(self, trainer, pl_module) -> None:
        if self.out_dir is not None and trainer.is_global_zero and self.latent_size is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            write_prototypes(self.record(trainer, pl_module), self.out_dir / "prototypes.pt")

    def on_train_epoch_end(self, trainer, pl_module):
        e = trainer.current_epoch
        if e >= len(self.push) or not self.push[e]:
            return
        broadcast_buffers(pl_module)
        found = push_prototypes(pl_module.net, trainer.datamodule.push_dataloader())
        self.latent_size = found["latent_size"].tolist()
        pl_module.log("push/mean_distance", found["distance"].mean(), on_epoch=True)
        self._write(trainer, pl_module)

    def on_train_end(self, trainer, pl_module):
        self._write(trainer, pl_module)        # the final last layer, after the last-layer epochs

    def state_dict(self):
        return {"latent_size": self.latent_size}

    def load_state_dict(self, state_dict):
        self.latent_size = state_dict.get("latent_size")
