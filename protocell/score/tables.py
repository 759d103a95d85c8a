"""score's tables, from the per-cell numbers: cells, wells, treatments, prototype enrichment.

Wells are keyed by ``plate/well``. The affected fraction is the one estimator of
``protocell.evaluate.fraction`` (the EM mixing weight of the cells' likelihood ratios under the run's
reference fitted on its held-out controls): per well with
a bootstrap over its cells, per treatment (replicate wells: same condition, compound and dose) with a
bootstrap over its wells. Prototype enrichment: the mean over a well's cells of each prototype's
similarity (log((d + 1)/(d + 1e-4)) of the cell's minimum distance, ``model.prototypes.log_similarity``)
minus the same mean over the reference cells, with a bootstrap CI (the well's cells, and the
reference wells, resampled).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from protocell.data.store import (
    cell_feature_columns,
    well_key,
)
from protocell.evaluate.calibration import noisy_label_apply
from protocell.evaluate.fraction import (
    bootstrap_wells,
    cell_posteriors,
    ci,
    mixture_fraction,
    reference_lr,
    well_fractions,
)
from protocell.model.prototypes import log_similarity
from protocell.score.source import is_mixture
from protocell.score.zones import zone_of_cells

BUDGET = 2_000_000  # entries of a bootstrap weight matrix held at once


def similarities(min_d: np.ndarray) -> np.ndarray:
    """(n, P) minimum distances → (n, P) similarities (the one formula, in float64)."""
    return log_similarity(torch.as_tensor(np.asarray(min_d), dtype=torch.float64)).numpy()


def cell_table(
    rows: pd.DataFrame,
    wells: pd.DataFrame,
    result: dict,
    models: dict,
    nearest: int = 3,
    run_split: np.ndarray | None = None,
) -> pd.DataFrame:
    """One row per scored cell: ids and where it is, its well's compound/dose/treatment, true_label
    (when known), run_split (the run's split of this cell when the store is the run's own, else ""),
    score (P(exposed)), p_affected (the cell call ``models["call"]``: with ``calibration=mixture`` the cell's
    posterior at its well's affected fraction, so a well's mean p_affected is its fraction), call (p_affected > 0.5),
    likelihood_ratio (p(s | affected)/p(s | unaffected) under ``models["fraction"]``: what the fractions
    are estimated from), intensity, the per-cell features prepare computed (``store.cell_feature_columns``:
    area, eccentricity, solidity, mean_<channel>; none for synthetic stores), the ``nearest`` most similar
    prototypes with their similarities, and sim_p<j> for every prototype.

    ``rows``: the manifest rows scored, in the order of ``result`` (``infer``)."""
    if not np.array_equal(rows["cell_id"].to_numpy(), result["cell_id"]):
        raise RuntimeError("scored cells are not in manifest order")  # a bug, not an input problem
    sims = similarities(result["min_d"])
    score = result["score"].astype(np.float64)  # float64 in the table: cells.csv reproduces p_affected exactly
    zones = models.get("zones")
    if zones:  # score.match_imaging: each cell read against its zone's reference (protocell.score.zones)
        zone = zone_of_cells(rows, wells)
        lr = np.empty(len(score))
        for name in np.unique(zone):
            on = zone == name
            lr[on] = reference_lr(score[on], zones[name]["fit"])
    else:
        lr = reference_lr(score, models["fraction"])
    if is_mixture(models["call"]):  # one model: each cell's posterior at its well's fraction
        p, _ = cell_posteriors(lr, well_key(rows).to_numpy())
    else:
        p = noisy_label_apply(score, models["call"])
    base = rows[["cell_id", "image_id", "plate", "well", "field", "condition"]].reset_index(drop=True)
    info = wells.set_index(["plate", "well"])[["compound", "dose", "treatment"]]
    base = base.join(info, on=["plate", "well"])
    if "true_label" in rows and (rows["true_label"] >= 0).any():
        base["true_label"] = rows["true_label"].to_numpy()
    base["run_split"] = run_split if run_split is not None else ""
    base["score"] = score
    base["p_affected"] = p
    base["likelihood_ratio"] = lr
    base["call"] = (p > 0.5).astype(int)
    base["intensity"] = result["intensity"]
    for col in cell_feature_columns(rows.columns):
        base[col] = pd.to_numeric(rows[col], errors="coerce").to_numpy(np.float64)
    k = min(nearest, sims.shape[1])
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    near = {}
    for i in range(k):
        near[f"nearest_{i + 1}"] = order[:, i]
        near[f"similarity_{i + 1}"] = np.take_along_axis(sims, order[:, i : i + 1], 1)[:, 0]
    return pd.concat(
        [base, pd.DataFrame(near), pd.DataFrame(sims, columns=[f"sim_p{j}" for j in range(sims.shape[1])])], axis=1
    )


def logit(p) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float64), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def well_readouts(cells: pd.DataFrame, reference_scores) -> pd.DataFrame:
    """Per well (index ``plate/well``) of ``cells``: n_cells, the affected fraction (the EM point
    estimate), the graded readouts — mean_p_affected (the mean of the cells' calibrated P(affected)) and
    score_shift (the mean logit score minus the reference cells' mean, in units of the reference cells'
    SD) — and the mean of ``intensity`` and of every per-cell feature prepare computed."""
    ref = logit(reference_scores)
    centre, sd = (float(ref.mean()), float(ref.std(ddof=1))) if len(ref) > 1 else (np.nan, np.nan)
    feats = ["intensity"] + cell_feature_columns(cells.columns)
    df = cells[["likelihood_ratio", "p_affected"] + feats].assign(
        logit=logit(cells["score"]), key=well_key(cells).to_numpy()
    )
    g = df.groupby("key", sort=True)
    out = g[feats].mean()
    out.insert(0, "score_shift", (g["logit"].mean() - centre) / sd if sd > 0 else np.nan)
    out.insert(0, "mean_p_affected", g["p_affected"].mean())
    out.insert(0, "affected_fraction", g["likelihood_ratio"].agg(lambda v: mixture_fraction(v.to_numpy())))
    out.insert(0, "n_cells", g.size())
    return out


def _ratio_flag(value: pd.Series, reference: pd.Series, what: str, slack: float = 1.25) -> tuple[pd.Series, pd.Series]:
    """value / median(reference) and a flag where it lies outside the reference wells' own range of that
    ratio widened by ``slack`` (NaN, no flag, without reference wells)."""
    if reference.dropna().empty:
        return pd.Series(np.nan, index=value.index), pd.Series("", index=value.index)
    centre = float(reference.median())
    ratio = value / centre
    lo, hi = float(reference.min()) / centre / slack, float(reference.max()) / centre * slack
    flag = np.where((ratio < lo) | (ratio > hi), ratio.map(lambda r: f"{what} ×{r:.2f} of reference"), "")
    return ratio, pd.Series(flag, index=value.index)


def well_table(
    cells: pd.DataFrame, wells: pd.DataFrame, n_boot: int = 200, seed: int = 0, min_cells: int = 20, reference_scores=()
) -> pd.DataFrame:
    """``wells`` (``protocell.data.plate_map.plate_wells``) with, per well: n_cells, affected_fraction and its 95 % CI
    over the well's cells, the graded readouts mean_p_affected and score_shift (``well_readouts``, shift
    from ``reference_scores``), truth (share of cells truly affected) and error where the truth is known,
    n_train_cells (cells the run trained on) and untrained_fraction (the fraction of the others: what
    the plate statistics use), intensity and cells_per_image relative to the reference wells, and
    ``flag`` (what to read with care)."""
    key = well_key(cells)
    fr = well_fractions(
        pd.DataFrame({"well": key, "lr": cells["likelihood_ratio"].to_numpy()}), n_boot=n_boot, seed=seed
    ).set_index("well")
    out = wells.copy()
    k = well_key(out)
    out["n_cells"] = k.map(fr["n_cells"]).fillna(0).astype(int)
    for col in ("affected_fraction", "ci_low", "ci_high"):
        out[col] = k.map(fr[col])
    graded = well_readouts(cells, reference_scores)
    for col in ("mean_p_affected", "score_shift"):
        out[col] = k.map(graded[col])
    g = cells.assign(key=key).groupby("key")
    if "true_label" in cells:
        known = g["true_label"].agg(lambda t: float((t == 1).mean()) if (t >= 0).all() else np.nan)
        out["truth"] = k.map(known)
        out["error"] = out["affected_fraction"] - out["truth"]
        out["ci_covers_truth"] = (out["ci_low"] <= out["truth"]) & (out["truth"] <= out["ci_high"])
    out["n_train_cells"] = k.map(g["run_split"].agg(lambda s: int((s == "train").sum()))).fillna(0).astype(int)
    untrained = cells[(cells["run_split"] != "train").to_numpy()]
    out["untrained_fraction"] = k.map(
        untrained.groupby(well_key(untrained).to_numpy())["likelihood_ratio"].agg(
            lambda v: mixture_fraction(v.to_numpy())
        )
    )
    out["intensity"] = k.map(g["intensity"].median())
    out["cells_per_image"] = out["n_cells"] / out["n_images"].clip(lower=1)
    ref = out["role"] == "reference"
    out["intensity_vs_reference"], f_int = _ratio_flag(out["intensity"], out.loc[ref, "intensity"], "intensity")
    out["density_vs_reference"], f_den = _ratio_flag(
        out["cells_per_image"], out.loc[ref, "cells_per_image"], "cells per image"
    )
    few = np.where(out["n_cells"] < min_cells, out["n_cells"].map(lambda n: f"only {n} cells"), "")
    trained = np.where(out["n_train_cells"] > 0, out["n_train_cells"].map(lambda n: f"{n} cells trained on"), "")
    out["flag"] = ["; ".join(f for f in fs if f) for fs in zip(few, f_int, f_den, trained)]
    return out


def treatment_table(cells: pd.DataFrame, wells: pd.DataFrame, n_boot: int = 200, seed: int = 0) -> pd.DataFrame:
    """One row per treatment: role, condition, compound, dose, n_wells, n_cells, the affected fraction of
    its pooled cells and, with ≥ 2 wells, a 95 % CI from a bootstrap over its wells; truth where known."""
    rng = np.random.default_rng(seed)
    key = well_key(cells)
    members = _members(key.map(dict(zip(well_key(wells), wells["treatment"]))), len(cells))
    rows = []
    for name, w in wells.groupby("treatment", sort=False):
        sel = members(name)
        lr = cells.loc[sel, "likelihood_ratio"].to_numpy()
        row = {
            "treatment": name,
            "role": w["role"].iloc[0],
            "condition": w["condition"].iloc[0],
            "compound": w["compound"].iloc[0],
            "dose": w["dose"].iloc[0],
            "n_wells": int(len(w)),
            "n_cells": int(sel.sum()),
            "affected_fraction": mixture_fraction(lr) if sel.any() else np.nan,
            "ci_low": np.nan,
            "ci_high": np.nan,
        }
        if len(w) > 1 and sel.any():
            row["ci_low"], row["ci_high"] = ci(bootstrap_wells(lr, key[sel].to_numpy(), n_boot, rng))
        if "true_label" in cells and (cells.loc[sel, "true_label"] >= 0).all() and sel.any():
            row["truth"] = float((cells.loc[sel, "true_label"] == 1).mean())
        rows.append(row)
    return pd.DataFrame(rows)


def _members(labels: pd.Series, n: int):
    """label → boolean mask of the rows carrying it (one grouping pass, not one comparison per label)."""
    index = labels.reset_index(drop=True).groupby(labels.to_numpy(), sort=False).indices

    def mask(label) -> np.ndarray:
        m = np.zeros(n, bool)
        m[index.get(label, [])] = True
        return m

    return mask


# ----------------------------------------------------------------------------- prototype enrichment


def _boot_means(sims: np.ndarray, group: np.ndarray, n_boot: int, rng, by_group: bool) -> np.ndarray:
    """(n_boot, P) pooled means of ``sims`` (n, P) resampled: over groups (wells) when ``by_group``, else
    over rows (cells)."""
    n = len(sims)
    if by_group:
        codes, names = pd.factorize(group)
        sums = np.zeros((len(names), sims.shape[1]))
        np.add.at(sums, codes, sims)
        sizes = np.bincount(codes, minlength=len(names)).astype(np.float64)
        picks = rng.integers(0, len(names), (n_boot, len(names)))
        counts = np.stack([np.bincount(r, minlength=len(names)) for r in picks]).astype(np.float64)
        return (counts @ sums) / (counts @ sizes)[:, None]
    out = []
    step = max(1, BUDGET // max(n, 1))
    for start in range(0, n_boot, step):
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=min(step, n_boot - start)).astype(np.float64)
        out.append(counts @ sims / n)
    return np.concatenate(out)


def enrichment(
    cells: pd.DataFrame,
    wells: pd.DataFrame,
    reference: pd.DataFrame,
    classes: list[str],
    n_boot: int = 200,
    seed: int = 0,
) -> pd.DataFrame:
    """Long table, one row per (well or treatment) × prototype: ``level`` (well | treatment), plate, well,
    treatment, prototype (index), name (p<j>), class, n_cells, n_wells, mean_similarity, reference_mean,
    difference (mean − reference mean) and its 95 % CI (bootstrap: the well's cells, or the treatment's
    wells, and the reference wells resampled; treatments of one well have no CI of their own).

    ``reference``: cells (columns plate, well, sim_p<j>) whose pooled mean is the baseline."""
    rng = np.random.default_rng(seed)
    P = len(classes)
    cols = [f"sim_p{j}" for j in range(P)]
    ref_sims = reference[cols].to_numpy(np.float64)
    ref_mean = ref_sims.mean(0) if len(ref_sims) else np.full(P, np.nan)
    ref_boot = (
        _boot_means(ref_sims, well_key(reference).to_numpy(), n_boot, rng, by_group=True)
        if len(ref_sims)
        else np.full((n_boot, P), np.nan)
    )
    key = well_key(cells)
    sims, in_well = cells[cols].to_numpy(np.float64), _members(key, len(cells))
    in_treatment = _members(key.map(dict(zip(well_key(wells), wells["treatment"]))), len(cells))
    key = key.to_numpy()
    blocks = []

    def block(level, plate, well, name, sel, n_wells, by_group):
        s = sims[sel]
        mean = s.mean(0)
        if by_group is None:
            lo = hi = np.full(P, np.nan)
        else:
            d = _boot_means(s, key[sel], n_boot, rng, by_group) - ref_boot
            lo, hi = np.nanpercentile(d, 2.5, 0), np.nanpercentile(d, 97.5, 0)
        blocks.append(
            pd.DataFrame(
                {
                    "level": level,
                    "plate": plate,
                    "well": well,
                    "treatment": name,
                    "prototype": np.arange(P),
                    "name": [f"p{j}" for j in range(P)],
                    "class": classes,
                    "n_cells": int(sel.sum()),
                    "n_wells": n_wells,
                    "mean_similarity": mean,
                    "reference_mean": ref_mean,
                    "difference": mean - ref_mean,
                    "ci_low": lo,
                    "ci_high": hi,
                }
            )
        )

    for w in wells.itertuples():
        sel = in_well(f"{w.plate}/{w.well}")
        if sel.any():
            block("well", w.plate, w.well, w.treatment, sel, 1, False)
    for name, w in wells.groupby("treatment", sort=False):
        sel = in_treatment(name)
        if sel.any():
            block("treatment", "", "", name, sel, int(len(w)), True if len(w) > 1 else None)
    return pd.concat(blocks, ignore_index=True) if blocks else pd.DataFrame()


def top_prototypes(enrich: pd.DataFrame, treatments: list[str], k: int) -> list[int]:
    """The ``k`` prototypes whose treatment-level difference from the reference is largest in absolute
    value over ``treatments`` (a compound's doses), largest first."""
    t = enrich[(enrich["level"] == "treatment") & enrich["treatment"].isin(treatments)]
    if t.empty:
        return []
    score = (
        t.assign(a=t["difference"].abs()).groupby("prototype")["a"].max().sort_values(ascending=False, kind="stable")
    )
    return [int(j) for j in score.index[:k]]
