"""``score.html``: one page per scored store, beside a ``score/`` folder it references relatively
(the folder can be zipped and mailed). Same look as explain's report.html."""

from __future__ import annotations

import html

import pandas as pd

from protocell.explain.report import STYLE, img_html, kv_html, table_html

WELL_COLUMNS = ["plate", "well", "treatment", "role", "n_cells", "affected_fraction", "ci_low", "ci_high", "truth",
                "error", "true_fraction", "intensity_vs_reference", "density_vs_reference", "flag"]
FIT_COLUMNS = ["compound", "measure", "n_wells", "n_doses", "n_vehicle", "ec50", "ec50_ci_low", "ec50_ci_high",
               "ec50_in_range", "hill", "bottom", "top", "r2", "message"]


def _cols(df: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    return df[[c for c in cols if c in df.columns]]


def score_page(summary: dict, wells: pd.DataFrame, treatments: pd.DataFrame, fits: pd.DataFrame,
               enrich_top: pd.DataFrame, figures: dict, notes: dict, truth: dict) -> str:
    """The page as text (the caller writes it atomically). ``figures``: section → list of (path relative
    to the page, caption); ``notes``: estimator, assumption, normalisation, reference, empty wells."""
    e = html.escape

    def figs(section: str) -> str:
        wide = ' style="width:100%"'     # multi-panel figures (several prototypes) get the page's width
        return "".join(f'<figure class="c"{wide if "prototypes" in src else ""}>{img_html(src, cap)}'
                       f'<figcaption>{e(cap)}</figcaption></figure>' for src, cap in figures.get(section, []))

    no_dose = wells[wells["dose"].isna()] if "dose" in wells else wells.iloc[:0]
    flagged = wells[wells["flag"] != ""]
    truth_html = (f'<h2>Ground truth</h2><p class="how">Only for wells whose per-cell truth is known (synthetic '
                  f'plates): the estimate against the share of cells truly affected; the EC50 against the design\'s.</p>'
                  f'<table class="kv">{kv_html(truth)}</table>') if truth else ""
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>protocell score · {e(str(summary.get("store", "")))}</title>
{STYLE}</head><body>
<h1>protocell score: affected cells and prototypes per well</h1>
<table class="kv">{kv_html(summary)}</table>
<p class="how"><b>Estimator.</b> {e(notes["estimator"])} <b>It assumes</b> {e(notes["assumption"])}
<b>Normalisation.</b> {e(notes["normalisation"])}</p>

<h2>The plate</h2>
<p class="how">Each well's affected fraction at its position on the plate (value and number of cells in the well);
reference wells are boxed blue, exposed control wells red. <a href="score/wells.csv">wells.csv</a> has every number,
<a href="score/cells.csv">cells.csv</a> every cell.</p>
{figs("plate")}

<h2>Dose–response</h2>
<p class="how">Per compound, the affected fraction of each well against its dose (log scale; error bars: 95 % CI
over the well's cells), a four-parameter logistic fitted to the wells, and its EC50 (dotted) with a 95 % CI from a
bootstrap over wells (shaded). Below each, the same for the prototypes whose similarity moves most with the compound.
Wells without a dose are listed below, not fitted. (<a href="score/dose_response.csv">CSV</a>)</p>
{figs("dose")}
{table_html(_cols(fits, FIT_COLUMNS)) if len(fits) else "<p>No well has a dose: no curve to fit.</p>"}
<p class="how">Wells without a dose ({len(no_dose)}): {e(", ".join(f"{r.plate}/{r.well} ({r.treatment})" for r in no_dose.itertuples())) or "none"}.</p>

<h2>Replicates: the fraction per treatment</h2>
<p class="how">Wells sharing condition, compound and dose are replicates: their cells pooled, with a 95 % CI from a
bootstrap over the wells (treatments of one well: see its well). (<a href="score/treatments.csv">CSV</a>)</p>
{table_html(treatments)}

<h2>Prototype enrichment</h2>
<p class="how">For each well and treatment, the mean over its cells of each prototype's similarity (a cell's best match
anywhere in it) minus the same mean over the reference cells ({e(notes["reference"])}). Red: the pattern is commoner
than in the reference. (<a href="score/prototype_enrichment.csv">CSV</a>; the prototypes themselves are in the run's
report.html.)</p>
{figs("enrichment")}
<p class="how">Largest differences per treatment:</p>
{table_html(enrich_top)}

<h2>Wells to read with care ({len(flagged)})</h2>
<p class="how">The estimate assumes that a well's unaffected cells look like the reference's. A well much brighter or
dimmer than the reference wells, or much sparser or denser (cells per image), differs in a way the network may read;
wells with few cells have wide intervals; cells the run trained on score optimistically.
{e(notes.get("empty", ""))}</p>
{table_html(_cols(flagged, WELL_COLUMNS)) if len(flagged) else "<p>None.</p>"}

<h2>All wells</h2>
{table_html(_cols(wells, WELL_COLUMNS))}
{truth_html}
</body></html>"""
    return page
