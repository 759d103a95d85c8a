"""Statistics every stage uses (the pretrain keep rule, evaluation, the checks, explain): the AUROC and
its standard error. Depends on nothing in protocell."""

from __future__ import annotations

import numpy as np
import torch
from torchmetrics.functional.classification import binary_auroc


def auroc(scores, targets) -> float:
    """AUROC of ``scores`` for binary ``targets``; NaN when only one class is present."""
    targets = np.asarray(targets)
    if len(np.unique(targets)) < 2:
        return float("nan")
    return float(binary_auroc(torch.tensor(np.asarray(scores), dtype=torch.float64), torch.tensor(targets).long()))


def auroc_se(a: float, n_pos: int, n_neg: int) -> float:
    """Standard error of an AUROC ``a`` over ``n_pos`` positives and ``n_neg`` negatives (Hanley &
    McNeil 1982, *The meaning and use of the area under a ROC curve*: the exponential approximation
    Q1 = a / (2 − a), Q2 = 2a² / (1 + a)); NaN without both classes or for a NaN ``a``."""
    if n_pos < 1 or n_neg < 1 or not np.isfinite(a):
        return float("nan")
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    var = (a * (1 - a) + (n_pos - 1) * (q1 - a * a) + (n_neg - 1) * (q2 - a * a)) / (n_pos * n_neg)
    return float(np.sqrt(max(var, 0.0)))


def beats_chance(auroc: float, se: float) -> bool:
    """Does a validation AUROC (exposed score against the well labels) stand above ½ by more than
    chance? By more than two of its standard errors (Hanley & McNeil, ≈ 95 %). Unlike accuracy
    against the majority share it does not move with the share of each condition."""
    return bool(np.isfinite(auroc) and np.isfinite(se) and auroc - 2 * se > 0.5)


def detectable_difference(n_pos: int, n_neg: int, cell_auroc: float = 1.0) -> float:
    """The smallest difference of affected shares, ρ_Exp − ρ_Ref, between the cells of two conditions that
    ``n_pos`` and ``n_neg`` labelled cells can show against chance (AUROC − 2·SE > ½, ``auroc_se``), for a
    score that ranks affected above unaffected cells with AUROC ``cell_auroc``. Against the well labels such
    a score has AUROC ½ + (ρ_Exp − ρ_Ref)·(``cell_auroc`` − ½): an exposed cell outranks a reference cell
    only through the affected cells the two conditions do not share (``beats_chance`` inverted). ∞ when even
    Δ = 1 does not show."""
    if n_pos < 1 or n_neg < 1 or cell_auroc <= 0.5:
        return float("inf")

    def shows(delta: float) -> bool:
        a = 0.5 + delta * (cell_auroc - 0.5)
        return beats_chance(a, auroc_se(a, n_pos, n_neg))

    if not shows(1.0):
        return float("inf")
    lo, hi = 0.0, 1.0
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if shows(mid) else (mid, hi)
    return hi


def validation_power(n_a: int, n_b: int) -> tuple[float, float]:
    """``detectable_difference`` for the validation cells of two conditions (the larger count taken as the
    exposed side, as ``evaluate.status`` does): for a network that tells every affected cell apart, and for
    one that ranks them at cell AUROC 0.9."""
    pos, neg = max(n_a, n_b), min(n_a, n_b)
    return detectable_difference(pos, neg), detectable_difference(pos, neg, 0.9)


def benjamini_hochberg(p: np.ndarray) -> np.ndarray:
    """BH-adjusted p-values (q-values), monotone, capped at 1; NaN p-values stay NaN and do not count."""
    p = np.asarray(p, np.float64)
    out = np.full(len(p), np.nan)
    known = np.flatnonzero(np.isfinite(p))
    n = len(known)
    if n == 0:
        return out
    order = known[np.argsort(p[known])]
    ranked = p[order] * n / np.arange(1, n + 1)
    q = np.minimum.accumulate(ranked[::-1])[::-1]
    out[order] = np.minimum(q, 1.0)
    return out
