"""The training schedule as data: one ``Phase`` per trainer epoch.

A ``Phase`` says which parameter groups learn in that epoch, at which learning rate, and whether
the prototypes are pushed at its end. ``build_schedule`` expands the ``schedule`` config once:

- ``pretrain`` epochs: backbone and a linear probe on cross-entropy (stands in for ImageNet
  weights offline, see ``ProtoPNetModule.probe_logits``);
- ``warm`` epochs: backbone frozen, add-on and prototypes learn;
- ``joint`` epochs: everything learns (the last layer too when it is trained);
- a push after prototype-network epoch ``push_start`` and every ``push_every`` epochs after it, and
  always after the last one (so the final prototypes are real cell patches);
- after each push, ``last_layer_epochs`` epochs in which only the last layer learns (none when it
  is frozen).

Learning rates: each group's base rate (``optim.lr``; the backbone uses ``lr.pretrain`` during
pretrain, ``lr.features`` after), times ``gamma ** (epoch // step)`` when a step decay is set
(``schedule.lr_step_epochs``; every group but the last layer, counted in trainer epochs). The decay is
part of the data, so nothing else writes a learning rate (``PhaseCallback`` applies it). A base rate
of 0 freezes its group (e.g. ``optim.lr.features=0``: the backbone stays as pretrain left it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from protocell.errors import ConfigError

GROUPS = ("probe", "features", "add_on", "prototypes", "last_layer")
PHASE_NAMES = ("pretrain", "warm", "joint", "last_layer")


@dataclass(frozen=True)
class Phase:
    name: str  # one of PHASE_NAMES
    train: frozenset  # parameter groups that learn this epoch
    lr: dict = field(default_factory=dict)  # learning rate of every group this epoch
    push: bool = False  # project the prototypes at the end of the epoch

    def trains(self, group: str) -> bool:
        return group in self.train


def trainable_groups(phase: str, train_last_layer: bool) -> frozenset:
    last = {"last_layer"} if train_last_layer else set()
    return frozenset(
        {
            "pretrain": {"features", "probe"},
            "warm": {"add_on", "prototypes"},
            "joint": {"features", "add_on", "prototypes"} | last,
            "last_layer": last,
        }[phase]
    )


def phase_names(
    epochs: int,
    warm_epochs: int = 0,
    push_every: int = 10,
    push_start: int | None = None,
    last_layer_epochs: int = 0,
    train_last_layer: bool = True,
    pretrain_epochs: int = 0,
) -> list[tuple[str, bool]]:
    """(phase name, push) per trainer epoch; ``epochs`` counts the prototype-network epochs
    (warm + joint), and pushes count from them."""
    for key, value, ok, need in (
        ("schedule.epochs", epochs, epochs >= 1, "≥ 1"),
        ("schedule.push_every", push_every, push_every >= 1, "≥ 1"),
        ("schedule.warm_epochs", warm_epochs, 0 <= warm_epochs < epochs, f"in [0, schedule.epochs={epochs})"),
        ("schedule.last_layer_epochs", last_layer_epochs, last_layer_epochs >= 0, "≥ 0"),
        ("schedule.pretrain_epochs", pretrain_epochs, pretrain_epochs >= 0, "≥ 0"),
    ):
        if not ok:
            raise ConfigError.invalid(key, value, need)
    push_start = push_every if push_start is None else push_start
    plan = [("pretrain", False)] * pretrain_epochs
    for e in range(1, epochs + 1):
        push = e == epochs or (e >= push_start and (e - push_start) % push_every == 0)
        plan.append(("warm" if e <= warm_epochs else "joint", push))
        if push and train_last_layer:
            plan += [("last_layer", False)] * last_layer_epochs
    return plan


def epoch_lrs(base: dict, phase: str, epoch: int, step_epochs: int = 0, gamma: float = 0.1) -> dict:
    """Learning rate of every group at trainer epoch ``epoch`` in ``phase``."""
    lrs = {g: float(base[g]) for g in GROUPS if g in base}
    lrs["probe"] = float(base.get("pretrain", base["features"]))
    if phase == "pretrain":
        lrs["features"] = lrs["probe"]
    if step_epochs:
        decay = gamma ** (epoch // step_epochs)
        lrs = {g: v if g == "last_layer" else v * decay for g, v in lrs.items()}
    return lrs


def build_schedule(
    epochs: int,
    warm_epochs: int = 0,
    push_every: int = 10,
    push_start: int | None = None,
    last_layer_epochs: int = 0,
    pretrain_epochs: int = 0,
    train_last_layer: bool = True,
    lr: dict | None = None,
    lr_step_epochs: int = 0,
    lr_gamma: float = 0.1,
) -> list[Phase]:
    """The whole run, one ``Phase`` per trainer epoch (``trainer.max_epochs`` is its length)."""
    base = {"features": 1e-3, "add_on": 3e-3, "prototypes": 3e-3, "last_layer": 1e-3, **(lr or {})}
    names = phase_names(
        epochs, warm_epochs, push_every, push_start, last_layer_epochs, train_last_layer, pretrain_epochs
    )
    phases = []
    for e, (name, push) in enumerate(names):
        lrs = epoch_lrs(base, name, e, lr_step_epochs, lr_gamma)
        # a group whose rate is 0 does not learn (and its batch-norm statistics stay put)
        train = frozenset(g for g in trainable_groups(name, train_last_layer) if lrs.get(g, 0.0) > 0)
        phases.append(Phase(name, train, lrs, push))
    return phases


def schedule_from_config(cfg) -> list[Phase]:
    """``build_schedule`` from a composed train config (``schedule``, ``optim``, ``last_layer``)."""
    s, o = cfg.schedule, cfg.optim
    return build_schedule(
        int(s.epochs),
        int(s.warm_epochs),
        int(s.push_every),
        s.get("push_start"),
        int(s.last_layer_epochs),
        int(s.get("pretrain_epochs", 0)),
        train_last_layer=cfg.last_layer.mode == "trained",
        lr=dict(o.lr),
        lr_step_epochs=int(s.lr_step_epochs),
        lr_gamma=float(o.get("lr_gamma", 0.1)),
    )
