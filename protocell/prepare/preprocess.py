"""Per-channel normalisation over the whole image (one streamed pass) and Gaussian denoising.

``channel_stats`` walks an ``ImageSource`` tile by tile and keeps, per channel, an exact
histogram for 8/16-bit integers (so percentiles are exact for any image size) or a bounded
strided sample for other types, plus a bounded pixel sample for automatic thresholds. It refuses
NaN/inf pixels and constant channels, naming the image and channel. ``normalize`` maps the low
percentile to 0 and the high one to 1 (values are not clipped); ``denoise`` is a Gaussian blur.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from protocell.prepare.io import ImageSource, InputError, tile_grid

SAMPLE_PER_CHANNEL = 1_000_000  # pixels kept per channel for thresholds / float percentiles


@dataclass
class ChannelStats:
    """Whole-image statistics of one channel (raw units) and a sample of normalised pixels."""

    name: str
    low: float  # value mapped to 0
    high: float  # value mapped to 1
    minimum: float
    maximum: float
    sample: np.ndarray = field(repr=False)  # normalised pixel sample (float32), for thresholds

    def to_dict(self) -> dict:
        return {"name": self.name, "low": self.low, "high": self.high, "min": self.minimum, "max": self.maximum}


def _percentile_from_hist(hist: np.ndarray, q: float) -> float:
    cdf = np.cumsum(hist, dtype=np.float64)
    return float(np.searchsorted(cdf, q / 100.0 * cdf[-1], side="left"))


def sample_stride(shape: tuple[int, int]) -> int:
    """Pixel stride of the global sampling grid that keeps about SAMPLE_PER_CHANNEL pixels."""
    return max(1, int(np.ceil(np.sqrt(shape[0] * shape[1] / SAMPLE_PER_CHANNEL))))


def block_stats(source: ImageSource, names: list[str], core: tuple[int, int, int, int]) -> dict:
    """Statistics of one block (picklable, combined by ``combine_stats``); refuses NaN/inf pixels."""
    y0, y1, x0, x1 = core
    block = source.read(y0, y1, x0, x1)
    exact = source.dtype.kind == "u" and source.dtype.itemsize <= 2
    nbins = 1 << (8 * source.dtype.itemsize)
    stride = sample_stride(source.shape)
    out: dict[str, list] = {"hist": [], "sample": [], "min": [], "max": []}  # per channel
    for c, plane in enumerate(block):
        if plane.dtype.kind == "f" and not np.isfinite(plane).all():
            bad = np.argwhere(~np.isfinite(plane))[0]
            n_bad = int((~np.isfinite(plane)).sum())
            raise InputError(
                f"image {source.image_id}, channel '{names[c]}' ({source.channels[c].path}): {n_bad} NaN/inf "
                f"pixels in [{y0}:{y1}, {x0}:{x1}], first at (y={y0 + bad[0]}, x={x0 + bad[1]}); protocell "
                "does not invent pixel values: fix or re-export the image, or drop it from the plate map"
            )
        out["min"].append(float(plane.min()))
        out["max"].append(float(plane.max()))
        out["hist"].append(np.bincount(plane.ravel(), minlength=nbins) if exact else None)
        oy, ox = (-y0) % stride, (-x0) % stride  # on the global grid: independent of the tiling
        out["sample"].append(plane[oy::stride, ox::stride].ravel().astype(np.float32))
    return out


def combine_stats(source: ImageSource, names: list[str], parts, low_pct: float, high_pct: float) -> list[ChannelStats]:
    """Fold block statistics into per-channel percentiles; refuses constant channels."""
    C = len(names)
    hists: list = [None] * C
    samples: list[list[np.ndarray]] = [[] for _ in range(C)]
    mins, maxs = np.full(C, np.inf), np.full(C, -np.inf)
    for part in parts:
        for c in range(C):
            mins[c] = min(mins[c], part["min"][c])
            maxs[c] = max(maxs[c], part["max"][c])
            samples[c].append(part["sample"][c])
            if part["hist"][c] is not None:
                hists[c] = part["hist"][c] if hists[c] is None else hists[c] + part["hist"][c]
    out = []
    for c in range(C):
        if mins[c] == maxs[c]:
            raise InputError(
                f"image {source.image_id}, channel '{names[c]}' ({source.channels[c].path}) is constant "
                f"(every pixel = {mins[c]:g}): an empty or failed acquisition; remove it from the input/plate map"
            )
        sample = np.concatenate(samples[c])
        if hists[c] is not None:
            lo, hi = _percentile_from_hist(hists[c], low_pct), _percentile_from_hist(hists[c], high_pct)
        else:
            lo, hi = (float(v) for v in np.percentile(sample, [low_pct, high_pct]))
        if hi <= lo:  # very sparse channels: fall back to the full range rather than divide by zero
            lo, hi = float(mins[c]), float(maxs[c])
        out.append(
            ChannelStats(
                names[c], lo, hi, float(mins[c]), float(maxs[c]), ((sample - lo) / (hi - lo)).astype(np.float32)
            )
        )
    return out


def channel_stats(
    source: ImageSource, names: list[str], low_pct: float, high_pct: float, block: int = 2048, mapper=map
) -> list[ChannelStats]:
    """One streamed pass over the image: exact (integer ≤16 bit) or sampled percentiles per channel.

    ``mapper`` maps ``block_stats`` over blocks (``map`` or a process pool's ``imap``)."""
    from functools import partial

    cores = [t.core for t in tile_grid(source.shape, block, 0)]
    return combine_stats(source, names, mapper(partial(block_stats, source, names), cores), low_pct, high_pct)


def normalize(block: np.ndarray, lows: np.ndarray, highs: np.ndarray) -> np.ndarray:
    """(C, h, w) raw → float32, low percentile → 0, high percentile → 1 (not clipped)."""
    lows = np.asarray(lows, np.float32)[:, None, None]
    highs = np.asarray(highs, np.float32)[:, None, None]
    return (block.astype(np.float32) - lows) / (highs - lows)


def denoise(block: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian denoising of each channel of a (C, h, w) float block (σ in pixels; 0 = off)."""
    if sigma <= 0:
        return block
    return np.stack([ndi.gaussian_filter(ch, sigma, mode="reflect") for ch in block])
