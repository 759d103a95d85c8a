"""``score.html``: one page per scored store, beside a ``score/`` folder it references relatively
(the folder can be zipped and mailed). Same look as explain's report.html."""

from __future__ import annotations

import html

import pandas as pd

from protocell.html import STYLE, img_html, kv_html, status_banner, table_html

WELL_COLUMNS = [
    "plate",
    "well",
    "treatment",
    "role",
    "n_cells",
    "affected_fraction",
    "ci_low",
    "ci_high",
    "mean_p_affected",
    "score_shift",
    "normalised_fraction",
    "percent_of_control",
    "robust_z",
    "b_score",
    "truth",
    "error",
    "true_fraction",
    "intensity_vs_reference",
    "density_vs_reference",
    "flag",
]
QC_COLUMNS = [
    "plate",
    "readout",
    "n_neg",
    "n_pos",
    "median_neg",
    "median_pos",
    "z_prime",
    "robust_z_prime",
    "ssmd",
    "signal_window",
    "verdict",
]
HIT_COLUMNS = ["treatment", "role", "n_wells", "basis", "mean", "reference_mean", "difference", "p_value", "q_value"]
FIT_COLUMNS = [
    "plate",
    "compound",
    "measure",
    "n_wells",
    "n_doses",
    "n_vehicle",
    "ec50",
    "ec50_ci_low",
    "ec50_ci_high",
    "ec50_in_range",
    "hill",
    "bottom",
    "top",
    "r2",
    "message",
]


def _cols(df: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    return df[[c for c in cols if c in df.columns]]


def score_page(
    summary: dict,
    wells: pd.DataFrame,
    treatments: pd.DataFrame,
    fits: pd.DataFrame,
    enrich_top: pd.DataFrame,
    figures: dict,
    notes: dict,
    truth: dict,
    tables: dict,
    fdr: float,
    run_status: dict | None = None,
) -> str:
    """The page as text (the caller writes it atomically). ``figures``: section → list of (path relative
    to the page, caption); ``notes``: estimator, assumption, normalisation, reference, empty wells, plates
    without controls; ``tables``: qc, plate_effects, trends, hits (``screen.screen``)."""
    e = html.escape
    qc, hits, trends, effects = tables["qc"], tables["hits"], tables["trends"], tables["plate_effects"]
    found = hits[hits["hit"]] if len(hits) else hits
    effects_html = (
        f"""<p class="how"><b>Plate effect.</b> The same controls on every plate (their wells' fraction
over the cells the run did not train on): median per plate, and a Kruskal–Wallis test across plates. A control that reads
differently from plate to plate is a plate effect; the normalised fraction removes it as far as it is a shift and a scale.
(<a href="score/plate_effects.csv">CSV</a>)</p>{table_html(effects)}"""
        if len(effects)
        else ""
    )

    def figs(section: str) -> str:
        wide = ' style="width:100%"'  # multi-panel figures (several prototypes) get the page's width
        return "".join(
            f'<figure class="c"{wide if "prototypes" in src else ""}>{img_html(src, cap)}'
            f"<figcaption>{e(cap)}</figcaption></figure>"
            for src, cap in figures.get(section, [])
        )

    no_dose = wells[wells["dose"].isna()] if "dose" in wells else wells.iloc[:0]
    flagged = wells[wells["flag"] != ""]
    truth_html = (
        (
            f'<h2>Ground truth</h2><p class="how">Only for wells whose per-cell truth is known (synthetic '
            f"plates): the estimate against the share of cells truly affected; the EC50 against the design's.</p>"
            f'<table class="kv">{kv_html(truth)}</table>'
        )
        if truth
        else ""
    )
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>protocell score · {e(str(summary.get("store", "")))}</title>
{STYLE}</head><body>
<h1>protocell score: affected cells and prototypes per well</h1>
{status_banner(run_status or {})}
<table class="kv">{kv_html(summary)}</table>
<p class="how"><b>Estimator.</b> {e(notes["estimator"])} <b>It assumes</b> {e(notes["assumption"])}
{e(notes["identified"])} <b>Normalisation.</b> {e(notes["normalisation"])}</p>

<h2>Plate QC: do the controls separate?</h2>
<p class="how">Per plate, from its own control wells (reference = negative, exposed = positive; each well one value over
the cells the run did <i>not</i> train on — wells whose every cell was trained on are left out): <b>Z′</b> = 1 − 3(σp + σn)
/ |μp − μn| over wells; <b>robust Z′</b> the same with medians and scaled MADs; <b>SSMD</b> = (μp − μn) / √(σp² + σn²);
<b>signal window</b> = (|μp − μn| − 3(σp + σn)) / σ of the higher control. <b>Z′ &gt; 0.5: excellent; 0 &lt; Z′ ≤ 0.5:
screenable</b> (the controls' 3σ bands do not overlap); Z′ ≤ 0: not screenable. The network's readouts
(<code>Protocell_*</code>: affected fraction, mean P(affected), score shift) come first, then the classic per-well means
of the per-cell features (<code>Cells_*</code>), so you see what the network adds over them.
{e(notes.get("no_controls", ""))} (<a href="score/qc.csv">CSV</a>)</p>
{table_html(_cols(qc, QC_COLUMNS)) if len(qc) else "<p>No plate.</p>"}

<h2>Hits: treatments that differ from the reference ({len(found)} at FDR {fdr:g})</h2>
<p class="how">Each treatment's wells against the reference wells (the well is the unit), on the fraction normalised to
each plate's controls (<code>basis</code>; the raw fraction on a plate without controls): Welch's t-test, or for a
treatment of one well the t of a new observation against the reference wells; Benjamini–Hochberg q-values across the
{len(hits)} treatments tested; a hit is q &lt; {fdr:g}. A hit says the wells differ, not by how much matters: read the
difference. (<a href="score/hits.csv">hits.csv</a> has every treatment.)</p>
{table_html(_cols(found, HIT_COLUMNS)) if len(found) else "<p>No hit.</p>"}

<h2>The plate</h2>
<p class="how">Each well's affected fraction at its position on the plate (value and number of cells in the well);
reference wells are boxed blue, exposed control wells red. <a href="score/wells.csv">wells.csv</a> has every number,
<a href="score/cells.csv">cells.csv</a> every cell.</p>
{figs("plate")}
<p class="how"><b>Normalisation to each plate's controls</b> (wells.csv): <code>percent_of_control</code> = 100 · (x −
median of the plate's reference wells) / (median of its exposed wells − that), <code>robust_z</code> = (x − reference
median) / scaled MAD of the reference wells, and <code>normalised_fraction</code>, the fraction put on the level of every
plate's controls together (their medians m̄: m̄_ref + percent of control / 100 · (m̄_exp − m̄_ref)), so that plates
imaged differently can be compared; with one plate it is the fraction itself.
Downstream tools read <a href="score/well_table.csv">well_table.csv</a> / <a href="score/well_table.parquet">.parquet</a>
(<code>Metadata_*</code>, <code>Protocell_*</code>, <code>Cells_*</code>).</p>
{effects_html}
<p class="how"><b>Row, column and edge trends.</b> Per plate, each well's value minus the median of its treatment's wells
on the plate, the outer ring (row A, column 1, the last row and column) against the inner wells (Mann–Whitney), and the
spread of a median polish's row and column effects. A flag (p &lt; 0.01) means position matters on that plate: read its
outer wells with care, or score with <code>bscore=true</code> (a B-score: two-way median polish of the scored wells,
for plates whose layout carries no treatment pattern). (<a href="score/trends.csv">CSV</a>)</p>
{table_html(trends) if len(trends) else "<p>No well at a plate position.</p>"}

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
<p class="how"><b>Graded readouts beside the fraction.</b> The affected fraction counts cells in the state the exposed
controls define; a response that moves every cell part of the way reads low in it until the cells cross over.
<code>mean_p_affected</code> is the mean of the cells' calibrated P(affected); <code>score_shift</code> the mean logit
score of the well's cells minus that of the reference cells, in units of the reference cells' SD (0: like the
reference; the exposed controls' value is the full change). A well with a small fraction but a large score shift has
moved short of the exposed state; each prototype's similarity shift is in
<a href="score/prototype_enrichment.csv">prototype_enrichment.csv</a>.</p>
{table_html(_cols(wells, WELL_COLUMNS))}
{truth_html}
</body></html>"""
    return page
