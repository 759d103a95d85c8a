"""Predictions → table → metrics: ``predictions_frame`` turns the module's predict outputs into one row per
cell (ids, labels, Exp score, minimum distance to every prototype) joined with the manifest; ``fractions``
estimates the affected fraction from the held-out cells' well labels (no ground truth involved,
``protocell.evaluate.fraction``); ``evaluate`` builds the test and validation tables, the cell call
(``protocell.evaluate.calibration``) and the test metrics (``protocell.evaluate.truth``).
"""

from __future__ import annotations

import pandas as pd
import torch

from protocell.artifacts import positive_class
from protocell.evaluate.calibration import calibrate


def predictions_frame(batches: list[dict], manifest: pd.DataFrame, class_names: list[str]) -> pd.DataFrame:
    """One row per predicted cell: cell_id, label, pred (argmax), score (P(Exp)), min_d_j, and the
    manifest's image_id, well, condition, true_label."""
    cat = {k: torch.cat([b[k] for b in batches]) for k in batches[0]}
    probs = cat["probs"].numpy()
    df = pd.DataFrame(
        {
            "cell_id": cat["cell_id"].numpy(),
            "label": cat["label"].numpy(),
            "pred": probs.argmax(1),
            "score": probs[:, positive_class(class_names)],
        }
    )
    for j in range(cat["min_distances"].shape[1] if "min_distances" in cat else 0):
        df[f"min_d_{j}"] = cat["min_distances"][:, j].numpy()
    info = manifest.set_index("cell_id")[["image_id", "well", "condition", "true_label"]]
    return df.join(info, on="cell_id")


def evaluate(
    test_batches: list[dict],
    val_batches: list[dict],
    manifest: pd.DataFrame,
    class_names: list[str],
    method: str = "mixture",
    n_boot: int = 200,
) -> tuple[pd.DataFrame, pd.DataFrame | None, dict]:
    """Test and validation tables, the cell call, and the test metrics.

    The affected fraction of each condition and test well is estimated from the *held-out* cells —
    validation and test cells, whose scores the network never trained on — and their well labels (no
    ground truth, ``protocell.evaluate.fraction``); the cell call comes from the same fit (``calibrate``).
    Returns (test table, validation table or None, metrics with ``calibration`` and ``affected_fraction``)."""
    from protocell.evaluate.truth import cell_metrics

    pos = positive_class(class_names)
    test = predictions_frame(test_batches, manifest, class_names)
    val = predictions_frame(val_batches, manifest, class_names) if val_batches else None
    held_out = pd.concat(
        [test.assign(target=True)] + ([val.assign(target=False)] if val is not None else []), ignore_index=True
    )
    fraction = fractions(held_out, pos, n_boot)
    calibration = calibrate(test, held_out, pos, method, fraction)
    metrics = {**cell_metrics(test, positive=pos, class_names=class_names), "calibration": calibration}
    metrics["affected_fraction"] = fraction
    return test, val, metrics


def fractions(held_out: pd.DataFrame, pos: int, n_boot: int = 200) -> dict:
    """The affected fraction per condition and test well (``protocell.evaluate.fraction``), or why there is none."""
    from protocell.evaluate.fraction import affected_fractions

    cols = ["well", "condition", "score", "target"] + (["true_label"] if "true_label" in held_out else [])
    cells = held_out[cols].assign(exposed=(held_out["label"] == pos).to_numpy())
    return affected_fractions(cells, n_boot=n_boot)
