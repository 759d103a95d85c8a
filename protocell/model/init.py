"""Prototype initialisation from real latent patches (before the first prototype-network epoch).

Random prototypes in [0, 1]^D start far from every cell patch; the cluster cost then drags several
of them onto the same few patches (collapse) and push moves every logit. Here each class's
prototypes start as k-means centres of in-cell latent patches of that class's cells, so they
start spread over what the cells actually contain. For the exposed class (``method="evidence"``)
only the patches the pretrain probe found most exposed-like (its per-unit evidence
logit_Exp − logit_Ref at or above the ``quantile`` of the exposed cells' patches) are clustered:
most exposed cells look like reference cells, and their patches would make reference-like
exposed prototypes. ``method="kmeans"`` clusters all patches of the class; without a trained
probe (no pretrain phase) ``evidence`` falls back to it.

Shapes: latent z (B, D, H, W); inside (B, 1, H, W); returns prototypes (P, D).
"""

from __future__ import annotations

import torch

from protocell.config import INIT_METHODS


def kmeans(x: torch.Tensor, k: int, iters: int = 50, seed: int = 0) -> torch.Tensor:
    """k-means++ seeding then Lloyd iterations; (N, D) → (k, D) centres. An empty cluster is
    re-seeded at the point farthest from its centre."""
    g = torch.Generator().manual_seed(seed)
    n = len(x)
    if n == 0:
        raise ValueError("k-means on no points")
    centres = [x[torch.randint(n, (1,), generator=g)].squeeze(0)]
    d2 = ((x - centres[0]) ** 2).sum(1)
    for _ in range(1, k):
        probs = d2 / d2.sum() if d2.sum() > 0 else torch.full_like(d2, 1.0 / n)
        c = x[torch.multinomial(probs, 1, generator=g)].squeeze(0)
        centres.append(c)
        d2 = torch.minimum(d2, ((x - c) ** 2).sum(1))
    c = torch.stack(centres)
    for _ in range(iters):
        dist = torch.cdist(x, c)
        assign = dist.argmin(1)
        new = c.clone()
        for j in range(k):
            members = assign == j
            new[j] = x[members].mean(0) if members.any() else x[dist.min(1).values.argmax()]
        if torch.allclose(new, c):
            break
        c = new
    return c


@torch.no_grad()
def latent_patches(net, loader, probe=None, positive: int = 1, reference: int = 0, device=None):
    """In-cell latent patches per class: {class: (units (N, D), evidence (N,) or None)}."""
    was = net.training
    net.eval()
    device = device or net.prototypes.device
    units: dict[int, list] = {}
    evidence: dict[int, list] = {}
    for x, mask, y, _ in loader:
        x, mask, y = x.to(device), mask.to(device), y.to(device)
        f = net.features(x)
        z = net.add_on(f)  # (B, D, H, W)
        inside = net.inside(mask, z.shape[-2:])
        inside = torch.ones_like(z[:, :1], dtype=torch.bool) if inside is None else inside
        ev = None
        if probe is not None:
            p = probe(f)
            ev = p[:, positive] - p[:, reference]  # (B, H, W)
        for c in y.unique().tolist():
            sel = y == c
            keep = inside[sel, 0]  # (b, H, W)
            units.setdefault(c, []).append(z[sel].permute(0, 2, 3, 1)[keep])
            if ev is not None:
                evidence.setdefault(c, []).append(ev[sel][keep])
    net.train(was)
    return {c: (torch.cat(u), torch.cat(evidence[c]) if c in evidence else None) for c, u in units.items()}


@torch.no_grad()
def initial_prototypes(
    net, loader, method: str = "evidence", probe=None, positive: int = 1, quantile: float = 0.9, seed: int = 0
) -> torch.Tensor:
    """(P, D) prototypes for ``net`` (its ``prototype_class`` gives how many per class)."""
    if method not in INIT_METHODS:
        raise ValueError(f"prototypes.init must be one of {INIT_METHODS}, got '{method}'")
    if method == "random":
        return net.prototypes.detach().clone()
    patches = latent_patches(net, loader, probe, positive)
    out = net.prototypes.detach().clone()
    for c in net.prototype_class.unique().tolist():
        where = (net.prototype_class == c).nonzero().flatten()
        if c not in patches:
            raise ValueError(f"no cell of class {c} to initialise its prototypes from")
        units, ev = patches[c]
        if method == "evidence" and c == positive and ev is not None and len(ev) >= 4 * len(where):
            units = units[ev >= torch.quantile(ev.float(), quantile)]
        out[where] = kmeans(units, len(where), seed=seed + c).to(out.dtype)
    return out
