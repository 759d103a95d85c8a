"""A cell read in its orientations: the evidence of every prediction averaged over the dihedral group.

A cell has no orientation of its own — the microscope's axes are arbitrary, and training already shows
every crop rotated by 90° steps and mirrored. A network is not exactly invariant to those moves, though:
its max-pooled prototype similarities and its padding see a rotated cell a little differently, so the
score of one cell carries noise that depends on how it happened to lie. Averaging the evidence over the
8 symmetries of the square (4 rotations × mirror) removes that noise without training anything, and the
average is exactly invariant to rotating or mirroring the crop (the 8 views of a rotated cell are the
same 8 views). Measured on matrix v2's held-out cells (docs/results.md): true AUROC +0.02 to +0.06.

What is averaged is the *evidence*, the quantity the last layer is linear in: the prototype network's
log-similarity to each prototype (its logits are the last layer applied to them, so averaged logits =
the last layer applied to averaged similarities), or the black box's logits. The minimum distance
reported for a prototype is then the distance whose similarity is the average — the distance that
gives the cell's logits exactly (``log_similarity`` inverted), so "this looks like that" still adds up.
Patch positions (explain's boxes and heat maps) come from the cell as cropped; only the numbers a
prediction reports are averaged. ``views=1`` is the cell as cropped, bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from protocell.config import VIEWS  # as cropped | the 8 symmetries of the square
from protocell.model.prototypes import SIMILARITY_EPS, log_similarity


def dihedral(
    x: torch.Tensor, mask: torch.Tensor | None, views: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """The ``views`` orientations of a batch (B, C, H, W) and its mask, the identity first: 4 rotations by 90°,
    each as is and mirrored (left–right)."""
    if views not in VIEWS:
        raise ValueError(f"views must be one of {VIEWS}, got {views}")
    for k in range(4 if views == 8 else 1):
        rx = torch.rot90(x, k, (2, 3)) if k else x
        rm = (torch.rot90(mask, k, (2, 3)) if k else mask) if mask is not None else None
        yield rx, rm
        if views == 8:
            yield rx.flip(3), (rm.flip(3) if rm is not None else None)


def distance_of(similarity: torch.Tensor) -> torch.Tensor:
    """The inverse of ``log_similarity``: d with log((d + 1) / (d + ε)) = s."""
    e = torch.exp(similarity)
    return (1 - SIMILARITY_EPS * e) / (e - 1)


def of_network(net) -> Callable[[torch.Tensor, torch.Tensor | None], tuple[torch.Tensor, dict]]:
    """A prototype network (``ProtoPNet``) as ``averaged`` reads it: (x, mask) → (logits, its outputs)."""

    def forward(x: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, dict]:
        out = net(x, mask)
        return out["logits"], out

    return forward


def averaged(
    forward: Callable[[torch.Tensor, torch.Tensor | None], tuple[torch.Tensor, dict | None]],
    x: torch.Tensor,
    mask: torch.Tensor | None,
    views: int,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(logits, min_distances or None) of ``forward`` (→ (logits, the prototype network's outputs or None)),
    the evidence averaged over ``views`` orientations (module doc). With one view: ``forward`` as is."""
    if views == 1:
        logits, out = forward(x, mask)
        return logits, (out["min_distances"] if out is not None else None)
    logits_all, sims = [], []
    for vx, vm in dihedral(x, mask, views):
        logits, out = forward(vx, vm)
        logits_all.append(logits.float())
        if out is not None:
            sims.append(log_similarity(out["min_distances"].float()))
    mean_logits = torch.stack(logits_all).mean(0)
    return mean_logits, (distance_of(torch.stack(sims).mean(0)) if sims else None)
