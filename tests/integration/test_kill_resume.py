"""A real train.py killed with SIGKILL mid-run resumes from its last end-of-epoch checkpoint to the
same final metrics and prototypes as an uninterrupted run; SIGINT and SIGTERM stop it cleanly and
say which epoch resume= continues from; the checkpoint after a push holds the pushed prototypes.
Two runs launched together get two run folders (docs/reliability.md)."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).parent))
import warm  # noqa: E402
from test_train_cli import TINY  # noqa: E402

# 10 epochs: pretrain, warm, joint + push, last layer, joint, joint + push, last layer, joint, joint + push,
# last layer (about a second each here)
LONG = [a for a in TINY if not a.startswith("schedule.epochs")] + ["schedule.epochs=6"]
EPOCHS = 10
COMPARED = ("well_label_accuracy", "well_label_auroc", "true_label_accuracy", "true_label_auroc", "pushes", "epochs")


def env_for(tmp):
    return {**os.environ, "PROTOCELL_CACHE": str(tmp / "cache"), "OMP_NUM_THREADS": "1"}


class Run(warm.Popen):
    """train.py in the background (a real process, forked from the warm interpreter: tests/warm.py), its output
    in a file (a pipe nobody reads could fill and block it); ``sigint_ignored``: started with SIGINT ignored."""

    def __init__(
        self, run: Path, cache_dir: Path, *overrides, args=LONG, log: Path | None = None, sigint_ignored=False
    ):
        self.log = log or run.parent / f"{run.name}.out"
        run.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "w") as fh:
            super().__init__(
                [sys.executable, "train.py", f"hydra.run.dir={run}", *args, *overrides],
                cwd=ROOT,
                env=env_for(cache_dir),
                stdout=fh,
                stderr=subprocess.STDOUT,
                sigint_ignored=sigint_ignored,
            )

    def finish(self, timeout: float = 400) -> str:
        self.wait(timeout=timeout)
        return self.log.read_text()


start = Run


def finished_epochs(ckpt: Path) -> int:
    state = torch.load(ckpt, weights_only=True, map_location="cpu")
    return state["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"]


def wait_for_checkpoint(proc, ckpt: Path, epochs: int, timeout: float = 240) -> None:
    """Until ``ckpt`` holds at least ``epochs`` finished epochs (the process must still run)."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        assert proc.poll() is None, f"train.py ended (rc {proc.returncode}) before it could be stopped"
        if ckpt.exists():
            try:
                if finished_epochs(ckpt) >= epochs:
                    return
            except Exception:  # noqa: BLE001 - never expected (atomic writes), but the assert below says so
                pytest.fail(f"{ckpt} could not be read while train.py was writing it")
        time.sleep(0.05)
    pytest.fail(f"no checkpoint with {epochs} epochs after {timeout} s")


def assert_same_run(a: Path, b: Path) -> None:
    ma, mb = (json.loads((r / "metrics.json").read_text()) for r in (a, b))
    for k in COMPARED:
        assert ma[k] == mb[k], (k, ma[k], mb[k])
    assert ma["calibration"] == mb["calibration"]
    pa, pb = (torch.load(r / "prototypes.pt", weights_only=True) for r in (a, b))
    for k in ("vectors", "last_layer", "cell_id", "latent_yx", "distance", "box_clipped"):
        assert torch.equal(pa[k].nan_to_num(), pb[k].nan_to_num()), k
    pd.testing.assert_frame_equal(pd.read_csv(a / "test_predictions.csv"), pd.read_csv(b / "test_predictions.csv"))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("full")
    proc = start(tmp / "run", tmp)
    out = proc.finish()
    assert proc.returncode == 0, out[-3000:]
    return tmp / "run"


def test_a_checkpoint_is_written_at_the_end_of_every_epoch_and_after_each_push(uninterrupted, tmp_path):
    """Watching a real run: last.ckpt is always readable, its finished-epoch count only grows, and
    the checkpoint of a push epoch holds the pushed prototypes."""
    run = tmp_path / "run"
    proc = start(run, uninterrupted.parent)
    ckpt = run / "checkpoints" / "last.ckpt"
    seen = {}
    while proc.poll() is None:
        if ckpt.exists():
            state = torch.load(ckpt, weights_only=True, map_location="cpu")  # never half a file
            done = state["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"]
            seen[done] = int(state["state_dict"]["net.pushes"])
        time.sleep(0.02)
    assert proc.returncode == 0, proc.finish()[-3000:]
    seen[finished_epochs(ckpt)] = int(torch.load(ckpt, weights_only=True)["state_dict"]["net.pushes"])
    assert len(seen) >= 4 and max(seen) == EPOCHS, seen  # many epoch ends observed, not only the last
    for done, pushes in seen.items():  # pushes at the ends of epochs 2, 5 and 8
        assert pushes == (done >= 3) + (done >= 6) + (done >= 9), (done, pushes)
    assert not list(run.rglob("*.tmp"))


def test_kill_9_mid_run_then_resume_equals_the_uninterrupted_run(uninterrupted, tmp_path):
    killed = tmp_path / "killed"
    proc = start(killed, uninterrupted.parent)
    ckpt = killed / "checkpoints" / "last.ckpt"
    wait_for_checkpoint(proc, ckpt, 4)  # past the first push and last-layer epoch
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = finished_epochs(ckpt)
    assert 4 <= done < EPOCHS and not (killed / "metrics.json").exists()
    resumed = tmp_path / "resumed"
    proc = start(resumed, uninterrupted.parent, f"resume={ckpt}")
    out = proc.finish()
    assert proc.returncode == 0, out[-3000:]
    assert f"training continues at epoch {done}" in (resumed / "train.log").read_text()
    assert_same_run(uninterrupted, resumed)


@pytest.mark.parametrize(
    "sig,rc,ignored", [(signal.SIGINT, 130, False), (signal.SIGINT, 130, True), (signal.SIGTERM, 143, False)]
)
def test_sigint_and_sigterm_stop_cleanly_and_name_the_resume_point(uninterrupted, tmp_path, sig, rc, ignored):
    run = tmp_path / "run"
    proc = start(run, uninterrupted.parent, sigint_ignored=ignored)  # ignored: as a non-interactive shell's job
    ckpt = run / "checkpoints" / "last.ckpt"
    wait_for_checkpoint(proc, ckpt, 2)
    proc.send_signal(sig)
    out = proc.finish(120)
    assert proc.returncode == rc, out[-3000:]
    assert "Traceback" not in out
    done = finished_epochs(ckpt)
    found = re.search(
        r"stopped \((\w+)\) in epoch (\d+) of 10 \(0-based\); (\S+) holds the end of epoch (\d+)\. "
        r"resume=(\S+) continues at epoch (\d+)",
        out,
    )
    assert found, out[-3000:]
    assert int(found.group(2)) == done == int(found.group(6)) and int(found.group(4)) == done - 1
    assert Path(found.group(5)) == ckpt.resolve()
    assert not (run / "metrics.json").exists()  # an interrupted run is not evaluated
    if sig == signal.SIGTERM:  # and it resumes like a killed one
        proc = start(tmp_path / "resumed", uninterrupted.parent, f"resume={ckpt}")
        out = proc.finish()
        assert proc.returncode == 0, out[-3000:]
        assert_same_run(uninterrupted, tmp_path / "resumed")


def test_two_runs_launched_together_get_two_folders(uninterrupted, tmp_path):
    """Both at once with the default run-folder name (under tmp_path instead of outputs/): two
    folders, each with its own config and the metrics of its own seed."""
    default = yaml.safe_load((ROOT / "conf" / "train.yaml").read_text())["hydra"]["run"]["dir"]
    pattern = str(tmp_path / "runs" / Path(default).name)  # outputs/train/${now:…} → <tmp>/runs/${now:…}
    quick = [
        "schedule.epochs=1",
        "schedule.pretrain_epochs=0",
        "schedule.warm_epochs=0",
        "schedule.push_start=1",
        "schedule.push_every=1",
        "schedule.last_layer_epochs=0",
    ]
    procs = [
        start(Path(pattern), uninterrupted.parent, f"seed={s}", args=TINY + quick, log=tmp_path / f"{s}.out")
        for s in (0, 1)
    ]
    for p in procs:
        out = p.finish()
        assert p.returncode == 0, out[-3000:]
    runs = sorted(p for p in (tmp_path / "runs").iterdir() if p.is_dir())
    assert len(runs) == 2, runs
    seeds = set()
    for run in runs:
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        assert json.loads((run / "metrics.json").read_text())["seed"] == cfg["seed"]
        assert cfg["paths"]["output_dir"] == str(run)
        seeds.add(cfg["seed"])
    assert seeds == {0, 1}


def test_a_folder_holding_another_run_or_in_use_is_refused(uninterrupted, tmp_path):
    from protocell.fsutil import exclusive_lock

    run = tmp_path / "run"
    shutil.copytree(uninterrupted, run)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and ".hydra" not in p.parts}

    def train(*overrides):
        return warm.run(
            [sys.executable, "train.py", f"hydra.run.dir={run}", *LONG, *overrides],
            cwd=ROOT,
            env=env_for(uninterrupted.parent),
            capture_output=True,
            text=True,
            timeout=300,
        )

    with exclusive_lock(run / ".lock", RuntimeError):  # as a running train.py holds it
        busy = train("seed=1")
    assert busy.returncode == 2 and "Traceback" not in busy.stderr, busy.stderr[-2000:]
    assert f"train: run folder {run} is in use by another train.py (pid {os.getpid()} on" in busy.stderr
    other = train("seed=1")
    assert other.returncode == 2 and "Traceback" not in other.stderr, other.stderr[-2000:]
    assert f"train: run folder {run} already holds another run" in other.stderr
    # refused before anything was written (Hydra's own .hydra/ record and its log aside)
    after = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and ".hydra" not in p.parts}
    assert after.keys() == before.keys()
    assert {p.name for p in before if after[p] != before[p]} <= {"train.log", ".lock"}
    assert "refused" in (run / "train.log").read_text()
