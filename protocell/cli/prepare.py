"""``prepare.py``: the composed config → ``protocell.prepare.pipeline.prepare`` (raw plates) or, with
``mode=crops``, ``protocell.prepare.crops_import`` (pre-cut crops); one clean line on a user error,
then the command that trains on the store (or scores it, when it holds wells to score only)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from omegaconf import DictConfig

from protocell.cli.common import run_cli
from protocell.config_check import plain


def prepare_store(cfg: DictConfig):
    """Every key's type and range checked (``protocell.config_commands.PrepareConfig``), then ``mode=plates``
    (default): raw fields → ``prepare``; ``mode=crops``: pre-cut crops → ``import_from_config``."""
    from protocell.config_check import validate
    from protocell.config_commands import PrepareConfig

    validate(cfg, PrepareConfig)  # a bad value is refused before any file is read
    from protocell.prepare.crops_import import import_from_config
    from protocell.prepare.pipeline import prepare

    c = plain(cfg)
    return import_from_config(c) if c["mode"] == "crops" else prepare(c)


def next_step(out) -> str:
    """The command that uses the store: train on it when it holds two conditions or more, else (wells to
    score only) score it with a trained run."""
    data = shlex.quote(f"data.path={out}")
    conditions = json.loads((Path(out) / "store.json").read_text()).get("conditions") or []
    if len(conditions) >= 2:
        return f"train on it: python train.py data=prepared {data}"
    held = f"one condition ({conditions[0]})" if conditions else "no condition"
    return (
        f"score it with a trained run (it holds {held}, nothing to train on): python score.py run=<run folder> {data}"
    )


def run(cfg: DictConfig):
    out = run_cli("prepare", prepare_store, cfg)
    if isinstance(cfg.shard, int):  # one share of a sharded prepare: no store yet
        print(
            f"share {cfg.shard} of {cfg.shards} prepared into {out}\nwhen every share is done, write the store: the "
            "same command with shard=merge"
        )
    else:
        print(f"crop store: {out}\n{next_step(out)}")
    return out
