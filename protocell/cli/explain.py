"""``explain.py``: render a run folder's explanations (see ``protocell.explain.run``)."""

from __future__ import annotations

import logging
import sys

import torch
from omegaconf import DictConfig

from protocell.explain.run import ExplainError, explain_run

log = logging.getLogger("protocell.explain")


def run(cfg: DictConfig):
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    try:
        return explain_run(cfg.run, n_boot=int(cfg.bootstrap), n_cells=int(cfg.get("cells", 6)),
                           k=int(cfg.get("nearest", 20)), log_wandb=bool(cfg.get("wandb", True)))
    except ExplainError as e:
        log.error("%s", e)
        sys.exit(2)
