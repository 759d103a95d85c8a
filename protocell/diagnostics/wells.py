"""The checks read from held-out predictions alone: do replicate reference wells agree, are training
wells recognised, do the cell calls match the fraction, is the fraction determined (the package's doc)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from protocell.diagnostics.base import MIN_CELLS, check
from protocell.stats import auroc, auroc_se

SPREAD = 0.05  # excess SD of reference wells' fractions beyond their cells' sampling
GAP = 0.05  # well-label AUROC gap, seen wells − unseen wells
CALLS = 0.05  # |called share − fraction| beyond the CI
PRECISION = 0.10  # half-width of a condition's 95 % CI (over wells) beyond which its fraction is not known
MIN_WELLS = 3  # held-out wells a condition needs for a CI over wells to measure how much wells differ


def reference_wells_agree(held: pd.DataFrame, fit: dict, reference: str, n_boot: int = 200, seed: int = 0) -> dict:
    """Excess spread of the held-out reference wells' fractions (``held``: well, condition, score)."""
    from scipy.stats import chi2

    from protocell.evaluate.fraction import bootstrap_cells, mixture_fraction, reference_lr

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
        return check(
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
    return check(
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
        return check(
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
    return check(gap, GAP, fires, why, se=se, auroc_seen=a1, auroc_unseen=a2)


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
    return check(
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


def fraction_precision(fraction: dict) -> dict:
    """Is each condition's affected fraction determined? Its 95 % CI is a bootstrap over the condition's
    held-out wells that refits the reference each time (``protocell.evaluate.fraction``): what another draw of
    wells would have given. Fires when a CI's half-width exceeds ``PRECISION`` or a condition has fewer
    than ``MIN_WELLS`` held-out wells (a bootstrap over one or two wells cannot see how much wells
    differ). The estimate alone would be a confident answer the run does not have. The refit is needed:
    with the reference held fixed the interval covers the truth in 40 % of stored estimates and lets
    wrong runs pass (docs/results.md)."""
    worst, why, loose = 0.0, [], []
    for cond, est in (fraction.get("conditions") or {}).items():
        f, lo, hi, n = est.get("estimate"), est.get("ci_low"), est.get("ci_high"), int(est.get("n_wells", 0))
        if f is None or lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
            loose.append(f"{cond}: no CI")
            continue
        half = (hi - lo) / 2
        worst = max(worst, half)
        why.append(f"{cond} {f:.3f} [{lo:.3f}, {hi:.3f}] over {n} held-out well(s)")
        if half > PRECISION:
            loose.append(f"{cond} is known only to ±{half:.2f}")
        if n < MIN_WELLS:
            loose.append(f"{cond} has {n} held-out well(s), {MIN_WELLS} are needed to see how much wells differ")
    return check(
        worst,
        PRECISION,
        bool(loose),
        "95 % CI over wells: "
        + "; ".join(why)
        + (
            f": {'; '.join(loose)} — the held-out wells do not determine the fraction to ±{PRECISION:.2f}; "
            "read the interval, not the estimate"
            if loose
            else ""
        ),
    )
