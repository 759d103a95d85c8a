"""Analytic receptive field of a convolutional feature extractor.

For a chain of layers with kernel k, stride s, padding p and dilation d, the receptive field r, the
jump j (input pixels between neighbouring output units) and the centre ``start`` of output unit 0
(in input pixel coordinates, pixel centres at integers) follow

    r' = r + (k - 1) d j,    j' = j s,    start' = start + ((k - 1) d / 2 - p) j

Branching blocks take their longest path: a ResNet block's main path (its 1×1 shortcut sees
less), a DenseNet block the chain of all its 3×3 layers (each layer sees every earlier output).
Unit (i, k) of the output is centred at input pixel (start + i j, start + k j) and sees the
square of side r around it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch.nn as nn
from torchvision.models.densenet import _DenseBlock, _DenseLayer
from torchvision.models.resnet import BasicBlock, Bottleneck


@dataclass(frozen=True)
class ReceptiveField:
    size: float = 1.0  # side of the square an output unit sees, in input pixels
    jump: float = 1.0  # input pixels between neighbouring output units
    start: float = 0.0  # centre of output unit 0, in input pixels

    def then(self, k: int, s: int, p: int, d: int = 1) -> ReceptiveField:
        return ReceptiveField(
            self.size + (k - 1) * d * self.jump, self.jump * s, self.start + ((k - 1) * d / 2 - p) * self.jump
        )

    def centre(self, i: int) -> float:
        return self.start + i * self.jump

    def box(self, iy: int, ix: int, clip: int | None = None) -> tuple[int, int, int, int]:
        """Pixel box (y0, x0, y1, x1), end-exclusive, seen by latent unit (iy, ix); clipped to
        [0, clip) when ``clip`` is given."""
        half = self.size / 2
        cy, cx = self.centre(iy), self.centre(ix)
        y0, x0 = int(round(cy - half + 0.5)), int(round(cx - half + 0.5))
        y1, x1 = y0 + int(self.size), x0 + int(self.size)
        if clip is not None:
            y0, x0, y1, x1 = max(0, y0), max(0, x0), min(clip, y1), min(clip, x1)
        return y0, x0, y1, x1

    def as_dict(self) -> dict:
        return {"size": self.size, "jump": self.jump, "start": self.start}


def _pair(v):
    return v[0] if isinstance(v, tuple) else v


def layer_ops(module: nn.Module) -> list[tuple[int, int, int, int]]:
    """(k, s, p, d) of every spatial op on the longest path through ``module``, in order."""
    if isinstance(module, nn.Conv2d):
        return [(_pair(module.kernel_size), _pair(module.stride), _pair(module.padding), _pair(module.dilation))]
    if isinstance(module, nn.MaxPool2d):
        return [(_pair(module.kernel_size), _pair(module.stride), _pair(module.padding), _pair(module.dilation))]
    if isinstance(module, nn.AvgPool2d):
        return [(_pair(module.kernel_size), _pair(module.stride), _pair(module.padding), 1)]
    if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        raise ValueError("an adaptive pooling layer has no fixed receptive field: cut the backbone before it")
    if isinstance(module, BasicBlock):
        return layer_ops(module.conv1) + layer_ops(module.conv2)
    if isinstance(module, Bottleneck):
        return layer_ops(module.conv1) + layer_ops(module.conv2) + layer_ops(module.conv3)
    if isinstance(module, (_DenseBlock, _DenseLayer, nn.Sequential, nn.ModuleList, nn.ModuleDict)):
        return [op for child in module.children() for op in layer_ops(child)]
    if any(isinstance(module, t) for t in (nn.Conv1d, nn.Conv3d, nn.ConvTranspose2d)):
        raise ValueError(f"receptive field of {type(module).__name__} is not supported")
    ops = []
    for child in module.children():  # e.g. BatchNorm/ReLU have none; unknown containers recurse
        ops += layer_ops(child)
    return ops


def receptive_field(layers, rf: ReceptiveField | None = None) -> ReceptiveField:
    """Receptive field after ``layers`` (a module or an iterable of modules)."""
    rf = rf or ReceptiveField()
    modules = [layers] if isinstance(layers, nn.Module) else list(layers)
    for m in modules:
        for k, s, p, d in layer_ops(m):
            rf = rf.then(k, s, p, d)
    return rf


def locality(rf: ReceptiveField, crop_size: int) -> dict:
    """Can a prototype be a *part* of a cell? ``local`` is False when one latent unit sees the whole
    crop (receptive field ≥ crop): every prototype then compares whole cells and its "box" is the
    crop, whatever the figures draw. ``warning`` says so with the fixes."""
    latent = max(1, int(crop_size // rf.jump))
    out: dict[str, Any] = {
        "receptive_field": float(rf.size),
        "crop_size": int(crop_size),
        "latent_size": latent,
        "local": bool(rf.size < crop_size),
    }
    if not out["local"]:
        out["warning"] = (
            f"the receptive field ({rf.size:.0f} px, a {latent}×{latent} latent grid) covers the whole "
            f"{crop_size} px crop: every prototype compares whole cells, so its box and heat map "
            f"cannot show a part of a cell; set backbone.max_rf (e.g. {max(8, crop_size * 3 // 4)}), "
            "a larger data.crop_size, or backbone=vgg11_narrow (46 px)"
        )
    return out
