"""``score.py``: score a crop store's wells with a trained run (``protocell.score.run.score_run``)."""

from __future__ import annotations

import torch
from omegaconf import DictConfig, ListConfig

from protocell.cli.common import run_cli


def run(cfg: DictConfig):
    return run_cli("score", _score, cfg)


def _score(c: DictConfig):
    from protocell.config_check import validate
    from protocell.config_commands import ScoreConfig

    validate(c, ScoreConfig)  # a bad value is refused before the run folder is read
    from protocell.score.run import score_run

    if c.get("threads"):
        torch.set_num_threads(int(c.threads))
    return score_run(
        c.run,
        store=_stores(c.data.get("path")),
        out=c.get("out"),
        n_boot=c.bootstrap,
        nearest=c.nearest,
        top=c.top_prototypes,
        min_cells=c.min_cells,
        batch_size=c.data.get("batch_size"),
        num_workers=int(c.data.num_workers),
        progress=bool(c.progress),
        log_wandb=bool(c.wandb),
        seed=int(c.seed),
        fdr=c.fdr,
        bscore=c.bscore,
        shards=c.shards,
        shard=c.shard,
        level_imaging=bool(c.level_imaging),
        match_imaging=bool(c.match_imaging),
    )


def _stores(path):
    """data.path: null, one store, or a list of stores (data.path=[a,b])."""
    return [str(p) for p in path] if isinstance(path, ListConfig) else path
