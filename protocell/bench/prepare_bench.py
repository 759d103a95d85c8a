"""Benchmark of ``prepare`` on one large synthetic plate image: throughput and peak memory.

``run(quick=False)`` writes (once, cached under outputs/bench/) a 20000×20000×2 uint16 tiled TIFF
— ``quick=True``: 4000×4000 — streamed tile by tile, so writing it needs little memory either;
then runs ``prepare.py`` on it in a child process (defaults: watershed, 2 workers, ×2 offline
augmentation) and returns ``{"mpix_per_s", "peak_rss_mb", "cells", "seconds", ...}``. Peak RSS is
the largest resident set of any process of the run (the prepare process or a worker), read with
``getrusage(RUSAGE_CHILDREN)`` in a fresh wrapper process that has no other children.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from protocell.fsutil import atomic_write

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "outputs" / "bench"
BLOCK = 512  # TIFF tile edge; 4×4 cells per block


def _block(ty: int, tx: int, channel: int, seed: int = 0) -> np.ndarray:
    """One (BLOCK, BLOCK) uint16 block of one channel; cells are drawn from a per-block seed, so
    both channels agree and any block can be rendered alone."""
    rng = np.random.default_rng([seed, ty, tx])
    yy, xx = np.mgrid[0:BLOCK, 0:BLOCK].astype(np.float32)
    img = np.zeros((BLOCK, BLOCK), np.float32)
    step = BLOCK // 4
    for i in range(4):
        for j in range(4):
            r = rng.uniform(13, 19)
            cy = i * step + step / 2 + rng.uniform(-12, 12)
            cx = j * step + step / 2 + rng.uniform(-12, 12)
            e = rng.uniform(0.75, 1.0)
            d2 = ((yy - cy) / r) ** 2 + ((xx - cx) / (r * e)) ** 2
            if channel == 0:
                img += np.where(d2 <= 1, 0.35 + 0.5 * np.exp(-((np.sqrt(d2) - 0.92) ** 2) / 0.01), 0)
            else:
                img += np.where(d2 <= 0.16, 0.9, 0)
    noise = np.random.default_rng([seed, ty, tx, channel + 7]).normal(0, 0.02, img.shape)
    return np.clip((img + 0.05 + noise) * 1500 + 100, 0, 65535).astype(np.uint16)


def write_plate_image(path: Path, size: int) -> Path:
    """A (2, size, size) uint16 tiled TIFF, written block by block (cached: kept when present)."""
    import tifffile

    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    n = -(-size // BLOCK)

    def blocks():
        for c in range(2):
            for ty in range(n):
                for tx in range(n):
                    yield _block(ty, tx, c)

    return atomic_write(
        path,
        lambda fh: tifffile.imwrite(
            fh,
            blocks(),
            shape=(2, size, size),
            dtype=np.uint16,
            tile=(BLOCK, BLOCK),
            metadata={"axes": "CYX"},
            photometric="minisblack",
        ),
        fsync=False,
    )


_WRAPPER = """
import json, resource, subprocess, sys, time
t = time.perf_counter()
proc = subprocess.run(sys.argv[1:], capture_output=True, text=True)
seconds = time.perf_counter() - t
print(json.dumps({"rc": proc.returncode, "seconds": seconds, "stderr": proc.stderr[-3000:],
                  "maxrss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


def run(quick: bool = False) -> dict:
    size = 4000 if quick else 20000
    image_dir = OUT / f"prepare_plate_{size}"
    image = write_plate_image(image_dir / "bench_A01_f0.tif", size)
    store = OUT / f"prepare_store_{size}"
    shutil.rmtree(store, ignore_errors=True)  # measure a full run, not a resumed one
    cmd = [
        sys.executable,
        str(ROOT / "prepare.py"),
        f"input={image_dir}",
        r"pattern='bench_(?P<well>[A-P]\d\d)_f(?P<field>\d+)\.tif'",
        f"output={store}",
        "progress=false",
        f"hydra.run.dir={OUT / 'prepare_run'}",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    res = subprocess.run([sys.executable, "-c", _WRAPPER, *cmd], capture_output=True, text=True, env=env, cwd=ROOT)
    rec = json.loads(res.stdout.strip().splitlines()[-1])
    if rec["rc"] != 0:
        raise RuntimeError(f"prepare failed on {image}:\n{rec['stderr']}")
    summary = json.loads((store / "prepare_summary.json").read_text())
    mpix = size * size / 1e6
    return {
        "mpix_per_s": round(mpix / rec["seconds"], 3),
        "peak_rss_mb": round(rec["maxrss_kb"] / 1024, 1),
        "cells": summary["cells"],
        "seconds": round(rec["seconds"], 1),
        "image": f"{size}x{size}x2 uint16",
        "augmented": summary["augmented"],
        "workers": 2,
        "cpu_count": os.cpu_count(),
    }


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
