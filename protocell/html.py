"""The pieces of every protocell page (``report.html``, ``score.html``): the style, escaped tables and
images, and the status banner a failed or unreliable run carries on top. Text is escaped where it
enters (a well or condition name comes from a plate map someone mailed)."""

from __future__ import annotations

import html

import pandas as pd

# the look of every protocell page (report.html, score.html)
STYLE = """<style>body{font-family:sans-serif;max-width:1250px;margin:auto;padding:1em;color:#222}
figure{display:inline-block;margin:4px;vertical-align:top} figure.p{width:380px} figure.c{width:600px}
figcaption{font-size:12px} img{max-width:100%} .flag{color:#b00}
table.t,table.kv{border-collapse:collapse;font-size:12px} table td,table th{padding:2px 6px;border-bottom:1px solid #ddd;text-align:left}
p.how{font-size:13px;color:#444;max-width:900px}
.box{padding:8px 12px;margin:10px 0;border-radius:4px;font-size:14px;max-width:1100px} .box ul{margin:4px 0}
.failed{background:#fde8e8;border:2px solid #c00;color:#900} .incomplete{background:#fff1e0;border:2px solid #e07000;color:#8a4500}
.warning{background:#fff8dc;border:1px solid #d4a000} .note{background:#eef4fb;border:1px solid #9bb8d8}
.sw{display:inline-block;width:11px;height:11px;margin:0 3px 0 8px;border:1px solid #888;vertical-align:middle}</style>"""


def table_html(df: pd.DataFrame, digits: int = 3) -> str:
    """A table; ``to_html`` escapes every cell."""
    return df.to_html(index=False, float_format=lambda v: f"{v:.{digits}g}", border=0, classes="t", na_rep="")


def fmt(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) else html.escape(str(v))


def box(kind: str, title: str, lines: list[str]) -> str:
    """A coloured notice: ``kind`` failed (red), incomplete (orange) or warning (amber)."""
    items = "".join(f"<li>{html.escape(str(line))}</li>" for line in lines)
    return f'<div class="box {kind}"><b>{html.escape(title)}</b><ul>{items}</ul></div>'


def status_banner(metrics: dict) -> str:
    """The run's status from metrics.json: nothing when ok, else a banner that cannot be missed."""
    status = metrics.get("status")
    out = ""
    if status == "failed":
        out += box("failed", "This run FAILED: read nothing below as a result.", metrics.get("reasons", []))
    elif status == "incomplete":
        out += box(
            "incomplete", "This run is INCOMPLETE: it stopped before its schedule ended.", metrics.get("reasons", [])
        )
    elif status == "warning":
        out += box(
            "failed",
            "This run's answer may be WRONG: a check without ground truth says it cannot be trusted "
            "(the reasons below). The affected fractions below are unreliable.",
            metrics.get("reasons", []),
        )
    if metrics.get("warnings"):
        out += box("warning", "Warnings", metrics["warnings"])
    return out


def img_html(src: str, alt: str, width: str = "") -> str:
    style = f' style="max-width:{width}"' if width else ""
    return f'<img src="{html.escape(src)}" alt="{html.escape(alt)}"{style}>'


def kv_html(pairs: dict) -> str:
    """Rows of a key–value table (``<table class="kv">``), keys and values escaped."""
    return "".join(f"<tr><th>{html.escape(str(k))}</th><td>{fmt(v)}</td></tr>" for k, v in pairs.items())


def kv_table(pairs: dict) -> str:
    """A whole key–value table, or nothing when there are no pairs."""
    rows = kv_html(pairs)
    return f'<table class="kv">{rows}</table>' if rows else ""
