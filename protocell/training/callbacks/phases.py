"""``PhaseCallback`` applies the epoch's ``Phase`` (``training.schedule``) at its start, in the style of
Lightning's ``BaseFinetuning``: it freezes and unfreezes parameter groups, puts frozen feature layers in
eval mode (their batch-norm statistics must not drift) and sets every group's learning rate. Nothing
else writes a learning rate.
"""

from __future__ import annotations

import torch
from lightning.pytorch.callbacks import Callback

from protocell.training.schedule import Phase


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
        apply_phase(
            pl_module, self.phase_at(trainer.current_epoch), trainer.optimizers[0] if trainer.optimizers else None
        )
