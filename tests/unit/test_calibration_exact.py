"""Calibration internals checked exactly (written for the mutants that survived the first mutation
pass, docs/reliability.md): the logit's clipping, Platt's Newton fit against a general-purpose
optimiser, and the noisy-label fit's returned quantities against their formulas."""

import numpy as np
import pytest
from scipy.optimize import minimize

from protocell.evaluate.calibration import BOUNDS, _logit, noisy_label_apply, noisy_label_fit, platt_apply, platt_fit


def test_logit_clips_both_ends_symmetrically_and_works_in_float64():
    edge = np.log((1 - 1e-6) / 1e-6)
    out = _logit(np.array([0, 1]))
    assert out.dtype == np.float64 and out.tolist() == pytest.approx([-edge, edge], rel=1e-9)
    assert _logit(np.array([0.5], np.float32))[0] == 0.0
    assert _logit(np.array([0.75]))[0] == pytest.approx(np.log(3.0), rel=1e-12)


def mixture(n=6000, seed=0):
    rng = np.random.default_rng(seed)
    exp = np.arange(n) < n // 2
    affected = rng.random(n) < np.where(exp, 0.5, 0.05)
    s = 1 / (1 + np.exp(-rng.normal(np.where(affected, 1.5, -1.5), 1.0)))
    return s, exp


def test_platt_fit_is_the_maximum_likelihood_fit():
    s, y = mixture(3000, 1)
    a, b = platt_fit(s, y)
    x = _logit(s)

    def loss(w):
        z = w[0] * x + w[1]
        return float(np.mean(np.logaddexp(0, z) - y * z))

    ref = minimize(loss, [0.0, 0.0], method="BFGS", options={"gtol": 1e-10})
    assert (a, b) == pytest.approx(tuple(ref.x), abs=1e-5)
    assert platt_apply(np.array([0.3]), a, b)[0] == pytest.approx(1 / (1 + np.exp(-(a * np.log(0.3 / 0.7) + b))))


def nll(fit, s, y):
    q = fit["lo"] + (fit["hi"] - fit["lo"]) / (1 + np.exp(-(fit["a"] * _logit(s) + fit["b"])))
    return -float(np.mean(y * np.log(q) + (1 - y) * np.log(1 - q)))


def test_noisy_label_fit_reports_its_likelihood_fractions_and_prior_by_their_formulas():
    s, y = mixture()
    fit = noisy_label_fit(s, y)
    assert fit["nll"] == pytest.approx(nll(fit, s, y), rel=1e-9)
    truth = {"a": 3.0, "b": np.log(0.275 / 0.725), "lo": 0.5 / 1.45, "hi": 0.5 / 0.55}
    assert fit["nll"] <= nll(truth, s, y) + 1e-9  # the maximum likelihood, not just near it
    pi = float(np.mean(y))
    c1 = pi * (1 - fit["hi"]) / ((1 - pi) * fit["hi"])
    c2 = pi * (1 - fit["lo"]) / ((1 - pi) * fit["lo"])
    assert fit["rho_exp"] == pytest.approx((c2 - 1) / (c2 - c1), rel=1e-12)
    assert fit["rho_ref"] == pytest.approx(c1 * fit["rho_exp"], rel=1e-12)
    assert fit["prior"] == pytest.approx(pi * fit["rho_exp"] + (1 - pi) * fit["rho_ref"], rel=1e-12)
    assert fit["ok"] and fit["at_bound"] == [] and 0 < fit["lo"] < fit["hi"] < 1
    assert np.allclose(noisy_label_apply(s[:5], fit), 1 / (1 + np.exp(-(fit["a"] * _logit(s[:5]) + fit["b"]))))
    again = noisy_label_fit(s, y, start=fit)  # one local search from a previous fit
    assert again["nll"] == pytest.approx(fit["nll"], abs=1e-7)
    assert (again["a"], again["lo"], again["hi"]) == pytest.approx((fit["a"], fit["lo"], fit["hi"]), abs=2e-3)


def test_noisy_label_fit_names_the_parameters_left_on_a_bound():
    """Scores that separate the wells perfectly: every Ref cell unaffected-looking (lo → its lower
    bound, logit −10) and every Exp cell affected (hi → its upper bound)."""
    y = np.arange(400) < 200
    s = np.where(y, 0.9, 0.1) + np.linspace(-0.01, 0.01, 400)
    fit = noisy_label_fit(s, y)
    assert fit["at_bound"] == ["lo", "hi"]
    assert fit["lo"] == pytest.approx(1 / (1 + np.exp(-BOUNDS["lo"][0])), rel=1e-3)
    assert noisy_label_fit(*mixture(2000, 3))["at_bound"] == []


def test_a_weak_but_real_slope_is_an_ok_fit():
    """Scores in logit space N(±0.5, √2): P(affected | s) = σ(0.5·logit(s) + b), a slope well below 1
    that is still cell-level evidence."""
    rng = np.random.default_rng(5)
    n = 20000
    exp = np.arange(n) < n // 2
    affected = rng.random(n) < np.where(exp, 0.6, 0.05)
    s = 1 / (1 + np.exp(-rng.normal(np.where(affected, 0.5, -0.5), np.sqrt(2.0))))
    fit = noisy_label_fit(s, exp)
    assert 0.3 < fit["a"] < 0.8 and fit["ok"], fit
