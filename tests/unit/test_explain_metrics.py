"""Ground-truth metric functions and small explain helpers on hand-made cases."""

import numpy as np
import pandas as pd
import torch

from protocell.explain.local import contributions, sample_cells
from protocell.explain.mosaic import k_nearest
from protocell.metrics.truth import true_affected_fraction, true_label_metrics


def test_true_label_metrics_by_hand():
    scores = [0.9, 0.8, 0.3, 0.2, 0.6]
    calls = [1, 1, 0, 0, 1]
    truth = [1, 0, 0, -1, 1]                       # the fourth cell's truth is unknown: ignored
    m = true_label_metrics(scores, calls, truth)
    assert m["n_cells_true_label"] == 4
    assert m["true_label_accuracy"] == 0.75        # calls 1,1,0,1 vs truth 1,0,0,1
    # positives 0.9, 0.6 vs negatives 0.8, 0.3: 3 of 4 pairs ordered correctly
    assert abs(m["true_label_auroc"] - 0.75) < 1e-9
    assert true_label_metrics(scores, calls, [-1] * 5) == {}


def test_true_affected_fraction_by_hand():
    assert abs(true_affected_fraction([1, 0, -1, 1]) - 2 / 3) < 1e-12
    assert true_affected_fraction([-1, -1]) is None


def test_k_nearest_equals_brute_force_with_ties_in_loader_order():
    d = torch.tensor([[0.5, 0.1], [0.2, 0.1], [0.2, 0.3], [0.9, 0.0]])
    assert k_nearest(d, 3).tolist() == [[1, 3], [2, 0], [0, 1]]
    rng = np.random.default_rng(0)
    d = torch.tensor(rng.random((50, 4)))
    for j in range(4):
        assert k_nearest(d, 20)[:, j].tolist() == sorted(range(50), key=lambda i: float(d[i, j]))[:20]
    assert k_nearest(d[:5], 20).shape == (5, 4)    # fewer cells than k


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
