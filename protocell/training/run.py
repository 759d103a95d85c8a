"""``train(cfg)``: build, fit, push, test, evaluate, explain — and leave a complete run folder
(``protocell.artifacts.RunFolder``). ``train.py`` composes the config and calls this.

A run folder belongs to one run: ``train`` holds a lock on it while it runs and refuses a folder
that holds another run's ``config.yaml`` (unless resuming). Checkpoints, interrupts and SLURM
requeueing: ``protocell.training.checkpoint``."""

from __future__ import annotations

import logging
import signal
import sys
import time
from contextlib import contextmanager
from typing import Any

import lightning as L
import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from protocell.artifacts import RunFolder
from protocell.build import build_datamodule, build_module
from protocell.config_check import plain, validate
from protocell.diagnostics import run_diagnostics
from protocell.distributed import gather_predictions
from protocell.errors import ConfigError
from protocell.evaluate.predictions import evaluate
from protocell.evaluate.status import run_status
from protocell.fsutil import atomic_write_json, atomic_write_text, exclusive_lock
from protocell.model.receptive_field import locality
from protocell.tracking import build_logger, is_wandb, log_media, log_summary, run_summary
from protocell.training.callbacks import (
    GroundTruthMonitor,
    InitPrototypes,
    KeepBestPretrain,
    PhaseCallback,
    PushCallback,
    StopOnInterrupt,
    ValAccuracyHistory,
)
from protocell.training.checkpoint import AtomicCheckpointIO, EpochCheckpoint, check_resume, cluster_plugins
from protocell.training.figures import plot_training_curves
from protocell.training.schedule import schedule_from_config

log = logging.getLogger("protocell.train")


def callbacks_for(cfg, schedule, folder: RunFolder, meta: dict, truth: bool) -> list:
    keep = [KeepBestPretrain(schedule)] if cfg.schedule.pretrain_keep == "best" else []
    return keep + [
        InitPrototypes(schedule, cfg.prototypes.init),
        PhaseCallback(schedule),
        PushCallback(schedule, folder.root, meta, unique=bool(cfg.prototypes.push_unique)),
        *([GroundTruthMonitor()] if truth else []),
        EpochCheckpoint(folder.checkpoint, len(schedule)),
        StopOnInterrupt(),
    ]


@contextmanager
def claim_run_folder(folder: RunFolder, config_yaml: str, resuming: bool):
    """Hold the run folder's lock for the run, refusing a folder another run holds or held: two runs
    in one folder mix their checkpoints, metrics and prototypes."""

    def held(holder: str) -> ConfigError:
        return ConfigError(
            f"run folder {folder.root} is in use by another train.py ({holder}): two runs must not "
            "share a folder; leave hydra.run.dir at its default (a new folder per run) or pick another"
        )

    trained = (folder.checkpoint_dir, folder.prototypes, folder.metrics_csv, folder.metrics)
    with exclusive_lock(folder.lock, held):
        # a config.yaml alone is a run refused before training: its folder may be reused
        if (
            not resuming
            and folder.config.exists()
            and folder.config.read_text() != config_yaml
            and any(p.exists() for p in trained)
        ):
            raise ConfigError(
                f"run folder {folder.root} already holds another run ({folder.config} differs from this "
                "run's config): leave hydra.run.dir at its default (a new folder per run) or pick an "
                "empty folder; to continue that run here, pass resume=<its checkpoints/last.ckpt>"
            )
        yield folder


def train(cfg, explain=None) -> dict:
    """Train, evaluate and write the run folder; ``explain``: called with the run folder once metrics.json
    is written (``train.py`` passes ``protocell.explain.run.explain_run`` when ``explain=true``: training
    never imports a later stage)."""
    validate(cfg)
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    folder = RunFolder(cfg.paths.output_dir)
    config_yaml = OmegaConf.to_yaml(cfg, resolve=True)
    with claim_run_folder(folder, config_yaml, resuming=bool(cfg.resume)):
        atomic_write_text(folder.config, config_yaml)
        return _train(cfg, folder, explain)


def _train(cfg, folder: RunFolder, explain=None) -> dict:
    L.seed_everything(cfg.seed, workers=True)
    t_start = time.time()

    dm = build_datamodule(cfg)
    data_report = data_checks(dm)
    module = build_module(cfg, dm)
    data_report["locality"] = locality(module.net.rf, dm.crop_size)
    if not data_report["locality"]["local"] and cfg.head == "protopnet":
        log.warning("%s", data_report["locality"]["warning"])
        data_report["warnings"].append(data_report["locality"]["warning"])
    schedule = schedule_from_config(cfg)
    if cfg.head == "baseline":  # the black box: the pretrain phase is the whole run
        schedule = [p for p in schedule if p.name == "pretrain"]
        if not schedule:
            raise ConfigError(
                "head=baseline trains the backbone with its mean-pooled linear head in the pretrain "
                "phase; set schedule.pretrain_epochs ≥ 1"
            )
    truth = bool((dm.store.manifest["true_label"] >= 0).all())
    meta = {
        "store": str(dm.path),
        "zero_background": bool(dm.zero_background),
        "channels": [dm.store.channels[i] for i in dm.channel_index],
    }
    logger = build_logger(cfg, folder.root)
    trainer_cfg = plain(cfg.trainer)
    trainer_cfg["enable_progress_bar"] = progress_bar(trainer_cfg["enable_progress_bar"])
    history = ValAccuracyHistory()
    plugins = [AtomicCheckpointIO(last=folder.checkpoint), *cluster_plugins(cfg.slurm)]
    trainer = instantiate(
        trainer_cfg,
        max_epochs=len(schedule),
        callbacks=callbacks_for(cfg, schedule, folder, meta, truth) + [history],
        logger=logger,
        default_root_dir=str(folder.root),
        plugins=plugins,
    )
    if cfg.resume:
        check_resume(cfg.resume, dict(module.hparams), len(schedule))
    try:
        # protocell's checkpoint state is plain data: load it without unpickling arbitrary objects
        trainer.fit(module, datamodule=dm, ckpt_path=cfg.resume, weights_only=True)
    except (KeyboardInterrupt, SystemExit):
        # Lightning turns Ctrl-C into sys.exit(1) and SIGTERM into SIGTERMException after the batch in
        # progress; EpochCheckpoint has logged where resume= continues. Nothing is evaluated.
        if not trainer.interrupted:
            raise
        raise SystemExit(128 + (signal.SIGTERM if trainer.received_sigterm else signal.SIGINT)) from None
    train_seconds = time.time() - t_start

    test_batches = gather_predictions(trainer.predict(module, dataloaders=dm.predict_dataloader("test")))
    val_batches = (
        gather_predictions(trainer.predict(module, dataloaders=dm.predict_dataloader("val")))
        if len(dm.rows["val"])
        else []
    )
    metrics: dict[str, Any] = {}
    if trainer.is_global_zero:
        test, val, metrics = evaluate(test_batches, val_batches, dm.store.manifest, dm.class_names, cfg.calibration)
        train_wells = set(dm.store.manifest["well"].astype(str).to_numpy()[dm.rows["train"]])
        metrics["diagnostics"] = run_diagnostics(
            test, val, train_wells, dm.class_names, metrics["affected_fraction"], module=module, dm=dm
        )
        if val is not None:
            val.to_csv(folder.val_predictions, index=False)
        test.to_csv(folder.test_predictions, index=False)
        metrics.update(
            {
                "train_seconds": round(train_seconds, 1),
                "epochs": len(schedule),
                "pushes": int(module.net.pushes),
                "receptive_field": module.net.rf.as_dict(),
                "backbone": cfg.backbone.name,
                "mask": OmegaConf.to_container(cfg.mask),
                "last_layer": cfg.last_layer.mode,
                "seed": cfg.seed,
                "views": module.views,
            }
        )
        metrics.update(data_report)
        metrics.update(status_of(metrics, trainer, module, dm, history, len(schedule), cfg.head))
        atomic_write_json(folder.metrics, metrics)
        if folder.metrics_csv.exists():
            plot_training_curves(folder.metrics_csv, folder.curves)
        log.info(
            "test: %s",
            {k: v for k, v in metrics.items() if ("accuracy" in k or "auroc" in k) and isinstance(v, (int, float))},
        )
        if cfg.get("explain") and cfg.head == "protopnet" and int(module.net.pushes) == 0:
            log.warning("explain skipped: the prototypes were never pushed (metrics.json status %s)", metrics["status"])
        elif explain is not None and cfg.get("explain") and cfg.head == "protopnet":
            explain(folder.root)
        if is_wandb(logger):
            log_media(logger.experiment, folder.root, keys=("explain/",))
            log_summary(logger.experiment, run_summary(folder.root))
    if is_wandb(logger):
        import wandb

        wandb.finish()
    return metrics


# ----------------------------------------------------------------------------- run status


def progress_bar(wanted: bool) -> bool:
    """Progress bars only on a terminal: redrawn bars flood a log file or a CI log."""
    return bool(wanted) and sys.stderr.isatty()


def status_of(metrics: dict, trainer, module, dm, history: ValAccuracyHistory, epochs_planned: int, head: str) -> dict:
    """``evaluate.run_status`` of this run, logged: failed and incomplete runs say so."""
    labels = dm.store.manifest["label"].to_numpy()[dm.rows["val"]]
    majority = float(max((labels == k).mean() for k in set(labels.tolist()))) if len(labels) else None
    status = run_status(
        metrics,
        val_accuracy=history.accuracies(head),
        val_majority=majority,
        n_val=len(labels),
        val_auroc=history.aurocs(head),
        epochs_run=int(trainer.current_epoch),
        epochs_planned=epochs_planned,
        pushes=int(module.net.pushes) if head == "protopnet" else None,
        interrupted=bool(trainer.interrupted),
        bag_size=int(getattr(dm, "bag_size", 1)),
        truth_labels=getattr(dm, "label_source", "well") == "truth",
        levelled=getattr(dm, "levelling", None) is not None,
        imaging_alignment=getattr(dm, "imaging_alignment", None),
    )
    for w in status["warnings"]:
        log.warning("%s", w)
    status["warnings"] = metrics.get("warnings", []) + status["warnings"]  # the data checks' came first
    status["val_accuracy_history"] = history.history
    status["epochs_run"] = int(trainer.current_epoch)
    if status["status"] != "ok":
        log.error("run %s: %s", status["status"].upper(), "; ".join(status["reasons"]))
    return status


def data_checks(dm) -> dict:
    """How the store was normalised and which training normalisation follows (said in the log), and
    whether one channel's mean intensity inside the cell alone separates the conditions
    (``protocell.data.normalization``): ``normalization``, ``intensity_auroc`` and ``warnings``."""
    from protocell.artifacts import positive_class
    from protocell.data.normalization import brightness_warnings, intensity_separation, store_normalization

    log.info("normalisation: %s", dm.normalize_why)
    originals = np.flatnonzero(dm.store.manifest["aug_of"].to_numpy() < 0)
    aurocs = (
        intensity_separation(dm.store, originals, dm.channel_index, positive_class(dm.class_names), seed=int(dm.seed))
        if dm.num_classes == 2
        else {}
    )
    warnings = brightness_warnings(aurocs, dm.normalize)
    for w in warnings:
        log.warning("%s", w)
    return {
        "normalization": {
            "store": store_normalization(dm.store.info),
            "training": dm.normalize,
            "said": dm.normalize_why,
        },
        "split": {"by": dm.split_unit, "why": dm.split_why, **dm.split_info},
        "levelling": None if dm.levelling is None else dm.levelling.as_dict(),
        "imaging_alignment": getattr(dm, "imaging_alignment", None),  # data.level_imaging=auto's test
        "intensity_auroc": aurocs,
        "warnings": warnings,
    }
