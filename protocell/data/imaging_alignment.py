"""``data.level_imaging=auto``: level the wells' imaging only when their optics blur lines up with the condition.

Why. A network trained against well labels reads whatever separates the conditions' wells; when the exposed
wells were imaged blurrier or sharper (another day, their own columns) it reads the focus, not the cell
(docs/results.md, "Wells imaged differently"). Levelling (``protocell.data.levelling``) removes that, at a
price: every cell is read at the blurriest and noisiest well's imaging, and a levelled run's fraction is
unconfirmed (``evaluate.status.LEVELLING_DOUBT``). So ``auto`` levels only a plate that needs it.

The test, label-aware but blind to cells' labels: levelling's own reading of each labelled well's optics blur
(σ²_well − σ²_pool per channel, ``levelling.blur_offsets``), and over wells

- the separation of the two conditions: for each channel |AUROC − ½| of the wells' readings, the largest over
  channels; its p-value from ``PERMUTATIONS`` shuffles of the condition among the wells of each plate (the
  largest over channels is shuffled too, so testing several channels costs nothing in false alarms);
- the size: the difference of the two conditions' median readings, in px², the *smallest* over channels (0
  when they differ in sign): the optics blur every channel of a field, a biological change the structures
  one channel shows.

It fires when p < ``ALPHA`` (with 4 wells a condition only a complete separation reaches it: p = 2/70)
and every channel's difference is at least ``BLUR_FLOOR``, in the same direction: a focus difference of
σ 0.25 px, half the variance of the focus change the imaging check probes every run with (0.35 px). Below
it lie the estimator's error (0.012 px²) and the shift the biology itself gives the reading: on built-in
plates imaged alike the exposed wells read 0.02–0.03 px² blurrier in the channel with the planted change
(p down to 0.0003) and not in the other, BBBC013's inhibited wells 0.026 / 0.044 px² (p = 0.02). The pixel noise is read but not tested: after per-cell
normalisation it moves with the cells' brightness pattern — BBBC013's inhibited wells read 24 % noisier in
the GFP channel, where FKHR moved into the nucleus — so it cannot tell a camera from the biology. A plate
whose wells differ in gain or read noise alone is left to the imaging check (``imaging_sensitivity``).
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)

ALPHA = 0.05  # permutation p-value below which the wells' blur is taken to line up with the condition
BLUR_FLOOR = 0.35**2 / 2  # px²: the smallest blur difference between the conditions' wells that is levelled
PERMUTATIONS = 4000


def _aurocs(values: np.ndarray, exposed: np.ndarray) -> np.ndarray:
    """(C,) AUROC of each channel of (wells, C) ``values``, ``exposed`` wells against the others (ties halved)."""
    a, b = values[exposed][:, None, :], values[~exposed][None, :, :]
    return (a > b).mean(axis=(0, 1)) + (a == b).mean(axis=(0, 1)) / 2


def _separation(values: np.ndarray, exposed: np.ndarray) -> float:
    """max over channels of |AUROC − ½| (``_aurocs``)."""
    return float(np.max(np.abs(_aurocs(values, exposed) - 0.5)))


def lines_up(offsets: dict, exposed_wells: dict, plates: dict, channels: list[str], names: tuple, seed: int) -> dict:
    """Does the optics blur of the labelled wells line up with their condition? ``offsets`` {well: (C,) σ²
    against the pool} (``LevellingPlan.offsets``), ``exposed_wells`` {well: bool} the wells with a condition
    (True: the exposed one), ``plates`` {well: plate}, ``names`` (reference, exposed). JSON-able: per channel the AUROC and the exposed − reference difference
    of the median readings, ``p``, ``fires`` and a sentence, ``why``."""
    wells = sorted(exposed_wells)
    exposed = np.array([bool(exposed_wells[w]) for w in wells])
    values = np.array([offsets[w] for w in wells], np.float64)
    if exposed.all() or not exposed.any():
        return {"fires": False, "p": None, "why": "one condition only among the labelled wells: nothing to compare"}
    observed = _separation(values, exposed)
    rng = np.random.default_rng(seed)
    strata = [np.flatnonzero(np.array([plates[w] == p for w in wells])) for p in sorted(set(plates.values()))]
    beaten = 0
    for _ in range(PERMUTATIONS):
        shuffled = exposed.copy()
        for idx in strata:
            shuffled[idx] = exposed[rng.permutation(idx)]
        beaten += _separation(values, shuffled) >= observed - 1e-12
    p = (1 + beaten) / (1 + PERMUTATIONS)
    diff = np.median(values[exposed], axis=0) - np.median(values[~exposed], axis=0)
    auroc = _aurocs(values, exposed)
    # the optics blur every channel alike: the smallest difference, in one direction, is the camera's share
    large = float(np.min(np.abs(diff))) if (diff > 0).all() or (diff < 0).all() else 0.0
    fires = p < ALPHA and large >= BLUR_FLOOR
    n = f"{int(exposed.sum())} {names[1]} and {int((~exposed).sum())} {names[0]} wells"
    sizes = ", ".join(f"{c} {d:+.3f} px²" for c, d in zip(channels, diff))
    if fires:
        why = (
            f"the optics blur of the {n} lines up with the condition ({names[1]} − {names[0]}: {sizes}; permutation "
            f"p = {p:.4f} < {ALPHA}, every channel at least {BLUR_FLOOR:.3f} px² apart)"
        )
    else:
        short = (
            f"p = {p:.4f} ≥ {ALPHA}"
            if p >= ALPHA
            else f"smallest difference over the channels, in one direction, {large:.3f} < {BLUR_FLOOR:.3f} px²"
        )
        why = f"the optics blur of the {n} does not line up with the condition ({sizes}; {short}): not levelled"
    return {
        "fires": bool(fires),
        "p": round(float(p), 5),
        "separation": round(observed, 4),
        "channels": {
            c: {"auroc": round(float(u), 4), "exposed_minus_reference_px2": round(float(d), 4)}
            for c, u, d in zip(channels, auroc, diff)
        },
        "alpha": ALPHA,
        "floor_px2": round(BLUR_FLOOR, 4),
        "why": why,
    }


def store_lines_up(store, originals: np.ndarray, channel_index: list[int], class_names: list, seed: int):
    """(``lines_up`` on the labelled wells among ``originals`` of ``store`` (the last class the exposed one), their
    blur read from at most ``levelling.CELLS_PER_WELL`` cells a well drawn with ``seed``; the wells' sampled rows and
    spectra (``levelling.well_spectra``) when the labelled wells are all of ``originals``' wells — what
    ``levelling.estimate`` would read again — else None)."""
    from protocell.data import levelling
    from protocell.data.store import well_key

    labelled = originals & (store.manifest["label"].to_numpy() >= 0)
    m = store.manifest[labelled]
    keys = well_key(m).to_numpy()
    picks, spectra = levelling.well_spectra(store, np.flatnonzero(labelled), channel_index, seed)
    verdict = lines_up(
        levelling.blur_offsets(spectra, levelling.EDGES),
        dict(zip(keys, m["label"].to_numpy() == len(class_names) - 1)),
        dict(zip(keys, m["plate"].astype(str))),
        [str(store.channels[i]) for i in channel_index],
        (str(class_names[0]), str(class_names[-1])),
        seed,
    )
    return verdict, ((picks, spectra) if labelled.sum() == originals.sum() else None)


def levelling_plan(
    store, originals: np.ndarray, channel_index: list[int], class_names: list, seed: int, auto: bool, normalize: str
):
    """``data.level_imaging`` (true or auto) → (the ``LevellingPlan`` or None, the test or None). The plan is
    made label free, like normalisation, over every well of the store (the scored ones too); ``auto`` first
    tests the labelled wells' blur readings against their condition (``lines_up``; the last class is the
    exposed one) and makes the plan only when it fires — and ``normalize`` is ``cell``: levelling reads and adds
    pixel noise on cells normalised one by one, so with another normalisation a test that fires is said (the
    run's status takes it as a doubt) and nothing is levelled."""
    from protocell.data import levelling

    verdict, read = None, None
    if auto:
        verdict, read = store_lines_up(store, originals, channel_index, class_names, seed)
        if verdict["fires"]:
            verdict["levelled"] = normalize == "cell"
            verdict["why"] += (
                ": every well is levelled to the blurriest and noisiest well's imaging"
                if verdict["levelled"]
                else f", and it is not levelled: levelling needs data.normalize=cell (this run: {normalize}); set "
                "data.normalize=cell, or read the answer as possibly the wells' imaging"
            )
        log.info("data.level_imaging=auto: %s", verdict["why"])
        if not verdict.get("levelled"):
            return None, verdict
    plan = levelling.estimate(store, np.flatnonzero(originals), channel_index, seed, read=read)
    log.info("imaging levelling (data.level_imaging): %s", plan.summary())
    return plan, verdict
