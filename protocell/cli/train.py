"""``train.py``: the composed config → ``protocell.training.run.train`` (one clean line on a user error);
``strict=true``: exit status 1 when the run's status (metrics.json) is not ``ok``."""

from __future__ import annotations

import sys

from omegaconf import DictConfig

from protocell.cli.common import run_cli


def _train(cfg: DictConfig) -> dict:
    from protocell.config_check import validate

    validate(cfg)  # a bad value is refused before the training stack is imported (torch + Lightning: ≈ 5 s)
    from protocell.training.run import train

    def explain(run_dir):
        from protocell.explain.run import explain_run

        explain_run(run_dir, log_wandb=False)  # the run's W&B run logs explain/ after this returns

    return train(cfg, explain)


def run(cfg: DictConfig) -> dict:
    metrics = run_cli("train", _train, cfg)
    status = (metrics or {}).get("status", "ok")
    if cfg.get("strict") and status != "ok":
        print(f"train: the run is {status} (strict=true): {'; '.join(metrics.get('reasons', []))}", file=sys.stderr)
        raise SystemExit(1)
    return metrics
