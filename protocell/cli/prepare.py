"""``prepare.py``: the composed config → ``protocell.prepare.pipeline.prepare`` (one clean line on a
user error), then the command that trains on the store."""

from __future__ import annotations

import shlex

from omegaconf import DictConfig, OmegaConf

from protocell.cli.common import run_cli


def run(cfg: DictConfig):
    from protocell.prepare.pipeline import prepare

    out = run_cli("prepare", lambda c: prepare(OmegaConf.to_container(c, resolve=True)), cfg)
    print(f"crop store: {out}\ntrain on it: python train.py data=prepared {shlex.quote(f'data.path={out}')}")
    return out
