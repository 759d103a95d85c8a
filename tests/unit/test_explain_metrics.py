"""Ground-truth metric functions and small explain helpers on hand-made cases."""

import pandas as pd
import torch

from protocell.evaluate.truth import true_affected_fraction, true_label_metrics
from protocell.explain.local import contributions, sample_cells


def test_true_label_metrics_by_hand():
    scores = [0.9, 0.8, 0.3, 0.2, 0.6]
    calls = [1, 1, 0, 0, 1]
    truth = [1, 0, 0, -1, 1]  # the fourth cell's truth is unknown: ignored
    m = true_label_metrics(scores, calls, truth)
    assert m["n_cells_true_label"] == 4
    assert m["true_label_accuracy"] == 0.75  # calls 1,1,0,1 vs truth 1,0,0,1
    # positives 0.9, 0.6 vs negatives 0.8, 0.3: 3 of 4 pairs ordered correctly
    assert abs(m["true_label_auroc"] - 0.75) < 1e-9
    assert true_label_metrics(scores, calls, [-1] * 5) == {}


def test_true_affected_fraction_by_hand():
    assert abs(true_affected_fraction([1, 0, -1, 1]) - 2 / 3) < 1e-12
    assert true_affected_fraction([-1, -1]) is None


def test_streamed_nearest_patches_equal_brute_force_with_ties_in_loader_order(tiny_net, tiny_dm):
    """model.search keeps the k nearest cells per prototype while streaming batches; it must equal a
    brute-force sort of every cell's best in-cell patch by its direct float64 distance (ties: the
    earlier cell), for k > batch size, with and without the own-class restriction."""
    from protocell.model.prototypes import squared_distances
    from protocell.model.search import nearest_patches

    net = tiny_net.eval()
    rows = []  # (cell index in loader order, cell id, class, best d, y, x)
    with torch.no_grad():
        for x, m, y, cid in tiny_dm.push_dataloader():
            z = net.latent(x)
            d = squared_distances(z, net.prototypes)
            inside = net.inside(m, z.shape[-2:])[:, 0]
            for b in range(len(cid)):
                for j in range(d.shape[1]):
                    vals = [(float(d[b, j, yy, xx]), yy, xx) for yy, xx in inside[b].nonzero().tolist()]
                    _, yy, xx = min(vals, key=lambda v: v[0])  # the best unit, as the search picks it
                    exact = float(((z[b, :, yy, xx].double() - net.prototypes[j].double()) ** 2).sum().float())
                    rows.append((len(rows) // d.shape[1], int(cid[b]), int(y[b]), j, exact, yy, xx))
    P = net.prototypes.shape[0]
    for own in (False, True):
        k = 11
        near = nearest_patches(net, tiny_dm.push_dataloader(), k=k, own_class=own)
        for j in range(P):
            cand = [r for r in rows if r[3] == j and (not own or r[2] == int(net.prototype_class[j]))]
            cand.sort(key=lambda r: (r[4], r[0]))
            assert near["cell_id"][:, j].tolist() == [r[1] for r in cand[:k]], (own, j)
            assert torch.allclose(near["distance"][:, j], torch.tensor([r[4] for r in cand[:k]]), atol=1e-5)
            assert near["latent_yx"][:, j].tolist() == [[r[5], r[6]] for r in cand[:k]]
        # each distance is the direct float64 one of the patch it names, rounded once (no ‖z‖² − 2z·p + ‖p‖²
        # quantisation: that made distinct patches tie)
        direct = ((near["vector"].double() - net.prototypes.double()[None]) ** 2).sum(-1).float()
        assert torch.equal(near["distance"], direct)
    many = nearest_patches(net, tiny_dm.push_dataloader(), k=10_000)
    assert many["cell_id"].shape[0] == len(tiny_dm.rows["push"])  # fewer cells than k: fewer rows


def test_search_merge_keeps_the_earlier_candidate_on_ties():
    from protocell.model.search import _merge

    def table(d, c):
        d, c = torch.tensor(d, dtype=torch.float32), torch.tensor(c)
        return {
            "distance": d,
            "cell_id": c,
            "latent_yx": torch.zeros(*d.shape, 2, dtype=torch.long),
            "vector": torch.zeros(*d.shape, 1),
        }

    merged = _merge(table([[0.1, 0.5]], [[7, 7]]), table([[0.1, 0.2], [0.0, 0.9]], [[3, 3], [4, 4]]), 2)
    assert merged["cell_id"].tolist() == [[4, 3], [7, 7]]


def test_contributions_sum_to_the_logit(tiny_net):
    x, m = torch.rand(1, 2, 64, 64), torch.ones(1, 1, 64, 64)
    with torch.no_grad():
        out = tiny_net(x, m)
    for c in range(2):
        contrib = contributions(out["similarities"][0], tiny_net.last_layer.weight, c)
        assert torch.allclose(contrib.sum(), out["logits"][0, c], atol=1e-5)


def test_sample_cells_is_seeded_and_balanced():
    preds = pd.DataFrame({"cell_id": range(20), "condition": ["Ref"] * 10 + ["Exp"] * 10})
    a = sample_cells(preds, ["Ref", "Exp"], 6)
    assert a == sample_cells(preds, ["Ref", "Exp"], 6) and len(set(a)) == 6
    assert sum(c < 10 for c in a) == 3
