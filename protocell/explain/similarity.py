"""Population statistics of prototype similarities, with an honest unit of replication.

Input: a table with one row per cell (``condition`` and the columns that name its well, image and
field) and one column per prototype (max similarity of the cell to that prototype). Cells of one
well are not independent, so confidence intervals resample *replicates* (wells by default) and
tests compare replicate means. ``replicate_unit`` chooses the unit: the coarsest of well → image →
field with at least ``MIN_REPLICATES`` per condition, and says why; with fewer in every unit the
statistics are descriptive only (no p-values, no q-values).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import mannwhitneyu

from protocell.stats import benjamini_hochberg

MIN_REPLICATES = 3
UNITS = {"well": ("plate", "well"), "image": ("image_id",), "field": ("plate", "well", "field")}
PLURAL = {"well": "wells", "image": "images", "field": "fields"}


def unit_ids(cells: pd.DataFrame, unit: str) -> pd.Series:
    """One id per replicate of ``unit`` (well: plate/well; image: image_id; field: plate/well/field);
    the columns a table lacks are left out (a table without ``plate`` groups wells by name)."""
    cols = [c for c in UNITS[unit] if c in cells]
    if not cols:
        raise KeyError(f"the cells table has none of {UNITS[unit]}: cannot group by {unit}")
    return cells[cols].astype(str).agg("/".join, axis=1)


def replicate_unit(cells: pd.DataFrame, ref: str, exp: str, requested: str = "auto") -> dict:
    """The replicate unit of the population statistics, and why.

    ``requested``: ``well``, ``image``, ``field`` or ``auto`` — the coarsest unit (well, then image,
    then field) with ≥ ``MIN_REPLICATES`` per condition; when none has, the one with the most.
    Returns {"unit", "counts": {ref: n, exp: n}, "counts_by_unit": {unit: {ref: n, exp: n}},
    "descriptive": fewer than MIN_REPLICATES in a condition (no tests), "reason": one sentence}."""
    if requested not in ("auto", *UNITS):
        raise ValueError(f"report.unit={requested!r}: use auto, well, image or field")
    counts = {}
    for unit in UNITS:
        ids = unit_ids(cells, unit)
        counts[unit] = {c: int(ids[cells["condition"] == c].nunique()) for c in (ref, exp)}

    def say(unit):
        return f"{counts[unit][ref]} {ref} and {counts[unit][exp]} {exp} {PLURAL[unit]}"

    enough = [u for u in UNITS if min(counts[u].values()) >= MIN_REPLICATES]
    if requested != "auto":
        unit = requested
        reason = f"{unit} chosen by report.unit: {say(unit)}"
    elif enough and enough[0] == "well":
        unit, reason = "well", f"wells are the replicates: {say('well')}"
    elif enough:
        unit = enough[0]
        reason = (
            f"only {say('well')}, fewer than {MIN_REPLICATES} per condition, so {PLURAL[unit]} are the "
            f"replicates ({say(unit)}); {PLURAL[unit]} of one well share its history, so the "
            "confidence intervals and p-values are optimistic about differences between wells"
        )
    else:
        unit = max(UNITS, key=lambda u: (min(counts[u].values()), -list(UNITS).index(u)))
        reason = (
            f"no unit has {MIN_REPLICATES} replicates per condition ({say('well')}; {say('image')}): "
            f"{PLURAL[unit]} are used"
        )
    descriptive = min(counts[unit].values()) < MIN_REPLICATES
    if descriptive:
        reason += (
            f". Fewer than {MIN_REPLICATES} {PLURAL[unit]} in a condition: the figures are descriptive "
            "only (no p-values; a difference may be one well's batch effect)"
        )
    return {
        "unit": unit,
        "counts": counts[unit],
        "counts_by_unit": counts,
        "descriptive": descriptive,
        "reason": reason,
    }


def _percentile_or_nan(boots: np.ndarray, q: float, ok: bool) -> np.ndarray:
    return np.percentile(boots, q, 0) if ok else np.full(boots.shape[1], np.nan)


def population_means(
    cells: pd.DataFrame, protos: list[str], ref: str, exp: str, n_boot: int = 1000, seed: int = 0, by: str = "well"
) -> pd.DataFrame:
    """Mean max-similarity per prototype in Ref and Exp, Exp − Ref, each with a 95 % CI from a
    bootstrap over replicates (the groups of column ``by``, resampled with replacement within each
    condition). A condition with one replicate has no CI (NaN), not a zero-width one."""
    rng = np.random.default_rng(seed)
    groups = {c: [g[protos].to_numpy() for _, g in cells[cells["condition"] == c].groupby(by)] for c in (ref, exp)}

    def pooled_mean(wells):
        return np.concatenate(wells).mean(0)

    point = {c: pooled_mean(w) for c, w in groups.items()}
    boots = {
        c: np.stack([pooled_mean([w[i] for i in rng.integers(0, len(w), len(w))]) for _ in range(n_boot)])
        for c, w in groups.items()
    }
    ok = {c: len(w) > 1 for c, w in groups.items()}
    diff = boots[exp] - boots[ref]
    both = ok[ref] and ok[exp]
    out = pd.DataFrame(
        {
            "prototype": protos,
            f"mean_{ref}": point[ref],
            f"mean_{exp}": point[exp],
            f"ci_low_{ref}": _percentile_or_nan(boots[ref], 2.5, ok[ref]),
            f"ci_high_{ref}": _percentile_or_nan(boots[ref], 97.5, ok[ref]),
            f"ci_low_{exp}": _percentile_or_nan(boots[exp], 2.5, ok[exp]),
            f"ci_high_{exp}": _percentile_or_nan(boots[exp], 97.5, ok[exp]),
            "difference": point[exp] - point[ref],
            "diff_ci_low": _percentile_or_nan(diff, 2.5, both),
            "diff_ci_high": _percentile_or_nan(diff, 97.5, both),
        }
    )
    return out


def rank_differences(
    cells: pd.DataFrame, protos: list[str], ref: str, exp: str, by: str = "well", descriptive: bool = False
) -> pd.DataFrame:
    """Per prototype: replicate means (groups of ``by``) compared by a two-sided Mann–Whitney U test,
    effect size as Cohen's d of the replicate means, BH FDR over prototypes; sorted by q, then
    |d|, then |difference| (NaN last). ``descriptive`` (or fewer than ``MIN_REPLICATES`` replicates
    in a condition): no test, p and q blank, sorted by |d| and |difference|."""
    wm = cells.groupby(["condition", by])[protos].mean()
    a, b = wm.loc[ref], wm.loc[exp]
    test = not descriptive and min(len(a), len(b)) >= MIN_REPLICATES
    rows = []
    for j in protos:
        x, y = a[j].to_numpy(), b[j].to_numpy()
        p = mannwhitneyu(y, x, alternative="two-sided").pvalue if test else np.nan
        sd = np.sqrt((x.var(ddof=1) + y.var(ddof=1)) / 2) if len(x) > 1 and len(y) > 1 else np.nan
        rows.append(
            {
                "prototype": j,
                "mean_ref": x.mean(),
                "mean_exp": y.mean(),
                "difference": y.mean() - x.mean(),
                "cohens_d": (y.mean() - x.mean()) / sd if sd else np.nan,
                "p_value": p,
                "n_ref": len(x),
                "n_exp": len(y),
            }
        )
    df = pd.DataFrame(rows)
    df["q_value"] = benjamini_hochberg(df["p_value"].to_numpy())
    key = pd.DataFrame(
        {"q": df["q_value"].fillna(np.inf), "d": -df["cohens_d"].abs().fillna(-np.inf), "diff": -df["difference"].abs()}
    )
    order = key.sort_values(["q", "d", "diff"], kind="stable").index
    return df.loc[order].reset_index(drop=True)


def class_order(prototype_class) -> np.ndarray:
    """Prototype indices grouped by class (stable within a class)."""
    return np.argsort(np.asarray(prototype_class), kind="stable")


def plot_population(
    pop: pd.DataFrame,
    prototype_class,
    class_names: list[str],
    ref: str,
    exp: str,
    out,
    unit: str = "well",
    descriptive: bool = False,
) -> None:
    """Figure 3 (the cell paper's Figs 3 and 6): mean max-similarity per prototype in Ref and Exp
    and the difference Exp − Ref, prototypes grouped by class, 95 % CIs from a bootstrap over the
    replicate ``unit`` (none where a condition has one replicate); ``descriptive`` says so in red."""
    import matplotlib.pyplot as plt

    order = class_order(prototype_class)
    cls = np.asarray(prototype_class)[order]
    p = pop.iloc[order].reset_index(drop=True)
    P = len(p)
    xs = np.arange(P)
    fig, axes = plt.subplots(2, 1, figsize=(max(6.5, P * 0.42), 6.2), sharex=True)
    for off, cond, colour in ((-0.2, ref, "tab:blue"), (0.2, exp, "tab:red")):
        m = p[f"mean_{cond}"].to_numpy()
        err = np.nan_to_num(np.stack([m - p[f"ci_low_{cond}"], p[f"ci_high_{cond}"] - m]).clip(0))
        axes[0].bar(xs + off, m, 0.4, yerr=err, color=colour, label=f"{cond} test cells", capsize=2)
    axes[0].set_ylabel("mean max-similarity")
    axes[0].legend(fontsize=8)
    d = p["difference"].to_numpy()
    axes[1].bar(
        xs,
        d,
        0.6,
        yerr=np.nan_to_num(np.stack([d - p["diff_ci_low"], p["diff_ci_high"] - d]).clip(0)),
        color=["tab:red" if v > 0 else "tab:blue" for v in d],
        capsize=2,
    )
    axes[1].axhline(0, color="k", lw=0.5)
    axes[1].set_ylabel(f"{exp} − {ref}")
    for ax in axes:  # class groups: shaded bands and separators
        for k in np.unique(cls):
            idx = np.flatnonzero(cls == k)
            if k % 2:
                ax.axvspan(idx[0] - 0.5, idx[-1] + 0.5, color="0.93", zorder=0)
    for k in np.unique(cls):
        idx = np.flatnonzero(cls == k)
        axes[0].text(
            (idx[0] + idx[-1]) / 2,
            1.01,
            f"{class_names[k]} prototypes",
            ha="center",
            va="bottom",
            transform=axes[0].get_xaxis_transform(),
            fontsize=8,
        )
    axes[1].set_xticks(xs, [str(n).lstrip("p") for n in p["prototype"]], fontsize=7)
    axes[1].set_xlabel("prototype")
    fig.suptitle(f"prototype similarity by population (error bars: 95 % CI, bootstrap over {PLURAL[unit]})", fontsize=9)
    if descriptive:
        fig.text(
            0.5,
            0.005,
            f"fewer than {MIN_REPLICATES} {PLURAL[unit]} in a condition: descriptive only",
            ha="center",
            va="bottom",
            color="#b00",
            fontsize=9,
            weight="bold",
        )
    fig.tight_layout(rect=(0, 0.03 if descriptive else 0, 1, 1))
    fig.savefig(out, dpi=80)
    plt.close(fig)
