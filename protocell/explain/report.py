"""``report.html``: one self-contained page per run (images referenced relatively, so the run
folder can be zipped and mailed)."""

from __future__ import annotations

import html

import pandas as pd


def _table(df: pd.DataFrame, digits: int = 3) -> str:
    return df.to_html(index=False, float_format=lambda v: f"{v:.{digits}g}", border=0, classes="t")


def write_report(run, protos: list[dict], pop: pd.DataFrame, ranked: pd.DataFrame, em: dict, metrics: dict,
                 health: pd.DataFrame | None = None, cells: list[int] | None = None) -> None:
    rec, cfg = run.record, run.cfg
    rf = rec["rf"]
    summary = {
        "backbone": cfg.backbone.name, "receptive field": f"{rf['size']:.0f} px (jump {rf['jump']:.0f})",
        "mask": f"distance term {cfg.mask.distance_term}, zeroed background {cfg.mask.zero_background}",
        "last layer": cfg.last_layer.mode, "prototypes": f"{len(rec['cell_id'])} ({', '.join(rec['class_names'])})",
        "crop store": rec["store"],
        **{k: (f"{v:.3f}" if isinstance(v, float) else v) for k, v in metrics.items()
           if k in ("well_label_accuracy", "well_label_auroc", "true_label_accuracy", "true_label_auroc", "n_cells")},
    }
    grid = "".join(
        f'<figure><a href="explain/mosaics/mosaic_{p["prototype"]:02d}.png">'
        f'<img src="explain/prototypes/prototype_{p["prototype"]:02d}.png" alt="prototype {p["prototype"]}"></a>'
        f'<figcaption>prototype {p["prototype"]} · {html.escape(rec["class_names"][int(rec["prototype_class"][p["prototype"]])])}'
        f' · click for its 20 nearest patches</figcaption></figure>' for p in protos)
    loc = {k: v for k, v in em.items() if not isinstance(v, dict)}
    loc.update({f"affected fraction {k}": v for k, v in em.get("affected_fraction", {}).items()})
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>protocell report · {html.escape(run.dir.name)}</title>
<style>body{{font-family:sans-serif;max-width:1200px;margin:auto;padding:1em}} figure{{display:inline-block;margin:4px;width:360px}}
img{{max-width:100%}} table.t{{border-collapse:collapse;font-size:12px}} table.t td,table.t th{{padding:2px 6px;border-bottom:1px solid #ddd}}</style>
</head><body>
<h1>protocell run {html.escape(run.dir.name)}</h1>
<h2>Run</h2>{_table(pd.DataFrame(summary.items(), columns=["", "value"]))}
<h2>Which prototypes differ between {html.escape(rec["class_names"][0])} and {html.escape(rec["class_names"][-1])}</h2>
<p>Mean max-similarity of each prototype over the test cells of each population, and the difference;
error bars are 95 % confidence intervals from a bootstrap over wells.</p>
<img src="explain/population_similarity.png" alt="population similarity">
<p>Ranked: Mann–Whitney U on well means, Cohen's d of the well means, Benjamini–Hochberg q-values over prototypes
(<a href="explain/prototype_differences.csv">CSV</a>, <a href="explain/population_similarity.csv">population CSV</a>).</p>
{_table(ranked)}
<h2>Prototypes</h2><p>Each prototype's source cell: the receptive-field box centred on the maximum activation (left)
and ProtoPNet's 95th-percentile box over the heat map (right); green: cell outline.</p>
{grid}
<h2>Cell scores and the affected fraction</h2>
<p>Exp score of every test cell per population. The affected fraction of the exposed population is estimated as
1 − P<sub>Exp</sub>(s ≤ t) / P<sub>Ref</sub>(s ≤ t) with t the Ref median, assuming Ref cells are (nearly) all unaffected and
affected cells score above the Ref median; 95 % CI from a bootstrap over wells.</p>
<img src="explain/cell_scores.png" alt="cell scores">
<h2>This looks like that: sample test cells</h2>
{"".join(f'<figure style="width:560px"><img src="explain/cells/cell_{c}.png" alt="cell {c}"></figure>' for c in (cells or []))}
<h2>Prototype health</h2><p>Flags: <b>duplicate</b> (same source patch or squared distance &lt; 1e-3),
<b>on border</b> (most of its 20 nearest patches straddle the cell outline), <b>impure</b> (fewer than half of them from its own class).</p>
{_table(health) if health is not None else ""}
<h2>Ground truth checks</h2>{_table(pd.DataFrame(loc.items(), columns=["metric", "value"]))}
</body></html>"""
    (run.dir / "report.html").write_text(page)
