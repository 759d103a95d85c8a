"""A screen's plates: control QC, normalisation to each plate's own controls, the plate-effect check,
the row/column/edge trend check and the B-score.

Every plate is judged by its own controls: the reference wells (negative controls, n) and the exposed
wells (positive controls, p) on it, each well one value (its readout over the cells the run did not
train on). With means μ, standard deviations σ (over wells), medians m and scaled MADs s
(1.4826 · median |x − m|, the σ of a normal sample):

    Z′             = 1 − 3(σp + σn) / |μp − μn|            (Zhang, Chung & Oldenburg 1999)
    robust Z′      = 1 − 3(sp + sn) / |mp − mn|
    SSMD           = (μp − μn) / √(σp² + σn²)              (Zhang 2007)
    signal window  = (|μp − μn| − 3(σp + σn)) / σhigh      (Iversen et al. 2006, one well a sample;
                                                            σhigh: the control with the higher mean)

Z′ > 0.5: an excellent assay; 0 < Z′ ≤ 0.5: screenable (the controls' 3σ bands do not overlap);
Z′ ≤ 0: the bands overlap. A plate without both kinds of controls has no Z′ ("no controls").

Normalisation (per plate, from its controls' medians): percent of control
100 · (x − mn) / (mp − mn); robust z = (x − mn) / sn; and the *normalised fraction*
m̄n + (x − mn) / (mp − mn) · (m̄p − m̄n), the plate's fractions put on the level of every plate's controls
together (m̄: the medians of the control wells of all plates that have both kinds), so that plates read
alike — as far as a plate's effect is a shift and a scale of the readout. With one plate it is the
fraction itself. (Not the fractions the run's reference found among its held-out controls: those
anchors are estimated from the score tails, and on the two-plate ground truth their 0.09 / 0.46 for a
true 0.05 / 0.5 compressed every normalised fraction by a fifth.)

B-score (Brideau et al. 2003): per plate, Tukey's two-way median polish of the scored wells' values
over rows and columns; the residuals divided by their scaled MAD. It assumes most wells are inactive
and the layout carries no treatment pattern (on a dose-series plate whose columns are doses it removes
the dose effect): an option, not a default.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd

from protocell.plate import outer_ring

MAD_SCALE = 1.4826
Z_EXCELLENT, Z_SCREENABLE = 0.5, 0.0
TREND_P = 0.01


def scaled_mad(x) -> float:
    x = np.asarray(x, np.float64)
    x = x[np.isfinite(x)]
    return float(MAD_SCALE * np.median(np.abs(x - np.median(x)))) if len(x) else float("nan")


def _ratio(num: float, den: float) -> float:
    """num / den with a zero denominator read as the limit (±inf, or nan for 0/0)."""
    if den == 0:
        return float("nan") if num == 0 else float(np.sign(num) * np.inf)
    return float(num / den)


def verdict(z: float, n_pos: int = 2, n_neg: int = 2) -> str:
    if n_pos == 0 or n_neg == 0:
        return "no controls"
    if n_pos < 2 or n_neg < 2:
        return f"too few controls ({n_neg} reference, {n_pos} exposed wells; 2 of each needed)"
    if np.isnan(z):
        return "no separation (the controls are equal)"
    return "excellent" if z > Z_EXCELLENT else "screenable" if z > Z_SCREENABLE else "not screenable"


def control_stats(pos, neg) -> dict:
    """Z′, robust Z′, SSMD, signal window and the controls' location and spread (module doc): ``pos``
    and ``neg`` the per-well values of the positive (exposed) and negative (reference) controls."""
    pos, neg = (np.asarray(v, np.float64) for v in (pos, neg))
    pos, neg = pos[np.isfinite(pos)], neg[np.isfinite(neg)]
    out: dict[str, Any] = {"n_neg": int(len(neg)), "n_pos": int(len(pos))}
    for name, v in (("neg", neg), ("pos", pos)):
        out[f"mean_{name}"] = float(v.mean()) if len(v) else np.nan
        out[f"sd_{name}"] = float(v.std(ddof=1)) if len(v) > 1 else np.nan
        out[f"median_{name}"] = float(np.median(v)) if len(v) else np.nan
        out[f"mad_{name}"] = scaled_mad(v) if len(v) > 1 else np.nan
    z = rz = ssmd = sw = np.nan
    if len(pos) > 1 and len(neg) > 1:
        sp, sn, diff = out["sd_pos"], out["sd_neg"], out["mean_pos"] - out["mean_neg"]
        z = 1 - _ratio(3 * (sp + sn), abs(diff))
        rz = 1 - _ratio(3 * (out["mad_pos"] + out["mad_neg"]), abs(out["median_pos"] - out["median_neg"]))
        ssmd = _ratio(diff, np.sqrt(sp**2 + sn**2))
        sw = _ratio(abs(diff) - 3 * (sp + sn), sp if diff >= 0 else sn)
    out.update(
        {
            "z_prime": z,
            "robust_z_prime": rz,
            "ssmd": ssmd,
            "signal_window": sw,
            "verdict": verdict(z, len(pos), len(neg)),
        }
    )
    return out


def plate_qc(controls: pd.DataFrame, readouts: dict[str, str], plates: list[str]) -> pd.DataFrame:
    """One row per plate × readout: ``control_stats`` of the readout's column over the plate's reference
    and exposed wells. ``controls``: one row per control well (plate, role, the readout columns);
    ``readouts``: display name → column; ``plates``: every plate scored (one without controls gets the
    verdict "no controls")."""
    rows = []
    for plate in plates:
        c = controls[controls["plate"] == plate]
        for name, col in readouts.items():
            vals = c[col] if col in c else pd.Series(np.nan, index=c.index)
            stats = control_stats(vals[c["role"] == "exposed"], vals[c["role"] == "reference"])
            rows.append({"plate": plate, "readout": name, **stats})
    return pd.DataFrame(rows)


def normalise(wells: pd.DataFrame, controls: pd.DataFrame, value: str, anchors=None) -> pd.DataFrame:
    """``wells`` with percent_of_control, robust_z and normalised_fraction of ``value`` per plate, from
    the plate's control wells in ``controls`` (plate, role, ``value``); NaN on a plate without them (robust z
    needs reference wells only).

    The normalised fraction puts every plate's controls on the levels of the controls of the ``anchors``
    plates (the plates of the run's own store: the fraction is defined against that store's reference, so
    those plates keep their own scale and the others are brought onto it); all plates' controls when no
    anchor plate has both controls. Before, the level was always every plate's controls pooled: a plate
    the network reads differently (another gain) shifted the levels of the plate it was trained on — on
    the two-plate truth trained on plate 1 (seed 1), plate 1's wells within ±0.08 fell from 100 % (raw)
    to 59 % (normalised)."""
    out = wells.copy()
    for col in ("percent_of_control", "robust_z", "normalised_fraction"):
        out[col] = np.nan
    c = controls[controls[value].notna()]
    both = c.groupby("plate")["role"].transform("nunique") == 2
    anchored = both & c["plate"].astype(str).isin({str(a) for a in anchors or ()})
    if anchored.any():
        both = anchored
    level_n = float(c.loc[both & (c["role"] == "reference"), value].median()) if both.any() else np.nan
    level_p = float(c.loc[both & (c["role"] == "exposed"), value].median()) if both.any() else np.nan
    for plate, c in controls.groupby("plate"):
        neg = c.loc[c["role"] == "reference", value].dropna()
        pos = c.loc[c["role"] == "exposed", value].dropna()
        on = out["plate"] == plate
        x = out.loc[on, value]
        if len(neg):
            mn = float(neg.median())
            s = scaled_mad(neg) if len(neg) > 1 else np.nan
            out.loc[on, "robust_z"] = (x - mn) / s if s and np.isfinite(s) else np.nan
            if len(pos) and float(pos.median()) != mn:
                share = (x - mn) / (float(pos.median()) - mn)
                out.loc[on, "percent_of_control"] = 100 * share
                out.loc[on, "normalised_fraction"] = level_n + share * (level_p - level_n)
    return out


def plate_effects(controls: pd.DataFrame, value: str) -> pd.DataFrame:
    """The same controls on every plate: per role (reference, exposed) and plate, n wells, median and
    scaled MAD of ``value``, and across plates (≥ 2 plates with ≥ 2 wells) the Kruskal–Wallis p-value
    and the range of the plates' medians."""
    from scipy.stats import kruskal

    rows = []
    for role, c in controls.groupby("role", sort=True):
        groups = {p: g[value].dropna().to_numpy() for p, g in c.groupby("plate", sort=True)}
        usable = [v for v in groups.values() if len(v) >= 2]
        p = float(kruskal(*usable).pvalue) if len(usable) >= 2 and np.ptp(np.concatenate(usable)) > 0 else np.nan
        medians = [float(np.median(v)) for v in groups.values() if len(v)]
        for plate, v in groups.items():
            rows.append(
                {
                    "role": role,
                    "plate": plate,
                    "n_wells": int(len(v)),
                    "median": float(np.median(v)) if len(v) else np.nan,
                    "mad": scaled_mad(v) if len(v) > 1 else np.nan,
                    "range_of_plate_medians": float(np.ptp(medians)) if len(medians) > 1 else np.nan,
                    "kruskal_p": p,
                }
            )
    return pd.DataFrame(rows)


def median_polish(grid, max_iter: int = 10, eps: float = 0.01):
    """Tukey's two-way median polish of ``grid`` (rows × columns, NaN = no well), as R's ``medpolish``:
    returns (overall, row effects, column effects, residuals), grid = overall + row + column + residual
    where a value exists."""
    z = np.array(grid, np.float64)
    n_r, n_c = z.shape
    r, c, t = np.zeros(n_r), np.zeros(n_c), 0.0
    old = 0.0

    def med(a, axis):  # a row or column without wells has effect 0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nan_to_num(np.nanmedian(a, axis=axis))

    for _ in range(max_iter):
        rd = med(z, 1)
        z -= rd[:, None]
        r += rd
        d = float(np.nanmedian(c)) if n_c else 0.0
        c -= d
        t += d
        cd = med(z, 0)
        z -= cd[None, :]
        c += cd
        d = float(np.nanmedian(r)) if n_r else 0.0
        r -= d
        t += d
        new = float(np.nansum(np.abs(z)))
        if new == 0 or abs(new - old) < eps * new:
            break
        old = new
    return t, r, c, z


def _grid(w: pd.DataFrame, value: str):
    """(rows × columns grid of ``value`` at the wells' positions, row index, column index) of one plate."""
    rows = w["row"].astype(int).to_numpy()
    cols = w["column"].astype(int).to_numpy() - 1
    grid = np.full((rows.max() + 1, cols.max() + 1), np.nan)
    grid[rows, cols] = w[value].to_numpy(np.float64)
    return grid, rows, cols


def b_scores(wells: pd.DataFrame, value: str) -> pd.Series:
    """Per plate, the B-score of ``value`` over its scored wells at plate positions (module doc); NaN
    for controls, wells off the plate grid, and plates whose residuals have no spread."""
    out = pd.Series(np.nan, index=wells.index)
    use = (wells["role"] == "scored") & wells["row"].notna() & wells[value].notna()
    for _, w in wells[use].groupby("plate"):
        grid, rows, cols = _grid(w, value)
        _, _, _, resid = median_polish(grid)
        res = resid[rows, cols]
        s = scaled_mad(res)
        if s > 0:
            out.loc[w.index] = res / s
    return out


def on_grid(wells: pd.DataFrame) -> pd.Series:
    """The wells a plate's position checks read: at a plate position, with cells (the ring is theirs)."""
    return wells["row"].notna() & (wells["n_cells"] > 0)


def trends(wells: pd.DataFrame, measures: dict[str, tuple[str, bool]]) -> pd.DataFrame:
    """Per plate and measure (display name → (column, by treatment)): each well's value minus a centre —
    with ``by treatment`` the median of its treatment's wells on the plate (treatments with ≥ 2 wells
    there; wells of single-well treatments against the median of those), else the plate's median — then
    the outer ring against the inner wells (median difference and Mann–Whitney p) and the spread of a
    median polish's row and column effects (max − min); flagged at p < ``TREND_P``. A treatment whose
    every well lies on the ring cannot show a ring effect by treatment: such a layout is read on the
    measures without it (the brightness). Plates with < 2 wells on either side get no p-value."""
    from scipy.stats import mannwhitneyu

    rows = []
    placed = wells[on_grid(wells)]
    for plate, w in placed.groupby("plate", sort=True):
        reps = w.groupby("treatment")["well"].transform("count") >= 2
        edge = outer_ring(w)
        for name, (col, by_treatment) in measures.items():
            v = w[col].astype(float)
            if by_treatment:
                centre = v.groupby(w["treatment"]).transform("median").where(reps, v[~reps].median())
            else:
                centre = pd.Series(v.median(), index=v.index)
            resid = (v - centre).rename("resid")
            ok = resid.notna().to_numpy()
            out, inner = resid[edge & ok], resid[~edge & ok]
            p = (
                float(mannwhitneyu(out, inner).pvalue)
                if len(out) >= 2 and len(inner) >= 2 and np.ptp(resid[ok]) > 0
                else np.nan
            )
            grid, _, _ = _grid(w.assign(resid=resid), "resid")
            _, r_eff, c_eff, _ = median_polish(grid)
            rows.append(
                {
                    "plate": plate,
                    "measure": name,
                    "n_outer": int(len(out)),
                    "n_inner": int(len(inner)),
                    "outer_minus_inner": float(out.median() - inner.median()) if len(out) and len(inner) else np.nan,
                    "p_value": p,
                    "row_effect_range": float(np.ptp(r_eff)),
                    "column_effect_range": float(np.ptp(c_eff)),
                    "flag": bool(np.isfinite(p) and p < TREND_P),
                }
            )
    return pd.DataFrame(
        rows,
        columns=[
            "plate",
            "measure",
            "n_outer",
            "n_inner",
            "outer_minus_inner",
            "p_value",
            "row_effect_range",
            "column_effect_range",
            "flag",
        ],
    )
