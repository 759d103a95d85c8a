"""One place for each default: the schema (protocell/config.py) mirrors the default composition of
conf/train.yaml, so a Python user of the schema and a CLI user get the same model."""

from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from protocell.config import SyntheticConfig, TrainConfig, register

CONF = Path(__file__).resolve().parents[2] / "conf"
# keys whose schema default cannot be the composed value, and why
NOT_MIRRORED = {
    "data.path": "mandatory (???) in the schema: a default of null would hide data=prepared without a path",
    "data.synthetic": "the built-in plate is the data group's; its fields are compared with SyntheticConfig below",
    "trainer": "a Lightning Trainer's arguments (group trainer/), not a protocell schema",
    "logger": "a Lightning logger (group logger/)",
    "paths": "Hydra's run folder and the cache, resolved at run time",
}


def _leaves(node, prefix=""):
    for key in node:
        path = f"{prefix}{key}"
        if path in NOT_MIRRORED:
            continue
        value = node[key] if not OmegaConf.is_missing(node, key) else "???"
        if OmegaConf.is_dict(value):
            yield from _leaves(value, f"{path}.")
        else:
            yield path, OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def _composed():
    register()
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        return compose(config_name="train")


def test_every_schema_default_is_the_default_runs_value():
    cfg = _composed()
    schema = dict(_leaves(OmegaConf.structured(TrainConfig)))
    composed = dict(_leaves(cfg))
    differ = {k: (schema[k], composed.get(k, "<absent>")) for k in schema if schema[k] != composed.get(k, "<absent>")}
    assert not differ, f"schema default vs conf/ (schema, yaml): {differ}"
    assert set(composed) - set(schema) == set(), "keys in conf/train.yaml that the schema does not know"


def test_the_built_in_plates_defaults_are_the_data_groups():
    plate = OmegaConf.to_container(_composed().data.synthetic, resolve=True)
    default = OmegaConf.to_container(OmegaConf.structured(SyntheticConfig))
    assert plate == default
