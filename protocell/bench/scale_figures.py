"""The figures of the scale bench (``protocell.bench.scale``): rates, speedups, memory and the merges' lines
from the measured runs, the arithmetic of a whole screen from them, and their markdown table.
"""

from __future__ import annotations

from pathlib import Path

from protocell.bench.scale_measure import disk_mb
from protocell.bench.scale_plate import CHANNELS


def _line(x0: float, y0: float, x1: float, y1: float) -> tuple[float, float]:
    """(intercept, slope) of the line through two measurements (slope ≥ 0)."""
    slope = max(0.0, (y1 - y0) / (x1 - x0)) if x1 != x0 else 0.0
    return y1 - slope * x1, slope


def figures(p: dict, s: dict, plate: Path) -> dict:
    """The flat ``scale`` row of make bench."""
    one, two, q = p["one_task"], p["two_tasks"], p["quarter_two_tasks"]
    mpix, cells = one["megapixels"], one["cells"]
    sone, stwo, sq = s["one_task"], s["two_tasks"], s["quarter_two_tasks"]
    out = {
        "plate": f"{one['images']} images × {len(CHANNELS)} channels, {one['megapixels']:.0f} MPix, {cells} cells",
        "prepare_1task_1worker_mpix_per_s": mpix / one["seconds"],
        "prepare_1task_2workers_mpix_per_s": mpix / p["one_task_two_workers"]["seconds"],
        "prepare_2tasks_mpix_per_s": mpix / two["seconds"],
        "prepare_2tasks_with_merge_mpix_per_s": mpix / (two["seconds"] + two["merge"]["seconds"]),
        "prepare_mpix_per_s_per_core": mpix / one["seconds"],
        "prepare_2workers_speedup": one["seconds"] / p["one_task_two_workers"]["seconds"],
        # the tasks against the one task without its finishing part (≈ the merge's work: split, augmentation,
        # manifest, summary), and the whole against the whole
        "prepare_2tasks_speedup": (one["seconds"] - two["merge"]["seconds"]) / two["seconds"],
        "prepare_2tasks_with_merge_speedup": one["seconds"] / (two["seconds"] + two["merge"]["seconds"]),
        "prepare_task_seconds": [round(t["seconds"], 1) for t in two["tasks"]],
        "prepare_task_peak_rss_mb_quarter_plate": [t["peak_rss_mb"] for t in q["tasks"]],
        "prepare_task_peak_rss_mb_whole_plate": [t["peak_rss_mb"] for t in two["tasks"]],
        "prepare_1task_peak_rss_mb": one["peak_rss_mb"],
        "prepare_merge_seconds_quarter_whole": [round(q["merge"]["seconds"], 1), round(two["merge"]["seconds"], 1)],
        "prepare_merge_peak_rss_mb_quarter_whole": [
            round(q["merge"]["peak_rss_mb"]),
            round(two["merge"]["peak_rss_mb"]),
        ],
        "prepare_2tasks_store_identical_to_1task": p["identical_to_one_task"],
        "store_mb": one["store_mb"],
        "augmented": one["augmented"],
        "raw_mb": disk_mb(plate / "fields"),
        "score_cells": sone["cells"],
        "score_1task_cells_per_s": sone["cells"] / sone["seconds"],
        "score_2tasks_cells_per_s": sone["cells"] / stwo["seconds"],
        "score_2tasks_with_merge_cells_per_s": sone["cells"] / (stwo["seconds"] + stwo["merge"]["seconds"]),
        "score_2tasks_speedup": (sone["seconds"] - stwo["merge"]["seconds"]) / stwo["seconds"],
        "score_2tasks_with_merge_speedup": sone["seconds"] / (stwo["seconds"] + stwo["merge"]["seconds"]),
        "score_task_pass_seconds": [round(t["seconds"], 1) for t in stwo["tasks"]],
        "score_task_peak_rss_mb_quarter_plate": [t["peak_rss_mb"] for t in sq["tasks"]],
        "score_task_peak_rss_mb_whole_plate": [t["peak_rss_mb"] for t in stwo["tasks"]],
        "score_1task_peak_rss_mb": sone["peak_rss_mb"],
        "score_merge_seconds_quarter_whole": [round(sq["merge"]["seconds"], 1), round(stwo["merge"]["seconds"], 1)],
        "score_merge_peak_rss_mb_quarter_whole": [
            round(sq["merge"]["peak_rss_mb"]),
            round(stwo["merge"]["peak_rss_mb"]),
        ],
        "score_2tasks_tables_identical_to_1task": s["identical_to_one_task"],
    }
    for step in ("prepare", "score"):
        out[f"{step}_2tasks_scaling_efficiency"] = out[f"{step}_2tasks_speedup"] / 2
        out[f"{step}_2tasks_with_merge_scaling_efficiency"] = out[f"{step}_2tasks_with_merge_speedup"] / 2
    out["images"], out["cells"] = one["images"], cells
    out["cells_per_image"] = cells / one["images"]
    out["megapixels_per_image"] = mpix / one["images"]
    # the merges, as a line in the number of cells through the quarter and the whole plate
    for step, small, big in (("prepare", q, two), ("score", sq, stwo)):
        for what in ("seconds", "peak_rss_mb"):
            out[f"{step}_merge_{what}_line"] = _line(
                small["cells"], small["merge"][what], big["cells"], big["merge"][what]
            )
    return out


def screen(f: dict, plates: int, nodes: int, cores: int, wells: int = 384, fields: int = 9) -> dict:
    """A screen of ``plates`` plates × ``wells`` wells × ``fields`` fields (images like the measured ones) on
    ``nodes`` × ``cores``: share tasks of one core each at the measured 2-task rate per core (so the measured
    scaling efficiency is carried over; a cluster's shared file system may do worse), one store per plate, the
    plates' merges in parallel (a node each), merge time and memory on the line through the two sizes."""
    images = plates * wells * fields
    cells = images * f["cells_per_image"]
    cells_plate = cells / plates
    cores_all = nodes * cores
    prep_core = f["prepare_2tasks_mpix_per_s"] / 2
    score_core = f["score_2tasks_cells_per_s"] / 2
    waves = -(-plates // nodes)  # merges: one plate a node

    def merge(step: str, what: str) -> float:
        a, b = f[f"{step}_merge_{what}_line"]
        return a + b * cells_plate

    prep = images * f["megapixels_per_image"] / (prep_core * cores_all)
    score = cells / (score_core * cores_all)
    prep_merge, score_merge = waves * merge("prepare", "seconds"), waves * merge("score", "seconds")
    task_prep = max(f["prepare_task_peak_rss_mb_whole_plate"]) / 1024
    task_score = max(f["score_task_peak_rss_mb_whole_plate"]) / 1024
    return {
        "screen": f"{plates} plates × {wells} wells × {fields} fields = {images} images, ≈ {cells / 1e6:.1f} M cells "
        f"({cells_plate / 1e3:.0f} k a plate), {nodes} nodes × {cores} cores",
        "prepare_tasks_hours": prep / 3600,
        "prepare_merge_hours": prep_merge / 3600,
        "score_tasks_hours": score / 3600,
        "score_merge_hours": score_merge / 3600,
        "total_hours": (prep + prep_merge + score + score_merge) / 3600,
        "prepare_task_gb": task_prep,
        "score_task_gb": task_score,
        "node_gb_prepare": cores * task_prep,
        "node_gb_score": cores * task_score,
        "prepare_merge_gb": merge("prepare", "peak_rss_mb") / 1024,
        "score_merge_gb": merge("score", "peak_rss_mb") / 1024,
        "raw_tb": f["raw_mb"] / f["images"] * images / 1e6,
        "stores_tb": f["store_mb"] / f["cells"] * cells / 1e6,
    }


def table(rows: dict) -> str:
    lines = ["| figure | value |", "|---|---|"]
    for k, v in rows.items():
        lines.append(f"| {k} | {f'{v:.3g}' if isinstance(v, float) else v} |")
    return "\n".join(lines) + "\n"
