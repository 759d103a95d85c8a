"""The affected fraction of a well or a condition: one estimator, with confidence intervals.

Labels exist per well: a share ρ_Ref of the reference cells and ρ_Exp of the exposed cells carry the
change (ρ_Ref small but not nought: some control cells look affected). With u and a the score
densities of unaffected and affected cells, the held-out (never trained on) cells of the two
conditions have score densities

    f_Exp = (1 − ρ_Exp)·u + ρ_Exp·a,        f_Ref = (1 − ρ_Ref)·u + ρ_Ref·a.

**Anchors: mixture proportion estimation** (``fit_reference``). If some scores are reached only by
unaffected cells (the low tail) and some only by affected cells (the high tail) — "mutual
irreducibility" — both fractions are identified (Scott, Blanchard & Handy, COLT 2013;
Blanchard, Flaska, Handy, Pozzi & Scott, EJS 2016):

    κ_low  = inf_t F_Exp(t) / F_Ref(t)  = (1 − ρ_Exp) / (1 − ρ_Ref)        (lower tails, F the CDF)
    κ_high = inf_t S_Ref(t) / S_Exp(t)  = ρ_Ref / ρ_Exp                    (upper tails, S = 1 − F)
    ρ_Exp  = (1 − κ_low) / (1 − κ_low·κ_high),   ρ_Ref = κ_high·ρ_Exp.

An infimum of empirical ratios is biased low in the sparse far tail (and any small shift between the
wells' unaffected cells drives it to 0 there), so each κ is the estimator of Scott (AISTATS 2015) and
Blanchard et al. (2016): the smallest ratio of a one-sided *upper* confidence bound of the numerator's
tail to a *lower* bound of the denominator's, over every threshold, Clopper–Pearson bounds at level
δ = 1/n per sample (their consistency choice: no level to tune).

**Per cell: a likelihood ratio.** The isotonic (monotone) regression of the well label on the score
gives P(Exp | s), hence the density ratio r(s) = f_Exp/f_Ref = P(Exp | s)/(1 − P(Exp | s))·n_Ref/n_Exp;
solving the two mixture equations for u and a,

    LR(s) = a(s)/u(s) = max((1 − ρ_Ref)·r(s) − (1 − ρ_Exp), 0) / (ρ_Exp − ρ_Ref·r(s))   (∞ past the pole).

No parametric shape is assumed: the noisy-label calibration's sigmoid (``calibration``) gives the cell
*call*, but its tail is too heavy for a fraction (it leaves P(affected) ≈ 0.1 where no cell is
affected, which biased every fraction up by that floor).

**The fraction of a set of cells** (a well, a condition, a treatment) is the maximum-likelihood mixing
weight of ρ·a + (1 − ρ)·u given each cell's LR, by the EM of Saerens, Latinne & Decaestecker (Neural
Computation, 2002): ρ ← mean_i ρ·LR_i / (ρ·LR_i + 1 − ρ).

**The cell call is the same fit** (``cell_posteriors``): a cell's P(affected | score) is the EM's
own posterior at its well's fraction, ρ_w·LR / (ρ_w·LR + 1 − ρ_w), and the call is that posterior
above ½ (the Bayes decision). The mean posterior of a well *is* its fraction (the EM's fixed point),
so calls and fractions cannot tell two stories; the share of cells *called* is close to the fraction
when the posteriors are near 0 or 1 and falls short of it when affected and unaffected cells score
alike — ``called_share`` beside each condition's estimate shows which.

Confidence intervals: per well, a bootstrap over the well's cells (the fit held fixed); per
condition, a bootstrap over wells of each condition that *refits the anchors and the isotonic
curve* on every resample, so it carries the fit's uncertainty too. A resample is a *weighting* of the
cells, so ``mixture_fractions`` runs the EM of every resample at once. Assumptions, stated wherever the
number is shown: unaffected cells score alike in every well (no batch effect the network reads:
``well_cue_auroc``), affected cells too, and the score orders cells by how affected they look.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

ESTIMATOR = (
    "maximum-likelihood mixing weight of affected cells (EM, Saerens et al. 2002) given each cell's "
    "likelihood ratio, from mixture proportion estimation on the held-out control cells (Blanchard et "
    "al. 2016) and an isotonic fit of the well label on the score"
)
ASSUMPTION = (
    "the reference fitted on held-out control cells holds for these cells: unaffected cells (and "
    "affected ones) score alike in every well"
)
IDENTIFIED = (
    "from labels per well a fraction is known only as a lower bound: a few cells changed a lot and many "
    "changed a little can give the same scores per condition; the estimate takes the most separated "
    "reading, so affected cells that score like unaffected ones are not counted, and nothing without "
    "cells of known state tells the readings apart (docs/method.md, 'What well labels cannot tell')"
)


def _cp_bounds(k: np.ndarray, n: int, delta: float) -> tuple[np.ndarray, np.ndarray]:
    """One-sided Clopper–Pearson bounds of a binomial proportion k/n, each at level 1 − delta."""
    from scipy.stats import beta

    k = np.asarray(k, np.float64)
    lo = np.zeros_like(k)
    hi = np.ones_like(k)
    pos, below = k > 0, k < n
    lo[pos] = beta.ppf(delta, k[pos], n - k[pos] + 1)
    hi[below] = beta.ppf(1 - delta, k[below] + 1, n - k[below])
    return lo, hi


def tail_ratio(num, den, upper: bool = False, max_thresholds: int = 400) -> dict:
    """κ = min over thresholds t of UCB(P(num ≤ t)) / LCB(P(den ≤ t)) (``upper``: of the tails ≥ t), the
    mixture-proportion estimate of the largest share of ``den``'s distribution inside ``num``'s.

    Thresholds are ``den``'s order statistics (at most ``max_thresholds`` of them, geometrically spaced
    in rank so that the tail keeps every point); bounds are one-sided Clopper–Pearson at δ = 1/n of each
    sample. Returns {"kappa" (≤ 1), "threshold", "n_num", "n_den" (cells of each at or beyond it)}."""
    sign = -1.0 if upper else 1.0  # upper tails: the lower tails of −score
    num, den = np.sort(sign * np.asarray(num, np.float64)), np.sort(sign * np.asarray(den, np.float64))
    n_num, n_den = len(num), len(den)
    if n_num == 0 or n_den == 0:
        raise ValueError("tail_ratio needs cells in both samples")
    ranks = np.unique(np.round(np.geomspace(1, n_den, min(max_thresholds, n_den))).astype(int))
    t = den[ranks - 1]
    k_den = np.searchsorted(den, t, side="right")
    k_num = np.searchsorted(num, t, side="right")
    _, ub = _cp_bounds(k_num, n_num, 1 / n_num)
    lb, _ = _cp_bounds(k_den, n_den, 1 / n_den)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(lb > 0, ub / lb, np.inf)
    i = int(np.argmin(ratio))
    return {
        "kappa": float(min(ratio[i], 1.0)),
        "threshold": float(sign * t[i]),
        "n_num": int(k_num[i]),
        "n_den": int(k_den[i]),
    }


def fit_reference(scores, exposed, min_cells: int = 20) -> dict:
    """The anchors and the per-cell likelihood ratio from held-out control cells: ``scores`` (P(Exp)) and
    ``exposed`` (the well label). Returns a JSON-able dict: rho_exp, rho_ref, kappa_low, kappa_high,
    the tails they came from, n_exp, n_ref, ``knots``/``values`` (the isotonic P(Exp | s), a step function),
    ``ok`` and ``reason`` (why not ok: no cells, or no exposed cells unlike the reference)."""
    from scipy.optimize import isotonic_regression

    s = np.asarray(scores, np.float64)
    y = np.asarray(exposed, bool)
    n_exp, n_ref = int(y.sum()), int((~y).sum())
    out = {"method": "mpe+isotonic", "n_exp": n_exp, "n_ref": n_ref, "ok": False}
    if min(n_exp, n_ref) < min_cells:
        return {
            **out,
            "reason": f"{n_exp} exposed and {n_ref} reference held-out cells: at least {min_cells} of each are needed",
        }
    low = tail_ratio(s[y], s[~y])
    high = tail_ratio(s[~y], s[y], upper=True)
    k1, k2 = low["kappa"], high["kappa"]
    rho_exp = (1 - k1) / (1 - k1 * k2) if k1 * k2 < 1 else 0.0
    rho_ref = k2 * rho_exp
    order = np.lexsort((y, s))
    fitted = np.clip(isotonic_regression(y[order].astype(np.float64)).x, 1e-6, 1 - 1e-6)
    xs = s[order]
    change = np.flatnonzero(np.r_[True, np.diff(fitted) != 0])  # the steps' first cells
    out.update(
        {
            "rho_exp": float(rho_exp),
            "rho_ref": float(rho_ref),
            "kappa_low": k1,
            "kappa_high": k2,
            "low_tail": low,
            "high_tail": high,
            "knots": xs[change].tolist(),
            "values": fitted[change].tolist(),
        }
    )
    if k1 >= 1 or rho_exp - rho_ref < 1e-3:
        return {
            **out,
            "reason": "no exposed cells unlike the reference at the tails' confidence bounds: the "
            "scores give no evidence of affected cells",
        }
    return {**out, "ok": True}


def reference_lr(scores, fit: dict) -> np.ndarray:
    """Each cell's likelihood ratio p(s | affected) / p(s | unaffected) under ``fit`` (``fit_reference``);
    0 where only unaffected cells score, 1e6 (∞) where only affected ones do."""
    s = np.asarray(scores, np.float64)
    knots, values = np.asarray(fit["knots"]), np.asarray(fit["values"])
    eta = values[np.clip(np.searchsorted(knots, s, side="right") - 1, 0, len(knots) - 1)]
    r = eta / (1 - eta) * fit["n_ref"] / fit["n_exp"]
    re, rr = fit["rho_exp"], fit["rho_ref"]
    num, den = np.maximum((1 - rr) * r - (1 - re), 0.0), re - rr * r
    with np.errstate(divide="ignore", invalid="ignore"):
        lr = np.where(den > 0, num / np.where(den > 0, den, 1.0), 1e6)
    return np.clip(lr, 0.0, 1e6)


def mixture_fraction(lr, iters: int = 500, tol: float = 1e-9) -> float:
    """EM estimate of the affected fraction of cells with likelihood ratios ``lr``."""
    lr = np.asarray(lr, np.float64)
    if len(lr) == 0:
        return float("nan")
    rho = 0.5
    for _ in range(iters):
        new = float(np.mean(rho * lr / (rho * lr + 1 - rho)))
        if abs(new - rho) < tol:
            return new
        rho = new
    return rho


def mixture_fractions(lr, weights=None, iters: int = 500, tol: float = 1e-9) -> np.ndarray:
    """``mixture_fraction`` of B weightings of one set of cells at once: lr (n,), weights (B, n) ≥ 0
    (how often each cell counts in each sample; None: every cell once) → (B,) fractions (NaN for an
    all-zero row). Each row stops when its own step is below ``tol``, as the one-sample EM does."""
    lr = np.asarray(lr, np.float64)
    w = np.ones((1, len(lr))) if weights is None else np.asarray(weights, np.float64)
    total = w.sum(1)
    rho = np.where(total > 0, 0.5, np.nan)
    active = np.flatnonzero(total > 0)
    for _ in range(iters):
        if len(active) == 0:
            break
        r = rho[active, None]
        new = (w[active] * (r * lr / (r * lr + 1 - r))).sum(1) / total[active]
        done = np.abs(new - rho[active]) < tol
        rho[active] = new
        active = active[~done]
    return rho


def posterior(lr, prior: float) -> np.ndarray:
    """P(affected | score) of cells with likelihood ratios ``lr`` in a set whose affected fraction is
    ``prior``: the EM's E-step."""
    lr = np.asarray(lr, np.float64)
    prior = float(np.clip(prior, 0.0, 1.0))
    with np.errstate(invalid="ignore"):
        p = prior * lr / (prior * lr + 1 - prior)
    return np.where(np.isfinite(p), p, float(prior >= 1.0))


def cell_posteriors(lr, group) -> tuple[np.ndarray, dict]:
    """Each cell's posterior under its ``group``'s (its well's) maximum-likelihood fraction, and those
    fractions: (posteriors (n,), {group: fraction}). The mean posterior of a group is its fraction."""
    lr = np.asarray(lr, np.float64)
    group = np.asarray(group)
    out = np.empty(len(lr))
    fractions = {}
    for g in pd.unique(group):
        sel = group == g
        fractions[g] = mixture_fraction(lr[sel])
        out[sel] = posterior(lr[sel], fractions[g])
    return out, fractions


def _chunks(n_boot: int, n: int, budget: int = 2_000_000):
    """Row blocks of a (n_boot, n) weight matrix of at most ``budget`` entries (bounded memory)."""
    step = max(1, budget // max(n, 1))
    for start in range(0, n_boot, step):
        yield min(step, n_boot - start)


def bootstrap_cells(lr, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot,) fractions of the cells resampled with replacement (multinomial counts)."""
    lr = np.asarray(lr, np.float64)
    n = len(lr)
    if n == 0:
        return np.full(n_boot, np.nan)
    return np.concatenate(
        [mixture_fractions(lr, rng.multinomial(n, np.full(n, 1.0 / n), size=b)) for b in _chunks(n_boot, n)]
    )


def bootstrap_wells(lr, well, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot,) fractions of the pooled cells of wells resampled with replacement: ``well`` (n,)
    names each cell's well; a resample draws as many wells as there are, and a well drawn twice
    counts its cells twice."""
    lr = np.asarray(lr, np.float64)
    codes, names = pd.factorize(np.asarray(well))
    k = len(names)
    if k == 0:
        return np.full(n_boot, np.nan)
    out = []
    for b in _chunks(n_boot, len(lr)):
        picks = rng.integers(0, k, (b, k))
        counts = np.stack([np.bincount(row, minlength=k) for row in picks])  # (b, k) draws of each well
        out.append(mixture_fractions(lr, counts[:, codes]))
    return np.concatenate(out)


def ci(values, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the finite ``values`` (NaN, NaN when there are none)."""
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return float("nan"), float("nan")
    a = (1 - level) / 2
    return float(np.quantile(v, a)), float(np.quantile(v, 1 - a))


def well_fractions(cells: pd.DataFrame, n_boot: int = 200, seed: int = 0) -> pd.DataFrame:
    """``cells`` columns well, lr (and optionally condition): one row per well with n_cells, the
    fraction and a bootstrap-over-cells 95 % CI."""
    rng = np.random.default_rng(seed)
    rows = []
    for well, g in cells.groupby("well", sort=True):
        lr = g["lr"].to_numpy()
        lo, hi = ci(bootstrap_cells(lr, n_boot, rng))
        row = {"well": well, "n_cells": len(lr), "affected_fraction": mixture_fraction(lr), "ci_low": lo, "ci_high": hi}
        if "condition" in g:
            row["condition"] = g["condition"].iloc[0]
        rows.append(row)
    return pd.DataFrame(rows)


def condition_fractions(cells: pd.DataFrame, fit: dict, conds, lr=None) -> dict:
    """Each condition's fraction of the *target* cells of ``cells`` under the reference ``fit`` (``lr``: those
    cells' likelihood ratios, when already computed)."""
    t = cells[cells["target"]]
    lr = reference_lr(t["score"].to_numpy(), fit) if lr is None else lr
    return {c: mixture_fraction(lr[(t["condition"] == c).to_numpy()]) for c in conds}


def refit_draws(cells: pd.DataFrame, conds, n_boot: int, rng: np.random.Generator) -> list[dict]:
    """The condition interval's draws: wells resampled with replacement within each condition, the reference
    refitted on each draw, ``condition_fractions`` of it (draws whose fit finds no evidence are left out;
    none when a condition has a single well)."""
    wells_of = {c: cells.loc[cells["condition"] == c, "well"].unique() for c in cells["condition"].unique()}
    if not all(len(w) > 1 for w in wells_of.values()):
        return []
    groups = cells.groupby("well").indices
    draws = []
    for _ in range(n_boot):
        pick = np.concatenate([groups[w] for ws in wells_of.values() for w in rng.choice(ws, len(ws))])
        sample = cells.iloc[pick]
        f = fit_reference(sample["score"].to_numpy(), sample["exposed"].to_numpy())
        if f["ok"]:
            draws.append(condition_fractions(sample, f, conds))
    return draws


def affected_fractions(cells: pd.DataFrame, n_boot: int = 200, seed: int = 0) -> dict:
    """Per condition and per well, the affected fraction of the *target* cells.

    ``cells``: held-out cells (never trained on), columns well, condition, exposed (the well label),
    score, target (the cells to report on: the test cells), optionally true_label. The reference
    (``fit_reference``) is fitted on all of them; the condition CI resamples wells within each
    condition and *refits it* on every resample, so it carries the fit's uncertainty, not only the
    cells'. Returns {"available": False, "reason"} when the fit finds no evidence."""
    rng = np.random.default_rng(seed)
    cells = cells.reset_index(drop=True)
    conds = list(dict.fromkeys(cells.loc[cells["target"], "condition"]))
    fit = fit_reference(cells["score"].to_numpy(), cells["exposed"].to_numpy())
    if not fit["ok"]:
        return {"available": False, "reason": fit["reason"], "fit": fit}

    target = cells[cells["target"]]
    target_lr = reference_lr(target["score"].to_numpy(), fit)
    point = condition_fractions(cells, fit, conds, target_lr)
    boots = refit_draws(cells, conds, n_boot, rng)
    conditions: dict[str, dict] = {}
    out = {
        "available": True,
        "estimator": ESTIMATOR,
        "assumption": ASSUMPTION,
        "identified": IDENTIFIED,
        "n_boot": len(boots),
        "fit": fit,
        "conditions": conditions,
    }
    truth = "true_label" in target and bool((target["true_label"] >= 0).all())
    for c in conds:
        lo, hi = ci([b[c] for b in boots]) if boots else (float("nan"), float("nan"))
        g = target[target["condition"] == c]
        post, _ = cell_posteriors(target_lr[(target["condition"] == c).to_numpy()], g["well"].to_numpy())
        est = {
            "estimate": point[c],
            "ci_low": lo,
            "ci_high": hi,
            "n_wells": int(g["well"].nunique()),
            "n_cells": int(len(g)),
            "called_share": float((post > 0.5).mean()) if len(post) else float("nan"),
        }
        if truth:
            est["true"] = float((g["true_label"] == 1).mean())
            est["error"] = est["estimate"] - est["true"]
            est["ci_covers_truth"] = bool(lo <= est["true"] <= hi)
        conditions[str(c)] = est
    wells = well_fractions(target.assign(lr=target_lr), n_boot=n_boot, seed=seed)
    if truth:
        wells["true"] = wells["well"].map(target.groupby("well")["true_label"].apply(lambda t: float((t == 1).mean())))
    out["wells"] = wells.to_dict(orient="records")
    return out
