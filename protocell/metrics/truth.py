"""Metrics of per-cell predictions against well labels and, where it is known, the per-cell truth
(``true_label``: 1 affected, 0 not, −1 unknown; the synthetic wells know it for every cell)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torchmetrics.functional.classification import binary_auroc


def auroc(scores, targets) -> float:
    """AUROC of ``scores`` for binary ``targets``; NaN when only one class is present."""
    targets = np.asarray(targets)
    if len(np.unique(targets)) < 2:
        return float("nan")
    return float(binary_auroc(torch.tensor(np.asarray(scores), dtype=torch.float64), torch.tensor(targets).long()))


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


def cell_metrics(pred: pd.DataFrame, positive: int = 1) -> dict:
    """``pred`` columns: label, pred (raw argmax), score (probability of class ``positive``),
    true_label (−1 unknown), and ``call`` (calibrated cell call, 1 = positive) when calibrated.

    Well-label metrics use every cell; true-label metrics the cells whose truth is known, with
    "affected" (true_label 1) as the positive class. ``*_accuracy`` uses the calibrated call when
    there is one, ``*_accuracy_argmax`` the raw argmax."""
    raw = (pred["pred"] == positive).to_numpy()
    call = pred["call"].to_numpy().astype(bool) if "call" in pred else raw
    is_pos = (pred["label"] == positive).to_numpy()
    out = {"n_cells": int(len(pred)),
           "well_label_accuracy": float((call == is_pos).mean()),
           "well_label_accuracy_argmax": float((raw == is_pos).mean()),
           "well_label_auroc": auroc(pred["score"].to_numpy(), is_pos)}
    if "true_label" in pred:
        truth = true_label_metrics(pred["score"], call, pred["true_label"])
        if truth:
            truth["true_label_accuracy_argmax"] = true_label_metrics(pred["score"], raw, pred["true_label"])[
                "true_label_accuracy"]
            truth["well_cue_auroc"] = well_cue(pred["score"], pred["label"] == positive, pred["true_label"])
            out.update(truth)
    return out


def well_cue(scores, exposed, true_label) -> float:
    """AUROC between the scores of *unaffected* exposed and *unaffected* reference cells: 0.5 when
    the network cannot tell which well an unaffected cell grew in; above it, it reads the well."""
    t = np.asarray(true_label)
    un = t == 0
    return auroc(np.asarray(scores, np.float64)[un], np.asarray(exposed)[un].astype(int))
