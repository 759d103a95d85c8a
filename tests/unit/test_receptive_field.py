import copy

import pytest
import torch
import torch.nn as nn

from protocell.model.backbones import BACKBONES, BackboneError, build_backbone
from protocell.model.receptive_field import ReceptiveField, receptive_field


def backbone(name: str, **kw):
    """``build_backbone`` with every setting spelt out: the full-width network, no receptive-field limit,
    no ImageNet weights, batch norm — ``kw`` overrides (the library's function has no defaults of its own)."""
    settings = {"in_channels": 2, "pretrained": False, "max_rf": None, "width": 1.0, "batch_norm": True}
    return build_backbone(name, **{**settings, **kw})


def probe_net(features: nn.Module) -> nn.Module:
    """A copy of ``features`` whose gradient reaches every input pixel of a unit's RF: max
    pools pass gradient to one input only, so they are swapped for average pools of the same
    geometry; weights are made positive so that no path cancels. Single precision: the same boxes as double
    on every backbone here (the smallest border gradient, ≈ 9^-30, is far above its range's floor) at 2.5×
    the speed."""
    net = copy.deepcopy(features).float().eval()
    for _name, m in list(net.named_modules()):
        for cname, child in list(m.named_children()):
            if isinstance(child, nn.MaxPool2d):
                setattr(m, cname, nn.AvgPool2d(child.kernel_size, child.stride, child.padding))
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.constant_(m.weight, 1.0 / (m.in_channels * m.kernel_size[0] * m.kernel_size[1]))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return net


def gradient_box(features: nn.Module, in_channels: int, size: int, iy: int, ix: int) -> tuple[int, int, int, int]:
    """(y0, x0, y1, x1), end-exclusive: the input pixels whose gradient reaches latent unit (iy, ix)."""
    x = torch.ones(1, in_channels, size, size, dtype=torch.float32, requires_grad=True)
    probe_net(features)(x)[0, :, iy, ix].sum().backward()
    rows = (x.grad[0].abs().sum(0).sum(1) > 0).nonzero().flatten()
    cols = (x.grad[0].abs().sum(0).sum(0) > 0).nonzero().flatten()
    return int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1


def empirical_rf(features: nn.Module, in_channels: int, size: int) -> int:
    """Side of the input region that reaches the centre latent unit, by gradient."""
    net = probe_net(features)
    x = torch.ones(1, in_channels, size, size, dtype=torch.float32, requires_grad=True)
    out = net(x)
    h, w = out.shape[-2:]
    out[0, :, h // 2, w // 2].sum().backward()
    cols = (x.grad[0].abs().sum(0).sum(0) > 0).nonzero().flatten()
    return int(cols.max() - cols.min() + 1)


def test_vgg11_receptive_field_is_150():
    assert backbone("vgg11").rf.size == 150
    assert backbone("vgg11_narrow", width=0.125).rf.size == 150


@pytest.mark.parametrize(
    "name,size",
    [
        ("vgg11_narrow", 320),
        ("vgg11", 320),
        ("resnet18", 800),
        pytest.param("resnet50", 800, marks=pytest.mark.slow),  # 10-12 s each: make test, not make test-fast
        pytest.param("vgg16", 448, marks=pytest.mark.slow),
    ],
)
def test_analytic_rf_matches_gradient_rf(name, size):
    b = backbone(name, width=0.125)
    assert empirical_rf(b.features, 2, size) == b.rf.size


def test_densenet_rf_matches_gradient_rf_on_a_cut():
    # the whole DenseNet-121 sees 2071 px: check its first two dense blocks exactly (a 2071-px
    # input would take minutes); the same rule composes the later blocks
    b = backbone("densenet121", max_rf=400)
    assert b.rf.size <= 400
    assert empirical_rf(b.features, 2, 640) == b.rf.size
    assert backbone("densenet121").rf.size == 2071


def test_max_rf_cuts_at_the_deepest_layer_within_the_limit():
    for limit, expect in [(30, 30), (46, 46), (50, 46), (149, 134), (150, 150)]:
        assert backbone("vgg11_narrow", width=0.125, max_rf=limit).rf.size == expect
    with pytest.raises(BackboneError, match="max_rf"):
        backbone("vgg11_narrow", max_rf=2)


def test_rf_box_is_centred_and_clipped():
    rf = ReceptiveField(size=30, jump=8, start=3.5)
    y0, x0, y1, x1 = rf.box(3, 4)
    assert (y1 - y0, x1 - x0) == (30, 30)
    assert abs((y0 + y1 - 1) / 2 - rf.centre(3)) <= 0.5 and abs((x0 + x1 - 1) / 2 - rf.centre(4)) <= 0.5
    assert rf.box(0, 7, clip=64) == (0, max(0, rf.box(0, 7)[1]), rf.box(0, 7)[2], 64)


def test_unknown_backbone_lists_the_choices():
    with pytest.raises(BackboneError, match="vgg11"):
        backbone("alexnet")
    assert set(BACKBONES) >= {"vgg11", "vgg16", "densenet121", "resnet18", "resnet50"}


def test_receptive_field_of_a_plain_chain():
    layers = [nn.Conv2d(1, 1, 3, padding=1), nn.MaxPool2d(2), nn.Conv2d(1, 1, 3, dilation=2)]
    rf = receptive_field(layers)
    assert (rf.size, rf.jump) == (3 + 1 + 2 * 2 * 2, 2)


def test_rf_box_of_a_latent_unit_is_where_its_gradient_lands():
    """Position, not only size: the box ``rf.box(iy, ix)`` of a unit inside the image is exactly the
    input region its gradient reaches (the start offset and jump, not just the RF size), also
    through a padded, dilated convolution."""
    b = backbone("vgg11_narrow", width=0.125)
    assert b.rf.box(7, 10) == gradient_box(b.features, 2, 512, 7, 10)  # away from the borders
    chain = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), nn.MaxPool2d(2), nn.Conv2d(1, 1, 3, padding=2, dilation=2))
    rf = receptive_field(list(chain))
    assert rf.box(6, 9) == gradient_box(chain, 1, 40, 6, 9)


def test_locality_of_the_cards_vgg11_on_64_px_crops_and_of_the_cpu_default():
    """`python train.py backbone=vgg11 mask=on` on the built-in 64 px crops: a 150 px receptive field,
    a 2×2 latent grid, no part of a cell to show (issue 22.7); the narrow default (46 px) is local."""
    from protocell.model.receptive_field import locality

    full = locality(backbone("vgg11").rf, 64)
    assert full["receptive_field"] == 150 and full["latent_size"] == 2 and not full["local"]
    assert "backbone.max_rf" in full["warning"] and "vgg11_narrow" in full["warning"]
    cut = locality(backbone("vgg11", max_rf=48).rf, 64)
    assert cut["local"] and "warning" not in cut
    assert locality(backbone("vgg11_narrow", width=0.125, max_rf=46).rf, 64)["local"]
