"""The objective's terms against direct loops over cells, bags and prototype pairs (written for the
mutants that survived the first mutation-testing pass, docs/reliability.md)."""

import math

import pytest
import torch
import torch.nn.functional as F

from protocell.model.losses import bag_evidence, cluster_separation, diversity, last_layer_l1, mil_loss, protopnet_loss
from protocell.model.prototypes import latent_inside, log_similarity


def test_bag_evidence_and_its_defaults():
    logits = torch.tensor([[0.0, 1.0, 5.0], [2.0, -1.0, 0.5], [1.0, 1.0, 1.0], [3.0, 0.0, -2.0]])
    assert torch.equal(bag_evidence(logits, 2), torch.tensor([[1.0, -3.0], [0.0, -3.0]]))  # positive 1 − reference 0
    assert torch.equal(bag_evidence(logits, 2, positive=2, reference=1), torch.tensor([[4.0, 1.5], [0.0, -2.0]]))
    with pytest.raises(ValueError, match="a batch of 4 cells is not made of bags of 3"):
        bag_evidence(logits, 3)


def test_mil_loss_equals_a_loop_over_bags():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 3, generator=g)
    labels = torch.tensor([2, 2, 2, 0, 0, 0])
    loss, attention = mil_loss(logits, labels, 3, positive=2, reference=1)
    total, att = 0.0, []
    for b in range(2):
        ev = [float(logits[3 * b + i, 2] - logits[3 * b + i, 1]) for i in range(3)]
        bag_logit = math.log(sum(math.exp(e) for e in ev)) - math.log(3)
        y = 1.0 if labels[3 * b] == 2 else 0.0
        total += -(y * math.log(1 / (1 + math.exp(-bag_logit))) + (1 - y) * math.log(1 / (1 + math.exp(bag_logit))))
        att += [3 * math.exp(e) / sum(math.exp(x) for x in ev) for e in ev]
    assert float(loss) == pytest.approx(total / 2, rel=1e-6)
    assert torch.allclose(attention, torch.tensor(att), rtol=1e-6) and not attention.requires_grad
    ce, ones = mil_loss(logits, labels, 1)
    assert float(ce) == pytest.approx(float(F.cross_entropy(logits, labels)))
    assert ones.dtype == logits.dtype and torch.equal(ones, torch.ones(6))


def test_cluster_and_separation_with_weights_and_without_any_reference_cell():
    min_d = torch.tensor([[1.0, 2.0, 0.5, 3.0], [4.0, 0.1, 2.0, 1.0], [0.3, 0.2, 0.9, 0.7]])
    cls = torch.tensor([0, 0, 1, 1])
    labels = torch.tensor([0, 1, 1])
    w = torch.tensor([5.0, 0.25, 0.5])  # the reference cell's weight is forced to 1
    clst, sep = cluster_separation(min_d, labels, cls, w, separation="reference")
    assert float(clst) == pytest.approx((1 * 1.0 + 0.25 * 1.0 + 0.5 * 0.7) / (1 + 0.25 + 0.5))
    assert float(sep) == pytest.approx(0.5)  # the reference cell's nearest exposed prototype
    small = torch.tensor([0.1, 0.2, 0.3])  # weights summing below 1 are not clamped up
    clst, _ = cluster_separation(min_d[1:], labels[1:], cls, small[1:])
    assert float(clst) == pytest.approx((0.2 * 1.0 + 0.3 * 0.7) / 0.5)
    clst, sep = cluster_separation(min_d[1:], labels[1:], cls, None, separation="reference")
    assert float(sep) == 0.0 and sep.requires_grad is False and not torch.isnan(sep)


def test_diversity_equals_a_loop_over_same_class_pairs():
    g = torch.Generator().manual_seed(1)
    protos = torch.randn(7, 5, generator=g)
    cls = torch.tensor([0, 0, 0, 1, 1, 1, 2])  # class 2 has one prototype: no pair
    terms = []
    for c in (0, 1):
        idx = [i for i in range(7) if cls[i] == c]
        pairs = [(i, j) for i in idx for j in idx if i != j]
        cos = [float(F.cosine_similarity(protos[i], protos[j], dim=0)) for i, j in pairs]
        terms.append(sum(max(x, 0.0) ** 2 for x in cos) / len(pairs))
    assert float(diversity(protos, cls)) == pytest.approx(sum(terms) / 2, rel=1e-5)
    same = torch.ones(3, 5)
    assert float(diversity(same, torch.tensor([0, 0, 0]))) == pytest.approx(1.0)
    assert float(diversity(protos[:2], torch.tensor([0, 1]))) == 0.0  # no pair at all: 0, not nan


def test_last_layer_l1_with_a_class_without_prototypes():
    w = torch.tensor([[1.0, -2.0], [0.5, 0.25], [3.0, 3.0]])  # 3 classes, prototypes of 0 and 1
    assert float(last_layer_l1(w, torch.tensor([0, 1]))) == 2.0 + 0.5 + 3.0 + 3.0


def test_protopnet_loss_adds_its_terms_with_their_weights():
    g = torch.Generator().manual_seed(2)
    logits, min_d = torch.randn(4, 2, generator=g), torch.rand(4, 4, generator=g)
    labels, cls = torch.tensor([1, 1, 0, 0]), torch.tensor([0, 0, 1, 1])
    w, protos = torch.randn(2, 4, generator=g), torch.randn(4, 3, generator=g)
    out = protopnet_loss(
        logits, min_d, labels, cls, w, protos, clst=0.7, sep=0.2, l1=0.01, div=0.3, bag_size=2, separation="reference"
    )
    ce, att = mil_loss(logits, labels, 2)
    c, s = cluster_separation(min_d, labels, cls, att, 0, "reference")
    assert float(out["ce"]) == float(ce) and float(out["clst"]) == float(c) and float(out["sep"]) == float(s)
    assert float(out["l1"]) == float(last_layer_l1(w, cls)) and float(out["div"]) == float(diversity(protos, cls))
    expected = ce + 0.7 * c - 0.2 * s + 0.01 * last_layer_l1(w, cls) + 0.3 * diversity(protos, cls)
    assert float(out["loss"]) == pytest.approx(float(expected), rel=1e-6)
    off = protopnet_loss(logits, min_d, labels, cls, w, protos, l1=0.0, div=0.0)  # per cell, terms off
    assert float(off["l1"]) == 0.0 and float(off["div"]) == 0.0
    c1, s1 = cluster_separation(min_d, labels, cls)
    assert float(off["loss"]) == pytest.approx(float(F.cross_entropy(logits, labels) + 0.8 * c1 - 0.08 * s1), rel=1e-6)


def test_latent_inside_edges_half_covered_units_two_d_masks_and_empty_cells():
    mask = torch.zeros(1, 8, 8)  # (B, S, S): no channel axis
    mask[0, :, :1] = 1  # column 0: half of each 2×2 footprint of latent column 0
    inside = latent_inside(mask, (4, 4))
    assert inside.shape == (1, 1, 4, 4) and inside[0, 0, :, 0].all() and inside[0, 0].sum() == 4
    mask[0, :2, 6:] = 1  # a fully covered unit: half-covered ones are not the best
    inside = latent_inside(mask, (4, 4))
    assert inside[0, 0, :, 0].all() and inside[0, 0, 0, 3] and inside[0, 0].sum() == 5  # ≥ 0.5 counts
    assert not latent_inside(torch.zeros(2, 1, 8, 8), (4, 4)).any()  # an empty mask: no inside unit


def test_log_similarity_values():
    d = torch.tensor([0.0, 1.0, 3.0])
    assert torch.allclose(log_similarity(d), torch.log((d + 1) / (d + 1e-4)))
    assert float(log_similarity(torch.tensor(1.0))) == pytest.approx(math.log(2 / 1.0001))


def test_protopnet_loss_defaults_and_other_class_indices():
    g = torch.Generator().manual_seed(4)
    logits, min_d = torch.randn(4, 2, generator=g), torch.rand(4, 4, generator=g)
    labels, cls = torch.tensor([0, 0, 1, 1]), torch.tensor([0, 0, 1, 1])
    w, protos = torch.randn(2, 4, generator=g), torch.randn(4, 3, generator=g)
    out = protopnet_loss(logits, min_d, labels, cls, w, protos)  # l1 = 1e-4, div off by default
    c, s = cluster_separation(min_d, labels, cls)
    expected = F.cross_entropy(logits, labels) + 0.8 * c - 0.08 * s + 1e-4 * last_layer_l1(w, cls)
    assert float(out["loss"]) == pytest.approx(float(expected), rel=1e-6) and float(out["div"]) == 0.0
    # exposed = class 0, reference = class 1: the bag loss and the separation follow the indices given
    swapped = protopnet_loss(logits, min_d, labels, cls, w, bag_size=2, separation="reference", positive=0, reference=1)
    ce, att = mil_loss(logits, labels, 2, positive=0, reference=1)
    c, s = cluster_separation(min_d, labels, cls, att, reference=1, separation="reference")
    assert (
        float(swapped["ce"]) == float(ce) and float(swapped["clst"]) == float(c) and float(swapped["sep"]) == float(s)
    )
