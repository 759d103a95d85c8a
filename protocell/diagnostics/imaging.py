"""The imaging intervention: held-out cells re-imaged a little differently and re-scored; the reference
fraction must not rise (the package's doc). Seven changes: on the network's input, pixel noise doubled or
halved in variance and focus softened or sharpened; on the stored image before the run's normalisation,
the camera's noise variance ×1.25 or ÷1.25 (±20 % of exposure), and the other condition's camera as this
plate's cells show it (``plate_cameras``). The two noise models read different networks: one that read
camera noise through the per-cell normalisation moved only under the camera changes, two that read
cleanliness on the input only under the input's (docs/method.md). The fixed changes are sized by
principle (what another day's imaging does); the seventh by the plate, so a camera difference beyond
them is reached."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from protocell.data.levelling import EDGES as SPECTRUM_EDGES  # the radial bins imaging levelling reads blur in
from protocell.diagnostics.base import MIN_CELLS, check

IMAGING = 0.10  # rise of the reference fraction when its cells are imaged a little differently
FOCUS = 0.35  # px: the Gaussian blur added ("softer") or removed ("sharper") by the focus changes
# the share by which the camera changes raise (×1.25) or lower (÷1.25) a cell's noise variance: what ±20 % of
# exposure or gain between wells does to the shot noise a cell shows after per-cell normalisation
NOISE = 0.25
HALF_NOISE = 1 / math.sqrt(2)  # the SD kept when the noise variance is halved
SHARPEN_FLOOR = 0.25  # the smallest blur response ``sharper`` inverts: a gain of at most 4 at any frequency


def imaging_stats(image, mask, sharpness: bool = True) -> np.ndarray:
    """Per channel (noise, sharpness) of a normalised crop inside its cell (mask eroded by 3 px):
    noise = 1.4826·MAD / √6 of the second differences along rows and columns (the SD of white pixel
    noise: they cancel any linear gradient, and the MAD ignores the few steps of structure), sharpness =
    mean |Laplacian| after a σ = 0.5 px smoothing (focus; NaN with ``sharpness=False``, for callers that read
    the noise only). (C, S, S), (S, S) → (C, 2)."""
    from scipy import ndimage as ndi

    inner = ndi.binary_erosion(np.asarray(mask) > 0, iterations=3)
    if inner.sum() < 16:
        inner = np.asarray(mask) > 0
    triples = [
        (inner[:, 2:] & inner[:, 1:-1] & inner[:, :-2], lambda x: x[:, 2:] - 2 * x[:, 1:-1] + x[:, :-2]),
        (inner[2:, :] & inner[1:-1, :] & inner[:-2, :], lambda x: x[2:, :] - 2 * x[1:-1, :] + x[:-2, :]),
    ]
    out = np.full((image.shape[0], 2), np.nan)
    for c, x in enumerate(np.asarray(image, np.float64)):
        d = np.concatenate([diff(x)[both] for both, diff in triples])
        if len(d):
            out[c, 0] = 1.4826 * np.median(np.abs(d - np.median(d))) / np.sqrt(6)
            if sharpness:
                out[c, 1] = np.abs(ndi.laplace(ndi.gaussian_filter(x, 0.5)))[inner].mean()
    return out


def _reflect_pad(x, pad: int):
    import torch.nn.functional as F

    return F.pad(x[None], (pad, pad, pad, pad), mode="reflect")[0]


def _blur_response(sigma: float, n: int):
    """The frequency response along one axis of ``n`` samples of the Gaussian kernel torchvision's
    ``gaussian_blur`` uses at σ = ``sigma`` (size 2⌈3σ⌉ + 1): the filter ``sharper`` undoes."""
    import torch

    k = 2 * int(math.ceil(3 * sigma)) + 1
    t = torch.linspace(-(k - 1) / 2, (k - 1) / 2, k, dtype=torch.float64)
    w = torch.exp(-0.5 * (t / sigma) ** 2)
    w = w / w.sum()
    f = torch.fft.fftfreq(n, dtype=torch.float64)
    return (w[None, :] * torch.cos(2 * math.pi * f[:, None] * t[None, :])).sum(1)


def sharper(x, sigma: float):
    """(C, H, W) → the image with a ``gaussian_blur`` of σ = ``sigma`` px undone (the inverse filter of
    that kernel, its gain bounded by 1 / ``SHARPEN_FLOOR``: at σ = 0.35 the response never falls below 0.76,
    so the bound only acts on the larger σ a plate's own cameras can ask for), reflect-padded so the crop's
    edges do not wrap: the mirror of "focus softened by σ"."""
    import torch

    pad = 8
    big = _reflect_pad(x.double(), pad)
    response = _blur_response(sigma, big.shape[-2])[:, None] * _blur_response(sigma, big.shape[-1])[None, :]
    out = torch.fft.ifft2(torch.fft.fft2(big) / response.clamp_min(SHARPEN_FLOOR)).real
    return out[:, pad:-pad, pad:-pad].to(x.dtype)


def less_noise(x, sd, keep: float | np.ndarray = HALF_NOISE):
    """(C, H, W), each channel's white pixel-noise SD ``sd`` (C,) → the image with that noise's SD scaled
    by about ``keep`` (a number or one a channel; by default its variance halved, the mirror of "noise
    doubled in variance"): a spectral-subtraction estimate of the signal
    (each frequency's power, smoothed over 3 × 3 neighbours, less twice the noise's: the usual
    over-subtraction, without which the noise's own fluctuations keep a share of it) plus the residual
    scaled by 1/√2. Where noise dominates (the high frequencies ``imaging_stats`` reads) its variance is
    halved; where the cell's structure dominates the image is kept. On test crops the noise SD
    ``imaging_stats`` reads falls to 0.71–0.81 of itself (1/√2 = 0.707), less where puncta fill the
    spectrum."""
    import torch
    import torch.nn.functional as F

    pad = 8
    big = _reflect_pad(x.double(), pad)
    spec = torch.fft.fft2(big)
    power = F.avg_pool2d(F.pad((spec.abs() ** 2)[None], (1, 1, 1, 1), mode="circular"), 3, stride=1)[0]
    noise = torch.as_tensor(np.asarray(sd), dtype=torch.float64).view(-1, 1, 1) ** 2 * big.shape[-1] * big.shape[-2]
    signal = torch.fft.ifft2((1 - 2 * noise / power.clamp_min(1e-30)).clamp(0, 1) * spec).real
    kept = torch.as_tensor(np.broadcast_to(np.asarray(keep, np.float64), (x.shape[0],)).copy()).view(-1, 1, 1)
    out = signal + (big - signal) * kept
    return out[:, pad:-pad, pad:-pad].to(x.dtype)


class _Reimaged:
    """A change of imaging: ``noise`` adds white Gaussian noise that raises the noise variance by that share
    (1: doubled; each cell's noise from its own seeded generator), ``quiet`` divides it by 1 + ``quiet``
    (``less_noise``), ``blur`` σ px blurs, ``sharpen`` σ px undoes a blur (``sharper``); each a number or
    one a channel. The noise is read after any blur or sharpening, so it is raised or lowered from what the
    changed focus left.

    ``camera=True``: made on the stored image (the camera's units, after any levelling) before the run's
    normalisation, as another exposure would make it, with each cell's own noise SD (``imaging_stats`` on
    its crop). With per-cell normalisation this is not the same as noise on the normalised image: more
    camera noise also lowers the cell's 1st percentile, so its dark parts come out brighter.
    ``camera=False``: made on the network's input (normalised) with the condition's median noise SD."""

    def __init__(self, noise=0.0, quiet=0.0, blur=0.0, sharpen=0.0, camera: bool = False):
        self.noise, self.quiet, self.blur, self.sharpen = (
            np.atleast_1d(np.asarray(v, np.float64)) for v in (noise, quiet, blur, sharpen)
        )
        self.camera = camera

    def __call__(self, crop: np.ndarray, mask: np.ndarray, cell_id: int, sd=None) -> np.ndarray:
        import torch
        from torchvision.transforms.functional import gaussian_blur

        C = crop.shape[0]
        noise, quiet, blur, sharpen = (
            np.broadcast_to(v, (C,)) for v in (self.noise, self.quiet, self.blur, self.sharpen)
        )
        x = torch.from_numpy(crop)
        if (blur > 0.05).any() or (sharpen > 0.05).any():
            planes = []
            for c in range(C):
                plane = x[c : c + 1]
                if blur[c] > 0.05:
                    k = 2 * int(np.ceil(3 * blur[c])) + 1
                    plane = gaussian_blur(plane, [k, k], [float(blur[c])] * 2)
                if sharpen[c] > 0.05:
                    plane = sharper(plane, float(sharpen[c]))
                planes.append(plane)
            x = torch.cat(planes)
        if noise.any() or quiet.any():
            sd = (
                np.nan_to_num(imaging_stats(x.numpy(), mask, False)[:, 0]) if sd is None else np.asarray(sd, np.float64)
            )
            if quiet.any():
                x = less_noise(x, sd, keep=1 / np.sqrt(1 + quiet))
            if noise.any():
                g = torch.Generator().manual_seed(int(cell_id))
                add = torch.as_tensor(np.sqrt(noise) * sd, dtype=x.dtype).view(-1, 1, 1)
                x = x + add * torch.randn(x.shape, generator=g)
        return x.numpy()


class _Imaged:
    """Held-out cells as the network sees them (the run's levelling and normalisation), re-imaged by
    ``change`` if given (``sd``: the noise SD of a change on the network's input); the background is zeroed
    here, after any change (as the training augmentation is)."""

    def __init__(self, dm, rows, change: _Reimaged | _Stored | None = None, sd=None):
        import torch

        from protocell.data.dataset import zeroing_mask

        self.ds = dm.dataset_of(
            dm.store, rows, zero_background=False, reimage=change if change is not None and change.camera else None
        )
        self.after = change if change is not None and not change.camera else None
        self.sd = sd
        self.keep = lambda m: (
            torch.from_numpy(zeroing_mask(m, dm.zero_margin).astype(np.float32))
            if dm.zero_margin
            else torch.from_numpy(m.astype(np.float32))
        )
        self.zero = bool(dm.zero_background)

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        import torch

        x, m, y, cell_id = self.ds[i]
        if self.after is not None:
            x = torch.from_numpy(self.after(x.numpy(), m[0].numpy(), cell_id, self.sd))
        if self.zero:
            x = x * self.keep(m[0].numpy() > 0)[None]
        return x, m, y, cell_id


def _scores(module, cells, batch_size: int = 256) -> np.ndarray:
    import torch
    from torch.utils.data import DataLoader

    from protocell.model.views import averaged

    module.eval()
    out = []
    with torch.no_grad():
        for x, m, _y, _cid in DataLoader(cells, batch_size=batch_size):
            logits = averaged(module.scores, x, m, module.views)[0]  # as the run's own predictions
            out.append(torch.softmax(logits.float(), 1)[:, module.positive].numpy())
    return np.concatenate(out) if out else np.zeros(0)


def held_rows(dm, held: pd.DataFrame, conditions, max_cells: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per condition, the store rows of up to ``max_cells`` of its held-out cells (``held``: cell_id,
    condition), drawn without replacement from ``rng`` in the order of ``conditions``, sorted."""
    row_of = dict(zip(dm.store.manifest["cell_id"].to_numpy(), range(len(dm.store.manifest))))
    rows = {}
    for cond in conditions:
        ids = held.loc[held["condition"] == cond, "cell_id"].to_numpy()
        ids = np.sort(rng.choice(ids, min(max_cells, len(ids)), replace=False)) if len(ids) else ids
        rows[cond] = np.array([row_of[int(c)] for c in ids], dtype=np.int64)
    return rows


def fraction_of(module, cells, fit: dict) -> float:
    """The affected fraction of ``cells`` (a dataset of network inputs) under the run's reference ``fit``."""
    from protocell.evaluate.fraction import mixture_fraction, reference_lr

    return mixture_fraction(reference_lr(_scores(module, cells), fit))


CHANGES: dict[str, tuple[str, _Reimaged]] = {  # name: (what it is, the change)
    "more_noise": ("pixel noise doubled in variance", _Reimaged(noise=1.0)),
    "less_noise": ("pixel noise halved in variance", _Reimaged(quiet=1.0)),
    "softer_focus": (f"focus softened by {FOCUS} px", _Reimaged(blur=FOCUS)),
    "sharper_focus": (f"focus sharpened by {FOCUS} px", _Reimaged(sharpen=FOCUS)),
    "less_light": (f"the camera's noise variance ×{1 + NOISE:g}", _Reimaged(noise=NOISE, camera=True)),
    "more_light": (f"the camera's noise variance ÷{1 + NOISE:g}", _Reimaged(quiet=NOISE, camera=True)),
}


class _Stored:
    """A camera-side ``reimage`` hook that changes nothing and keeps what it is given: the cells as the
    run's camera (and any levelling) left them, before the normalisation."""

    camera = True

    def __init__(self) -> None:
        self.cells: list[tuple[np.ndarray, np.ndarray]] = []

    def __call__(self, crop: np.ndarray, mask: np.ndarray, cell_id: int, sd=None) -> np.ndarray:
        self.cells.append((crop.copy(), mask))
        return crop


def _camera_of(cells, change: _Reimaged | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Stored cells (crop, mask) → (C,) median noise SD and (C, bins) mean radial power of the cells
    normalised to their 1st–99.8th percentiles, after ``change`` if given; None for the power when no cell
    is large enough for a spectrum (``levelling.radial_power``)."""
    from protocell.data.levelling import normalised, radial_power

    noise, power = [], []
    for i, (crop, mask) in enumerate(cells):
        y = normalised(change(crop, mask, i) if change is not None else crop, mask)
        noise.append(imaging_stats(y, mask, False)[:, 0])
        got = radial_power(y, mask, SPECTRUM_EDGES)
        if got is not None:
            power.append(got[0])
    return np.nanmedian(noise, axis=0), (np.mean(power, axis=0) if power else None)


def sampled(dm, rows) -> tuple[np.ndarray | None, list[tuple[np.ndarray, np.ndarray]]]:
    """One read of the cells of ``rows``: (the median noise SD ``imaging_stats`` reads on them as the network
    sees them, (C,) — None without cells; the cells as the camera left them, (crop, mask) for
    ``plate_cameras``)."""
    hook = _Stored()
    cells = _Imaged(dm, rows, hook)
    stats = [
        imaging_stats(x.numpy(), m[0].numpy(), False)[:, 0] for x, m, _, _ in (cells[i] for i in range(len(cells)))
    ]
    return (np.nanmedian(np.stack(stats), axis=0) if stats else None), hook.cells


def plate_cameras(stored: dict[str, list], ref: str, exp: str) -> dict:
    """How this plate's two conditions were imaged, read from their held-out cells (``stored``: a condition's
    cells as the camera left them, ``sampled``), and the change that gives each condition's cells the other's camera: the
    optics blur as σ² against each other from the cells' radial power spectra (``levelling.blur_offsets``:
    the Gaussian roll-off, not the amplitude), then the pixel noise the normalised cells show, read once the
    focus is matched. ``{"blur_px2": (C,) σ²_exp − σ²_ref (None when no cell is large enough for a spectrum:
    then the noise alone is matched), "noise_sd": {cond: (C,)}, "changes": {cond: _Reimaged}}``. The biology
    moves the reading a little: on a plate imaged alike (gain spread 0), all-affected against unaffected cells
    read +0.06 px² blurrier and 7 % less noisy (docs/method.md)."""
    from protocell.data.levelling import blur_offsets

    seen = {cond: _camera_of(stored[cond]) for cond in (ref, exp)}
    spectra = {cond: seen[cond][1] for cond in (ref, exp)}
    blur = None  # cells too small for a spectrum: the noise alone is matched
    if all(v is not None for v in spectra.values()):
        offsets = blur_offsets(spectra, SPECTRUM_EDGES)
        blur = offsets[exp] - offsets[ref]  # σ²_exp − σ²_ref per channel
    apart = np.zeros_like(seen[ref][0]) if blur is None else blur
    changes = {}
    for cond, other, sign in ((ref, exp, 1.0), (exp, ref, -1.0)):
        d = sign * apart  # the blur the other condition's camera adds over this one's
        focus = _Reimaged(blur=np.sqrt(np.maximum(d, 0)), sharpen=np.sqrt(np.maximum(-d, 0)), camera=True)
        focused = _camera_of(stored[cond], focus)[0]
        ratio = (seen[other][0] / np.maximum(focused, 1e-9)) ** 2  # the noise variance to reach the other's
        changes[cond] = _Reimaged(
            blur=focus.blur,
            sharpen=focus.sharpen,
            noise=np.maximum(ratio - 1, 0),
            quiet=np.maximum(1 / ratio - 1, 0),
            camera=True,
        )
    return {"blur_px2": blur, "noise_sd": {c: seen[c][0] for c in (ref, exp)}, "changes": changes}


def _said(change: _Reimaged, other: str) -> str:
    """``change`` in words, as the other condition's camera (a value a channel, separated by /)."""
    each = lambda v: "/".join(f"{x:.2f}" for x in v)  # noqa: E731
    parts = [f"blur +{each(change.blur)} px"] if (change.blur > 0.05).any() else []
    parts += [f"sharpened {each(change.sharpen)} px"] if (change.sharpen > 0.05).any() else []
    parts.append(f"noise variance ×{each((1 + change.noise) / (1 + change.quiet))}")
    return f"the {other} wells' camera ({', '.join(parts)}; a value a channel)"


def imaging_sensitivity(
    module, dm, held: pd.DataFrame, fit: dict, class_names: list[str], max_cells: int = 1000, seed: int = 0
) -> dict:
    """Each condition's affected fraction when its held-out cells are re-imaged a little differently
    (``CHANGES``: on the network's input the condition's median noise SD — measured by ``imaging_stats`` —
    doubled or halved in variance and focus softened or sharpened by ``FOCUS`` px; on the stored image each
    cell's own noise variance raised or lowered by ``NOISE``; ``other_camera``: the other condition's camera,
    ``plate_cameras``); fires when the reference's rises by more than ``IMAGING`` (module doc). ``held``:
    held-out cells (cell_id, condition)."""
    ref, exp = class_names[0], class_names[-1]
    rows = held_rows(dm, held, (ref, exp), max_cells, np.random.default_rng(seed))
    noise, stored = {}, {}
    for cond in (ref, exp):  # one read of up to 200 cells a condition: the input's noise SD and the cameras
        noise[cond], stored[cond] = sampled(dm, rows[cond][:200])
    if min(len(rows[ref]), len(rows[exp])) < MIN_CELLS:
        return check(None, IMAGING, False, "too few held-out cells of a condition")

    def fraction(cond: str, change: _Reimaged | None = None) -> float:
        return fraction_of(module, _Imaged(dm, rows[cond], change, noise[cond]), fit)

    cameras = plate_cameras(stored, ref, exp)
    shifts: dict[str, dict[str, float]] = {}
    why: list[str] = []
    said: dict[str, str] = {}
    for cond, other in ((ref, exp), (exp, ref)):
        base = fraction(cond)
        parts = []
        mine = {**CHANGES, "other_camera": (_said(cameras["changes"][cond], other), cameras["changes"][cond])}
        for name, (words, change) in mine.items():
            moved = fraction(cond, change)
            shifts[f"{cond}/{name}"] = {"from": base, "to": moved, "change": moved - base}
            parts.append(f"{moved:.3f} with {words}")
            said.setdefault(name, words)
        why.append(f"{cond} {base:.3f} → " + ", ".join(parts))
    rises = {name: shifts[f"{ref}/{name}"]["change"] for name in said}
    worst = max(rises, key=lambda name: rises[name])
    fires = rises[worst] > IMAGING
    return check(
        rises[worst],
        IMAGING,
        fires,
        "affected fraction when the held-out cells are imaged a little differently: "
        + "; ".join(why)
        + (
            f": the reference cells, imaged with {said[worst]}, look {rises[worst]:.2f} more affected — "
            "no imaging change gives unaffected cells the exposed state's evidence, so the network reads "
            "imaging, and wells imaged apart (another day, another focus) would change the answer"
            if fires
            else ""
        ),
        shifts=shifts,
        noise_sd={c: np.round(v, 4).tolist() for c, v in noise.items() if v is not None},
        cameras={
            "blur_px2": None if cameras["blur_px2"] is None else np.round(cameras["blur_px2"], 4).tolist(),
            "noise_sd": {c: np.round(v, 4).tolist() for c, v in cameras["noise_sd"].items()},
        },
    )
