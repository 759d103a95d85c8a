"""``train.py``: compose the config, check it, build everything with ``instantiate``, train, push,
evaluate, and leave a complete run folder:

    .hydra/config.yaml        resolved config (Hydra)     config.yaml   the same, resolved
    checkpoints/last.ckpt     Lightning checkpoint         prototypes.pt vectors + push provenance
    metrics.csv               per-epoch logs (CSV logger)  metrics.json  test metrics
    training_curves.png       losses, accuracy, push distance per epoch, phases shaded
    test_predictions.csv      per test cell: ids, labels, scores, calibrated call, min distances
    val_predictions.csv       the same for the validation cells the call is calibrated on

Cell calls: the Exp score is calibrated on the *validation* cells' well labels (no ground truth
involved). ``calibration=noisy_label`` (default) fits P(affected | score) under per-well label noise
and calls a cell affected when it exceeds 0.5; ``platt`` calls it when the well-label posterior
P(Exp | score) does; ``none`` keeps the raw argmax.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import lightning as L
import pandas as pd
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from protocell.cli.checks import check
from protocell.data.synthetic import WellSpec, build_store
from protocell.metrics.ground_truth import (cell_metrics, noisy_label_apply, noisy_label_fit, platt_apply,
                                            platt_fit)
from protocell.model.backbones import BACKBONES
from protocell.model.module import LAST_LAYER_MODES, ProtoPNetModule
from protocell.training.figures import plot_training_curves
from protocell.training.phases import PRETRAIN_KEEP, PhaseCallback, build_plan
from protocell.training.push import PushCallback, prototype_record, save_prototypes


log = logging.getLogger("protocell.train")
CALIBRATIONS = ("noisy_label", "platt", "none")


def validate(cfg: DictConfig) -> None:
    """Refuse bad values with a message naming the key, before data or models are built."""
    b, d, s, m = cfg.backbone, cfg.data, cfg.schedule, cfg.model
    check(b.name in BACKBONES, "backbone.name", b.name, f"one of {BACKBONES}")
    check(b.get("max_rf") is None or b.max_rf > 0, "backbone.max_rf", b.get("max_rf"), "a positive number or null")
    check(cfg.last_layer.mode in LAST_LAYER_MODES, "last_layer.mode", cfg.last_layer.mode, f"one of {LAST_LAYER_MODES}")
    check(isinstance(d.crop_size, int) and d.crop_size >= 16, "data.crop_size", d.crop_size, "an integer ≥ 16")
    check(isinstance(d.batch_size, int) and d.batch_size >= 1, "data.batch_size", d.batch_size, "an integer ≥ 1")
    check(0 < d.test_fraction < 1, "data.test_fraction", d.test_fraction, "a fraction in (0, 1)")
    for k, v in (d.get("photometric") or {}).items():
        check(k in ("gain", "blur", "noise") and v >= 0, f"data.photometric.{k}", v, "gain, blur or noise, ≥ 0")
    check(0 <= d.val_fraction < 1, "data.val_fraction", d.val_fraction, "a fraction in [0, 1)")
    check(cfg.get("calibration", "noisy_label") in CALIBRATIONS, "calibration", cfg.get("calibration"),
          f"one of {CALIBRATIONS}")
    zm = d.get("zero_margin", 0)
    check(isinstance(zm, int) and zm >= 0, "mask.zero_margin", zm, "a whole number of pixels ≥ 0")
    check(isinstance(m.prototypes_per_class, int) and m.prototypes_per_class >= 1,
           "model.prototypes_per_class", m.prototypes_per_class, "an integer ≥ 1")
    check(isinstance(m.prototype_dim, int) and m.prototype_dim >= 1, "model.prototype_dim", m.prototype_dim, "an integer ≥ 1")
    for k in ("clst", "sep", "l1"):
        check(cfg.loss[k] >= 0, f"loss.{k}", cfg.loss[k], "≥ 0")
    for k, v in cfg.optim.lr.items():
        check(v > 0, f"optim.lr.{k}", v, "> 0")
    check(s.epochs >= 1, "schedule.epochs", s.epochs, "≥ 1")
    check(s.push_every >= 1, "schedule.push_every", s.push_every, "≥ 1")
    check(0 <= s.warm_epochs < s.epochs, "schedule.warm_epochs", s.warm_epochs, f"in [0, schedule.epochs={s.epochs})")
    check(s.get("pretrain_epochs", 0) >= 0, "schedule.pretrain_epochs", s.get("pretrain_epochs"), "≥ 0")
    check(s.get("pretrain_keep", "best") in PRETRAIN_KEEP, "schedule.pretrain_keep", s.get("pretrain_keep"),
           f"one of {PRETRAIN_KEEP}")
    check(s.last_layer_epochs >= 0, "schedule.last_layer_epochs", s.last_layer_epochs, "≥ 0")
    check(cfg.resume is None or Path(cfg.resume).exists(), "resume", cfg.resume, "an existing checkpoint file")


def prepare_data(cfg: DictConfig) -> L.LightningDataModule:
    data_cfg = OmegaConf.to_container(cfg.data, resolve=True)
    spec = data_cfg.pop("synthetic", None)
    if spec is not None:
        spec["affected_fraction"] = dict(spec["affected_fraction"])
        t0 = time.time()
        data_cfg["path"] = str(build_store(Path(cfg.paths.cache_dir), WellSpec(**spec)))
        log.info("synthetic wells at %s (%.1f s)", data_cfg["path"], time.time() - t0)
    dm = instantiate(data_cfg)
    dm.setup("fit")
    return dm


def build_module(cfg: DictConfig, in_channels: int, class_names: list[str]) -> ProtoPNetModule:
    backbone = instantiate(cfg.backbone, in_channels=in_channels)
    # _partial_: Hydra would turn the Backbone dataclass into a config node if passed to instantiate
    net = instantiate(cfg.model, _partial_=True)(backbone=backbone, num_classes=len(class_names))
    perf = cfg.get("performance", {})
    # trainer=gpu sets trainer.channels_last (a protocell key, not a Trainer argument)
    channels_last = bool(perf.get("channels_last", False) or cfg.trainer.get("channels_last", False))
    module = ProtoPNetModule(net, last_layer=cfg.last_layer.mode, lr=dict(cfg.optim.lr),
                             weight_decay=cfg.optim.weight_decay, lr_step_epochs=cfg.optim.lr_step_epochs,
                             lr_gamma=cfg.optim.lr_gamma, class_names=class_names,
                             channels_last=channels_last, **cfg.loss)
    if channels_last:
        module.to(memory_format=torch.channels_last)
    if perf.get("compile"):
        # the backbone is where the time goes; the prototype head is small and shape-dynamic
        module.net.features = torch.compile(module.net.features, backend=perf.get("compile_backend", "inductor"))
    return module


def predictions_frame(batches: list[dict], manifest: pd.DataFrame, class_names: list[str]) -> pd.DataFrame:
    cat = {k: torch.cat([b[k] for b in batches]) for k in batches[0]}
    probs = cat["probs"].numpy()
    pos = len(class_names) - 1  # the exposed population is the last class (Exp after Ref)
    df = pd.DataFrame({"cell_id": cat["cell_id"].numpy(), "label": cat["label"].numpy(),
                       "pred": probs.argmax(1), "score": probs[:, pos]})
    for j in range(cat["min_distances"].shape[1]):
        df[f"min_d_{j}"] = cat["min_distances"][:, j].numpy()
    info = manifest.set_index("cell_id")[["image_id", "well", "condition", "true_label"]]
    return df.join(info, on="cell_id")


def calibrate(df: pd.DataFrame, val: pd.DataFrame, pos: int, method: str) -> dict | None:
    """Fit the cell call on the validation cells' *well* labels (no ground truth) and add the
    ``calibrated`` score and the ``call`` to ``df`` (test cells). ``noisy_label``: ``calibrated`` is
    P(affected | score) under per-well label noise, with the fitted fractions of affected cells;
    ``platt``: P(Exp well | score). A degenerate fit falls back to Platt, a Platt slope ≤ 0 to the
    raw argmax (both logged and recorded)."""
    if method == "none":
        return None
    s, y = val["score"].to_numpy(), (val["label"] == pos).to_numpy()
    if method == "noisy_label":
        fit = noisy_label_fit(s, y)
        if fit["ok"]:
            df["calibrated"] = noisy_label_apply(df["score"].to_numpy(), fit)
            df["call"] = (df["calibrated"] > 0.5).astype(int)
            return {"method": "noisy-label calibration on validation well labels (P(affected | score))",
                    **fit, "n_cells": len(val), "used": True}
        log.warning("noisy-label calibration degenerate on %d validation cells (hi − lo = %.3f, slope %.3g): "
                    "falling back to Platt", len(val), fit["hi"] - fit["lo"], fit["a"])
    a, b = platt_fit(s, y)
    calibration = {"method": "platt on validation well labels (P(Exp | score))", "a": a, "b": b,
                   "n_cells": len(val), "used": a > 0}
    if a > 0:
        df["calibrated"] = platt_apply(df["score"].to_numpy(), a, b)
        df["call"] = (df["calibrated"] > 0.5).astype(int)
    else:  # validation scores rank the wells backwards: a fit that would invert the calls
        log.warning("calibration rejected (slope %.3g ≤ 0 on %d validation cells): cell calls are "
                    "the raw argmax; more validation wells (data.val_fraction) make it usable", a, len(val))
    return calibration


def gather_predictions(batches: list[dict]) -> list[dict]:
    """Under DDP, every rank's predictions in loader order (``ShardSampler``: rank r holds positions
    r, r + world, …); one process: ``batches`` unchanged."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1) or not batches:
        return batches
    world = dist.get_world_size()
    local = {k: torch.cat([b[k] for b in batches]).cpu() for k in batches[0]}
    shards: list = [None] * world
    dist.all_gather_object(shards, local)
    position = torch.cat([r + world * torch.arange(len(sh["cell_id"])) for r, sh in enumerate(shards)])
    order = torch.argsort(position)
    return [{k: torch.cat([sh[k] for sh in shards])[order] for k in local}]


def hydra_choices() -> dict:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    return {k: v for k, v in HydraConfig.get().runtime.choices.items() if not k.startswith("hydra/") and v is not None}


def build_logger(cfg: DictConfig, out_dir: Path):
    if not cfg.get("logger"):
        return False
    if "WandbLogger" not in cfg.logger.get("_target_", ""):
        return instantiate(cfg.logger)
    # a dashboard groups and filters runs by factor: tags and config from the Hydra choices
    choices = hydra_choices()
    group = cfg.logger.get("group") or choices.get("experiment") or "default"
    make = instantiate(cfg.logger, _partial_=True)   # `config` would clash with instantiate's own argument
    # resume=<run>/checkpoints/last.ckpt continues that run's W&B run (its id is in <run>/wandb_run_id.txt)
    previous = Path(cfg.resume).parent.parent / "wandb_run_id.txt" if cfg.resume else None
    run_id = cfg.logger.get("id") or (previous.read_text().strip() if previous and previous.exists() else None)
    logger = make(group=group, tags=[f"{k}={v}" for k, v in sorted(choices.items())],
                  config={**OmegaConf.to_container(cfg, resolve=True), "choices": choices},
                  **({"id": run_id, "resume": "allow"} if run_id else {}))
    from lightning.pytorch.utilities import rank_zero_only

    if rank_zero_only.rank == 0:   # other DDP ranks hold a dummy experiment
        (out_dir / "wandb_run_id.txt").write_text(logger.experiment.id)   # starts the (offline) run
    return logger


def run_summary(out_dir: Path) -> dict:
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
    for path, prefix in ((out_dir / "metrics.json", "final/"), (out_dir / "explain" / "explain_metrics.json", "explain/")):
        if path.exists():
            summary.update(flat(json.loads(path.read_text()), prefix))
    return summary


def log_explain_media(logger, explain_dir: Path) -> None:
    """The explain figures as W&B media (population, scores, each prototype and cell)."""
    groups = {"explain/population": ["population_similarity.png"], "explain/cell_scores": ["cell_scores.png"],
              "explain/prototypes": sorted(p.relative_to(explain_dir).as_posix() for p in (explain_dir / "prototypes").glob("*.png")),
              "explain/cells": sorted(p.relative_to(explain_dir).as_posix() for p in (explain_dir / "cells").glob("*.png"))}
    for key, files in groups.items():
        files = [str(explain_dir / f) for f in files if (explain_dir / f).exists()]
        if files:
            logger.log_image(key=key, images=files, caption=[Path(f).stem for f in files])


def run(cfg: DictConfig) -> dict:
    validate(cfg)
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    L.seed_everything(cfg.seed, workers=True)
    t_start = time.time()

    dm = prepare_data(cfg)
    module = build_module(cfg, dm.in_channels, dm.class_names)
    s = cfg.schedule
    plan = build_plan(s.epochs, s.warm_epochs, s.push_every, s.get("push_start"), s.last_layer_epochs,
                      train_last_layer=cfg.last_layer.mode == "trained",
                      pretrain_epochs=s.get("pretrain_epochs", 0))
    meta = {"store": str(dm.path), "norm_lo": dm.norm_lo.tolist(), "norm_hi": dm.norm_hi.tolist(),
            "zero_background": bool(dm.zero_background), "channels": [dm.store.channels[i] for i in dm.channel_index]}
    push_cb = PushCallback(plan, out_dir, meta)
    callbacks = [PhaseCallback(plan, s.get("pretrain_keep", "best")), push_cb,
                 ModelCheckpoint(dirpath=out_dir / "checkpoints", save_last=True, save_top_k=0,
                                 every_n_epochs=1, save_on_train_epoch_end=True)]
    logger = build_logger(cfg, out_dir)
    trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    trainer_cfg.pop("channels_last", None)
    trainer = instantiate(trainer_cfg, max_epochs=len(plan), callbacks=callbacks, logger=logger,
                          default_root_dir=str(out_dir))
    # protocell's checkpoint state is plain data: load it without unpickling arbitrary objects
    trainer.fit(module, datamodule=dm, ckpt_path=cfg.resume, weights_only=True if cfg.resume else None)
    train_seconds = time.time() - t_start

    trainer.test(module, datamodule=dm, verbose=False)
    preds = gather_predictions(trainer.predict(module, dataloaders=dm.predict_dataloader()))
    val_preds = gather_predictions(trainer.predict(module, dataloaders=dm.val_dataloader())) if len(dm.rows["val"]) else []
    metrics = {}
    if trainer.is_global_zero:
        df = predictions_frame(preds, dm.store.manifest, dm.class_names)
        pos = len(dm.class_names) - 1
        calibration = None
        if val_preds:
            val = predictions_frame(val_preds, dm.store.manifest, dm.class_names)
            val.to_csv(out_dir / "val_predictions.csv", index=False)
            calibration = calibrate(df, val, pos, cfg.get("calibration", "noisy_label"))
        else:
            log.warning("no validation cells (data.val_fraction=0): cell calls are the raw argmax")
        df.to_csv(out_dir / "test_predictions.csv", index=False)
        metrics = {**cell_metrics(df, positive=pos), "calibration": calibration,
                   "train_seconds": round(train_seconds, 1),
                   "epochs": len(plan), "pushes": int(module.net.pushes), "receptive_field": module.net.rf.as_dict(),
                   "backbone": cfg.backbone.name, "mask": OmegaConf.to_container(cfg.mask),
                   "last_layer": cfg.last_layer.mode, "seed": cfg.seed}
        latent = push_cb.last_record["latent_size"] if push_cb.last_record else [0, 0]
        record = prototype_record(module.net, dm.crop_size, latent, dm.class_names,
                                  {**meta, "epoch": trainer.current_epoch, "global_step": trainer.global_step})
        save_prototypes(record, out_dir / "prototypes.pt")
        (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
        if (out_dir / "metrics.csv").exists():
            plot_training_curves(out_dir / "metrics.csv", out_dir / "training_curves.png")
        log.info("test: %s", {k: v for k, v in metrics.items() if "accuracy" in k or "auroc" in k})
        if cfg.get("explain"):
            from protocell.explain.run import explain_run

            explain_dir = explain_run(out_dir)
            if logger and "Wandb" in type(logger).__name__:
                log_explain_media(logger, explain_dir)
        if logger and "Wandb" in type(logger).__name__:
            logger.experiment.summary.update(run_summary(out_dir))
    if logger and "Wandb" in type(logger).__name__:
        import wandb

        wandb.finish()
    return metrics
