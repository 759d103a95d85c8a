"""The training plan and the phase callback.

``build_plan`` expands a schedule into one entry per trainer epoch: ``pretrain`` epochs (backbone
and a linear probe on cross-entropy; stands in for ImageNet weights offline), ``warm`` epochs (backbone
frozen), then ``joint`` epochs; a push after training epoch ``push_start`` and every ``push_every``
epochs after it, and always after the last one (so the final prototypes are real cell patches);
after each push, ``last_layer_epochs`` epochs in which only the last layer trains (none when it is
frozen). ``trainer.max_epochs`` is the plan's length.

Pretrain keeps its best epoch (``pretrain_keep="best"``): a from-scratch backbone trained at a
from-scratch rate oscillates from epoch to epoch (validation accuracy 0.72 at one epoch, 0.49 three
epochs later on the default run), so the last pretrain epoch is a random draw from that oscillation.
The callback remembers the features and probe of the pretrain epoch with the lowest validation
cross-entropy (validation *well* labels only, never ground truth; as early stopping would) and loads
them when the first prototype-network epoch starts. The remembered state is callback state, so it
is in every checkpoint and a resumed run makes the same choice.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
from lightning.pytorch.callbacks import Callback

log = logging.getLogger(__name__)
PRETRAIN_KEEP = ("best", "last")


@dataclass(frozen=True)
class PlannedEpoch:
    phase: str
    push: bool


def build_plan(epochs: int, warm_epochs: int = 0, push_every: int = 10, push_start: int | None = None,
               last_layer_epochs: int = 0, train_last_layer: bool = True,
               pretrain_epochs: int = 0) -> list[PlannedEpoch]:
    """``epochs`` counts the prototype-network epochs (warm + joint); pushes count from them."""
    if epochs < 1 or push_every < 1 or warm_epochs < 0 or last_layer_epochs < 0 or pretrain_epochs < 0:
        raise ValueError(f"bad schedule: epochs={epochs}, warm_epochs={warm_epochs}, push_every={push_every}, "
                         f"last_layer_epochs={last_layer_epochs} (need epochs ≥ 1, push_every ≥ 1, others ≥ 0)")
    push_start = push_every if push_start is None else push_start
    plan = [PlannedEpoch("pretrain", False)] * pretrain_epochs
    for e in range(1, epochs + 1):
        push = e == epochs or (e >= push_start and (e - push_start) % push_every == 0)
        plan.append(PlannedEpoch("warm" if e <= warm_epochs else "joint", push))
        if push and train_last_layer:
            plan += [PlannedEpoch("last_layer", False)] * last_layer_epochs
    return plan


class PhaseCallback(Callback):
    """Sets the module's phase at the start of every epoch from the plan; keeps the best pretrain epoch."""

    def __init__(self, plan: list[PlannedEpoch], pretrain_keep: str = "best", monitor: str = "val/ce"):
        if pretrain_keep not in PRETRAIN_KEEP:
            raise ValueError(f"pretrain_keep must be one of {PRETRAIN_KEEP}, got '{pretrain_keep}'")
        self.plan = plan
        self.pretrain_keep, self.monitor = pretrain_keep, monitor
        self.best = {"value": math.inf, "epoch": -1, "state": None, "restored": False}

    @staticmethod
    def _pretrained_modules(pl_module) -> dict[str, torch.nn.Module]:
        return {"features": pl_module.net.features, "probe": pl_module.probe}

    def on_train_epoch_start(self, trainer, pl_module):
        epoch = min(trainer.current_epoch, len(self.plan) - 1)
        phase = self.plan[epoch].phase
        if phase != "pretrain" and self.best["state"] is not None and not self.best["restored"]:
            for name, module in self._pretrained_modules(pl_module).items():
                module.load_state_dict(self.best["state"][name])
            log.info("pretrain: kept epoch %d (%s %.4f) of %d", self.best["epoch"], self.monitor,
                     self.best["value"], sum(p.phase == "pretrain" for p in self.plan))
            self.best.update(state=None, restored=True)   # no need to carry it in later checkpoints
        pl_module.set_phase(phase)

    def on_validation_end(self, trainer, pl_module):
        if (trainer.sanity_checking or self.pretrain_keep != "best" or pl_module.phase != "pretrain"
                or self.best["restored"]):
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:       # no validation cells: nothing to select on, the last epoch is kept
            return
        value = float(value)
        if value < self.best["value"]:
            state = {name: {k: v.detach().cpu().clone() for k, v in m.state_dict().items()}
                     for name, m in self._pretrained_modules(pl_module).items()}
            self.best.update(value=value, epoch=trainer.current_epoch, state=state)

    def state_dict(self):
        return dict(self.best)

    def load_state_dict(self, state_dict):
        self.best = dict(state_dict)
