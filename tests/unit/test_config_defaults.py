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
