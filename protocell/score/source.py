"""What score reads: the run's calibration and fraction reference, a crop store checked against the
run (the plate map its manifest carries is tabulated by ``protocell.data.plate_map.plate_wells``).

A store is scored with the *run's* data handling (``CellDataModule.dataset_of``): the channels the
network was trained on (by name), its crop size, its normalisation (per cell, or the training
crops' fixed ranges), zeroed background and margin. A store of another crop size is refused: its
cells would be seen at another magnification.
"""

from __future__ import annotations

import json
from pathlib import Path

from protocell.data.store import CropStore
from protocell.errors import ProtocellError


class ScoreError(ProtocellError):
    """Input score cannot use; the message names the file or well and the fix."""


def is_mixture(calibration: dict) -> bool:
    """The cell call is the affected-fraction fit's posterior (``calibration=mixture``, the default)."""
    return str(calibration.get("method", "")).startswith("mixture")


def run_status(metrics_path: Path) -> dict:
    """The run's ``status``, ``reasons`` and ``warnings`` from ``metrics.json``; a ``failed`` run is refused
    (its scores are not a readout: a screen scored with it would report fractions the run itself says are
    meaningless). ``warning`` and ``incomplete`` runs are scored, and the page says so on top."""
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    status = {
        "status": metrics.get("status", "unknown"),
        "reasons": list(metrics.get("reasons") or []),
        "warnings": list(metrics.get("warnings") or []),
    }
    if status["status"] == "failed":
        why = "; ".join(status["reasons"]) or "no reason recorded"
        raise ScoreError(
            f"{metrics_path} says status failed ({why}): a failed run's scores are not a readout; "
            "retrain (fix what the reasons name) and score with a run whose status is ok"
        )
    return status


def run_calibration(metrics_path: Path) -> dict:
    """The cell call train.py stored in ``metrics.json``: ``calibration=mixture`` (each cell's posterior
    at its well's affected fraction, ``protocell.evaluate.fraction``) or a noisy-label calibration (a, b, lo, hi);
    refused when there is none to use."""
    if not metrics_path.exists():
        raise ScoreError(
            f"{metrics_path} is missing: it holds the calibration the affected fraction needs; "
            "pass a run that finished training (train.py writes it after testing)"
        )
    cal = json.loads(metrics_path.read_text()).get("calibration") or {}
    if is_mixture(cal) and cal.get("used", False):
        return cal
    needed = ("a", "b", "lo", "hi", "prior")
    if not all(k in cal for k in needed) or not cal.get("used", False) or not cal.get("ok", False):
        why = (
            "no calibration (calibration=none)"
            if not cal
            else f"calibration '{cal.get('method', '?')}' without {[k for k in needed if k not in cal]}"
            if not all(k in cal for k in needed)
            else f"a noisy-label calibration that is degenerate (ok={cal.get('ok')}, used={cal.get('used')}, "
            f"hi − lo = {cal.get('hi', 0) - cal.get('lo', 0):.3f} on {cal.get('n_cells', '?')} held-out cells)"
        )
        raise ScoreError(
            f"{metrics_path} holds {why}: the affected fraction is the mixing weight of the noisy-label "
            "calibration's likelihood ratios; retrain with calibration=mixture (the default) or noisy_label, with "
            "enough validation wells (data.val_fraction) for a fit with cell-level evidence"
        )
    return cal


def run_reference(run_dir: Path, exp: str) -> dict:
    """The fraction reference (``protocell.evaluate.fraction.fit_reference``) train.py stored in ``metrics.json``
    → ``affected_fraction.fit``; refused when there is none (``exp``: the exposed condition, for the message)."""
    metrics_path = run_dir / "metrics.json"
    frac = json.loads(metrics_path.read_text()).get("affected_fraction") or {} if metrics_path.exists() else {}
    fit = frac.get("fit")
    if fit is None:
        raise ScoreError(
            f"{metrics_path} has no affected-fraction reference (affected_fraction.fit: "
            f"{frac.get('reason', 'absent')}), which every fraction of {exp} cells is measured against: "
            "pass a run that finished training with this protocell (train.py writes it after testing)"
        )
    if not fit.get("ok"):
        raise ScoreError(
            f"{metrics_path}: the affected-fraction reference fitted on the run's held-out cells is "
            f"unusable ({fit.get('reason', 'not ok')}); a run whose scores do not separate any "
            f"exposed cell from the reference cannot measure a fraction — check its metrics first"
        )
    return fit


def open_store(path: str | Path, run_store: CropStore) -> CropStore:
    """The store to score, refused when its crops differ in size from the run's store."""
    store = CropStore(path)
    if store.crop_size != run_store.crop_size:
        raise ScoreError(
            f"{store.root / 'store.json'} holds {store.crop_size} px crops, the run was trained on "
            f"{run_store.crop_size} px crops ({run_store.root}): prepare the plate again with "
            f"cells.crop_size={run_store.crop_size} (the same pixel size), so cells are seen at the "
            "magnification the network learnt"
        )
    originals = store.manifest["aug_of"].to_numpy() < 0
    if not originals.any():
        raise ScoreError(f"{store.root / 'manifest.csv'} lists no original cells (only offline augmentations)")
    return store
