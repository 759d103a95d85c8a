"""The confound report: could a single simple feature tell the conditions apart?

A network can read anything that differs between conditions. Some differences are the biology one
is after (where a reporter sits, a texture); others are how the plate was imaged or segmented: the
size or shape of the masks (a mask grown from a reporter that moves follows the reporter), the
background level, the density of cells. For each single feature this report gives the mean per
condition and the AUROC with which it separates the conditions **over wells** (the per-well mean is
the replicate; cells of a well share its history), with a 95 % CI from a bootstrap over wells, and
flags the features that are not biology above ``FLAG_AUROC``: if the mask alone separates the
conditions, a classifier that "finds the change" may only read the mask.

Input: the store's manifest (one row per original cell with ``condition``, ``plate``, ``well``,
``image_id`` and the per-cell feature columns prepare writes: ``area``, ``eccentricity``,
``solidity``, ``mean_<channel>``) and per-image records (``background_<channel>``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from protocell.data.store import cell_feature_columns

FLAG_AUROC = 0.75
# features that describe imaging or segmentation, not the cells' biology
NOT_BIOLOGY = ("cells_per_field", "area", "eccentricity", "solidity")
NOT_BIOLOGY_PREFIXES = ("background_",)


def auroc(neg, pos) -> float:
    """P(pos > neg) + ½ P(tie), by counting (small samples: wells)."""
    neg, pos = np.asarray(neg, np.float64), np.asarray(pos, np.float64)
    if len(neg) == 0 or len(pos) == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


def separation(neg, pos, n_boot: int = 1000, seed: int = 0) -> dict:
    """AUROC of ``pos`` over ``neg`` (direction kept) and ``strength`` = max(AUROC, 1 − AUROC), with a
    bootstrap 95 % CI of the strength resampling each group."""
    rng = np.random.default_rng(seed)
    neg, pos = np.asarray(neg, np.float64), np.asarray(pos, np.float64)
    a = auroc(neg, pos)
    boots = (
        [
            auroc(neg[rng.integers(0, len(neg), len(neg))], pos[rng.integers(0, len(pos), len(pos))])
            for _ in range(n_boot)
        ]
        if len(neg) > 1 and len(pos) > 1
        else []
    )
    strength = [max(b, 1 - b) for b in boots]
    lo, hi = (
        (float(np.quantile(strength, 0.025)), float(np.quantile(strength, 0.975))) if strength else (np.nan, np.nan)
    )
    return {"auroc": a, "strength": max(a, 1 - a), "ci_low": lo, "ci_high": hi}


def is_biology(feature: str) -> bool:
    return feature not in NOT_BIOLOGY and not feature.startswith(NOT_BIOLOGY_PREFIXES)


def well_features(manifest: pd.DataFrame, images: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per well: condition and the mean of every per-cell feature, cells per field, and the
    mean per-image background of the well's images."""
    m = manifest[manifest.get("aug_of", pd.Series(-1, index=manifest.index)) < 0]
    m = m[m["condition"].astype(str) != ""]
    key = m["plate"].astype(str) + "/" + m["well"].astype(str)
    cell_cols = cell_feature_columns(m.columns)
    g = m.assign(_well=key).groupby("_well")
    out = g[cell_cols].mean()
    out["condition"] = g["condition"].first()
    out["cells_per_field"] = g.size() / g["image_id"].nunique()
    if images is not None and len(images):
        bg = [c for c in images if c.startswith("background_")]
        im = images.assign(_well=images["plate"].astype(str) + "/" + images["well"].astype(str))
        out = out.join(im.groupby("_well")[bg].mean())
    return out


def confound_table(
    manifest: pd.DataFrame, images: pd.DataFrame | None = None, conditions: list[str] | None = None, n_boot: int = 1000
) -> pd.DataFrame:
    """Per feature: mean per condition (over wells), AUROC over wells (last condition vs first), its
    strength and CI, whether it is biology, and ``flag`` when a non-biology feature separates the
    conditions with strength > FLAG_AUROC."""
    wells = well_features(manifest, images)
    conds = conditions or list(dict.fromkeys(manifest.loc[manifest["condition"].astype(str) != "", "condition"]))
    if len(conds) < 2:
        return pd.DataFrame()
    ref, exp = conds[0], conds[-1]
    rows = []
    for feature in [c for c in wells.columns if c != "condition"]:
        a = wells.loc[wells["condition"] == ref, feature].dropna().to_numpy()
        b = wells.loc[wells["condition"] == exp, feature].dropna().to_numpy()
        sep = separation(a, b, n_boot=n_boot)
        bio = is_biology(feature)
        rows.append(
            {
                "feature": feature,
                f"mean_{ref}": float(np.mean(a)) if len(a) else np.nan,
                f"mean_{exp}": float(np.mean(b)) if len(b) else np.nan,
                "n_wells_" + ref: len(a),
                "n_wells_" + exp: len(b),
                **sep,
                "biology": bio,
                "flag": bool((not bio) and sep["strength"] > FLAG_AUROC),
            }
        )
    return pd.DataFrame(rows)


def summary_lines(table: pd.DataFrame) -> list[str]:
    """The table as text lines for prepare's log."""
    if table.empty:
        return ["confound report: needs two conditions"]
    lines = ["confound report (per-well means; AUROC over wells, strength = max(AUROC, 1 − AUROC), 95 % CI):"]
    for r in table.itertuples():
        mark = "  FLAG: not biology, separates the conditions" if r.flag else ""
        lines.append(
            f"  {r.feature:<22} AUROC {r.auroc:.2f} (strength {r.strength:.2f}, CI {r.ci_low:.2f}–{r.ci_high:.2f}){mark}"
        )
    return lines
