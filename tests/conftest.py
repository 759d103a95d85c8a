"""Shared fixtures: a tiny synthetic crop store (seconds to build) and a small network."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory):
    from protocell.data.synthetic import WellSpec, build_store

    root = tmp_path_factory.mktemp("stores")
    spec = WellSpec(wells_per_condition=2, fields_per_well=2, field_size=192, cells_per_field=12, seed=3)
    return build_store(root, spec)


# wells imaged with optics σ 0.6–0.8 (Ref) against 0.8–1.0 px (Exp), nothing else differing
BLUR_ONLY = {"gain": 0.0, "blur": 0.25, "noise": 0.0, "align": 1.0}


@pytest.fixture(scope="session")
def blurry(tmp_path_factory):
    """(store, spec): 4 wells a condition whose optics blur lines up with it (``BLUR_ONLY``)."""
    from protocell.data.synthetic import WellSpec, build_store

    spec = WellSpec(
        wells_per_condition=4, fields_per_well=2, field_size=320, cells_per_field=24, seed=11, well_effects=BLUR_ONLY
    )
    return build_store(tmp_path_factory.mktemp("blur"), spec), spec


@pytest.fixture()
def tiny_dm(tiny_store):
    dm = tiny_training_data(tiny_store, test_fraction=0.5, val_fraction=0.0)
    dm.setup()
    return dm


# the tests' DataModule settings (small and explicit; train.py's come from conf/data, conf/mask): ``tiny_data``'s
# keyword arguments replace any of them
TINY_DATA = {
    "crop_size": 64,
    "channels": None,
    "zero_background": False,
    "augment": True,
    "normalize": "dataset",
    "test_fraction": 0.5,
    "val_fraction": 0.2,
    "batch_size": 64,
    "eval_batch_size": None,
    "num_workers": 0,
    "split_by": "auto",
    "seed": 0,
    "photometric": None,
    "zero_margin": 0,
    "bag_size": 1,
    "labels": "well",
    "level_imaging": False,
    "min_epoch_cells": 0,
}


def tiny_training_data(path, test_fraction: float, val_fraction: float):
    """The small training runs' DataModule: 64 px crops, zeroed background, batches of 8 (16 to evaluate)."""
    return tiny_data(
        path,
        crop_size=64,
        zero_background=True,
        batch_size=8,
        eval_batch_size=16,
        test_fraction=test_fraction,
        val_fraction=val_fraction,
        seed=0,
    )


def tiny_data(path, **kw):
    """A CellDataModule on the store at ``path`` with TINY_DATA's settings and ``kw``."""
    from protocell.data.datamodule import CellDataModule

    return CellDataModule(path, **{**TINY_DATA, **kw})


TINY_SPEC = {
    "backbone": {"name": "vgg11_narrow", "width": 0.125, "max_rf": 46, "pretrained": False, "batch_norm": True},
    "head": {
        "prototypes_per_class": 3,
        "prototype_dim": 16,
        "use_mask": True,
        "mask_penalty": None,
        "incorrect_class_weight": -0.5,
    },
    "in_channels": 2,
}


# the unit tests' module settings (chosen for tiny, fast networks; train.py's come from conf/): ``lr`` given to
# ``tiny_module`` is merged into TINY_LR
TINY_LR = {"features": 1e-3, "add_on": 3e-3, "prototypes": 3e-3, "last_layer": 1e-3, "pretrain": 1e-3}
TINY_SETTINGS = {
    "last_layer": "trained",
    "weight_decay": 1e-3,
    "clst": 0.8,
    "sep": 0.08,
    "l1": 1e-4,
    "div": 0.0,
    "ref_sim": 0.0,
    "ramp_epochs": 0,
    "bag_size": 1,
    "separation": "all",
    "head": "protopnet",
    "channels_last": False,
}


def tiny_module(seed: int = 0, per_class: int = 3, dim: int = 16, lr: dict | None = None, **kw):
    """A ProtoPNetModule on the narrow VGG-11 (RF 46 px), built as train.py builds it."""
    import torch

    from protocell.model.module import ProtoPNetModule

    torch.manual_seed(seed)
    spec = {**TINY_SPEC, "head": {**TINY_SPEC["head"], "prototypes_per_class": per_class, "prototype_dim": dim}}
    return ProtoPNetModule(spec, class_names=["Ref", "Exp"], lr={**TINY_LR, **(lr or {})}, **{**TINY_SETTINGS, **kw})


def fit_plan(module, dm, plan, tmp_path=None, extra=(), callbacks=None):
    """Fit ``module`` on ``dm`` through ``plan`` (one Phase an epoch) with ``extra`` callbacks first, then
    the phase and push callbacks, as train.py orders them (``callbacks``: exactly these instead); no
    logger, no checkpoint."""
    import lightning as L

    from protocell.training.callbacks import PhaseCallback, PushCallback

    trainer = L.Trainer(
        max_epochs=len(plan),
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=callbacks if callbacks is not None else [*extra, PhaseCallback(plan), PushCallback(plan, tmp_path)],
    )
    trainer.fit(module, datamodule=dm)
    return trainer


@pytest.fixture()
def tiny_net():
    return tiny_module().net


# ----------------------------------------------------------------------------- prepare (raw plates)


@pytest.fixture(scope="session")
def synthetic_fields(tmp_path_factory):
    """Eight small 2-channel synthetic fields (2 wells × 2 fields × 2 conditions) with
    ground-truth instance labels and a plate map; read-only for the tests that use it."""
    from protocell.data.synthetic import write_fields

    return write_fields(
        tmp_path_factory.mktemp("fields"),
        wells_per_condition=2,
        fields_per_well=2,
        field_size=256,
        cells_per_field=24,
        seed=1,
    )


def prepare_config(*overrides: str) -> dict:
    """conf/prepare.yaml composed by Hydra with ``key=value`` overrides, as a plain dict."""
    from pathlib import Path

    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from protocell.config_commands import register

    register()  # conf/prepare.yaml starts from prepare_schema
    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose(config_name="prepare", overrides=["progress=false", "workers=1", *overrides])
    return OmegaConf.to_container(cfg, resolve=True)


@pytest.fixture()
def prepare_cfg():
    return prepare_config


def assert_store_folder(out) -> None:
    """A finished prepare output holds exactly: store.json, manifest.csv, prepare_summary.json, the
    crops and masks of the shards the manifest uses (no orphan, no temporary file), the resumability
    records and lock in .prepare/ (and the share tasks' locks and reports, when it was prepared in shares), overlay
    PNGs and the confound table (confounds.csv, when two conditions have cells)."""
    import re
    from pathlib import Path

    import pandas as pd

    out = Path(out)
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    shards = set(pd.read_csv(out / "manifest.csv", dtype={"shard": str})["shard"])
    expected_shards = {f"shards/{s}.{kind}.npy" for s in shards for kind in ("crops", "masks")}
    rest = (
        files
        - expected_shards
        - {"store.json", "manifest.csv", "prepare_summary.json", "confounds.csv", ".prepare/lock"}
    )
    assert expected_shards <= files, sorted(expected_shards - files)
    unexpected = sorted(
        f
        for f in rest
        if not re.fullmatch(
            r"\.prepare/(images|stats|aug)/[^/]+\.json|overlays/[^/]+\.png|"
            r"\.prepare/lock-share-\d+|\.prepare/shares/\d+-of-\d+\.json",
            f,
        )
    )
    assert not unexpected, unexpected


def skip_or_fail(reason: str) -> None:
    """Skip with the reason printed, except under CI=true, where `make setup` provides the shared data
    folder and chromium and their absence is a failure."""
    import os

    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true: {reason}")
    print(f"SKIPPED: {reason}")
    pytest.skip(reason)


def require_shared_data(path, what: str) -> None:
    """``skip_or_fail`` without the shared data folder at ``path``."""
    from pathlib import Path

    if not Path(path).is_dir():
        skip_or_fail(f"{what} is not at {path} (no shared data folder beside the repository)")


@pytest.fixture()
def unwritable(tmp_path):
    """A folder nothing can be created in, even by root (the tests run as root, who ignores permission
    bits): made immutable with ``chattr +i`` as root, read-only (mode 555) otherwise; sysfs as a last
    resort. Each candidate is probed: creating a folder in it must fail."""
    import shutil
    import subprocess
    from pathlib import Path

    folder = tmp_path / "unwritable"
    folder.mkdir()
    undo = None
    if (
        os.geteuid() == 0
        and shutil.which("chattr")
        and subprocess.run(["chattr", "+i", str(folder)], capture_output=True, check=False).returncode == 0
    ):
        undo = ["chattr", "-i", str(folder)]
    elif os.geteuid() != 0:
        folder.chmod(0o555)
    candidates = [folder, Path("/sys")]
    try:
        for candidate in candidates:
            try:
                (candidate / "protocell-probe").mkdir()
            except OSError:
                yield candidate
                return
            (candidate / "protocell-probe").rmdir()
        pytest.fail("no folder that refuses writes was found (chattr +i, mode 555, /sys)")
    finally:
        if undo:
            subprocess.run(undo, check=True)
        folder.chmod(0o755)


def toy_reference_fit(seed: int = 5) -> dict:
    """A fraction reference (``fit_reference``) on made-up held-out control scores in which affected
    cells score high: 400 reference cells, 400 exposed cells of which 40 % are affected."""
    import numpy as np

    from protocell.evaluate.fraction import fit_reference

    rng = np.random.default_rng(seed)
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    s = np.r_[
        sig(rng.normal(-1, 1, 400)), sig(np.where(rng.random(400) < 0.4, rng.normal(2, 1, 400), rng.normal(-1, 1, 400)))
    ]
    return fit_reference(s, np.r_[np.zeros(400, bool), np.ones(400, bool)])
