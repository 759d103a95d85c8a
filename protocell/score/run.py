"""``score_run``: apply a trained run to every well of one or several crop stores — per-cell calls,
per-well affected fractions and graded readouts, plate QC and normalisation, hits, prototype
enrichment, dose–response — and write tables, figures and ``score.html``.

Reads the run folder (``protocell.artifacts``: checkpoint, prototypes, config, ``metrics.json`` →
``calibration`` for the cell call, ``affected_fraction.fit`` for the fractions) and the stores; writes,
under ``out`` (default: the run folder)::

    score/cells.csv                 one row per cell (tables.cell_table)
    score/wells.csv                 one row per well: fraction + CI over cells, graded readouts, per-plate
                                    normalisation, diagnostics, flags
    score/well_table.csv, .parquet  the same wells for downstream tools (export: Metadata_*, Protocell_*, Cells_*)
    score/treatments.csv            replicate wells pooled: fraction + CI over wells
    score/qc.csv                    per plate × readout: Z′, robust Z′, SSMD, signal window (screen, plates)
    score/hits.csv                  per treatment: against the reference wells, p and BH q (hits)
    score/trends.csv                per plate: outer ring against inner wells, row/column effects
    score/plate_effects.csv         several plates: the same controls on every plate
    score/prototype_enrichment.csv  per well and treatment × prototype: similarity − reference, CI
    score/dose_response.csv         per compound (and plate): 4PL of the fraction (and top prototypes) vs log dose
    score/score.json                what was scored, how, and the ground-truth checks where known
    score/plate_<plate>.png, dose_<compound>.png, dose_<compound>_prototypes.png, dose_<compound>_plates.png,
    enrichment.png
    score.html                      all of it on one page

Every check on the inputs (run folder, calibration, channels, crop size, doses, wells in two stores,
``out``) runs before the network does; a cell with NaN or inf pixels is refused during the network's
pass, before anything is written. One score writes into ``out`` at a time (``out/.score.lock``: a second
is refused, naming the holder). The ``score/`` folder is written under a temporary name and renamed into
place, and ``score.html`` atomically after it: an interrupted run leaves the previous results whole, and
the next run removes the temporary folder a SIGKILL left.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

from protocell.artifacts import RunFolder, positive_class
from protocell.data.store import CropStore
from protocell.errors import check
from protocell.fraction import ASSUMPTION, ESTIMATOR
from protocell.fsutil import atomic_write_json, atomic_write_text, exclusive_lock, folder_problem, output_errors
from protocell.runs import Run, load_run
from protocell.score import shares
from protocell.score.dose import dose_response
from protocell.score.export import METADATA, well_export, write_well_table
from protocell.score.infer import infer
from protocell.score.plots import (
    plot_compound,
    plot_compound_plates,
    plot_compound_prototypes,
    plot_enrichment,
    plot_plate,
    safe_name,
)
from protocell.score.report import score_page
from protocell.score.screen import screen
from protocell.score.source import (
    ScoreError,
    empty_wells,
    is_mixture,
    open_store,
    plate_wells,
    run_calibration,
    run_reference,
    run_status,
)
from protocell.score.tables import (
    cell_table,
    enrichment,
    similarities,
    top_prototypes,
    treatment_table,
    well_readouts,
    well_table,
)

log = logging.getLogger("protocell.score")
TOLERANCE = 0.08        # the bar's per-well tolerance, reported in the ground-truth checks
SCORE_LOCK = ".score.lock"     # held while a score writes into its out= folder (one writer per folder)


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


def _inputs(run, store):
    """Everything checked before any cell is scored: (Run, models, stores, wells); ``models``: "call" (the
    calibration) and "fraction" (the reference of ``protocell.fraction``); ``store``: a folder, a list of
    them, or None (the run's own). With several stores the wells carry their ``store``; a plate/well in
    two stores is refused."""
    run = _run(run)
    status = run_status(RunFolder(run.dir).metrics)
    if status["status"] == "warning":
        log.warning("score: the run's status is warning — its answer may be wrong (%s); the page says so on top",
                    "; ".join(status["reasons"]))
    models = {"call": run_calibration(RunFolder(run.dir).metrics), "fraction": run_reference(run.dir, run.exp),
              "status": status}
    stores: list[CropStore] = []
    for path in _store_paths(run, store):
        s = open_store(path, run.dm.store)
        run.dm.dataset_of(s, [])                      # channels, by name (refused with the store's file)
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
            raise ScoreError(f"well {r['plate']}/{r['well']} is in {where[0]}/manifest.csv and in {where[1]}/manifest.csv"
                             f"{f' (and {more} more wells)' if more else ''}: "
                             "stores scored together must hold different wells — give their plates different names "
                             "in the plate maps, or score them in separate calls")
    return run, models, stores, pd.concat(per, ignore_index=True)


def _own(run: Run, store: CropStore) -> bool:
    return store.root.resolve() == Path(run.dm.path).resolve()


def _score_cells(run: Run, store: CropStore, wells: pd.DataFrame, models: dict, batch_size=None,
                 num_workers: int = 0, progress: bool = True, nearest: int = 3, result: dict | None = None) -> pd.DataFrame:
    """The cells table; ``result``: the network's numbers for every original cell, already computed (the
    shares of a sharded score, ``protocell.score.shares``), else computed here."""
    rows = _originals(store)
    if result is None:
        result = _infer(run, store, rows, batch_size, num_workers, progress)
    refuse_nonfinite(store, rows, result)
    run_split = None
    if _own(run, store):                              # the run's own cells: say which it trained on
        run_split = np.where(run.dm.splits[rows] == "unlabelled", "", run.dm.splits[rows]).astype(str)
    return cell_table(store.manifest.iloc[rows], wells, result, models, nearest, run_split)


def _originals(store: CropStore) -> np.ndarray:
    return np.flatnonzero(store.manifest["aug_of"].to_numpy() < 0)


def _infer(run: Run, store: CropStore, rows: np.ndarray, batch_size, num_workers: int, progress: bool) -> dict:
    return infer(run.net, run.dm.dataset_of(store, rows), positive_class(run.class_names),
                 int(batch_size or run.dm.eval_batch_size), int(num_workers), progress)


def score_share(run: Run, store: CropStore, out: Path, share: int, shards: int, batch_size=None, num_workers: int = 0,
                progress: bool = True) -> Path:
    """One task of a sharded score (``protocell.score.shares``): the network's pass over share ``share`` of
    ``shards`` of the store's cells, written to ``out/.score-shares/``; returns that file."""
    t0 = time.time()
    rows = _originals(store)
    batch = int(batch_size or run.dm.eval_batch_size)
    ident = shares.identity(run.dir, store, batch, len(rows), shards, share)
    mine = rows[slice(*ident["rows"])]
    result = _infer(run, store, mine, batch, num_workers, progress)
    refuse_nonfinite(store, mine, result)
    path = shares.write_share(out, result, ident, time.time() - t0)
    log.info("score: share %d of %d (%d cells) → %s; when every share is done: score.py … shard=merge", share, shards,
             len(mine), path)
    return path


def refuse_nonfinite(store: CropStore, rows: np.ndarray, result: dict) -> None:
    """A cell with a NaN or inf pixel (or, from a broken network, a NaN score) gets a meaningless score and
    would be called and counted in its well: refused, naming the cells and where their pixels are."""
    pixels = ~result["finite"].astype(bool)
    scores = ~np.isfinite(result["score"]) & ~pixels
    for bad, what, fix in ((pixels, "NaN or infinite pixel values",
                            "fix or remove those crops and prepare the store again (prepare refuses them)"),
                           (scores, "a NaN score from finite pixels",
                            "the checkpoint is damaged or its training diverged: retrain")):
        if bad.any():
            m = store.manifest.iloc[rows[bad]]
            shown = "; ".join(f"cell_id {r.cell_id} (plate {r.plate}, well {r.well}: shards/{r.shard}.crops.npy "
                              f"[{r.shard_index}]{f', file {r.file}' if isinstance(getattr(r, 'file', None), str) else ''})"
                              for r in m.head(3).itertuples())
            raise ScoreError(f"{store.root}: {int(bad.sum())} of {len(rows)} cells have {what}, e.g. {shown}; their "
                             f"scores would be meaningless and counted in their wells: {fix}")


def _score_stores(run: Run, stores: list[CropStore], wells: pd.DataFrame, models: dict, *args,
                  result: dict | None = None) -> pd.DataFrame:
    """The cells of every store, one table; with several stores a first column ``store`` (cell ids are
    per store). ``result``: the one store's numbers from the shares of a sharded score."""
    if len(stores) == 1:
        return _score_cells(run, stores[0], wells, models, *args, result=result)
    return pd.concat([_score_cells(run, s, wells, models, *args).assign(store=str(s.root)) for s in stores],
                     ignore_index=True).pipe(lambda d: d[["store"] + [c for c in d.columns if c != "store"]])


def score_store(run, store=None, batch_size: int | None = None, num_workers: int = 0, progress: bool = True,
                nearest: int = 3) -> pd.DataFrame:
    """Score every cell of ``store`` (a crop-store folder, a list of them; default: the run's own) with
    ``run`` (a run folder or a loaded ``Run``): the ``cells.csv`` table (``tables.cell_table``), nothing written."""
    run, models, stores, wells = _inputs(run, store)
    return _score_stores(run, stores, wells, models, batch_size, num_workers, progress, nearest)


def normalisation_note(run: Run, stores: list[CropStore]) -> str:
    mode = run.dm.normalize
    how = {"cell": "each cell by the 1st and 99.8th percentiles of its own pixels, so a cell's overall brightness "
                   "(and a well's gain) is invisible to the network, by design",
           "dataset": "fixed per-channel ranges taken from the training crops, so a plate imaged at another gain "
                      "or exposure shifts every cell it holds",
           "none": "no normalisation: the stored values as they are"}[mode]
    note = f"Cells are normalised as in training (data.normalize={mode}): {how}."
    if any(s.info.get("source") == "prepare" for s in stores):
        note += (" prepare stored each image normalised by its own percentiles: plates imaged at different "
                 "exposures land on one scale, but whatever shifts an image's percentiles shifts every cell in it "
                 "— a treatment that brightens or dims whole images is not measured as such, and a well much denser "
                 "or sparser than the reference (more or less background in its images) is scaled differently.")
    others = [str(s.root) for s in stores if not _own(run, s)]
    if others:
        note += (f" {'This store' if len(others) == 1 else 'These stores'} ({', '.join(others)}) "
                 f"{'is' if len(others) == 1 else 'are'} not the one the run trained on ({run.dm.path}): the estimate "
                 "holds as far as its unaffected cells look like that plate's reference cells.")
    return note


def _read_differently(table: pd.DataFrame) -> str:
    """The page's line for ``screen.plates_read_differently``."""
    if not len(table):
        return "— (one plate, or no reference wells off the run's plates)"
    hit = table[table["flag"]]
    if not len(hit):
        return "none (every other plate's reference wells read like the run's)"
    return "; ".join(f"{r.plate}: reference wells {r.reference_median:.2f} vs {r.training_plates_reference_median:.2f} "
                     f"(p = {r.mann_whitney_p:.1g}) — its fractions are biased, read them with care" for r in hit.itertuples())


def call_note(calibration: dict) -> str:
    """How the cell call (p_affected > 0.5) was made, for score.json and the page."""
    if is_mixture(calibration):
        return ("The cell call (p_affected > 0.5) is the same fit's posterior at the cell's well's fraction "
                "(calibration=mixture): one model, so a well's mean p_affected is its affected fraction.")
    return ("The cell call (p_affected > 0.5) is the noisy-label calibration "
            f"(P(affected | score) = σ({calibration['a']:.3g}·logit(score) + {calibration['b']:.3g})).")


def _reference(run: Run, cells: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Cells (plate, well, score, sim_p<j>) whose mean similarities are the enrichment baseline and whose
    scores the score shift is measured from, and a sentence saying which."""
    ref = cells[(cells["condition"] == run.ref) & (cells["run_split"] != "train")]
    if len(ref):
        n_wells = ref.groupby(["plate", "well"]).ngroups
        trained = " not trained on" if (cells["run_split"] == "train").any() else ""
        return ref, f"{len(ref)} {run.ref} cells{trained} in {n_wells} wells of the scored store(s)"
    P = len(run.record["cell_id"])
    cols = [f"min_d_{j}" for j in range(P)]
    preds = run.preds[run.preds["condition"] == run.ref]
    if len(preds) and all(c in preds for c in cols):
        sims = pd.DataFrame(similarities(preds[cols].to_numpy()), columns=[f"sim_p{j}" for j in range(P)])
        return (pd.concat([pd.DataFrame({"plate": "run", "well": preds["well"].astype(str).to_numpy(),
                                         "score": preds["score"].to_numpy(np.float64)}), sims], axis=1),
                f"the store has no {run.ref} wells: the run's {len(preds)} {run.ref} test cells of its own plate")
    return pd.DataFrame(columns=["plate", "well", "score"] + [f"sim_p{j}" for j in range(P)]), \
        f"none: the store has no {run.ref} wells and the run's test predictions no distances"


def _design(stores: list[CropStore]) -> dict | None:
    """The synthetic plates' dose series (the known curve), from the first store that has one."""
    return next((d for s in stores if (d := (s.info.get("synthetic") or {}).get("dose_series"))), None)


def _truth(wells: pd.DataFrame, fits: pd.DataFrame, hits: pd.DataFrame, design: dict | None) -> dict:
    """Ground-truth checks where the truth is known (synthetic plates): per-well error of the scored
    wells (no condition) — of the fraction and of the per-plate normalised fraction, per plate when there
    are several — each compound's EC50 against the design's, and which doses the hits found."""
    if "truth" not in wells:
        return {}
    w = wells[(wells["role"] == "scored") & wells["truth"].notna() & (wells["n_cells"] > 0)]
    if "stress" in w:
        w = w[w["stress"].fillna("").astype(str) == ""]     # the stress wells break the assumption on purpose
    out = {}
    if len(w):
        err = w["error"].abs()
        out.update({"scored wells with truth": int(len(w)), f"share within ±{TOLERANCE}": float((err <= TOLERANCE).mean()),
                    "mean absolute error": float(err.mean()), "max absolute error": float(err.max()),
                    "CI over cells covers the truth": float(w["ci_covers_truth"].mean())})
    plates = sorted(w["plate"].unique())
    design = design or {}
    for plate in plates if len(plates) > 1 else [None]:
        on = w if plate is None else w[w["plate"] == plate]
        tag = "" if plate is None else f"{plate}: "
        for col, what in (() if plate is None else (("affected_fraction", "fraction"),)) + (("normalised_fraction", "normalised fraction"),):
            err = (on[col] - on["truth"]).abs().dropna()
            if len(err):
                out[f"{tag}{what}: share within ±{TOLERANCE}"] = float((err <= TOLERANCE).mean())
                out[f"{tag}{what}: mean absolute error"] = float(err.mean())
    for f in fits[fits["measure"].isin(["affected_fraction", "normalised_fraction"])].itertuples():
        if design.get("compound") == f.compound and f.ok:
            tag = f"{f.plate}: " if f.plate else ""
            what = "" if f.measure == "affected_fraction" else " (normalised fraction)"
            out[f"{tag}{f.compound}: EC50 fitted / design{what}"] = float(f.ec50 / design["ec50"])
            if not tag and not what:
                out[f"{f.compound}: EC50 design"] = float(design["ec50"])
                out[f"{f.compound}: curve rises as the design's"] = bool((f.top - f.bottom) * (design["top"] - design["bottom"]) > 0)
    if design and len(hits):
        h = hits[hits["compound"] == design.get("compound")]
        above, vehicle = h[h["dose"] > design["ec50"]], h[h["dose"] == 0]
        out[f"{design['compound']}: doses above the EC50 called hits"] = f"{int(above['hit'].sum())} of {len(above)}"
        if len(vehicle):
            out[f"{design['compound']}: vehicle called a hit"] = bool(vehicle["hit"].any())
    return out


def dose_section(wells: pd.DataFrame, enrich: pd.DataFrame, classes: list[str], folder: Path, n_boot: int, seed: int,
                 min_cells: int, top: int) -> tuple[pd.DataFrame, list]:
    """Per compound with doses: the 4PL of the affected fraction and of its ``top`` most enriched
    prototypes' similarity differences over every plate, and with several plates per plate the 4PL of
    the fraction and of the per-plate normalised fraction; their figures in ``folder``. Returns (fits, figures)."""
    fits = [dose_response(wells, "affected_fraction", n_boot, seed, min_cells)]
    figures = []
    several = wells["plate"].nunique() > 1
    if several:
        fits += [dose_response(wells, m, n_boot, seed, min_cells, by_plate=True)
                 for m in ("affected_fraction", "normalised_fraction")]
    dosed = wells[wells["dose"].notna() & (wells["n_cells"] > 0)]
    for compound, g in dosed.groupby("compound", sort=True):
        fit = fits[0].set_index("compound").loc[compound].to_dict()
        label = compound or "(no compound)"
        name = f"dose_{safe_name(label)}.png"
        plot_compound(g, fit, label, folder / name, truth_col="true_fraction")
        figures.append((f"score/{name}", f"{label}: affected fraction against dose"))
        if several:
            per_plate = fits[-1][fits[-1]["compound"] == compound].set_index("plate")
            name = f"dose_{safe_name(label)}_plates.png"
            plot_compound_plates(g, {p: per_plate.loc[p].to_dict() for p in per_plate.index}, label, folder / name,
                                 truth_col="true_fraction")
            figures.append((f"score/{name}", f"{label}: normalised fraction against dose, plate by plate"))
        per, pfits = {}, {}
        for j in top_prototypes(enrich, g["treatment"].unique().tolist(), top):
            e = enrich[(enrich["level"] == "well") & (enrich["prototype"] == j)].drop(columns=["treatment", "n_cells"])
            per[j] = g[["plate", "well", "dose", "compound", "n_cells"]].merge(e, on=["plate", "well"])
            pfits[j] = dose_response(per[j], "difference", n_boot, seed, min_cells).assign(
                measure=f"p{j} similarity − reference")
        if per:
            fits += list(pfits.values())
            name = f"dose_{safe_name(label)}_prototypes.png"
            plot_compound_prototypes(per, {j: f.iloc[0].to_dict() for j, f in pfits.items()},
                                     {j: f"p{j} ({classes[j]})" for j in per}, label, folder / name)
            figures.append((f"score/{name}", f"{label}: the {len(per)} most enriched prototypes against dose"))
    return pd.concat(fits, ignore_index=True), figures


def _publish(tmp: Path, final: Path) -> None:
    """Put the finished folder ``tmp`` at ``final`` (the previous one removed only once it is replaced)."""
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def _records(df: pd.DataFrame) -> list[dict]:
    """A table as JSON records, NaN and ±inf as null."""
    finite = df.replace([np.inf, -np.inf], np.nan)
    return finite.astype(object).where(finite.notna(), None).to_dict(orient="records") if len(df) else []


def score_run(run_dir, store=None, out=None, n_boot: int = 200, nearest: int = 3, top: int = 3, min_cells: int = 20,
              batch_size: int | None = None, num_workers: int = 0, progress: bool = True, log_wandb: bool = True,
              seed: int = 0, fdr: float = 0.05, bscore: bool = False, shards: int = 1, shard: int | str = "all") -> Path:
    """Score ``store`` (a crop store, a list of them; default: the run's own) with the run in ``run_dir``;
    returns the ``score/`` folder. ``shard``: ``all`` (here, at once), a share 0 … ``shards`` − 1 (one task
    of a sharded score of one store: returns its file under ``out/.score-shares/``), or ``merge`` (the
    tables and page from the finished shares)."""
    check(isinstance(n_boot, int) and n_boot >= 1, "bootstrap", n_boot, "an integer ≥ 1 (resamples for the CIs)")
    check(isinstance(nearest, int) and nearest >= 1, "nearest", nearest, "an integer ≥ 1")
    check(isinstance(top, int) and top >= 0, "top_prototypes", top, "an integer ≥ 0")
    check(isinstance(min_cells, int) and min_cells >= 1, "min_cells", min_cells, "an integer ≥ 1")
    check(isinstance(fdr, (int, float)) and 0 < fdr < 1, "fdr", fdr, "a false discovery rate in (0, 1), e.g. 0.05")
    check(isinstance(bscore, bool), "bscore", bscore, "true or false")
    problem = folder_problem(out) if out is not None else None
    check(problem is None, "out", str(out), f"a folder for score/ and score.html (created if absent); it {problem}")
    check(isinstance(shards, int) and not isinstance(shards, bool) and shards >= 1, "shards", shards,
          "an integer ≥ 1: the number of tasks the cells are dealt to")
    check(shard in ("all", "merge") or (isinstance(shard, int) and not isinstance(shard, bool) and 0 <= shard < shards),
          "shard", shard, f"all (every cell here), one share 0 … {shards - 1} (shards={shards}), or merge (the tables "
          "from the finished shares)")
    t0 = time.time()
    run, models, stores, wells = _inputs(run_dir, store)
    out = Path(out) if out is not None else run.dir
    if shard != "all" and len(stores) > 1:
        raise ScoreError(f"shard={shard} with {len(stores)} stores in data.path: a sharded score takes one store a "
                         "call — sweep data.path over the stores (score.py -m 'data.path=a,b' shards=N …) or use shard=all")
    batch = int(batch_size or run.dm.eval_batch_size)
    if isinstance(shard, int):
        return score_share(run, stores[0], out, shard, shards, batch, num_workers, progress)
    result = (shares.read_shares(out, run.dir, stores[0], batch, len(_originals(stores[0])), shards)
              if shard == "merge" else None)
    with output_errors(out, "out", ScoreError):
        out.mkdir(parents=True, exist_ok=True)
        with exclusive_lock(out / SCORE_LOCK, lambda holder: ScoreError(
                f"out={out} is being written by another score.py ({holder}); wait for it to finish, or give this one "
                "another out=")):
            remove_leftovers(out)
            cells, wells_out = _score_into(out, run, models, stores, wells, t0, n_boot, nearest, top, min_cells,
                                           batch_size, num_workers, progress, seed, fdr, bscore, result)
            if result is not None:
                shares.remove_shares(out, shards)
    if log_wandb:
        if out.resolve() == run.dir.resolve():
            from protocell.tracking import log_to_saved_run

            log_to_saved_run(run.cfg, run.dir, keys=("score/",))
        else:
            log.info("W&B: not logged (score/ is outside the run folder, out=%s)", out)
    log.info("score: %d cells, %d wells → %s (%.1f s)", len(cells), len(wells_out), out / "score.html", time.time() - t0)
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
    except PermissionError:          # another user's process
        return True
    return True


def _score_into(out: Path, run: Run, models: dict, stores: list[CropStore], wells: pd.DataFrame, t0: float,
                n_boot: int, nearest: int, top: int, min_cells: int, batch_size: int | None, num_workers: int,
                progress: bool, seed: int, fdr: float, bscore: bool,
                result: dict | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score the cells (``result``: the network's numbers from the shares, else computed here) and write
    ``out/score/`` (under a temporary name, then renamed) and ``out/score.html``; returns (cells, wells)."""
    calibration, anchors = models["call"], models["fraction"]
    cells = _score_stores(run, stores, wells, models, batch_size, num_workers, progress, nearest, result=result)
    reference, ref_note = _reference(run, cells)

    extra = [c for c in wells.columns if c not in METADATA]          # the plate map's other columns
    wells = well_table(cells, wells, n_boot, seed, min_cells, reference["score"].to_numpy(np.float64))
    empty = pd.concat([empty_wells(s, wells, run.ref, run.exp).assign(**({"store": str(s.root)} if len(stores) > 1 else {}))
                       for s in stores], ignore_index=True)
    if len(empty):
        log.warning("score: %d well(s) without cells: %s", len(empty),
                    ", ".join(f"{p}/{w}" for p, w in zip(empty["plate"], empty["well"])))
    treatments = treatment_table(cells, wells, n_boot, seed)
    per = treatments.set_index("treatment")          # each well carries its treatment's pooled estimate too
    for col, src in (("n_replicates", "n_wells"), ("treatment_fraction", "affected_fraction"),
                     ("treatment_ci_low", "ci_low"), ("treatment_ci_high", "ci_high")):
        wells[col] = wells["treatment"].map(per[src])
    wells, tables = screen(cells, wells, reference["score"].to_numpy(np.float64), fdr, bscore, is_mixture(calibration))
    classes = [run.class_names[int(c)] for c in run.record["prototype_class"]]
    enrich = enrichment(cells, wells, reference, classes, n_boot, seed)

    tmp = out / f".score.partial-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    tmp.mkdir()
    try:
        figures = {"plate": [], "dose": [], "enrichment": []}
        for plate in sorted(wells["plate"].unique()):
            if wells.loc[wells["plate"] == plate, "row"].notna().any():
                name = f"plate_{safe_name(plate)}.png"
                plot_plate(wells, plate, tmp / name)
                figures["plate"].append((f"score/{name}", f"plate {plate}"))
        fits, figures["dose"] = dose_section(wells, enrich, classes, tmp, n_boot, seed, min_cells, top)
        if len(enrich):
            plot_enrichment(enrich, treatments, tmp / "enrichment.png")
            figures["enrichment"].append(("score/enrichment.png", "prototype enrichment per treatment"))

        wells_out = pd.concat([wells, empty.assign(n_cells=0, flag="no cells: prepare found none in its images")],
                              ignore_index=True) if len(empty) else wells
        cells.to_csv(tmp / "cells.csv", index=False)
        wells_out.to_csv(tmp / "wells.csv", index=False)
        write_well_table(well_export(wells_out, well_readouts(cells, reference["score"]).drop(
            columns=["n_cells", "affected_fraction", "mean_p_affected", "score_shift"]), enrich, extra), tmp)
        treatments.to_csv(tmp / "treatments.csv", index=False)
        enrich.to_csv(tmp / "prototype_enrichment.csv", index=False)
        fits.to_csv(tmp / "dose_response.csv", index=False)
        for name, table in tables.items():
            if len(table) or name not in ("plate_effects", "plates_read_differently"):
                table.to_csv(tmp / f"{name}.csv", index=False)
        design = _design(stores)                     # synthetic plates: the known curve
        truth = _truth(wells, fits, tables["hits"], design)
        no_controls = sorted(tables["qc"].loc[tables["qc"]["verdict"] == "no controls", "plate"].unique())
        notes = {"estimator": f"The affected fraction of a well is the {ESTIMATOR}, fitted on the run's held-out "
                              f"control cells ({anchors['n_ref']} reference, {anchors['n_exp']} exposed: "
                              f"ρ_Ref {anchors['rho_ref']:.3f}, ρ_Exp {anchors['rho_exp']:.3f}) and applied to "
                              "every cell. " + call_note(calibration),
                 "assumption": f"{ASSUMPTION}: the unaffected cells of a scored well look like the reference's. A well "
                               "whose unaffected cells differ in a way the network reads (focus, gain it can see, "
                               "density, another cell line) gets a biased fraction; the reference is held fixed, so "
                               "the CIs do not include its own uncertainty.",
                 "normalisation": normalisation_note(run, stores), "reference": ref_note,
                 "empty": (f"Wells prepare found no cell in: {', '.join(f'{p}/{w}' for p, w in zip(empty['plate'], empty['well']))}."
                           if len(empty) else ""),
                 "no_controls": (f"No controls on plate(s) {', '.join(no_controls)}: no Z′, no normalisation to "
                                 "the plate's controls (its wells are tested on their raw fractions)." if no_controls else "")}
        summary = {"run": str(run.dir), "run status": models["status"]["status"], "store": ", ".join(str(s.root) for s in stores), "plates": int(wells["plate"].nunique()),
                   "cells": int(len(cells)), "wells": int(len(wells_out)), "treatments": int(len(treatments)),
                   "compounds with a dose": int(fits.loc[fits["measure"] == "affected_fraction", "compound"].nunique()),
                   f"hits at FDR {fdr:g}": int(tables["hits"]["hit"].sum()),
                   "plates read differently": _read_differently(tables["plates_read_differently"]),
                   "bootstrap resamples": n_boot, "reference for enrichment": ref_note}
        atomic_write_json(tmp / "score.json", {**summary, "stores": [str(s.root) for s in stores],
                                               "calibration": calibration, "fraction_reference": anchors,
                                               "run_status": models["status"],
                                               "notes": notes, "truth": truth, "design": design,
                                               "options": {"fdr": fdr, "bscore": bscore, "min_cells": min_cells},
                                               "qc": _records(tables["qc"]), "plate_effects": _records(tables["plate_effects"]),
                                               "trends": _records(tables["trends"]), "hits": _records(tables["hits"]),
                                               "plates_read_differently": _records(tables["plates_read_differently"]),
                                               "dose_response": _records(fits),
                                               "seconds": round(time.time() - t0, 1)})
        top_rows = (enrich[enrich["level"] == "treatment"].assign(a=lambda d: d["difference"].abs())
                    .sort_values("a", ascending=False).groupby("treatment", sort=False).head(3)
                    [["treatment", "name", "class", "mean_similarity", "reference_mean", "difference", "ci_low", "ci_high"]]
                    if len(enrich) else pd.DataFrame())
        page = score_page(summary, wells_out, treatments, fits, top_rows, figures, notes, truth, tables, fdr,
                          models["status"])
        _publish(tmp, out / "score")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_text(out / "score.html", page)
    return cells, wells_out
