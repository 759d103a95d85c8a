"""Dose–response: a four-parameter logistic of a well-level measure against log dose, per compound.

    f(x) = bottom + (top − bottom) / (1 + 10^((log10 EC50 − x) · hill)),   x = log10 dose, hill > 0

``bottom`` is the response at low dose, ``top`` at high dose (top < bottom: a falling curve), EC50 the
dose half way between them. Fitted by bounded least squares from several starts (the best kept):
log10 EC50 within one decade beyond the tested doses, hill in [0.05, 20], bottom and top within the
data's range widened by that range. The EC50's 95 % CI is a bootstrap over **wells**: replicate
wells are resampled within each dose (all wells together when no dose has two), the curve refitted
from the point fit. Doses ≤ 0 (vehicle) have no log dose: they are listed, not fitted. A curve needs
≥ 4 distinct doses (4 parameters); an EC50 outside the tested doses is reported but flagged
(``ec50_in_range``), since the data then only bound it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from protocell.evaluate.fraction import ci

MIN_DOSES = 4
HILL_BOUNDS = (0.05, 20.0)


def logistic4(x, bottom: float, top: float, log_ec50: float, hill: float) -> np.ndarray:
    """The 4-parameter logistic at log10 doses ``x``."""
    x = np.asarray(x, np.float64)
    with np.errstate(over="ignore"):
        return bottom + (top - bottom) / (1 + 10.0 ** ((log_ec50 - x) * hill))


def _jacobian(p, x: np.ndarray) -> np.ndarray:
    """(n, 4) derivatives of ``logistic4`` at ``x`` by bottom, top, log_ec50, hill (by hand)."""
    bottom, top, log_ec50, hill = p
    with np.errstate(over="ignore", invalid="ignore"):
        u = 10.0 ** ((log_ec50 - x) * hill)
        f = 1 / (1 + u)
        du = np.nan_to_num(-(top - bottom) * f * f * u * np.log(10))  # ∂f/∂(log10 u) · ln 10, 0 where u = inf
    return np.stack([1 - f, f, du * hill, du * (log_ec50 - x)], 1)


def _bounds(x: np.ndarray, y: np.ndarray):
    span = max(float(y.max() - y.min()), 1e-3)
    lo_y, hi_y = float(y.min()) - span, float(y.max()) + span
    return ([lo_y, lo_y, float(x.min()) - 1, HILL_BOUNDS[0]], [hi_y, hi_y, float(x.max()) + 1, HILL_BOUNDS[1]])


def _solve(x, y, starts, bounds) -> np.ndarray | None:
    best = None
    for p0 in starts:
        p0 = np.clip(p0, np.array(bounds[0]) + 1e-9, np.array(bounds[1]) - 1e-9)
        r = least_squares(
            lambda p: logistic4(x, *p) - y, p0, jac=lambda p: _jacobian(p, x), bounds=bounds, method="trf"
        )
        if best is None or r.cost < best.cost:
            best = r
    return None if best is None else best.x


def fit_logistic(dose, y) -> dict:
    """Fit ``logistic4`` to (dose, y) pairs with dose > 0. Returns bottom, top, ec50, log_ec50, hill,
    r2, n (points), n_doses, ec50_in_range, ok, and ``message`` when not ok."""
    dose, y = np.asarray(dose, np.float64), np.asarray(y, np.float64)
    keep = np.isfinite(dose) & (dose > 0) & np.isfinite(y)
    x, y = np.log10(dose[keep]), y[keep]
    levels = np.unique(x)
    out = {"n": int(len(y)), "n_doses": int(len(levels)), "ok": False}
    if len(levels) < MIN_DOSES:
        return {**out, "message": f"{len(levels)} distinct doses > 0: a 4-parameter curve needs ≥ {MIN_DOSES}"}
    means = np.array([y[x == v].mean() for v in levels])
    b0, t0 = means[0], means[-1]
    starts = [[b0, t0, c, h] for c in np.quantile(levels, [0.25, 0.5, 0.75]) for h in (0.5, 1.0, 3.0)]
    p = _solve(x, y, starts, _bounds(x, y))
    assert p is not None  # None only without starts
    return {**out, **_summary(p, x, y)}


def _summary(p: np.ndarray, x: np.ndarray, y: np.ndarray) -> dict:
    bottom, top, log_ec50, hill = map(float, p)
    rss = float(((logistic4(x, *p) - y) ** 2).sum())
    tss = float(((y - y.mean()) ** 2).sum())
    return {
        "bottom": bottom,
        "top": top,
        "log_ec50": log_ec50,
        "ec50": 10**log_ec50,
        "hill": hill,
        "r2": 1 - rss / tss if tss > 0 else float("nan"),
        "ec50_in_range": bool(x.min() <= log_ec50 <= x.max()),
        "ok": True,
    }


def bootstrap_fit(dose, y, fit: dict, n_boot: int, rng: np.random.Generator) -> dict:
    """95 % CIs of ec50, bottom and top from a bootstrap over wells (one point = one well),
    resampling within each dose when some dose has replicate wells."""
    dose, y = np.asarray(dose, np.float64), np.asarray(y, np.float64)
    keep = np.isfinite(dose) & (dose > 0) & np.isfinite(y)
    x, y = np.log10(dose[keep]), y[keep]
    nan = {
        k: float("nan")
        for k in ("ec50_ci_low", "ec50_ci_high", "bottom_ci_low", "bottom_ci_high", "top_ci_low", "top_ci_high")
    }
    if not fit.get("ok") or n_boot < 1:
        return {**nan, "n_boot": 0}
    strata = [np.flatnonzero(x == v) for v in np.unique(x)]
    if max(len(s) for s in strata) < 2:
        strata = [np.arange(len(x))]
    start = [[fit["bottom"], fit["top"], fit["log_ec50"], fit["hill"]]]
    params = []
    for _ in range(n_boot):
        pick = np.concatenate([rng.choice(s, len(s)) for s in strata])
        xb, yb = x[pick], y[pick]
        if len(np.unique(xb)) < MIN_DOSES:
            continue
        params.append(_solve(xb, yb, start, _bounds(xb, yb)))
    if not params:
        return {**nan, "n_boot": 0}
    p = np.array(params)
    lo, hi = ci(p[:, 2])
    out = {"ec50_ci_low": 10**lo, "ec50_ci_high": 10**hi, "n_boot": len(p)}
    for k, name in ((0, "bottom"), (1, "top")):
        out[f"{name}_ci_low"], out[f"{name}_ci_high"] = ci(p[:, k])
    return out


def dose_response(
    wells: pd.DataFrame, measure: str, n_boot: int = 200, seed: int = 0, min_cells: int = 0, by_plate: bool = False
) -> pd.DataFrame:
    """One fitted curve per compound of ``measure`` (a column of ``wells``) against ``dose``; with
    ``by_plate`` one per plate and compound (column ``plate``; "" for a curve over every plate).

    ``wells``: one row per well, columns compound, dose (float, NaN = none), ``measure`` and optionally
    n_cells (wells with fewer than ``min_cells`` are left out of the fit, counted in ``n_excluded``).
    Wells without a dose are not fitted (the caller lists them); doses ≤ 0 are counted in ``n_vehicle``."""
    rng = np.random.default_rng(seed)
    rows = []
    dosed = wells[wells["dose"].notna() & wells[measure].notna()]
    for key, g in dosed.groupby(["plate", "compound"] if by_plate else ["compound"], sort=True):
        plate, compound = key if by_plate else ("", key[0])
        few = (g["n_cells"] < min_cells).to_numpy() if "n_cells" in g else np.zeros(len(g), bool)
        fit = fit_logistic(g.loc[~few, "dose"], g.loc[~few, measure])
        fit.update(bootstrap_fit(g.loc[~few, "dose"], g.loc[~few, measure], fit, n_boot, rng))
        if few.any() and not fit["ok"]:
            fit["message"] += f" ({few.sum()} wells with < {min_cells} cells left out)"
        rows.append(
            {
                "plate": plate,
                "compound": compound,
                "measure": measure,
                "n_wells": int((~few).sum()),
                "n_excluded": int(few.sum()),
                "n_vehicle": int((g.loc[~few, "dose"] <= 0).sum()),
                **fit,
            }
        )
    cols = [
        "plate",
        "compound",
        "measure",
        "n_wells",
        "n_excluded",
        "n_doses",
        "n_vehicle",
        "ok",
        "bottom",
        "top",
        "hill",
        "ec50",
        "ec50_ci_low",
        "ec50_ci_high",
        "ec50_in_range",
        "r2",
        "bottom_ci_low",
        "bottom_ci_high",
        "top_ci_low",
        "top_ci_high",
        "log_ec50",
        "n",
        "n_boot",
        "message",
    ]
    df = pd.DataFrame(rows)
    return df.reindex(columns=cols)
