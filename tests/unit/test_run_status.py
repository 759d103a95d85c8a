"""The run's status (``evaluate.run_status``) and the metrics an unbalanced test set needs, on hand cases."""

import numpy as np
import pandas as pd
import pytest

from protocell.evaluate.status import beats_majority, run_status
from protocell.evaluate.truth import balanced_accuracy, cell_metrics


def test_balanced_accuracy_on_an_unbalanced_hand_case():
    # 1 Ref well of 4 cells, 3 Exp wells of 4 cells; every cell called Exp but one Ref cell
    df = pd.DataFrame(
        {
            "label": [0] * 4 + [1] * 12,
            "pred": [1, 1, 1, 0] + [1] * 12,
            "score": np.linspace(0.1, 0.9, 16),
            "true_label": -1,
            "well": ["R1"] * 4 + ["E1"] * 4 + ["E2"] * 4 + ["E3"] * 4,
            "condition": ["Ref"] * 4 + ["Exp"] * 12,
        }
    )
    m = cell_metrics(df, positive=1, class_names=["Ref", "Exp"])
    assert m["well_label_accuracy"] == 13 / 16  # looks good ...
    assert m["well_label_recall"] == {"Ref": 0.25, "Exp": 1.0}
    assert m["well_label_balanced_accuracy"] == (0.25 + 1.0) / 2  # ... is barely above chance
    assert m["called_fraction"] == 15 / 16
    comp = {r["well"]: r for r in m["test_composition"]}
    assert comp["R1"] == {"well": "R1", "condition": "Ref", "n_cells": 4, "called_fraction": 0.75}
    assert comp["E2"]["n_cells"] == 4 and comp["E2"]["called_fraction"] == 1.0
    assert "true_label_accuracy" not in m  # no truth, no truth metrics
    assert balanced_accuracy([1, 1], [1, 1])[0] == 1.0  # one class present: its recall


def _ok_metrics(**kw):
    m = {
        "n_cells": 100,
        "called_fraction": 0.4,
        "well_label_auroc": 0.8,
        "test_composition": [{"well": "A", "condition": "Ref"}, {"well": "B", "condition": "Exp"}],
        "calibration": {"used": True, "ok": True, "at_bound": [], "a": 2.0, "lo": 0.3, "hi": 0.9, "b": 0.1},
    }
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


def test_a_levelled_run_is_at_best_a_warning_with_its_fraction_marked_unreliable():
    """data.level_imaging is experimental: one of its runs passed every check while wrong (docs/results.md)."""
    from protocell.evaluate.status import LEVELLING_DOUBT

    m = _ok_metrics(affected_fraction={"available": True, "conditions": {}})
    s = _status(m, levelled=True)
    assert s["status"] == "warning" and s["reasons"] == [LEVELLING_DOUBT] and "data.level_imaging" in LEVELLING_DOUBT
    assert m["affected_fraction"]["reliable"] is False
    assert _status(_ok_metrics())["status"] == "ok"


def test_wells_whose_blur_lines_up_unlevelled_make_a_warning_and_a_test_that_did_not_fire_nothing():
    """data.level_imaging=auto whose test fired on a run that could not level (another normalisation)."""
    fired = {"fires": True, "levelled": False, "why": "the optics blur … lines up … set data.normalize=cell"}
    m = _ok_metrics(affected_fraction={"available": True, "conditions": {}})
    s = _status(m, imaging_alignment=fired)
    assert s["status"] == "warning" and s["reasons"] == [fired["why"]]
    assert m["affected_fraction"]["reliable"] is False
    assert _status(_ok_metrics(), imaging_alignment={"fires": False, "why": "not levelled"})["status"] == "ok"


@pytest.mark.parametrize(
    "change,reason",
    [
        ({"val_accuracy": [0.5, 0.52, 0.55]}, "never beat the majority class"),  # 0.55 < 0.5 + 2·0.035
        ({"metrics": _ok_metrics(called_fraction=1.0)}, "every test cell got the same call"),
        (
            {
                "metrics": _ok_metrics(
                    test_composition=[{"well": "B", "condition": "Exp"}], well_label_auroc=float("nan")
                )
            },
            "test split holds one condition (Exp)",
        ),
        (
            {"metrics": _ok_metrics(calibration={"used": True, "lo": 4.5e-5, "a": 50.0, "at_bound": ["a", "lo"]})},
            "parameter lo = 4.5e-05 sits on its bound",
        ),
        (
            {
                "metrics": _ok_metrics(
                    calibration={"used": True, "lo": 4.5e-5, "a": 50.0, "rho_exp": 0.1, "at_bound": ["a", "lo"]}
                )
            },
            "the fit contradicts itself",
        ),
        ({"metrics": _ok_metrics(calibration={"used": False, "a": -0.3, "b": 0.0})}, "calibration was rejected"),
    ],
)
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
    assert not beats_majority(0.72, 0.7, 100)  # 2 SE = 0.092
    assert beats_majority(0.80, 0.7, 100)
    assert beats_majority(0.71, 0.7, 10**7)


def test_bags_on_a_plate_where_most_exposed_cells_respond_and_a_missing_fraction_warn():
    frac = {"available": True, "fit": {"rho_exp": 0.9, "rho_ref": 0.01}}
    s = _status(_ok_metrics(affected_fraction=frac), bag_size=4)
    assert s["status"] == "ok" and any("bags of 4" in w and "data.bag_size=1" in w for w in s["warnings"]), s
    assert _status(_ok_metrics(affected_fraction=frac), bag_size=1)["warnings"] == []  # per cell: fine
    few = {"available": True, "fit": {"rho_exp": 0.45, "rho_ref": 0.05}}
    assert _status(_ok_metrics(affected_fraction=few), bag_size=4)["warnings"] == []  # a minority: bags fit
    none = {"available": False, "reason": "no exposed cells unlike the reference"}
    s = _status(_ok_metrics(affected_fraction=none), bag_size=4)
    # before: ok with a warning — a run that has not answered its question is not ok
    assert s["status"] == "warning" and s["reasons"] == ["no affected fraction: no exposed cells unlike the reference"]


def test_test_cells_at_chance_fail_the_run():
    """Before: a run at Exp 0.15 (plate 5439) passed the validation rule on one epoch (0.567 ± 0.032 of 380
    cells) while its 2,613 test cells gave a well-label AUROC of 0.500 — and it said ok."""
    comp = [{"well": "A", "condition": "Ref", "n_cells": 1300}, {"well": "B", "condition": "Exp", "n_cells": 1313}]
    s = _status(_ok_metrics(well_label_auroc=0.500, test_composition=comp), val_auroc=[(0.567, 0.032)])
    assert s["status"] == "failed" and "test cells' well-label AUROC is 0.500" in s["reasons"][0], s
    assert (
        _status(_ok_metrics(well_label_auroc=0.55, test_composition=comp), val_auroc=[(0.567, 0.032)])["status"] == "ok"
    )
    assert (
        _status(_ok_metrics(well_label_auroc=0.515, test_composition=comp[:1] + comp[1:]), val_auroc=[(0.567, 0.032)])[
            "status"
        ]
        == "failed"
    )  # 0.515 − 2·0.0113 < 0.5


def _validation(rng, n_ref: int, n_exp: int, shift: float):
    """Validation cells of an unbalanced plate: logit scores N(0, 1) for Ref, N(shift, 1) for Exp, called
    Exp above 0. Returns (accuracy, majority share, n, (AUROC, SE)) as train.py records them."""
    from protocell.stats import auroc, auroc_se

    y = np.r_[np.zeros(n_ref), np.ones(n_exp)].astype(int)
    s = np.r_[rng.normal(0, 1, n_ref), rng.normal(shift, 1, n_exp)]
    a = auroc(s, y)
    return float(((s > 0) == y).mean()), n_ref / len(y), len(y), (a, auroc_se(a, n_exp, n_ref))


def test_an_unbalanced_validation_set_is_judged_by_auroc_not_by_the_majority_share():
    """Issue 25.8: 87 % of the validation cells in one condition. A network that ranks Exp cells well but calls
    half the Ref cells Exp has an accuracy far below the majority share — the accuracy rule failed it; a
    network that learnt nothing but calls nearly everything Ref sits at the majority share and, on a lucky
    epoch, above it — the rule passed it. By the AUROC and its standard error: the other way round."""
    rng = np.random.default_rng(0)
    acc, majority, n, useful = _validation(rng, 261, 39, shift=1.5)
    assert acc < majority and useful[0] > 0.8 and useful[0] - 2 * useful[1] > 0.5
    s = _status(_ok_metrics(), val_accuracy=[acc], val_majority=majority, n_val=n)  # the old rule
    assert s["status"] == "failed" and "never beat the majority class" in s["reasons"][0]
    assert _status(_ok_metrics(), val_accuracy=[acc], val_majority=majority, n_val=n, val_auroc=[useful]) == {
        "status": "ok",
        "reasons": [],
        "warnings": [],
    }

    _, majority, n, chance = _validation(rng, 261, 39, shift=0.0)
    lucky = [0.85, 0.93]  # above the bar 0.87 + 2·0.019 = 0.909
    assert _status(_ok_metrics(), val_accuracy=lucky, val_majority=majority, n_val=n)["status"] == "ok"
    s = _status(_ok_metrics(), val_accuracy=lucky, val_majority=majority, n_val=n, val_auroc=[(0.45, 0.05), chance])
    assert s["status"] == "failed", s
    assert f"validation AUROC never stood above chance: best {chance[0]:.3f} ± {chance[1]:.3f}" in s["reasons"][0]


def test_the_auroc_rule_needs_two_standard_errors_and_both_conditions():
    from protocell.evaluate.status import beats_chance

    assert beats_chance(0.62, 0.05) and not beats_chance(0.60, 0.05) and not beats_chance(float("nan"), 0.05)
    s = _status(_ok_metrics(), val_auroc=[(float("nan"), float("nan"))])
    assert s["status"] == "failed" and "validation cells hold one condition" in s["reasons"][0]
    assert _status(_ok_metrics(), val_auroc=[(0.55, 0.04), (0.7, 0.04)])["status"] == "ok"  # one epoch is enough


def test_the_history_records_each_epochs_validation_auroc_and_its_standard_error(tiny_store):
    """What run_status reads: ValAccuracyHistory keeps val/auroc and val/auroc_se as the module logs them."""
    import lightning as L
    from conftest import tiny_module, tiny_training_data

    from protocell.training.callbacks import ValAccuracyHistory

    dm = tiny_training_data(tiny_store, test_fraction=0.3, val_fraction=0.3)
    module = tiny_module()
    module.phase = "joint"
    history = ValAccuracyHistory()
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False, callbacks=[history]
    )
    trainer.validate(module, datamodule=dm, verbose=False)
    (entry,) = history.history
    assert entry["auroc"] == pytest.approx(float(trainer.callback_metrics["val/auroc"]))
    assert entry["auroc_se"] == pytest.approx(float(trainer.callback_metrics["val/auroc_se"])) and entry["auroc_se"] > 0
    assert history.aurocs() == [(entry["auroc"], entry["auroc_se"])] and history.accuracies() == [entry["acc"]]
    module.phase = "pretrain"
    trainer.validate(module, datamodule=dm, verbose=False)
    assert len(history.aurocs()) == 1 and len(history.aurocs("baseline")) == 2  # the probe's epochs: baseline only


def test_the_smallest_change_validation_cells_can_show_is_the_rule_inverted_and_said_on_failure():
    from protocell.evaluate.status import beats_chance, learning_failure
    from protocell.stats import auroc, auroc_se, detectable_difference

    # a perfect cell score against the well labels: AUROC ½ + (ρ_Exp − ρ_Ref)/2, checked on 40,000 cells
    rng = np.random.default_rng(0)
    rho_exp, rho_ref, n = 0.15, 0.05, 20_000
    affected = np.r_[rng.random(n) < rho_exp, rng.random(n) < rho_ref].astype(float)
    well = np.r_[np.ones(n), np.zeros(n)]
    assert auroc(affected, well) == pytest.approx(0.5 + (rho_exp - rho_ref) / 2, abs=0.005)
    # and one ranking affected above unaffected at AUROC 0.9: ½ + (ρ_Exp − ρ_Ref)·0.4
    score = rng.normal(affected * 1.8124, 1.0)  # Φ(1.8124/√2) = 0.9
    assert auroc(score, well) == pytest.approx(0.5 + (rho_exp - rho_ref) * 0.4, abs=0.005)

    for cell_auroc in (1.0, 0.9):
        d = detectable_difference(187, 187, cell_auroc)
        a, below = 0.5 + d * (cell_auroc - 0.5), 0.5 + 0.99 * d * (cell_auroc - 0.5)
        assert beats_chance(a, auroc_se(a, 187, 187)) and not beats_chance(below, auroc_se(below, 187, 187))
    # near ½ the SE is √((n₁ + n₂ + 1) / (12·n₁·n₂)): Δ ≈ 4·SE for a perfect score, so four times the cells halve it
    assert detectable_difference(187, 187) == pytest.approx(4 * np.sqrt(375 / (12 * 187 * 187)), rel=0.03)
    assert detectable_difference(748, 748) == pytest.approx(detectable_difference(187, 187) / 2, rel=0.03)
    assert detectable_difference(0, 10) == float("inf") and detectable_difference(10, 10, 0.5) == float("inf")

    why = learning_failure([(0.554, 0.033)], [], 0.5, 374)
    assert "With 187 and 187 validation cells" in why and "at least 0.12 more affected cells" in why
    assert "0.15 if it ranks them at AUROC 0.9" in why and "data.val_fraction" in why
