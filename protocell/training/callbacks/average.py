"""``WeightAverage``: the prototype network's weights averaged over the last joint epochs before the
final push — stochastic weight averaging (Izmailov, Podoprikhin, Garipov, Vetrov & Wilson, UAI 2018).

Why: at a rare change (15–30 % of exposed cells) the joint epochs oscillate — the validation cells'
true AUROC moves by 0.03–0.08 from one epoch to the next — and the run ends wherever the last joint
epoch happened to land. No well-label signal can choose the epoch there (the well-label AUROC is
compressed by ρ_Exp − ρ_Ref), so instead of choosing, average: the uniform mean of the weights at the
end of each of the last ``schedule.average_epochs`` joint epochs, with constant learning rates (the
default), sits near the centre of the region those epochs explore. It needs no label and no selection.

Mechanics: the running mean of every parameter of ``pl_module.net`` (backbone, add-on, prototypes,
last layer; a parameter that did not learn averages to itself) is taken at the end of each averaged
epoch; at the end of the last one — before ``PushCallback`` pushes, so the final prototypes are real
patches of the averaged network — the mean replaces the weights and the batch-norm running statistics
are recomputed on the push set (training originals, no augmentation), since the mean of the weights
does not have the mean of the statistics. Under DDP the parameters are equal on every rank, so is their
mean; rank 0's recomputed statistics are copied to every rank.
"""

from __future__ import annotations

import torch
from lightning.pytorch.callbacks import Callback
from torch import nn

from protocell.errors import ConfigError
from protocell.training.push import broadcast_buffers
from protocell.training.schedule import Phase


def averaged_epochs(schedule: list[Phase], n: int) -> list[int]:
    """Trainer epochs whose weights are averaged: the last ``n`` joint epochs up to and including the
    final push epoch, consecutive (a warm or last-layer epoch ends the run of joint epochs). [] when
    ``n`` is 0; a ConfigError naming ``schedule.average_epochs`` when the schedule has fewer."""
    if n == 0:
        return []
    if n < 2:
        raise ConfigError.invalid(
            "schedule.average_epochs", n, "0 (off) or ≥ 2 (an average of one epoch is that epoch)"
        )
    pushes = [e for e, p in enumerate(schedule) if p.push]
    if not pushes:
        raise ConfigError.invalid(
            "schedule.average_epochs", n, "0: the schedule has no push (head=baseline trains only the pretrain phase)"
        )
    last = pushes[-1]
    run = []
    for e in range(last, -1, -1):
        if schedule[e].name != "joint" or (e != last and schedule[e].push):
            break
        run.append(e)
    if len(run) < n:
        raise ConfigError.invalid(
            "schedule.average_epochs",
            n,
            f"≤ {len(run)}: the final push follows {len(run)} joint epoch(s) (schedule.push_every, "
            "schedule.epochs and schedule.warm_epochs set how many)",
        )
    return sorted(run[:n])


@torch.no_grad()
def refresh_batch_norm(module, net: nn.Module, loader) -> int:
    """Recompute the running mean and variance of every batch-norm layer of ``net`` as the plain average
    over ``loader``'s batches (momentum None), in train mode; ``module`` (the LightningModule) moves each
    batch (its device and memory format). Returns the number of cells seen (0: no batch-norm layer)."""
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return 0
    modes = {m: (m.training, m.momentum) for m in norms}
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    device = next(net.parameters()).device
    seen = 0
    try:
        for batch in loader:
            x, mask = module.on_after_batch_transfer((batch[0].to(device), batch[1].to(device)), 0)
            net(x, mask)
            seen += int(x.shape[0])
    finally:
        for m, (training, momentum) in modes.items():
            m.train(training)
            m.momentum = momentum
    return seen


class WeightAverage(Callback):
    """Averages ``pl_module.net``'s weights over ``averaged_epochs(schedule, n)`` and loads the mean
    (with recomputed batch-norm statistics) at the end of the last of them, before the push."""

    def __init__(self, schedule: list[Phase], n: int):
        self.epochs = averaged_epochs(schedule, n)
        self.mean: list[torch.Tensor] | None = None
        self.count = 0

    def on_train_epoch_end(self, trainer, pl_module):
        e = trainer.current_epoch
        if e not in self.epochs:
            return
        params = [p.detach() for p in pl_module.net.parameters()]
        if self.mean is None:
            self.mean = [p.clone() for p in params]
        else:
            for m, p in zip(self.mean, params):
                m.add_(p - m, alpha=1.0 / (self.count + 1))
        self.count += 1
        if e == self.epochs[-1]:
            with torch.no_grad():
                for p, m in zip(pl_module.net.parameters(), self.mean):
                    p.copy_(m)
            refresh_batch_norm(pl_module, pl_module.net, trainer.datamodule.push_dataloader())
            broadcast_buffers(pl_module)
            pl_module.log("average/epochs", float(self.count), on_epoch=True)
            self.mean = None  # the net holds it now; nothing to keep in checkpoints

    def state_dict(self):
        return {"mean": self.mean, "count": self.count}

    def load_state_dict(self, state_dict):
        self.mean, self.count = state_dict.get("mean"), int(state_dict.get("count", 0))
