"""The affected fraction's reference (``protocell.evaluate.fraction``): the mixture-proportion tail ratio against
brute force, the anchors and likelihood ratios on known mixtures, and the refusals."""

import numpy as np
import pandas as pd
import pytest
from scipy.stats import beta

from protocell.evaluate.fraction import affected_fractions, fit_reference, mixture_fraction, reference_lr, tail_ratio


def mixture(rng, n, rho, mu_a=2.5, mu_u=-0.5):
    """Scores (P(Exp)) of n cells, a share rho affected: logit ~ N(mu_a, 1) affected, N(mu_u, 1) not."""
    aff = rng.random(n) < rho
    return 1 / (1 + np.exp(-np.where(aff, rng.normal(mu_a, 1, n), rng.normal(mu_u, 1, n)))), aff


def test_tail_ratio_is_the_smallest_bound_ratio_over_every_threshold_by_brute_force():
    rng = np.random.default_rng(3)
    num, den = rng.normal(0.5, 1, 60), rng.normal(0, 1, 45)
    best, where = np.inf, None
    for t in den:  # every threshold, bounds from scipy by hand
        k, m = (num <= t).sum(), (den <= t).sum()
        ub = 1.0 if k == len(num) else beta.ppf(1 - 1 / len(num), k + 1, len(num) - k)
        lb = 0.0 if m == 0 else beta.ppf(1 / len(den), m, len(den) - m + 1)
        r = ub / lb if lb > 0 else np.inf
        if r < best:
            best, where = r, t
    got = tail_ratio(num, den, max_thresholds=1000)
    assert got["kappa"] == pytest.approx(min(best, 1.0), rel=1e-9)
    assert got["threshold"] == pytest.approx(where)
    up = tail_ratio(-num, -den, upper=True, max_thresholds=1000)  # the upper tails of the mirrored samples
    assert up["kappa"] == pytest.approx(got["kappa"], rel=1e-9) and up["threshold"] == pytest.approx(-where)


def test_anchors_recover_both_fractions_and_the_likelihood_ratio_is_monotone():
    rng = np.random.default_rng(0)
    s_ref, _ = mixture(rng, 6000, 0.05)
    s_exp, _ = mixture(rng, 6000, 0.4)
    fit = fit_reference(np.r_[s_ref, s_exp], np.r_[np.zeros(6000, bool), np.ones(6000, bool)])
    assert fit["ok"]
    assert fit["rho_exp"] == pytest.approx(0.4, abs=0.06)  # conservative bounds: a little low, never far
    assert fit["rho_ref"] == pytest.approx(0.05, abs=0.04)
    x = np.sort(np.r_[s_ref, s_exp])
    lr = reference_lr(x, fit)
    assert (np.diff(lr) >= 0).all()  # the isotonic fit keeps the score's order
    assert lr[: len(x) // 4].max() == 0  # the low tail: no affected cell scores there
    assert lr[-50:].min() > 50  # the high tail: only affected cells


def test_fraction_of_new_wells_from_the_reference_is_on_target():
    """Wells scored with a reference fitted on other (control) cells: the EM mixing weight of their
    likelihood ratios recovers each well's fraction, including 0 and the reference's own level."""
    rng = np.random.default_rng(1)
    s_ref, _ = mixture(rng, 4000, 0.05)
    s_exp, _ = mixture(rng, 4000, 0.5)
    fit = fit_reference(np.r_[s_ref, s_exp], np.r_[np.zeros(4000, bool), np.ones(4000, bool)])
    for rho in (0.0, 0.05, 0.2, 0.5, 0.8):
        s, aff = mixture(rng, 3000, rho)
        assert mixture_fraction(reference_lr(s, fit)) == pytest.approx(aff.mean(), abs=0.03), rho


def test_no_difference_between_the_conditions_is_said_not_estimated():
    rng = np.random.default_rng(2)
    s, _ = mixture(rng, 4000, 0.1)
    fit = fit_reference(s, np.arange(4000) % 2 == 0)  # the same population under two labels
    assert not fit["ok"] and "no evidence" in fit["reason"]
    few = fit_reference(s[:30], np.arange(30) < 5)
    assert not few["ok"] and "at least 20" in few["reason"]
    cells = pd.DataFrame(
        {
            "well": np.arange(4000) % 8,
            "condition": np.where(np.arange(4000) % 2, "Exp", "Ref"),
            "exposed": np.arange(4000) % 2 == 1,
            "score": s,
            "target": True,
        }
    )
    out = affected_fractions(cells, n_boot=10)
    assert out["available"] is False and "no evidence" in out["reason"]


def test_a_fraction_from_well_labels_is_a_lower_bound_exact_when_the_cells_score_apart():
    """docs/method.md, "What well labels cannot tell": the estimator sees the scores per condition only.
    The same exposed scores are 20 % of cells changed a lot, or half the cells changed (part of them
    scoring like unaffected ones): it reads the separated split, exact for the first, 0.3 low for the
    second: changed cells that score like unchanged ones are not counted."""
    rng = np.random.default_rng(4)
    s_ref, _ = mixture(rng, 6000, 0.05)
    s_exp, far = mixture(rng, 6000, 0.2)
    fit = fit_reference(np.r_[s_ref, s_exp], np.r_[np.zeros(6000, bool), np.ones(6000, bool)])
    est = mixture_fraction(reference_lr(s_exp, fit))
    assert est == pytest.approx(far.mean(), abs=0.03)
    half = far | (rng.random(6000) < 0.375)  # the same scores, half the cells called changed
    assert half.mean() == pytest.approx(0.5, abs=0.02) and est < half.mean() - 0.25
