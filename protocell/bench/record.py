"""``make bench``'s outputs: the Markdown table and bench.json/bench.md, written after every stage."""

from __future__ import annotations

from pathlib import Path


def table(results: dict) -> str:
    lines = [
        f"Machine: {results['machine']['cpu']}, {results['machine']['cores']} cores, "
        f"{results['machine']['threads']} threads, torch {results['machine']['torch']}",
        "",
        "| stage | figure | value |",
        "|---|---|---|",
    ]
    for section, vals in results.items():
        if section == "machine" or not isinstance(vals, dict):
            continue
        for k, v in vals.items():
            if isinstance(v, float):
                v = f"{v:.3g}"
            lines.append(f"| {section} | {k} | {v} |")
    return "\n".join(lines) + "\n"


def flat(figures: dict, prefix: str) -> dict:
    """``{"merge": {"seconds": 2}, "tasks": [{"seconds": 3}]}`` → ``{"<prefix>.merge.seconds": 2,
    "<prefix>.tasks.0.seconds": 3}``: one table row a number."""
    out: dict = {}
    for key, value in figures.items():
        name = f"{prefix}.{key}"
        if isinstance(value, dict):
            out.update(flat(value, name))
        elif isinstance(value, list):
            out.update(flat(dict(enumerate(value)), name))
        else:
            out[name] = value
    return out


def record(results: dict, out: Path) -> None:
    """bench.json and bench.md as they stand (written after every stage, atomically: a bench stopped or
    killed mid-way keeps the figures of every stage it finished; ``complete`` says whether it ended)."""
    from protocell.fsutil import atomic_write_json, atomic_write_text

    atomic_write_json(out / "bench.json", results)
    note = (
        "" if results["complete"] else "Partial: the stages finished so far (the bench is running or was stopped).\n\n"
    )
    atomic_write_text(out / "bench.md", note + table(results))
