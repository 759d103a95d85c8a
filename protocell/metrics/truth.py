"""Ground-truth metrics of explain's cell scores, for data whose per-cell truth is known
(``true_label``: 1 affected, 0 not, −1 unknown; the synthetic wells know it for every cell)."""

from __future__ import annotations

import numpy as np

from protocell.metrics.ground_truth import auroc


def true_label_metrics(scores, calls, true_label) -> dict:
    """Accuracy of the cell calls (1 = affected) and AUROC of the scores against the true labels,
    over the cells whose truth is known; empty when none is."""
    t = np.asarray(true_label)
    known = t >= 0
    if not known.any():
        return {}
    y = t[known] == 1
    return {"n_cells_true_label": int(known.sum()),
            "true_label_accuracy": float((np.asarray(calls)[known].astype(bool) == y).mean()),
            "true_label_auroc": auroc(np.asarray(scores, np.float64)[known], y.astype(int))}


def true_affected_fraction(true_label) -> float | None:
    """Share of affected cells among those whose truth is known (None when none is)."""
    t = np.asarray(true_label)
    known = t >= 0
    return float((t[known] == 1).mean()) if known.any() else None
