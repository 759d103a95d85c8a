"""Which training normalisation a crop store needs, and whether brightness alone gives the answer.

Every writer records in ``store.json`` how it normalised the pixels (``normalization.method``):

- ``per_image_percentiles`` (prepare): each image's channels mapped to their own [low, high]
  percentiles, which removes per-image and per-well gain; one dataset-wide range (``dataset``) then
  keeps whole-cell brightness comparable between cells;
- ``raw`` (the synthetic wells) and ``as_given`` (imported pre-cut crops): nothing removed a well's
  gain, so ``dataset`` would let the network read the well's brightness; per-cell percentiles
  (``cell``) remove it — and whole-cell brightness with it, by design.

``data.normalize=auto`` (the default of ``data=prepared``) picks from that record
(``auto_normalization``) and the run log and ``metrics.json`` say which and why.
``intensity_separation`` measures the trap directly: the AUROC with which one channel's mean
intensity inside the cell mask separates the conditions (> 0.9: the network can read brightness
rather than pattern).
"""

from __future__ import annotations

import numpy as np

METHODS = ("per_image_percentiles", "raw", "as_given")
SEPARATION_WARNING = 0.9


LEGACY = {"prepare": "per_image_percentiles", "synthetic": "raw"}


def store_normalization(info: dict) -> str:
    """The method ``store.json`` records; for a store written before it was recorded, what its writer
    (``source``) always did (prepare: per-image percentiles, synthetic: raw), else ``unknown``."""
    method = (info.get("normalization") or {}).get("method")
    return str(method or LEGACY.get(str(info.get("source")), "unknown"))


def auto_normalization(info: dict) -> tuple[str, str]:
    """(data.normalize, why) for a store whose ``store.json`` is ``info``."""
    method = store_normalization(info)
    if method == "per_image_percentiles":
        return "dataset", (
            "data.normalize=auto → dataset: prepare normalised each image to its own percentiles, so "
            "one dataset-wide range keeps brightness comparable between cells"
        )
    return "cell", (
        f"data.normalize=auto → cell: store.json says the pixels are {method.replace('_', ' ')}, so per-cell "
        "percentiles remove per-image and per-well gain (a batch effect); whole-cell brightness is then "
        "hidden from the network (data.normalize=dataset keeps it)"
    )


def mean_intensities(store, rows: np.ndarray, channels: list[int]) -> np.ndarray:
    """(len(rows), len(channels)) mean stored intensity of each channel inside each cell's mask."""
    out = np.empty((len(rows), len(channels)))
    for i, r in enumerate(rows):
        crop, mask = store.crop(int(r)), store.mask(int(r)) > 0
        pix = crop[channels][:, mask] if mask.any() else crop[channels].reshape(len(channels), -1)
        out[i] = pix.astype(np.float64).mean(1)
    return out


def separation_auroc(values: np.ndarray, positive: np.ndarray) -> float:
    """max(AUROC, 1 − AUROC) of ``values`` for binary ``positive`` (Mann–Whitney, ties halved):
    how well one number per cell tells the conditions apart, whichever way round."""
    from scipy.stats import rankdata

    positive = np.asarray(positive, bool)
    n1, n0 = int(positive.sum()), int((~positive).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    ranks = rankdata(values)
    auc = (ranks[positive].sum() - n1 * (n1 + 1) / 2) / (n1 * n0)
    return float(max(auc, 1 - auc))


def intensity_separation(
    store, rows: np.ndarray, channels: list[int], positive_label: int, max_cells: int = 2000, seed: int = 0
) -> dict[str, float]:
    """Per channel name, ``separation_auroc`` of the mean intensity inside the mask between the
    positive class and the rest, on a seeded sample of at most ``max_cells`` of ``rows``."""
    rows = np.asarray(rows)
    if len(rows) > max_cells:
        rows = np.sort(np.random.default_rng(seed).choice(rows, max_cells, replace=False))
    means = mean_intensities(store, rows, channels)
    positive = store.manifest["label"].to_numpy()[rows] == positive_label
    return {store.channels[c]: separation_auroc(means[:, k], positive) for k, c in enumerate(channels)}


def brightness_warnings(aurocs: dict[str, float], normalize: str) -> list[str]:
    """A warning per channel whose mean intensity alone separates the conditions (AUROC > 0.9)."""
    hidden = (
        "data.normalize=cell hides whole-cell brightness from the network, but check that the difference "
        "is biology and not a batch effect"
        if normalize == "cell"
        else "the network can read brightness rather than pattern (a gain or exposure difference between wells "
        "would do it); data.normalize=cell removes whole-cell brightness"
    )
    return [
        f"the mean {name} intensity inside the cell alone separates the conditions (AUROC {a:.2f}): {hidden}"
        for name, a in aurocs.items()
        if np.isfinite(a) and a > SEPARATION_WARNING
    ]
