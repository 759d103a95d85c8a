"""protocell.compare (experiments/compare.py's library): run folders → one table, mean ± sd over seeds,
explain columns optional."""

import json
import sys
from pathlib import Path

import pandas as pd
import pytest
import warm
import yaml

import protocell.compare as compare

ROOT = Path(__file__).resolve().parents[2]


def _run(
    root: Path,
    name: str,
    backbone: str,
    mask: str,
    last: str,
    seed: int,
    acc: float,
    explain: dict | None = None,
    q: list[float] | None = None,
    extra: list[str] = (),
) -> Path:
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"seed": seed, "backbone": {"name": backbone}}))
    choices = {
        "backbone": backbone,
        "mask": mask,
        "last_layer": last,
        "data": "synthetic",
        "hydra/launcher": "basic",
        "experiment": None,
    }
    (run / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"runtime": {"choices": choices}}}))
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"mask={mask}", f"seed={seed}", *extra]))
    (run / "metrics.json").write_text(
        json.dumps(
            {
                "well_label_accuracy": acc,
                "true_label_accuracy": acc + 0.1,
                "true_label_auroc": 0.9,
                "train_seconds": 100.0 + seed,
                "calibration": {"rho_exp": acc - 0.2},
                "affected_fraction": {
                    "conditions": {
                        "Ref": {"error": 0.0, "ci_covers_truth": True},
                        "Exp": {"error": acc - 0.6, "ci_covers_truth": acc > 0.75},
                    }
                },
            }
        )
    )
    if explain is not None:
        (run / "explain").mkdir()
        (run / "explain" / "explain_metrics.json").write_text(json.dumps(explain))
    if q is not None:
        pd.DataFrame({"prototype": [f"p{i}" for i in range(len(q))], "q_value": q}).to_csv(
            run / "explain" / "prototype_differences.csv", index=False
        )
    return run


def test_multirun_folder_to_table_with_mean_sd_over_seeds(tmp_path):
    sweep = tmp_path / "sweep"
    ex = {"exp_prototype_texture_share_mean": 0.5, "background_prototype_share": 0.25}
    _run(sweep, "0", "vgg11", "on", "frozen", 0, 0.70, ex, q=[0.01, 0.2, 0.03, 0.5])
    _run(sweep, "1", "vgg11", "on", "frozen", 1, 0.80, {**ex, "background_prototype_share": 0.75}, q=[0.5] * 4)
    _run(sweep, "2", "vgg11", "off", "frozen", 0, 0.60)  # no explain: its columns stay empty
    (sweep / "3").mkdir()
    (sweep / "3" / "config.yaml").write_text("seed: 2\n")  # unfinished run: left out
    summary, table = compare.compare([sweep], tmp_path / "out" / "cmp")

    assert list(summary[["backbone", "mask", "last_layer"]].itertuples(index=False, name=None)) == [
        ("vgg11", "off", "frozen"),
        ("vgg11", "on", "frozen"),
    ]
    on = summary[summary["mask"] == "on"].iloc[0]
    assert on["seeds"] == 2
    assert on["well_label_accuracy_mean"] == pytest.approx(0.75)
    assert on["well_label_accuracy_sd"] == pytest.approx(0.0707107, abs=1e-6)  # sample sd of 0.7, 0.8
    assert on["localisation_share_mean"] == 0.5
    assert on["background_prototype_share_mean"] == pytest.approx(0.5)
    assert on["affected_fraction_error_mean"] == pytest.approx(0.15)  # the exposed condition's
    assert on["affected_fraction_ci_covers_mean"] == pytest.approx(0.5)
    assert on["significant_prototype_share_mean"] == pytest.approx(0.25)  # (2/4 + 0/4) / 2
    off = summary[summary["mask"] == "off"].iloc[0]
    assert off["seeds"] == 1 and pd.isna(off["well_label_accuracy_sd"]) and pd.isna(off["localisation_share_mean"])

    lines = table.splitlines()
    assert lines[0].startswith("| backbone | mask | last_layer | seeds | well acc")
    assert "| vgg11 | on | frozen | 2 | 0.750 ± 0.071 |" in table
    assert lines[2].startswith("| vgg11 | off | frozen | 1 | 0.600 |")  # one seed: no ± sd
    head = [c.strip() for c in lines[0].split("|")]
    row_off = [c.strip() for c in lines[2].split("|")]
    assert row_off[head.index("localisation")] == "" and row_off[head.index("train s")] == "100"
    assert (tmp_path / "out" / "cmp.md").read_text() == table
    assert len(pd.read_csv(tmp_path / "out" / "cmp_runs.csv")) == 3
    assert len(pd.read_csv(tmp_path / "out" / "cmp.csv")) == 2


def test_varying_override_becomes_a_factor_and_seed_does_not(tmp_path):
    for s in (0, 1):
        _run(tmp_path, f"a{s}", "vgg11", "on", "trained", s, 0.7, extra=["protopnet.prototypes_per_class=5"])
        _run(tmp_path, f"b{s}", "vgg11", "on", "trained", s, 0.9, extra=["protopnet.prototypes_per_class=10"])
    summary, _ = compare.compare([tmp_path / f"{x}{s}" for x in "ab" for s in (0, 1)])
    assert "protopnet.prototypes_per_class" in summary and "seed" not in summary
    assert sorted(summary["seeds"]) == [2, 2]
    assert summary.set_index("protopnet.prototypes_per_class")["well_label_accuracy_mean"].to_dict() == pytest.approx(
        {"10": 0.9, "5": 0.7}
    )


def test_no_finished_run_is_an_error_naming_the_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(compare.CompareError, match="no finished run.*empty"):
        compare.compare([tmp_path / "empty"])
    script = warm.run(
        [sys.executable, str(ROOT / "experiments" / "compare.py"), str(tmp_path / "missing")],
        capture_output=True,
        text=True,
    )
    assert script.returncode == 2 and f"compare: {tmp_path / 'missing'} is not a folder" in script.stderr
