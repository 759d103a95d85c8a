"""logger=wandb: offline, factors as tags, explain figures as media, and no secret in the run folder."""

import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).parent))
import warm  # noqa: E402
from test_train_cli import TINY  # noqa: E402

SECRET = "0123456789abcdef0123456789abcdef01234567"  # a fake, key-shaped API key


def assert_no_key(tmp_path, *outputs):
    """The key is in no file under tmp_path — the run folders, the temporary HOME (``.netrc``,
    ``.config/wandb``, ``.cache/wandb``, ``.local``), the data cache — and in no captured output."""
    scanned = 0
    for path in tmp_path.rglob("*"):
        if path.is_file():
            scanned += 1
            assert SECRET.encode() not in path.read_bytes(), f"API key written to {path}"
    for out in outputs:
        assert SECRET.encode() not in out, "API key printed"
    assert scanned > 20
    return scanned


def test_wandb_offline_run_logs_factors_and_media_and_never_writes_the_key(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    # a temporary HOME: W&B's settings, netrc and caches land where this test can read them all
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("WANDB_")},
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "PROTOCELL_CACHE": str(tmp_path / "cache"),
        "OMP_NUM_THREADS": "1",
        "WANDB_API_KEY": SECRET,
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
    }
    args = [a for a in TINY if a != "explain=false"] + ["logger=wandb", "explain=true", "last_layer=frozen"]
    first = warm.run(
        [sys.executable, "train.py", f"hydra.run.dir={tmp_path / 'run'}", *args],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        timeout=400,
    )
    run = tmp_path / "run"
    run_id = (run / "wandb_run_id.txt").read_text().strip()
    offline = list((run / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(offline) == 1
    media = list(offline[0].rglob("media/images/**/*.png"))
    assert any("population" in p.name for p in media) and any("prototypes" in p.name for p in media)
    record = (offline[0] / f"run-{run_id}.wandb").read_bytes()  # offline: config and tags live here
    assert b"last_layer=frozen" in record and b"backbone=vgg11_narrow" in record  # factors for dashboards
    assert b"final/true_label_auroc" in record and b"explain/background_prototype_share" in record  # run table
    assert json.loads((run / "metrics.json").read_text())["last_layer"] == "frozen"

    # resume=<run>/checkpoints/last.ckpt continues the same W&B run, still without the key
    resumed = tmp_path / "resumed"
    second = warm.run(
        [
            sys.executable,
            "train.py",
            f"hydra.run.dir={resumed}",
            *args[:-2],
            "explain=false",
            "last_layer=frozen",
            f"resume={run / 'checkpoints' / 'last.ckpt'}",
        ],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        timeout=400,
    )
    assert (resumed / "wandb_run_id.txt").read_text().strip() == run_id
    assert (tmp_path / "cache").is_dir() and any(home.rglob("*"))  # the scan below reads real folders
    assert_no_key(tmp_path, first.stdout, first.stderr, second.stdout, second.stderr)
    # the scan itself finds a key where W&B's login would put it
    (home / ".netrc").write_text(f"machine api.wandb.ai login user password {SECRET}\n")
    with pytest.raises(AssertionError, match=r"API key written to .*\.netrc"):
        assert_no_key(tmp_path)
