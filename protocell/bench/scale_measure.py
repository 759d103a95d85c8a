"""The measured runs of the scale bench (``protocell.bench.scale``): prepare and score of the plate, each a
fresh process timed with its peak RSS, in one task and in 2 share tasks + the merge, the stores and score
tables of both compared.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from protocell.bench.prepare_bench import _WRAPPER
from protocell.bench.scale_plate import CHANNELS

ROOT = Path(__file__).resolve().parents[2]

Step = Callable[[str, dict], None]  # told each measured run's figures as it finishes (make bench records them)


def no_step(name: str, figures: dict) -> None:
    pass


def timed(cmd: list[str], env: dict) -> dict:
    """Run ``cmd`` in a fresh wrapper process: seconds and the peak RSS of its largest process (MB)."""
    res = subprocess.run([sys.executable, "-c", _WRAPPER, *cmd], capture_output=True, text=True, env=env, cwd=ROOT)
    rec = json.loads(res.stdout.strip().splitlines()[-1])
    if rec["rc"] != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{rec['stderr']}")
    return {"seconds": rec["seconds"], "peak_rss_mb": rec["maxrss_kb"] / 1024}


def prepare_args(plate: Path, plate_map: str, store: Path, logs: Path) -> list[str]:
    return [
        f"input={plate}",
        f"plate_map={plate / plate_map}",
        f"output={store}",
        "progress=false",
        f"channels.names=[{','.join(CHANNELS)}]",
        "channels.main=actin",
        "channels.second=nuclei",
        f"hydra.run.dir={logs}",
        f"hydra.sweep.dir={logs}",
    ]


def files_digest(store: Path) -> str:
    """One hash of every shard file, the manifest and store.json without its output folder."""
    h = hashlib.sha1()
    for p in sorted((store / "shards").glob("*.npy")) + [store / "manifest.csv"]:
        h.update(p.name.encode())
        with open(p, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 24), b""):
                h.update(block)
    info = json.loads((store / "store.json").read_text())
    info["prepare"]["config"].pop("output", None)
    h.update(json.dumps(info, sort_keys=True).encode())
    return h.hexdigest()


def disk_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def prepare_in_shares(plate: Path, plate_map: str, store: Path, logs: Path, env: dict) -> dict:
    """2 share tasks of one worker (hydra/launcher=local) and the merge: wall seconds of the tasks, each task's
    report (seconds, peak RSS), the merge's seconds and peak RSS, cells."""
    py = [sys.executable, "prepare.py"]
    args = prepare_args(plate, plate_map, store, logs)
    tasks = timed(
        [
            *py,
            "-m",
            "hydra/launcher=local",
            "hydra.launcher.timeout_min=1440",
            *args,
            "workers=1",
            "shards=2",
            "shard=0,1",
        ],
        env,
    )
    merge = timed([*py, *args, "workers=1", "shards=2", "shard=merge"], env)
    summary = json.loads((store / "prepare_summary.json").read_text())
    return {
        "seconds": tasks["seconds"],
        "tasks": summary["shares"],
        "merge": merge,
        "cells": summary["cells"],
        "augmented": summary["augmented"],
        "images": summary["images"],
        "megapixels": summary["megapixels"],
    }


def measure_prepare(plate: Path, work: Path, env: dict, step: Step = no_step) -> tuple[dict, Path, Path]:
    """The prepare runs; returns (figures, the 2-task store, the quarter-plate store). ``step`` is told each
    run's figures as it finishes."""
    py = [sys.executable, "prepare.py"]
    res: dict[str, Any] = {}
    quarter = work / "store_quarter"
    res["quarter_two_tasks"] = prepare_in_shares(plate, "plate_map_quarter.csv", quarter, work / "logs_q", env)
    step("prepare_quarter_two_tasks", res["quarter_two_tasks"])

    two_workers = work / "store_2w"
    res["one_task_two_workers"] = timed(
        [*py, *prepare_args(plate, "plate_map.csv", two_workers, work / "logs_2w"), "workers=2"], env
    )
    step("prepare_one_task_two_workers", res["one_task_two_workers"])
    shutil.rmtree(two_workers)

    one = work / "store_1t"
    r = timed([*py, *prepare_args(plate, "plate_map.csv", one, work / "logs_1t"), "workers=1"], env)
    s1 = json.loads((one / "prepare_summary.json").read_text())
    res["one_task"] = {
        **r,
        "cells": s1["cells"],
        "augmented": s1["augmented"],
        "images": s1["images"],
        "megapixels": s1["megapixels"],
        "store_mb": disk_mb(one),
    }
    step("prepare_one_task", res["one_task"])

    two = work / "store_2t"
    res["two_tasks"] = prepare_in_shares(plate, "plate_map.csv", two, work / "logs_2t", env)
    res["identical_to_one_task"] = files_digest(two) == files_digest(one)
    step("prepare_two_tasks", {**res["two_tasks"], "identical_to_one_task": res["identical_to_one_task"]})
    shutil.rmtree(one)
    return res, two, quarter


def train_tiny_run(work: Path, env: dict) -> Path:
    """A run to score with: ``experiments/score_dose.py``'s tiny training (a minute), kept under ``work``."""
    run = work / "run"
    if (run / "metrics.json").exists():
        return run
    sys.path.insert(0, str(ROOT / "experiments"))
    from score_dose import TINY

    # calibration=noisy_label: score reads the noisy-label calibration (docs/score.md)
    subprocess.run(
        [
            sys.executable,
            "train.py",
            "plate=dose_series",
            f"hydra.run.dir={run}",
            "threads=1",
            "explain=false",
            "trainer.enable_progress_bar=false",
            "calibration=noisy_label",
            *TINY,
        ],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    return run


def score_in_shares(py: list[str], store: Path, out: Path, logs: Path, env: dict) -> dict:
    tasks = timed(
        [
            *py[:2],
            "-m",
            "hydra/launcher=local",
            "hydra.launcher.timeout_min=1440",
            *py[2:],
            f"data.path={store}",
            f"out={out}",
            "shards=2",
            "shard=0,1",
            f"hydra.sweep.dir={logs}",
        ],
        env,
    )
    reports = [json.loads(p.read_text()) for p in sorted((out / ".score-shares").glob("*.json"))]
    merge = timed([*py, f"data.path={store}", f"out={out}", "shards=2", "shard=merge"], env)
    return {"seconds": tasks["seconds"], "tasks": reports, "merge": merge, "cells": sum(r["cells"] for r in reports)}


def measure_score(run: Path, store: Path, quarter: Path, work: Path, env: dict, step: Step = no_step) -> dict:
    py = [sys.executable, "score.py", f"run={run}", "threads=1", "progress=false", "wandb=false"]
    res: dict[str, Any] = {
        "quarter_two_tasks": score_in_shares(py, quarter, work / "score_q", work / "logs_score_q", env)
    }
    step("score_quarter_two_tasks", res["quarter_two_tasks"])
    one = timed([*py, f"data.path={store}", f"out={work / 'score_1t'}"], env)
    cells = len(pd.read_csv(work / "score_1t" / "score" / "cells.csv", usecols=["cell_id"]))
    res["one_task"] = {**one, "cells": cells}
    step("score_one_task", res["one_task"])
    res["two_tasks"] = score_in_shares(py, store, work / "score_2t", work / "logs_score_2t", env)
    res["identical_to_one_task"] = all(
        (work / "score_2t" / "score" / f"{t}.csv").read_bytes()
        == (work / "score_1t" / "score" / f"{t}.csv").read_bytes()
        for t in ("cells", "wells", "treatments", "prototype_enrichment")
    )
    step("score_two_tasks", {**res["two_tasks"], "identical_to_one_task": res["identical_to_one_task"]})
    return res
