"""``CellDataset``: crops of a crop store as tensors.

Item ``i`` → ``(image (C, S, S) float32, mask (1, S, S) float32, label int64, cell_id int64)``
where S = ``crop_size``. Steps, in order: channel selection, per-channel normalisation
``(x − lo) / (hi − lo)`` with (lo, hi) either fixed per channel (``dataset``: 1st / 99.8th
percentiles of training crops) or per cell (``cell``: the same percentiles of this cell's own
pixels, which removes per-well and per-image gain and offset — batch effects — from the cells), optional
resize, optional *photometric* augmentation (training only, see ``Photometric``), optional zeroing
of the background (pixels outside this cell's mask, after the photometric step so that background
stays exactly 0; with ``margin`` > 0 also the outermost ``margin`` pixels of the cell, see
``zeroing_mask``), optional random flips / 90° rotations (training only; image and mask together).
The returned mask is always the cell's own mask (the prototype layer's distance term and the
figures use it); the margin only changes which pixels the network sees.

Reproducible training order: ``EpochSampler`` shuffles with a generator seeded by (seed, epoch) and
yields ``(index, epoch)``; the augmentation of an item is then drawn from (seed, epoch, cell id).
Neither depends on global random state, so a run resumed from a checkpoint sees exactly the data
the uninterrupted run would have seen, in worker processes too.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Sampler
from torchvision.transforms.functional import gaussian_blur

from protocell.config import PhotometricConfig, check_fields
from protocell.data.store import CropStore, well_key


class Photometric:
    """Random per-crop gain, focus and noise: the nuisances that differ between wells and plates.

    Cells of one well share an illumination gain, a focus and a noise level. When fields of one well
    sit in both the training and the test split (the paper's split by source image), a network can
    learn those per-well cues instead of the cells' biology, and a cell is then called "Exp" for
    the well it grew in. Drawing them afresh for every training crop makes them useless as cues.
    Per channel, on the normalised image: ×exp(U(−gain, gain)); then a Gaussian blur of
    σ ~ U(0, blur) px; then additive Gaussian noise of σ ~ U(0, noise). 0 switches a part off.
    """

    def __init__(self, gain: float = 0.0, blur: float = 0.0, noise: float = 0.0):
        """0 switches a part off (no photometric augmentation: ``Photometric()``); ranges:
        ``protocell.config.PhotometricConfig``."""
        check_fields({"gain": gain, "blur": blur, "noise": noise}, PhotometricConfig, "data.photometric")
        self.gain, self.blur, self.noise = float(gain), float(blur), float(noise)

    def __bool__(self) -> bool:
        return bool(self.gain or self.blur or self.noise)

    def __call__(self, image: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        C = image.shape[0]
        if self.gain:
            image = image * torch.exp((torch.rand(C, 1, 1, generator=g) * 2 - 1) * self.gain)
        if self.blur:
            sigma = float(torch.rand((), generator=g)) * self.blur
            if sigma > 0.1:
                k = 2 * int(np.ceil(3 * sigma)) + 1
                image = gaussian_blur(image, [k, k], [sigma, sigma])
        if self.noise:
            sd = torch.rand(C, 1, 1, generator=g) * self.noise
            image = image + sd * torch.randn(image.shape, generator=g)
        return image


def zeroing_mask(mask: np.ndarray, margin: int) -> np.ndarray:
    """The pixels of a cell that stay visible when the background is zeroed: its mask shrunk by
    ``margin`` pixels (city-block erosion, in store pixels).

    Why: the optics blur every field before anything is segmented, so a pixel on the cell's outline
    also holds light from just outside it (background offset, debris). A background that differs by
    condition then reaches the network through the outline even with the background zeroed. The
    blur's reach is about 2.5 σ of the point-spread function; at Nyquist sampling σ ≈ 0.8–1 px, so
    a 2 px margin removes it. A cell that the erosion would erase keeps its whole mask."""
    if margin <= 0:
        return mask
    inner = mask > 0
    for _ in range(int(margin)):  # one city-block step, as ndi.binary_erosion's default cross, without scipy
        p = np.zeros((inner.shape[0] + 2, inner.shape[1] + 2), bool)  # outside the crop: background
        p[1:-1, 1:-1] = inner
        inner = p[1:-1, 1:-1] & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return inner.astype(mask.dtype) if inner.any() else mask


def epoch_passes(epoch: int, repeats: int) -> range:
    """The pass numbers of an epoch of ``repeats`` passes: ``epoch·repeats … epoch·repeats + repeats − 1`` (one
    pass: the epoch's own number). Each pass seeds its own order and augmentation."""
    return range(epoch * repeats, (epoch + 1) * repeats)


class EpochSampler(Sampler):
    """Shuffled indices from a generator seeded by (seed, pass); yields (index, pass) pairs. An epoch is
    ``repeats`` passes over the items (``data.min_epoch_cells``), pass ``epoch·repeats + r``, each with its
    own order and augmentation; one pass (the default on a plate of the built-in size) is pass = epoch."""

    def __init__(self, n: int, seed: int, repeats: int = 1):
        self.n, self.seed, self.epoch, self.repeats = n, int(seed), 0, int(repeats)

    def set_epoch(self, epoch: int) -> None:  # Lightning calls this at the start of every epoch
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n * self.repeats

    def __iter__(self):
        items = []
        for p in epoch_passes(self.epoch, self.repeats):
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + p)
            items += [(int(i), p) for i in torch.randperm(self.n, generator=g)]
        return iter(items)


class CellDataset(Dataset):
    def __init__(
        self,
        store: CropStore,
        rows: np.ndarray,
        channels: list[int],
        crop_size: int,
        norm_lo: np.ndarray,
        norm_hi: np.ndarray,
        zero_background: bool = False,
        augment: bool = False,
        seed: int = 0,
        per_cell: bool = False,
        photometric: Photometric | None = None,
        margin: int = 0,
        labels: np.ndarray | None = None,
        levelling=None,
        reimage=None,
    ):
        """``labels``: one per row, instead of the manifest's well labels (``data.labels=truth``);
        ``levelling``: a ``levelling.LevellingPlan`` applied to every crop (``data.level_imaging``);
        ``reimage``: ``(crop (C, H, W) float32 in the store's units, mask, cell_id) → crop``, a change of
        imaging applied after the levelling and before the normalisation, as a camera's would be
        (``protocell.diagnostics.imaging``)."""
        self.store = store
        self.rows = np.asarray(rows, dtype=np.int64)
        self.channels = list(channels)
        self.crop_size = int(crop_size)
        self.lo = torch.as_tensor(norm_lo, dtype=torch.float32).view(-1, 1, 1)
        self.scale = 1.0 / torch.as_tensor(np.maximum(norm_hi - norm_lo, 1e-6), dtype=torch.float32).view(-1, 1, 1)
        self.zero_background = zero_background
        self.margin = int(margin)
        self.augment = augment
        self.seed = int(seed)
        self.per_cell = per_cell
        self.reimage = reimage
        # per-cell (lo, hi) of each item, filled lazily (NaN: not yet computed); 16 bytes per cell and channel
        self._cell_range = np.full((len(self.rows), 2, len(self.channels)), np.nan, np.float32) if per_cell else None
        self.photometric = photometric if (augment and photometric) else None
        source = store.manifest["label"].to_numpy()[self.rows] if labels is None else np.asarray(labels)
        self.labels = source.astype(np.int64)
        self.cell_ids = store.manifest["cell_id"].to_numpy()[self.rows].astype(np.int64)
        self.level = None
        if levelling is not None:
            keys = well_key(store.manifest).to_numpy()[self.rows]
            plans = {k: levelling.for_well(k) for k in set(keys)}
            self.level = (
                np.stack([plans[k][0] for k in keys]) if len(keys) else np.zeros((0, len(self.channels))),
                np.stack([plans[k][1] for k in keys]) if len(keys) else np.zeros((0, len(self.channels), 2)),
            )
            self._level_range = np.full((len(self.rows), 2, len(self.channels)), np.nan)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, item):
        i, epoch = item if isinstance(item, tuple) else (item, 0)
        r = int(self.rows[i])
        stored = self.store.crop(r)[self.channels]
        raw_mask = self.store.mask(r)
        # the well's imaging brought to the plan's (protocell.data.levelling), the noise per (seed, epoch, cell)
        if self.level is not None:
            from protocell.data.levelling import add_noise, blur, blurred_range

            stream = (self.seed * 1_000_003 + epoch) * 1_000_033 if self.augment else 7_919
            gen = torch.Generator().manual_seed((stream * 1_000_037 + int(self.cell_ids[i])) % (2**63 - 1))
            draw = torch.randn(stored.shape, generator=gen).numpy()
            blurred = blur(stored, self.level[0][i])
            if np.isnan(self._level_range[i, 0, 0]):  # the blurred cell's range: once, then reused
                self._level_range[i] = blurred_range(blurred, raw_mask)
            stored = add_noise(blurred, self.level[1][i], draw, self._level_range[i])
        if self.reimage is not None:
            stored = self.reimage(stored.astype(np.float32), raw_mask, int(self.cell_ids[i]))
        crop = torch.from_numpy(stored.astype(np.float32))
        mask = torch.from_numpy(raw_mask.astype(np.float32))[None]
        keep = torch.from_numpy(zeroing_mask(raw_mask, self.margin).astype(np.float32))[None] if self.margin else mask
        if self.per_cell:
            if np.isnan(self._cell_range[i, 0, 0]):  # a crop never changes: percentiles once, then reused
                inside = crop[:, mask[0] > 0] if mask.sum() > 0 else crop.flatten(1)
                self._cell_range[i] = torch.quantile(inside, torch.tensor([0.01, 0.998]), dim=1).numpy()
            q = torch.from_numpy(self._cell_range[i])  # (2, C): lo, hi
            image = (crop - q[0].view(-1, 1, 1)) / (q[1] - q[0]).clamp_min(1e-6).view(-1, 1, 1)
        else:
            image = (crop - self.lo) * self.scale
        if image.shape[-1] != self.crop_size:
            image = F.interpolate(
                image[None], size=self.crop_size, mode="bilinear", align_corners=False, antialias=True
            )[0]
            mask = F.interpolate(mask[None], size=self.crop_size, mode="nearest")[0]
            if self.margin:
                keep = F.interpolate(keep[None], size=self.crop_size, mode="nearest")[0]
            else:
                keep = mask
        if self.augment:
            g = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) * 1_000_033 + int(self.cell_ids[i]))
            k = int(torch.randint(4, (), generator=g))
            flip = bool(torch.randint(2, (), generator=g))
            if self.photometric:
                image = self.photometric(image, g)
        if self.zero_background:
            image = image * keep
        if self.augment:
            image, mask = torch.rot90(image, k, (1, 2)), torch.rot90(mask, k, (1, 2))
            if flip:
                image, mask = image.flip(2), mask.flip(2)
        return image.contiguous(), mask.contiguous(), int(self.labels[i]), int(self.cell_ids[i])
