"""The training plan and the phase callback.

``build_plan`` expands a schedule into one entry per trainer epoch: ``pretrain`` epochs (backbone
and a linear probe on cross-entropy; stands in for ImageNet weights offline), ``warm`` epochs (backbone
frozen), then ``joint`` epochs; a push after training epoch ``push_start`` and every ``push_every``
epochs after it, and always after the last one (so the final prototypes are real cell patches);
after each push, ``last_layer_epochs`` epochs in which only the last layer trains (none when it is
frozen). ``trainer.max_epochs`` is the plan's length.
"""

from __future__ import annotations

from dataclasses import dataclass

from lightning.pytorch.callbacks import Callback


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
    """Sets the module's phase at the start of every epoch from the plan."""

    def __init__(self, plan: list[PlannedEpoch]):
        self.plan = plan

    def on_train_epoch_start(self, trainer, pl_module):
        epoch = min(trainer.current_epoch, len(self.plan) - 1)
        pl_module.set_phase(self.plan[epoch].phase)
