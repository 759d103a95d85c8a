"""One streaming pass of the network over a store's cells: per cell the Exp score, the minimum
distance to every prototype, and the raw brightness inside the cell.

Memory is flat in the number of cells: crops are read from the memory-mapped shards batch by batch
(``DataLoader``), a shard is unmapped once the pass has left it, and only the per-cell numbers are
kept (P + 3 numbers a cell, in arrays allocated once).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from protocell.data.dataset import CellDataset
from protocell.model.views import averaged, of_network


class ScoringCells(Dataset):
    """``CellDataset`` items with the cell's raw brightness: (image (C, S, S), mask (1, S, S), cell_id,
    intensity, finite), where intensity is the mean stored pixel value inside the cell's mask over the
    network's channels, before any normalisation (a well-gain diagnostic: per-cell normalisation hides
    it from the network by design), and finite says every stored pixel of those channels is a number
    (a NaN or inf crop gets a meaningless score: ``score`` refuses it)."""

    def __init__(self, cells: CellDataset):
        self.cells = cells
        self.shards = cells.store.manifest["shard"].to_numpy()[cells.rows]
        self._open = None

    def __len__(self) -> int:
        return len(self.cells)

    def __getitem__(self, i):
        if self._open is not None and self.shards[i] != self._open:  # rows come shard by shard: unmap the last
            self.cells.store.release(self._open)
        self._open = self.shards[i]
        x, m, _, cell_id = self.cells[i]
        r = int(self.cells.rows[i])
        crop = self.cells.store.crop(r)[self.cells.channels]
        inside = self.cells.store.mask(r) > 0
        raw = crop[:, inside] if inside.any() else crop.reshape(len(crop), -1)
        return x, m, cell_id, float(raw.mean(dtype=np.float64)), bool(np.isfinite(crop).all())


@torch.no_grad()
def infer(
    net,
    cells: CellDataset,
    positive: int,
    batch_size: int = 256,
    num_workers: int = 0,
    progress: bool = True,
    views: int = 1,
) -> dict[str, np.ndarray]:
    """cell_id (n,), score (n,) = P(exposed class), min_d (n, P) masked minimum distances,
    intensity (n,), finite (n,) bool (``ScoringCells``), in the order of ``cells.rows``; score and
    min_d averaged over ``views`` orientations of each cell, as the run's own predictions
    (``protocell.model.views``)."""
    net.eval()
    n, P = len(cells), net.prototypes.shape[0]
    if n == 0:
        return {
            "cell_id": np.zeros(0),
            "score": np.zeros(0),
            "min_d": np.zeros((0, P), np.float32),
            "intensity": np.zeros(0),
            "finite": np.zeros(0),
        }
    # filled in place: a list of small per-batch arrays, kept while the large batch buffers come and go, pins
    # glibc's heap (its mmap threshold grows to the batch size) and the process grew by ~13 KB a cell
    out: dict[str, np.ndarray] = {
        "cell_id": np.empty(n, np.int64),
        "score": np.empty(n, np.float32),
        "min_d": np.empty((n, P), np.float32),
        "intensity": np.empty(n, np.float64),
        "finite": np.empty(n, bool),
    }
    loader = DataLoader(ScoringCells(cells), batch_size=batch_size, shuffle=False, num_workers=num_workers)
    i = 0
    with tqdm(total=n, desc="score", unit="cell", disable=not progress, dynamic_ncols=True) as bar:
        for x, m, cell_id, raw, finite in loader:
            logits, min_d = averaged(of_network(net), x, m, views)
            assert min_d is not None  # the prototype network reports its distances
            k = i + len(cell_id)
            out["score"][i:k] = F.softmax(logits.float(), 1)[:, positive].numpy()
            out["min_d"][i:k] = min_d.float().numpy()
            out["cell_id"][i:k] = cell_id.numpy()
            out["intensity"][i:k] = raw.numpy()
            out["finite"][i:k] = finite.numpy()
            bar.update(len(cell_id))
            i = k
    return out
