"""The affected fraction of a well or a condition: one estimator, with confidence intervals.

The noisy-label calibration (``calibration.noisy_label_fit``) turns a cell's score s into
P(affected | s) under the prior π of the cells it was fitted on (the validation cells of both
conditions). Dividing out that prior gives a likelihood ratio per cell,

    LR(s) = [P(affected | s) / (1 − P(affected | s))] / [π / (1 − π)] = p(s | affected) / p(s | unaffected),

which does not depend on how many cells of a well are affected. The fraction ρ of a set of cells
(a well, or all cells of a condition) is then the maximum-likelihood mixing weight of the
two-component mixture ρ·p(s | affected) + (1 − ρ)·p(s | unaffected), found by the EM of Saerens,
Latinne and Decaestecker (Neural Computation, 2002): ρ ← mean_i ρ·LR_i / (ρ·LR_i + 1 − ρ).

Confidence intervals: per well, a bootstrap over the well's cells; per condition, a bootstrap over
its wells (cells of a well are not independent). A resample is a *weighting* of the cells (how often
each one is drawn), so ``mixture_fractions`` runs the EM of every resample at once
(``bootstrap_cells``, ``bootstrap_wells``). Assumptions, stated wherever the number is shown:
the calibration holds for the scored cells (same imaging, same cell types), and an unaffected
cell scores alike in every well (no batch effect the network reads: ``well_cue_auroc``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

ESTIMATOR = ("maximum-likelihood mixing weight of affected cells given each cell's likelihood ratio "
             "from the noisy-label calibration (EM, Saerens et al. 2002)")
ASSUMPTION = ("the calibration fitted on validation cells holds for these cells, and unaffected cells score "
              "alike in every well")


def likelihood_ratio(posterior, prior: float) -> np.ndarray:
    """p(s | affected) / p(s | unaffected) from P(affected | s) under ``prior``."""
    p = np.clip(np.asarray(posterior, np.float64), 1e-9, 1 - 1e-9)
    prior = float(np.clip(prior, 1e-9, 1 - 1e-9))
    return (p / (1 - p)) / (prior / (1 - prior))


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
    return np.concatenate([mixture_fractions(lr, rng.multinomial(n, np.full(n, 1.0 / n), size=b))
                           for b in _chunks(n_boot, n)])


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
        counts = np.stack([np.bincount(row, minlength=k) for row in picks])   # (b, k) draws of each well
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


def affected_fractions(cells: pd.DataFrame, fit: dict, n_boot: int = 200, seed: int = 0) -> dict:
    """Per condition and per well, the affected fraction of the *target* cells.

    ``cells``: the held-out cells the calibration ``fit`` was fitted on (``noisy_label_fit`` of their
    scores against their well labels), columns well, condition, exposed (the well label), score,
    target (the cells to report on: the test cells), optionally true_label. The condition CI
    resamples wells within each condition and *refits the calibration* on every resample, so it
    carries the calibration's uncertainty, not only the cells'."""
    from protocell.calibration import noisy_label_apply, noisy_label_fit

    rng = np.random.default_rng(seed)
    cells = cells.reset_index(drop=True)
    conds = list(dict.fromkeys(cells.loc[cells["target"], "condition"]))

    def estimate(sample: pd.DataFrame, f: dict) -> dict:
        t = sample[sample["target"]]
        lr = likelihood_ratio(noisy_label_apply(t["score"].to_numpy(), f), f["prior"])
        return {c: mixture_fraction(lr[(t["condition"] == c).to_numpy()]) for c in conds}

    point = estimate(cells, fit)
    wells_of = {c: cells.loc[cells["condition"] == c, "well"].unique() for c in cells["condition"].unique()}
    groups = {w: idx for w, idx in cells.groupby("well").indices.items()}
    boots = []
    if all(len(w) > 1 for w in wells_of.values()):
        for _ in range(n_boot):
            pick = np.concatenate([groups[w] for ws in wells_of.values() for w in rng.choice(ws, len(ws))])
            sample = cells.iloc[pick]
            f = noisy_label_fit(sample["score"].to_numpy(), sample["exposed"].to_numpy(), start=fit)
            if f["ok"]:
                boots.append(estimate(sample, f))
    out = {"estimator": ESTIMATOR, "assumption": ASSUMPTION, "prior": float(fit["prior"]),
           "n_boot": len(boots), "conditions": {}}
    target = cells[cells["target"]]
    truth = "true_label" in target and bool((target["true_label"] >= 0).all())
    for c in conds:
        lo, hi = ci([b[c] for b in boots]) if boots else (float("nan"), float("nan"))
        g = target[target["condition"] == c]
        est = {"estimate": point[c], "ci_low": lo, "ci_high": hi, "n_wells": int(g["well"].nunique()),
               "n_cells": int(len(g))}
        if truth:
            est["true"] = float((g["true_label"] == 1).mean())
            est["error"] = est["estimate"] - est["true"]
            est["ci_covers_truth"] = bool(lo <= est["true"] <= hi)
        out["conditions"][str(c)] = est
    lr = likelihood_ratio(noisy_label_apply(target["score"].to_numpy(), fit), fit["prior"])
    wells = well_fractions(target.assign(lr=lr), n_boot=n_boot, seed=seed)
    if truth:
        wells["true"] = wells["well"].map(target.groupby("well")["true_label"].apply(lambda t: float((t == 1).mean())))
    out["wells"] = wells.to_dict(orient="records")
    return out
