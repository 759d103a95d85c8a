"""Backbones f: torchvision feature extractors by name, cut by receptive field.

``build_backbone(name, *, in_channels, pretrained, max_rf, width, batch_norm)`` (every setting given:
``backbone.*``) returns a ``Backbone``: an ``nn.Sequential`` of stages, its output channel count and
its analytic ``ReceptiveField``.
Input ``x: (B, C_in, H, W)`` → ``f(x): (B, C_out, H / jump, W / jump)``.

Registry: ``vgg11``, ``vgg11_bn``, ``vgg16``, ``vgg16_bn``, ``resnet18``, ``resnet50``,
``densenet121`` and ``vgg11_narrow`` (VGG-11's layout from torchvision's ``make_layers`` with
channels divided by ``1/width``: the same receptive field at a fraction of the cost; the CPU
default). Cuts happen between stages: VGG layers, ResNet stem layers and residual blocks, DenseNet
stem layers, dense blocks and transitions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torchvision
from torchvision.models import vgg as tv_vgg

from protocell.errors import ProtocellError
from protocell.model.receptive_field import ReceptiveField, receptive_field


class BackboneError(ProtocellError):
    """A backbone that cannot be built as configured; the message says what to do."""


@dataclass
class Backbone:
    features: nn.Sequential
    out_channels: int
    rf: ReceptiveField
    name: str


def _vgg_stages(model) -> list[nn.Module]:
    return list(model.features.children())


def _resnet_stages(model) -> list[nn.Module]:
    stem = [model.conv1, model.bn1, model.relu, model.maxpool]
    blocks = [b for layer in (model.layer1, model.layer2, model.layer3, model.layer4) for b in layer]
    return stem + blocks


def _densenet_stages(model) -> list[nn.Module]:
    return list(model.features.children()) + [nn.ReLU(inplace=False)]


_FAMILIES = {
    "vgg11": _vgg_stages,
    "vgg11_bn": _vgg_stages,
    "vgg16": _vgg_stages,
    "vgg16_bn": _vgg_stages,
    "resnet18": _resnet_stages,
    "resnet50": _resnet_stages,
    "densenet121": _densenet_stages,
}
BACKBONES = sorted(list(_FAMILIES) + ["vgg11_narrow"])


def _output_channels(stages: list[nn.Module], in_channels: int) -> int:
    with torch.no_grad():
        was = [m.training for m in stages]
        seq = nn.Sequential(*stages).eval()
        c = seq(torch.zeros(1, in_channels, 64, 64)).shape[1]
        for m, t in zip(stages, was):
            m.train(t)
    return c


def adapt_first_conv(stages: list[nn.Module], in_channels: int) -> None:
    """Replace the first convolution with one taking ``in_channels``; pretrained RGB filters are
    averaged over colour and repeated, so every input channel starts with the ImageNet filters."""

    def visit(parent):
        for name, child in parent.named_children():
            if isinstance(child, nn.Conv2d):
                if child.in_channels == in_channels:
                    return True
                new = nn.Conv2d(
                    in_channels,
                    child.out_channels,
                    child.kernel_size,
                    child.stride,
                    child.padding,
                    child.dilation,
                    child.groups,
                    child.bias is not None,
                )
                with torch.no_grad():
                    mean = child.weight.mean(dim=1, keepdim=True)
                    new.weight.copy_(mean.repeat(1, in_channels, 1, 1))
                    if child.bias is not None:
                        new.bias.copy_(child.bias)
                setattr(parent, name, new)
                return True
            if visit(child):
                return True
        return False

    holder = nn.Sequential(*stages)
    visit(holder)
    stages[:] = list(holder.children())


def weights_file(name: str) -> Path:
    """Where torchvision keeps the DEFAULT ImageNet weights of ``name`` (under $TORCH_HOME)."""
    weights = torchvision.models.get_model_weights(name).DEFAULT
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name


def _load_torchvision(name: str, pretrained: bool):
    if not pretrained:
        return torchvision.models.get_model(name, weights=None)
    weights = torchvision.models.get_model_weights(name).DEFAULT
    path = weights_file(name)
    try:
        return torchvision.models.get_model(name, weights=weights)
    except Exception as err:  # offline (URLError), proxy, or a truncated file
        raise BackboneError(
            f"could not load ImageNet weights for backbone '{name}': {err}.\n"
            f"Expected the file {path}. On a machine with internet run\n"
            f"  python -c \"import torchvision; torchvision.models.get_model('{name}', weights='DEFAULT')\"\n"
            f"or download {weights.url} and copy it to {path} (set TORCH_HOME to change the folder).\n"
            f"To train from scratch instead, set backbone.pretrained=false."
        ) from err


def _narrow_vgg11(width: float, batch_norm: bool) -> list[nn.Module]:
    layout = [v if v == "M" else max(4, int(round(v * width))) for v in tv_vgg.cfgs["A"]]
    features = tv_vgg.make_layers(layout, batch_norm=batch_norm)
    # torchvision's VGG init; make_layers alone keeps PyTorch's default init, which trains poorly
    for m in features.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            assert m.bias is not None  # make_layers' convs have a bias
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return list(features.children())


def build_backbone(
    name: str,
    *,
    in_channels: int,
    pretrained: bool,
    max_rf: float | None,
    width: float,
    batch_norm: bool,
) -> Backbone:
    if name == "vgg11_narrow":
        if pretrained:
            raise BackboneError(
                "vgg11_narrow has no pretrained weights: set backbone.pretrained=false "
                "or use backbone=vgg11 for ImageNet weights"
            )
        if not 0 < width <= 1:
            raise BackboneError(f"backbone.width must be in (0, 1], got {width}")
        stages = _narrow_vgg11(width, batch_norm)
    elif name in _FAMILIES:
        stages = _FAMILIES[name](_load_torchvision(name, pretrained))
    else:
        raise BackboneError(f"unknown backbone '{name}'; choose one of {BACKBONES}")
    adapt_first_conv(stages, in_channels)

    if max_rf is not None:
        rf, keep = ReceptiveField(), 0
        for i, stage in enumerate(stages):
            rf = receptive_field(stage, rf)
            if rf.size <= max_rf:
                keep = i + 1
        # drop trailing activations/norms only if the cut fell right after a conv: keep the ReLU
        while (
            keep < len(stages)
            and isinstance(stages[keep], (nn.ReLU, nn.BatchNorm2d))
            and receptive_field(stages[: keep + 1]).size <= max_rf
        ):
            keep += 1
        if keep == 0:
            raise BackboneError(f"backbone.max_rf={max_rf} is smaller than the first layer's receptive field")
        stages = stages[:keep]
    features = nn.Sequential(*stages)
    return Backbone(features, _output_channels(stages, in_channels), receptive_field(stages), name)
