"""Metrics of per-cell predictions against well labels and, where it is known, the per-cell truth
(``true_label``: 1 affected, 0 not, −1 unknown; the synthetic wells know it for every cell)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from protocell.stats import auroc


def true_label_metrics(scores, calls, true_label) -> dict:
    """Accuracy of the cell calls (1 = affected) and AUROC of the scores against the true labels,
    over the cells whose truth is known; empty when none is."""
    t = np.asarray(true_label)
    known = t >= 0
    if not known.any():
        return {}
    y = t[known] == 1
    return {
        "n_cells_true_label": int(known.sum()),
        "true_label_accuracy": float((np.asarray(calls)[known].astype(bool) == y).mean()),
        "true_label_auroc": auroc(np.asarray(scores, np.float64)[known], y.astype(int)),
    }


def true_affected_fraction(true_label) -> float | None:
    """Share of affected cells among those whose truth is known (None when none is)."""
    t = np.asarray(true_label)
    known = t >= 0
    return float((t[known] == 1).mean()) if known.any() else None


def balanced_accuracy(called, positive) -> tuple[float, float, float]:
    """(balanced accuracy, recall of the negative class, recall of the positive class) of binary
    calls against binary labels. The mean of the two recalls: on an unbalanced test set (1 Ref well
    against 3 Exp wells) calling every cell Exp scores 0.75 accuracy but 0.5 balanced accuracy.
    A class without cells has recall NaN and the balanced accuracy is the other recall."""
    called, positive = np.asarray(called, bool), np.asarray(positive, bool)
    rec = [float((called[positive == k] == k).mean()) if (positive == k).any() else float("nan") for k in (False, True)]
    return float(np.nanmean(rec)) if not all(np.isnan(rec)) else float("nan"), rec[0], rec[1]


def well_composition(pred: pd.DataFrame, call: np.ndarray) -> list[dict]:
    """One row per test well: plate/well, condition, its cells and the fraction of them called
    positive (affected when calibrated, else Exp by argmax)."""
    df = pred.assign(_call=np.asarray(call, float))
    keys = [c for c in ("plate", "well") if c in df]
    rows = []
    for key, g in df.groupby(keys + ["condition"], sort=True):
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(keys + ["condition"], (str(k) for k in key)))
        rows.append({**row, "n_cells": int(len(g)), "called_fraction": float(g["_call"].mean())})
    return rows


def cell_metrics(pred: pd.DataFrame, positive: int = 1, class_names: list[str] | None = None) -> dict:
    """``pred`` columns: label, pred (raw argmax), score (probability of class ``positive``),
    true_label (−1 unknown), and ``call`` (calibrated cell call, 1 = positive) when calibrated;
    optionally well and condition (then the test composition is reported).

    Well-label metrics use every cell; true-label metrics the cells whose truth is known, with
    "affected" (true_label 1) as the positive class. ``*_accuracy`` uses the calibrated call when
    there is one, ``*_accuracy_argmax`` the raw argmax; ``*_balanced_accuracy`` is the mean of the
    per-class recalls (``well_label_recall``: per class name), the accuracy that an unbalanced test
    set cannot inflate. ``called_fraction``: the share of test cells called positive;
    ``test_composition``: cells and called fraction per test well."""
    raw = (pred["pred"] == positive).to_numpy()
    call = pred["call"].to_numpy().astype(bool) if "call" in pred else raw
    is_pos = (pred["label"] == positive).to_numpy()
    names = list(class_names) if class_names else ["negative", "positive"]
    bal, rec_neg, rec_pos = balanced_accuracy(call, is_pos)
    out = {
        "n_cells": int(len(pred)),
        "well_label_accuracy": float((call == is_pos).mean()),
        "well_label_accuracy_argmax": float((raw == is_pos).mean()),
        "well_label_balanced_accuracy": bal,
        "well_label_balanced_accuracy_argmax": balanced_accuracy(raw, is_pos)[0],
        "well_label_recall": {names[0] if len(names) == 2 else "not positive": rec_neg, names[-1]: rec_pos},
        "well_label_auroc": auroc(pred["score"].to_numpy(), is_pos),
        "called_fraction": float(call.mean()) if len(call) else float("nan"),
    }
    if "well" in pred and "condition" in pred:
        out["test_composition"] = well_composition(pred, call)
    if "true_label" in pred:
        truth = true_label_metrics(pred["score"], call, pred["true_label"])
        if truth:
            truth["true_label_accuracy_argmax"] = true_label_metrics(pred["score"], raw, pred["true_label"])[
                "true_label_accuracy"
            ]
            known = pred["true_label"].to_numpy() >= 0
            truth["true_label_balanced_accuracy"] = balanced_accuracy(
                call[known], pred["true_label"].to_numpy()[known] == 1
            )[0]
            truth["well_cue_auroc"] = well_cue(pred["score"], pred["label"] == positive, pred["true_label"])
            out.update(truth)
    return out


def well_cue(scores, exposed, true_label) -> float:
    """AUROC between the scores of *unaffected* exposed and *unaffected* reference cells: 0.5 when
    the network cannot tell which well an unaffected cell grew in; above it, it reads the well."""
    t = np.asarray(true_label)
    un = t == 0
    return auroc(np.asarray(scores, np.float64)[un], np.asarray(exposed)[un].astype(int))
