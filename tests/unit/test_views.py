"""A cell read in its 8 orientations (protocell.model.views): the averaged prediction does not depend on how
the cell lay, it still adds up to the prototypes' evidence, and one view is the network as is."""

import pytest
import torch

from protocell.model.prototypes import log_similarity
from protocell.model.views import averaged, dihedral, distance_of
from tests.conftest import tiny_module


def _cells(seed: int = 1, n: int = 6, size: int = 40):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 2, size, size, generator=g)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    m = (((yy - 17) ** 2 + (xx - 21) ** 2) < 100).float()[None, None].repeat(n, 1, 1, 1)  # off-centre
    return x * m, m


@pytest.mark.parametrize("head", ["protopnet", "baseline"])
def test_eight_views_make_the_prediction_independent_of_the_cells_orientation(head):
    module = tiny_module(head=head).eval()
    x, m = _cells()
    with torch.no_grad():
        base = averaged(module.scores, x, m, 8)
        one = averaged(module.scores, x, m, 1)
        for k, flip in ((1, False), (2, False), (3, True), (0, True)):
            rx, rm = torch.rot90(x, k, (2, 3)), torch.rot90(m, k, (2, 3))
            if flip:
                rx, rm = rx.flip(3), rm.flip(3)
            moved = averaged(module.scores, rx, rm, 8)
            torch.testing.assert_close(moved[0], base[0], atol=1e-5, rtol=1e-5)
            if head == "protopnet":
                torch.testing.assert_close(moved[1], base[1], atol=1e-4, rtol=1e-4)
            # the network itself is not invariant: read as cropped, the same cell moved scores differently
            assert (averaged(module.scores, rx, rm, 1)[0] - one[0]).abs().max() > 1e-4


def test_one_view_is_the_network_as_is_and_eight_views_add_up_to_the_prototypes_evidence():
    module = tiny_module().eval()
    x, m = _cells(seed=2)
    with torch.no_grad():
        out = module.net(x, m)
        logits, min_d = averaged(module.scores, x, m, 1)
        assert torch.equal(logits, out["logits"]) and torch.equal(min_d, out["min_distances"])
        logits8, min_d8 = averaged(module.scores, x, m, 8)
        # "this looks like that" still adds up: the last layer on the reported distances' similarities
        torch.testing.assert_close(module.net.last_layer(log_similarity(min_d8)), logits8, atol=1e-4, rtol=1e-4)
        # and the reported similarity is the mean of the 8 views' similarities
        views = [log_similarity(module.net(vx, vm)["min_distances"]) for vx, vm in dihedral(x, m, 8)]
        torch.testing.assert_close(log_similarity(min_d8), torch.stack(views).mean(0), atol=1e-4, rtol=1e-4)
    module.views = 8
    batch = (x, m, torch.zeros(len(x), dtype=torch.long), torch.arange(len(x)))
    with torch.no_grad():
        pred = module.predict_step(batch, 0)
    torch.testing.assert_close(pred["probs"], torch.softmax(logits8, 1))
    torch.testing.assert_close(pred["min_distances"], min_d8)


def test_the_views_are_the_eight_symmetries_of_the_square_and_the_distance_inverts_the_similarity():
    x = torch.arange(9.0).view(1, 1, 3, 3)
    seen = {tuple(v.flatten().tolist()) for v, _ in dihedral(x, None, 8)}
    assert len(seen) == 8
    assert [tuple(v.flatten().tolist()) for v, _ in dihedral(x, None, 1)] == [tuple(x.flatten().tolist())]
    with pytest.raises(ValueError, match="views must be one of"):
        list(dihedral(x, None, 4))
    d = torch.tensor([0.0, 1e-3, 0.5, 3.0, 40.0])
    torch.testing.assert_close(distance_of(log_similarity(d)), d, atol=1e-4, rtol=1e-3)
