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


@pytest.fixture()
def tiny_dm(tiny_store):
    from protocell.data.datamodule import CellDataModule

    dm = CellDataModule(tiny_store, crop_size=64, zero_background=True, batch_size=8, eval_batch_size=16,
                        test_fraction=0.5, val_fraction=0.0, seed=0)
    dm.setup()
    return dm


@pytest.fixture()
def tiny_net():
    import torch

    from protocell.model.backbones import build_backbone
    from protocell.model.protopnet import ProtoPNet

    torch.manual_seed(0)
    backbone = build_backbone("vgg11_narrow", 2, width=0.125, max_rf=46)
    return ProtoPNet(backbone, num_classes=2, prototypes_per_class=3, prototype_dim=16, use_mask=True)


# ----------------------------------------------------------------------------- prepare (raw plates)

@pytest.fixture(scope="session")
def synthetic_fields(tmp_path_factory):
    """Eight small 2-channel synthetic fields (2 wells × 2 fields × 2 conditions) with
    ground-truth instance labels and a plate map; read-only for the tests that use it."""
    from protocell.data.synthetic import write_fields

    return write_fields(tmp_path_factory.mktemp("fields"), wells_per_condition=2, fields_per_well=2,
                        field_size=256, cells_per_field=24, seed=1)


def prepare_config(*overrides: str) -> dict:
    """conf/prepare.yaml composed by Hydra with ``key=value`` overrides, as a plain dict."""
    from pathlib import Path

    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose(config_name="prepare", overrides=["progress=false", "workers=1", *overrides])
    return OmegaConf.to_container(cfg, resolve=True)


@pytest.fixture()
def prepare_cfg():
    return prepare_config
