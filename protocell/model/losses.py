"""ProtoPNet objective on masked distances.

    L = CE(logits, y) + λ_clst · Clst − λ_sep · Sep + λ_l1 · ‖h ⊙ (1 − identity)‖₁

Clst: mean over the batch of the smallest distance from the cell to a prototype of its own class
(pulls each cell near one of its prototypes); Sep: the same to prototypes of the other classes
(pushed apart). Both use masked distances, so only in-cell patches count. The L1 term applies to the
last layer's wrong-class connections, only while that layer trains.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cluster_separation(min_distances: torch.Tensor, labels: torch.Tensor,
                       prototype_class: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """min_distances: (B, P), labels: (B,), prototype_class: (P,) → (clst, sep) scalars."""
    own = prototype_class[None, :] == labels[:, None]                       # (B, P)
    inf = torch.finfo(min_distances.dtype).max
    clst = torch.where(own, min_distances, inf).amin(dim=1).mean()
    sep = torch.where(~own, min_distances, inf).amin(dim=1).mean()
    return clst, sep


def last_layer_l1(weight: torch.Tensor, prototype_class: torch.Tensor) -> torch.Tensor:
    """L1 of the wrong-class connections of the last layer weight (K, P)."""
    ident = F.one_hot(prototype_class, weight.shape[0]).t().to(weight.dtype)
    return (weight * (1 - ident)).abs().sum()


def protopnet_loss(logits, min_distances, labels, prototype_class, last_weight,
                   clst: float, sep: float, l1: float) -> dict[str, torch.Tensor]:
    ce = F.cross_entropy(logits, labels)
    c, s = cluster_separation(min_distances, labels, prototype_class)
    total = ce + clst * c - sep * s
    l1_term = last_layer_l1(last_weight, prototype_class) if l1 > 0 else torch.zeros((), device=logits.device)
    total = total + l1 * l1_term
    return {"loss": total, "ce": ce, "clst": c, "sep": s, "l1": l1_term}
