"""``score_run``: apply a trained run to every well of one or several crop stores — per-cell calls,
per-well affected fractions and graded readouts, plate QC and normalisation, hits, prototype
enrichment, dose–response — and write tables, figures and ``score.html``. It checks the inputs,
computes a ``ScoreResult`` (``protocell.score.compute``), then writes it (``protocell.score.write``,
which lists the files).

Reads the run folder (``protocell.artifacts``: checkpoint, prototypes, config, ``metrics.json`` →
``calibration`` for the cell call, ``affected_fraction.fit`` for the fractions) and the stores; writes
``score/`` and ``score.html`` under ``out`` (default: the run folder).

Every check on the inputs (run folder, calibration, channels, crop size, doses, wells in two stores,
``out``) runs before the network does; a cell with NaN or inf pixels is refused during the network's
pass, before anything is written. One score writes into ``out`` at a time (``out/.score.lock``: a second
is refused, naming the holder). ``score/`` is written under a temporary name and renamed into place
(``write``): the next run removes the temporary folder a SIGKILL left.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
from pathlib import Path

import pandas as pd

from protocell.artifacts import RunFolder
from protocell.config import broken_rule
from protocell.config_commands import SHARES, ScoreConfig, ScoreDataConfig
from protocell.data.plate_map import plate_wells
from protocell.data.store import CropStore
from protocell.errors import ConfigError, check
from protocell.fsutil import exclusive_lock, folder_problem, output_errors
from protocell.runs import Run, load_run
from protocell.score import shares
from protocell.score.cells import originals, refuse_nonfinite, run_network, score_stores
from protocell.score.compute import compute_score
from protocell.score.source import ScoreError, open_store, run_calibration, run_reference, run_status
from protocell.score.write import write_score
from protocell.score.zones import imaging_zones

log = logging.getLogger("protocell.score")
SCORE_LOCK = ".score.lock"  # held while a score writes into its out= folder (one writer per folder)


def _run(run) -> Run:
    return run if isinstance(run, Run) else load_run(run)


def _store_paths(run: Run, store) -> list:
    if store is None:
        return [run.dm.path]
    if isinstance(store, (str, Path)):
        return [store]
    paths = list(store)
    if not paths:
        raise ScoreError("data.path is an empty list: give a crop store, a list of them, or null for the run's own")
    return paths


def _inputs(run: Run | str | Path, store: str | Path | list | None) -> tuple:
    """Everything checked before any cell is scored: (Run, models, stores, wells); ``models``: "call" (the
    calibration) and "fraction" (the reference of ``protocell.evaluate.fraction``); ``store``: a folder, a list of
    them, or None (the run's own). With several stores the wells carry their ``store``; a plate/well in
    two stores is refused."""
    run = _run(run)
    status = run_status(RunFolder(run.dir).metrics)
    if status["status"] == "warning":
        log.warning(
            "score: the run's status is warning — its answer may be wrong (%s); the page says so on top",
            "; ".join(status["reasons"]),
        )
    models = {
        "call": run_calibration(RunFolder(run.dir).metrics),
        "fraction": run_reference(run.dir, run.exp),
        "status": status,
    }
    stores: list[CropStore] = []
    for path in _store_paths(run, store):
        s = open_store(path, run.store)
        run.dm.dataset_of(s, [])  # channels, by name (refused with the store's file)
        if any(o.root.resolve() == s.root.resolve() for o in stores):
            raise ScoreError(f"{s.root} is listed twice in data.path: list each store once")
        stores.append(s)
    per = [plate_wells(s, run.ref, run.exp) for s in stores]
    if len(stores) > 1:
        for s, w in zip(stores, per):
            w.insert(0, "store", str(s.root))
        both = pd.concat(per, ignore_index=True)
        twice = both[both.duplicated(["plate", "well"], keep=False)]
        if len(twice):
            r = twice.iloc[0]
            where = sorted(twice.loc[(twice["plate"] == r["plate"]) & (twice["well"] == r["well"]), "store"])
            more = twice.groupby(["plate", "well"]).ngroups - 1
            raise ScoreError(
                f"well {r['plate']}/{r['well']} is in {where[0]}/manifest.csv and in {where[1]}/manifest.csv"
                f"{f' (and {more} more wells)' if more else ''}: "
                "stores scored together must hold different wells — give their plates different names "
                "in the plate maps, or score them in separate calls"
            )
    return run, models, stores, pd.concat(per, ignore_index=True)


def score_share(
    run: Run,
    store: CropStore,
    out: Path,
    share: int,
    shards: int,
    batch_size=None,
    num_workers: int = 0,
    progress: bool = True,
    levelling=None,
) -> Path:
    """One task of a sharded score (``protocell.score.shares``): the network's pass over share ``share`` of
    ``shards`` of the store's cells, written to ``out/.score-shares/``; returns that file. ``levelling``: the
    store's plan (``score.level_imaging``; every task draws the same one from the same cells and seed)."""
    t0 = time.time()
    rows = originals(store)
    batch = int(batch_size or run.dm.eval_batch_size)
    ident = shares.identity(run.dir, store, batch, len(rows), shards, share, levelling is not None)
    mine = rows[slice(*ident["rows"])]
    result = run_network(run, store, mine, batch, num_workers, progress, levelling)
    refuse_nonfinite(store, mine, result)
    path = shares.write_share(out, result, ident, time.time() - t0)
    log.info(
        "score: share %d of %d (%d cells) → %s; when every share is done: score.py … shard=merge",
        share,
        shards,
        len(mine),
        path,
    )
    return path


def imaging_plans(run: Run, stores: list[CropStore], seed: int) -> dict:
    """``score.level_imaging``: for each store (by its folder), every plate's wells brought to that plate's
    blurriest and noisiest well's imaging (``protocell.data.levelling.estimate_plates``), label free, from the
    cells as the run reads them. Refused for a run that cannot read levelled cells."""
    from protocell.data.levelling import estimate_plates

    if run.dm.levelling is not None:
        raise ConfigError(
            "level_imaging=true: this run levelled its own store's imaging in training (data.level_imaging=true) and "
            "levels its own wells already; score it with level_imaging=false"
        )
    if run.dm.normalize != "cell":
        raise ConfigError(
            f"level_imaging=true needs a run trained with data.normalize=cell (this one: {run.dm.normalize}): the "
            "levelling reads and adds pixel noise on cells normalised one by one; score with level_imaging=false"
        )
    plans = {}
    for s in stores:
        t0 = time.time()
        channels = [s.channels.index(c) for c in run.dm.channels]
        plans[str(s.root)] = plan = estimate_plates(s, originals(s), channels, seed)
        log.info("score: imaging levelled per plate in %s (%.0f s): %s", s.root, time.time() - t0, plan.summary())
    return plans


def read_zones(run: Run, stores: list[CropStore], wells: pd.DataFrame, models: dict, on: bool, seed: int, batch: int):
    """``score.match_imaging`` (``on``): each plate zone's reference into ``models["zones"]``
    (``zones.imaging_zones``) — not for a run that levels its own wells' imaging in training
    (``data.level_imaging=true``: every well it reads is at its plate's worst imaging already, and it scores only
    its own store), which ``models["imaging_note"]`` says, hence the page and score.json."""
    if not on:
        return
    if run.dm.levelling is not None:
        models["imaging_note"] = (
            "not applied: this run levels its own wells' imaging in training (data.level_imaging=true), so every "
            "well is read at its plate's worst imaging already"
        )
        log.info("score: match_imaging %s", models["imaging_note"])
        return
    models["zones"] = imaging_zones(run, stores, wells, models["fraction"], seed, batch)


def score_store(
    run,
    store=None,
    batch_size: int | None = None,
    num_workers: int = 0,
    progress: bool = True,
    nearest: int = 3,
    match_imaging: bool = ScoreConfig.match_imaging,
    seed: int = ScoreConfig.seed,
) -> pd.DataFrame:
    """Score every cell of ``store`` (a crop-store folder, a list of them; default: the run's own) with
    ``run`` (a run folder or a loaded ``Run``): the ``cells.csv`` table (``tables.cell_table``), nothing written;
    ``match_imaging``, ``seed``: as score.py's (each plate zone's cells read with its zone's reference)."""
    run, models, stores, wells = _inputs(run, store)
    read_zones(run, stores, wells, models, match_imaging, seed, int(batch_size or run.dm.eval_batch_size))
    return score_stores(run, stores, wells, models, batch_size, num_workers, progress, nearest)


def score_run(
    run_dir,
    store=None,
    out=None,
    n_boot: int = ScoreConfig.bootstrap,
    nearest: int = ScoreConfig.nearest,
    top: int = ScoreConfig.top_prototypes,
    min_cells: int = ScoreConfig.min_cells,
    batch_size: int | None = ScoreDataConfig.batch_size,
    num_workers: int = ScoreDataConfig.num_workers,
    progress: bool = ScoreConfig.progress,
    log_wandb: bool = ScoreConfig.wandb,
    seed: int = ScoreConfig.seed,
    fdr: float = ScoreConfig.fdr,
    bscore: bool = ScoreConfig.bscore,
    shards: int = ScoreConfig.shards,
    shard: int | str = ScoreConfig.shard,
    level_imaging: bool = ScoreConfig.level_imaging,
    match_imaging: bool = ScoreConfig.match_imaging,
) -> Path:
    """Score ``store`` (a crop store, a list of them; default: the run's own) with the run in ``run_dir``
    (the defaults are score.py's: ``protocell.config_commands.ScoreConfig``);
    returns the ``score/`` folder. ``shard``: ``all`` (here, at once), a share 0 … ``shards`` − 1 (one task
    of a sharded score of one store: returns its file under ``out/.score-shares/``), or ``merge`` (the
    tables and page from the finished shares)."""
    options = {
        "bootstrap": n_boot,
        "nearest": nearest,
        "top_prototypes": top,
        "min_cells": min_cells,
        "fdr": fdr,
        "bscore": bscore,
        "shards": shards,
        "shard": shard,
        "level_imaging": level_imaging,
        "match_imaging": match_imaging,
    }
    broken = broken_rule(ScoreConfig, options)
    if broken is not None:  # score.py's ranges (protocell.config_commands), checked for a Python caller too
        raise ConfigError.invalid(*broken)
    problem = folder_problem(out) if out is not None else None
    check(problem is None, "out", str(out), f"a folder for score/ and score.html (created if absent); it {problem}")
    check(
        shard in SHARES or (isinstance(shard, int) and shard < shards),
        "shard",
        shard,
        f"all (every cell here), one share 0 … {shards - 1} (shards={shards}), or merge (the tables "
        "from the finished shares)",
    )
    t0 = time.time()
    run, models, stores, wells = _inputs(run_dir, store)
    out = Path(out) if out is not None else run.dir
    if shard != "all" and len(stores) > 1:
        raise ScoreError(
            f"shard={shard} with {len(stores)} stores in data.path: a sharded score takes one store a "
            "call — sweep data.path over the stores (score.py -m 'data.path=a,b' shards=N …) or use shard=all"
        )
    batch = int(batch_size or run.dm.eval_batch_size)
    if level_imaging and match_imaging:
        raise ConfigError(
            "level_imaging=true and match_imaging=true: two answers to one problem (a plate zone imaged otherwise) — "
            "level_imaging reads every well at its plate's worst imaging, match_imaging reads each zone against the "
            "run's control cells imaged as it is (on by default); to level the wells instead, add match_imaging=false"
        )
    if level_imaging:
        models["level_imaging"] = True
        if shard != "merge":  # a merge reads the shares' numbers: no pass, no plan
            models["levelling"] = imaging_plans(run, stores, seed)
    if isinstance(shard, int):  # a share task computes the network's numbers only: no zones
        plan = models.get("levelling", {}).get(str(stores[0].root))
        return score_share(run, stores[0], out, shard, shards, batch, num_workers, progress, plan)
    read_zones(run, stores, wells, models, match_imaging, seed, batch)
    result = (
        shares.read_shares(out, run.dir, stores[0], batch, len(originals(stores[0])), shards, level_imaging)
        if shard == "merge"
        else None
    )
    with output_errors(out, "out", ScoreError):
        out.mkdir(parents=True, exist_ok=True)
        with exclusive_lock(
            out / SCORE_LOCK,
            lambda holder: ScoreError(
                f"out={out} is being written by another score.py ({holder}); wait for it to finish, or give this one "
                "another out="
            ),
        ):
            remove_leftovers(out)
            scored = compute_score(
                run,
                models,
                stores,
                wells,
                n_boot=n_boot,
                nearest=nearest,
                top=top,
                min_cells=min_cells,
                batch_size=batch_size,
                num_workers=num_workers,
                progress=progress,
                seed=seed,
                fdr=fdr,
                bscore=bscore,
                result=result,
            )
            write_score(out, scored, t0)
            if result is not None:
                shares.remove_shares(out, shards)
    if log_wandb:
        if out.resolve() == run.dir.resolve():
            from protocell.tracking import log_to_saved_run

            log_to_saved_run(run.cfg, run.dir, keys=("score/",))
        else:
            log.info("W&B: not logged (score/ is outside the run folder, out=%s)", out)
    log.info(
        "score: %d cells, %d wells → %s (%.1f s)",
        len(scored.cells),
        len(scored.wells_out),
        out / "score.html",
        time.time() - t0,
    )
    return out / "score"


def remove_leftovers(out: Path) -> None:
    """The ``.score.partial-<pid>-…`` and ``.score.old-<pid>`` folders a score killed with SIGKILL left in
    ``out``. Called under ``out``'s lock, so no other score writes there; a folder whose process still
    runs on this host is kept all the same."""
    for path in out.glob(".score.*"):
        m = re.fullmatch(r"\.score\.(?:partial|old)-(\d+)(?:-\w+)?", path.name)
        if m and path.is_dir() and not _alive(int(m.group(1))):
            shutil.rmtree(path, ignore_errors=True)
            log.info("score: removed %s, left by a score that was killed", path)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
