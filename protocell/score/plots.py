"""score's figures: the plate heat map, dose–response curves, and the prototype enrichment map."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from protocell.score.dose import logistic4


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("_") or "compound"


def row_label(row: int) -> str:
    return chr(65 + row) if row < 26 else chr(64 + row // 26) + chr(65 + row % 26)


def plot_plate(wells: pd.DataFrame, plate: str, out: Path) -> Path:
    """Affected fraction of every well at its plate position (rows × columns), wells without cells
    hatched; reference wells boxed blue, exposed red; the value (and n cells) written in each well."""
    plt = _plt()
    w = wells[(wells["plate"] == plate) & wells["row"].notna()]
    n_rows = max(int(w["row"].max()) + 1, 8) if len(w) else 8
    n_cols = max(int(w["column"].max()), 12) if len(w) else 12
    grid = np.full((n_rows, n_cols), np.nan)
    for r in w.itertuples():
        grid[int(r.row), int(r.column) - 1] = r.affected_fraction
    fig, ax = plt.subplots(figsize=(1.0 + 0.62 * n_cols, 1.2 + 0.5 * n_rows))
    im = ax.imshow(np.ma.masked_invalid(grid), cmap="viridis", vmin=0, vmax=1)
    ax.set_facecolor("0.92")
    small = n_cols > 24
    for r in w.itertuples():
        y, x = int(r.row), int(r.column) - 1
        edge = {"reference": "tab:blue", "exposed": "tab:red"}.get(r.role)
        if edge:
            ax.add_patch(plt.Rectangle((x - 0.48, y - 0.48), 0.96, 0.96, fill=False, ec=edge, lw=2))
        if not small:
            txt = "no\ncells" if r.n_cells == 0 else f"{r.affected_fraction:.2f}\n{r.n_cells}"
            val = r.affected_fraction if np.isfinite(r.affected_fraction) else 0
            ax.text(x, y, txt, ha="center", va="center", fontsize=6, color="w" if val < 0.6 else "k")
    ax.set_xticks(range(n_cols), [str(c + 1) for c in range(n_cols)], fontsize=7)
    ax.set_yticks(range(n_rows), [row_label(r) for r in range(n_rows)], fontsize=7)
    ax.set_title(
        f"plate {plate}: affected fraction per well (value, n cells; blue box reference, red exposed)", fontsize=8
    )
    fig.colorbar(im, ax=ax, fraction=0.03, pad=0.02, label="affected fraction")
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def _dose_axis(ax, doses: pd.Series):
    """x positions: log10 dose; vehicle wells (dose 0) one step left of the lowest dose, marked '0'."""
    pos = doses[doses > 0]
    x0 = np.log10(pos.min()) - 1 if len(pos) else 0.0
    x = np.where(doses > 0, np.log10(doses.where(doses > 0, 1.0)), x0)
    return x, x0


def plot_dose(
    ax,
    wells: pd.DataFrame,
    measure: str,
    fit: dict | None,
    label: str,
    truth: tuple[pd.Series, pd.Series] | None = None,
    ci_cols: tuple[str, str] | None = None,
):
    """One curve: points per well (with their CI when given), the fitted 4PL, EC50 and its CI."""
    x, x0 = _dose_axis(ax, wells["dose"])
    y = wells[measure].to_numpy(float)
    if ci_cols:
        err = np.stack([y - wells[ci_cols[0]], wells[ci_cols[1]] - y]).clip(0)
        ax.errorbar(x, y, yerr=err, fmt="o", ms=3.5, color="k", ecolor="0.6", lw=0.8, capsize=1.5, label="wells")
    else:
        ax.plot(x, y, "o", ms=3.5, color="k", label="wells")
    grid = (
        np.linspace(np.nanmin(x[wells["dose"] > 0]) - 0.3, np.nanmax(x) + 0.3, 200)
        if (wells["dose"] > 0).any()
        else None
    )
    if truth is not None and grid is not None:
        order = np.argsort(truth[0].to_numpy())
        ax.plot(
            np.log10(truth[0].to_numpy()[order]),
            truth[1].to_numpy()[order],
            "--",
            color="tab:green",
            lw=1,
            label="truth (design)",
        )
    if fit and fit.get("ok") and grid is not None:
        ax.plot(
            grid,
            logistic4(grid, fit["bottom"], fit["top"], fit["log_ec50"], fit["hill"]),
            color="tab:red",
            lw=1.5,
            label="4-parameter logistic",
        )
        ax.axvline(fit["log_ec50"], color="tab:red", lw=0.8, ls=":")
        if np.isfinite(fit.get("ec50_ci_low", np.nan)):
            ax.axvspan(np.log10(fit["ec50_ci_low"]), np.log10(fit["ec50_ci_high"]), color="tab:red", alpha=0.1)
    ticks = sorted(set(np.round(x[wells["dose"] > 0]).astype(int))) if (wells["dose"] > 0).any() else []
    labels = [f"{10.0**t:g}" for t in ticks]
    if (wells["dose"] <= 0).any():
        ticks, labels = [x0] + ticks, ["0"] + labels
    ax.set_xticks(ticks, labels, fontsize=7)
    ax.set_xlabel("dose (log scale)", fontsize=8)
    ax.set_ylabel(label, fontsize=8)
    if fit and fit.get("ok"):
        ci = (
            f" [{fit['ec50_ci_low']:.3g}, {fit['ec50_ci_high']:.3g}]"
            if np.isfinite(fit.get("ec50_ci_low", np.nan))
            else ""
        )
        flag = "" if fit.get("ec50_in_range") else " (outside the doses)"
        ax.set_title(f"EC50 {fit['ec50']:.3g}{ci}{flag}, Hill {fit['hill']:.2g}", fontsize=8)
    elif fit:
        ax.set_title(f"no fit: {fit.get('message', '')}", fontsize=7)
    ax.tick_params(labelsize=7)


def _truth(wells: pd.DataFrame, truth_col: str | None):
    """(doses > 0, the design's fraction there) for the dashed truth curve, or None."""
    if not truth_col or truth_col not in wells:
        return None
    on = (wells["dose"] > 0) & pd.to_numeric(wells[truth_col], errors="coerce").notna()
    return (wells.loc[on, "dose"], pd.to_numeric(wells.loc[on, truth_col])) if on.any() else None


def plot_compound_plates(
    wells: pd.DataFrame, fits: dict[str, dict], compound: str, out: Path, truth_col: str | None = None
) -> Path:
    """One panel per plate: the normalised fraction of the compound's wells on it against dose, with the
    plate's fitted curve (``fits``: plate → fit of ``normalised_fraction``)."""
    plt = _plt()
    plates = sorted(wells["plate"].unique())
    fig, axes = plt.subplots(1, len(plates), figsize=(4.4 * len(plates), 3.4), squeeze=False, sharey=True)
    for ax, plate in zip(axes[0], plates):
        w = wells[(wells["plate"] == plate) & wells["normalised_fraction"].notna()]
        if w.empty:
            ax.set_title(f"plate {plate}: no controls, no normalised fraction", fontsize=8)
            continue
        plot_dose(ax, w, "normalised_fraction", fits.get(plate), "normalised fraction", _truth(w, truth_col))
        ax.set_ylim(-0.05, 1.05)
        ax.set_title(f"{plate}: " + ax.get_title(), fontsize=8)
    fig.suptitle(f"{compound}: fraction normalised to each plate's own controls", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def plot_compound(
    wells: pd.DataFrame, fit: dict | None, compound: str, out: Path, truth_col: str | None = None
) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    plot_dose(
        ax,
        wells,
        "affected_fraction",
        fit,
        "affected fraction (95 % CI over cells)",
        _truth(wells, truth_col),
        ("ci_low", "ci_high"),
    )
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=6, loc="upper left")
    fig.suptitle(f"{compound}: affected fraction against dose ({len(wells)} wells)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def plot_compound_prototypes(
    per_well: dict[int, pd.DataFrame], fits: dict[int, dict], names: dict[int, str], compound: str, out: Path
) -> Path:
    """Small multiples: for each top enriched prototype, its similarity difference from the reference
    per well against dose, with the fitted curve."""
    plt = _plt()
    k = max(len(per_well), 1)
    fig, axes = plt.subplots(1, k, figsize=(3.6 * k, 3.2), squeeze=False)
    for ax, (j, w) in zip(axes[0], per_well.items()):
        plot_dose(ax, w, "difference", fits.get(j), f"{names[j]}: similarity − reference", None, ("ci_low", "ci_high"))
        ax.axhline(0, color="k", lw=0.5)
    fig.suptitle(
        f"{compound}: the most enriched prototypes against dose (95 % CI over cells and reference wells)", fontsize=9
    )
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def plot_enrichment(enrich: pd.DataFrame, treatments: pd.DataFrame, out: Path) -> Path:
    """Treatments (rows, in the treatments table's order) × prototypes: mean similarity − reference."""
    plt = _plt()
    t = enrich[enrich["level"] == "treatment"]
    mat = t.pivot(index="treatment", columns="prototype", values="difference").reindex(treatments["treatment"])
    classes = t.drop_duplicates("prototype").set_index("prototype")["class"]
    lim = float(np.nanmax(np.abs(mat.to_numpy()))) if mat.notna().any().any() else 1.0
    fig, ax = plt.subplots(figsize=(2.5 + 0.32 * mat.shape[1], 1.2 + 0.22 * mat.shape[0]))
    im = ax.imshow(mat.to_numpy(), cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
    ax.set_xticks(range(mat.shape[1]), [f"p{j}\n{classes[j]}" for j in mat.columns], fontsize=6)
    ax.set_yticks(range(mat.shape[0]), mat.index, fontsize=6)
    fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02, label="mean similarity − reference")
    ax.set_title("prototype enrichment per treatment\n(red: more similar than the reference cells)", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out
