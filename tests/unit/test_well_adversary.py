"""The within-condition well adversary (``loss.well_adversary``): its targets, its masking to the
wells of the cell's own condition, and the gradient reversal, against direct computations."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import TINY_SPEC


def module(weight=1.0, wells=4):
    from protocell.model.module import ProtoPNetModule

    torch.manual_seed(0)
    return ProtoPNetModule(TINY_SPEC, class_names=["Ref", "Exp"], well_adversary=weight, adversary_wells=wells)


def batch(n=8):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(n, 2, 64, 64, generator=g)
    mask = torch.zeros(n, 1, 64, 64)
    mask[:, :, 12:52, 12:52] = 1
    return x, mask


def test_off_by_default_and_no_parameters_then():
    from protocell.model.module import ProtoPNetModule

    plain = ProtoPNetModule(TINY_SPEC, class_names=["Ref", "Exp"])
    assert plain.adversary is None and "adversary" not in plain.groups()
    assert module().adversary is not None and "adversary" in module().groups()


def test_targets_are_the_cells_wells_among_the_wells_of_their_condition():
    m = module()
    # cells 10..17 in wells R/1, R/2 (Ref) and E/1, E/2 (Exp); cell ids out of order on purpose
    ids = np.array([17, 10, 11, 12, 13, 14, 15, 16])
    wells = np.array(["E/2", "R/1", "R/1", "R/2", "R/2", "E/1", "E/1", "E/2"])
    labels = np.array([1, 0, 0, 0, 0, 1, 1, 1])
    m.set_training_wells(ids, wells, labels)
    assert m.well_condition.tolist() == [1, 1, 0, 0]                  # E/1, E/2, R/1, R/2
    x, mask = batch()
    cell = torch.tensor([10, 11, 12, 13, 14, 15, 16, 17])
    y = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    m.train()
    m.probe_logits(x, mask)                                              # the features the hook keeps
    feats = m._features.detach()
    ce, acc = m.adversary_loss(mask, y, cell)
    # by hand: the head's in-cell mean logits, other-condition wells excluded, targets by well
    g = m.adversary(feats)
    inside = m.net.inside(mask, g.shape[-2:]).float()
    logits = (g * inside).sum((2, 3)) / inside.sum((2, 3))
    target = torch.tensor([2, 2, 3, 3, 0, 0, 1, 1])
    allowed = torch.tensor([[0, 0, 1, 1]] * 4 + [[1, 1, 0, 0]] * 4, dtype=torch.bool)
    want = F.cross_entropy(logits.masked_fill(~allowed, float("-inf")), target)
    assert ce.item() == pytest.approx(want.item(), rel=1e-5)
    assert 0 <= acc.item() <= 1
    # a cell that is not a training cell has no target
    m.probe_logits(x, mask)
    assert m.adversary_loss(mask, y, cell + 1000) is None


def test_the_backbone_works_against_the_adversary_and_the_head_with_it():
    m = module()
    ids = np.arange(8)
    m.set_training_wells(ids, np.array(["R/1"] * 2 + ["R/2"] * 2 + ["E/1"] * 2 + ["E/2"] * 2), np.array([0] * 4 + [1] * 4))
    x, mask = batch()
    y = torch.tensor([0] * 4 + [1] * 4)
    m.train()

    def grads(reverse: bool):
        m.zero_grad()
        if reverse:
            m.probe_logits(x, mask)
            ce, _ = m.adversary_loss(mask, y, torch.arange(8))
        else:                                                            # the same loss without the reversal
            f = m.net.features(x)
            g = m.adversary(f)
            inside = m.net.inside(mask, g.shape[-2:]).float()
            logits = (g * inside).sum((2, 3)) / inside.sum((2, 3))
            same = m.well_condition[None, :] == y[:, None]
            ce = F.cross_entropy(logits.masked_fill(~same, float("-inf")), m.well_index)
        ce.backward()
        first = next(p for p in m.net.features.parameters())
        return first.grad.clone(), m.adversary.weight.grad.clone()

    feat_rev, head_rev = grads(True)
    feat, head = grads(False)
    assert torch.allclose(feat_rev, -feat, atol=1e-6) and feat.abs().sum() > 0     # reversed into the backbone
    assert torch.allclose(head_rev, head, atol=1e-6)                                 # the head learns its guess


def test_a_frozen_adversary_adds_nothing():
    m = module()
    m.set_training_wells(np.arange(8), np.array(["R/1"] * 2 + ["R/2"] * 2 + ["E/1"] * 2 + ["E/2"] * 2),
                         np.array([0] * 4 + [1] * 4))
    m.train()
    x, mask = batch()
    for p in m.adversary.parameters():
        p.requires_grad_(False)
    m.probe_logits(x, mask)
    assert m.adversary_loss(mask, torch.tensor([0] * 4 + [1] * 4), torch.arange(8)) is None
    with pytest.raises(ValueError, match="built for 4 training wells"):
        m.set_training_wells(np.arange(4), np.array(["R/1", "R/2", "E/1", "E/1"]), np.array([0, 0, 1, 1]))
