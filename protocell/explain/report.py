"""``report.html``: one page per run. Images and tables are referenced relatively (``explain/…``),
so the run folder can be zipped and mailed and the page still opens.

What the page must not hide: a run that failed or stopped early (``metrics.json`` → ``status``,
a red or orange banner on top, with the reasons), warnings, the replicate unit of the statistics
and why (red when there are fewer than three replicates per condition), and the test set's
composition. The ground-truth section appears only where the truth is known.
"""

from __future__ import annotations

import html

import pandas as pd

from protocell.evaluate.fraction import IDENTIFIED
from protocell.explain.scores import fraction_lines
from protocell.fsutil import atomic_write_text
from protocell.html import STYLE, box, img_html, kv_html, kv_table, status_banner, table_html


def locality_banner(metrics: dict) -> str:
    """A red notice above the prototypes when the receptive field covers the crop (``metrics.json`` →
    ``locality``): the boxes then frame whole cells, not parts of them."""
    loc = metrics.get("locality") or {}
    if loc.get("local", True):
        return ""
    return box("failed", "These prototypes are whole cells, not parts of cells", [loc.get("warning", "")])


def channel_legend(look) -> str:
    """Each drawn channel's name in its composite colour."""
    if look is None:
        return ""
    return " ".join(
        f'<span class="sw" style="background:rgb({",".join(str(int(round(255 * v))) for v in col)})">'
        f"</span>{html.escape(name)}"
        for name, col in look.legend()
    )


def write_report(
    run,
    protos: list[dict],
    pop: pd.DataFrame,
    ranked: pd.DataFrame,
    em: dict,
    metrics: dict,
    health: pd.DataFrame | None = None,
    cells: list[dict] | None = None,
    look=None,
) -> None:
    from protocell.explain.similarity import PLURAL

    rec, cfg = run.record, run.cfg
    rf = rec["rf"]
    mask = cfg.get("mask", {})
    k_near = int(em.get("nearest", 20))
    unit = em.get("replicate_unit") or {"unit": "well", "reason": "", "descriptive": False}
    units = PLURAL[unit["unit"]]
    counts = ", ".join(f"{int((rec['prototype_class'] == k).sum())} {c}" for k, c in enumerate(run.class_names))
    summary = {
        "run folder": run.dir.name,
        "status": metrics.get("status", "not recorded"),
        "backbone": cfg.backbone.get("name", "?"),
        "receptive field": f"{rf['size']:.0f} px (latent grid {rec['latent_size'][0]}×{rec['latent_size'][1]}, "
        f"jump {rf['jump']:.0f} px)",
        "mask": f"distance term {mask.get('distance_term')}, zeroed background {mask.get('zero_background')}"
        + (
            f" with a {mask.get('zero_margin')} px margin"
            if mask.get("zero_background") and mask.get("zero_margin")
            else ""
        ),
        "last layer": cfg.get("last_layer", {}).get("mode", "?"),
        "prototypes": f"{len(rec['cell_id'])} ({counts}); pushes {rec['pushes']}",
        "crop store": rec["store"],
        "crop size": f"{rec['crop_size']} px",
        **(
            {"normalisation": metrics["normalization"].get("said", "")}
            if isinstance(metrics.get("normalization"), dict)
            else {}
        ),
        **{
            k.replace("_", " "): v
            for k, v in metrics.items()
            if k
            in (
                "n_cells",
                "well_label_accuracy",
                "well_label_balanced_accuracy",
                "well_label_auroc",
                "true_label_accuracy",
                "true_label_auroc",
            )
        },
    }
    run_table = kv_html(summary)
    if look is not None:
        run_table += f"<tr><th>channels (figure colours)</th><td>{channel_legend(look)}</td></tr>"
    flags = {} if health is None else dict(zip(health["prototype"], health["flag"]))
    grid = "".join(
        f'<figure class="p"><a href="explain/mosaics/mosaic_{p["prototype"]:02d}.png">'
        f"{img_html('explain/' + p['figure'], 'prototype ' + str(p['prototype']))}</a>"
        f"<figcaption>prototype {p['prototype']} · {html.escape(p['class'])} · well {html.escape(str(p['well']))} "
        f"field {html.escape(str(p['field']))} cell {p['cell_id']}"
        f"{' · <b class=flag>' + html.escape(flags[p['prototype']]) + '</b>' if flags.get(p['prototype']) else ''}"
        f'<br><a href="explain/mosaics/mosaic_{p["prototype"]:02d}.png">its {k_near} nearest patches</a>'
        f' (<a href="explain/mosaics/mosaic_{p["prototype"]:02d}.csv">where</a>)</figcaption></figure>'
        for p in protos
    )
    cell_figs = "".join(
        f'<figure class="c">{img_html("explain/" + c["figure"], "cell " + str(c["cell_id"]))}<figcaption>test cell '
        f"{c['cell_id']} ({html.escape(c['condition'])}, image {html.escape(str(c['image_id']))}) → "
        f"{html.escape(c['predicted'])}, {html.escape(run.exp)} score {c['exp_score']:.2f}</figcaption></figure>"
        for c in (cells or [])
    )
    frac = metrics.get("affected_fraction") or {}
    n_flagged = 0 if health is None else int((health["flag"] != "").sum())
    ref, exp = html.escape(run.ref), html.escape(run.exp)
    unit_note = (
        f'<div class="box {"failed" if unit["descriptive"] else "note"}"><b>Replicate unit: {units}.</b> '
        f"{html.escape(unit['reason'])}.</div>"
    )
    tests = (
        f"two-sided Mann–Whitney U test on the <b>{units}' means</b>, Cohen's d of those means as effect size, "
        "Benjamini–Hochberg q-values over prototypes"
        if not unit["descriptive"]
        else f"<b>no test</b> (the Mann–Whitney U test on the {units}' means needs at least 3 per condition): sorted "
        f"by Cohen's d of the {units}' means where it exists, then by the difference"
    )
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>protocell report · {html.escape(run.dir.name)}</title>
{STYLE}</head><body>
<h1>protocell run {html.escape(run.dir.name)}: what differs between {ref} and {exp}</h1>
{status_banner(metrics)}
<h2>Run</h2><table class="kv">{run_table}</table>

{test_set_section(metrics, run.class_names)}
{confound_section(rec["store"])}

<h2>Which prototypes differ between {ref} and {exp}</h2>
{unit_note}
<p class="how">Each prototype is a small image patch of a training cell. For every test cell we take its highest
similarity to each prototype; bars are the mean over the {ref} and the {exp} test cells (top) and their difference
{exp} − {ref} (bottom), prototypes grouped by class. Error bars: 95 % confidence intervals from a bootstrap over
<b>{units}</b> (cells of one well are not independent; a condition with one replicate has none). A prototype far
above zero below is a pattern that is more common in {exp} cells.</p>
{img_html("explain/population_similarity.png", "population similarity")}
<p class="how">Ranked: {tests} (<a href="explain/prototype_differences.csv">CSV</a>,
<a href="explain/population_similarity.csv">population means CSV</a>).</p>
{table_html(ranked)}

<h2>Prototypes</h2>
<p class="how">Each prototype on the cell it was taken from (<a href="explain/prototypes.csv">source images and
coordinates</a>), drawn as a colour composite of the channels ({channel_legend(look) or "first channel"}; each
channel's contrast from its percentiles over the run's cells). Left: a box of the backbone's receptive field
({rf["size"]:.0f} px) centred on the maximum activation; right: the original ProtoPNet box around the pixels at or
above the 95th percentile of the activation heat map (yellow contours, or a panel of its own). White: cell
outline. Click a prototype for its {k_near} nearest training patches.</p>
{locality_banner(metrics)}
{grid}

<h2>Cell scores and the affected fraction of {exp}</h2>
<p class="how">The calibrated probability that a test cell is affected, per condition, and the affected
fraction of each condition: {html.escape("; ".join(fraction_lines(frac)))}. Estimator: {html.escape(str(frac.get("estimator", "")))}.
Assumption: {html.escape(str(frac.get("assumption", frac.get("reason", ""))))}; if unaffected {exp} cells score higher
than {ref} cells (a well or plate effect), the {exp} estimate is biased upwards. 95 % CI: bootstrap over wells.
What it can be: {html.escape(str(frac.get("identified", IDENTIFIED)))}.</p>
{img_html("explain/cell_scores.png", "cell scores")}

<h2>This looks like that: sample test cells</h2>
<p class="how">Top row: the cell, and where in it each of its most important prototypes matched (box, similarity
contours); the title gives similarity × last-layer weight = its contribution to the predicted class. Bottom row:
the prototype's own source patch.</p>
{cell_figs}

<h2>Prototype health ({n_flagged} of {len(protos)} flagged)</h2>
<p class="how">Flags: <b>duplicate</b> (same source patch, or squared distance to another prototype &lt; 1e-3),
<b>on border</b> (more than half of its nearest patches straddle the cell outline), <b>in background</b> (any
nearest patch outside the cell), <b>impure</b> (fewer than half of its nearest patches from its own class).
<a href="explain/prototype_health.csv">CSV</a>.</p>
{table_html(health) if health is not None else ""}
{kv_table({k.replace("_", " "): v for k, v in em.items() if k in QUALITY})}
{truth_section(run, em, frac)}
</body></html>"""
    atomic_write_text(run.dir / "report.html", page)


QUALITY = (
    "distinct_source_patches",
    "distinct_source_cells",
    "prototypes_with_tied_nearest",
    "background_prototype_share",
)


def test_set_section(metrics: dict, class_names: list[str]) -> str:
    """The test set as it is: balanced accuracy, recall per class, cells and called fraction per well."""
    comp = metrics.get("test_composition")
    if not comp:
        return ""
    recall = metrics.get("well_label_recall") or {}
    kv = {
        "balanced accuracy (well labels, mean recall of the classes)": metrics.get("well_label_balanced_accuracy"),
        **{f"recall of {c}": v for c, v in recall.items()},
        "share of test cells called positive": metrics.get("called_fraction"),
    }
    per_condition = pd.DataFrame(comp).groupby("condition").agg(wells=("well", "nunique"), cells=("n_cells", "sum"))
    kv.update({f"{c}: test wells, cells": f"{int(r.wells)}, {int(r.cells)}" for c, r in per_condition.iterrows()})
    return (
        f'<h2>Test set</h2><p class="how">Accuracy on an unbalanced test set rewards calling every cell the larger '
        f'condition; balanced accuracy (the mean of the recalls) does not. "called" is the share of a well\'s '
        f"cells the cell call puts in {html.escape(class_names[-1])} (affected, when calibrated).</p>"
        f"{kv_table(kv)}{table_html(pd.DataFrame(comp).rename(columns={'called_fraction': 'called'}))}"
    )


def confound_section(store: str) -> str:
    """prepare's confound report (``prepare_summary.json`` → ``confounds``) of the store the run trained
    on: single features of imaging or segmentation that alone separate the conditions are flagged in
    red. Left out for stores without one (built-in wells, pre-cut crops, stores from before it)."""
    import json
    from pathlib import Path

    path = Path(store) / "prepare_summary.json"
    try:
        conf = json.loads(path.read_text()).get("confounds") or {}
    except (OSError, ValueError):
        return ""
    if not conf.get("available"):
        return ""
    table = pd.DataFrame(conf["table"])
    flagged = conf.get("flagged") or []
    ref, exp = html.escape(str(conf["reference"])), html.escape(str(conf["exposed"]))
    notice = (
        box(
            "failed",
            "Confound: the conditions differ in how they were imaged or segmented",
            [
                f"{', '.join(flagged)} alone separate(s) {conf['exposed']} from {conf['reference']} over wells (strength > "
                f"{conf['flag_auroc']:.2f}): a network can read that instead of the biology, and the prototypes may "
                "show it. For the mask, segmentation=distance grows every nucleus by the same distance."
            ],
        )
        if flagged
        else ""
    )
    return (
        f'<h2>Confound check (from prepare)</h2><p class="how">Each single feature\'s mean over the wells of '
        f"each condition and the AUROC with which it separates {exp} from {ref} <b>over wells</b> (strength = "
        f"max(AUROC, 1 − AUROC), 95 % CI from a bootstrap over wells). Cell count, mask area and shape and the "
        f"background describe the imaging or the segmentation, not the cells: they are flagged above "
        f"{conf['flag_auroc']:.2f}. Intensities are in prepare's per-image normalised units.</p>{notice}"
        f"{table_html(table)}"
    )


def truth_section(run, em: dict, frac: dict) -> str:
    """Ground-truth checks, only where the truth is known (synthetic wells): left out otherwise."""
    known = "true_label_accuracy" in em or "exp_prototype_texture_share" in em
    if not known:
        return ""
    truth = {
        k: v
        for k, v in em.items()
        if isinstance(v, (int, float))
        and not isinstance(v, bool)
        and k not in ("prototypes", "pushes", "nearest", *QUALITY)
    }
    for cond, est in (frac.get("conditions") or {}).items():
        truth.update({f"affected fraction of {cond}: {k}": v for k, v in est.items() if isinstance(v, (int, float))})
    for j, v in em.get("exp_prototype_texture_share", {}).items():
        truth[f"prototype {j} ({run.exp}): share of nearest patches on the planted change"] = v
    exp = html.escape(run.exp)
    return (
        f'<h2>Ground-truth checks</h2><p class="how">This store knows every cell\'s truth (synthetic wells): '
        f"true-label accuracy and AUROC of the cell scores, localisation of the {exp} prototypes on the planted "
        f'change, the estimated vs the true affected fraction (<a href="explain/explain_metrics.json">JSON</a>).'
        f"</p>{kv_table(truth)}"
    )
