"""The run folder: the contract between training and everything that reads a run (explain, score).

Layout (``RunFolder``)::

    config.yaml             the resolved config            .hydra/       Hydra's record
    checkpoints/last.ckpt   Lightning checkpoint (module hyperparameters, weights, DataModule state),
                            rewritten atomically at the end of every epoch (training.checkpoint)
    prototypes.pt           prototype vectors + push provenance (format below)
    metrics.csv             per-epoch logs                 training_curves.png  the same as a figure
    metrics.json            test metrics, calibration, status
    test_predictions.csv    per test cell: ids, labels, scores, call, min distance to every prototype
    val_predictions.csv     the same for the validation cells the cell call is calibrated on
    explain/, report.html   explain's figures, tables and page
    wandb_run_id.txt        the W&B run id when logger=wandb
    .lock                   held by the train.py that runs in this folder (pid and host)

``prototypes.pt`` (``torch.load(..., weights_only=True)``): ``format``/``version``, ``vectors``
(P, D), ``prototype_class`` (P,), ``class_names``, ``last_layer`` (K, P), push provenance
``cell_id`` (P,), ``latent_yx`` (P, 2), ``distance`` (P,), ``box``/``box_clipped`` (P, 4) receptive-field
boxes in crop pixels (y0, x0, y1, x1), ``rf``, ``crop_size``, ``latent_size``, ``pushes``, ``use_mask``,
``mask_penalty``, ``backbone``, ``store`` (the crop store the source cells live in), ``channels``,
``epoch``, ``global_step``. Written by the push callback only, at every push and once more at the end
of training (the final last layer).

Class order: conditions are ordered reference first, so the **exposed population is the last
class** (``positive_class``); every reader asks this module, never assumes an index.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from protocell.errors import ProtocellError
from protocell.fsutil import atomic_torch_save

PROTOTYPES_FORMAT = "protocell-prototypes"
PROTOTYPES_VERSION = 2
READABLE_VERSIONS = (PROTOTYPES_VERSION,)
REQUIRED_KEYS = (
    "vectors",
    "prototype_class",
    "class_names",
    "cell_id",
    "latent_yx",
    "box_clipped",
    "rf",
    "crop_size",
    "latent_size",
    "pushes",
    "store",
)


class RunFolderError(ProtocellError):
    """A run folder that cannot be read as asked; the message names the file and the fix."""


def positive_class(class_names) -> int:
    """Index of the exposed population (the class whose score is a cell's "Exp score")."""
    return len(class_names) - 1


@dataclass(frozen=True)
class RunFolder:
    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    config = property(lambda self: self.root / "config.yaml")
    prototypes = property(lambda self: self.root / "prototypes.pt")
    checkpoint_dir = property(lambda self: self.root / "checkpoints")
    checkpoint = property(lambda self: self.root / "checkpoints" / "last.ckpt")
    metrics = property(lambda self: self.root / "metrics.json")
    metrics_csv = property(lambda self: self.root / "metrics.csv")
    curves = property(lambda self: self.root / "training_curves.png")
    test_predictions = property(lambda self: self.root / "test_predictions.csv")
    val_predictions = property(lambda self: self.root / "val_predictions.csv")
    explain_dir = property(lambda self: self.root / "explain")
    report = property(lambda self: self.root / "report.html")
    wandb_id = property(lambda self: self.root / "wandb_run_id.txt")
    lock = property(lambda self: self.root / ".lock")

    def held_out_predictions(self):
        """The test (``target`` True) and validation (``target`` False) predictions that exist, as one
        frame (None when neither does): the held-out cells the fractions are estimated from."""
        import pandas as pd

        parts = [
            pd.read_csv(path).assign(target=target)
            for path, target in ((self.test_predictions, True), (self.val_predictions, False))
            if path.exists()
        ]
        return pd.concat(parts, ignore_index=True) if parts else None

    def require(self, path: Path, why: str) -> Path:
        if not path.exists():
            raise RunFolderError(
                f"{path} is missing, so {self.root} is not a finished protocell run ({why}); "
                "pass the folder of a run that finished, or re-run train.py"
            )
        return path


def prototype_record(net, crop_size: int, latent_size, class_names: list[str], meta: dict) -> dict:
    """Everything a reader needs about the prototypes, as plain tensors and Python values."""
    rf = net.rf
    boxes = [rf.box(int(y), int(x)) for y, x in net.proto_latent_yx.tolist()]
    clipped = [rf.box(int(y), int(x), clip=crop_size) for y, x in net.proto_latent_yx.tolist()]
    return {
        "format": PROTOTYPES_FORMAT,
        "version": PROTOTYPES_VERSION,
        "vectors": net.prototypes.detach().cpu().clone(),
        "prototype_class": net.prototype_class.cpu().clone(),
        "class_names": list(class_names),
        "last_layer": net.last_layer.weight.detach().cpu().clone(),
        "cell_id": net.proto_cell_id.cpu().clone(),
        "latent_yx": net.proto_latent_yx.cpu().clone(),
        "distance": net.proto_distance.cpu().clone(),
        "box": torch.tensor(boxes, dtype=torch.long),  # RF box in crop pixels (y0, x0, y1, x1)
        "box_clipped": torch.tensor(clipped, dtype=torch.long),  # the same, clipped to the crop
        "rf": rf.as_dict(),
        "crop_size": int(crop_size),
        "latent_size": [int(v) for v in latent_size],
        "pushes": int(net.pushes),
        "use_mask": bool(net.use_mask),
        "mask_penalty": float(net.mask_penalty),
        "backbone": net.backbone_name,
        **meta,
    }


def write_prototypes(record: dict, path: str | Path) -> Path:
    return atomic_torch_save(path, record)


def read_prototypes(path: str | Path, pushed: bool = True) -> dict:
    """``prototypes.pt`` of a readable version (and pushed at least once when ``pushed``)."""
    path = Path(path)
    try:
        record = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as e:  # a truncated file, or a pickle of another program
        raise RunFolderError(
            f"{path} cannot be read as a protocell prototypes file ({type(e).__name__}: "
            f"{str(e)[:200]}); re-run train.py to write it again"
        ) from e
    if (
        not isinstance(record, dict)
        or record.get("format") != PROTOTYPES_FORMAT
        or int(record.get("version", -1)) not in READABLE_VERSIONS
    ):
        fmt = record.get("format") if isinstance(record, dict) else type(record).__name__
        ver = record.get("version") if isinstance(record, dict) else None
        raise RunFolderError(
            f"{path} is format {fmt} v{ver}, this protocell reads {PROTOTYPES_FORMAT} "
            f"v{'/'.join(map(str, READABLE_VERSIONS))}: use the protocell version that trained "
            "it, or retrain with this one"
        )
    missing = [k for k in REQUIRED_KEYS if k not in record]
    if missing:
        raise RunFolderError(f"{path} lacks {missing}: written by another protocell version; retrain with this one")
    if pushed and (int(record["pushes"]) < 1 or bool((torch.as_tensor(record["cell_id"]) < 0).any())):
        raise RunFolderError(
            f"{path}: pushes = {int(record['pushes'])}, the prototypes were never pushed, so "
            "they are not cell patches yet and there is nothing to show; train until the first "
            "push (schedule.push_every / schedule.push_start) and try again"
        )
    return record
