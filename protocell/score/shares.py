"""Score in shares (a cluster): the network's pass over a store split into contiguous shares of its cells,
one task each, then one merge that writes the tables and ``score.html``.

    python score.py -m hydra/launcher=slurm_cpu run=<run> data.path=<store> shards=N 'shard=range(N)'
    python score.py run=<run> data.path=<store> shards=N shard=merge

A share is a run of whole batches of the store's original cells in manifest order (share k: batches
k·B/N … (k+1)·B/N − 1 of B), so its cells come from neighbouring shards of the store (each task reads
its part of the store only) and every batch is one of the batches a single process would form: the
per-cell numbers are those of ``shard=all`` bit for bit (same threads). A task writes
``<out>/.score-shares/<k>-of-<N>.npz`` — per cell the exposed-class score, the minimum distance to each
prototype, the raw brightness and whether its pixels are finite, plus what it was computed from (run
checkpoint, store manifest, batch size, the share's rows) — atomically, and ``<k>-of-<N>.json`` (its cells,
seconds, peak RSS, host), and nothing else. The merge
refuses, naming the shares, until every file is there and was computed from this run, this store and
this batch size; then it scores exactly as one process does from those numbers and removes the files.
Each task's memory is that of the pass (flat in the number of cells); the merge holds P + 4 numbers a
cell and the tables.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from protocell.artifacts import RunFolder
from protocell.data.store import CropStore
from protocell.fsutil import atomic_write, output_errors
from protocell.score.source import ScoreError

SHARES = ".score-shares"
ARRAYS = ("cell_id", "score", "min_d", "intensity", "finite")


def share_rows(n: int, batch: int, shards: int, share: int) -> slice:
    """Share ``share`` of ``shards`` over ``n`` cells in batches of ``batch``: contiguous whole batches."""
    n_batches = -(-n // batch)
    b0, b1 = share * n_batches // shards, (share + 1) * n_batches // shards
    return slice(min(n, b0 * batch), min(n, b1 * batch))


def share_path(out: Path, share: int, shards: int) -> Path:
    return Path(out) / SHARES / f"{share}-of-{shards}.npz"


def identity(
    run_dir: Path, store: CropStore, batch: int, n: int, shards: int, share: int, levelled: bool = False
) -> dict:
    """What a share's numbers were computed from: the checkpoint and prototypes (path, size, mtime), the store
    (folder and manifest hash), the batch size, the rows and whether the imaging was levelled
    (``level_imaging``); the merge takes a share only when they match."""
    folder = RunFolder(run_dir)
    files = {
        f.name: [str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns]
        for f in (folder.checkpoint, folder.prototypes)
    }
    rows = share_rows(n, batch, shards, share)
    return {
        "run": files,
        "store": str(store.root.resolve()),
        "manifest_sha1": store.info.get("manifest_sha1"),
        "batch_size": batch,
        "cells": n,
        "shards": shards,
        "share": share,
        "rows": [rows.start, rows.stop],
        "level_imaging": bool(levelled),
    }


def write_share(out: Path, result: dict, ident: dict, seconds: float) -> Path:
    """The share's numbers (``.npz``), then a report beside it (``.json``: cells, seconds, peak RSS, host)."""
    import resource
    import socket

    path = share_path(out, ident["share"], ident["shards"])
    with output_errors(out, "out", ScoreError):
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {k: np.asarray(result[k]) for k in ARRAYS}
        atomic_write(path, lambda fh: np.savez(fh, identity=np.array(json.dumps(ident, sort_keys=True)), **arrays))
        peak = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
        report = {
            "share": ident["share"],
            "shards": ident["shards"],
            "cells": len(arrays["cell_id"]),
            "seconds": round(seconds, 2),
            "peak_rss_mb": round(peak / 1024, 1),
            "host": socket.gethostname(),
        }
        atomic_write(path.with_suffix(".json"), lambda fh: fh.write(json.dumps(report, indent=1).encode()))
    return path


def read_shares(
    out: Path, run_dir: Path, store: CropStore, batch: int, n: int, shards: int, levelled: bool = False
) -> dict:
    """The per-cell numbers of every share, concatenated in manifest order (``infer``'s dict); refused,
    naming the missing or stale shares and the command, unless all ``shards`` are there and current."""
    missing, stale, parts = [], [], []
    for k in range(shards):
        path = share_path(out, k, shards)
        want = identity(run_dir, store, batch, n, shards, k, levelled)
        try:
            with np.load(path, allow_pickle=False) as z:
                got = json.loads(str(z["identity"]))
                part = {a: z[a] for a in ARRAYS}
        except FileNotFoundError:
            missing.append(k)
            continue
        except (OSError, ValueError, KeyError):  # a damaged file: scored again
            stale.append(k)
            continue
        if (
            got != json.loads(json.dumps(want, sort_keys=True))
            or len(part["cell_id"]) != want["rows"][1] - want["rows"][0]
        ):
            stale.append(k)
            continue
        parts.append(part)
    if missing or stale:
        redo = sorted(missing + stale)
        stale_why = (
            "scored from another run checkpoint, store, batch size, share count or level_imaging, or damaged: share(s) "
            f"{', '.join(map(str, stale))}"
        )
        why = "; ".join(
            ([f"not scored: share(s) {', '.join(map(str, missing))}"] if missing else [])
            + ([stale_why] if stale else [])
        )
        raise ScoreError(
            f"out={out}: {len(redo)} of {shards} shares are not ready ({why}; in {out / SHARES}): run "
            f"the same score command with shard={redo[0]}{''.join(f', shard={k}' for k in redo[1:])} "
            "(a multirun: shard=" + ",".join(map(str, redo)) + "), then shard=merge; nothing was written"
        )
    return {a: np.concatenate([p[a] for p in parts]) for a in ARRAYS}


def remove_shares(out: Path, shards: int) -> None:
    """The share files a merge has used (the folder too, once empty)."""
    for k in range(shards):
        share_path(out, k, shards).unlink(missing_ok=True)
        share_path(out, k, shards).with_suffix(".json").unlink(missing_ok=True)
    try:
        (Path(out) / SHARES).rmdir()
    except OSError:
        pass
