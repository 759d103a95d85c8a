"""Replay the label-free checks, the affected fraction and the cell calls on finished runs.

    python experiments/diagnose.py <sweep or run folders…> [--out table.csv]

Everything ``protocell.diagnostics`` and ``protocell.evaluate.fraction`` compute after training reads only the
held-out predictions a run saved (``test_predictions.csv``, ``val_predictions.csv``) and its split,
so both can be replayed with the current code on any finished run without retraining — the way to
measure a check's false-alarm rate and its misses over many runs. The split (which wells trained) is
rebuilt from the run's own config and store. On built-in wells, each row also has the truth:
true-label AUROC, the well cue, the error of each condition's fraction and of its called share.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from protocell.artifacts import RunFolder  # noqa: E402
from protocell.build import datamodule_from_run, load_module, synthetic_spec  # noqa: E402
from protocell.diagnostics import run_diagnostics  # noqa: E402
from protocell.evaluate.calibration import calibrate  # noqa: E402
from protocell.evaluate.predictions import fractions  # noqa: E402
from protocell.evaluate.truth import well_cue  # noqa: E402
from protocell.runs import run_views  # noqa: E402
from protocell.stats import auroc  # noqa: E402


def rebuild(run: Path, store: str, imaging: bool):
    """(the run's DataModule on its store, with its training normalisation; its module or None)."""
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    data = {k: v for k, v in cfg["data"].items() if k != "synthetic"}
    data["path"] = store
    dm = datamodule_from_run(data, str(run / "config.yaml"), mask=cfg.get("mask"))
    dm.setup("fit")
    if not imaging or not (run / "checkpoints" / "last.ckpt").exists():
        return dm, None
    module, state = load_module(run / "checkpoints" / "last.ckpt", run_views(cfg, run / "config.yaml"))
    if type(dm).__qualname__ in state:
        dm.load_state_dict(state[type(dm).__qualname__])
    return dm, module


def replay(run: Path, imaging: bool = False) -> dict | None:
    folder = RunFolder(run)
    if not folder.metrics.exists() or not folder.test_predictions.exists():
        return None
    metrics = json.loads(folder.metrics.read_text())
    cfg = yaml.safe_load(folder.config.read_text())
    test = pd.read_csv(folder.test_predictions, dtype={"well": str})
    val = pd.read_csv(folder.val_predictions, dtype={"well": str}) if folder.val_predictions.exists() else None
    pos = int(test["label"].max())
    classes = [test.loc[test["label"] == k, "condition"].iloc[0] for k in range(pos + 1)]
    held = pd.concat(
        [test.assign(target=True)] + ([val.assign(target=False)] if val is not None else []), ignore_index=True
    )
    frac = fractions(held, pos)
    test = test.drop(columns=[c for c in ("calibrated", "call") if c in test])
    calibrate(test, held, pos, "mixture", frac)
    import torch

    store = (
        torch.load(run / "prototypes.pt", weights_only=True)["store"]
        if (run / "prototypes.pt").exists()
        else str(Path(cfg["paths"]["cache_dir"]) / f"synthetic-{synthetic_spec(OmegaConf.create(cfg)).key()}")
    )
    dm, module = rebuild(run, store, imaging)
    wells = set(dm.store.manifest["well"].astype(str).to_numpy()[dm.rows["train"]])
    diag = run_diagnostics(test, val, wells, classes, frac, module=module, dm=dm if module is not None else None)
    syn = cfg["data"].get("synthetic") or {}
    row = {
        "run": str(run),
        "head": cfg.get("head", "protopnet"),
        "seed": cfg["seed"],
        "plate": syn.get("seed"),
        "exp_fraction": (syn.get("affected_fraction") or {}).get("Exp"),
        "well_effects": "aligned" if (syn.get("well_effects") or {}).get("align") else "chance",
        "split": (metrics.get("split") or {}).get("by", cfg["data"]["split_by"]),
        "status_at_train": metrics.get("status"),
    }
    truth = test["true_label"].to_numpy() if "true_label" in test else np.array([-1])
    if (truth >= 0).all():
        row["true_auroc"] = auroc(test["score"].to_numpy(), (truth == 1).astype(int))
        row["well_cue"] = well_cue(test["score"], test["label"] == pos, truth)
    for cond, est in (frac.get("conditions") or {}).items():
        row[f"frac_{cond}"] = est["estimate"]
        row[f"called_{cond}"] = est.get("called_share")
        if "true" in est:
            row[f"true_{cond}"] = est["true"]
            row[f"err_{cond}"] = est["estimate"] - est["true"]
            row[f"covers_{cond}"] = est["ci_covers_truth"]
    row["fraction_available"] = bool(frac.get("available"))
    for name, d in diag.items():
        row[name] = d["value"]
        row[f"{name}_fires"] = d["fires"]
    row["warning"] = any(d["fires"] for d in diag.values())
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+")
    ap.add_argument("--out", default=None)
    ap.add_argument(
        "--imaging",
        action="store_true",
        help="also the interventions — imaging and surroundings sensitivity (loads each checkpoint)",
    )
    args = ap.parse_args(argv)
    runs = sorted({m.parent for f in args.folders for m in Path(f).rglob("metrics.json")})
    rows = [r for r in (replay(run, args.imaging) for run in runs) if r is not None]
    table = pd.DataFrame(rows)
    if args.out:
        table.to_csv(args.out, index=False)
    with pd.option_context("display.width", 250, "display.max_columns", 60):
        print(table.drop(columns=["run"]).round(3).to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
