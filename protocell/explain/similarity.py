"""Population statistics of prototype similarities, with wells as the unit of replication.

Input: a table with one row per cell (``well``, ``condition``) and one column per prototype
(max similarity of the cell to that prototype). Cells of one well are not independent, so
confidence intervals resample wells and tests compare well means.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import mannwhitneyu


def population_means(cells: pd.DataFrame, protos: list[str], ref: str, exp: str,
                     n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Mean max-similarity per prototype in Ref and Exp, Exp − Ref, each with a 95 % CI from a
    bootstrap over wells (wells resampled with replacement within each condition)."""
    rng = np.random.default_rng(seed)
    groups = {c: [g[protos].to_numpy() for _, g in cells[cells["condition"] == c].groupby("well")]
              for c in (ref, exp)}

    def pooled_mean(wells):
        return np.concatenate(wells).mean(0)

    point = {c: pooled_mean(w) for c, w in groups.items()}
    boots = {c: np.stack([pooled_mean([w[i] for i in rng.integers(0, len(w), len(w))]) for _ in range(n_boot)])
             for c, w in groups.items()}
    diff = boots[exp] - boots[ref]
    out = pd.DataFrame({"prototype": protos,
                        f"mean_{ref}": point[ref], f"mean_{exp}": point[exp],
                        f"ci_low_{ref}": np.percentile(boots[ref], 2.5, 0), f"ci_high_{ref}": np.percentile(boots[ref], 97.5, 0),
                        f"ci_low_{exp}": np.percentile(boots[exp], 2.5, 0), f"ci_high_{exp}": np.percentile(boots[exp], 97.5, 0),
                        "difference": point[exp] - point[ref],
                        "diff_ci_low": np.percentile(diff, 2.5, 0), "diff_ci_high": np.percentile(diff, 97.5, 0)})
    return out


def benjamini_hochberg(p: np.ndarray) -> np.ndarray:
    """BH-adjusted p-values (q-values), monotone, capped at 1."""
    p = np.asarray(p, np.float64)
    n = len(p)
    order = np.argsort(p)
    ranked = p[order] * n / np.arange(1, n + 1)
    q = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(n)
    out[order] = np.minimum(q, 1.0)
    return out


def rank_differences(cells: pd.DataFrame, protos: list[str], ref: str, exp: str) -> pd.DataFrame:
    """Per prototype: well means compared by a two-sided Mann–Whitney U test, effect size as
    Cohen's d of the well means, BH FDR over prototypes; sorted by q then |effect|."""
    wm = cells.groupby(["condition", "well"])[protos].mean()
    a, b = wm.loc[ref], wm.loc[exp]
    rows = []
    for j in protos:
        x, y = a[j].to_numpy(), b[j].to_numpy()
        p = mannwhitneyu(y, x, alternative="two-sided").pvalue if len(x) > 1 and len(y) > 1 else np.nan
        sd = np.sqrt((x.var(ddof=1) + y.var(ddof=1)) / 2) if len(x) > 1 and len(y) > 1 else np.nan
        rows.append({"prototype": j, "well_mean_ref": x.mean(), "well_mean_exp": y.mean(),
                     "difference": y.mean() - x.mean(), "cohens_d": (y.mean() - x.mean()) / sd if sd else np.nan,
                     "p_value": p, "n_wells_ref": len(x), "n_wells_exp": len(y)})
    df = pd.DataFrame(rows)
    df["q_value"] = benjamini_hochberg(df["p_value"].fillna(1.0).to_numpy())
    return df.sort_values(["q_value", "cohens_d"], key=lambda s: s if s.name == "q_value" else -s.abs()).reset_index(drop=True)


def class_order(prototype_class) -> np.ndarray:
    """Prototype indices grouped by class (stable within a class)."""
    return np.argsort(np.asarray(prototype_class), kind="stable")


def plot_population(pop: pd.DataFrame, prototype_class, class_names: list[str], ref: str, exp: str, out) -> None:
    """Figure 3 (the cell paper's Figs 3 and 6): mean max-similarity per prototype in Ref and Exp
    and the difference Exp − Ref, prototypes grouped by class, 95 % well-bootstrap CIs."""
    import matplotlib.pyplot as plt

    order = class_order(prototype_class)
    cls = np.asarray(prototype_class)[order]
    p = pop.iloc[order].reset_index(drop=True)
    P = len(p)
    xs = np.arange(P)
    fig, axes = plt.subplots(2, 1, figsize=(max(6.5, P * 0.42), 6.2), sharex=True)
    for off, cond, colour in ((-0.2, ref, "tab:blue"), (0.2, exp, "tab:red")):
        m = p[f"mean_{cond}"].to_numpy()
        err = np.stack([m - p[f"ci_low_{cond}"], p[f"ci_high_{cond}"] - m]).clip(0)
        axes[0].bar(xs + off, m, 0.4, yerr=err, color=colour, label=f"{cond} test cells", capsize=2)
    axes[0].set_ylabel("mean max-similarity")
    axes[0].legend(fontsize=8)
    d = p["difference"].to_numpy()
    axes[1].bar(xs, d, 0.6, yerr=np.stack([d - p["diff_ci_low"], p["diff_ci_high"] - d]).clip(0),
                color=["tab:red" if v > 0 else "tab:blue" for v in d], capsize=2)
    axes[1].axhline(0, color="k", lw=0.5)
    axes[1].set_ylabel(f"{exp} − {ref}")
    for ax in axes:   # class groups: shaded bands and separators
        for k in np.unique(cls):
            idx = np.flatnonzero(cls == k)
            if k % 2:
                ax.axvspan(idx[0] - 0.5, idx[-1] + 0.5, color="0.93", zorder=0)
    for k in np.unique(cls):
        idx = np.flatnonzero(cls == k)
        axes[0].text((idx[0] + idx[-1]) / 2, 1.01, f"{class_names[k]} prototypes", ha="center", va="bottom",
                     transform=axes[0].get_xaxis_transform(), fontsize=8)
    axes[1].set_xticks(xs, [str(n).lstrip("p") for n in p["prototype"]], fontsize=7)
    axes[1].set_xlabel("prototype")
    fig.suptitle("prototype similarity by population (error bars: 95 % CI, bootstrap over wells)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    plt.close(fig)
