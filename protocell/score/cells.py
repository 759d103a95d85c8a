"""The network's pass over the cells of every store a score reads: the original cells (no offline
augmentations) through the run's network as it was trained to see them, a cell with NaN or inf pixels
(or a NaN score) refused, and the cells table (``protocell.score.tables.cell_table``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from protocell.artifacts import positive_class
from protocell.data.store import CropStore
from protocell.runs import Run
from protocell.score.infer import infer
from protocell.score.source import ScoreError
from protocell.score.tables import cell_table


def own_store(run: Run, store: CropStore) -> bool:
    return store.root.resolve() == Path(run.dm.path).resolve()


def _score_cells(
    run: Run,
    store: CropStore,
    wells: pd.DataFrame,
    models: dict,
    batch_size=None,
    num_workers: int = 0,
    progress: bool = True,
    nearest: int = 3,
    *,
    result: dict | None = None,
) -> pd.DataFrame:
    """The cells table; ``result``: the network's numbers for every original cell, already computed (the
    shares of a sharded score, ``protocell.score.shares``), else computed here."""
    rows = originals(store)
    if result is None:
        plan = models.get("levelling", {}).get(str(store.root))
        result = run_network(run, store, rows, batch_size, num_workers, progress, plan)
    refuse_nonfinite(store, rows, result)
    run_split = None
    if own_store(run, store):  # the run's own cells: say which it trained on
        splits = run.dm.splits[rows]
        run_split = np.where(splits == "unlabelled", "", splits).astype(str)
    return cell_table(store.manifest.iloc[rows], wells, result, models, nearest, run_split)


def originals(store: CropStore) -> np.ndarray:
    return np.flatnonzero(store.manifest["aug_of"].to_numpy() < 0)


def run_network(
    run: Run, store: CropStore, rows: np.ndarray, batch_size, num_workers: int, progress: bool, levelling=None
) -> dict:
    """The network's numbers for ``rows`` of ``store``; ``levelling``: the store's plan (score.level_imaging)."""
    return infer(
        run.net,
        run.dm.dataset_of(store, rows, levelling=levelling),
        positive_class(run.class_names),
        int(batch_size or run.dm.eval_batch_size),
        int(num_workers),
        progress,
        views=run.views,
    )


def refuse_nonfinite(store: CropStore, rows: np.ndarray, result: dict) -> None:
    """A cell with a NaN or inf pixel (or, from a broken network, a NaN score) gets a meaningless score and
    would be called and counted in its well: refused, naming the cells and where their pixels are."""
    pixels = ~result["finite"].astype(bool)
    scores = ~np.isfinite(result["score"]) & ~pixels
    for bad, what, fix in (
        (
            pixels,
            "NaN or infinite pixel values",
            "fix or remove those crops and prepare the store again (prepare refuses them)",
        ),
        (scores, "a NaN score from finite pixels", "the checkpoint is damaged or its training diverged: retrain"),
    ):
        if bad.any():
            m = store.manifest.iloc[rows[bad]]
            shown = "; ".join(
                f"cell_id {r.cell_id} (plate {r.plate}, well {r.well}: shards/{r.shard}.crops.npy "
                f"[{r.shard_index}]{f', file {r.file}' if isinstance(getattr(r, 'file', None), str) else ''})"
                for r in m.head(3).itertuples()
            )
            raise ScoreError(
                f"{store.root}: {int(bad.sum())} of {len(rows)} cells have {what}, e.g. {shown}; their "
                f"scores would be meaningless and counted in their wells: {fix}"
            )


def score_stores(
    run: Run, stores: list[CropStore], wells: pd.DataFrame, models: dict, *args, result: dict | None = None
) -> pd.DataFrame:
    """The cells of every store, one table; with several stores a first column ``store`` (cell ids are
    per store). ``result``: the one store's numbers from the shares of a sharded score."""
    if len(stores) == 1:
        return _score_cells(run, stores[0], wells, models, *args, result=result)
    return pd.concat(
        [_score_cells(run, s, wells, models, *args).assign(store=str(s.root)) for s in stores], ignore_index=True
    ).pipe(lambda d: d[["store"] + [c for c in d.columns if c != "store"]])
