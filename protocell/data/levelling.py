"""Imaging levelling (``data.level_imaging``): every well brought to the same optics blur and pixel noise
before the network sees a cell, so a per-well imaging difference cannot stand in for the condition.

Why. A network trained against well labels reads whatever separates the conditions' wells. When the
exposed wells were imaged differently (another day, their own columns: ``well_effects=aligned`` on the
built-in plates) it reads the imaging: on matrix v2's aligned plates the unaffected exposed cells score
apart from the reference at AUROC 0.94–0.997. Taken apart on one plate (20 %, plate 5439, seed 0), the
optics blur alone (σ 0.6–0.8 against 0.8–1.0 px) gives a cue of 0.95, the gain alone (shot noise ±5 %
after per-cell normalisation) 0.82 (docs/results.md). Augmentation that *varies* the imaging leaves the
difference in place; levelling *removes* it: blur can be added and noise can be added, never taken away, so
every well is brought to the blurriest and noisiest well's level.

How, per well (plate, well) and channel, on the cells as the network sees them (normalised, ``CellDataset``):

- **Blur.** The optics blur of a well against the pool of wells, from the cells' mean radial power
  spectrum (each crop normalised, its cell tapered smoothly, the mean removed; the white-noise floor of
  the highest frequencies subtracted): log(P_well / P_pool) = c − 4π²(σ²_well − σ²_pool)·f² over
  0.08–0.32 cycles/px, fitted by least squares. The constant c takes up any difference of amplitude (more
  puncta in affected cells): only the Gaussian roll-off reads as blur. On built-in plates with known
  optics the estimate of σ²_well − σ²_pool follows the truth with slope 0.95 and an error of 0.012 px²
  (the spread to remove: 0.17 px²), and reads 0 ± 0.01 on a plate where only the noise differs. Each well
  is then blurred by a Gaussian of σ = √(max Δ − Δ_well).
- **Noise.** After the blur, the noise of each well's cells as a function of their normalised intensity y:
  the mean square of second differences along rows (÷√6, so white noise of variance v adds exactly v)
  in intensity bins, inside the cells. The cells' own structure adds the same to every well once the blur
  is levelled, so the gap to the noisiest well, bin by bin, is noise to add: fitted as a line a + b·y (shot
  noise grows with the signal, read noise does not) and drawn as Gaussian noise of that variance at each
  pixel's intensity, once more through the whole reading to correct for the range the noise widens. A gain
  difference (shot noise) and a read-noise difference are both levelled this way; after it the exposed
  and reference cells' noise agrees within ±4 % at every intensity on the built-in aligned plates (before:
  up to 40 % apart).

The plan (``LevellingPlan``) is estimated once per store from a seeded sample of each well's cells, label
free (like normalisation, it may read every well, test wells included), and applied to every crop the
network reads — training, validation, test, push and explanations alike — with a noise draw seeded by
(seed, epoch, cell) in training and by the cell alone otherwise. It cannot sharpen or denoise: a well
blurrier or noisier than the plan's target keeps its excess (``score`` says so for another plate's wells).
What it costs: every cell is read at the worst well's imaging. Measured in docs/results.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

# radial frequency band (cycles / px) where the cells' structure dominates, and where the noise floor is read
SIGNAL_BAND = (0.08, 0.32)
NOISE_BAND = 0.42
EDGES = np.linspace(0.0, 0.5, 26)  # radial frequency bins (cycles / px) the optics blur is read in
CELLS_PER_WELL = 150  # cells sampled a well for the estimate
TAPER_ERODE, TAPER_SIGMA = 4, 2.0  # the cell's mask eroded (px) and smoothed (σ, px): a window without edges


def normalised(crop: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(C, S, S) stored crop → each channel scaled to its cell's 1st/99.8th percentiles, as ``CellDataset``
    reads it with ``data.normalize=cell``."""
    inside = mask > 0
    x = crop.astype(np.float64)
    if inside.sum() < 4:
        inside = np.ones_like(inside)
    pix = x[:, inside]
    lo, hi = np.quantile(pix, 0.01, axis=1), np.quantile(pix, 0.998, axis=1)
    return (x - lo[:, None, None]) / np.maximum(hi - lo, 1e-6)[:, None, None]


def radial_power(image: np.ndarray, mask: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, float] | None:
    """(C, S, S) normalised image → ((C, bins) mean power in radial frequency bins ``edges`` of the cell,
    its mean removed, tapered by a smoothed eroded mask; Σ taper², the power white noise of unit variance
    adds to every bin). None when the cell is too small for a window."""
    from scipy import ndimage as ndi

    inner = ndi.binary_erosion(mask > 0, iterations=TAPER_ERODE)
    if inner.sum() < 16:
        return None
    taper = ndi.gaussian_filter(inner.astype(np.float64), TAPER_SIGMA)
    S0, S1 = image.shape[-2:]
    f = np.sqrt(np.fft.fftfreq(S0)[:, None] ** 2 + np.fft.fftfreq(S1)[None, :] ** 2)
    which = np.digitize(f.ravel(), edges) - 1
    ok = (which >= 0) & (which < len(edges) - 1)
    counts = np.bincount(which[ok], minlength=len(edges) - 1)
    out = np.empty((image.shape[0], len(edges) - 1))
    for c, y in enumerate(image):
        w = (y - (y * taper).sum() / taper.sum()) * taper
        p = (np.abs(np.fft.fft2(w)) ** 2).ravel()
        out[c] = np.bincount(which[ok], weights=p[ok], minlength=len(edges) - 1) / np.maximum(counts, 1)
    return out, float((taper**2).sum())


def powers(store, rows, channels: list[int]) -> list[np.ndarray]:
    """(C, bins) radial power (``EDGES``) of each of ``rows``' cells normalised one by one that is large enough
    for a window (a cell with a non-finite pixel shows no imaging: skipped — score refuses it by name)."""
    out = []
    for r in rows:
        mask, crop = store.mask(int(r)), store.crop(int(r))[channels]
        if not np.isfinite(crop).all():
            continue
        got = radial_power(normalised(crop, mask), mask, EDGES)
        if got is not None:
            out.append(got[0])
    return out


def mean_power(store, rows, channels: list[int]) -> np.ndarray | None:
    """(C, bins) mean radial power of ``rows``' cells (``powers``); None when no cell is large enough for a
    window."""
    got = powers(store, rows, channels)
    return np.mean(got, axis=0) if got else None


def _pooled_profile(parts, sigma, add) -> tuple[np.ndarray, np.ndarray]:
    """``_noise_profile`` over the cells of several (store, rows, channels) ``parts``, pooled pixel-weighted."""
    got = [_noise_profile(store, rows, channels, sigma, add) for store, rows, channels in parts]
    count = np.sum([n for _, n in got], axis=0)
    return np.sum([mean * n for mean, n in got], axis=0) / np.maximum(count, 1), count


def camera_match(source: tuple, target: list[tuple], source_power: np.ndarray | None = None) -> dict | None:
    """What gives ``source``'s cells (store, rows, the network's channels in it) the imaging the cells of
    ``target`` (one or more such triples: a zone may span stores) show, read as ``estimate`` reads a well
    against the plate's worst (module doc): the extra blur σ (C,) from the two sets' radial spectra, then the
    noise to add, (C, 2) (a, b) of a variance a + b·y, from the gap between their noise profiles once that
    blur is made (read twice, as the noise widens the cell's range). It cannot sharpen or denoise: where the
    target is sharper or cleaner that part is left as it is (``sharper_px2``: the σ² by which the target is
    sharper, 0 where it is not). ``{"blur": σ, "add_var": (a, b), "sharper_px2": (C,)}``; None when either side
    has no cell large enough to read its optics. ``source_power``: ``mean_power`` of the source, when one source
    is matched to several targets."""
    theirs = [p for store, rows, channels in target for p in powers(store, rows, channels)]
    mine = mean_power(*source) if source_power is None else source_power
    spectra = {"source": mine, "target": np.mean(theirs, axis=0) if theirs else None}
    if spectra["source"] is None or spectra["target"] is None:
        return None
    offsets = blur_offsets(spectra, EDGES)
    apart = offsets["target"] - offsets["source"]
    sigma = np.sqrt(np.maximum(apart, 0.0))
    want, _ = _pooled_profile(target, np.zeros(len(source[2])), None)
    store, rows, channels = source
    have, count = _noise_profile(store, rows, channels, sigma, None)
    add = _line(want - have, count)
    if np.abs(add).max() > 0:
        again, count = _noise_profile(store, rows, channels, sigma, add)
        add = _line(want - again, count, start=add)
    return {"blur": sigma, "add_var": add, "sharper_px2": np.maximum(-apart, 0.0)}


def blur_offsets(spectra: dict, edges: np.ndarray) -> dict:
    """{well: (C, bins) mean power} → {well: (C,) σ²_well − σ²_pool} (module doc), the pool being the
    geometric mean over wells."""
    mid = (edges[:-1] + edges[1:]) / 2
    band = (mid > SIGNAL_BAND[0]) & (mid < SIGNAL_BAND[1])
    floor = mid > NOISE_BAND
    wells = sorted(spectra)
    pool = np.exp(np.mean([np.log(np.maximum(spectra[w], 1e-30)) for w in wells], axis=0))
    x = -4 * math.pi**2 * mid[band] ** 2
    A = np.stack([np.ones_like(x), x], 1)
    out = {}
    for w in wells:
        d = []
        for c in range(pool.shape[0]):
            a = np.maximum(spectra[w][c][band] - spectra[w][c][floor].mean(), 1e-30)
            b = np.maximum(pool[c][band] - pool[c][floor].mean(), 1e-30)
            d.append(float(np.linalg.lstsq(A, np.log(a / b), rcond=None)[0][1]))
        out[w] = np.array(d)
    return out


@dataclass
class LevellingPlan:
    """Per well key ``plate/well``: the extra blur σ (C,) and the noise added after it, (C, 2) (a, b) of its
    variance a + b·y at normalised intensity y; ``target_noise`` (C,) a typical noise SD every well is
    brought to, ``offsets`` the blur estimates (σ² against the pool), ``noise`` each well's own (median over
    intensities) once blurred, before any is added. JSON-able (``as_dict``) for metrics.json."""

    blur: dict = field(default_factory=dict)
    add_var: dict = field(default_factory=dict)
    target_noise: list = field(default_factory=list)
    offsets: dict = field(default_factory=dict)
    noise: dict = field(default_factory=dict)

    def for_well(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        if key not in self.blur:
            raise KeyError(f"imaging levelling has no plan for well {key}")
        return np.asarray(self.blur[key], np.float64), np.asarray(self.add_var[key], np.float64)

    def as_dict(self) -> dict:
        r = lambda v: [round(float(x), 5) for x in v]  # noqa: E731
        return {
            "target_noise": r(self.target_noise),
            "wells": {
                k: {
                    "blur": r(self.blur[k]),
                    "add_var": [r(v) for v in self.add_var[k]],
                    "offset": r(self.offsets[k]),
                    "noise": r(self.noise[k]),
                }
                for k in sorted(self.blur)
            },
        }

    def summary(self) -> str:
        extra = np.array([self.blur[k] for k in self.blur])
        return (
            f"{len(self.blur)} wells levelled to the blurriest and noisiest: extra blur σ up to "
            f"{extra.max():.2f} px (median {np.median(extra):.2f}), pixel noise brought to the noisiest well's "
            f"at every intensity (typical SD {', '.join(f'{v:.4f}' for v in self.target_noise)}, one a channel)"
        )


def estimate(
    store, rows: np.ndarray, channels: list[int], seed: int, cells_per_well: int = CELLS_PER_WELL, read=None
) -> LevellingPlan:
    """The plan over the wells of ``rows`` of ``store`` (module doc), from at most ``cells_per_well`` cells a
    well drawn with ``seed``; ``read``: ``well_spectra`` of the same rows and seed, when already read."""
    picks, spectra = read if read is not None else well_spectra(store, rows, channels, seed, cells_per_well)
    offsets = blur_offsets(spectra, EDGES)
    top = np.max([offsets[k] for k in offsets], axis=0)
    plan = LevellingPlan(offsets=offsets)
    for k in offsets:
        plan.blur[k] = np.sqrt(np.maximum(top - offsets[k], 0.0))
    # the noise, as a function of the normalised intensity, once every well has the plan's blur
    profiles = {k: _noise_profile(store, picks[k], channels, plan.blur[k], None) for k in offsets}
    plan.noise = {k: np.sqrt(np.maximum(np.median(profiles[k][0], axis=1), 0.0)) for k in offsets}
    target = np.max([profiles[k][0] for k in profiles], axis=0)  # (C, bins): the noisiest well, bin by bin
    for k in offsets:
        add = _line(target - profiles[k][0], profiles[k][1])
        if np.abs(add).max() > 0:  # once more through the whole reading: the noise also widens the cell's range
            again = _noise_profile(store, picks[k], channels, plan.blur[k], add)
            add = _line(target - again[0], again[1], start=add)
        plan.add_var[k] = add
    plan.target_noise = np.sqrt(np.maximum(np.nanmedian(target, axis=1), 0.0))  # a typical SD, for the log
    return plan


def well_spectra(store, rows: np.ndarray, channels: list[int], seed: int, cells_per_well: int = CELLS_PER_WELL):
    """({well: sampled rows}, {well: (C, bins) mean radial power}) of the wells of ``rows``: at most
    ``cells_per_well`` cells a well drawn with ``seed``, wells in sorted order (what ``estimate`` reads the blur
    from; ``blur_offsets`` of the spectra give each well's σ² against the pool)."""
    from protocell.data.store import well_key

    keys = well_key(store.manifest).to_numpy()[rows]
    rng = np.random.default_rng(seed)
    picks, spectra = {}, {}
    for key in sorted(set(keys)):
        mine = rows[keys == key]
        picks[key] = pick = rng.choice(mine, size=min(cells_per_well, len(mine)), replace=False)
        power = mean_power(store, pick, channels)
        if power is None:
            from protocell.data.store import StoreError

            raise StoreError(
                f"data.level_imaging: no cell of well {key} in {store.root} is large enough to read its optics "
                f"(a {TAPER_ERODE} px erosion of its mask leaves fewer than 16 px): leave such wells out of the "
                "store, or set data.level_imaging=false"
            )
        spectra[key] = power
    return picks, spectra


def estimate_plates(store, rows: np.ndarray, channels: list[int], seed: int) -> LevellingPlan:
    """``score.level_imaging``: each plate of ``rows`` levelled to its *own* blurriest and noisiest well (one
    ``estimate`` per plate, merged); ``target_noise`` the noisiest plate's. Imaging that varies across a plate
    (a dimmer outer ring: fewer photons, more noise once each cell is normalised) then weakens every well's
    cells alike, and the plate's own controls, which ``score`` normalises each plate by, see the same."""
    plates = store.manifest["plate"].astype(str).to_numpy()[rows]
    merged = LevellingPlan()
    targets = []
    for plate in sorted(set(plates)):
        plan = estimate(store, rows[plates == plate], channels, seed)
        for name in ("blur", "add_var", "offsets", "noise"):
            getattr(merged, name).update(getattr(plan, name))
        targets.append(np.asarray(plan.target_noise))
    merged.target_noise = (np.max(targets, axis=0) if targets else np.zeros(len(channels))).tolist()
    return merged


NOISE_BINS = np.array([-0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.85, 1.05])  # normalised intensity


def _noise_profile(store, rows, channels, sigma, add) -> tuple[np.ndarray, np.ndarray]:
    """((C, bins) mean square of the second differences along rows (/√6: white noise of variance v adds v),
    (C, bins) pixel counts) of ``rows``' cells read through ``level`` with ``add`` (None: the blur alone),
    binned by the local mean of the three pixels; inside the cell eroded by 2 px (noise drawn with a
    fixed seed; a cell with a non-finite pixel skipped, as in ``powers``)."""
    from scipy import ndimage as ndi

    C, nb = len(channels), len(NOISE_BINS) - 1
    total, count = np.zeros((C, nb)), np.zeros((C, nb))
    rng = np.random.default_rng(0)
    for r in rows:
        mask = store.mask(int(r))
        crop = store.crop(int(r))[channels]
        draw = None if add is None else rng.standard_normal(crop.shape).astype(np.float32)
        if not np.isfinite(crop).all():
            continue
        y = normalised(level(crop, mask, sigma, add, draw), mask)
        inner = ndi.binary_erosion(mask > 0, iterations=2)
        keep = inner[:, 2:] & inner[:, 1:-1] & inner[:, :-2]
        for c in range(C):
            x = y[c]
            e = ((x[:, 2:] - 2 * x[:, 1:-1] + x[:, :-2]) / np.sqrt(6))[keep]
            mu = ((x[:, 2:] + x[:, 1:-1] + x[:, :-2]) / 3)[keep]
            b = np.clip(np.digitize(mu, NOISE_BINS) - 1, 0, nb - 1)
            total[c] += np.bincount(b, weights=e**2, minlength=nb)
            count[c] += np.bincount(b, minlength=nb)
    return total / np.maximum(count, 1), count


def _line(gap: np.ndarray, count: np.ndarray, start=None) -> np.ndarray:
    """(C, bins) variance to add at each bin's intensity → (C, 2) (a, b): the line a + b·y through it, weighted
    by the pixels a bin holds (√count), added to ``start``; bins with few pixels ignored."""
    centre = (NOISE_BINS[:-1] + NOISE_BINS[1:]) / 2
    out = np.zeros((gap.shape[0], 2)) if start is None else np.array(start, np.float64)
    for c in range(gap.shape[0]):
        ok = count[c] >= 200
        if ok.sum() < 2:
            continue
        w = np.sqrt(count[c][ok])
        A = np.stack([np.ones(ok.sum()), centre[ok]], 1) * w[:, None]
        out[c] += np.linalg.lstsq(A, gap[c][ok] * w, rcond=None)[0]
    return out


def level(crop: np.ndarray, mask: np.ndarray, sigma: np.ndarray, add, draw, scale=None) -> np.ndarray:
    """(C, S, S) stored crop → the crop as its well would look at the plan's imaging: each channel blurred
    by its σ (``blur``), then ``draw`` (C, S, S) standard normal noise added with variance a + b·y at the
    pixel's normalised intensity y (``add`` (C, 2): (a, b) in the units of the cell normalised to its
    1st–99.8th percentiles, read on the blurred crop; the range is read again after the noise, as it is for
    a cell imaged so). ``add`` None: the blur alone. ``scale``: the blurred cell's (lo, spread), (2, C), when
    already known (``blurred_range``; a crop's blur never changes)."""
    out = blur(crop, sigma)
    if add is None or draw is None:
        return out
    return add_noise(out, add, draw, blurred_range(out, mask) if scale is None else scale)


def add_noise(blurred: np.ndarray, add, draw: np.ndarray, scale) -> np.ndarray:
    """``level``'s second step: ``draw`` scaled to variance a + b·y (``add`` (C, 2)) at each pixel's intensity
    y in the blurred cell's (lo, spread) ``scale`` (2, C), added."""
    out = blurred
    lo, spread = scale
    add = np.asarray(add, np.float64)
    y = np.clip((out - lo[:, None, None]) / spread[:, None, None], 0.0, 1.0)
    var = np.maximum(add[:, :1, None] + add[:, 1:2, None] * y, 0.0)
    return (out + draw * (np.sqrt(var) * spread[:, None, None])).astype(np.float32)


def blurred_range(blurred: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(2, C): each channel's 1st percentile and 1st–99.8th percentile spread inside the cell (the whole
    crop for a cell of < 4 px)."""
    inside = mask > 0
    if inside.sum() < 4:
        inside = np.ones_like(inside)
    q = np.quantile(blurred[:, inside], [0.01, 0.998], axis=1)
    return np.stack([q[0], np.maximum(q[1] - q[0], 1e-6)])


def blur(crop: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """(C, S, S) stored crop → each channel blurred by its σ (px; 0: unchanged), edges reflected. Applied
    before the per-cell normalisation, as the optics would have: the cell's range is read after it."""
    from scipy import ndimage as ndi

    out = crop.astype(np.float32)
    for c, s in enumerate(sigma):
        if s > 1e-3:
            out[c] = ndi.gaussian_filter(out[c], float(s), mode="reflect", truncate=4.0)
    return out
