"""prepare.py's and score.py's schemas (protocell/config_commands.py): the library entry points check the
same rules as the commands, and a misspelt command-line key is found before Hydra composes."""

import pytest

from protocell.config import TrainConfig
from protocell.config_check import unknown_key
from protocell.config_commands import PrepareConfig, ScoreConfig
from protocell.errors import ConfigError


@pytest.mark.parametrize(
    "args,found",
    [
        (["workerz=3"], "config key workerz is unknown: did you mean workers?"),
        (["input=x", "tile.sise=3"], "config key tile.sise is unknown: did you mean tile.size?"),
        (["zzz=1"], "config key zzz is unknown: keys: ["),
        (["segmentation.model=x", "channels.map={d0: dna}", "+extra=1", "~metadata", "hydra.job.chdir=true"], None),
        (["-m", "shard=range(2)", "shards=2", "--cfg", "job", "hydra/launcher=slurm_cpu"], None),
    ],
)
def test_unknown_keys_of_prepare(args, found):
    got = unknown_key(args, PrepareConfig, groups=["segmentation", "channels"])
    assert got == found if found is None else got.startswith(found)


def test_unknown_keys_of_score_and_train():
    assert unknown_key(["data.pth=x"], ScoreConfig) == "config key data.pth is unknown: did you mean data.path?"
    train_ok = [
        "experiment=smoke",
        "data=prepared",
        "data.synthetic.seed=2",
        "trainer.devices=2",
        "optim.lr.features=0",
    ]
    assert unknown_key(train_ok, TrainConfig, groups=["experiment", "data", "trainer"]) is None
    assert unknown_key(["experimnt=smoke"], TrainConfig, groups=["experiment"]).endswith("did you mean experiment?")


def test_score_run_checks_the_schemas_ranges_before_reading_the_run(tmp_path):
    from protocell.score.run import score_run

    for kw, match in (
        ({"n_boot": 0}, "bootstrap=0 is invalid: an integer ≥ 1"),
        ({"fdr": 1}, "fdr=1 is invalid"),
        ({"bscore": "yes"}, "bscore='yes' is invalid: true or false"),
        ({"shards": True}, "shards=True is invalid"),
        ({"shards": 2, "shard": 2}, r"shard=2 is invalid: all .* one share 0 … 1 \(shards=2\)"),
    ):
        with pytest.raises(ConfigError, match=match):
            score_run(tmp_path / "no_run", **kw)


def test_prepare_settings_check_the_schemas_ranges_as_input_errors(prepare_cfg, tmp_path):
    from protocell.prepare.io import InputError
    from protocell.prepare.settings import validate

    for override, match in (
        ("tile.size=32", "tile.size=32 is invalid: an integer ≥ 64"),
        ("workers=0", "workers=0 is invalid: an integer ≥ 1"),
        ("store_dtype=uint8", "store_dtype='uint8' is invalid: one of"),
        ("normalize.low=60", r"normalize.low/high=\(60.0, 40.0\) is invalid: 0 ≤ low < high ≤ 100"),
    ):
        c = prepare_cfg(f"input={tmp_path}", "plate_map=p.csv", override, "normalize.high=40")
        if "normalize" not in override:
            c["normalize"]["high"] = 99.8
        with pytest.raises(InputError, match=match):
            validate(c)
