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
