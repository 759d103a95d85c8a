"""The callbacks that decide *what happens when*; the LightningModule only computes losses.

- ``PhaseCallback`` applies the epoch's ``Phase`` (``training.schedule``) at its start, in the
  style of Lightning's ``BaseFinetuning``: it freezes and unfreezes parameter groups, puts frozen
  feature layers in eval mode (their batch-norm statistics must not drift) and sets every group's
  learning rate. Nothing else writes a learning rate.
- ``KeepBestPretrain`` remembers the last pretrain epoch whose validation AUROC against the well
  labels is not significantly below the best one's, and loads it when the first prototype-network
  epoch starts (see its docstring).
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
from protocell.errors import ProtocellError
from protocell.model.init import initial_prototypes
from protocell.training.push import broadcast_buffers, broadcast_tensor, push_prototypes
from protocell.training.schedule import Phase

log = logging.getLogger("protocell.train")


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
    last pretrain epoch is a random draw from that oscillation, and it sometimes collapses onto
    reading the training wells. This callback keeps **the last pretrain epoch whose validation AUROC
    against the well labels (``val/auroc``) is not significantly below the best one's**: within
    ``z`` standard errors of the best (``val/auroc_se``, Hanley & McNeil; z = 1.96, two-sided 95 %).
    Well labels only, never ground truth, as early stopping would. It loads that epoch's features
    and probe when the first prototype-network epoch starts.

    Why the AUROC: when label noise does not depend on a cell's image given whether it is affected,
    the AUROC against well labels is 0.5 + (ρ_Exp − ρ_Ref)(AUROC_true − 0.5) (Menon et al. 2015,
    *Learning from corrupted binary labels via class-probability estimation*): it orders epochs as
    the truth would. The cross-entropy also scores the probe's calibration, which swings from epoch
    to epoch (0.69–4.1); by it a 30 %-affected run kept its untrained epoch 0 (true AUROC 0.49, the
    run ended at 0.70). Why not simply its maximum: with few validation wells (``data.split_by=well``)
    the validation wells' own batch effects move it by more than the learning does — a run whose
    probe's true AUROC rose from 0.51 to 0.85 over epochs 0–5 showed a flat 0.52–0.55, and the
    maximum picked epoch 1 (true 0.71). Differences within the noise carry no evidence, so the
    schedule's own order decides among them (the latest), and the evidence decides beyond it (an
    epoch significantly below the best is never kept). Measured: docs/results.md.

    The state (the kept epoch's features and probe, the best value and its standard error, the
    monitor) is callback state, so it is in every checkpoint and a resumed run makes the same choice."""

    MODES = ("max", "min")

    def __init__(self, schedule: list[Phase], monitor: str = "val/auroc", mode: str = "max",
                 se: str | None = "val/auroc_se", z: float = 1.96):
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}, got '{mode}'")
        self.pretrain = [p.name == "pretrain" for p in schedule]
        self.monitor, self.mode, self.se, self.z = monitor, mode, se, float(z)
        worst = -math.inf if mode == "max" else math.inf
        # value/epoch/state: the epoch kept so far; top/top_se: the best value seen and its standard error
        self.best = {"value": worst, "epoch": -1, "state": None, "restored": False, "top": worst, "top_se": 0.0}

    def _better(self, value: float) -> bool:
        """Is ``value`` a new best (strictly)?"""
        if not math.isfinite(value):        # NaN: one condition among the validation cells
            return False
        return value > self.best["top"] if self.mode == "max" else value < self.best["top"]

    def offer(self, value: float, se: float = 0.0) -> bool:
        """One epoch's validation value and its standard error: is this epoch the one to keep so far?
        Yes when it is the best so far, or not significantly worse than the best (the latest such
        epoch wins). Updates the best; the caller stores the epoch's state."""
        if self._better(value):
            self.best.update(top=value, top_se=se if math.isfinite(se) else 0.0)
            return True
        return self._tied(value)

    def _tied(self, value: float) -> bool:
        """Is ``value`` within ``z`` standard errors of the best (not significantly worse)?"""
        if not math.isfinite(value) or not math.isfinite(self.best["top"]):
            return False
        margin = self.z * self.best["top_se"]
        return value >= self.best["top"] - margin if self.mode == "max" else value <= self.best["top"] + margin

    @staticmethod
    def _modules(pl_module) -> dict[str, torch.nn.Module]:
        return {"features": pl_module.net.features, "probe": pl_module.probe}

    def _is_pretrain(self, epoch: int) -> bool:
        return bool(self.pretrain) and self.pretrain[min(epoch, len(self.pretrain) - 1)]

    def on_train_epoch_start(self, trainer, pl_module):
        if not self._is_pretrain(trainer.current_epoch):
            self._restore(pl_module)

    def on_train_end(self, trainer, pl_module):
        # a run that is all pretrain (head=baseline) ends on its best epoch — once its schedule is done
        # (not a run stopped early, which resumes later and must keep choosing)
        if self.pretrain and all(self.pretrain) and trainer.current_epoch >= len(self.pretrain):
            self._restore(pl_module)

    def _restore(self, pl_module):
        if self.best["state"] is None or self.best["restored"]:
            return
        for name, module in self._modules(pl_module).items():
            module.load_state_dict(self.best["state"][name])
        log.info("pretrain: kept epoch %d (%s %.4f; best %.4f ± %.4f) of %d", self.best["epoch"], self.monitor,
                 self.best["value"], self.best["top"], self.best["top_se"], sum(self.pretrain))
        self.best.update(state=None, restored=True)   # no need to carry it in later checkpoints

    def on_validation_end(self, trainer, pl_module):
        if trainer.sanity_checking or not self._is_pretrain(trainer.current_epoch) or self.best["restored"]:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:       # no validation cells: nothing to select on, the last epoch is kept
            return
        value = float(value)
        se = trainer.callback_metrics.get(self.se) if self.se else None
        if not self.offer(value, float(se) if se is not None else 0.0):
            return
        state = {name: {k: v.detach().cpu().clone() for k, v in m.state_dict().items()}
                 for name, m in self._modules(pl_module).items()}
        self.best.update(value=value, epoch=trainer.current_epoch, state=state)

    def state_dict(self):
        return {**self.best, "monitor": self.monitor, "mode": self.mode, "se": self.se, "z": self.z}

    def load_state_dict(self, state_dict):
        state = dict(state_dict)
        missing = [k for k in ("monitor", "mode", "se", "z", "top", "top_se") if k not in state]
        if missing:
            raise ProtocellError(f"the checkpoint's pretrain keep rule lacks {missing}: it was written by an older "
                                 "protocell, which this one does not resume; start the run again")
        rule = (state.pop("monitor"), state.pop("mode"), state.pop("se"), float(state.pop("z")))
        if rule != (self.monitor, self.mode, self.se, self.z):
            log.info("pretrain: the checkpoint chose its epoch by %s (%s, z = %g); the resumed run goes on "
                     "choosing by that rule", rule[0], rule[1], rule[3])
            self.monitor, self.mode, self.se, self.z = rule
        self.best = state


class InitPrototypes(Callback):
    """Sets the prototypes from real latent patches (``model.init``) when the first prototype-network
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
        protos = initial_prototypes(pl_module.net, loader, self.method,
                                    probe=pl_module.probe if trained_probe else None,
                                    positive=pl_module.positive, seed=int(getattr(dm, "seed", 0)))
        broadcast_tensor(protos)
        with torch.no_grad():
            pl_module.net.prototypes.copy_(protos.to(pl_module.net.prototypes.device))
        log.info("prototypes initialised from latent patches (%s, %d cells)", self.method, len(pick))
        self.done = True

    def state_dict(self):
        return {"done": self.done}

    def load_state_dict(self, state_dict):
        self.done = bool(state_dict.get("done", self.done))


class GroundTruthMonitor(Callback):
    """Diagnostics on stores that know each cell's truth (the built-in wells): after every validation
    pass, the AUROC of the validation cells' Exp scores against the truth (``val/true_auroc``) and the
    *well cue*, the AUROC between unaffected exposed and unaffected reference cells
    (``val/well_cue``; 0.5 = the network does not tell their wells apart). Logged only, never used to
    select anything: selection sees well labels only."""

    def __init__(self):
        self.scores, self.cells = [], []

    def on_validation_epoch_start(self, trainer, pl_module):
        self.scores, self.cells = [], []

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if isinstance(outputs, dict) and "score" in outputs:
            self.scores.append(outputs["score"].cpu())
            self.cells.append(outputs["cell_id"].cpu())

    def on_validation_epoch_end(self, trainer, pl_module):
        if trainer.sanity_checking or not self.cells or trainer.world_size > 1:
            return
        from protocell.stats import auroc

        m = trainer.datamodule.store.manifest.set_index("cell_id")
        cells = torch.cat(self.cells).numpy()
        truth = m.loc[cells, "true_label"].to_numpy()
        label = m.loc[cells, "label"].to_numpy()
        known = truth >= 0
        if not known.all() or len(set(truth)) < 2:
            return
        s = torch.cat(self.scores).numpy()
        un = truth == 0
        pl_module.log("val/true_auroc", auroc(s, truth), on_epoch=True)
        pl_module.log("val/well_cue", auroc(s[un], (label[un] == pl_module.positive).astype(int)), on_epoch=True)


class PushCallback(Callback):
    """Pushes at the end of every planned push epoch (``unique``: each prototype from its own cell);
    writes ``prototypes.pt`` (rank 0)."""

    def __init__(self, schedule: list[Phase], out_dir: str | Path | None = None, meta: dict | None = None,
                 unique: bool = False):
        self.push = [p.push for p in schedule]
        self.unique = unique
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
        found = push_prototypes(pl_module.net, trainer.datamodule.push_dataloader(), unique=self.unique)
        self.latent_size = found["latent_size"].tolist()
        pl_module.log("push/mean_distance", found["distance"].mean(), on_epoch=True)
        self._write(trainer, pl_module)

    def on_train_end(self, trainer, pl_module):
        self._write(trainer, pl_module)        # the final last layer, after the last-layer epochs

    def state_dict(self):
        return {"latent_size": self.latent_size}

    def load_state_dict(self, state_dict):
        self.latent_size = state_dict.get("latent_size")


class ValAccuracyHistory(Callback):
    """The validation accuracy and AUROC (with its standard error) of every epoch and the phase that
    trained it, for the run's status (``evaluate.run_status``: did the network ever separate the
    validation wells beyond chance?). Checkpointed, so a resumed run keeps the epochs before the resume."""

    def __init__(self):
        self.history: list[dict] = []

    def on_validation_end(self, trainer, pl_module):
        acc = trainer.callback_metrics.get("val/acc")
        if acc is not None and not trainer.sanity_checking:
            entry = {"epoch": int(trainer.current_epoch), "phase": str(pl_module.phase), "acc": float(acc)}
            for key in ("auroc", "auroc_se"):
                if f"val/{key}" in trainer.callback_metrics:
                    entry[key] = float(trainer.callback_metrics[f"val/{key}"])
            self.history.append(entry)

    def _final_model(self, head: str) -> list[dict]:
        """The epochs that trained the final model: all but the pretrain probe's (for the baseline head,
        the probe is the model)."""
        return [h for h in self.history if head == "baseline" or h["phase"] != "pretrain"]

    def accuracies(self, head: str = "protopnet") -> list[float]:
        return [h["acc"] for h in self._final_model(head)]

    def aurocs(self, head: str = "protopnet") -> list[tuple[float, float]]:
        """(val/auroc, val/auroc_se) of the epochs that trained the final model (those that logged them)."""
        return [(h["auroc"], h["auroc_se"]) for h in self._final_model(head) if "auroc" in h and "auroc_se" in h]

    def state_dict(self):
        return {"history": list(self.history)}

    def load_state_dict(self, state_dict):
        self.history = list(state_dict.get("history", []))
