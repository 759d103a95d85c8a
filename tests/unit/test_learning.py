"""The pieces that make the network learn the cell, not the well: bag loss and its weights, the
weighted cluster cost, bags of one well, unique push, initial prototypes, the affected fraction."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from protocell.model.losses import cluster_separation, diversity, mil_loss


def test_mil_loss_by_hand_and_per_cell_cross_entropy_for_bags_of_one():
    logits = torch.tensor([[0.0, 2.0], [0.0, -1.0], [1.0, 0.0], [0.0, 0.0]])  # evidence g = 2, -1, -1, 0
    y = torch.tensor([1, 1, 0, 0])
    loss, att = mil_loss(logits, y, bag_size=2)
    bag1 = math.log((math.exp(2) + math.exp(-1)) / 2)  # exposed bag
    bag2 = math.log((math.exp(-1) + math.exp(0)) / 2)  # reference bag
    expected = (-math.log(1 / (1 + math.exp(-bag1))) - math.log(1 - 1 / (1 + math.exp(-bag2)))) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    w1 = math.exp(2) / (math.exp(2) + math.exp(-1))
    assert att.tolist() == pytest.approx(
        [2 * w1, 2 * (1 - w1), 2 * math.exp(-1) / (math.exp(-1) + 1), 2 / (math.exp(-1) + 1)], rel=1e-6
    )
    one, att1 = mil_loss(logits, y, bag_size=1)
    assert one.item() == pytest.approx(torch.nn.functional.cross_entropy(logits, y).item(), rel=1e-6)
    assert torch.equal(att1, torch.ones(4))
    with pytest.raises(ValueError, match="bags of 3"):
        mil_loss(logits, y, bag_size=3)


def test_an_unaffected_cell_of_an_exposed_bag_is_hardly_pushed_towards_exposed():
    """Per-cell cross-entropy pushes every cell of an exposed well up; the bag loss pushes up the
    cell that carries the evidence and leaves the others (nearly) alone."""
    logits = torch.tensor([[0.0, 4.0], [0.0, -2.0], [0.0, -2.0], [0.0, -2.0]], requires_grad=True)
    y = torch.ones(4, dtype=torch.long)
    mil_loss(logits, y, bag_size=4)[0].backward()
    g_bag = logits.grad[:, 1].clone()
    logits.grad = None
    mil_loss(logits, y, bag_size=1)[0].backward()
    g_cell = logits.grad[:, 1]
    assert (g_cell[1:] < -0.2).all()  # per cell: a strong push on every unaffected cell
    assert (g_bag[1:].abs() < 0.01).all() and g_bag[0] < 0  # bag: only the evidence cell moves


def test_weighted_cluster_cost_and_reference_only_separation_by_hand():
    d = torch.tensor([[1.0, 5.0], [2.0, 3.0], [4.0, 0.5], [6.0, 1.5]])  # (B=4, P=2): prototype 0 Ref, 1 Exp
    cls = torch.tensor([0, 1])
    y = torch.tensor([0, 0, 1, 1])
    w = torch.tensor([9.0, 9.0, 1.5, 0.5])  # reference cells always weigh 1
    clst, sep = cluster_separation(d, y, cls, w, separation="reference")
    assert clst.item() == pytest.approx((1 * 1 + 1 * 2 + 1.5 * 0.5 + 0.5 * 1.5) / (1 + 1 + 1.5 + 0.5))
    assert sep.item() == pytest.approx((5 + 3) / 2)  # reference cells to the exposed prototype
    clst_all, sep_all = cluster_separation(d, y, cls, None, separation="all")
    assert clst_all.item() == pytest.approx((1 + 2 + 0.5 + 1.5) / 4)
    assert sep_all.item() == pytest.approx((5 + 3 + 4 + 6) / 4)


def test_diversity_is_zero_for_orthogonal_and_one_for_identical_prototypes():
    cls = torch.tensor([0, 0, 1, 1])
    ortho = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [0, 0, -1.0]])
    assert diversity(ortho, cls).item() == pytest.approx(0.0)
    same = torch.tensor([[1.0, 1, 0], [2.0, 2, 0], [0, 0, 3.0], [0, 0, 1.0]])
    assert diversity(same, cls).item() == pytest.approx(1.0)


def test_bag_sampler_deals_bags_of_one_well_deterministically_and_shards_them_under_ddp():
    from protocell.data.samplers import BagSampler

    groups = np.array(["A"] * 10 + ["B"] * 7 + ["C"] * 3)
    s = BagSampler(groups, bag_size=4, seed=1)
    s.set_epoch(3)
    items = list(s)
    idx = [i for i, _ in items]
    assert all(e == 3 for _, e in items) and len(idx) == len(s) == 12  # 2 + 1 + 0 bags of 4
    bags = [idx[k : k + 4] for k in range(0, len(idx), 4)]
    assert all(len(set(groups[b])) == 1 for b in bags) and len(set(idx)) == len(idx)
    assert idx == [i for i, _ in s]  # same epoch, same order
    s.set_epoch(4)
    assert [i for i, _ in s] != idx  # a new epoch reshuffles
    ranks = [BagSampler(groups, 4, seed=1, rank=r, world=2) for r in range(2)]
    for r in ranks:
        r.set_epoch(3)
    shards = [[i for i, _ in r] for r in ranks]
    assert len(shards[0]) == len(shards[1]) == 8  # 3 bags padded to 4, 2 each
    assert set(shards[0]) | set(shards[1]) == set(idx)
    val = BagSampler(groups, 4, seed=1, shuffle=False)
    val.set_epoch(7)
    assert [i for i, _ in val] == list(range(8)) + list(range(10, 14))  # fixed bags, store order


def test_unique_push_gives_every_prototype_its_own_cell_nearest_first():
    from protocell.training.push import assign_unique

    near = {
        "cell_id": torch.tensor([[5, 5, 7], [6, 8, 5], [9, 9, 8]]),  # (k=3 ranks, P=3)
        "distance": torch.tensor([[0.1, 0.3, 0.2], [0.4, 0.5, 0.6], [0.7, 0.8, 0.9]]),
    }
    pick = assign_unique(near).tolist()
    # prototype 0 (nearest overall) takes cell 5, prototype 2 keeps cell 7, prototype 1 moves to cell 8
    assert pick == [0, 1, 0]
    cells = [int(near["cell_id"][pick[j], j]) for j in range(3)]
    assert len(set(cells)) == 3


def test_unique_push_against_brute_force_on_a_tiny_store(tiny_net, tiny_dm):
    from protocell.model.search import nearest_patches
    from protocell.training.push import push_prototypes

    net = tiny_net
    P = net.prototypes.shape[0]
    before = net.prototypes.detach().clone()
    near = nearest_patches(net, tiny_dm.push_dataloader(), k=P, own_class=True)
    found = push_prototypes(net, tiny_dm.push_dataloader(), unique=True)
    assert len(set(found["cell_id"].tolist())) == P
    # brute force: greedy over prototypes in order of their nearest distance
    taken, expect = set(), {}
    for j in torch.argsort(near["distance"][0], stable=True).tolist():
        cands = [(float(near["distance"][r, j]), int(near["cell_id"][r, j])) for r in range(P)]
        d, c = next((d, c) for d, c in cands if c not in taken)
        taken.add(c)
        expect[j] = c
    assert [expect[j] for j in range(P)] == found["cell_id"].tolist()
    assert not torch.equal(before, net.prototypes)


def test_initial_prototypes_are_k_means_centres_of_their_class_patches(tiny_net, tiny_dm):
    """Reference prototypes: k-means centres of the reference cells' in-cell patches; exposed ones:
    centres of the exposed patches the probe scores highest (top 10 %). At convergence each centre is
    the mean of the patches nearest to it."""
    from protocell.model.init import initial_prototypes, kmeans, latent_patches

    net = tiny_net.eval()
    torch.manual_seed(0)
    probe = torch.nn.Conv2d(net.add_on[0].in_channels, 2, 1)
    protos = initial_prototypes(net, tiny_dm.push_dataloader(), "evidence", probe=probe)
    patches = latent_patches(net, tiny_dm.push_dataloader(), probe)
    for c in (0, 1):
        units, ev = patches[c]
        if c == 1:
            units = units[ev >= torch.quantile(ev, 0.9)]
        centres = protos[net.prototype_class == c]
        assign = torch.cdist(units, centres).argmin(1)
        for j in range(len(centres)):
            assert (assign == j).any()
            assert torch.allclose(centres[j], units[assign == j].mean(0), atol=1e-4), (c, j)
    x = torch.cat([torch.randn(50, 2) + 10, torch.randn(50, 2) - 10])
    c = kmeans(x, 2, seed=0)
    assert sorted(c[:, 0].round().tolist()) == pytest.approx([-10, 10], abs=1)


def test_affected_fraction_recovers_a_known_mixture_with_a_per_well_effect():
    """Scores from a known two-component model (affected ~ N(2.5, 1), unaffected ~ N(−0.5, 1) in logit
    space) in wells with their own affected fractions; the reference is fitted on the well labels
    only, and the condition estimate and CI must bracket the truth."""
    from protocell.evaluate.fraction import affected_fractions, mixture_fraction

    rng = np.random.default_rng(0)
    rows = []
    for w in range(8):
        for cond, rho in (("Ref", 0.05), ("Exp", 0.25 + 0.05 * (w % 3))):  # wells differ in fraction
            n = 300
            aff = rng.random(n) < rho
            s = 1 / (1 + np.exp(-np.where(aff, rng.normal(2.5, 1, n), rng.normal(-0.5, 1, n))))
            rows += [
                {
                    "well": f"{cond}{w}",
                    "condition": cond,
                    "exposed": cond == "Exp",
                    "score": v,
                    "target": True,
                    "true_label": int(a),
                }
                for v, a in zip(s, aff)
            ]
    cells = pd.DataFrame(rows)
    out = affected_fractions(cells, n_boot=100)
    assert out["available"] and out["fit"]["ok"]
    exp = out["conditions"]["Exp"]
    assert abs(exp["error"]) < 0.05 and exp["ci_low"] <= exp["true"] <= exp["ci_high"]
    assert out["conditions"]["Ref"]["estimate"] < 0.12
    per_well = pd.DataFrame(out["wells"])
    assert (per_well["affected_fraction"] - per_well["true"]).abs().mean() < 0.06
    assert mixture_fraction(np.ones(100)) == pytest.approx(0.5)  # no evidence: the start stays
    assert mixture_fraction(np.full(100, 1e6)) == pytest.approx(1.0, abs=1e-3)


def test_reference_similarity_is_the_reference_cells_largest_similarity_to_an_exposed_prototype():
    from protocell.model.losses import reference_similarity
    from protocell.model.prototypes import log_similarity

    d = torch.tensor([[0.1, 3.0, 0.5], [2.0, 1.0, 4.0], [0.0, 0.2, 0.3]])  # prototypes: Ref, Exp, Exp
    cls = torch.tensor([0, 1, 1])
    y = torch.tensor([0, 0, 1])  # the third cell is exposed: ignored
    expected = (log_similarity(torch.tensor(0.5)) + log_similarity(torch.tensor(1.0))) / 2
    assert reference_similarity(d, y, cls).item() == pytest.approx(expected.item())
    far = reference_similarity(d + 1e6, y, cls)
    assert 0 <= far.item() < 1e-5  # bounded: vanishes with distance
    assert reference_similarity(d, torch.tensor([1, 1, 1]), cls).item() == 0.0


def test_an_epoch_of_several_passes_gives_each_pass_its_own_order_and_one_pass_is_the_epoch():
    """data.min_epoch_cells: an epoch of a small plate makes several passes over its training cells, each with
    its own order and its own augmentation stream (the pass number is what the dataset seeds them with); one
    pass yields exactly what the samplers yielded before passes existed: pass = epoch, the same order."""
    import torch

    from protocell.data.dataset import EpochSampler
    from protocell.data.samplers import BagSampler, DistributedEpochSampler

    one = EpochSampler(10, seed=2)
    one.set_epoch(5)
    g = torch.Generator().manual_seed(2 * 1_000_003 + 5)
    assert list(one) == [(int(i), 5) for i in torch.randperm(10, generator=g)]  # the order before passes
    three = EpochSampler(10, seed=2, repeats=3)
    three.set_epoch(5)
    items = list(three)
    assert len(items) == len(three) == 30 and [p for _, p in items] == [15] * 10 + [16] * 10 + [17] * 10
    passes = [[i for i, p in items if p == q] for q in (15, 16, 17)]
    assert all(sorted(x) == list(range(10)) for x in passes) and passes[0] != passes[1]
    groups = np.array(["A"] * 10 + ["B"] * 7 + ["C"] * 3)
    bags = BagSampler(groups, 4, seed=1, repeats=2)
    bags.set_epoch(3)
    got = list(bags)
    assert len(got) == len(bags) == 24 and {p for _, p in got} == {6, 7}
    single = BagSampler(groups, 4, seed=1)
    single.set_epoch(6)
    assert [i for i, p in got if p == 6] == [i for i, _ in single]  # a pass is the one-pass epoch of its number
    ranks = [DistributedEpochSampler(10, seed=2, rank=r, world=2, repeats=3) for r in range(2)]
    for r in ranks:
        r.set_epoch(5)
    assert sorted(list(ranks[0]) + list(ranks[1])) == sorted(items)  # the ranks share the passes out


def test_a_small_plate_makes_an_epoch_of_as_many_cells_as_the_built_in_plate(tiny_store, caplog):
    """Before: the schedule counted epochs, so a plate with a third of the built-in plate's training cells got a
    third of its optimisation (a 4-well plate at low light: true AUROC 0.78 and its fraction 0.14 low, status
    ok; three passes an epoch: 0.94, 0.03 low)."""
    import logging

    from conftest import tiny_data

    plain = tiny_data(tiny_store)
    plain.setup()
    n = len(plain.rows["train"])
    assert plain.epoch_repeats == 1 and plain.split_info["epoch"] == {"training_cells": n, "passes": 1}
    with caplog.at_level(logging.INFO, logger="protocell.data"):
        floor = tiny_data(tiny_store, min_epoch_cells=4 * n + 1)
        floor.setup()
    assert floor.epoch_repeats == 4 and floor.split_info["epoch"]["passes"] == 4
    assert f"training: {n} cells, each epoch goes through them 4 times" in caplog.text
    loader = floor.train_dataloader()
    assert len(loader.sampler) == 4 * n and len(floor.val_dataloader().sampler) == len(plain.val_dataloader().sampler)
    big = tiny_data(tiny_store, min_epoch_cells=n // 2)  # a plate larger than the floor: one pass
    big.setup()
    assert big.epoch_repeats == 1
