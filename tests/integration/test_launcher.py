"""hydra/launcher=local: a multirun through Hydra's submitit plugin (the code path of
hydra/launcher=slurm), each job in its own process, leaves one complete run folder per job."""

import json
import os
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).parent))
import warm  # noqa: E402
from test_train_cli import TINY  # noqa: E402


def test_submitit_local_launcher_runs_a_sweep(tmp_path):
    env = {**os.environ, "PROTOCELL_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    sweep = tmp_path / "sweep"
    proc = warm.run(
        [
            sys.executable,
            "train.py",
            "-m",
            "hydra/launcher=local",
            f"hydra.sweep.dir={sweep}",
            "hydra.sweep.subdir=${hydra.job.num}",
            *TINY,
            "schedule.pretrain_epochs=0",
            "mask=on,off",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = sorted(p.parent for p in sweep.glob("*/metrics.json"))
    assert len(runs) == 2, list(sweep.iterdir())
    masks = {}
    for run in runs:
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        masks[cfg["mask"]["distance_term"]] = run
        assert json.loads((run / "metrics.json").read_text())["epochs"] >= 3
    assert set(masks) == {True, False}
    # the jobs ran through submitit (one log folder per job), not in the launching process
    logs = list((sweep / ".submitit").glob("*/*_log.out"))
    assert len(logs) == 2, list((sweep / ".submitit").rglob("*"))
    multirun = yaml.safe_load((sweep / "multirun.yaml").read_text())
    assert "LocalLauncher" in multirun["hydra"]["launcher"]["_target_"]


def test_slurm_launcher_config_composes_with_its_settings():
    """hydra/launcher=slurm composes onto the plugin's schema (a wrong key would fail here), with the
    GPU partition, GPUs per node, timeout and array parallelism as overridable settings."""
    proc = warm.run(
        [
            sys.executable,
            "train.py",
            "hydra/launcher=slurm",
            "hydra.launcher.partition=a100",
            "hydra.launcher.gpus_per_node=4",
            "hydra.launcher.timeout_min=720",
            "--cfg",
            "hydra",
            "--package",
            "hydra.launcher",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    launcher = yaml.safe_load(proc.stdout)  # the hydra.launcher package only
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert (launcher["partition"], launcher["gpus_per_node"], launcher["timeout_min"]) == ("a100", 4, 720)
    assert launcher["array_parallelism"] == 16
