"""Exact resume: a run stopped after any phase and resumed from its last checkpoint ends
bit-identical to the uninterrupted run (CPU, one thread: deterministic kernels)."""

import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import tiny_data
from lightning.pytorch.callbacks import ModelCheckpoint

from protocell.training.callbacks import KeepBestPretrain, PhaseCallback, PushCallback
from protocell.training.schedule import build_schedule

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1]))
from conftest import tiny_module  # noqa: E402

LR = {"features": 1e-3, "pretrain": 3e-3}
PLAN = build_schedule(4, warm_epochs=1, push_every=2, push_start=2, last_layer_epochs=1, pretrain_epochs=2, lr=LR)
# epochs: 0-1 pretrain, 2 warm, 3 joint + push, 4 last layer, 5 joint, 6 joint + push, 7 last layer
# (with validation cells, so that pretrain keeps its best epoch: the kept state travels in the checkpoint)


def _module():
    return tiny_module(per_class=2, last_layer="trained", lr=LR)


def _train(store, out, epochs, resume=None):
    torch.set_num_threads(1)
    dm = tiny_data(store, zero_background=True, batch_size=16, val_fraction=0.3, seed=0)
    module = _module()
    ckpt = ModelCheckpoint(dirpath=out, save_last=True, save_top_k=0, every_n_epochs=1, save_on_train_epoch_end=True)
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        deterministic=True,
        callbacks=[KeepBestPretrain(PLAN), PhaseCallback(PLAN), PushCallback(PLAN, out), ckpt],
    )
    trainer.fit(module, datamodule=dm, ckpt_path=resume, weights_only=True if resume else None)
    return module


@pytest.fixture(scope="module")
def uninterrupted(tiny_store, tmp_path_factory):
    return _train(tiny_store, tmp_path_factory.mktemp("full"), len(PLAN)).state_dict()


@pytest.mark.parametrize(
    "stop_after,phase",
    [(1, "mid-pretrain"), (2, "pretrain"), (3, "warm-up"), (4, "just after push"), (5, "last-layer"), (6, "joint")],
)
def test_resume_after_each_phase_is_bit_identical(tiny_store, tmp_path, uninterrupted, stop_after, phase):
    _train(tiny_store, tmp_path, stop_after)  # the run "killed" after this epoch
    ckpt = tmp_path / "last.ckpt"
    state = torch.load(ckpt, weights_only=True)  # protocell's checkpoint state is plain data
    if stop_after == 1:  # mid-pretrain: the best epoch so far (its features and probe) is in the checkpoint
        (kept,) = [v for k, v in state["callbacks"].items() if k.startswith("KeepBestPretrain")]
        assert kept["epoch"] == 0 and set(kept["state"]) == {"features", "probe"} and not kept["restored"]
    resumed = _train(tiny_store, tmp_path / "resumed", len(PLAN), resume=str(ckpt)).state_dict()
    for k, v in uninterrupted.items():
        assert torch.equal(v, resumed[k]) or (
            v.is_floating_point()
            and torch.equal(v.isnan(), resumed[k].isnan())
            and torch.equal(v.nan_to_num(), resumed[k].nan_to_num())
        ), (phase, k)


def test_cli_resume_loads_with_weights_only_and_reproduces_the_test_metrics(tmp_path):
    """train.py resume=<last.ckpt>: the checkpoint loads with weights_only=True (the CLI passes it) and
    the resumed run, already at its last epoch, tests to the same numbers."""
    import json

    from test_train_cli import train

    train(tmp_path / "a")
    ckpt = tmp_path / "a" / "run" / "checkpoints" / "last.ckpt"
    torch.load(ckpt, weights_only=True)
    train(tmp_path / "b", f"resume={ckpt}")
    a, b = (json.loads((tmp_path / x / "run" / "metrics.json").read_text()) for x in "ab")
    for k in ("well_label_accuracy", "well_label_auroc", "true_label_accuracy", "true_label_auroc", "pushes"):
        assert a[k] == b[k], k
