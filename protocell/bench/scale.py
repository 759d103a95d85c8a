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
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from protocell.bench.scale_figures import figures, screen, table
from protocell.bench.scale_measure import ROOT, Step, measure_prepare, measure_score, no_step, train_tiny_run
from protocell.bench.scale_plate import write_plate

FULL = {"wells": 96, "fields": 4, "size": 1080}
QUICK = {"wells": 8, "fields": 2, "size": 512}


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
    step: Step = no_step,
) -> dict:
    """Generate (or reuse) the plate and measure it; ``step`` is told each measured run's figures as it
    finishes (``make bench`` records them, so a bench stopped during ``scale`` keeps them)."""
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
    step("machine_ceiling", {"generate_seconds": generate, **ceiling_figures})
    p, store, quarter = measure_prepare(plate, work, env, step)
    run_dir = train_tiny_run(work, env)
    s = measure_score(run_dir, store, quarter, work, env, step)
    f = {**figures(p, s, plate), **{f"machine_{k}": v for k, v in ceiling_figures.items()}}
    result: dict[str, Any] = {
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
