"""experiments/interval_replay.py: the condition interval, refitted or with the reference fixed, from a run's stored predictions."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd

from protocell.evaluate.fraction import affected_fractions, bootstrap_wells, ci, reference_lr

SCRIPT = Path(__file__).resolve().parents[2] / "experiments" / "interval_replay.py"


def _script():
    spec = importlib.util.spec_from_file_location("interval_replay", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(folder: Path, status: str, diagnostics: dict, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    parts = []
    for split, n_wells in (("test", 4), ("val", 2)):
        for cond, label, share in (("Ref", 0, 0.05), ("Exp", 1, 0.4)):
            for w in range(n_wells):
                truth = (rng.random(80) < share).astype(int)
                score = 1 / (1 + np.exp(-(rng.normal(0, 1, 80) + 3 * truth - 1)))
                well = f"{split}_{cond}{w}"
                parts.append(
                    (
                        split,
                        pd.DataFrame(
                            {"well": well, "condition": cond, "label": label, "score": score, "true_label": truth}
                        ),
                    )
                )
    folder.mkdir()
    for split in ("test", "val"):
        pd.concat([p for s, p in parts if s == split]).to_csv(folder / f"{split}_predictions.csv", index=False)
    (folder / "metrics.json").write_text(
        json.dumps(
            {"class_names": ["Ref", "Exp"], "status": status, "true_label_auroc": 0.9, "diagnostics": diagnostics}
        )
    )
    return folder


def test_both_intervals_are_the_librarys_and_the_status_follows_the_rule(tmp_path):
    replay = _script()
    run = _run(tmp_path / "a", "ok", {"fraction_precision": {"fires": False}})
    rows = replay.replay(run)
    metrics, cells = replay.held_out(run)
    fraction = affected_fractions(cells)
    assert [r["condition"] for r in rows] == ["Ref", "Exp"]
    test = cells[cells["target"]]
    lr = reference_lr(test["score"].to_numpy(), fraction["fit"])
    rng = np.random.default_rng(0)
    for r in rows:
        est = fraction["conditions"][r["condition"]]
        assert (r["estimate"], r["refit_low"], r["refit_high"]) == (est["estimate"], est["ci_low"], est["ci_high"])
        sel = (test["condition"] == r["condition"]).to_numpy()
        assert (r["fixed_low"], r["fixed_high"]) == ci(bootstrap_wells(lr[sel], test["well"].to_numpy()[sel], 200, rng))
        assert r["refit_covers"] == (r["refit_low"] <= r["true"] <= r["refit_high"])
    # 4 test wells a condition: the rule fires only on a half-width > 0.10; nothing else fired, so ok unless it does
    for name in ("refit", "fixed"):
        wide = any((r[f"{name}_high"] - r[f"{name}_low"]) / 2 > 0.10 for r in rows)
        assert rows[0][f"{name}_fires"] == wide
        assert rows[0][f"{name}_status"] == ("warning" if wide else "ok")


def test_a_failed_run_stays_failed_and_another_check_keeps_a_warning(tmp_path):
    replay = _script()
    failed = replay.replay(_run(tmp_path / "f", "failed", {}))
    assert {r["refit_status"] for r in failed} == {r["fixed_status"] for r in failed} == {"failed"}
    other = replay.replay(_run(tmp_path / "w", "warning", {"imaging_sensitivity": {"fires": True}}))
    assert {r["fixed_status"] for r in other} == {"warning"} and other[0]["other_checks"] == "imaging_sensitivity"


def test_real_data_without_truth_is_skipped(tmp_path):
    replay = _script()
    run = _run(tmp_path / "r", "ok", {})
    for split in ("test", "val"):
        p = run / f"{split}_predictions.csv"
        pd.read_csv(p).assign(true_label=-1).to_csv(p, index=False)
    assert replay.replay(run) == []
