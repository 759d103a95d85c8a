"""Prototype health: near-duplicates, prototypes living on the cell border, and purity.

Collapsed or duplicate prototypes are the most common failure users of prototype networks report.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch


def duplicate_pairs(vectors: torch.Tensor, cell_id, latent_yx, tol: float = 1e-3) -> list[tuple[int, int]]:
    """Pairs (i, j), i < j, whose squared distance is below ``tol`` or that share a source patch."""
    d = torch.cdist(vectors.double(), vectors.double()) ** 2
    P = len(vectors)
    pairs = []
    for i in range(P):
        for j in range(i + 1, P):
            same = int(cell_id[i]) == int(cell_id[j]) and latent_yx[i].tolist() == latent_yx[j].tolist()
            if same or float(d[i, j]) < tol:
                pairs.append((i, j))
    return pairs


def border_share(masks: torch.Tensor, latent_yx: torch.Tensor, latent_size) -> float:
    """Share of patches whose latent unit straddles the cell border (footprint partly outside).

    masks: (k, 1, S, S) cell masks of the patches' cells; latent_yx: (k, 2)."""
    frac = torch.nn.functional.adaptive_avg_pool2d(masks.float(), tuple(latent_size))[:, 0]  # (k, H, W)
    vals = frac[torch.arange(len(latent_yx)), latent_yx[:, 0], latent_yx[:, 1]]
    return float((vals < 1).float().mean())


def purity(neighbour_labels: np.ndarray, prototype_class: int) -> float:
    return float(np.mean(np.asarray(neighbour_labels) == prototype_class))


def nearest_other(vectors: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Each prototype's nearest other prototype and their squared distance."""
    d = torch.cdist(vectors.double(), vectors.double()) ** 2
    d.fill_diagonal_(float("inf"))
    v, i = d.min(1)
    return i.numpy(), v.numpy()


def prototype_health(run, near: dict, tol: float = 1e-3) -> pd.DataFrame:
    """Figure 7 as a table, one row per prototype: near-duplicates, the share of its nearest patches
    that straddle the cell border or lie in background, its purity; ``flag`` names the problems."""
    import pandas as pd

    from protocell.evaluate.localisation import background_share

    rec, store, S = run.record, run.dm.store, run.crop_size
    labels = store.manifest["label"].to_numpy()
    dups = duplicate_pairs(rec["vectors"], rec["cell_id"], rec["latent_yx"], tol=tol)
    other, other_d = nearest_other(rec["vectors"])
    rows = []
    for j in range(len(rec["cell_id"])):
        cells = [run.row(int(c)) for c in near["cell_id"][:, j]]
        masks = torch.stack([torch.tensor(store.mask(r), dtype=torch.float32)[None] for r in cells])
        if masks.shape[-1] != S:
            masks = torch.nn.functional.interpolate(masks, size=S, mode="nearest")
        cls = int(rec["prototype_class"][j])
        rows.append(
            {
                "prototype": j,
                "class": rec["class_names"][cls],
                "duplicate_of": ",".join(str(a if b == j else b) for a, b in dups if j in (a, b)),
                "nearest_prototype": int(other[j]),
                "nearest_prototype_d2": float(other_d[j]),
                "border_share": border_share(masks, near["latent_yx"][:, j], rec["latent_size"]),
                "background_share": background_share(near["latent_yx"][:, j], masks, rec["latent_size"]),
                "purity": purity(labels[cells], cls),
            }
        )
    df = pd.DataFrame(rows)
    df["flag"] = [
        ", ".join(
            f
            for f, on in (
                ("duplicate", bool(r.duplicate_of)),
                ("on border", r.border_share > 0.5),
                ("in background", r.background_share > 0),
                ("impure", r.purity < 0.5),
            )
            if on
        )
        for r in df.itertuples()
    ]
    return df
