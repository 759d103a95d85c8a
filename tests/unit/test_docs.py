"""The docs give commands a reader can run: no path that exists on one machine only."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_commands_in_the_docs_name_no_path_of_one_machine():
    """Before, docs/prepare.md's pattern example read input=/work/shared/data/… (issue 25.7)."""
    found = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        blocks = re.findall(r"```[^\n]*\n(.*?)```", page.read_text(), flags=re.DOTALL)
        for block in blocks:
            found += [
                f"{page.name}: {m}" for m in re.findall(r"(?:^|[\s=\"'])(/(?:work|home|root|Users|tmp)/\S*)", block)
            ]
    assert not found, found
