"""Offline augmentation of training crops (albumentations): rotation, flips, skew, shear.

Image and mask go through one transform together (mask with nearest-neighbour interpolation,
both filled with 0 outside the source crop). Parameters are drawn per (seed, cell, copy) from
a numpy generator and written into the description, so an augmented row says exactly what was
done (``rot=-73.2;shear=4.1;skew=0.031;hflip``) and a re-run reproduces it bit for bit.

Shapes: crops (n, C, S, S) in their stored dtype, masks (n, S, S) uint8.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class AugmentParams:
    copies: int = 2
    rotate: float = 180.0  # degrees, uniform in [-rotate, rotate]
    shear: float = 10.0  # degrees, uniform in [-shear, shear]
    skew: float = 0.05  # perspective corner jitter (fraction of the crop), uniform in [0, skew]
    flip: bool = True  # horizontal / vertical flips, each with probability 0.5
    seed: int = 0


def _transform(rng: np.random.Generator, p: AugmentParams):
    # imported here: albumentations loads torch (~550 MB); the tile workers never need it
    import albumentations as A
    import cv2

    rot = float(rng.uniform(-p.rotate, p.rotate))
    shear = float(rng.uniform(-p.shear, p.shear))
    skew = float(rng.uniform(0, p.skew))
    hflip, vflip = (bool(rng.random() < 0.5), bool(rng.random() < 0.5)) if p.flip else (False, False)
    steps = []
    if hflip:
        steps.append(A.HorizontalFlip(p=1.0))
    if vflip:
        steps.append(A.VerticalFlip(p=1.0))
    steps.append(
        A.Affine(rotate=(rot, rot), shear=(shear, shear), border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0, p=1.0)
    )
    if skew > 0:
        steps.append(A.Perspective(scale=(skew, skew), border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0, p=1.0))
    desc = (
        f"rot={rot:.1f};shear={shear:.1f};skew={skew:.3f}" + (";hflip" if hflip else "") + (";vflip" if vflip else "")
    )
    return A.Compose(steps, seed=int(rng.integers(2**31))), desc


def augment_crops(crops: np.ndarray, masks: np.ndarray, keys: list[tuple[int, ...]], p: AugmentParams):
    """``p.copies`` augmented versions of each crop; ``keys[i]`` (ints) seeds crop i's draws.

    Returns (crops, masks, [(i, desc), …]), ordered crop by crop, copy by copy."""
    out_c, out_m, meta = [], [], []
    for i, (crop, mask, key) in enumerate(zip(crops, masks, keys)):
        image = np.ascontiguousarray(np.moveaxis(crop, 0, -1))  # (S, S, C) for albumentations
        for copy in range(p.copies):
            rng = np.random.default_rng([int(p.seed), *map(int, key), copy])
            transform, desc = _transform(rng, p)
            res = transform(image=image, mask=mask)
            img = res["image"]
            if img.ndim == 2:  # single channel comes back (S, S)
                img = img[..., None]
            out_c.append(np.moveaxis(img, -1, 0).astype(crops.dtype))
            out_m.append((res["mask"] > 0).astype(np.uint8))
            meta.append((i, desc))
    if not out_c:
        return crops[:0], masks[:0], []
    return np.stack(out_c), np.stack(out_m), meta
