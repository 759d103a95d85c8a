"""One table from many runs: factors, accuracy, ground-truth checks and wall time, mean ± sd over seeds
(``experiments/compare.py`` is its command line; ``experiments/robustness.py`` and others read runs with it).

    python experiments/compare.py outputs/multirun/grid_cpu                 # a multirun folder
    python experiments/compare.py outputs/train/run_a outputs/train/run_b   # or run folders
    python experiments/compare.py outputs/multirun/grid_cpu --out outputs/multirun/grid_cpu/comparison

A run folder is any folder holding ``metrics.json`` (train.py writes it last, so a folder without it
is an unfinished run: reported on stderr and left out). Per run it reads

- the factors: the Hydra choices (``.hydra/hydra.yaml``: backbone, mask, last_layer, experiment …)
  and the command-line overrides (``.hydra/overrides.yaml``), else ``config.yaml``; ``seed`` is the
  replicate, every other setting that differs between the runs is a factor column;
- ``metrics.json``: well-label and true-label accuracy and AUROC, the affected fraction of Exp cells
  that the noisy-label cell call estimates (``calibration.rho_exp``), training wall time;
- ``explain/explain_metrics.json`` when explain ran (columns stay empty otherwise): the localisation
  share of the Exp prototypes (``exp_prototype_texture_share_mean``: of each Exp prototype's 20
  nearest training patches, the share whose box overlaps the planted change), the share of
  prototypes whose max activation lies in background, the affected-fraction error;
- ``explain/prototype_differences.csv`` when present: the share of prototypes whose Ref/Exp
  difference is significant (q < 0.05, well-level test with FDR) — how dense the difference is.

Writes ``<out>.md`` (summary: mean ± sd over seeds per factor combination), ``<out>.csv`` (the same
numbers, mean and sd in separate columns) and ``<out>_runs.csv`` (one row per run); prints the
Markdown table.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

# column → where to find it: (file, candidate keys in order; dotted keys go into nested dicts)
METRICS = {
    "well_label_accuracy": ("metrics", ["well_label_accuracy"]),
    "well_label_auroc": ("metrics", ["well_label_auroc"]),
    "true_label_accuracy": ("metrics", ["true_label_accuracy"]),
    "true_label_auroc": ("metrics", ["true_label_auroc"]),
    "well_cue_auroc": ("metrics", ["well_cue_auroc"]),
    "localisation_share": ("explain", ["exp_prototype_texture_share_mean"]),
    "background_prototype_share": ("explain", ["background_prototype_share"]),
    "distinct_source_patches": ("explain", ["distinct_source_patches"]),
    "tied_prototypes": ("explain", ["prototypes_with_tied_nearest"]),
    "exp_prototype_up_on_change": ("explain", ["has_exp_prototype_up_and_on_change"]),
    "affected_fraction_error": ("fraction", ["error"]),
    "affected_fraction_ci_covers": ("fraction", ["ci_covers_truth"]),
    "significant_prototype_share": ("differences", []),
    "train_seconds": ("metrics", ["train_seconds"]),
}
# factors every table shows, in this order, when the runs have them
MAIN_FACTORS = ["experiment", "backbone", "mask", "last_layer"]
# settings that never make a factor: bookkeeping, not design
IGNORED = {
    "seed",
    "threads",
    "resume",
    "explain",
    "hydra.run.dir",
    "hydra.sweep.dir",
    "hydra.sweep.subdir",
    "paths.output_dir",
    "paths.cache_dir",
    "trainer.enable_progress_bar",
    "logger",
    "data.synthetic.seed",
}
SIGNIFICANT_Q = 0.05


class CompareError(ValueError):
    """A folder that holds no runs, or a run file that cannot be read."""


def find_runs(paths: list[str | Path]) -> tuple[list[Path], list[Path]]:
    """Finished run folders (with metrics.json) under ``paths``, and unfinished ones (config, no metrics)."""
    done, unfinished = set(), set()
    for p in map(Path, paths):
        if not p.is_dir():
            raise CompareError(f"{p} is not a folder: pass run folders or multirun folders")
        done |= {m.parent for m in p.rglob("metrics.json") if m.parent.name != "explain"}
        unfinished |= {c.parent for c in p.rglob("config.yaml") if c.parent.name != ".hydra"}
    unfinished -= done
    if not done:
        raise CompareError(f"no finished run (a folder with metrics.json) under {', '.join(map(str, paths))}")
    return sorted(done), sorted(unfinished)


def _get(d: dict, dotted: str):
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


def _number(v):
    if isinstance(v, bool):
        return float(v)
    if v is None:
        return None
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) else None


def _read_json(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CompareError(f"{path} is not valid JSON ({e}); re-run that run or leave its folder out") from e


def mask_name(mask: dict | None) -> str | None:
    """conf/mask option from its two switches (for runs without .hydra/)."""
    if not isinstance(mask, dict):
        return None
    if not mask.get("distance_term"):
        return "off"
    return "on" if mask.get("zero_background") else "distance_only"


def run_factors(run: Path) -> dict:
    """Hydra choices and command-line overrides of a run; config.yaml as the fallback."""
    out: dict = {}
    cfg = yaml.safe_load((run / "config.yaml").read_text()) if (run / "config.yaml").exists() else {}
    hydra_file = run / ".hydra" / "hydra.yaml"
    if hydra_file.exists():
        choices = _get(yaml.safe_load(hydra_file.read_text()) or {}, "hydra.runtime.choices") or {}
        out.update({k: v for k, v in choices.items() if not k.startswith("hydra/") and v is not None})
    overrides = run / ".hydra" / "overrides.yaml"
    if overrides.exists():
        for item in yaml.safe_load(overrides.read_text()) or []:
            key, _, value = str(item).lstrip("+~").partition("=")
            if "/" not in key and key not in out:  # group choices are already in `out`
                out[key] = value
    out.setdefault("backbone", _get(cfg, "backbone.name"))
    out.setdefault("mask", mask_name(cfg.get("mask")))
    out.setdefault("last_layer", _get(cfg, "last_layer.mode"))
    out.setdefault("head", cfg.get("head", "protopnet"))
    seed = cfg.get("seed", out.get("seed"))
    out["seed"] = int(seed) if seed is not None else None
    return out


def significant_share(run: Path) -> float | None:
    path = run / "explain" / "prototype_differences.csv"
    if not path.exists():
        return None
    df = pd.read_csv(path)
    if "q_value" not in df or df.empty:
        return None
    return float((df["q_value"] < SIGNIFICANT_Q).mean())


def exposed_fraction(metrics: dict) -> dict:
    """The affected-fraction record of the exposed condition (the last one listed)."""
    conditions = _get(metrics, "affected_fraction.conditions") or {}
    return list(conditions.values())[-1] if conditions else {}


def run_row(run: Path) -> dict:
    metrics = _read_json(run / "metrics.json")
    sources = {
        "metrics": metrics,
        "explain": _read_json(run / "explain" / "explain_metrics.json"),
        "fraction": exposed_fraction(metrics),
    }
    row = {"run": str(run), **run_factors(run)}
    for col, (src, keys) in METRICS.items():
        if src == "differences":
            row[col] = significant_share(run)
            continue
        row[col] = next((v for v in (_number(_get(sources[src], k)) for k in keys) if v is not None), None)
    return row


def factor_columns(runs: pd.DataFrame) -> list[str]:
    """The main factors present, then every other setting that differs between the runs."""
    candidates = [c for c in runs.columns if c not in METRICS and c not in ("run", "seed") and c not in IGNORED]
    varying = [c for c in candidates if runs[c].astype(str).nunique() > 1]
    return [c for c in MAIN_FACTORS if c in candidates] + sorted(c for c in varying if c not in MAIN_FACTORS)


def summarise(runs: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Mean and sd over seeds per factor combination (sd: ddof=1, empty for one seed)."""
    factors = factor_columns(runs)
    keyed = runs.assign(**{f: runs[f].astype(str) for f in factors})
    cols = [c for c in METRICS if c in runs]
    rows = []
    for key, g in keyed.groupby(factors, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(factors, key))
        row["seeds"] = len(g)
        for c in cols:
            v = pd.to_numeric(g[c], errors="coerce").dropna()
            row[f"{c}_mean"] = float(v.mean()) if len(v) else None
            row[f"{c}_sd"] = float(v.std(ddof=1)) if len(v) > 1 else None
        rows.append(row)
    return pd.DataFrame(rows), factors


def _cell(mean, sd, digits: int) -> str:
    if mean is None or pd.isna(mean):
        return ""
    return f"{mean:.{digits}f}" + ("" if sd is None or pd.isna(sd) else f" ± {sd:.{digits}f}")


def markdown(summary: pd.DataFrame, factors: list[str]) -> str:
    labels = {
        "well_label_accuracy": "well acc",
        "well_label_auroc": "well AUROC",
        "true_label_accuracy": "true acc",
        "true_label_auroc": "true AUROC",
        "localisation_share": "localisation",
        "background_prototype_share": "bg protos",
        "affected_fraction_error": "affected-frac err",
        "affected_fraction_ci_covers": "CI covers",
        "well_cue_auroc": "well cue",
        "distinct_source_patches": "distinct sources",
        "tied_prototypes": "tied protos",
        "exp_prototype_up_on_change": "Exp proto up & on change",
        "significant_prototype_share": "signif. protos",
        "train_seconds": "train s",
    }
    metrics = [c for c in METRICS if f"{c}_mean" in summary and summary[f"{c}_mean"].notna().any()]
    head = factors + ["seeds"] + [labels[c] for c in metrics]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for _, r in summary.iterrows():
        cells = [str(r[f]) for f in factors] + [str(int(r["seeds"]))]
        cells += [
            _cell(r[f"{c}_mean"], r[f"{c}_sd"], 0 if c in ("train_seconds", "distinct_source_patches") else 3)
            for c in metrics
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def compare(paths: list[str | Path], out: str | Path | None = None) -> tuple[pd.DataFrame, str]:
    done, unfinished = find_runs(paths)
    for u in unfinished:
        print(f"compare: {u} has no metrics.json (unfinished or failed run): left out", file=sys.stderr)
    runs = pd.DataFrame([run_row(r) for r in done])
    summary, factors = summarise(runs)
    table = markdown(summary, factors)
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".md").write_text(table)
        summary.to_csv(out.with_suffix(".csv"), index=False)
        runs.to_csv(out.with_name(out.name + "_runs.csv"), index=False)
    return summary, table
