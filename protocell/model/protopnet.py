"""ProtoPNet: backbone f → add-on → prototype layer g (with the cell mask) → last layer h.

Shapes, for crops ``x: (B, C, S, S)`` and masks ``m: (B, 1, S, S)``:

    f(x)            (B, C_f, H, W)        H = W = S / rf.jump (backbone)
    z = add_on(f)   (B, D, H, W)          1×1 convs ending in a sigmoid, so z ∈ [0, 1]^D
    d = g(z, m)     (B, P, H, W)          masked squared distances (see ``prototypes``)
    min_d           (B, P)                global min pooling
    s               (B, P)                log similarity
    logits = h(s)   (B, K)                last layer, no bias

Prototype j belongs to class ``prototype_class[j]`` (P = K × prototypes per class). The push
provenance (source cell id, latent position, distance, pixel box) lives in buffers next to the
prototypes, so checkpoints and ``prototypes.pt`` carry it.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn as nn

from protocell.model.backbones import Backbone, build_backbone
from protocell.model.prototypes import latent_inside, log_similarity, masked_distances, squared_distances


class ProtoPNet(nn.Module):
    # buffers (register_buffer): each prototype's class, and push's provenance
    prototype_class: torch.Tensor  # (P,)
    proto_cell_id: torch.Tensor  # (P,)
    proto_latent_yx: torch.Tensor  # (P, 2)
    proto_distance: torch.Tensor  # (P,)
    pushes: torch.Tensor  # ()

    def __init__(
        self,
        backbone: Backbone,
        *,
        num_classes: int,
        prototypes_per_class: int,
        prototype_dim: int,
        use_mask: bool,
        mask_penalty: float | None,
        incorrect_class_weight: float,
    ):
        super().__init__()
        self.features = backbone.features
        self.rf = backbone.rf
        self.backbone_name = backbone.name
        self.num_classes = num_classes
        self.use_mask = use_mask
        # any squared distance is ≤ D (sigmoid features): D + 1 puts every outside unit behind
        self.mask_penalty = float(mask_penalty) if mask_penalty is not None else float(prototype_dim + 1)
        c = backbone.out_channels
        self.add_on = nn.Sequential(
            nn.Conv2d(c, prototype_dim, 1),
            nn.ReLU(),
            nn.Conv2d(prototype_dim, prototype_dim, 1),
            nn.Sigmoid(),
        )
        for m in self.add_on.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                assert m.bias is not None  # nn.Conv2d's default bias=True
                nn.init.zeros_(m.bias)
        P = num_classes * prototypes_per_class
        self.prototypes = nn.Parameter(torch.rand(P, prototype_dim))
        self.register_buffer("prototype_class", torch.arange(num_classes).repeat_interleave(prototypes_per_class))
        self.last_layer = nn.Linear(P, num_classes, bias=False)
        self.incorrect_class_weight = incorrect_class_weight
        self.set_last_layer_incorrect_connection(incorrect_class_weight)
        # push provenance, filled by push (-1 / nan until then)
        self.register_buffer("proto_cell_id", torch.full((P,), -1, dtype=torch.long))
        self.register_buffer("proto_latent_yx", torch.full((P, 2), -1, dtype=torch.long))
        self.register_buffer("proto_distance", torch.full((P,), float("nan")))
        self.register_buffer("pushes", torch.zeros((), dtype=torch.long))

    @property
    def class_identity(self) -> torch.Tensor:
        """(P, K) one-hot of each prototype's class."""
        return torch.nn.functional.one_hot(self.prototype_class, self.num_classes).float()

    def set_last_layer_incorrect_connection(self, incorrect: float) -> None:
        """Last layer = 1 for a prototype's own class, ``incorrect`` (−0.5) for the others."""
        ident = self.class_identity.t()
        with torch.no_grad():
            self.last_layer.weight.copy_(ident + incorrect * (1 - ident))

    def latent(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, S, S) → z: (B, D, H, W)."""
        return self.add_on(self.features(x))

    def inside(self, mask: torch.Tensor | None, size: tuple[int, ...]) -> torch.Tensor | None:
        """Which latent units of size (H, W) (a latent's ``shape[-2:]``) lie inside the cell; None without
        the mask term."""
        hw = cast(tuple[int, int], size)
        return latent_inside(mask, hw) if (self.use_mask and mask is not None) else None

    def distances(self, z: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Masked squared distances (B, P, H, W) of latent z to every prototype."""
        d = squared_distances(z, self.prototypes)
        return masked_distances(d, self.inside(mask, z.shape[-2:]), self.mask_penalty)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        z = self.latent(x)
        d = self.distances(z, mask)
        min_d = d.flatten(2).amin(dim=2)
        sim = log_similarity(min_d)
        return {"logits": self.last_layer(sim), "min_distances": min_d, "similarities": sim, "distances": d}


def build_protopnet(backbone: dict, head: dict, in_channels: int, num_classes: int) -> ProtoPNet:
    """The network from plain arguments: ``backbone`` for ``build_backbone`` (name, pretrained, max_rf,
    width, …), ``head`` for ``ProtoPNet`` (prototypes_per_class, prototype_dim, use_mask, …)."""
    return ProtoPNet(build_backbone(in_channels=in_channels, **backbone), num_classes=num_classes, **head)
