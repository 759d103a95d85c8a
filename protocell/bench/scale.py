"""A screen at scale on this machine: prepare and score in shares, measured (``make bench`` → ``scale``).

    python -m protocell.bench.scale                       # 96 wells × 4 fields × 3 channels at 1080², ≥ 10⁵ cells
    python -m protocell.bench.scale --quick               # 8 wells × 2 fields at 512²: the wiring, minutes
    python -m protocell.bench.scale --data /fast/disk     # where the raw plate is written (default
                                                          # outputs/bench/scale_data)

The plate: the project's own synthetic field generator (``protocell.data.synthetic_render.render_field``:
irregular cells with nuclei, cortical actin, fibres and puncta, per-well gain, optics blur, Poisson and
read noise) at ``--size``² pixels, a third channel (``mito``: the actin smoothed, its own noise), uint16
TIFFs, written once (kept under ``--data`` for the next run; the crop stores are removed after use).
Layout of a 96-well plate: column 1 ``Ref`` controls, column 12 ``Exp`` controls, columns 2–11 a compound
at ten doses (no condition: scored), eight replicate rows. ``--wells``/``--fields`` take the first wells.

Measured, each step a fresh process (threads and workers set; ``OMP_NUM_THREADS=1`` everywhere):

- first, the machine's own ceiling (``protocell.bench.ceiling``): a pure-CPU loop and an image-filter
  kernel in one process and in two at once — what two tasks can gain here at all (``machine_*`` rows);

- prepare of the plate in one task with 1 worker, in one task with 2 workers, and in 2 share tasks of
  1 worker each (``prepare.py -m hydra/launcher=local shards=2 shard=0,1``) + the merge: seconds,
  MPix/s (image pixels H×W per second) and per core, the peak RSS of each task (any of its processes),
  the merge's seconds and RSS, and the 2-task store compared with the 1-task store file by file;
- the same 2 share tasks + merge on a quarter of the plate (every 4th well): a task's peak RSS at two
  plate sizes (it must not grow), the merge's seconds and RSS at two sizes (a line in the number of cells);
- score of the whole store (a tiny run trained on the built-in plate scores it: ``score_dose``'s tiny
  training) in one task of one thread and in 2 share tasks of one thread + the merge: cells/s, RSS per task,
  merge seconds, the two score tables compared byte for byte; the same in shares on the quarter plate;
- from these, the arithmetic of a screen (``--screen-plates`` plates of 384 wells × 9 fields on
  ``--nodes`` nodes of ``--cores-per-node`` cores): wall time, memory per node, disk.

Prints a table and writes ``<out>/scale.json`` and ``scale.md`` (``--out``, default outputs/bench/scale).
The 2-core machine this was written on was shared with training runs: figures measured under load are
low and noisy; the ratios (2 tasks against 1) are what the bar reads.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from protocell.bench.prepare_bench import _WRAPPER
from protocell.fsutil import atomic_write

ROOT = Path(__file__).resolve().parents[2]
CHANNELS = ["actin", "nuclei", "mito"]
DOSES = [0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0]  # columns 2–11
FULL = {"wells": 96, "fields": 4, "size": 1080}
QUICK = {"wells": 8, "fields": 2, "size": 512}
GENERATOR_VERSION = 2


# ----------------------------------------------------------------------------- the plate


def plate_layout(n_wells: int) -> list[dict]:
    """The first ``n_wells`` wells of a 96-well plate in row order: well, condition, compound, dose."""
    wells = []
    for r in "ABCDEFGH":
        for col in range(1, 13):
            cond = {1: "Ref", 12: "Exp"}.get(col, "")
            dose = "" if cond else DOSES[col - 2]
            wells.append({"well": f"{r}{col:02d}", "condition": cond, "compound": "" if cond else "C1", "dose": dose})
    # controls of both kinds among the first wells, whatever n_wells: order by column pairs (1, 12), then the rest
    wells.sort(key=lambda w: (0 if w["condition"] else 1, w["well"][1:], w["well"][0]))
    return wells[:n_wells]


def _write_field(job: tuple) -> None:
    """One field: ``render_field`` (actin, nuclei) and a third channel; written as (3, H, W) uint16."""
    import tifffile
    from scipy import ndimage as ndi

    from protocell.data.synthetic import DoseSeries, WellSpec
    from protocell.data.synthetic_render import render_field

    path, size, seed, well_index, field, cond, dose = job
    spec = WellSpec(field_size=size, cells_per_field=int(600 * (size / 1080) ** 2), cell_radius=(13.0, 18.0))
    rng_well = np.random.default_rng([seed, well_index])
    gain = float(rng_well.uniform(0.8, 1.2))
    rng = np.random.default_rng([seed, well_index, field])
    render = {}
    if not cond:  # a dose well: its fraction from the curve, no condition
        ds = DoseSeries(doses=DOSES, ec50=1.0)
        p = ds.fraction(float(dose))
        render = {"affected": p, "confound": float(np.clip((p - ds.bottom) / (ds.top - ds.bottom), 0, 1))}
    img, _, _, _ = render_field(rng, spec, cond or "Ref", gain, **render)
    actin = img[0].astype(np.float32) - 100
    mito = ndi.gaussian_filter(actin, 2.5) * 0.6 + rng.normal(100, 6, actin.shape)
    out = np.concatenate([img, np.clip(mito, 0, 65535).astype(np.uint16)[None]])
    atomic_write(
        path, lambda fh: tifffile.imwrite(fh, out, metadata={"axes": "CYX"}, photometric="minisblack"), fsync=False
    )


def write_plate(data: Path, wells: int, fields: int, size: int, seed: int = 0, workers: int = 2) -> Path:
    """The raw plate (cached: a folder per parameter set, complete once ``plate_map.csv`` exists)."""
    key = hashlib.sha1(json.dumps([GENERATOR_VERSION, wells, fields, size, seed]).encode()).hexdigest()[:8]
    folder = data / f"plate-{wells}w{fields}f{size}px-{key}"
    if (folder / "plate_map.csv").exists():
        return folder
    (folder / "fields").mkdir(parents=True, exist_ok=True)
    rows, jobs = [], []
    for i, w in enumerate(plate_layout(wells)):
        for f in range(fields):
            name = f"fields/plate1_{w['well']}_f{f}.tif"
            rows.append(
                {
                    "image": name,
                    "plate": "plate1",
                    "well": w["well"],
                    "field": f,
                    "condition": w["condition"],
                    "compound": w["compound"],
                    "dose": w["dose"],
                }
            )
            if not (folder / name).exists():
                jobs.append((folder / name, size, seed, i, f, w["condition"], w["dose"]))
    if jobs:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(workers) as pool:
            for _ in pool.imap_unordered(_write_field, jobs):
                pass
    table = pd.DataFrame(rows)
    quarter = table[table["well"].isin([w["well"] for w in plate_layout(wells)[::4]])]  # every 4th well
    atomic_write(folder / "plate_map_quarter.csv", lambda fh: fh.write(quarter.to_csv(index=False).encode()))
    atomic_write(folder / "plate_map.csv", lambda fh: fh.write(table.to_csv(index=False).encode()))
    return folder


# ----------------------------------------------------------------------------- runs


def timed(cmd: list[str], env: dict) -> dict:
    """Run ``cmd`` in a fresh wrapper process: seconds and the peak RSS of its largest process (MB)."""
    res = subprocess.run([sys.executable, "-c", _WRAPPER, *cmd], capture_output=True, text=True, env=env, cwd=ROOT)
    rec = json.loads(res.stdout.strip().splitlines()[-1])
    if rec["rc"] != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{rec['stderr']}")
    return {"seconds": rec["seconds"], "peak_rss_mb": rec["maxrss_kb"] / 1024}


def prepare_args(plate: Path, plate_map: str, store: Path, logs: Path) -> list[str]:
    return [
        f"input={plate}",
        f"plate_map={plate / plate_map}",
        f"output={store}",
        "progress=false",
        f"channels.names=[{','.join(CHANNELS)}]",
        "channels.main=actin",
        "channels.second=nuclei",
        f"hydra.run.dir={logs}",
        f"hydra.sweep.dir={logs}",
    ]


def files_digest(store: Path) -> str:
    """One hash of every shard file, the manifest and store.json without its output folder."""
    h = hashlib.sha1()
    for p in sorted((store / "shards").glob("*.npy")) + [store / "manifest.csv"]:
        h.update(p.name.encode())
        with open(p, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 24), b""):
                h.update(block)
    info = json.loads((store / "store.json").read_text())
    info["prepare"]["config"].pop("output", None)
    h.update(json.dumps(info, sort_keys=True).encode())
    return h.hexdigest()


def disk_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def prepare_in_shares(plate: Path, plate_map: str, store: Path, logs: Path, env: dict) -> dict:
    """2 share tasks of one worker (hydra/launcher=local) and the merge: wall seconds of the tasks, each task's
    report (seconds, peak RSS), the merge's seconds and peak RSS, cells."""
    py = [sys.executable, "prepare.py"]
    args = prepare_args(plate, plate_map, store, logs)
    tasks = timed(
        [
            *py,
            "-m",
            "hydra/launcher=local",
            "hydra.launcher.timeout_min=1440",
            *args,
            "workers=1",
            "shards=2",
            "shard=0,1",
        ],
        env,
    )
    merge = timed([*py, *args, "workers=1", "shards=2", "shard=merge"], env)
    summary = json.loads((store / "prepare_summary.json").read_text())
    return {
        "seconds": tasks["seconds"],
        "tasks": summary["shares"],
        "merge": merge,
        "cells": summary["cells"],
        "augmented": summary["augmented"],
        "images": summary["images"],
        "megapixels": summary["megapixels"],
    }


def measure_prepare(plate: Path, work: Path, env: dict) -> tuple[dict, Path, Path]:
    """The prepare runs; returns (figures, the 2-task store, the quarter-plate store)."""
    py = [sys.executable, "prepare.py"]
    res = {}
    quarter = work / "store_quarter"
    res["quarter_two_tasks"] = prepare_in_shares(plate, "plate_map_quarter.csv", quarter, work / "logs_q", env)

    two_workers = work / "store_2w"
    res["one_task_two_workers"] = timed(
        [*py, *prepare_args(plate, "plate_map.csv", two_workers, work / "logs_2w"), "workers=2"], env
    )
    shutil.rmtree(two_workers)

    one = work / "store_1t"
    r = timed([*py, *prepare_args(plate, "plate_map.csv", one, work / "logs_1t"), "workers=1"], env)
    s1 = json.loads((one / "prepare_summary.json").read_text())
    res["one_task"] = {
        **r,
        "cells": s1["cells"],
        "augmented": s1["augmented"],
        "images": s1["images"],
        "megapixels": s1["megapixels"],
        "store_mb": disk_mb(one),
    }

    two = work / "store_2t"
    res["two_tasks"] = prepare_in_shares(plate, "plate_map.csv", two, work / "logs_2t", env)
    res["identical_to_one_task"] = files_digest(two) == files_digest(one)
    shutil.rmtree(one)
    return res, two, quarter


def train_tiny_run(work: Path, env: dict) -> Path:
    """A run to score with: ``experiments/score_dose.py``'s tiny training (a minute), kept under ``work``."""
    run = work / "run"
    if (run / "metrics.json").exists():
        return run
    sys.path.insert(0, str(ROOT / "experiments"))
    from score_dose import TINY

    # calibration=noisy_label: score reads the noisy-label calibration (docs/score.md)
    subprocess.run(
        [
            sys.executable,
            "train.py",
            "plate=dose_series",
            f"hydra.run.dir={run}",
            "threads=1",
            "explain=false",
            "trainer.enable_progress_bar=false",
            "calibration=noisy_label",
            *TINY,
        ],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    return run


def score_in_shares(py: list[str], store: Path, out: Path, logs: Path, env: dict) -> dict:
    tasks = timed(
        [
            *py[:2],
            "-m",
            "hydra/launcher=local",
            "hydra.launcher.timeout_min=1440",
            *py[2:],
            f"data.path={store}",
            f"out={out}",
            "shards=2",
            "shard=0,1",
            f"hydra.sweep.dir={logs}",
        ],
        env,
    )
    reports = [json.loads(p.read_text()) for p in sorted((out / ".score-shares").glob("*.json"))]
    merge = timed([*py, f"data.path={store}", f"out={out}", "shards=2", "shard=merge"], env)
    return {"seconds": tasks["seconds"], "tasks": reports, "merge": merge, "cells": sum(r["cells"] for r in reports)}


def measure_score(run: Path, store: Path, quarter: Path, work: Path, env: dict) -> dict:
    py = [sys.executable, "score.py", f"run={run}", "threads=1", "progress=false", "wandb=false"]
    res = {"quarter_two_tasks": score_in_shares(py, quarter, work / "score_q", work / "logs_score_q", env)}
    one = timed([*py, f"data.path={store}", f"out={work / 'score_1t'}"], env)
    cells = len(pd.read_csv(work / "score_1t" / "score" / "cells.csv", usecols=["cell_id"]))
    res["one_task"] = {**one, "cells": cells}
    res["two_tasks"] = score_in_shares(py, store, work / "score_2t", work / "logs_score_2t", env)
    res["identical_to_one_task"] = all(
        (work / "score_2t" / "score" / f"{t}.csv").read_bytes()
        == (work / "score_1t" / "score" / f"{t}.csv").read_bytes()
        for t in ("cells", "wells", "treatments", "prototype_enrichment")
    )
    return res


# ----------------------------------------------------------------------------- figures


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


def run(
    quick: bool = False,
    data: Path | None = None,
    out: Path | None = None,
    wells: int | None = None,
    fields: int | None = None,
    size: int | None = None,
    plates: int = 20,
    nodes: int = 50,
    cores: int = 32,
) -> dict:
    dims = {
        **(QUICK if quick else FULL),
        **{k: v for k, v in (("wells", wells), ("fields", fields), ("size", size)) if v is not None},
    }
    data = Path(data) if data else ROOT / "outputs" / "bench" / "scale_data"
    out = Path(out) if out else ROOT / "outputs" / "bench" / "scale"
    work = out / "work"
    shutil.rmtree(work / "store_2t", ignore_errors=True)
    for name in ("store_quarter", "store_1t", "store_2w", "score_q", "score_1t", "score_2t"):
        shutil.rmtree(work / name, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PROTOCELL_CACHE": str(work / "cache")}
    t = time.perf_counter()
    plate = write_plate(data, dims["wells"], dims["fields"], dims["size"])
    generate = time.perf_counter() - t
    from protocell.bench.ceiling import run as ceiling

    ceiling_figures = ceiling()  # what 2 processes can gain here at all, before protocell's tasks
    p, store, quarter = measure_prepare(plate, work, env)
    run_dir = train_tiny_run(work, env)
    s = measure_score(run_dir, store, quarter, work, env)
    f = {**figures(p, s, plate), **{f"machine_{k}": v for k, v in ceiling_figures.items()}}
    result = {
        "machine": _machine(),
        "dims": dims,
        "generate_seconds": generate,
        "plate": str(plate),
        "prepare": p,
        "score": s,
        "scale": f,
        "at_scale": screen(f, plates, nodes, cores),
    }
    for name in ("store_quarter", "store_2t", "score_q", "score_1t", "score_2t"):
        shutil.rmtree(work / name, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "scale.json").write_text(json.dumps(result, indent=2, default=str))
    md = (
        f"Machine: {result['machine']}\n\nPlate: {dims} ({plate})\n\n"
        + table(f)
        + f"\nA screen ({plates} plates, {nodes} nodes × {cores} cores), from these figures:\n\n"
        + table(result["at_scale"])
    )
    (out / "scale.md").write_text(md)
    return result


def _machine() -> str:
    load = os.getloadavg()
    cpu = "unknown"
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, load average at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="8 wells × 2 fields at 512²: the wiring")
    ap.add_argument("--data", type=Path, help="folder for the raw plate (kept for the next run)")
    ap.add_argument("--out", type=Path, help="folder for scale.json / scale.md (default outputs/bench/scale)")
    ap.add_argument("--wells", type=int)
    ap.add_argument("--fields", type=int)
    ap.add_argument("--size", type=int)
    ap.add_argument("--screen-plates", type=int, default=20)
    ap.add_argument("--nodes", type=int, default=50)
    ap.add_argument("--cores-per-node", type=int, default=32)
    a = ap.parse_args(argv)
    res = run(a.quick, a.data, a.out, a.wells, a.fields, a.size, a.screen_plates, a.nodes, a.cores_per_node)
    print((Path(a.out or ROOT / "outputs" / "bench" / "scale") / "scale.md").read_text())
    print(json.dumps(res["scale"], indent=1, default=str))
    return res


if __name__ == "__main__":
    main()
