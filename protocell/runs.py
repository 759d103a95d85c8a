"""A finished run, loaded: what explain and score both read, and where every cell came from.

``load_run(run_dir)`` checks the run folder's contract (``protocell.artifacts``), refuses folders it
cannot read with a message that names the file and the fix, and rebuilds what training saw: the
module from its checkpoint (``build.load_module``), the DataModule from ``config.yaml`` (only
protocell/torch/lightning classes) on the crop store named in ``prototypes.pt``, with the
normalisation state the checkpoint carries.

``Run.crop(cell_id)`` → ``(manifest row, image (C, S, S), mask (1, S, S))`` preprocessed as in
training; ``Run.where(row)`` / ``Run.provenance(row, box)`` name the source image, well, field,
cell id and the box in *source-image* pixels, so a biologist can go back to the raw image.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from protocell.artifacts import RunFolder, RunFolderError, positive_class, read_prototypes
from protocell.build import build_datamodule, load_module, synthetic_spec
from protocell.config import VIEWS

if TYPE_CHECKING:
    from protocell.data.datamodule import CellDataModule
    from protocell.data.store import CropStore
    from protocell.model.protopnet import ProtoPNet

log = logging.getLogger("protocell.runs")


@dataclass
class Run:
    dir: Path
    cfg: DictConfig
    record: dict
    net: ProtoPNet
    dm: CellDataModule  # set up (``load_run``)
    preds: pd.DataFrame
    views: int = 1  # orientations averaged in the run's predictions (config.yaml ``views``; 1 before it existed)
    _datasets: dict = field(default_factory=dict, repr=False)
    _position: dict = field(default_factory=dict, repr=False)  # manifest row → (split, index)
    _row_of_cell: dict = field(default_factory=dict, repr=False)

    @property
    def store(self) -> CropStore:
        assert self.dm.store is not None  # load_run sets the DataModule up
        return self.dm.store

    @property
    def manifest(self) -> pd.DataFrame:
        return self.store.manifest

    @property
    def class_names(self) -> list[str]:
        return list(self.record["class_names"])

    @property
    def ref(self) -> str:
        return self.class_names[0]

    @property
    def exp(self) -> str:
        return self.class_names[positive_class(self.class_names)]

    @property
    def crop_size(self) -> int:
        return int(self.dm.crop_size)

    def row(self, cell_id: int) -> int:
        if not self._row_of_cell:
            self._row_of_cell = dict(zip(self.manifest["cell_id"].tolist(), range(len(self.manifest))))
        return self._row_of_cell[int(cell_id)]

    def crop(self, cell_id: int) -> tuple[int, torch.Tensor, torch.Tensor]:
        """(manifest row, image (C, S, S), mask (1, S, S)) of one push or test cell, as in training."""
        if not self._datasets:  # built once: explain fetches hundreds of crops
            self._datasets = {s: self.dm.dataset(s) for s in ("push", "test")}
            self._position = {int(r): (s, i) for s, ds in self._datasets.items() for i, r in enumerate(ds.rows)}
        row = self.row(cell_id)
        split, i = self._position[row]
        x, m, _, _ = self._datasets[split][i]
        return row, x, m

    def raw_box(self, row: int, box) -> tuple[int, int, int, int] | None:
        """A (y0, x0, y1, x1) box in crop pixels → the same box in source-image pixels; None when the
        store does not know where the crop lies in its image (imported pre-cut crops)."""
        r = self.manifest.iloc[row]
        if not known_position(r):
            return None
        sy = (r["bbox_y1"] - r["bbox_y0"]) / self.crop_size
        sx = (r["bbox_x1"] - r["bbox_x0"]) / self.crop_size
        y0, x0, y1, x1 = box
        return (
            int(round(r["bbox_y0"] + y0 * sy)),
            int(round(r["bbox_x0"] + x0 * sx)),
            int(round(r["bbox_y0"] + y1 * sy)),
            int(round(r["bbox_x0"] + x1 * sx)),
        )

    def provenance(self, row: int, box=None) -> dict:
        r = self.manifest.iloc[row]
        out = {
            "cell_id": int(r["cell_id"]),
            "condition": r["condition"],
            "image_id": r["image_id"],
            "plate": r.get("plate", ""),
            "well": r["well"],
            "field": r["field"],
            "centroid_y": float(r["centroid_y"]),
            "centroid_x": float(r["centroid_x"]),
        }
        if "file" in r and r["file"] != "":
            out["file"] = r["file"]
        if box is not None:
            out["box_crop"] = fmt_box(box)
            out["box_image"] = fmt_box(self.raw_box(row, box))
        return out

    def where(self, row: int, box=None) -> str:
        """Where a cell came from, in words; the centre and the box in the source image only when the
        store knows them (a pre-cut crop names its file instead)."""
        p = self.provenance(row, box)
        s = f"{p['condition']} · image {p['image_id']} · well {p['well']} · field {p['field']} · cell {p['cell_id']}"
        if known_position(self.manifest.iloc[row]):
            s += f" · centre (y={p['centroid_y']:.0f}, x={p['centroid_x']:.0f})"
            if box is not None:
                s += f" · box in image (y0,x0,y1,x1) = ({p['box_image']})"
        elif "file" in p:
            s += f" · file {p['file']}"
        return s


def known_position(r) -> bool:
    """Does the manifest row know its crop's window in the source image (bbox and centroid)?"""
    import math

    try:
        return all(
            math.isfinite(float(r[c])) for c in ("bbox_y0", "bbox_x0", "bbox_y1", "bbox_x1", "centroid_y", "centroid_x")
        )
    except (TypeError, ValueError):
        return False


def fmt_box(box) -> str:
    """ "y0,x0,y1,x1", or "" for an unknown box."""
    return "" if box is None else "{},{},{},{}".format(*[int(v) for v in box])


def _store_path(record: dict, cfg, proto_path: Path) -> Path:
    """The crop store named in prototypes.pt; rebuilt when it is a cached synthetic store that was
    deleted (it is deterministic in its parameters)."""
    store = Path(record["store"])
    if (store / "store.json").exists():
        return store
    spec = synthetic_spec(cfg)
    if spec is not None and store.name.startswith("synthetic-"):
        from protocell.data.synthetic import build_store

        log.info("crop store %s is gone; rebuilding the synthetic wells it held", store)
        rebuilt = build_store(store.parent, spec)
        if rebuilt == store:
            return rebuilt
    raise RunFolderError(
        f"the crop store {store} named in {proto_path} does not exist: the run's cells are needed; "
        "restore that folder (or re-run prepare with the same settings to that path)"
    )


def read_run_config(folder: RunFolder):
    """The run's ``config.yaml``: a mapping of plain values, as train.py writes it (resolved). An
    interpolation (``${oc.env:…}``) would make reading the file pull values from the reader's machine,
    so it is refused, as is anything that is not YAML."""
    from omegaconf import DictConfig
    from yaml import YAMLError

    from protocell.config_check import interpolations

    try:
        cfg = OmegaConf.load(folder.config)
    except (YAMLError, ValueError, OSError) as e:
        raise RunFolderError(
            f"{folder.config} cannot be read as a config ({type(e).__name__}: {str(e)[:200]}); "
            "it is not the file train.py wrote: retrain"
        ) from None
    if not isinstance(cfg, DictConfig):
        raise RunFolderError(f"{folder.config} is not a mapping of settings: not a protocell train.py config")
    found = next(iter(interpolations(cfg)), None)
    if found is not None:
        raise RunFolderError(
            f"{folder.config}: {found} is an interpolation (${{…}}): train.py writes resolved "
            "values only, so this file was edited; replace it with its value or retrain"
        )
    return cfg


def run_views(cfg, config: Path) -> int:
    """The orientations a run's predictions averaged (``views`` in its config.yaml; a run trained before
    ``views`` existed read its cells as cropped: 1). Every reader of a run's checkpoint passes it to
    ``build.load_module``, so a re-read cell scores as the run scored it."""
    views = cfg.get("views", 1)
    if isinstance(views, bool) or views not in VIEWS:
        raise RunFolderError(
            f"{config} says views={views!r}, which is not one of {VIEWS}: the orientations this run's "
            "predictions averaged; restore the value training wrote, or retrain"
        )
    return int(views)


def load_run(run_dir: str | Path) -> Run:
    folder = RunFolder(Path(run_dir))
    if folder.root.is_file():
        raise RunFolderError(
            f"run={folder.root} is a file, not a run folder: pass the folder train.py wrote (it holds "
            f"config.yaml, prototypes.pt and checkpoints/), e.g. run={folder.root.parent}"
        )
    if not folder.root.is_dir():
        raise RunFolderError(
            f"run folder {folder.root} does not exist; pass run=<a train.py run folder>, "
            "e.g. run=outputs/train/<date_time>"
        )
    folder.require(folder.config, "train.py writes config.yaml first")
    folder.require(folder.prototypes, "a run killed before its first push has no prototypes.pt")
    record = read_prototypes(folder.prototypes)
    folder.require(folder.checkpoint, "train.py writes it at the end of every epoch")
    folder.require(folder.test_predictions, "train.py writes it after testing")
    cfg = read_run_config(folder)
    if "data" not in cfg:
        raise RunFolderError(f"{folder.config} has no 'data' section: not a protocell train.py config")
    views = run_views(cfg, folder.config)
    try:
        module, state = load_module(folder.checkpoint, views)
    except Exception as e:  # truncated file, another program's pickle, a network that does not fit
        raise RunFolderError(
            f"{folder.checkpoint} cannot be loaded as this run's checkpoint ({type(e).__name__}: "
            f"{str(e)[:300]}); it is truncated or from another protocell version: re-run train.py "
            "(resume=<an intact checkpoint> continues a run)"
        ) from e
    dm = build_datamodule(cfg, path=_store_path(record, cfg, folder.prototypes), source=str(folder.config))
    if type(dm).__qualname__ in state:  # exactly the normalisation training used
        dm.load_state_dict(state[type(dm).__qualname__])
    if int(record["crop_size"]) != dm.crop_size:
        raise RunFolderError(
            f"{folder.prototypes} was pushed at crop size {record['crop_size']} but {folder.config} "
            f"says data.crop_size={dm.crop_size}: the run folder mixes two runs; retrain"
        )
    net = module.net.eval()
    if not torch.allclose(net.prototypes.detach(), record["vectors"].to(net.prototypes.dtype), atol=1e-5):
        log.warning(
            "%s and %s hold different prototypes (a run resumed after the last push?); "
            "explain uses the checkpoint's, the boxes come from prototypes.pt",
            folder.checkpoint,
            folder.prototypes,
        )
    preds = pd.read_csv(folder.test_predictions, dtype={"well": str, "image_id": str})
    for col in ("cell_id", "well", "condition", "score"):
        if col not in preds:
            raise RunFolderError(
                f"{folder.test_predictions} has no column '{col}': written by another protocell version; retrain"
            )
    return Run(folder.root, cfg, record, net, dm, preds, views=views)
