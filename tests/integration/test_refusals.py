"""One error style for every entry point: a refusal of train.py, prepare.py or explain.py is one line
`<name>: <message>` on stderr naming the key or file, exit status 2, no traceback (explain's own
refusals: tests/integration/test_explain_run.py)."""

import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).parent))
import warm  # noqa: E402
from test_train_cli import TINY  # noqa: E402


def run(script, tmp_path, *overrides, env=None):
    env = {**os.environ, "PROTOCELL_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1", **(env or {})}
    return warm.run(
        [sys.executable, script, f"hydra.run.dir={tmp_path / 'run'}", *overrides],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def assert_refused(proc, name, *fragments):
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    line = [ln for ln in proc.stderr.splitlines() if ln.startswith(f"{name}: ")]
    assert len(line) == 1, proc.stderr[-3000:]
    for f in fragments:
        assert f in line[0], (f, line[0])


def test_data_prepared_without_a_path_is_refused_even_with_synthetic_settings(tmp_path):
    """experiment=smoke sets data.synthetic keys: with data=prepared they must not make the run train on
    the built-in wells (it did, silently) — data.path decides."""
    for overrides in (["data=prepared"], ["experiment=smoke", "data=prepared"]):
        assert_refused(
            run("train.py", tmp_path, *overrides, "threads=1"),
            "train",
            "config value data.path is missing",
            "data=prepared needs data.path=",
        )
    assert not (tmp_path / "cache").exists()


def test_data_path_decides_the_store_and_a_missing_store_is_named(tmp_path, tiny_store):
    assert_refused(
        run("train.py", tmp_path, "experiment=smoke", "data=prepared", f"data.path={tmp_path / 'none'}", "threads=1"),
        "train",
        f"{tmp_path / 'none'} is not a finished crop store",
    )
    proc = run(
        "train.py",
        tmp_path,
        "experiment=smoke",
        "data=prepared",
        f"data.path={tiny_store}",
        "explain=false",
        "schedule.pretrain_epochs=0",
        "schedule.epochs=1",
        "schedule.warm_epochs=0",
        "schedule.push_start=1",
        "schedule.push_every=1",
        "schedule.last_layer_epochs=0",
        "protopnet.prototypes_per_class=2",
        "threads=1",
        "trainer.enable_progress_bar=false",
        "data.val_fraction=0",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert torch.load(tmp_path / "run" / "prototypes.pt", weights_only=True)["store"] == str(tiny_store)
    assert not (tmp_path / "cache").exists()  # no synthetic wells were generated


def test_resume_from_a_truncated_checkpoint_names_the_file(tmp_path):
    bad = tmp_path / "last.ckpt"
    bad.write_bytes(b"PK\x03\x04" + bytes(100))
    assert_refused(
        run("train.py", tmp_path, *TINY, f"resume={bad}"),
        "train",
        f"resume={bad} cannot be read as a protocell checkpoint",
        "truncated",
    )
    assert_refused(
        run("train.py", tmp_path, *TINY, f"resume={tmp_path / 'nope.ckpt'}"),
        "train",
        "resume=",
        "an existing checkpoint file",
    )


@pytest.mark.parametrize("debug", [{"env": {"PROTOCELL_DEBUG": "1"}}, {"args": ["debug=true"]}])
def test_the_traceback_only_with_a_debug_flag(tmp_path, debug):
    proc = run("train.py", tmp_path, "data=prepared", "threads=1", *debug.get("args", []), env=debug.get("env"))
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "data.path is missing" in proc.stderr


def test_prepare_refusals_are_one_line(tmp_path, synthetic_fields):
    out = tmp_path / "a_file"
    out.write_text("x")
    assert_refused(
        run(
            "prepare.py",
            tmp_path,
            f"input={synthetic_fields}",
            f"plate_map={synthetic_fields / 'plate_map.csv'}",
            f"output={out}",
            "progress=false",
        ),
        "prepare",
        f"output='{out}' is invalid",
    )
    assert_refused(
        run(
            "prepare.py",
            tmp_path,
            f"input={synthetic_fields}",
            f"plate_map={synthetic_fields / 'plate_map.csv'}",
            f"output={tmp_path / 'store'}",
            "conditions=[A,B]",
            "progress=false",
        ),
        "prepare",
        "conditions=['A', 'B'] does not match",
    )
    assert not (tmp_path / "store").exists()


def test_a_prepare_output_that_cannot_be_written_is_one_line(tmp_path, synthetic_fields, unwritable):
    """Before: PermissionError / NotADirectoryError tracebacks with debug=false (issue 25.5). The tests run as
    root, so the folder is made immutable (conftest ``unwritable``), not merely read-only."""
    afile = tmp_path / "a_file"
    afile.write_text("x")
    for out, fragment in (
        (unwritable / "store", f"output={unwritable / 'store'} cannot be written ("),
        (afile / "store", f"it lies under the file {afile}"),
    ):
        assert_refused(
            run(
                "prepare.py",
                tmp_path,
                f"input={synthetic_fields}",
                "progress=false",
                "debug=false",
                f"plate_map={synthetic_fields / 'plate_map.csv'}",
                f"output={out}",
                "tile.size=128",
            ),
            "prepare",
            fragment,
        )
    assert afile.read_text() == "x" and not (unwritable / "store").exists()


@pytest.mark.parametrize(
    "script,args,fragments",
    [
        ("score.py", ["run=x", "bootstrap=0"], ["config value bootstrap=0 is invalid: an integer ≥ 1"]),
        ("score.py", ["run=x", "fdr=1.5"], ["config value fdr=1.5 is invalid: a false discovery rate in (0, 1)"]),
        ("score.py", ["run=x", "shard=first"], ["config value shard='first' is invalid: all"]),
        ("score.py", ["run=x", "data.num_workers=-1"], ["config value data.num_workers=-1 is invalid"]),
        ("score.py", [], ["config value run is missing: run=<a train.py run folder>"]),
        ("score.py", ["run=x", "bootstrapp=3"], ["config key bootstrapp is unknown: did you mean bootstrap?"]),
        ("prepare.py", ["input=x", "tile.size=32"], ["config value tile.size=32 is invalid: an integer ≥ 64"]),
        ("prepare.py", ["input=x", "mode=tiles"], ["config value mode='tiles' is invalid: one of ('plates', 'crops')"]),
        ("prepare.py", ["input=x", "mode=crops", "crops.masks=maybe"], ["config value crops.masks='maybe' is invalid"]),
        ("prepare.py", ["input=x", "normalize.high=101"], ["config value normalize.high=101.0 is invalid"]),
        ("prepare.py", [], ["config value input is missing: input=<folder of raw images>"]),
        (
            "prepare.py",
            ["input=x", "cells.min_aera=3"],
            ["config key cells.min_aera is unknown: did you mean cells.min_area?"],
        ),
        ("train.py", ["schedule.epoch=1"], ["config key schedule.epoch is unknown: did you mean schedule.epochs?"]),
    ],
)
def test_a_bad_value_or_a_misspelt_key_is_refused_in_one_line_naming_the_key(tmp_path, script, args, fragments):
    """prepare.py and score.py check their schemas (protocell/config_commands.py) as train.py does, before
    any work: a misspelt key names the closest one (Hydra's own refusal advised ``+key=…``)."""
    assert_refused(run(script, tmp_path, *args), script.removesuffix(".py"), *fragments)
