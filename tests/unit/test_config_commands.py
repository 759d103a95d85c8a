"""prepare.py's and score.py's schemas (protocell/config_commands.py): the library entry points check the
same rules as the commands."""

import pytest

from protocell.errors import ConfigError


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
