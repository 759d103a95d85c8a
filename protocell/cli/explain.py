"""``explain.py``: render a run folder's explanations (``protocell.explain.run.explain_run``)."""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from protocell.cli.common import run_cli


def run(cfg: DictConfig):
    from protocell.explain.run import explain_run

    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    return run_cli(
        "explain",
        lambda c: explain_run(
            c.run,
            n_boot=int(c.bootstrap),
            n_cells=int(c.cells),
            k=int(c.nearest),
            log_wandb=bool(c.wandb),
            options=c.get("report"),
        ),
        cfg,
    )
