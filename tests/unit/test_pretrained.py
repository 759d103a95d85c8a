import pytest
import torch
import torchvision

from protocell.model.backbones import BackboneError, build_backbone, weights_file


def backbone(name: str, **kw):
    """``build_backbone`` with every setting spelt out: the full-width network, no receptive-field limit,
    no ImageNet weights, batch norm — ``kw`` overrides (the library's function has no defaults of its own)."""
    settings = {"in_channels": 2, "pretrained": False, "max_rf": None, "width": 1.0, "batch_norm": True}
    return build_backbone(name, **{**settings, **kw})


def test_pretrained_weights_load_through_torchvision_from_a_file_we_place(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    path = weights_file("resnet18")
    assert path.parent == tmp_path / "hub" / "checkpoints"
    reference = torchvision.models.resnet18(weights=None)
    with torch.no_grad():
        reference.conv1.weight.normal_(0.3, 0.01)  # recognisable filters
    path.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), path)
    b = backbone("resnet18", pretrained=True)
    first = b.features[0].weight
    assert first.shape == (64, 2, 7, 7)
    # RGB filters averaged over colour and repeated on both input channels
    expect = reference.conv1.weight.mean(dim=1, keepdim=True).repeat(1, 2, 1, 1)
    assert torch.allclose(first, expect)
    assert torch.equal(b.features[4].conv1.weight, reference.layer1[0].conv1.weight)  # stages: stem, blocks


def test_missing_weights_offline_name_the_file_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    # no network here, and even with one an unreachable proxy makes the download fail fast
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")
    with pytest.raises(BackboneError) as err:
        backbone("vgg11", pretrained=True)
    msg = str(err.value)
    assert "vgg11-8a719046.pth" in msg and str(tmp_path) in msg and "pretrained=false" in msg
    assert not weights_file("vgg11").exists()  # nothing half-written left behind


def test_narrow_backbone_has_no_pretrained_weights():
    with pytest.raises(BackboneError, match="pretrained=false"):
        backbone("vgg11_narrow", pretrained=True)
