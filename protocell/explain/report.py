"""``report.html``: one page per run. Images and tables are referenced relatively (``explain/…``),
so the run folder can be zipped and mailed and the page still opens."""

from __future__ import annotations

import html

import pandas as pd

from protocell.explain.scores import fraction_lines


# the look of every protocell page (report.html, score.html)
STYLE = """<style>body{font-family:sans-serif;max-width:1250px;margin:auto;padding:1em;color:#222}
figure{display:inline-block;margin:4px;vertical-align:top} figure.p{width:380px} figure.c{width:600px}
figcaption{font-size:12px} img{max-width:100%} .flag{color:#b00}
table.t,table.kv{border-collapse:collapse;font-size:12px} table td,table th{padding:2px 6px;border-bottom:1px solid #ddd;text-align:left}
p.how{font-size:13px;color:#444;max-width:900px}</style>"""


def table_html(df: pd.DataFrame, digits: int = 3) -> str:
    """A table; ``to_html`` escapes every cell."""
    return df.to_html(index=False, float_format=lambda v: f"{v:.{digits}g}", border=0, classes="t", na_rep="")


def fmt(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) else html.escape(str(v))


def img_html(src: str, alt: str, width: str = "") -> str:
    style = f' style="max-width:{width}"' if width else ""
    return f'<img src="{html.escape(src)}" alt="{html.escape(alt)}"{style}>'


def kv_html(pairs: dict) -> str:
    """Rows of a key–value table (``<table class="kv">``), keys and values escaped."""
    return "".join(f"<tr><th>{html.escape(str(k))}</th><td>{fmt(v)}</td></tr>" for k, v in pairs.items())


def write_report(run, protos: list[dict], pop: pd.DataFrame, ranked: pd.DataFrame, em: dict, metrics: dict,
                 health: pd.DataFrame | None = None, cells: list[dict] | None = None) -> None:
    rec, cfg = run.record, run.cfg
    rf = rec["rf"]
    mask = cfg.get("mask", {})
    k_near = int(em.get("nearest", 20))
    counts = ", ".join(f"{int((rec['prototype_class'] == k).sum())} {c}" for k, c in enumerate(run.class_names))
    summary = {
        "run folder": str(run.dir), "backbone": cfg.backbone.get("name", "?"),
        "receptive field": f"{rf['size']:.0f} px (latent grid {rec['latent_size'][0]}×{rec['latent_size'][1]}, "
                           f"jump {rf['jump']:.0f} px)",
        "mask": f"distance term {mask.get('distance_term')}, zeroed background {mask.get('zero_background')}"
                + (f" with a {mask.get('zero_margin')} px margin" if mask.get("zero_background") and mask.get("zero_margin") else ""),
        "last layer": cfg.get("last_layer", {}).get("mode", "?"),
        "prototypes": f"{len(rec['cell_id'])} ({counts}); pushes {rec['pushes']}",
        "crop store": rec["store"], "crop size": f"{rec['crop_size']} px",
        **{k.replace("_", " "): v for k, v in metrics.items()
           if k in ("n_cells", "well_label_accuracy", "well_label_auroc", "true_label_accuracy", "true_label_auroc")},
    }
    run_table = kv_html(summary)
    flags = {} if health is None else dict(zip(health["prototype"], health["flag"]))
    grid = "".join(
        f'<figure class="p"><a href="explain/mosaics/mosaic_{p["prototype"]:02d}.png">'
        f'{img_html("explain/" + p["figure"], "prototype " + str(p["prototype"]))}</a>'
        f'<figcaption>prototype {p["prototype"]} · {html.escape(p["class"])} · well {html.escape(str(p["well"]))} '
        f'field {p["field"]} cell {p["cell_id"]}'
        f'{" · <b class=flag>" + html.escape(flags[p["prototype"]]) + "</b>" if flags.get(p["prototype"]) else ""}'
        f'<br><a href="explain/mosaics/mosaic_{p["prototype"]:02d}.png">its {k_near} nearest patches</a>'
        f' (<a href="explain/mosaics/mosaic_{p["prototype"]:02d}.csv">where</a>)</figcaption></figure>' for p in protos)
    cell_figs = "".join(
        f'<figure class="c">{img_html("explain/" + c["figure"], "cell " + str(c["cell_id"]))}<figcaption>test cell '
        f'{c["cell_id"]} ({html.escape(c["condition"])}, image {html.escape(str(c["image_id"]))}) → '
        f'{html.escape(c["predicted"])}, {html.escape(run.exp)} score {c["exp_score"]:.2f}</figcaption></figure>'
        for c in (cells or []))
    frac = metrics.get("affected_fraction") or {}
    truth = {k: v for k, v in em.items() if isinstance(v, (int, float)) and k not in ("prototypes", "pushes")}
    for cond, est in (frac.get("conditions") or {}).items():
        truth.update({f"affected fraction of {cond}: {k}": v for k, v in est.items() if isinstance(v, (int, float))})
    for j, v in em.get("exp_prototype_texture_share", {}).items():
        truth[f"prototype {j} ({run.exp}): share of nearest patches on the planted change"] = v
    truth_table = kv_html(truth)
    n_flagged = 0 if health is None else int((health["flag"] != "").sum())
    ref, exp = html.escape(run.ref), html.escape(run.exp)
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>protocell report · {html.escape(run.dir.name)}</title>
{STYLE}</head><body>
<h1>protocell run {html.escape(run.dir.name)}: what differs between {ref} and {exp}</h1>
<h2>Run</h2><table class="kv">{run_table}</table>

<h2>Which prototypes differ between {ref} and {exp}</h2>
<p class="how">Each prototype is a small image patch of a training cell. For every test cell we take its highest
similarity to each prototype; bars are the mean over the {ref} and the {exp} test cells (top) and their difference
{exp} − {ref} (bottom), prototypes grouped by class. Error bars: 95 % confidence intervals from a bootstrap over
<b>wells</b> (cells of one well are not independent). A prototype far above zero below is a pattern
that is more common in {exp} cells.</p>
{img_html("explain/population_similarity.png", "population similarity")}
<p class="how">Ranked: two-sided Mann–Whitney U test on the <b>well means</b>, Cohen's d of the well means as effect
size, Benjamini–Hochberg q-values over prototypes (<a href="explain/prototype_differences.csv">CSV</a>,
<a href="explain/population_similarity.csv">population means CSV</a>).</p>
{table_html(ranked)}

<h2>Prototypes</h2>
<p class="how">Each prototype on the cell it was taken from (<a href="explain/prototypes.csv">source images and
coordinates</a>). Left: a box of the backbone's receptive field ({rf['size']:.0f} px) centred on the maximum
activation; right: the original ProtoPNet box around the pixels at or above the 95th percentile of the
activation heat map. Green: cell outline. Click a prototype for its {k_near} nearest training patches.</p>
{grid}

<h2>Cell scores and the affected fraction of {exp}</h2>
<p class="how">The calibrated probability that a test cell is affected, per condition, and the affected
fraction of each condition: {html.escape("; ".join(fraction_lines(frac)))}. Estimator: {html.escape(str(frac.get("estimator", "")))}.
Assumption: {html.escape(str(frac.get("assumption", frac.get("reason", ""))))}; if unaffected {exp} cells score higher
than {ref} cells (a well or plate effect), the {exp} estimate is biased upwards. 95 % CI: bootstrap over wells.</p>
{img_html("explain/cell_scores.png", "cell scores")}

<h2>This looks like that: sample test cells</h2>
<p class="how">Top row: the cell, and where in it each of its most important prototypes matched (box, heat map);
the title gives similarity × last-layer weight = its contribution to the predicted class. Bottom row: the
prototype's own source patch.</p>
{cell_figs}

<h2>Prototype health ({n_flagged} of {len(protos)} flagged)</h2>
<p class="how">Flags: <b>duplicate</b> (same source patch, or squared distance to another prototype &lt; 1e-3),
<b>on border</b> (more than half of its nearest patches straddle the cell outline), <b>in background</b> (any
nearest patch outside the cell), <b>impure</b> (fewer than half of its nearest patches from its own class).
<a href="explain/prototype_health.csv">CSV</a>.</p>
{table_html(health) if health is not None else ""}

<h2>Ground-truth checks</h2>
<p class="how">Only for data whose per-cell truth is known (synthetic wells): true-label accuracy and AUROC of the
cell scores, localisation of the {exp} prototypes on the planted change, prototypes in background (must be 0 with
the mask on), the estimated vs the true affected fraction (<a href="explain/explain_metrics.json">JSON</a>).</p>
<table class="kv">{truth_table}</table>
</body></html>"""
    (run.dir / "report.html").write_text(page, encoding="utf-8")

