"""``ValAccuracyHistory`` records every epoch's validation accuracy and AUROC for the run's status."""

from __future__ import annotations

from lightning.pytorch.callbacks import Callback


class ValAccuracyHistory(Callback):
    """The validation accuracy and AUROC (with its standard error) of every epoch and the phase that
    trained it, for the run's status (``evaluate.run_status``: did the network ever separate the
    validation wells beyond chance?). Checkpointed, so a resumed run keeps the epochs before the resume."""

    def __init__(self) -> None:
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
