"""``KeepBestPretrain`` remembers the last pretrain epoch whose validation AUROC against the well labels
is not significantly below the best one's, and loads it when the first prototype-network epoch starts
(see its docstring).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback

from protocell.errors import ProtocellError
from protocell.training.schedule import Phase

log = logging.getLogger("protocell.train")


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

    def __init__(
        self,
        schedule: list[Phase],
        monitor: str = "val/auroc",
        mode: str = "max",
        se: str | None = "val/auroc_se",
        z: float = 1.96,
    ):
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}, got '{mode}'")
        self.pretrain = [p.name == "pretrain" for p in schedule]
        self.monitor, self.mode, self.se, self.z = monitor, mode, se, float(z)
        worst = -math.inf if mode == "max" else math.inf
        # value/epoch/state: the epoch kept so far; top/top_se: the best value seen and its standard error
        self.best: dict[str, Any] = {
            "value": worst,
            "epoch": -1,
            "state": None,
            "restored": False,
            "top": worst,
            "top_se": 0.0,
        }

    def _better(self, value: float) -> bool:
        """Is ``value`` a new best (strictly)?"""
        if not math.isfinite(value):  # NaN: one condition among the validation cells
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
        log.info(
            "pretrain: kept epoch %d (%s %.4f; best %.4f ± %.4f) of %d",
            self.best["epoch"],
            self.monitor,
            self.best["value"],
            self.best["top"],
            self.best["top_se"],
            sum(self.pretrain),
        )
        self.best.update(state=None, restored=True)  # no need to carry it in later checkpoints

    def on_validation_end(self, trainer, pl_module):
        if trainer.sanity_checking or not self._is_pretrain(trainer.current_epoch) or self.best["restored"]:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:  # no validation cells: nothing to select on, the last epoch is kept
            return
        value = float(value)
        se = trainer.callback_metrics.get(self.se) if self.se else None
        if not self.offer(value, float(se) if se is not None else 0.0):
            return
        state = {
            name: {k: v.detach().cpu().clone() for k, v in m.state_dict().items()}
            for name, m in self._modules(pl_module).items()
        }
        self.best.update(value=value, epoch=trainer.current_epoch, state=state)

    def state_dict(self):
        return {**self.best, "monitor": self.monitor, "mode": self.mode, "se": self.se, "z": self.z}

    def load_state_dict(self, state_dict):
        state = dict(state_dict)
        missing = [k for k in ("monitor", "mode", "se", "z", "top", "top_se") if k not in state]
        if missing:
            raise ProtocellError(
                f"the checkpoint's pretrain keep rule lacks {missing}: it was written by an older "
                "protocell, which this one does not resume; start the run again"
            )
        rule = (state.pop("monitor"), state.pop("mode"), state.pop("se"), float(state.pop("z")))
        if rule != (self.monitor, self.mode, self.se, self.z):
            log.info(
                "pretrain: the checkpoint chose its epoch by %s (%s, z = %g); the resumed run goes on "
                "choosing by that rule",
                rule[0],
                rule[1],
                rule[3],
            )
            self.monitor, self.mode, self.se, self.z = rule
        self.best = state
