"""Experiment tracking (Weights & Biases): the logger, the run id, the final numbers and the media.

``build_logger(cfg, out_dir)`` instantiates ``cfg.logger``; for W&B it tags the run with the Hydra
choices (a dashboard groups and filters runs by factor), keeps the run id in the run folder, and
continues that W&B run on ``resume=``. ``log_media(run, folder)`` logs explain's (or score's)
figures and tables to a W&B run; ``run_summary`` flattens the run's final JSON numbers for the
dashboard's run table. W&B is detected by class, never by name.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd
from hydra.utils import instantiate

from protocell.config_check import plain

log = logging.getLogger("protocell.tracking")

# what explain and score write, as W&B keys (a glob per key, relative to the run folder)
MEDIA = {
    "explain/population": ["explain/population_similarity.png"],
    "explain/cell_scores": ["explain/cell_scores.png"],
    "explain/prototypes": ["explain/prototypes/*.png"],
    "explain/mosaics": ["explain/mosaics/*.png"],
    "explain/cells": ["explain/cells/*.png"],
    "score/plate": ["score/*.png"],
}
TABLES = {
    "explain/prototype_differences": "explain/prototype_differences.csv",
    "score/wells": "score/wells.csv",
    "score/prototype_enrichment": "score/prototype_enrichment.csv",
    "score/qc": "score/qc.csv",
    "score/hits": "score/hits.csv",
}


def is_wandb(logger) -> bool:
    from lightning.pytorch.loggers import WandbLogger

    return isinstance(logger, WandbLogger)


def uses_wandb(cfg) -> bool:
    """Did this (run's) config train with the W&B logger?"""
    target = str((cfg.get("logger") or {}).get("_target_", "")) if cfg.get("logger") else ""
    return target.endswith("WandbLogger")


def hydra_choices() -> dict:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    return {k: v for k, v in HydraConfig.get().runtime.choices.items() if not k.startswith("hydra/") and v is not None}


def quiet_log_dir_warning(out_dir: Path) -> None:
    """Lightning's CSV logger warns that "previous log files will be deleted" whenever its folder is
    not empty, and the run folder always holds config.yaml and .hydra/ by then; the one file it does
    replace is metrics.csv, so protocell warns about that file only."""
    import warnings

    if (Path(out_dir) / "metrics.csv").exists():
        log.warning("%s already holds a metrics.csv: this run replaces it", out_dir)
    warnings.filterwarnings("ignore", message=r"Experiment logs directory .* exists and is not empty")


def build_logger(cfg, out_dir: Path):
    if not cfg.get("logger"):
        return False
    if not uses_wandb(cfg):
        quiet_log_dir_warning(out_dir)
        return instantiate(cfg.logger)
    choices = hydra_choices()
    group = cfg.logger.get("group") or choices.get("experiment") or "default"
    make = instantiate(cfg.logger, _partial_=True)  # `config` would clash with instantiate's own argument
    # resume=<run>/checkpoints/last.ckpt continues that run's W&B run (its id is in <run>/wandb_run_id.txt)
    previous = Path(cfg.resume).parent.parent / "wandb_run_id.txt" if cfg.get("resume") else None
    run_id = cfg.logger.get("id") or (previous.read_text().strip() if previous and previous.exists() else None)
    logger = make(
        group=group,
        tags=[f"{k}={v}" for k, v in sorted(choices.items())],
        config={**plain(cfg), "choices": choices},
        **({"id": run_id, "resume": "allow"} if run_id else {}),
    )
    from lightning.pytorch.utilities import rank_zero_only

    # other DDP ranks hold a dummy experiment; Lightning sets .rank on the function (untyped)
    if rank_zero_only.rank == 0:  # type: ignore[attr-defined]
        (out_dir / "wandb_run_id.txt").write_text(logger.experiment.id)  # starts the (offline) run
    return logger


def run_summary(run_dir: Path) -> dict:
    """The run's final numbers for a dashboard's run table: metrics.json and explain's
    explain_metrics.json (prefixed ``explain/``, nested keys joined by ``/``), numbers only."""

    def flat(d: dict, prefix: str) -> dict:
        out = {}
        for k, v in d.items():
            if isinstance(v, dict):
                out.update(flat(v, f"{prefix}{k}/"))
            elif isinstance(v, (int, float)) and not isinstance(v, bool):
                out[f"{prefix}{k}"] = v
        return out

    summary = {}
    for path, prefix in (
        (run_dir / "metrics.json", "final/"),
        (run_dir / "explain" / "explain_metrics.json", "explain/"),
    ):
        if path.exists():
            summary.update(flat(json.loads(path.read_text()), prefix))
    return summary


def log_summary(wandb_run, summary: dict) -> None:
    """The run's final numbers (``run_summary``) as columns of the W&B run table.

    Written as one history row as well as the summary: W&B debounces summary updates, and an offline
    run's transaction log (run-*.wandb, what ``wandb sync`` uploads) lost them about one finish in 40
    on a loaded machine (wandb 0.31), while a history row is written in order before the run's exit
    record; every key is declared ``hidden`` so that one row adds table columns, not hundreds of charts."""
    for key in summary:
        wandb_run.define_metric(key, hidden=True)
    wandb_run.log(dict(summary))
    wandb_run.summary.update(summary)


def log_media(wandb_run, run_dir: Path, keys: tuple[str, ...] = ("explain/", "score/")) -> int:
    """Log the figures and tables under ``run_dir`` whose W&B key starts with one of ``keys`` to an
    active W&B run; returns how many images were logged."""
    import wandb

    images = {k: sorted(p for g in globs for p in run_dir.glob(g)) for k, globs in MEDIA.items() if k.startswith(keys)}
    payload: dict[str, Any] = {k: [wandb.Image(str(p), caption=p.stem) for p in v] for k, v in images.items() if v}
    for k, rel in TABLES.items():
        if k.startswith(keys) and (run_dir / rel).exists():
            payload[k] = wandb.Table(dataframe=pd.read_csv(run_dir / rel))
    if payload:
        wandb_run.log(payload)
    return sum(len(v) for v in images.values())


def saved_run_id(run_dir: Path) -> str | None:
    """The W&B run id train.py saved, or the one in the run folder's wandb/ directory."""
    saved = run_dir / "wandb_run_id.txt"
    if saved.exists():
        return saved.read_text().strip() or None
    runs = sorted((run_dir / "wandb").glob("*run-*-*")) if (run_dir / "wandb").is_dir() else []
    return runs[-1].name.rsplit("-", 1)[-1] if runs else None


def log_to_saved_run(cfg, run_dir: Path, keys: tuple[str, ...]) -> str:
    """From a separate process (explain.py, score.py): re-open the run's W&B run offline and log the
    media. Returns what it did (also logged)."""
    if not uses_wandb(cfg):
        return "skipped: the run did not use the W&B logger"
    try:
        import wandb
    except ImportError:
        msg = "skipped: the run used W&B but wandb is not installed here (pip install wandb)"
        log.info("W&B %s", msg)
        return msg
    if wandb.run is not None:
        return "skipped: a W&B run is active in this process (train.py's logger logs the figures)"
    run_id = saved_run_id(run_dir)
    if run_id is None:
        msg = f"skipped: no W&B run id in {run_dir} (wandb_run_id.txt or wandb/offline-run-*)"
        log.info("W&B %s", msg)
        return msg
    project = cfg.logger.get("project") or "protocell"
    w = wandb.init(
        project=project,
        id=run_id,
        resume="allow",
        mode="offline",
        dir=str(run_dir),
        settings=wandb.Settings(silent=True),
    )
    try:
        log_media(w, run_dir, keys)
    finally:
        w.finish()
    log.info("W&B: figures logged offline to run %s (wandb sync %s/wandb to upload)", run_id, run_dir)
    return f"logged offline to run {run_id}"
