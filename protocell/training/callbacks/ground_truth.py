"""``GroundTruthMonitor`` logs, on stores that know each cell's truth, how well the validation cells'
scores match it; diagnostics only.
"""

from __future__ import annotations

import torch
from lightning.pytorch.callbacks import Callback


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
