"""The four commands, one way: ``python train.py …`` in a clone and the installed scripts
``protocell-train``, ``protocell-prepare``, ``protocell-explain``, ``protocell-score`` (``[project.scripts]``)
both call these. Each composes ``conf/<command>.yaml`` with Hydra and hands the config to
``protocell.cli.<command>.run``.

The configs live in the clone's ``conf/`` (what a user reads, copies and overrides), so the scripts
work from an editable install (``make setup`` → ``pip install -e .``); an install without the source
tree says so instead of failing inside Hydra.
"""

from __future__ import annotations

import sys
from importlib import import_module
from pathlib import Path

CONF = Path(__file__).resolve().parents[2] / "conf"


def _command(name: str):
    def main():
        if not (CONF / f"{name}.yaml").is_file():
            print(
                f"protocell-{name}: {CONF / f'{name}.yaml'} is missing: protocell's commands read the configs in "
                "the source tree's conf/ — install from a clone with `pip install -e <clone>` (make setup does)",
                file=sys.stderr,
            )
            raise SystemExit(2)
        import hydra

        from protocell.config import register
        from protocell.config_commands import register as register_commands

        register()  # the typed schemas conf/<command>.yaml start from
        register_commands()
        _refuse_unknown_keys(name)
        run = import_module(f"protocell.cli.{name}").run
        return hydra.main(version_base="1.3", config_path=str(CONF), config_name=name)(run)()

    main.__name__ = name
    main.__doc__ = (
        f"``protocell-{name}`` / ``python {name}.py``: conf/{name}.yaml composed by Hydra → protocell.cli.{name}.run"
    )
    return main


def _refuse_unknown_keys(name: str) -> None:
    """A misspelt key on the command line: one line naming it and the closest key, exit status 2."""
    from protocell.config import TrainConfig
    from protocell.config_check import unknown_key
    from protocell.config_commands import PrepareConfig, ScoreConfig

    schema = {"train": TrainConfig, "prepare": PrepareConfig, "score": ScoreConfig}.get(name)
    groups = [p.name for p in CONF.iterdir() if p.is_dir()]
    problem = unknown_key(sys.argv[1:], schema, groups) if schema is not None else None
    if problem is not None:
        print(f"{name}: {problem} (the keys: {CONF / name}.yaml)", file=sys.stderr)
        raise SystemExit(2)


train = _command("train")
prepare = _command("prepare")
explain = _command("explain")
score = _command("score")
