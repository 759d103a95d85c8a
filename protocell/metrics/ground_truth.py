"""Metrics on per-cell predictions, against well labels and (when known) true per-cell labels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torchmetrics.functional.classification import binary_auroc


def auroc(scores: np.ndarray, targets: np.ndarray) -> float:
    if len(np.unique(targets)) < 2:
        return float("nan")
    return float(binary_auroc(torch.tensor(np.asarray(scores), dtype=torch.float64), torch.tensor(np.asarray(targets)).long()))


def cell_metrics(pred: pd.DataFrame, positive: int = 1) -> dict:
    """``pred`` columns: label, pred, score (probability of class ``positive``), true_label (−1 unknown).

    Well-label metrics use every cell; true-label metrics the cells whose truth is known, with
    "affected" (true_label 1) as the positive class."""
    out = {"n_cells": int(len(pred)),
           "well_label_accuracy": float((pred["pred"] == pred["label"]).mean()),
           "well_label_auroc": auroc(pred["score"].to_numpy(), (pred["label"] == positive).to_numpy())}
    known = pred[pred["true_label"] >= 0]
    if len(known):
        t = known["true_label"].to_numpy()
        out.update({"n_cells_true_label": int(len(known)),
                    "true_label_accuracy": float(((known["pred"] == positive).to_numpy() == (t == 1)).mean()),
                    "true_label_auroc": auroc(known["score"].to_numpy(), t)})
    return out
