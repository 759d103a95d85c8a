"""The objective: labels per well, a change in only some exposed cells.

    L = MIL(logits) + λ_clst · Clst − λ_sep · Sep + λ_ref · RefSim + λ_div · Div + λ_l1 · ‖h ⊙ (1 − identity)‖₁

**MIL** (multiple instances; Ilse et al. 2018, with log-sum-exp pooling): a training batch is made of
*bags* of ``n`` cells from one well (``data.bag_size``). A cell's evidence is g = logit_Exp − logit_Ref;
a bag's is the smooth maximum LSE(g) − log n, scored with binary cross-entropy against the well's
label. A reference bag must have *no* cell with Exp evidence; an exposed bag needs *some*: an
unaffected cell of an exposed well is no longer asked to look exposed, which is what taught the
network to read the well instead of the cells. ``n = 1`` is the per-cell cross-entropy of ProtoPNet.
The bag size trades two errors: an exposed bag with no affected cell ((1 − ρ_Exp)^n) against a
reference bag holding an affected cell (1 − (1 − ρ_Ref)^n); n = 4 keeps both near 20 % for
ρ_Exp ≥ 0.3 and ρ_Ref ≈ 0.05.

**Clst**: each cell's smallest distance to a prototype of its own class, averaged with weights:
reference cells weigh 1, a cell of an exposed bag its share of the bag's evidence (the LSE's
softmax, ×n, detached), so exposed prototypes are pulled onto the cells that carry the change,
not onto the unaffected majority. **Sep** (``separation="reference"``): reference cells' smallest
distance to an exposed prototype, pushed up; exposed cells are not pushed from reference
prototypes, since most of them look like reference cells (``"all"``: ProtoPNet's original).
**RefSim**: reference cells' largest similarity to an exposed prototype (the log similarity the
classifier reads), averaged over reference cells: an exposed prototype must match nothing a
reference cell has. Unlike Sep it is bounded — the similarity falls to 0 with distance — so it
cannot be satisfied by inflating the latent; it makes exposed prototypes specific to the change.
**Div**: per class, the mean squared positive cosine similarity between prototypes (collapse).
The L1 term applies to the last layer's wrong-class connections, only while that layer trains.

Shapes: logits (B, K), min_distances (B, P), labels (B,), prototype_class (P,); B = bags × n.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def bag_evidence(logits: torch.Tensor, bag_size: int, positive: int = 1, reference: int = 0) -> torch.Tensor:
    """(B,) → (bags, n): each cell's evidence g = logit_positive − logit_reference, grouped in bags."""
    if logits.shape[0] % bag_size:
        raise ValueError(f"a batch of {logits.shape[0]} cells is not made of bags of {bag_size}")
    return (logits[:, positive] - logits[:, reference]).view(-1, bag_size)


def mil_loss(
    logits: torch.Tensor, labels: torch.Tensor, bag_size: int, positive: int = 1, reference: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bag loss and each cell's attention (B,), mean 1 within a bag, detached.

    ``bag_size == 1`` returns the per-cell cross-entropy (two classes or more) and attention 1."""
    if bag_size == 1:
        return F.cross_entropy(logits, labels), torch.ones_like(labels, dtype=logits.dtype)
    g = bag_evidence(logits, bag_size, positive, reference)  # (bags, n)
    bag_label = (labels.view(-1, bag_size)[:, 0] == positive).to(logits.dtype)
    bag_logit = torch.logsumexp(g, dim=1) - math.log(bag_size)
    attention = (torch.softmax(g.detach(), dim=1) * bag_size).flatten()
    return F.binary_cross_entropy_with_logits(bag_logit, bag_label), attention


def cluster_separation(
    min_distances: torch.Tensor,
    labels: torch.Tensor,
    prototype_class: torch.Tensor,
    weights: torch.Tensor | None = None,
    reference: int = 0,
    separation: str = "all",
) -> tuple[torch.Tensor, torch.Tensor]:
    """(clst, sep) scalars. ``weights`` (B,): how much each cell's cluster term counts (reference cells
    always 1); ``separation``: "reference" (reference cells only) or "all"."""
    own = prototype_class[None, :] == labels[:, None]  # (B, P)
    inf = torch.finfo(min_distances.dtype).max
    to_own = torch.where(own, min_distances, inf).amin(dim=1)
    to_other = torch.where(~own, min_distances, inf).amin(dim=1)
    is_ref = labels == reference
    w = torch.ones_like(to_own) if weights is None else torch.where(is_ref, torch.ones_like(weights), weights)
    clst = (w * to_own).sum() / w.sum().clamp_min(1e-12)
    if separation == "all":
        sep = to_other.mean()
    elif is_ref.any():
        sep = to_other[is_ref].mean()
    else:
        sep = to_other.sum() * 0.0
    return clst, sep


def reference_similarity(
    min_distances: torch.Tensor, labels: torch.Tensor, prototype_class: torch.Tensor, reference: int = 0
) -> torch.Tensor:
    """Mean over reference cells of their largest log similarity to a prototype of another class."""
    from protocell.model.prototypes import log_similarity

    is_ref = labels == reference
    if not is_ref.any():
        return min_distances.sum() * 0.0
    other = prototype_class != reference
    return log_similarity(min_distances[is_ref][:, other].amin(dim=1)).mean()


def diversity(prototypes: torch.Tensor, prototype_class: torch.Tensor) -> torch.Tensor:
    """Mean over same-class pairs of relu(cos)², averaged over classes: 0 when every class's prototypes
    are orthogonal or opposed, 1 when they all coincide."""
    p = F.normalize(prototypes, dim=1)
    terms = []
    for c in prototype_class.unique():
        pc = p[prototype_class == c]
        k = len(pc)
        if k > 1:
            cos = pc @ pc.t() - torch.eye(k, device=p.device, dtype=p.dtype)
            terms.append((cos.clamp_min(0) ** 2).sum() / (k * (k - 1)))
    return torch.stack(terms).mean() if terms else prototypes.sum() * 0.0


def last_layer_l1(weight: torch.Tensor, prototype_class: torch.Tensor) -> torch.Tensor:
    """L1 of the wrong-class connections of the last layer weight (K, P)."""
    ident = F.one_hot(prototype_class, weight.shape[0]).t().to(weight.dtype)
    return (weight * (1 - ident)).abs().sum()


def protopnet_loss(
    logits,
    min_distances,
    labels,
    prototype_class,
    last_weight,
    prototypes=None,
    clst: float = 0.8,
    sep: float = 0.08,
    l1: float = 1e-4,
    div: float = 0.0,
    ref_sim: float = 0.0,
    bag_size: int = 1,
    separation: str = "all",
    positive: int = 1,
    reference: int = 0,
) -> dict[str, torch.Tensor]:
    ce, attention = mil_loss(logits, labels, bag_size, positive, reference)
    c, s = cluster_separation(
        min_distances, labels, prototype_class, attention if bag_size > 1 else None, reference, separation
    )
    total = ce + clst * c - sep * s
    zero = torch.zeros((), device=logits.device)
    l1_term = last_layer_l1(last_weight, prototype_class) if l1 > 0 else zero
    div_term = diversity(prototypes, prototype_class) if (div > 0 and prototypes is not None) else zero
    ref_term = reference_similarity(min_distances, labels, prototype_class, reference) if ref_sim > 0 else zero
    total = total + l1 * l1_term + div * div_term + ref_sim * ref_term
    return {"loss": total, "ce": ce, "clst": c, "sep": s, "ref_sim": ref_term, "l1": l1_term, "div": div_term}
