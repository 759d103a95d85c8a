"""cfg → crop store, DataModule, LightningModule: the one builder train, explain, score and bench use.

``build_datamodule(cfg)`` resolves the crop store (the built-in synthetic wells are generated once
and cached in ``paths.cache_dir``; ``data=prepared`` points at ``data.path``) and instantiates the
DataModule from ``cfg.data``. ``build_module(cfg, dm)`` builds the ProtoPNetModule from plain
arguments (``cfg.backbone``, ``cfg.protopnet``, loss and optimiser settings), so its checkpoint can
rebuild it (``load_module``). A run folder is read back the same way (``protocell.artifacts``).

Configs read from a run folder may come from someone else (run folders are data people mail each
other): ``datamodule_from_run`` never instantiates anything a file names. It checks the run's
``data`` values against the schema (``protocell.config.DataConfig``) and calls the one class this
project builds for them, ``CellDataModule``; a ``_target_`` other than that class's, anywhere in the
node, is refused.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from protocell.config_check import plain
from protocell.errors import ConfigError

log = logging.getLogger("protocell.build")
DATAMODULE_TARGET = "protocell.data.datamodule.CellDataModule"


def targets(node, prefix: str = "") -> list[tuple[str, str]]:
    """Every (key, _target_) in a nested config."""
    out = []
    if isinstance(node, dict):
        for k, v in node.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            if k == "_target_":
                out.append((prefix or "<root>", str(v)))
            else:
                out += targets(v, key)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += targets(v, f"{prefix}[{i}]")
    return out


def datamodule_from_run(data, source: str, key: str = "data", mask=None):
    """The ``CellDataModule`` a run folder's ``data`` values describe, built without ``instantiate``.

    ``data`` (read from ``source``, a run's ``config.yaml``) may name its class only as
    ``_target_: protocell.data.datamodule.CellDataModule``; any other ``_target_``, at the top or
    nested (``data.photometric._target_: torch.load``), an unknown key or a value of the wrong type or
    range is refused with a ``ConfigError`` naming the file and key, before anything is built. ``mask``: the
    run's ``mask`` values (zeroed background and margin; checked against ``MaskConfig`` alike; None: the
    schema's defaults)."""
    from dataclasses import fields

    from protocell.config import DataConfig, MaskConfig
    from protocell.data.datamodule import CellDataModule

    values = plain(data)
    for where, target in targets(values, key):
        if where == key and target == DATAMODULE_TARGET:
            continue
        raise ConfigError(
            f"{source}: {where}._target_={target!r} is refused: a run folder's config never chooses "
            f"code to run; protocell rebuilds '{key}' itself as {DATAMODULE_TARGET} from plain values "
            f"(remove the _target_ key, or retrain to get a config train.py wrote)"
        )
    typed = _checked({k: v for k, v in values.items() if k != "_target_"}, DataConfig, key, source)
    kwargs = plain(typed)
    skip = {"_target_", "synthetic"}
    zeroing = _checked({} if mask is None else plain(mask), MaskConfig, "mask", source)
    return CellDataModule(
        **{f.name: kwargs[f.name] for f in fields(DataConfig) if f.name not in skip},
        zero_background=bool(zeroing.zero_background),
        zero_margin=int(zeroing.zero_margin),
    )


def _checked(values: dict, schema, key: str, source: str | None):
    """``values`` typed by ``schema`` (a protocell dataclass) and range-checked; an unknown key (a
    ``_target_`` too), a value of the wrong type or out of range is a ``ConfigError`` naming ``source``."""
    from omegaconf.errors import OmegaConfBaseException

    from protocell.config_check import validate_node

    try:
        typed = OmegaConf.merge(OmegaConf.structured(schema), values)
    except OmegaConfBaseException as e:  # an unknown key, a string where a number belongs
        raise ConfigError(
            f"{source}: '{key}' does not match protocell's {key.split('.')[-1]} schema: "
            f"{str(e).splitlines()[0]}; retrain to get a config train.py wrote"
        ) from None
    validate_node(typed, schema, f"{key}.", source)
    return typed


# ----------------------------------------------------------------------------- data


def store_path(cfg) -> Path:
    """The crop store the config names: ``data.path`` when it is set (a prepared store; any
    ``data.synthetic`` keys, e.g. from ``experiment=smoke``, are then ignored), else the cached
    synthetic wells of ``data.synthetic`` (keys it does not set take ``WellSpec``'s defaults)."""
    from protocell.data.synthetic import build_store

    path = (
        OmegaConf.select(cfg, "data.path", throw_on_missing=False)
        if OmegaConf.is_config(cfg)
        else (cfg.get("data") or {}).get("path")
    )
    if path and path != "???":
        if plain(cfg.data).get("synthetic"):
            log.info("data.path=%s is set: the data.synthetic settings are not used", path)
        return Path(path)
    spec = synthetic_spec(cfg)
    if spec is None:
        raise ConfigError(
            "config value data.path is missing: data=prepared needs data.path=<crop store folder> "
            "(python prepare.py prints it), or use data=synthetic"
        )
    t0 = time.time()
    path = build_store(Path(cfg.paths.cache_dir), spec)
    log.info("synthetic wells at %s (%.1f s)", path, time.time() - t0)
    return path


def synthetic_spec(cfg):
    """The built-in plate's ``WellSpec`` from ``data.synthetic`` (keys it does not set take the
    spec's defaults), or None when the config has no such section."""
    from dataclasses import fields

    from protocell.data.synthetic import WellSpec

    spec = plain(cfg.data).get("synthetic") if "data" in cfg else None
    if spec is None:
        return None
    known = {f.name for f in fields(WellSpec)}
    spec = {k: v for k, v in spec.items() if k in known and v is not None}
    if "affected_fraction" in spec:
        spec["affected_fraction"] = dict(spec["affected_fraction"])
    return WellSpec(**spec)


def build_datamodule(cfg, path: str | Path | None = None, source: str | None = None, setup: bool = True):
    """The DataModule of ``cfg.data`` on the store at ``path`` (default: ``store_path(cfg)``)."""
    data = plain(cfg.data)
    data.pop("synthetic", None)
    data["path"] = str(path if path is not None else store_path(cfg))
    if source:
        dm = datamodule_from_run(data, source, mask=cfg.get("mask"))
    else:  # the mask group owns the zeroing; the DataModule applies it
        dm = instantiate(data, zero_background=bool(cfg.mask.zero_background), zero_margin=int(cfg.mask.zero_margin))
    if setup:
        dm.setup("fit")
    return dm


# ----------------------------------------------------------------------------- model


def net_spec(cfg, in_channels: int) -> dict:
    """Plain keyword arguments of the network: backbone, prototype head, input channels."""
    return {
        "backbone": plain(cfg.backbone),
        "head": {**plain(cfg.protopnet), "use_mask": bool(cfg.mask.distance_term)},
        "in_channels": int(in_channels),
    }


def build_module(cfg, dm):
    """The ProtoPNetModule for ``cfg`` on ``dm``'s channels and classes."""
    from protocell.model.module import ProtoPNetModule

    perf = cfg.performance
    channels_last = bool(perf.channels_last)
    module = ProtoPNetModule(
        net_spec(cfg, dm.in_channels),
        class_names=list(dm.class_names),
        last_layer=cfg.last_layer.mode,
        lr=plain(cfg.optim.lr),
        weight_decay=float(cfg.optim.weight_decay),
        channels_last=channels_last,
        bag_size=int(dm.bag_size),
        head=cfg.head,
        ramp_epochs=int(cfg.schedule.loss_ramp_epochs),
        **plain(cfg.loss),
    )
    module.views = int(cfg.views)
    if channels_last:
        module.to(memory_format=torch.channels_last)
    if perf.compile:
        # the backbone is where the time goes; the prototype head is small and shape-dynamic
        module.net.features = torch.compile(module.net.features, backend=perf.compile_backend)
    return module


def load_module(checkpoint: str | Path, views: int):
    """The ProtoPNetModule a checkpoint holds, rebuilt from its own hyperparameters, on the CPU, in
    eval mode, reading its cells in ``views`` orientations as the run's predictions did (the run's
    config.yaml holds it, not the checkpoint: ``protocell.runs.run_views``). ImageNet weights are never
    fetched: the checkpoint has the trained ones."""
    from protocell.model.module import ProtoPNetModule

    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    hp = dict(state["hyper_parameters"])
    spec = {**hp["net_spec"], "backbone": {**hp["net_spec"]["backbone"], "pretrained": False}}
    module = ProtoPNetModule(**{**hp, "net_spec": spec})
    module.load_state_dict(state["state_dict"])
    module.views = int(views)
    return module.eval(), state
