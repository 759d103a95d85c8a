"""``ProtoPNetModule``: the LightningModule holding the network, the objective and the optimiser.

It computes losses and steps, nothing else. *What trains when* is data (``training.schedule``):
the phase callback sets ``phase``, freezes parameter groups and sets their learning rates; the
push callback projects the prototypes.

The module builds its own network from plain arguments (``net_spec``: the backbone's and the
prototype head's keyword arguments) and saves them as hyperparameters, so a checkpoint rebuilds
its module: ``ProtoPNetModule.load_from_checkpoint(path, weights_only=True)``.

``pretrain`` stands in for ImageNet weights when there are none (the offline default): the backbone
learns the task through a linear *probe* (1×1 conv → mean over in-cell latent units → logits,
cross-entropy only), so that the ProtoPNet phases start from useful features, as in the paper. The
probe is not part of the prototype network and is not used by it.

Parameter groups (``groups()``: probe, features, add-on, prototypes, last layer) each get their
own optimiser group, named, so a phase can set each one's learning rate.
"""

from __future__ import annotations

from typing import cast

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F

from protocell.config import HEADS, LAST_LAYER_MODES, LR_GROUPS, SEPARATIONS
from protocell.model.losses import mil_loss, protopnet_loss
from protocell.model.protopnet import build_protopnet
from protocell.model.views import averaged

PHASE_INDEX = {"pretrain": 0, "warm": 1, "joint": 2, "last_layer": 3}


class ProtoPNetModule(L.LightningModule):
    views: int = 1  # orientations averaged in every prediction a run reports (``predicted``); set from config

    def __init__(
        self,
        net_spec: dict,
        class_names: list[str],
        *,
        last_layer: str,
        lr: dict,
        weight_decay: float,
        clst: float,
        sep: float,
        l1: float,
        div: float,
        ref_sim: float,
        ramp_epochs: int,
        bag_size: int,
        separation: str,
        head: str,
        channels_last: bool,
    ):
        """Every setting is given: the values live in conf/ and ``protocell.config`` (``build.build_module``
        passes them; a checkpoint carries its own), never in this signature."""
        super().__init__()
        missing = [g for g in LR_GROUPS if g not in lr]
        if missing:
            raise ValueError(f"optim.lr has no rate for {missing}: give every group of {LR_GROUPS}")
        if last_layer not in LAST_LAYER_MODES:
            raise ValueError(f"last_layer must be one of {LAST_LAYER_MODES}, got '{last_layer}'")
        self.save_hyperparameters()
        self.net = build_protopnet(**net_spec, num_classes=len(class_names))
        self.class_names = list(class_names)
        self.last_layer_mode = last_layer
        # initial rates; the phase callback sets every group's rate at the start of every epoch
        self.lr = {**lr, "probe": lr["pretrain"]}
        self.weight_decay = weight_decay
        self.coef = {"clst": clst, "sep": sep, "l1": l1, "div": div, "ref_sim": ref_sim}
        if bag_size > 1 and len(class_names) != 2:
            raise ValueError(
                f"bags of cells (data.bag_size={bag_size}) need two conditions, got {class_names}; set data.bag_size=1"
            )
        if separation not in SEPARATIONS:
            raise ValueError(f"loss.separation must be one of {SEPARATIONS}, got '{separation}'")
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got '{head}'")
        self.bag_size, self.separation, self.head = int(bag_size), separation, head
        self.positive = len(class_names) - 1  # the exposed population is the last class
        # From scratch, the cluster cost can collapse all features onto the prototypes before the
        # cross-entropy has found anything that differs between the classes; ramping λ_clst and
        # λ_sep linearly from 0 over ``ramp_epochs`` lets the features form first.
        self.ramp_epochs = ramp_epochs
        self.phase = "joint"
        self._val_cells: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        # NHWC tensors: faster convolutions on GPUs with tensor cores (cuDNN), neutral on CPU
        self.channels_last = channels_last
        first = cast(torch.nn.Conv2d, self.net.add_on[0])  # the add-on's first 1×1 conv
        self.probe = torch.nn.Conv2d(first.in_channels, self.net.num_classes, 1)
        if last_layer == "frozen":
            self.net.last_layer.weight.requires_grad_(False)

    def groups(self) -> dict[str, list[torch.nn.Parameter]]:
        """The parameter groups a phase switches on and off, by name."""
        return {
            "probe": list(self.probe.parameters()),
            "features": list(self.net.features.parameters()),
            "add_on": list(self.net.add_on.parameters()),
            "prototypes": [self.net.prototypes],
            "last_layer": [cast(torch.nn.Parameter, self.net.last_layer.weight)],
        }

    def group_modules(self) -> dict[str, torch.nn.Module]:
        """Modules whose train/eval mode follows their group (batch-norm statistics of a frozen
        backbone must not drift)."""
        return {"features": self.net.features, "add_on": self.net.add_on}

    # ------------------------------------------------------------------ steps
    def on_after_batch_transfer(self, batch, dataloader_idx):
        if self.channels_last:
            x, mask, *rest = batch
            batch = (x.contiguous(memory_format=torch.channels_last), mask, *rest)
        return batch

    def probe_logits(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Pretrain head: (B, K) logits, the mean over in-cell latent units of a 1×1 conv.

        A mean, not a max: at random initialisation the brightest structure of every cell (its
        cortical rim) wins a max everywhere, so a max routes no gradient to the local change and
        training sits on a plateau of random length; the mean lets every unit learn."""
        f = self.probe(self.net.features(x))  # (B, K, H, W)
        inside = self.net.inside(mask, f.shape[-2:])
        if inside is None:
            return f.mean(dim=(2, 3))
        w = inside.to(f.dtype)
        return (f * w).sum(dim=(2, 3)) / w.sum(dim=(2, 3)).clamp_min(1)

    def _log(self, stage: str, values: dict, bs: float) -> None:
        # a float batch size: Lightning's epoch mean divides summed values by the summed batch sizes,
        # and averages an integer sum over DDP ranks with truncation (49 cells / 2 ranks → 24)
        self.log_dict(
            {f"{stage}/{k}": v.detach() for k, v in values.items() if k != "acc"},
            on_step=False,
            on_epoch=True,
            batch_size=bs,  # type: ignore[arg-type]  # a float on purpose (above); Lightning annotates int
            sync_dist=stage != "train",
        )
        self.log(
            f"{stage}/acc",
            values["acc"],
            on_step=False,
            on_epoch=True,
            batch_size=bs,  # type: ignore[arg-type]  # a float on purpose (above)
            prog_bar=True,
            sync_dist=stage != "train",
        )

    def scores(self, x: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, dict | None]:
        """(B, K) logits of the model in use (the probe while it pretrains, or when the head is the
        black-box baseline; else the prototype network) and the network's outputs (or None)."""
        if self.phase == "pretrain" or self.head == "baseline":
            return self.probe_logits(x, mask), None
        out = self.net(x, mask)
        return out["logits"], out

    def _step(self, batch, stage: str):
        x, mask, y, cell_id = batch
        bs = float(x.shape[0])
        # training and validation batches are bags of cells from one well; test batches are cells
        bag = self.bag_size if stage in ("train", "val") else 1
        logits, out = self.scores(x, mask)
        acc = (logits.argmax(1) == y).float().mean()
        if out is None:
            ce, _ = mil_loss(logits, y, bag, self.positive)
            self._log(stage, {"ce": ce, "acc": acc}, bs)
            loss = ce
        else:
            use_l1 = self.net.last_layer.weight.requires_grad
            ramp = min(1.0, self.current_epoch / self.ramp_epochs) if (self.ramp_epochs and stage == "train") else 1.0
            losses = protopnet_loss(
                out["logits"],
                out["min_distances"],
                y,
                self.net.prototype_class,
                self.net.last_layer.weight,
                self.net.prototypes,
                clst=ramp * self.coef["clst"],
                sep=ramp * self.coef["sep"],
                l1=self.coef["l1"] if use_l1 else 0.0,
                div=self.coef["div"],
                ref_sim=self.coef["ref_sim"],
                bag_size=bag,
                separation=self.separation,
                positive=self.positive,
            )
            self._log(stage, {**losses, "acc": acc}, bs)
            loss = losses["loss"]
        if stage == "val":
            score = F.softmax(logits.detach().float(), 1)[:, self.positive]
            self._val_cells.append((cell_id.detach(), y.detach(), score))
            return {"cell_id": cell_id, "score": score}
        return loss

    def on_validation_epoch_start(self):
        self._val_cells = []

    def on_validation_epoch_end(self):
        """``val/auroc``: the AUROC of the validation cells' exposed scores against their *well*
        labels, over every rank's cells (each cell once), and ``val/auroc_se``, its standard error
        (Hanley & McNeil). Pretrain chooses the epoch it keeps by them (``KeepBestPretrain``)."""
        from protocell.distributed import gather_predictions, is_distributed
        from protocell.stats import auroc, auroc_se

        if self._val_cells:
            cols = [torch.cat(t) for t in zip(*self._val_cells)]
        elif is_distributed():  # this rank validated no cell; the others still wait for its rows
            cols = [torch.zeros(0, dtype=torch.long, device=self.device)] * 2 + [torch.zeros(0, device=self.device)]
        else:
            return
        self._val_cells = []
        (rows,) = gather_predictions([dict(zip(("cell_id", "label", "score"), cols))])
        cell, y, score = rows["cell_id"], rows["label"], rows["score"]
        if len(cell) == 0:
            return
        cell, first = np.unique(cell.cpu().numpy(), return_index=True)  # a padded DDP sampler repeats cells
        positive = (y.cpu().numpy()[first] == self.positive).astype(int)
        a = auroc(score.cpu().numpy()[first], positive)
        self.log("val/auroc", a, on_step=False, on_epoch=True, sync_dist=False)
        self.log(
            "val/auroc_se",
            auroc_se(a, int(positive.sum()), int((positive == 0).sum())),
            on_step=False,
            on_epoch=True,
            sync_dist=False,
        )

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        return self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")

    def predicted(self, x: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(logits, min_distances or None) as a run reports them: the evidence averaged over ``views``
        orientations of each cell (``protocell.model.views``; the training run sets ``views`` from its
        config, 1 = as cropped). Training and per-epoch validation read the cell as cropped."""
        return averaged(self.scores, x, mask, self.views)

    def predict_step(self, batch, batch_idx):
        x, mask, y, cell_id = batch
        logits, min_d = self.predicted(x, mask)
        # float32 on the way out: under bf16-mixed the outputs are bfloat16, which numpy cannot hold
        result = {"cell_id": cell_id, "label": y, "probs": F.softmax(logits.float(), 1)}
        if min_d is not None:
            result["min_distances"] = min_d.float()
        return result

    def on_train_epoch_start(self):
        self.log("phase", float(PHASE_INDEX[self.phase]), on_step=False, on_epoch=True)

    # ------------------------------------------------------------------ optimiser
    def configure_optimizers(self):
        groups = [
            {
                "params": params,
                "name": name,
                "lr": self.lr["pretrain"] if (name == "features" and self.phase == "pretrain") else self.lr[name],
                "weight_decay": self.weight_decay if name in ("features", "add_on", "probe") else 0.0,
            }
            for name, params in self.groups().items()
            if not (name == "last_layer" and self.last_layer_mode == "frozen")
        ]
        return torch.optim.Adam(groups)
