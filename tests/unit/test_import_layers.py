"""Imports go one way: a stage of the flow (prepare → train → explain → score) never imports a later one,
so each can be read, tested and changed without what comes after it."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "protocell"
# earlier → later; a module may import its own stage and earlier ones
STAGES = [
    {
        "errors",
        "fsutil",
        "config",
        "config_check",
        "config_commands",
        "doses",
        "plate",
        "distributed",
        "stats",
        "artifacts",
        "tracking",
        "html",
    },  # shared ground
    {"data"},  # the crop store, the built-in wells, the DataModule
    {"prepare"},  # raw plates → a store
    {"model"},  # the network and its losses
    {"evaluate", "diagnostics"},  # what a run's predictions mean
    {"build", "runs"},  # config → DataModule, network; a finished run loaded
    {"training"},  # Lightning, phases, the run folder
    {"explain", "score"},  # a finished run → report.html; × a plate → score.html
    {"cli", "bench", "compare"},  # entry points, measurements, tables of runs
]
RANK = {name: i for i, stage in enumerate(STAGES) for name in stage}
SIBLINGS = [{"explain", "score"}]  # parts of one stage that never import each other: what both need is earlier


def _part(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0].removesuffix(".py")


def _imported(tree: ast.AST):
    for node in ast.walk(tree):  # function-level imports included
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("protocell."):
            yield node.lineno, node.module.split(".")[1]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("protocell."):
                    yield node.lineno, alias.name.split(".")[1]


def test_every_part_of_the_package_has_a_stage():
    parts = {_part(p) for p in PACKAGE.rglob("*.py")} - {"__init__"}
    assert parts <= set(RANK), f"give these a stage in STAGES: {sorted(parts - set(RANK))}"


def test_no_stage_imports_a_later_one():
    back = []
    for path in sorted(PACKAGE.rglob("*.py")):
        part = _part(path)
        if part == "__init__":
            continue
        for line, target in _imported(ast.parse(path.read_text())):
            if target in RANK and RANK[target] > RANK[part]:
                back.append(f"{path.relative_to(PACKAGE.parent)}:{line} ({part}) imports protocell.{target}")
    assert not back, "imports from a later stage:\n" + "\n".join(back)


def test_siblings_do_not_import_each_other():
    across = []
    for path in sorted(PACKAGE.rglob("*.py")):
        part = _part(path)
        for group in SIBLINGS:
            if part not in group:
                continue
            for line, target in _imported(ast.parse(path.read_text())):
                if target in group and target != part:
                    across.append(f"{path.relative_to(PACKAGE.parent)}:{line} ({part}) imports protocell.{target}")
    assert not across, "imports between sibling stages (move what both need to an earlier stage):\n" + "\n".join(across)


def test_no_module_of_the_package_is_over_400_lines():
    """Files cut at their seams: a module over 400 lines holds more than one job (issue 26)."""
    long = {
        str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 400
    }
    assert not long, f"modules over 400 lines, cut them at their seams: {long}"
