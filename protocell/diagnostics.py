"""Label-free checks that a run's answer can be trusted: does the network read the cells, or the wells?

A network trained on well labels can learn what the wells share instead of what the cells carry —
imaging (gain, focus, noise), plating, position — and then it reports confident, wrong fractions. No
ground truth is needed to see most of it: wells that should agree, and cells it has and has not
seen, tell. Each check returns ``{"value", "threshold", "fires", "why", ...}``; a check that fires
makes the run's status ``warning`` (``evaluate.run_status``) and marks its affected fraction
unreliable. Thresholds are effect sizes a user would act on, and a check fires only when its effect
is also beyond sampling noise (false-alarm rates measured on the robustness matrices: docs/method.md).

- ``reference_wells_agree``: the held-out reference wells' affected fractions spread more than
  their cells explain (a homogeneity test over wells, and the excess SD beyond sampling > 0.05).
  Untreated wells are replicates: a network that reads the cells gives them one fraction.
- ``memorised_wells``: held-out images of *training* wells are told apart (well-label AUROC) better
  than cells of wells never trained on (> 0.05 and beyond 1.96 standard errors): the network
  recognises the wells it trained on. Only where both kinds of held-out cells exist
  (``data.split_by=image``).
- ``imaging_sensitivity``: the held-out cells of each condition re-imaged a little differently, both
  ways on two axes — pixel noise doubled or halved in variance, focus softened or sharpened by 0.35 px
  — and re-scored. It fires when the **reference** cells' affected fraction rises by more than 0.10
  under any of the four: a different image of an unaffected cell is still an unaffected cell, so no
  imaging change can give reference cells the exposed state's evidence — a network that finds it there
  reads imaging, and a reference well imaged that way would be called affected. The exposed cells'
  shifts are recorded but do not fire: a worse image can erase real evidence (an exposed fraction
  falling under noise is what a network that reads the cells does too: 0.05–0.19 on runs that met every
  bar), and with both directions on each axis a network that reads an imaging difference in either
  polarity moves the reference one way or the other. An intervention, not a correlation: it needs no
  spread of imaging within a condition, and no estimate of how this plate's wells differ (which
  per-cell statistics miss: on a plate whose exposed wells were imaged brighter and blurrier, the
  medians of noise and sharpness differed by 0.003 while the network told the conditions' unaffected
  cells apart at AUROC 0.92). Measured: docs/method.md.
- ``calls_match_fraction``: per condition, the share of cells called affected against the fraction
  (the mean posterior of the same fit): apart by more than its CI and 0.05, the scores do not separate
  affected from unaffected cells well enough to call single cells.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from protocell.stats import auroc, auroc_se

SPREAD = 0.05  # excess SD of reference wells' fractions beyond their cells' sampling
GAP = 0.05  # well-label AUROC gap, seen wells − unseen wells
CALLS = 0.05  # |called share − fraction| beyond the CI
IMAGING = 0.10  # rise of the reference fraction when its cells are imaged a little differently
FOCUS = 0.35  # px: the Gaussian blur added ("softer") or removed ("sharper") by the focus changes
MIN_CELLS = 20  # cells a well needs to be judged


def _check(name: str, value: float, threshold: float, fires: bool, why: str, **extra) -> dict:
    return {
        "value": None if value is None or not math.isfinite(value) else float(value),
        "threshold": threshold,
        "fires": bool(fires),
        "why": why,
        **extra,
    }


def reference_wells_agree(held: pd.DataFrame, fit: dict, reference: str, n_boot: int = 200, seed: int = 0) -> dict:
    """Excess spread of the held-out reference wells' fractions (``held``: well, condition, score)."""
    from scipy.stats import chi2

    from protocell.fraction import bootstrap_cells, mixture_fraction, reference_lr

    rng = np.random.default_rng(seed)
    ref = held[held["condition"] == reference]
    rows = []
    for well, g in ref.groupby("well", sort=True):
        if len(g) < MIN_CELLS:
            continue
        lr = reference_lr(g["score"].to_numpy(), fit)
        boots = bootstrap_cells(lr, n_boot, rng)
        rows.append((str(well), mixture_fraction(lr), float(np.nanstd(boots, ddof=1)), len(g)))
    if len(rows) < 3:
        return _check(
            "reference_wells_agree",
            None,
            SPREAD,
            False,
            f"{len(rows)} held-out {reference} well(s) with ≥ {MIN_CELLS} cells: three are needed to judge",
            n_wells=len(rows),
        )
    f = np.array([r[1] for r in rows])
    se = np.maximum(np.array([r[2] for r in rows]), 1e-3)  # a fraction pinned at 0 still has sampling noise
    w = 1 / se**2
    mean = float((w * f).sum() / w.sum())
    q = float((w * (f - mean) ** 2).sum())
    p = float(chi2.sf(q, len(f) - 1))
    excess = math.sqrt(max(0.0, float(np.var(f, ddof=1)) - float(np.mean(se**2))))
    fires = excess > SPREAD and p < 0.01
    why = (
        f"the {len(f)} held-out {reference} wells' affected fractions ({', '.join(f'{v:.2f}' for v in f)}) differ by "
        f"an SD of {excess:.3f} beyond what their cells explain (homogeneity p = {p:.2g}): "
        + (
            "replicate untreated wells get different answers, so the network reads something the wells do not "
            "share (imaging, plating) and the fractions carry it"
            if fires
            else "they agree"
        )
    )
    return _check(
        "reference_wells_agree",
        excess,
        SPREAD,
        fires,
        why,
        p_value=p,
        n_wells=len(f),
        wells={r[0]: round(r[1], 4) for r in rows},
    )


def memorised_wells(held: pd.DataFrame, exposed: str) -> dict:
    """Well-label AUROC on held-out cells of training wells (``seen``) minus that of wells never trained on."""

    def part(cells: pd.DataFrame) -> tuple[float, float, int]:
        y = (cells["condition"] == exposed).to_numpy()
        a = auroc(cells["score"].to_numpy(), y.astype(int))
        return a, auroc_se(a, int(y.sum()), int((~y).sum())), len(cells)

    seen, unseen = held[held["seen"]], held[~held["seen"]]
    if min(seen["condition"].nunique() if len(seen) else 0, unseen["condition"].nunique() if len(unseen) else 0) < 2:
        return _check(
            "memorised_wells",
            None,
            GAP,
            False,
            "every held-out cell comes from wells the network never trained on (or none does): nothing to compare",
            n_seen=len(seen),
            n_unseen=len(unseen),
        )
    (a1, s1, n1), (a2, s2, n2) = part(seen), part(unseen)
    gap, se = a1 - a2, math.sqrt(s1**2 + s2**2)
    fires = gap > GAP and gap > 1.96 * se
    why = (
        f"well-label AUROC {a1:.3f} on held-out images of training wells ({n1} cells) against {a2:.3f} on wells "
        f"never trained on ({n2} cells): "
        + (
            "the network recognises the wells it trained on; what it reports for their cells carries the wells"
            if fires
            else "no sign of memorised wells"
        )
    )
    return _check("memorised_wells", gap, GAP, fires, why, se=se, auroc_seen=a1, auroc_unseen=a2)


def calls_match_fraction(fraction: dict) -> dict:
    """The called share of each condition against its affected fraction (``evaluate``'s metrics)."""
    worst, why = 0.0, []
    for cond, est in (fraction.get("conditions") or {}).items():
        share, f = est.get("called_share"), est.get("estimate")
        if share is None or f is None or not math.isfinite(share):
            continue
        lo, hi = est.get("ci_low", f), est.get("ci_high", f)
        lo, hi = (f, f) if not (math.isfinite(lo) and math.isfinite(hi)) else (lo, hi)
        off = max(lo - share, share - hi, 0.0)
        worst = max(worst, off)
        why.append(f"{cond}: {share:.3f} called against a fraction of {f:.3f} [{lo:.3f}, {hi:.3f}]")
    fires = worst > CALLS
    return _check(
        "calls_match_fraction",
        worst,
        CALLS,
        fires,
        "; ".join(why)
        + (
            ": the scores do not separate affected from unaffected cells well enough to call single cells"
            if fires
            else ""
        ),
    )


# ----------------------------------------------------------------------------- imaging sensitivity


def imaging_stats(image, mask) -> np.ndarray:
    """Per channel (noise, sharpness) of a normalised crop inside its cell (mask eroded by 3 px):
    noise = 1.4826·MAD / √6 of the second differences along rows and columns (the SD of white pixel
    noise: they cancel any linear gradient, and the MAD ignores the few steps of structure), sharpness =
    mean |Laplacian| after a σ = 0.5 px smoothing (focus). (C, S, S), (S, S) → (C, 2)."""
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
    that kernel, bounded: its response at σ = 0.35 never falls below 0.87), reflect-padded so the crop's
    edges do not wrap: the mirror of "focus softened by σ"."""
    import torch

    pad = 8
    big = _reflect_pad(x.double(), pad)
    gain = 1.0 / (_blur_response(sigma, big.shape[-2])[:, None] * _blur_response(sigma, big.shape[-1])[None, :])
    out = torch.fft.ifft2(torch.fft.fft2(big) * gain).real
    return out[:, pad:-pad, pad:-pad].to(x.dtype)


def less_noise(x, sd):
    """(C, H, W), each channel's white pixel-noise SD ``sd`` (C,) → the image with that noise's variance
    about halved, the mirror of "noise doubled in variance": a spectral-subtraction estimate of the signal
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
    out = signal + (big - signal) / math.sqrt(2)
    return out[:, pad:-pad, pad:-pad].to(x.dtype)


class _Imaged:
    """Held-out cells as the network sees them, with an imaging change applied before the background is
    zeroed (as the training augmentation is): ``noise`` (C,) Gaussian SD added (each cell's noise from its
    own seeded generator), ``quiet`` (C,) the noise SD whose variance ``less_noise`` halves, ``blur`` σ in
    px of a Gaussian blur, ``sharpen`` σ in px of one undone (``sharper``)."""

    def __init__(self, dm, rows, noise=None, blur: float = 0.0, quiet=None, sharpen: float = 0.0):
        import torch

        from protocell.data.dataset import CellDataset, zeroing_mask

        self.ds = CellDataset(
            dm.store,
            rows,
            dm.channel_index,
            dm.crop_size,
            dm.norm_lo,
            dm.norm_hi,
            False,
            False,
            dm.seed,
            per_cell=dm.normalize == "cell",
        )
        self.keep = lambda m: (
            torch.from_numpy(zeroing_mask(m, dm.zero_margin).astype(np.float32))
            if dm.zero_margin
            else torch.from_numpy(m.astype(np.float32))
        )
        self.zero = bool(dm.zero_background)
        self.noise = None if noise is None else torch.as_tensor(np.asarray(noise), dtype=torch.float32).view(-1, 1, 1)
        self.quiet = None if quiet is None else np.asarray(quiet, dtype=np.float64)
        self.blur, self.sharpen = float(blur), float(sharpen)

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        import torch
        from torchvision.transforms.functional import gaussian_blur

        x, m, y, cell_id = self.ds[i]
        if self.blur > 0.05:
            k = 2 * int(np.ceil(3 * self.blur)) + 1
            x = gaussian_blur(x, [k, k], [self.blur, self.blur])
        if self.sharpen > 0.05:
            x = sharper(x, self.sharpen)
        if self.quiet is not None:
            x = less_noise(x, self.quiet)
        if self.noise is not None:
            g = torch.Generator().manual_seed(int(cell_id))
            x = x + self.noise * torch.randn(x.shape, generator=g)
        if self.zero:
            x = x * self.keep(m[0].numpy() > 0)[None]
        return x, m, y, cell_id


def _scores(module, cells, batch_size: int = 256) -> np.ndarray:
    import torch
    from torch.utils.data import DataLoader

    module.eval()
    out = []
    with torch.no_grad():
        for x, m, _y, _cid in DataLoader(cells, batch_size=batch_size):
            out.append(torch.softmax(module.scores(x, m)[0].float(), 1)[:, module.positive].numpy())
    return np.concatenate(out) if out else np.zeros(0)


CHANGES = {  # name: (what it is, _Imaged's argument: "sd" is the condition's own median noise SD)
    "more_noise": ("pixel noise doubled in variance", {"noise": "sd"}),
    "less_noise": ("pixel noise halved in variance", {"quiet": "sd"}),
    "softer_focus": (f"focus softened by {FOCUS} px", {"blur": FOCUS}),
    "sharper_focus": (f"focus sharpened by {FOCUS} px", {"sharpen": FOCUS}),
}


def imaging_sensitivity(
    module, dm, held: pd.DataFrame, fit: dict, class_names: list[str], max_cells: int = 1000, seed: int = 0
) -> dict:
    """Each condition's affected fraction when its held-out cells are re-imaged a little differently
    (``CHANGES``: noise doubled or halved in variance — the noise SD each condition's cells show,
    measured by ``imaging_stats`` — and focus softened or sharpened by ``FOCUS`` px); fires when the
    reference's rises by more than ``IMAGING`` (module doc). ``held``: held-out cells (cell_id,
    condition)."""
    from protocell.fraction import mixture_fraction, reference_lr

    rng = np.random.default_rng(seed)
    row_of = dict(zip(dm.store.manifest["cell_id"].to_numpy(), range(len(dm.store.manifest))))
    ref, exp = class_names[0], class_names[-1]
    rows, noise = {}, {}
    for cond in (ref, exp):
        ids = held.loc[held["condition"] == cond, "cell_id"].to_numpy()
        ids = np.sort(rng.choice(ids, min(max_cells, len(ids)), replace=False)) if len(ids) else ids
        rows[cond] = np.array([row_of[int(c)] for c in ids], dtype=np.int64)
        plain = _Imaged(dm, rows[cond][:200])
        noise[cond] = (
            np.nanmedian(
                np.stack(
                    [
                        imaging_stats(x.numpy(), m[0].numpy())[:, 0]
                        for x, m, _, _ in (plain[i] for i in range(len(plain)))
                    ]
                ),
                axis=0,
            )
            if len(plain)
            else None
        )
    if min(len(rows[ref]), len(rows[exp])) < MIN_CELLS:
        return _check("imaging_sensitivity", None, IMAGING, False, "too few held-out cells of a condition")

    def fraction(cond: str, **change) -> float:
        return mixture_fraction(reference_lr(_scores(module, _Imaged(dm, rows[cond], **change)), fit))

    shifts, why = {}, []
    for cond in (ref, exp):
        base = fraction(cond)
        parts = []
        for name, (said, change) in CHANGES.items():
            moved = fraction(cond, **{k: noise[cond] if v == "sd" else v for k, v in change.items()})
            shifts[f"{cond}/{name}"] = {"from": base, "to": moved, "change": moved - base}
            parts.append(f"{moved:.3f} with {said}")
        why.append(f"{cond} {base:.3f} → " + ", ".join(parts))
    rises = {name: shifts[f"{ref}/{name}"]["change"] for name in CHANGES}
    worst = max(rises, key=rises.get)
    fires = rises[worst] > IMAGING
    return _check(
        "imaging_sensitivity",
        rises[worst],
        IMAGING,
        fires,
        "affected fraction when the held-out cells are imaged a little differently: "
        + "; ".join(why)
        + (
            f": the reference cells, imaged with {CHANGES[worst][0]}, look {rises[worst]:.2f} more affected — "
            "no imaging change gives unaffected cells the exposed state's evidence, so the network reads "
            "imaging, and wells imaged apart (another day, another focus) would change the answer"
            if fires
            else ""
        ),
        shifts=shifts,
        noise_sd={c: np.round(v, 4).tolist() for c, v in noise.items() if v is not None},
    )


def run_diagnostics(
    test: pd.DataFrame,
    val: pd.DataFrame | None,
    train_wells: set[str],
    class_names: list[str],
    fraction: dict,
    n_boot: int = 200,
    module=None,
    dm=None,
) -> dict:
    """Every check on a finished run's held-out predictions (``evaluate``'s test and validation tables;
    ``train_wells``: the wells with training cells); with the trained ``module`` and its DataModule
    ``dm``, the imaging sensitivity too."""
    held = pd.concat([test] + ([val] if val is not None else []), ignore_index=True)
    held = held.assign(seen=held["well"].astype(str).isin(train_wells))
    out = {"memorised_wells": memorised_wells(held, class_names[-1])}
    if fraction.get("available"):
        out["reference_wells_agree"] = reference_wells_agree(held, fraction["fit"], class_names[0], n_boot)
        out["calls_match_fraction"] = calls_match_fraction(fraction)
        if module is not None and dm is not None:
            out["imaging_sensitivity"] = imaging_sensitivity(module, dm, held, fraction["fit"], class_names)
    return out
