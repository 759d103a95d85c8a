"""The finished run's status: ``run_status`` judges a run from its metrics and its training history —
``ok``, ``warning`` (a label-free check says its answer may be wrong, ``protocell.diagnostics``, or it gave
no affected fraction), ``incomplete`` (stopped before its schedule ended, or never pushed) or ``failed``
(nothing learnt, or nothing to evaluate) — with the reasons, so a failed run cannot pass for a result.
"""

from __future__ import annotations

import math

from protocell.stats import auroc_se, beats_chance, validation_power

# calibration parameters whose bound means a degenerate fit (see ``run_status``)
FAILING_BOUNDS = {
    "lo": "P(Exp | unaffected) pinned at its bound while the fit calls few exposed cells affected "
    "(ρ_Exp < 0.5): the fit contradicts itself, so the cell calls and affected fractions rest "
    "on nothing",
    "b": "the intercept sits on its bound: the calibration curve is degenerate",
}


# levelled runs that passed every other check while wrong: docs/method.md ("Wells imaged differently") counts them
LEVELLING_DOUBT = (
    "imaging levelling (data.level_imaging) reads every well at the worst well's imaging, which weakens the cells' "
    "scores: on built-in plates whose exposed wells were imaged differently it learnt the cell where the plain "
    "recipe read the wells, but some levelled runs there passed every other check while wrong (both fractions "
    "0.12–0.24 too high, or a true AUROC of 0.84; docs/method.md, 'Wells imaged differently'); until a check sees "
    "that, read its fraction as unconfirmed"
)


def beats_majority(accuracy: float, majority: float, n: int) -> bool:
    """Is ``accuracy`` on ``n`` cells above the majority-class share by more than chance? Beyond
    two binomial standard errors of the majority share (≈ 95 %): a network that learnt nothing
    still wanders a little above it from epoch to epoch."""
    if n <= 0:
        return True
    return accuracy > majority + 2 * math.sqrt(majority * (1 - majority) / n)


def learning_failure(
    val_auroc: list[tuple[float, float]] | None, val_accuracy: list[float], val_majority: float | None, n_val: int
) -> str | None:
    """Why the run learnt nothing, judged on the validation cells (None: it learnt something): no epoch's
    AUROC ``beats_chance``. Without any AUROC recorded (a run resumed from a checkpoint older than
    this rule), its accuracy against the majority class (``beats_majority``) as before."""
    if val_auroc:
        finite = [(a, se) for a, se in val_auroc if math.isfinite(a)]
        if not finite:
            return (
                "the validation cells hold one condition: their AUROC is undefined, so nothing shows the run "
                "learnt; the store needs validation images of every condition (data.val_fraction)"
            )
        if any(beats_chance(a, se) for a, se in finite):
            return None
        a, se = max(finite)
        return (
            f"the validation AUROC never stood above chance: best {a:.3f} ± {se:.3f} (one standard error; "
            f"{n_val} validation cells, any mix of conditions); a network that learnt something needs "
            "AUROC − 2·SE > 0.5" + _power(n_val, val_majority)
        )
    if val_majority is not None and val_accuracy and n_val > 0:
        best = max(val_accuracy)
        if not beats_majority(best, val_majority, n_val):
            return (
                f"validation accuracy never beat the majority class: best {best:.3f} against a majority share of "
                f"{val_majority:.3f} ({n_val} validation cells; beating it needs more than "
                f"{val_majority + 2 * math.sqrt(val_majority * (1 - val_majority) / n_val):.3f})"
            )
    return None


def _power(n_val: int, val_majority: float | None) -> str:
    """What the validation cells can show at all (``stats.detectable_difference``), said beside a failure."""
    if val_majority is None or n_val <= 0:
        return ""
    n_major = round(val_majority * n_val)
    n_minor = n_val - n_major
    perfect, good = validation_power(n_major, n_minor)
    if not math.isfinite(perfect):  # one condition only: said by its own reason
        return ""
    return (
        f". With {n_minor} and {n_major} validation cells of the two conditions, a network passes this rule on average "
        f"only when the exposed wells hold at least {perfect:.2f} more affected cells (as a share) than the "
        f"reference wells if it tells every affected cell apart, {good:.2f} if it ranks them at AUROC 0.9: a "
        "smaller difference does not show here, whatever the network. More validation cells "
        "(data.val_fraction, more fields or wells) lower that as 1/√n"
    )


def test_failure(metrics: dict) -> str | None:
    """Why the test cells say the run learnt nothing that generalises (None: they do not): their
    well-label AUROC does not stand above chance by two standard errors (``beats_chance``; the SE taken
    the larger way round, as the exposed condition is not named here). The validation rule
    (``learning_failure``) can pass on one lucky epoch of a few hundred cells; the test split is the
    larger, untouched sample."""
    a = metrics.get("well_label_auroc")
    counts: dict[str, int] = {}
    for w in metrics.get("test_composition") or []:
        if "n_cells" in w:
            counts[str(w["condition"])] = counts.get(str(w["condition"]), 0) + int(w["n_cells"])
    if not isinstance(a, (int, float)) or not _finite(a) or len(counts) != 2:
        return None
    n1, n2 = counts.values()
    se = max(auroc_se(a, n1, n2), auroc_se(a, n2, n1))
    if beats_chance(a, se):
        return None
    return (
        f"the test cells' well-label AUROC is {a:.3f} ± {se:.3f} (one standard error; {n1 + n2} cells the network "
        "never trained on): at chance — the network learnt nothing that holds beyond its training cells, or the "
        "conditions do not differ; a run needs AUROC − 2·SE > 0.5 on its test cells"
    )


# ρ_Exp above which bags of cells are the wrong model of the plate: see ``run_status`` and data.bag_size
BAG_WARNING = 0.8


def run_status(
    metrics: dict,
    *,
    val_accuracy: list[float],
    val_majority: float | None,
    n_val: int,
    epochs_run: int,
    epochs_planned: int,
    pushes: int | None = None,
    interrupted: bool = False,
    bag_size: int = 1,
    val_auroc: list[tuple[float, float]] | None = None,
    truth_labels: bool = False,
    levelled: bool = False,
    imaging_alignment: dict | None = None,
) -> dict:
    """``{"status": "ok" | "warning" | "incomplete" | "failed", "reasons": [...], "warnings": [...]}`` of a
    finished run.

    ``metrics``: ``evaluate``'s (``called_fraction``, ``test_composition``, ``well_label_auroc``,
    ``calibration``); ``val_accuracy``: the validation accuracy of every epoch that trained the final
    model (not the pretrain probe's); ``val_majority``: the share of the commonest class among the
    ``n_val`` validation cells; ``pushes``: the prototype pushes (None for the baseline head);
    ``val_auroc``: (val/auroc, val/auroc_se) of those epochs.

    failed — the run learnt nothing or could not be evaluated: no epoch's validation AUROC stood above
    chance (``learning_failure``: on 87 % cells of one condition, accuracy against the majority share
    failed useful runs and passed useless ones); every test cell got the same call; the test split holds one
    condition (AUROC undefined); the calibration rejected (slope ≤ 0: validation ranks the wells
    backwards) or degenerate on a bound (``FAILING_BOUNDS``). incomplete — stopped before the
    schedule ended (``trainer.max_time``, an interrupt) or prototypes never pushed. A failed run that
    also stopped early is failed. Warnings do not change the status: a slope or ``hi`` on its bound
    (measured on healthy runs: the default reaches a = 50 with true-label AUROC 0.94), a noisy-label
    fit that fell back to Platt, and bags of cells (``bag_size`` > 1) on a plate
    where most exposed cells look affected (``BAG_WARNING``). warning — the run finished but a label-free
    check says its answer may be wrong (``metrics["diagnostics"]``, ``protocell.diagnostics``: the network
    reads the wells), or no affected fraction could be estimated (the scores give no evidence of affected
    cells: the run has not answered its question); the affected fraction is then marked ``reliable: false``.
    The test cells' well-label AUROC at chance (``test_failure``) is failed too. A run trained on the
    cells' true labels (``truth_labels``, ``data.labels=truth``) is at best ``warning``: a ceiling, not an
    answer. So is a run whose imaging was levelled (``levelled``, ``data.level_imaging``) and its fraction
    marked unreliable: the option is experimental (``LEVELLING_DOUBT``); and one whose wells' optics blur lines up
    with the condition but could not be levelled (``imaging_alignment``, ``data.level_imaging=auto`` with another
    normalisation than per cell)."""
    failed, incomplete, warnings = [], [], []
    if interrupted or epochs_run < epochs_planned:
        incomplete.append(
            f"stopped after {epochs_run} of {epochs_planned} scheduled epochs "
            "(trainer.max_time, an interrupt or another stop); resume=<run>/checkpoints/last.ckpt continues it"
        )
    if pushes is not None and pushes < 1:
        incomplete.append("the prototypes were never pushed, so they are not cell patches and explain cannot show them")
    learnt_nothing = learning_failure(val_auroc, val_accuracy, val_majority, n_val)
    if learnt_nothing:
        failed.append(learnt_nothing)
    elif (at_chance := test_failure(metrics)) is not None:
        failed.append(at_chance)
    conditions = sorted({r["condition"] for r in metrics.get("test_composition") or []})
    if len(conditions) == 1 or (conditions == [] and not _finite(metrics.get("well_label_auroc"))):
        failed.append(
            f"the test split holds one condition ({', '.join(conditions) or '?'}): well-label AUROC is "
            "undefined and nothing can be compared; the store needs at least two source images per "
            "condition (one trains, one tests)"
        )
    called = metrics.get("called_fraction")
    if called is not None and called in (0.0, 1.0) and metrics.get("n_cells", 0) > 0:
        failed.append(
            f"every test cell got the same call ({'positive' if called == 1.0 else 'negative'}, "
            f"{metrics['n_cells']} cells): the cell calls separate nothing"
        )
    cal = metrics.get("calibration") or {}
    if cal and not cal.get("used", True):
        failed.append(
            "the calibration was rejected (validation scores rank the wells backwards, slope ≤ 0): the "
            "cell calls are the raw argmax of a network that does not separate the wells"
        )
    for key in cal.get("at_bound") or []:
        if key == "lo" and cal.get("rho_exp", 0.0) >= 0.5:
            # lo = P(Exp | unaffected) → 0 is what a plate where (nearly) every exposed cell responds gives
            # (ρ_Exp → 1, e.g. BBBC013's inhibited wells); pinned with few exposed cells affected, it is degenerate
            warnings.append(
                f"calibration parameter lo = {cal['lo']:.3g} sits on its bound with ρ_Exp = "
                f"{cal['rho_exp']:.3f}: the fit finds (almost) no unaffected cells in the exposed wells; "
                "the exposed condition's affected fraction sits at its upper limit"
            )
        elif key in FAILING_BOUNDS or (key == "a" and cal.get("a", 1.0) < 1.0):
            why = FAILING_BOUNDS.get(key, "the slope sits on its lower bound: the scores carry no cell-level evidence")
            failed.append(f"calibration parameter {key} = {cal.get(key, float('nan')):.3g} sits on its bound: {why}")
        else:
            warnings.append(
                f"calibration parameter {key} = {cal.get(key, float('nan')):.3g} sits on its bound "
                f"({'the scores saturate: calls are only as good as the ranking' if key == 'a' else 'no affected cells in the reference condition'})"
            )
    if cal.get("fallback_from") and cal.get("used", True):
        warnings.append("the noisy-label calibration was degenerate (no cell-level evidence) and fell back to Platt")
    frac = metrics.get("affected_fraction") or {}
    # a run whose scores give no fraction has not answered its question: not ok (a reason, not a warning)
    missing = [f"no affected fraction: {frac.get('reason', '?')}"] if frac and not frac.get("available", False) else []
    rho = (frac.get("fit") or {}).get("rho_exp") if frac.get("available") else None
    if bag_size > 1 and rho is not None and rho >= BAG_WARNING:
        warnings.append(
            f"most exposed cells look affected (ρ_Exp ≈ {rho:.2f} from the held-out scores) but training "
            f"used bags of {bag_size} cells, in which only the most exposed-looking cell of a bag must "
            "look exposed: responding cells can go unscored (on BBBC013 a quarter of the treated cells). "
            "data.bag_size=1 (the per-cell cross-entropy) fits a plate where nearly every exposed cell "
            "responds"
        )
    doubts = [d["why"] for d in (metrics.get("diagnostics") or {}).values() if d.get("fires")]
    if levelled:
        doubts.append(LEVELLING_DOUBT)
    elif imaging_alignment is not None and imaging_alignment.get("fires"):
        doubts.append(imaging_alignment["why"])
    if doubts and frac.get("available"):
        frac["reliable"] = False
    elif frac.get("available"):
        frac["reliable"] = True
    ceiling = (
        [
            "trained on each cell's true label (data.labels=truth): a ceiling measured on built-in wells, "
            "not an answer a plate's well labels give"
        ]
        if truth_labels
        else []
    )
    status = "failed" if failed else "incomplete" if incomplete else "warning" if doubts or missing or ceiling else "ok"
    return {"status": status, "reasons": failed + incomplete + doubts + missing + ceiling, "warnings": warnings}


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)
