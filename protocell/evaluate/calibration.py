"""The cell call: turning a network's per-cell scores into P(affected) and a call, from held-out cells'
well labels (never ground truth).

``calibrate`` with ``calibration=mixture`` (default) takes P(affected | score) from the affected-fraction
fit itself (``protocell.evaluate.fraction``), the cell's posterior at its well's fraction, called above
0.5: the calls and the fractions are one model. ``noisy_label`` fits a sigmoid P(affected | score) under
per-well label noise (``noisy_label_fit``, with the implied affected fractions); ``platt`` calls a cell
when the well-label posterior P(Exp | score) exceeds 0.5 (``platt_fit``); ``none`` keeps the raw argmax.
A mixture without a fit and a degenerate noisy-label fit fall back to Platt, a Platt slope ≤ 0 to the raw
argmax (both logged and recorded).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

log = logging.getLogger("protocell.evaluate")


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float64), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def platt_fit(scores: np.ndarray, targets: np.ndarray, iters: int = 100) -> tuple[float, float]:
    """Platt scaling: a, b of P(y=1 | s) = σ(a·logit(s) + b), by Newton's method on the log loss.

    Fitted on *well* labels of validation cells, it turns a network's cell scores into the
    well-label posterior P(Exp | s). Calling a cell affected when that posterior exceeds 0.5 means
    its score is more likely in Exp than in Ref wells (likelihood ratio 1). Under noisy labels
    (fractions ρ_Exp, ρ_Ref of affected cells, balanced conditions) this is the Bayes call for
    "affected" when half of all cells are affected; with fewer it over-calls where the score
    distributions overlap. It needs unaffected cells to score alike in both conditions."""
    x, y = _logit(scores), np.asarray(targets, np.float64)
    w = np.zeros(2)
    X = np.stack([x, np.ones_like(x)], 1)
    for _ in range(iters):
        p = 1 / (1 + np.exp(-(X @ w)))
        g = X.T @ (p - y)
        H = (X * (p * (1 - p))[:, None]).T @ X + 1e-6 * np.eye(2)
        step = np.linalg.solve(H, g)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    return float(w[0]), float(w[1])


def platt_apply(scores: np.ndarray, a: float, b: float) -> np.ndarray:
    return 1 / (1 + np.exp(-(a * _logit(scores) + b)))


BOUNDS = {"a": (1e-3, 50.0), "b": (-50.0, 50.0), "lo": (-10.0, 10.0), "hi": (-10.0, 10.0)}  # lo, hi: logits


def noisy_label_fit(scores: np.ndarray, targets: np.ndarray, start: dict | None = None) -> dict:
    """Calibration under per-well label noise: from well labels to P(affected | score).

    When a fraction ρ_Exp of Exp cells and ρ_Ref of Ref cells carry the change, a cell's well-label
    posterior is an affine function of its affected posterior (Menon et al., ICML 2015, "Learning
    from corrupted binary labels via class-probability estimation"):

        P(Exp | s) = lo + (hi − lo) · P(affected | s),   lo = P(Exp | unaffected), hi = P(Exp | affected)

    This fits P(affected | s) = σ(a·logit(s) + b) together with lo < hi by maximum likelihood on the
    cells' well labels (no ground truth), so the call P(affected | s) > 0.5 is the Bayes call for the
    affected state, whatever the fractions; Platt's P(Exp | s) > 0.5 is that only when half of all
    cells are affected. lo and hi also give the fractions: with π the share of Exp cells among the
    fitted ones, c₁ = π(1 − hi)/((1 − π)hi), c₂ = π(1 − lo)/((1 − π)lo), ρ_Exp = (c₂ − 1)/(c₂ − c₁) and
    ρ_Ref = c₁·ρ_Exp. Both rest on one assumption: an unaffected cell scores alike in both
    conditions (no batch effect the network can read).

    Returns {"a", "b", "lo", "hi", "rho_exp", "rho_ref", "prior", "nll", "ok", "at_bound"} (``prior``: the
    share of affected cells among the fitted ones, the prior of P(affected | s); ``at_bound``: the
    parameters the optimiser left on a bound of their range — a fit to read with care); ``ok`` is
    False when the fit is degenerate (slope ≤ 0 or hi − lo < 0.05: no cell-level evidence).
    ``start``: a previous fit to start from (one local search instead of eight; bootstraps).
    """
    from scipy.optimize import minimize

    x, y = _logit(scores), np.asarray(targets, np.float64)
    a0, b0 = platt_fit(scores, targets)

    def unpack(w):
        a, b, u, v = w
        lo = 1 / (1 + np.exp(-u))
        return a, b, lo, lo + (1 - lo) / (1 + np.exp(-v))

    def nll(w):
        a, b, lo, hi = unpack(w)
        q = np.clip(lo + (hi - lo) / (1 + np.exp(-(a * x + b))), 1e-9, 1 - 1e-9)
        return -float(np.mean(y * np.log(q) + (1 - y) * np.log(1 - q)))

    def logit(p):
        p = float(np.clip(p, 1e-6, 1 - 1e-6))
        return np.log(p / (1 - p))

    if start is not None:
        starts = [
            [
                start["a"],
                start["b"],
                logit(start["lo"]),
                logit((start["hi"] - start["lo"]) / max(1 - start["lo"], 1e-9)),
            ]
        ]
    else:
        starts = [
            [*ab, np.log(lo0 / (1 - lo0)), np.log((hi0 - lo0) / (1 - hi0))]
            for lo0, hi0 in ((0.2, 0.8), (0.35, 0.9), (0.1, 0.95), (0.4, 0.7))
            for ab in ((max(a0, 0.1), b0), (1.0, 0.0))
        ]
    best = None
    for w0 in starts:
        w0 = [float(np.clip(v, lo_b + 1e-9, hi_b - 1e-9)) for v, (lo_b, hi_b) in zip(w0, BOUNDS.values())]
        r = minimize(nll, w0, method="L-BFGS-B", bounds=list(BOUNDS.values()))
        if best is None or r.fun < best.fun:
            best = r
    assert best is not None  # starts is never empty
    at_bound = [
        k
        for k, v, (lo_b, hi_b) in zip(BOUNDS, best.x, BOUNDS.values())
        if abs(v - lo_b) < 1e-6 * max(1, abs(lo_b)) or abs(v - hi_b) < 1e-6 * max(1, abs(hi_b))
    ]
    a, b, lo, hi = unpack(best.x)
    pi = float(y.mean())
    c1, c2 = pi * (1 - hi) / ((1 - pi) * hi), pi * (1 - lo) / ((1 - pi) * lo)
    rho_exp = (c2 - 1) / (c2 - c1) if c2 != c1 else float("nan")
    ok = bool(a > 0.01 and hi - lo >= 0.05)
    rho_ref = c1 * rho_exp
    # the share of affected cells among the fitted ones: the prior P(affected | s) is relative to
    prior = pi * rho_exp + (1 - pi) * rho_ref
    return {
        "a": float(a),
        "b": float(b),
        "lo": float(lo),
        "hi": float(hi),
        "rho_exp": float(rho_exp),
        "rho_ref": float(rho_ref),
        "prior": float(prior),
        "nll": float(best.fun),
        "ok": ok,
        "at_bound": at_bound,
    }


def noisy_label_apply(scores: np.ndarray, fit: dict) -> np.ndarray:
    """P(affected | s) of ``noisy_label_fit``."""
    return 1 / (1 + np.exp(-(fit["a"] * _logit(scores) + fit["b"])))


def calibrate(df: pd.DataFrame, val: pd.DataFrame, pos: int, method: str, fraction: dict | None = None) -> dict | None:
    """Add ``calibrated`` (a probability) and ``call`` to ``df`` from the held-out cells ``val``'s well
    labels (no ground truth).

    ``mixture`` (the default): P(affected | score) from the affected-fraction fit itself
    (``fraction``, ``protocell.evaluate.fraction``): each cell's EM posterior at its well's fraction, called
    affected above ½ — one model for the call and the fraction. ``noisy_label``: a sigmoid fitted under
    per-well label noise; ``platt``: P(Exp | score); ``none``: the raw argmax."""
    if method == "none":
        return None
    s, y = val["score"].to_numpy(), (val["label"] == pos).to_numpy()
    if method == "mixture":
        from protocell.evaluate.fraction import cell_posteriors, reference_lr

        if fraction and fraction.get("available"):
            post, _ = cell_posteriors(
                reference_lr(df["score"].to_numpy(), fraction["fit"]), df["well"].astype(str).to_numpy()
            )
            df["calibrated"] = post
            df["call"] = (post > 0.5).astype(int)
            return {
                "method": "mixture: P(affected | score) = the affected-fraction fit's posterior at the cell's "
                "well's fraction (protocell.evaluate.fraction)",
                "n_cells": len(val),
                "used": True,
            }
        log.warning(
            "no affected-fraction fit (%s): cell calls fall back to Platt on the well labels",
            (fraction or {}).get("reason", "not computed"),
        )
    if method == "noisy_label":
        fit = noisy_label_fit(s, y)
        if fit["ok"]:
            df["calibrated"] = noisy_label_apply(df["score"].to_numpy(), fit)
            df["call"] = (df["calibrated"] > 0.5).astype(int)
            return {
                "method": "noisy-label calibration on validation well labels (P(affected | score))",
                **fit,
                "n_cells": len(val),
                "used": True,
            }
        log.warning(
            "noisy-label calibration degenerate on %d validation cells (hi − lo = %.3f, slope %.3g): "
            "falling back to Platt",
            len(val),
            fit["hi"] - fit["lo"],
            fit["a"],
        )
    a, b = platt_fit(s, y)
    calibration = {
        "method": "platt on validation well labels (P(Exp | score))",
        "a": a,
        "b": b,
        "n_cells": len(val),
        "used": a > 0,
        **({"fallback_from": method} if method != "platt" else {}),
    }
    if a > 0:
        df["calibrated"] = platt_apply(df["score"].to_numpy(), a, b)
        df["call"] = (df["calibrated"] > 0.5).astype(int)
    else:  # validation scores rank the wells backwards: a fit that would invert the calls
        log.warning(
            "calibration rejected (slope %.3g ≤ 0 on %d validation cells): cell calls are "
            "the raw argmax; more validation wells (data.val_fraction) make it usable",
            a,
            len(val),
        )
    return calibration
