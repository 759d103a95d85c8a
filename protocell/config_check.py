"""Checking a composed config against the schema (``protocell.config``): ``validate(cfg)`` refuses a
mandatory key left unset (``???``) and checks the range of every key that has a ``rule``, before any
work starts, with one message shape: ``config value key=value is invalid: need``; ``validate_node``
checks one section (a file's, named in the message); ``interpolations`` lists the ``${…}`` keys of a
config without resolving any; ``unknown_key`` finds a command line's misspelt key before Hydra composes
(whose own refusal is several lines and advises ``+key=…``, which a schema refuses too).
"""

import difflib
from collections.abc import Iterable, Iterator
from dataclasses import Field, fields, is_dataclass
from typing import Any, cast, get_args

from omegaconf import OmegaConf

from protocell.config import (
    BackboneConfig,
    DataConfig,
    DoseSeriesConfig,
    LastLayerConfig,
    LossConfig,
    MaskConfig,
    OptimConfig,
    PerformanceConfig,
    PhotometricConfig,
    ProtoPNetConfig,
    PrototypesConfig,
    ReportConfig,
    ScheduleConfig,
    SlurmConfig,
    SyntheticConfig,
    TrainConfig,
    WellEffectsConfig,
)
from protocell.errors import ConfigError


def plain(node) -> dict[str, Any]:
    """A config node as a resolved plain dict (a mapping that is not a config: copied as it is)."""
    if OmegaConf.is_config(node):
        return cast(dict[str, Any], OmegaConf.to_container(node, resolve=True))
    return dict(node)


def _walk(schema: Any, node: Any, prefix: str) -> Iterator[str]:
    for f in fields(schema):
        key = f"{prefix}{f.name}"
        if node is None or f.name not in node:
            continue
        value = node[f.name] if not OmegaConf.is_config(node) else OmegaConf.select(node, f.name, default=None)
        if "check" in f.metadata:
            plain = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
            if not f.metadata["check"](plain):
                raise ConfigError.invalid(key, plain, f.metadata["need"])
        sub = _dataclass_of(f)
        if sub is not None and value is not None:
            yield from _walk(sub, value, key + ".")
        yield key


def _dataclass_of(f):
    t = f.type if not isinstance(f.type, str) else _TYPES.get(f.type.replace("Optional[", "").rstrip("]"))
    if not is_dataclass(t):  # Optional[X]: X (else the rules of optional sections are never checked)
        t = next((a for a in get_args(t) if is_dataclass(a)), None)
    return t if is_dataclass(t) else None


_TYPES = {
    c.__name__: c
    for c in (
        PhotometricConfig,
        DoseSeriesConfig,
        WellEffectsConfig,
        SyntheticConfig,
        DataConfig,
        BackboneConfig,
        MaskConfig,
        LastLayerConfig,
        ScheduleConfig,
        PrototypesConfig,
        LossConfig,
        OptimConfig,
        PerformanceConfig,
        ProtoPNetConfig,
        SlurmConfig,
        ReportConfig,
    )
}


MISSING_HINTS = {
    "data.path": "data=prepared needs data.path=<crop store folder> (python prepare.py prints it), "
    "or use data=synthetic",
    "run": "run=<a train.py run folder>, e.g. run=outputs/train/<date_time>",
    "input": "input=<folder of raw images> (or of pre-cut crops with mode=crops)",
}


def _nodes(cfg: Any, prefix: str) -> Iterator[tuple[str, Any]]:
    """(dotted key, node) of every child of ``cfg`` (a DictConfig or a ListConfig), nothing resolved."""
    from omegaconf import DictConfig

    keys: Iterable[Any] = cfg.keys() if isinstance(cfg, DictConfig) else range(len(cfg))
    for key in keys:
        path = f"{prefix}{key}" if isinstance(cfg, DictConfig) else f"{prefix.rstrip('.')}[{key}]"
        node = cfg._get_node(key)
        if node is not None:
            yield path, node


def _missing_keys(cfg: Any, prefix: str = "") -> Iterator[str]:
    """Dotted keys whose value is ``???``, found without resolving any interpolation (outside a Hydra
    app ``${hydra:…}`` cannot be resolved; ``OmegaConf.missing_keys`` resolves every node)."""
    from omegaconf import DictConfig, ListConfig

    for path, node in _nodes(cfg, prefix):
        if node._is_missing():
            yield path
        elif isinstance(node, (DictConfig, ListConfig)) and not node._is_interpolation() and not node._is_none():
            yield from _missing_keys(node, path + ".")


def validate_node(node, schema, prefix: str = "", source: str | None = None) -> None:
    """Check the range of every key of ``node`` that has a rule in ``schema`` (a dataclass); the
    ``ConfigError`` names ``source`` (the file the node was read from) when given."""
    try:
        for _ in _walk(schema, node, prefix):
            pass
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}" if source else str(e)) from None


def interpolations(cfg: Any, prefix: str = "") -> Iterator[str]:
    """Dotted keys whose value is an interpolation (``${…}``), found without resolving any: a
    config train.py wrote is resolved, so a run folder's config has none."""
    from omegaconf import DictConfig, ListConfig

    for path, node in _nodes(cfg, prefix):
        if node._is_interpolation():
            yield path
        elif isinstance(node, (DictConfig, ListConfig)) and not node._is_none():
            yield from interpolations(node, path + ".")


def validate(cfg, schema=TrainConfig) -> None:
    """Refuse a mandatory key left unset (``???``), then check the range of every key that has a
    rule; raise ``ConfigError`` naming the first bad one."""
    missing = sorted(_missing_keys(cfg)) if OmegaConf.is_config(cfg) else []
    if missing:
        raise ConfigError(
            f"config value {missing[0]} is missing: "
            + MISSING_HINTS.get(missing[0], f"set it on the command line ({missing[0]}=…)")
        )
    for _ in _walk(schema, cfg, ""):
        pass


def unknown_key(overrides: Iterable[str], schema, groups: Iterable[str] = ()) -> str | None:
    """The first ``key=value`` of ``overrides`` (a command line) whose key ``schema`` does not have, as a
    one-line refusal naming the closest key; None when every key is known. ``groups``: the config groups
    (``data=prepared``); ``+key``, ``~key``, flags and ``hydra.…`` are Hydra's; a key under a node the
    schema leaves open (``Any``, a mapping) is not checked."""
    groups = list(groups)
    for arg in overrides:
        key = arg.split("=", 1)[0]
        if arg.startswith(("-", "+", "~")) or "=" not in arg or "/" in key or "@" in key:
            continue
        node, parts = schema, key.split(".")
        for i, part in enumerate(parts):
            known: dict[str, Field] = {f.name: f for f in fields(node)}
            if part not in known:
                if i == 0 and (part in groups or part == "hydra"):
                    break
                where = ".".join(parts[:i])
                close = difflib.get_close_matches(part, [*known, *(groups if i == 0 else ())], n=1)
                fix = f"did you mean {where + '.' if where else ''}{close[0]}?" if close else f"keys: {sorted(known)}"
                return f"config key {key} is unknown: {fix}"
            node = _dataclass_of(known[part])
            if node is None:
                break
    return None
