"""The run's status (``evaluate.run_status``) and the metrics an unbalanced test set needs, on hand cases."""

import numpy as np
import pandas as pd
import pytest

from protocell.evaluate import beats_majority, run_status
from protocell.metrics.truth import balanced_accuracy, cell_metrics


def test_balanced_accuracy_on_an_unbalanced_hand_case():
    # 1 Ref well of 4 cells, 3 Exp wells of 4 cells; every cell called Exp but one Ref cell
    df = pd.DataFrame({"label": [0] * 4 + [1] * 12, "pred": [1, 1, 1, 0] + [1] * 12,
                       "score": np.linspace(0.1, 0.9, 16), "true_label": -1,
                       "well": ["R1"] * 4 + ["E1"] * 4 + ["E2"] * 4 + ["E3"] * 4,
                       "condition": ["Ref"] * 4 + ["Exp"] * 12})
    m = cell_metrics(df, positive=1, class_names=["Ref", "Exp"])
    assert m["well_label_accuracy"] == 13 / 16                          # looks good ...
    assert m["well_label_recall"] == {"Ref": 0.25, "Exp": 1.0}
    assert m["well_label_balanced_accuracy"] == (0.25 + 1.0) / 2        # ... is barely above chance
    assert m["called_fraction"] == 15 / 16
    comp = {r["well"]: r for r in m["test_composition"]}
    assert comp["R1"] == {"well": "R1", "condition": "Ref", "n_cells": 4, "called_fraction": 0.75}
    assert comp["E2"]["n_cells"] == 4 and comp["E2"]["called_fraction"] == 1.0
    assert "true_label_accuracy" not in m                                # no truth, no truth metrics
    assert balanced_accuracy([1, 1], [1, 1])[0] == 1.0                  # one class present: its recall


def _ok_metrics(**kw):
    m = {"n_cells": 100, "called_fraction": 0.4, "well_label_auroc": 0.8,
         "test_composition": [{"well": "A", "condition": "Ref"}, {"well": "B", "condition": "Exp"}],
         "calibration": {"used": True, "ok": True, "at_bound": [], "a": 2.0, "lo": 0.3, "hi": 0.9, "b": 0.1}}
    m.update(kw)
    return m


def _status(metrics, **kw):
    args = dict(val_accuracy=[0.6, 0.75], val_majority=0.5, n_val=200, epochs_run=10, epochs_planned=10, pushes=2)
    args.update(kw)
    return run_status(metrics, **args)


def test_a_healthy_run_is_ok_and_a_saturated_slope_only_warns():
    assert _status(_ok_metrics()) == {"status": "ok", "reasons": [], "warnings": []}
    cal = {**_ok_metrics()["calibration"], "a": 50.0, "hi": 1.0, "at_bound": ["a", "hi"]}
    s = _status(_ok_metrics(calibration=cal))
    assert s["status"] == "ok" and len(s["warnings"]) == 2


@pytest.mark.parametrize("change,reason", [
    ({"val_accuracy": [0.5, 0.52, 0.55]}, "never beat the majority class"),       # 0.55 < 0.5 + 2·0.035
    ({"metrics": _ok_metrics(called_fraction=1.0)}, "every test cell got the same call"),
    ({"metrics": _ok_metrics(test_composition=[{"well": "B", "condition": "Exp"}], well_label_auroc=float("nan"))},
     "test split holds one condition (Exp)"),
    ({"metrics": _ok_metrics(calibration={"used": True, "lo": 4.5e-5, "a": 50.0, "at_bound": ["a", "lo"]})},
     "parameter lo = 4.5e-05 sits on its bound"),
    ({"metrics": _ok_metrics(calibration={"used": True, "lo": 4.5e-5, "a": 50.0, "rho_exp": 0.1,
                                          "at_bound": ["a", "lo"]})}, "the fit contradicts itself"),
    ({"metrics": _ok_metrics(calibration={"used": False, "a": -0.3, "b": 0.0})}, "calibration was rejected"),
])
def test_failed_runs_are_marked_with_the_reason(change, reason):
    metrics = change.pop("metrics", _ok_metrics())
    s = _status(metrics, **change)
    assert s["status"] == "failed" and any(reason in r for r in s["reasons"]), s


def test_lo_on_its_bound_when_every_exposed_cell_responds_only_warns():
    """BBBC013: the inhibited wells' cells nearly all translocate, so no unaffected cell is exposed:
    P(Exp | unaffected) → 0 with ρ_Exp → 1 is the right fit, not a degenerate one."""
    cal = {**_ok_metrics()["calibration"], "lo": 4.5e-5, "hi": 1.0, "rho_exp": 0.9999, "at_bound": ["lo", "hi"]}
    s = _status(_ok_metrics(calibration=cal))
    assert s["status"] == "ok" and any("ρ_Exp = 1.000" in w and "upper limit" in w for w in s["warnings"]), s


def test_a_run_stopped_early_is_incomplete_and_failure_wins():
    s = _status(_ok_metrics(), epochs_run=4)
    assert s["status"] == "incomplete" and "stopped after 4 of 10" in s["reasons"][0]
    assert _status(_ok_metrics(), pushes=0)["status"] == "incomplete"
    assert _status(_ok_metrics(called_fraction=0.0), epochs_run=4)["status"] == "failed"


def test_beating_the_majority_needs_more_than_chance():
    assert not beats_majority(0.72, 0.7, 100)       # 2 SE = 0.092
    assert beats_majority(0.80, 0.7, 100)
    assert beats_majority(0.71, 0.7, 10 ** 7)


def test_bags_on_a_plate_where_most_exposed_cells_respond_and_a_missing_fraction_warn():
    frac = {"available": True, "fit": {"rho_exp": 0.9, "rho_ref": 0.01}}
    s = _status(_ok_metrics(affected_fraction=frac), bag_size=4)
    assert s["status"] == "ok" and any("bags of 4" in w and "data.bag_size=1" in w for w in s["warnings"]), s
    assert _status(_ok_metrics(affected_fraction=frac), bag_size=1)["warnings"] == []          # per cell: fine
    few = {"available": True, "fit": {"rho_exp": 0.45, "rho_ref": 0.05}}
    assert _status(_ok_metrics(affected_fraction=few), bag_size=4)["warnings"] == []           # a minority: bags fit
    none = {"available": False, "reason": "no exposed cells unlike the reference"}
    s = _status(_ok_metrics(affected_fraction=none), bag_size=4)
    assert s["status"] == "ok" and s["warnings"] == ["no affected fraction: no exposed cells unlike the reference"]
