"""One place for each default: the schema (protocell/config.py) mirrors the default composition of
conf/train.yaml, so a Python user of the schema and a CLI user get the same model."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from protocell.config import SyntheticConfig, TrainConfig, register
from protocell.config_commands import PrepareConfig, ScoreConfig
from protocell.config_commands import register as register_commands

CONF = Path(__file__).resolve().parents[2] / "conf"
# keys whose schema default cannot be the composed value, and why
NOT_MIRRORED = {
    "data.path": "mandatory (???) in the schema: a default of null would hide data=prepared without a path",
    "data.synthetic": "the built-in plate is the data group's; its fields are compared with SyntheticConfig below",
    "trainer": "a Lightning Trainer's arguments (group trainer/), not a protocell schema",
    "logger": "a Lightning logger (group logger/)",
    "paths": "Hydra's run folder and the cache, resolved at run time",
}


def _leaves(node, prefix="", not_mirrored=NOT_MIRRORED):
    for key in node:
        path = f"{prefix}{key}"
        if path in not_mirrored:
            continue
        value = node[key] if not OmegaConf.is_missing(node, key) else "???"
        if OmegaConf.is_dict(value):
            yield from _leaves(value, f"{path}.", not_mirrored)
        else:
            yield path, OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def _composed(name="train"):
    register()
    register_commands()
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        return compose(config_name=name)


def _schema_vs_yaml(name, schema_class, not_mirrored):
    schema = dict(_leaves(OmegaConf.structured(schema_class), "", not_mirrored))
    composed = dict(_leaves(_composed(name), "", not_mirrored))
    differ = {k: (schema[k], composed.get(k, "<absent>")) for k in schema if schema[k] != composed.get(k, "<absent>")}
    assert not differ, f"schema default vs conf/{name}.yaml (schema, yaml): {differ}"
    assert set(composed) - set(schema) == set(), f"keys in conf/{name}.yaml that the schema does not know"
    return composed


def test_every_schema_default_is_the_default_runs_value():
    _schema_vs_yaml("train", TrainConfig, NOT_MIRRORED)


@pytest.mark.parametrize(
    "name,schema,not_mirrored",
    [
        ("score", ScoreConfig, {}),
        ("prepare", PrepareConfig, {"segmentation": "a group whose keys depend on the method (conf/segmentation/)"}),
    ],
)
def test_every_command_schema_default_is_its_yaml_value(name, schema, not_mirrored):
    """prepare.py and score.py as train.py: the schema (protocell/config_commands.py) mirrors the YAML;
    and the schema changes no value of the YAML, nor its type (a YAML 1 under a float key would compose
    as 1.0: another config hash for prepare)."""
    composed = _schema_vs_yaml(name, schema, not_mirrored)
    raw = OmegaConf.load(CONF / f"{name}.yaml")
    groups = [e for e in raw.pop("defaults") if isinstance(e, DictConfig)]
    raw.pop("hydra")
    for entry in groups:
        for group, option in entry.items():
            if not group.startswith("override"):
                raw[group] = OmegaConf.load(CONF / group / f"{option}.yaml")
    plain = dict(_leaves(raw, "", not_mirrored))
    assert {k: (v, type(v)) for k, v in plain.items()} == {k: (v, type(v)) for k, v in composed.items()}


def test_the_built_in_plates_defaults_are_the_data_groups():
    plate = OmegaConf.to_container(_composed().data.synthetic, resolve=True)
    default = OmegaConf.to_container(OmegaConf.structured(SyntheticConfig))
    assert plate == default
    # and the generator's own dataclass: WellSpec() is the plate a default run trains on (same cache key)
    from protocell.build import synthetic_spec
    from protocell.data.synthetic import WellSpec

    assert synthetic_spec(_composed()).as_dict() == WellSpec().as_dict()


def _flat(d: dict, prefix: str = ""):
    for key, value in d.items():
        if isinstance(value, dict) and value:
            yield from _flat(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _own_keys(group: str, name: str) -> dict:
    """The keys a group file sets itself and through the files of its own group it lists in
    ``defaults`` (``- paper_common``), the later winning; ``override /…`` entries are other groups'."""
    import yaml

    text = yaml.safe_load((CONF / group / f"{name}.yaml").read_text()) or {}
    keys: dict = {}
    for entry in text.pop("defaults", []):
        if isinstance(entry, str) and entry != "_self_":
            keys.update(_own_keys(group, entry))
    keys.update(dict(_flat(text)))
    return keys


def test_every_experiments_and_objectives_keys_reach_the_composed_config():
    """A key an experiment (or objective) file sets must be the composed value: with ``_self_`` after the
    experiment in conf/train.yaml's defaults, train.yaml's own keys silently won over the experiment's
    (experiment=paper_* trained with protocell's loss, prototype initialisation and rates, not ProtoPNet's)."""
    register()
    checked = 0
    for group in ("experiment", "objective"):
        for path in sorted((CONF / group).glob("*.yaml")):
            if path.stem.endswith("_common"):
                continue  # included by the experiments, not chosen alone
            with initialize_config_dir(config_dir=str(CONF), version_base=None):
                cfg = compose(config_name="train", overrides=[f"{group}={path.stem}"])
            for key, value in _own_keys(group, path.stem).items():
                got = OmegaConf.select(cfg, key)
                got = OmegaConf.to_container(got, resolve=True) if OmegaConf.is_config(got) else got
                assert got == value, (
                    f"{group}={path.stem}: {key} is {got!r} in the composed config, the file says {value!r}"
                )
                checked += 1
    assert checked > 50
