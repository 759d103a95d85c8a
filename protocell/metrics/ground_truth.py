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


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float64), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def platt_fit(scores: np.ndarray, targets: np.ndarray, iters: int = 100) -> tuple[float, float]:
    """Platt scaling: a, b of P(y=1 | s) = σ(a·logit(s) + b), by Newton's method on the log loss.

    Fitted on *well* labels of validation cells, it turns a network's cell scores into the
    well-label posterior P(Exp | s). Calling a cell affected when that posterior exceeds 0.5 means
    its score is more likely in Exp than in Ref wells (likelihood ratio 1). Under noisy labels
    (fractions ρ_Exp, ρ_Ref of affected cells, balanced conditions) this is the Bayes call for
    "affected" when half of all cells are affected; with fewer it over-calls where the score
    distributions overlap. It needs unaffected cells to score alike in both conditions."""
    x, y = _logit(scores), np.asarray(targets, np.float64)
    w = np.zeros(2)
    X = np.stack([x, np.ones_like(x)], 1)
    for _ in range(iters):
        p = 1 / (1 + np.exp(-(X @ w)))
        g = X.T @ (p - y)
        H = (X * (p * (1 - p))[:, None]).T @ X + 1e-6 * np.eye(2)
        step = np.linalg.solve(H, g)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    return float(w[0]), float(w[1])


def platt_apply(scores: np.ndarray, a: float, b: float) -> np.ndarray:
    return 1 / (1 + np.exp(-(a * _logit(scores) + b)))


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
    known = (pred["true_label"] >= 0).to_numpy()
    if known.any():
        t = pred["true_label"].to_numpy()[known] == 1
        out.update({"n_cells_true_label": int(known.sum()),
                    "true_label_accuracy": float((call[known] == t).mean()),
                    "true_label_accuracy_argmax": float((raw[known] == t).mean()),
                    "true_label_auroc": auroc(pred["score"].to_numpy()[known], t.astype(int))})
    return out
