"""``PushCallback`` pushes at the end of every planned push epoch and is the one writer of
``prototypes.pt`` (at every push, and at the end of training with the final last layer).
"""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch.callbacks import Callback

from protocell.artifacts import prototype_record, write_prototypes
from protocell.training.push import broadcast_buffers, push_prototypes
from protocell.training.schedule import Phase


class PushCallback(Callback):
    """Pushes at the end of every planned push epoch (``unique``: each prototype from its own cell);
    writes ``prototypes.pt`` (rank 0)."""

    def __init__(
        self, schedule: list[Phase], out_dir: str | Path | None = None, meta: dict | None = None, unique: bool = False
    ):
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
        self._write(trainer, pl_module)  # the final last layer, after the last-layer epochs

    def state_dict(self):
        return {"latent_size": self.latent_size}

    def load_state_dict(self, state_dict):
        self.latent_size = state_dict.get("latent_size")
