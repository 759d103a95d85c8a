"""experiments/pretrain_keep.py replays the pretrain-epoch rules on a run's logged validation metrics."""

import importlib.util
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("pretrain_keep", ROOT / "experiments" / "pretrain_keep.py")
pretrain_keep = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pretrain_keep)


def test_rules_replayed_on_a_run_folder(tmp_path):
    # 4 pretrain epochs then a prototype epoch; validation rows as Lightning's CSV logger writes them
    auroc = [0.55, 0.60, 0.59, 0.52]
    se = [0.02] * 4
    ce = [0.69, 0.75, 0.80, 0.70]  # calibration worsens while the ranking improves
    true = [0.50, 0.80, 0.85, 0.60]
    rows = [
        {"epoch": e, "val/auroc": a, "val/auroc_se": s, "val/ce": c, "val/true_auroc": t}
        for e, (a, s, c, t) in enumerate(zip(auroc, se, ce, true))
    ]
    rows += [{"epoch": e, "train/ce": 0.6} for e in range(4)]  # training rows: no val/*
    rows += [{"epoch": 4, "val/auroc": 0.9, "val/auroc_se": 0.01, "val/ce": 0.3, "val/true_auroc": 0.95}]
    run = tmp_path / "0_plate=exp30"
    run.mkdir()
    pd.DataFrame(rows).to_csv(run / "metrics.csv", index=False)
    (run / ".hydra").mkdir()
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["plate=exp30", "seed=1"]))
    (run / "config.yaml").write_text(
        yaml.safe_dump({"seed": 1, "threads": 2, "data": {"split_by": "well"}, "schedule": {"pretrain_epochs": 4}})
    )
    assert pretrain_keep.run_table(run) is None  # still running: no metrics.json
    (run / "metrics.json").write_text("{}")
    row = pretrain_keep.run_table(run)
    assert (row["ce_epoch"], row["auroc_max_epoch"], row["auroc_tied_epoch"], row["last_epoch"]) == (0, 1, 2, 3)
    assert row["auroc_tied_true"] == 0.85 and row["best_true"] == 0.85  # epoch 4 is not pretrain
    assert (row["plate"], row["split"], row["seed"]) == ("exp30", "well", 1)
