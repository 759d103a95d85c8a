"""``explain.py``: render a run folder's explanations (see ``protocell.explain.run``)."""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from protocell.explain.run import explain_run


def run(cfg: DictConfig):
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    return explain_run(cfg.run, n_boot=int(cfg.bootstrap))
