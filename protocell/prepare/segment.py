"""Cell segmentation of one normalised, denoised tile: ``watershed`` or ``distance`` (offline, no
weights) or ``cellpose``.

Both take ``main`` (actin / cytoplasm) and ``second`` (nuclei) as float32 (h, w) arrays in
normalised units (the image's low percentile at 0, high at 1) and return int32 (h, w) instance
labels (0 = background). ``build_segmenter(method, **params)`` is the registry; segmenters are
small picklable objects (the Cellpose network is loaded lazily, once per process).

Cellpose weights are never downloaded here: a built-in model name must already be in Cellpose's
model folder (``~/.cellpose/models`` or ``$CELLPOSE_LOCAL_MODELS_PATH``), see ``cellpose_model_file``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.segmentation import watershed

from protocell.prepare.io import InputError

METHODS = ("watershed", "distance", "cellpose")


class WatershedSegmenter:
    """Nuclei-seeded watershed on the cytoplasm channel (scikit-image; no weights).

    1. nuclei = ``second`` > nuclei threshold, small specks removed, holes filled; touching nuclei
       are split at distance-transform peaks at least ``seed_min_distance`` apart;
    2. cell foreground = ``main`` > cell threshold, or a nucleus, holes filled;
    3. watershed of the inverted distance to the background, from the nuclei, inside the
       foreground: touching cells split along the neck between them. Foreground without a
       nucleus stays background (debris, fragments).

    Thresholds are in normalised units and set per image (``thresholds``), Otsu by default.
    """

    def __init__(
        self,
        min_nucleus_area: int = 30,
        seed_min_distance: int = 7,
        split_nuclei: bool = True,
        compactness: float = 0.0,
    ):
        self.min_nucleus_area = int(min_nucleus_area)
        self.seed_min_distance = int(seed_min_distance)
        self.split_nuclei = bool(split_nuclei)
        self.compactness = float(compactness)

    def __call__(self, main: np.ndarray, second: np.ndarray, thresholds: dict) -> np.ndarray:
        markers, nuclei = self.nuclei(second, thresholds)
        if markers.max() == 0:
            return markers
        foreground = ndi.binary_fill_holes((main > thresholds["cell"]) | nuclei)
        dist_fg = ndi.distance_transform_edt(foreground)
        labels = watershed(-dist_fg, markers, mask=foreground, compactness=self.compactness)
        return labels.astype(np.int32)

    def nuclei(self, second: np.ndarray, thresholds: dict) -> tuple[np.ndarray, np.ndarray]:
        """Nucleus instance labels (touching nuclei split) and the nuclei mask, from ``second``."""
        nuclei = second > thresholds["nuclei"]
        nuc_labels, n = ndi.label(ndi.binary_fill_holes(nuclei))
        # drop specks below the nucleus size (version-stable, unlike remove_small_objects' arguments)
        small = np.bincount(nuc_labels.ravel()) < self.min_nucleus_area
        small[0] = True
        nuclei = ~small[nuc_labels]
        nuc_labels, n = ndi.label(nuclei)
        if n == 0:
            return np.zeros(second.shape, np.int32), nuclei
        if self.split_nuclei:
            dist = ndi.distance_transform_edt(nuclei)
            peaks = peak_local_max(dist, min_distance=self.seed_min_distance, labels=nuc_labels, exclude_border=False)
            seeds = np.zeros(second.shape, np.int32)
            seeds[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
            # every nucleus keeps at least one seed, then seeds grow over their nucleus
            missing = np.setdiff1d(np.arange(1, n + 1), nuc_labels[tuple(peaks.T)])
            if len(missing):
                centres = ndi.maximum_position(dist, nuc_labels, missing)
                for k, (y, x) in enumerate(centres):
                    seeds[y, x] = len(peaks) + 1 + k
            markers = watershed(-dist, seeds, mask=nuclei)
        else:
            markers = nuc_labels
        return markers.astype(np.int32), nuclei


class DistanceSegmenter(WatershedSegmenter):
    """Nuclei grown by a fixed distance, limited by their neighbours (CellProfiler's "Distance-N").

    The nuclei are found as in ``WatershedSegmenter``; each is then expanded by ``distance`` pixels
    (``skimage.segmentation.expand_labels``: a pixel joins the nearest nucleus within reach). The cell
    mask never looks at the main channel, so it cannot follow a reporter that moves: when GFP leaves
    the cytoplasm for the nucleus, a mask grown from GFP shrinks to the nucleus and gives the
    condition away; this one does not."""

    def __init__(
        self,
        distance: int = 8,
        min_nucleus_area: int = 30,
        seed_min_distance: int = 7,
        split_nuclei: bool = True,
        compactness: float = 0.0,
    ):
        super().__init__(min_nucleus_area, seed_min_distance, split_nuclei, compactness)
        if int(distance) < 0:
            raise InputError(f"segmentation.distance={distance}: the growth in pixels must be ≥ 0")
        self.distance = int(distance)

    def __call__(self, main: np.ndarray, second: np.ndarray, thresholds: dict) -> np.ndarray:
        from skimage.segmentation import expand_labels

        markers, _ = self.nuclei(second, thresholds)
        return expand_labels(markers, self.distance).astype(np.int32)


def cellpose_model_file(model: str) -> Path:
    """The file Cellpose would load for ``model`` (a built-in name such as ``cyto3``, or a path).

    Raises InputError naming what to download and where, instead of letting Cellpose download."""
    if os.path.sep in model or os.path.exists(model):
        path = Path(model).expanduser()
        if not path.is_file():
            raise InputError(
                f"segmentation.model={model}: no such Cellpose model file; give the path of a "
                "model saved by Cellpose (train or net.save_model), or a built-in name like cyto3"
            )
        return path
    from cellpose import models as cp_models

    if model not in cp_models.MODEL_NAMES:
        raise InputError(
            f"segmentation.model={model!r} is neither a file nor a Cellpose built-in model "
            f"({', '.join(cp_models.MODEL_NAMES[:4])}, …)"
        )
    basename = f"{model}torch_0" if model in ("cyto", "cyto2", "nuclei") else model
    path = Path(cp_models.MODEL_DIR) / basename
    if not path.is_file():
        raise InputError(
            f"Cellpose model '{model}' is not on this machine: expected the file {path}. This machine cannot "
            f"download it; on a machine with internet fetch {cp_models._MODEL_URL}/{basename} and copy it to "
            f"{path} (the folder is $CELLPOSE_LOCAL_MODELS_PATH or ~/.cellpose/models), or set "
            "segmentation.model=/path/to/your/model, or use segmentation=watershed (no weights needed)"
        )
    return path


class CellposeSegmenter:
    """Cellpose 3 (``cyto3``/``cyto`` or a user model file) on [main, second] = [cytoplasm, nuclei].

    Images arrive normalised over the whole image, so Cellpose's per-tile normalisation is off
    (tiles of one image then share one intensity scale)."""

    def __init__(
        self,
        model: str = "cyto3",
        diameter: float | None = 30.0,
        batch_size: int = 8,
        gpu: bool | str = "auto",
        flow_threshold: float = 0.4,
        cellprob_threshold: float = 0.0,
    ):
        self.model_file = str(cellpose_model_file(str(model)))
        self.diameter = None if diameter is None or diameter == 0 else float(diameter)
        self.batch_size = int(batch_size)
        self.gpu = gpu
        self.flow_threshold = float(flow_threshold)
        self.cellprob_threshold = float(cellprob_threshold)
        self._model = None

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_model"] = None
        return state

    def load(self):
        if self._model is None:
            import torch
            from cellpose import models as cp_models

            gpu = torch.cuda.is_available() if self.gpu == "auto" else bool(self.gpu)
            try:
                self._model = cp_models.CellposeModel(gpu=gpu, pretrained_model=self.model_file)
            except Exception as err:  # noqa: BLE001 - a wrong file shows as any torch/pickle error
                raise InputError(
                    f"Cellpose could not load the model file {self.model_file} "
                    f"({type(err).__name__}: {err}); is it a Cellpose 3 model?"
                ) from None
        return self._model

    def __call__(self, main: np.ndarray, second: np.ndarray, thresholds: dict) -> np.ndarray:
        model = self.load()
        x = np.stack([main, second], axis=-1).astype(np.float32)
        masks, _, _ = model.eval(
            x,
            channels=[1, 2],
            channel_axis=-1,
            diameter=self.diameter,
            batch_size=self.batch_size,
            normalize=False,
            flow_threshold=self.flow_threshold,
            cellprob_threshold=self.cellprob_threshold,
        )
        return np.asarray(masks, np.int32)


def build_segmenter(method: str, **params):
    if method == "watershed":
        return WatershedSegmenter(**params)
    if method == "distance":
        return DistanceSegmenter(**params)
    if method == "cellpose":
        return CellposeSegmenter(**params)
    raise InputError(f"segmentation.method={method!r} is unknown; use one of {METHODS} (e.g. segmentation=watershed)")


def instance_f1(pred: np.ndarray, truth: np.ndarray, iou: float = 0.5) -> dict:
    """F1 of predicted vs ground-truth instances, a match being IoU ≥ ``iou`` (> 0.5: one-to-one)."""
    p_ids, p_inv = np.unique(pred, return_inverse=True)
    t_ids, t_inv = np.unique(truth, return_inverse=True)
    pairs = np.bincount(p_inv.ravel() * len(t_ids) + t_inv.ravel(), minlength=len(p_ids) * len(t_ids))
    inter = pairs.reshape(len(p_ids), len(t_ids)).astype(np.float64)
    area_p, area_t = inter.sum(1, keepdims=True), inter.sum(0, keepdims=True)
    ious = inter / (area_p + area_t - inter)
    ious = ious[p_ids > 0][:, t_ids > 0]
    n_pred, n_true = ious.shape
    tp = int((ious >= iou).any(axis=1).sum()) if n_pred and n_true else 0
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_true if n_true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if tp else 0.0
    return {"f1": f1, "precision": precision, "recall": recall, "tp": tp, "n_pred": n_pred, "n_true": n_true}
