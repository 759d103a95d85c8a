"""The installed commands (``[project.scripts]``) are the clone's scripts: same configs, same refusals."""

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def _script(name: str) -> Path:
    path = Path(sys.executable).parent / name
    if not path.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{path} is missing: make setup (pip install -e .) installs the [project.scripts]")
        pytest.skip(f"{name} is not installed in this environment: re-run `make setup` (pip install -e .)")
    return path


def test_every_command_has_a_script_and_a_clone_entry_point():
    assert set(SCRIPTS) == {f"protocell-{c}" for c in ("prepare", "train", "explain", "score")}
    for name, target in SCRIPTS.items():
        command = name.removeprefix("protocell-")
        assert target == f"protocell.cli.entry:{command}"
        assert f"from protocell.cli.entry import {command}" in (ROOT / f"{command}.py").read_text()


def test_an_installed_script_composes_the_clones_config_and_refuses_like_it(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    shown = subprocess.run(
        [str(_script("protocell-train")), "--cfg", "job", "backbone=vgg11", "mask=off"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stderr
    assert "name: vgg11" in shown.stdout and "distance_term: false" in shown.stdout
    missing = tmp_path / "no_such_run"
    refused = subprocess.run(
        [str(_script("protocell-explain")), f"run={missing}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 2 and f"run folder {missing} does not exist" in refused.stderr
    assert not missing.exists() and not (tmp_path / "outputs").exists()
