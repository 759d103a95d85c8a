"""Reading a run folder for explain, and saying where every cell came from.

``load_run(run_dir)`` checks the run folder's contract (``config.yaml``, ``prototypes.pt``,
``checkpoints/last.ckpt``, ``test_predictions.csv``), refuses folders it cannot explain with a
message that names the file and the fix, and rebuilds the network and the data module exactly as
training saw them (the normalisation stored at push, the crop store named in ``prototypes.pt``).

``Run.crop(cell_id)`` → ``(manifest row, image (C, S, S), mask (1, S, S))`` preprocessed as in
training; ``Run.where(row)`` / ``Run.provenance(row, box)`` name the source image, well, field,
cell id and the box in *source-image* pixels, so a biologist can go back to the raw image.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from protocell.training.push import PROTOTYPES_FORMAT, PROTOTYPES_VERSION

log = logging.getLogger("protocell.explain")

REQUIRED_KEYS = ("vectors", "prototype_class", "class_names", "cell_id", "latent_yx", "box_clipped", "rf",
                 "crop_size", "latent_size", "pushes", "store")


class ExplainError(ValueError):
    """A run folder explain cannot read; the message names the file and the fix."""


@dataclass
class Run:
    dir: Path
    cfg: object
    record: dict
    net: torch.nn.Module
    dm: object                                   # CellDataModule
    preds: pd.DataFrame
    _datasets: dict = field(default_factory=dict, repr=False)
    _position: dict = field(default_factory=dict, repr=False)   # manifest row → (split, index)
    _row_of_cell: dict = field(default_factory=dict, repr=False)

    @property
    def manifest(self) -> pd.DataFrame:
        return self.dm.store.manifest

    @property
    def class_names(self) -> list[str]:
        return list(self.record["class_names"])

    @property
    def ref(self) -> str:
        return self.class_names[0]

    @property
    def exp(self) -> str:          # the exposed population is the last class (train.py's convention)
        return self.class_names[-1]

    @property
    def crop_size(self) -> int:
        return int(self.dm.crop_size)

    def row(self, cell_id: int) -> int:
        if not self._row_of_cell:
            self._row_of_cell = dict(zip(self.manifest["cell_id"].tolist(), range(len(self.manifest))))
        return self._row_of_cell[int(cell_id)]

    def crop(self, cell_id: int) -> tuple[int, torch.Tensor, torch.Tensor]:
        """(manifest row, image (C, S, S), mask (1, S, S)) of one push or test cell, as in training."""
        if not self._datasets:        # built once: explain fetches hundreds of crops
            self._datasets = {s: self.dm.dataset(s) for s in ("push", "test")}
            self._position = {int(r): (s, i) for s, ds in self._datasets.items() for i, r in enumerate(ds.rows)}
        row = self.row(cell_id)
        split, i = self._position[row]
        x, m, _, _ = self._datasets[split][i]
        return row, x, m

    def raw_box(self, row: int, box) -> tuple[int, int, int, int]:
        """A (y0, x0, y1, x1) box in crop pixels → the same box in source-image pixels."""
        r = self.manifest.iloc[row]
        sy = (r["bbox_y1"] - r["bbox_y0"]) / self.crop_size
        sx = (r["bbox_x1"] - r["bbox_x0"]) / self.crop_size
        y0, x0, y1, x1 = box
        return (int(round(r["bbox_y0"] + y0 * sy)), int(round(r["bbox_x0"] + x0 * sx)),
                int(round(r["bbox_y0"] + y1 * sy)), int(round(r["bbox_x0"] + x1 * sx)))

    def provenance(self, row: int, box=None) -> dict:
        r = self.manifest.iloc[row]
        out = {"cell_id": int(r["cell_id"]), "condition": r["condition"], "image_id": r["image_id"],
               "plate": r.get("plate", ""), "well": r["well"], "field": r["field"],
               "centroid_y": float(r["centroid_y"]), "centroid_x": float(r["centroid_x"])}
        if box is not None:
            out["box_crop"] = "{},{},{},{}".format(*[int(v) for v in box])
            out["box_image"] = "{},{},{},{}".format(*self.raw_box(row, box))
        return out

    def where(self, row: int, box=None) -> str:
        p = self.provenance(row, box)
        s = (f"{p['condition']} · image {p['image_id']} · well {p['well']} · field {p['field']} · cell {p['cell_id']}"
             f" · centre (y={p['centroid_y']:.0f}, x={p['centroid_x']:.0f})")
        if box is not None:
            s += f" · box in image (y0,x0,y1,x1) = ({p['box_image']})"
        return s


def _require(path: Path, run_dir: Path, what: str) -> None:
    if not path.exists():
        raise ExplainError(f"{path} is missing: {run_dir} is not a finished protocell training run ({what}); "
                           "train one with `python train.py` and explain the folder it prints")


def read_record(path: Path) -> dict:
    """``prototypes.pt`` of this protocell version, pushed at least once; else an ExplainError."""
    try:
        record = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as e:  # a truncated file, or a pickle of another program
        raise ExplainError(f"{path} cannot be read as a protocell prototypes file ({type(e).__name__}: {e}); "
                           "re-run train.py to write it again") from e
    if not isinstance(record, dict) or record.get("format") != PROTOTYPES_FORMAT \
            or int(record.get("version", -1)) != PROTOTYPES_VERSION:
        fmt = record.get("format") if isinstance(record, dict) else type(record).__name__
        ver = record.get("version") if isinstance(record, dict) else None
        raise ExplainError(f"{path} is format {fmt} v{ver}, this protocell reads {PROTOTYPES_FORMAT} "
                           f"v{PROTOTYPES_VERSION}: explain it with the protocell version that trained it, "
                           "or retrain with this one")
    missing = [k for k in REQUIRED_KEYS if k not in record]
    if missing:
        raise ExplainError(f"{path} lacks {missing}: written by another protocell version; retrain with this one")
    if int(record["pushes"]) < 1 or bool((torch.as_tensor(record["cell_id"]) < 0).any()):
        raise ExplainError(f"{path}: pushes = {int(record['pushes'])}, the prototypes were never pushed, so they are "
                           "not cell patches yet and there is nothing to show; train until the first push "
                           "(schedule.push_every / schedule.push_start) and explain again")
    return record


def _store_path(record: dict, cfg, proto_path: Path) -> str:
    """The crop store named in prototypes.pt; rebuilt when it is a cached synthetic store that was
    deleted (it is deterministic in its parameters)."""
    store = Path(record["store"])
    if (store / "store.json").exists():
        return str(store)
    spec = OmegaConf.to_container(cfg.data, resolve=True).get("synthetic") if "data" in cfg else None
    if spec and store.name.startswith("synthetic-"):
        from protocell.data.synthetic import WellSpec, build_store

        spec["affected_fraction"] = dict(spec["affected_fraction"])
        log.info("crop store %s is gone; rebuilding the synthetic wells it held", store)
        rebuilt = build_store(store.parent, WellSpec(**spec))
        if rebuilt == store:
            return str(rebuilt)
    raise ExplainError(f"the crop store {store} named in {proto_path} does not exist: explain needs the cells the "
                       "run trained on; restore that folder (or re-run prepare with the same settings to that path)")


def load_run(run_dir: str | Path) -> Run:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ExplainError(f"run folder {run_dir} does not exist; pass run=<a train.py run folder>, "
                           "e.g. run=outputs/train/<date_time>")
    cfg_path, proto_path = run_dir / "config.yaml", run_dir / "prototypes.pt"
    ckpt, preds_path = run_dir / "checkpoints" / "last.ckpt", run_dir / "test_predictions.csv"
    _require(cfg_path, run_dir, "train.py writes config.yaml first")
    _require(proto_path, run_dir, "a run killed before its first push has no prototypes.pt")
    record = read_record(proto_path)
    _require(ckpt, run_dir, "the checkpoint is written after every epoch")
    _require(preds_path, run_dir, "train.py writes it after testing")
    cfg = OmegaConf.load(cfg_path)
    for key in ("data", "backbone", "model"):
        if key not in cfg:
            raise ExplainError(f"{cfg_path} has no '{key}' section: not a protocell train.py config")

    data_cfg = OmegaConf.to_container(cfg.data, resolve=True)
    data_cfg.pop("synthetic", None)
    data_cfg["path"] = _store_path(record, cfg, proto_path)
    dm = instantiate(data_cfg)
    dm.setup()
    if record.get("norm_lo") is not None:   # exactly the normalisation training used
        dm.norm_lo = np.asarray(record["norm_lo"], np.float32)
        dm.norm_hi = np.asarray(record["norm_hi"], np.float32)
    if int(record["crop_size"]) != dm.crop_size:
        raise ExplainError(f"{proto_path} was pushed at crop size {record['crop_size']} but {cfg_path} says "
                           f"data.crop_size={dm.crop_size}: the run folder mixes two runs; retrain")

    backbone = instantiate(cfg.backbone, in_channels=dm.in_channels)
    net = instantiate(cfg.model, _partial_=True)(backbone=backbone, num_classes=len(record["class_names"]))
    state = torch.load(ckpt, map_location="cpu", weights_only=True).get("state_dict", {})
    try:
        net.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("net.")})
    except RuntimeError as e:
        raise ExplainError(f"{ckpt} does not fit the network {cfg_path} describes ({str(e)[:300]}): "
                           "the run folder mixes two runs or versions; retrain") from e
    if not torch.allclose(net.prototypes.detach(), record["vectors"].to(net.prototypes.dtype), atol=1e-5):
        log.warning("%s and %s hold different prototypes (a run resumed after the last push?); "
                    "explain uses the checkpoint's, the boxes come from prototypes.pt", ckpt, proto_path)
    net.eval()
    preds = pd.read_csv(preds_path, dtype={"well": str, "image_id": str})
    for col in ("cell_id", "well", "condition", "score"):
        if col not in preds:
            raise ExplainError(f"{preds_path} has no column '{col}': written by another protocell version; retrain")
    return Run(run_dir, cfg, record, net, dm, preds)
