"""experiments/random_plates.py: the draws stay in their ranges and the verdict follows issue 22's bar."""

import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments"))
import random_plates  # noqa: E402


def test_draws_stay_in_range_and_never_use_a_training_seed_as_a_plate():
    for d in random_plates.draw(200, random.Random(0)):
        assert 100 <= d["data.synthetic.seed"] < 10000 and 0 <= d["seed"] < 10
        assert 0.12 <= d["data.synthetic.affected_fraction.Exp"] <= 0.6
        assert 0.0 <= d["data.synthetic.affected_fraction.Ref"] <= 0.1
        assert d["data.synthetic.wells_per_condition"] in (4, 6, 8, 10)


def _metrics(status, auroc, exp, ref):
    conds = {"Exp": {"error": exp}, "Ref": {"error": ref}}
    return {"status": status, "true_label_auroc": auroc, "affected_fraction": {"conditions": conds}}


def test_the_verdict_is_the_bar_of_issue_22():
    assert random_plates.verdict(_metrics("ok", 0.78, -0.144, 0.02))["class"] == "silent"  # AUROC and fraction
    assert random_plates.verdict(_metrics("ok", 0.95, 0.101, 0.0))["class"] == "silent"  # the fraction alone
    assert random_plates.verdict(_metrics("ok", 0.84, 0.0, 0.0))["class"] == "silent"  # the AUROC alone
    assert random_plates.verdict(_metrics("warning", 0.86, 0.25, 0.17))["class"] == "wrong, said"
    assert random_plates.verdict(_metrics("ok", 0.96, -0.035, 0.012))["class"] == "right"
    assert random_plates.verdict(_metrics("warning", 0.96, 0.09, 0.0))["class"] == "false alarm"
    assert random_plates.verdict({"status": "failed", "reasons": ["no fraction"]})["class"] == "wrong, said"
