"""``train.py``: the composed config → ``protocell.training.run.train`` (one clean line on a user error)."""

from __future__ import annotations

from omegaconf import DictConfig

from protocell.cli.common import run_cli


def run(cfg: DictConfig) -> dict:
    from protocell.training.run import train

    return run_cli("train", train, cfg)
