"""train.py end to end, as a user runs it (a subprocess with Hydra overrides), at tiny size."""

import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import warm
import yaml

ROOT = Path(__file__).resolve().parents[2]
TINY_WELLS = [
    "data.synthetic.wells_per_condition=2",
    "data.synthetic.fields_per_well=2",
    "data.synthetic.field_size=192",
    "data.synthetic.cells_per_field=12",
]
TINY = [
    *TINY_WELLS,
    "data.val_fraction=0.3",
    "schedule.pretrain_epochs=1",
    "data.min_epoch_cells=0",
    "schedule.epochs=3",
    "schedule.warm_epochs=1",
    "schedule.push_every=2",
    "schedule.push_start=2",
    "schedule.last_layer_epochs=1",
    "protopnet.prototypes_per_class=2",
    "explain=false",
    "trainer.enable_progress_bar=false",
    "threads=1",
]


def train(tmp_path, *overrides, check=True, store=None):
    """train.py at tiny size on the tiny synthetic wells, or on the crop store ``store`` (data=prepared)."""
    env = {**os.environ, "PROTOCELL_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    tiny = TINY if store is None else ["data=prepared", f"data.path={store}", *TINY[len(TINY_WELLS) :]]
    cmd = [sys.executable, "train.py", f"hydra.run.dir={tmp_path / 'run'}", *tiny, *overrides]
    proc = warm.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(proc.stderr[-3000:])
    return proc


def test_train_writes_a_complete_run_folder(tmp_path):
    train(tmp_path)
    run = tmp_path / "run"
    for name in (
        "config.yaml",
        ".hydra/config.yaml",
        "checkpoints/last.ckpt",
        "prototypes.pt",
        "metrics.csv",
        "metrics.json",
        "test_predictions.csv",
        "training_curves.png",
    ):
        assert (run / name).exists(), name
    metrics = json.loads((run / "metrics.json").read_text())
    preds = pd.read_csv(run / "test_predictions.csv")
    # the metrics are those of the saved predictions (recomputed here by other means), not just numbers in [0, 1]
    call = preds["call"].astype(bool) if "call" in preds else preds["pred"] == 1
    exposed, affected = preds["label"] == 1, preds["true_label"] == 1
    assert metrics["n_cells"] == len(preds) and (preds["true_label"] >= 0).all()
    assert metrics["well_label_accuracy"] == pytest.approx((call == exposed).mean())
    assert metrics["true_label_accuracy"] == pytest.approx((call == affected).mean())
    assert metrics["well_label_auroc"] == pytest.approx(pairwise_auroc(preds["score"], exposed), abs=1e-6)
    assert metrics["true_label_auroc"] == pytest.approx(pairwise_auroc(preds["score"], affected), abs=1e-6)
    assert metrics["pushes"] == 2 and metrics["receptive_field"]["size"] == 46
    # the narrow VGG-11's 46 px field inside the 64 px crop: local, no locality warning (issue 22.7)
    assert metrics["locality"]["local"] and "warning" not in metrics["locality"]
    assert metrics["epochs"] == 6 and metrics["seed"] == 0 and metrics["backbone"] == "vgg11_narrow"
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["paths"]["output_dir"] == str(run) and cfg["schedule"]["epochs"] == 3 and cfg["threads"] == 1
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"] == 6
    assert (run / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rec = torch.load(run / "prototypes.pt", weights_only=True)
    assert rec["format"] == "protocell-prototypes" and rec["vectors"].shape == (4, 64)
    assert (rec["cell_id"] >= 0).all() and rec["class_names"] == ["Ref", "Exp"]
    preds = pd.read_csv(run / "test_predictions.csv")
    manifest = pd.read_csv(Path(rec["store"]) / "manifest.csv")
    # predictions cover the test cells exactly once, and no test image was trained on
    assert preds["cell_id"].is_unique
    train_cells = set(rec["cell_id"].tolist())
    assert not train_cells & set(preds["cell_id"])
    test_images = set(manifest.set_index("cell_id").loc[preds["cell_id"], "image_id"])
    assert not test_images & set(manifest.set_index("cell_id").loc[list(train_cells), "image_id"])
    log = pd.read_csv(run / "metrics.csv")
    assert set(log["phase"].dropna().astype(int)) == {0, 1, 2, 3}  # pretrain, warm, joint, last layer
    assert sorted(log.dropna(subset=["train/loss"])["epoch"].astype(int)) == list(range(1, 6))  # after pretrain
    assert sorted(log.dropna(subset=["val/acc"])["epoch"].astype(int)) == list(range(6))


def pairwise_auroc(scores, positive) -> float:
    """P(score of a positive > score of a negative), ties counted ½: AUROC by its definition."""
    s, y = np.asarray(scores, float), np.asarray(positive, bool)
    pos, neg = s[y][:, None], s[~y][None, :]
    return float((pos > neg).mean() + 0.5 * (pos == neg).mean())


@pytest.mark.parametrize(
    "override,message",
    [
        ("backbone=alexnet", "Could not find 'backbone/alexnet'"),
        ("mask=maybe", "Could not find 'mask/maybe'"),
        ("schedule.epochs=0", "schedule.epochs=0 is invalid"),
        ("data.test_fraction=1.5", "data.test_fraction=1.5 is invalid"),
        ("protopnet.prototypes_per_class=0", "protopnet.prototypes_per_class=0 is invalid"),
        ("loss.clst=-1", "loss.clst=-1.0 is invalid"),
        ("last_layer.mode=sometimes", "last_layer.mode='sometimes' is invalid"),
        ("data.photometric.gain=-0.5", "data.photometric.gain=-0.5 is invalid"),
        ("schedule.pretrain_keep=worst", "schedule.pretrain_keep='worst' is invalid"),
        ("mask.zero_margin=-2", "mask.zero_margin=-2 is invalid"),
        ("calibration=magic", "calibration='magic' is invalid"),
        ("data.labels=cells", "data.labels='cells' is invalid"),
    ],
)
def test_bad_config_values_are_refused_before_any_work(tmp_path, override, message):
    proc = train(tmp_path, override, check=False)
    assert proc.returncode != 0
    assert message in proc.stderr
    if "Could not find" not in message:  # protocell's own refusals: one line, status 2, no traceback
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert not (tmp_path / "cache").exists()  # nothing generated, nothing trained


def test_a_run_trained_on_true_labels_says_it_is_a_ceiling_not_an_answer(tmp_path):
    """data.labels=truth (built-in wells, one cell at a time) trains and tests end to end, and its status
    can never be ok: it measures what the cells allow, not what a plate's well labels give."""
    train(tmp_path, "data.labels=truth", "data.bag_size=1")
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["status"] in ("warning", "failed")
    assert any("data.labels=truth" in r and "ceiling" in r for r in m["reasons"])
    cfg = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert cfg["data"]["labels"] == "truth"


def test_gpu_paths_are_wired_on_cpu_bf16_channels_last_compile(tmp_path):
    """bf16 mixed precision, channels_last and torch.compile run end to end (on the CPU here: this
    checks the wiring, not the speed; a GPU runs the same code paths)."""
    train(
        tmp_path,
        "trainer.precision=bf16-mixed",
        "performance.channels_last=true",
        "performance.compile=true",
        "performance.compile_backend=aot_eager",
        "schedule.epochs=2",
        "schedule.push_every=1",
        "schedule.push_start=1",
        "schedule.pretrain_epochs=0",
        "schedule.warm_epochs=0",
    )
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["pushes"] == 2 and 0 <= metrics["true_label_auroc"] <= 1


def shuffled_store(tmp_path) -> Path:
    """The tiny synthetic wells with every cell's condition shuffled: nothing to learn."""
    import shutil

    import numpy as np

    from protocell.data.synthetic import WellSpec, build_store

    src = build_store(
        tmp_path / "stores",
        WellSpec(wells_per_condition=2, fields_per_well=2, field_size=192, cells_per_field=12, seed=0),
    )
    dst = tmp_path / "shuffled"
    shutil.copytree(src, dst)
    m = pd.read_csv(dst / "manifest.csv", keep_default_na=False)
    order = np.random.default_rng(0).permutation(len(m))
    m[["condition", "label"]] = m[["condition", "label"]].to_numpy()[order]
    m.to_csv(dst / "manifest.csv", index=False)
    info = json.loads((dst / "store.json").read_text())
    info.pop("manifest_sha1", None)  # an edit on purpose (the store refuses an edited manifest otherwise)
    (dst / "store.json").write_text(json.dumps(info))
    return dst


def test_a_run_on_shuffled_labels_is_marked_failed_and_strict_exits_1(tmp_path):
    store = shuffled_store(tmp_path)
    proc = train(tmp_path, "data.normalize=cell", "strict=true", check=False, store=store)
    assert (tmp_path / "run" / "metrics.json").exists(), proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["status"] == "failed", metrics.get("reasons")
    assert metrics["reasons"] and proc.returncode == 1, proc.stderr[-2000:]
    assert "the run is failed (strict=true)" in proc.stderr
    assert 0 <= metrics["well_label_balanced_accuracy"] <= 1 and metrics["test_composition"]
    assert "Previous log files" not in proc.stderr  # the run folder is not the logger's to clear


def test_a_receptive_field_that_covers_the_crop_is_said_at_start_and_recorded(tmp_path):
    """A receptive field as large as the crop (here the narrow VGG-11's 46 px on 32 px crops; the
    card's `backbone=vgg11` on 64 px crops is the unit test's case): the prototypes cannot be parts of
    cells, and the run says so at start, in metrics.json and in its warnings (issue 22.7). The local case:
    test_train_writes_a_complete_run_folder."""
    proc = train(tmp_path, "data.crop_size=32")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    loc = metrics["locality"]
    assert loc == {
        "receptive_field": 46.0,
        "crop_size": 32,
        "latent_size": 4,
        "local": False,
        "warning": loc["warning"],
    }
    out = proc.stdout + proc.stderr
    assert "covers the whole 32 px crop" in out and "backbone.max_rf" in out
    assert any("covers the whole 32 px crop" in w for w in metrics["warnings"])
