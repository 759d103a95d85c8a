"""The callbacks that decide *what happens when*; the LightningModule only computes losses. One module
each:

- ``phases``: ``PhaseCallback`` applies the epoch's ``Phase`` (``training.schedule``) at its start —
  trainable groups, train/eval modes, learning rates (``apply_phase``); nothing else writes a rate.
- ``keep_best``: ``KeepBestPretrain`` remembers the last pretrain epoch whose validation AUROC against
  the well labels is not significantly below the best one's, and loads it when the first
  prototype-network epoch starts.
- ``init_prototypes``: ``InitPrototypes`` sets the prototypes from real latent patches then.
- ``push``: ``PushCallback`` pushes at the end of every planned push epoch and is the one writer of
  ``prototypes.pt``.
- ``ground_truth``: ``GroundTruthMonitor``, diagnostics on stores that know each cell's truth.
- ``history``: ``ValAccuracyHistory``, every epoch's validation accuracy and AUROC for the run's status.
- ``interrupt``: ``StopOnInterrupt``, Ctrl-C stops the run at the next batch end.
"""

from protocell.training.callbacks.ground_truth import GroundTruthMonitor
from protocell.training.callbacks.history import ValAccuracyHistory
from protocell.training.callbacks.init_prototypes import InitPrototypes
from protocell.training.callbacks.interrupt import StopOnInterrupt
from protocell.training.callbacks.keep_best import KeepBestPretrain
from protocell.training.callbacks.phases import PhaseCallback, apply_phase
from protocell.training.callbacks.push import PushCallback

__all__ = [
    "GroundTruthMonitor",
    "InitPrototypes",
    "KeepBestPretrain",
    "PhaseCallback",
    "PushCallback",
    "StopOnInterrupt",
    "ValAccuracyHistory",
    "apply_phase",
]
