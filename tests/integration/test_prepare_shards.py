"""prepare in shares, as on a cluster (docs/usage.md, "A screen on SLURM"): a store spanning two plates
prepared by two share tasks through Hydra's submitit launcher (hydra/launcher=local: the code path of
hydra/launcher=slurm_cpu) and merged is the store one process writes — every crop, mask, augmented crop,
manifest row, overlay and store.json; a merge is refused, naming the share, while a share is missing; a
share task killed with SIGKILL is re-run alone and redoes only its unfinished images."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import warm
from conftest import assert_store_folder, prepare_config, tiny_data

from protocell.data.split import choose_split
from protocell.errors import ProtocellError
from protocell.fsutil import exclusive_lock
from protocell.prepare.assemble import split_images
from protocell.prepare.io import InputError
from protocell.prepare.pipeline import prepare

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def two_plates(tmp_path_factory, synthetic_fields):
    """The 8 synthetic fields as plate1 and copies of them as plate2 (image ids of their own): 16 images."""
    root = tmp_path_factory.mktemp("two_plates")
    shutil.copytree(
        synthetic_fields / "fields", root / "plate2", ignore=shutil.ignore_patterns("*.labels.tif", "*.texture.tif")
    )
    one = pd.read_csv(synthetic_fields / "plate_map.csv")
    two = one.assign(
        image=[f"plate2/{Path(p).name}" for p in one["image"]],
        plate="plate2",
        image_id=[f"p2_{Path(p).stem}" for p in one["image"]],
    )
    one = one.assign(
        image=[str(synthetic_fields / p) for p in one["image"]], image_id=[Path(p).stem for p in one["image"]]
    )
    pd.concat([one, two]).to_csv(root / "plate_map.csv", index=False)
    return root


def _args(plates: Path, out: Path) -> list[str]:
    return [
        f"input={plates}",
        f"plate_map={plates / 'plate_map.csv'}",
        f"output={out}",
        "tile.size=128",
        "augment.copies=1",
        "summary.overlays=3",
        "workers=1",
        "progress=false",
    ]


@pytest.fixture(scope="module")
def one_process(two_plates, tmp_path_factory):
    return prepare(prepare_config(*_args(two_plates, tmp_path_factory.mktemp("one") / "store")))


def store_content(out: Path) -> dict:
    """Every file of the store but the summary (which says how long it took): path → sha1; store.json with
    its output folder left out (the one thing two stores in two folders cannot share)."""
    files = {}
    for p in sorted(out.rglob("*")):
        rel = p.relative_to(out).as_posix()
        if p.is_file() and not rel.startswith(".prepare/") and rel not in ("prepare_summary.json", "store.json"):
            files[rel] = hashlib.sha1(p.read_bytes()).hexdigest()
    info = json.loads((out / "store.json").read_text())
    del info["prepare"]["config"]["output"]
    files["store.json"] = info
    return files


def test_two_share_tasks_through_the_local_launcher_merge_into_the_one_process_store(two_plates, one_process, tmp_path):
    out = tmp_path / "store"
    proc = warm.run(
        [
            sys.executable,
            "prepare.py",
            "-m",
            "hydra/launcher=local",
            *_args(two_plates, out),
            "shards=2",
            "shard=0,1",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
        ],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(list((tmp_path / "sweep" / ".submitit").glob("*/*_log.out"))) == 2  # two tasks, not this process
    assert not (out / "store.json").exists() and not (out / "manifest.csv").exists()  # no store before the merge
    proc = warm.run(
        [
            sys.executable,
            "prepare.py",
            *_args(two_plates, out),
            "shards=2",
            "shard=merge",
            f"hydra.run.dir={tmp_path / 'merge'}",
        ],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"train on it: python train.py data=prepared data.path={out}" in proc.stdout

    merged, single = store_content(out), store_content(one_process)
    assert merged == single  # every crop, mask, augmented crop, manifest row, overlay
    assert_store_folder(out)
    m = pd.read_csv(out / "manifest.csv", dtype={"well": str})
    assert sum(f.startswith("shards/") and f.endswith(".crops.npy") for f in merged) == m["shard"].nunique() > 16
    assert set(m["plate"]) == {"plate1", "plate2"}
    summary = json.loads((out / "prepare_summary.json").read_text())
    assert [s["share"] for s in summary["shares"]] == [0, 1]
    assert [s["images"] for s in summary["shares"]] == [8, 8]
    assert sum(s["cells"] for s in summary["shares"]) == summary["cells"] == int((m["aug_of"] < 0).sum())
    assert all(s["peak_rss_mb"] > 50 and s["seconds"] > 0 for s in summary["shares"])
    # the split keeps each plate whole as a stratum: each plate's images of a condition split alike
    orig = m[m["aug_of"] < 0]
    per = orig.groupby(["plate", "condition", "split"])["image_id"].nunique()
    assert per.to_dict() == {
        (p, c, s): 2 for p in ("plate1", "plate2") for c in ("Exp", "Ref") for s in ("test", "train")
    }


def test_a_missing_share_is_refused_by_name_and_a_killed_share_is_redone_alone(two_plates, one_process, tmp_path):
    out = tmp_path / "store"
    args = _args(two_plates, out)
    prepare(prepare_config(*args, "shards=2", "shard=0"))
    with pytest.raises(
        InputError,
        match=r"share\(s\) 1 of 2 are not complete \(8 of 16 images .*shard=1 — then "
        r"shard=merge; nothing was written",
    ):
        prepare(prepare_config(*args, "shards=2", "shard=merge"))
    assert not (out / "manifest.csv").exists() and not (out / "store.json").exists()

    # share 1 killed with SIGKILL once it has finished an image
    images = out / ".prepare" / "images"
    share0 = {p.name: p.stat().st_mtime_ns for p in (*images.glob("*.json"), *(out / "shards").glob("*.npy"))}
    cmd = [sys.executable, "prepare.py", *args, "shards=2", "shard=1", f"hydra.run.dir={tmp_path / 'killed'}"]
    proc = warm.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while len(list(images.glob("*.json"))) <= 8 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = sorted(p.stem for p in images.glob("*.json") if p.name not in share0)
    assert 0 < len(finished) < 8, "the kill should fall between share 1's first and last image"
    kept = {p.name: p.stat().st_mtime_ns for p in (*images.glob("*.json"), *(out / "shards").glob("*.npy"))}
    with pytest.raises(InputError, match=r"share\(s\) 1 of 2"):
        prepare(prepare_config(*args, "shards=2", "shard=merge"))

    prepare(prepare_config(*args, "shards=2", "shard=1"))  # the re-run of share 1 alone
    now = {p.name: p.stat().st_mtime_ns for p in (*images.glob("*.json"), *(out / "shards").glob("*.npy"))}
    assert all(now[f] == t for f, t in share0.items())  # share 0: not touched
    theirs = [f for f in kept if any(f == f"{i}.json" or f.startswith(f"{i}-") for i in finished)]
    assert len(theirs) > len(finished) and all(now[f] == kept[f] for f in theirs)  # finished images of share 1: kept
    assert len([f for f in set(now) - set(kept) if f.endswith(".json")]) == 8 - len(finished)  # the others: done
    prepare(prepare_config(*args, "shards=2", "shard=merge"))
    assert store_content(out) == store_content(one_process)
    assert_store_folder(out)


def test_share_tasks_and_a_merge_exclude_each_other_and_bad_share_settings_are_refused(two_plates, tmp_path):
    out = tmp_path / "store"
    args = _args(two_plates, out)
    prepare(prepare_config(*args, "shards=4", "shard=3"))
    refuse = AssertionError
    with exclusive_lock(out / ".prepare" / "lock", refuse, shared=True):  # a share task is running
        with pytest.raises(InputError, match="is being written by another prepare"):
            prepare(prepare_config(*args, "shards=4", "shard=merge"))
        with pytest.raises(InputError, match="is being written by another prepare"):
            prepare(prepare_config(*args))  # a whole prepare, too
        prepare(prepare_config(*args, "shards=4", "shard=2"))  # other shares run beside it
    with (
        exclusive_lock(out / ".prepare" / "lock-share-2", refuse),
        pytest.raises(InputError, match="share 2 of output=.* is being prepared by another task"),
    ):
        prepare(prepare_config(*args, "shards=4", "shard=2"))  # share 2 still running elsewhere
    for bad, match in (
        (["shards=2", "shard=2"], "shard=2 is invalid"),
        (["shards=0"], "shards=0 is invalid"),
        (["shard=first"], "shard='first' is invalid"),
    ):
        with pytest.raises(ProtocellError, match=match):
            prepare(prepare_config(*args, *bad))


def test_split_by_plate_holds_whole_plates_out_and_a_single_plate_is_refused(one_process):
    dm = tiny_data(one_process, split_by="plate", test_fraction=0.5, val_fraction=0.3, seed=0)
    dm.setup()
    m = dm.store.manifest
    plates = {s: set(m.loc[dm.rows[s], "plate"]) for s in ("train", "val", "test")}
    assert len(plates["test"]) == 1 and plates["train"] == plates["val"] == {"plate1", "plate2"} - plates["test"]
    assert set(m.loc[dm.rows["train"], "condition"]) == {"Ref", "Exp"}
    val_wells = set(m.loc[dm.rows["val"], "well"])
    assert val_wells and not val_wells & set(m.loc[dm.rows["train"], "well"])  # validation: whole wells
    one = m[m["plate"] == "plate1"]
    with pytest.raises(ProtocellError, match=r"data.split_by='plate' is invalid: .* on 1 plate\(s\) \['plate1'\]"):
        choose_split(one, 0.5, 0.3, "plate")


def test_the_split_of_one_plate_is_the_split_by_condition_and_of_two_each_plates_own():
    conditions = {f"i{k}": "Ref" if k % 2 else "Exp" for k in range(12)}
    assert split_images(conditions, 0.5, 0, {i: "p1" for i in conditions}) == split_images(conditions, 0.5, 0)
    plates = {i: "p1" if int(i[1:]) < 8 else "p2" for i in conditions}
    split = split_images(conditions, 0.5, 0, plates)
    counts = pd.Series(split).groupby([pd.Series(plates), pd.Series(conditions)]).value_counts()
    assert counts.to_dict() == {
        ("p1", "Exp", "test"): 2,
        ("p1", "Exp", "train"): 2,
        ("p1", "Ref", "test"): 2,
        ("p1", "Ref", "train"): 2,
        ("p2", "Exp", "test"): 1,
        ("p2", "Exp", "train"): 1,
        ("p2", "Ref", "test"): 1,
        ("p2", "Ref", "train"): 1,
    }
    assert np.mean([s == "test" for s in split.values()]) == 0.5
