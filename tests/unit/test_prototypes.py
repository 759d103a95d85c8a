import torch

from protocell.model.losses import cluster_separation, last_layer_l1
from protocell.model.prototypes import latent_inside, log_similarity, masked_distances, squared_distances


def test_squared_distances_equal_brute_force_loop():
    g = torch.Generator().manual_seed(0)
    z, p = torch.rand(3, 5, 4, 6, generator=g), torch.rand(7, 5, generator=g)
    d = squared_distances(z, p)
    assert d.shape == (3, 7, 4, 6)
    for b in range(3):
        for j in range(7):
            for y in range(4):
                for x in range(6):
                    ref = ((z[b, :, y, x] - p[j]) ** 2).sum()
                    assert torch.allclose(d[b, j, y, x], ref, atol=1e-5)
    assert (squared_distances(z, z[0, :, 0, 0][None]) >= 0).all()  # clamped at the exact match


def test_latent_inside_uses_area_fraction_and_keeps_one_unit():
    mask = torch.zeros(2, 1, 8, 8)
    mask[0, 0, :4, :4] = 1  # exactly the top-left 2x2 latent cell of a 4x4 grid... at jump 2
    mask[1, 0, 7, 7] = 1  # one pixel: fraction 0.25 < 0.5, still the best unit
    inside = latent_inside(mask, (4, 4))
    assert inside[0, 0].sum() == 4 and inside[0, 0, :2, :2].all()
    assert inside[1, 0].sum() == 1 and inside[1, 0, 3, 3]


def test_background_is_never_the_minimum_with_the_mask_term():
    g = torch.Generator().manual_seed(1)
    D = 16
    z = torch.rand(4, D, 5, 5, generator=g)  # sigmoid-range features
    p = torch.rand(6, D, generator=g)
    mask = torch.zeros(4, 1, 20, 20)
    mask[:, :, 4:12, 6:14] = 1
    inside = latent_inside(mask, (5, 5))
    # make background units exact matches: the mask must still win
    z[:, :, 0, 0] = p[0]
    d = masked_distances(squared_distances(z, p), inside, penalty=D + 1)
    flat_arg = d.flatten(2).argmin(2)  # (B, P)
    ins = inside.flatten(2)[:, 0]  # (B, HW)
    assert torch.gather(ins, 1, flat_arg).all()
    assert torch.equal(masked_distances(d, None, 5.0), d)


def test_cluster_and_separation_costs_equal_direct_loop():
    min_d = torch.tensor([[1.0, 2.0, 0.5, 3.0], [4.0, 0.1, 2.0, 1.0]])
    cls = torch.tensor([0, 0, 1, 1])
    labels = torch.tensor([0, 1])
    clst, sep = cluster_separation(min_d, labels, cls)
    assert torch.isclose(clst, torch.tensor((1.0 + 1.0) / 2))
    assert torch.isclose(sep, torch.tensor((0.5 + 0.1) / 2))
    w = torch.tensor([[1.0, 1.0, -0.5, -0.25], [-0.5, 2.0, 1.0, 1.0]])
    assert torch.isclose(last_layer_l1(w, cls), torch.tensor(0.5 + 0.25 + 0.5 + 2.0))


def test_log_similarity_decreases_with_distance():
    d = torch.tensor([0.0, 0.1, 1.0, 10.0])
    s = log_similarity(d)
    assert (s[:-1] > s[1:]).all() and s[0] > 9


def test_masked_distances_equal_a_brute_force_loop_and_the_default_penalty_is_d_plus_1():
    """masked == d + penalty · (not inside), exactly, at every (b, j, y, x); the network's default
    penalty is D + 1 and forward()'s min_distances are the loop's minima (a fill with inf, or a
    penalty scaled ×10 or ×0.5, fails here)."""
    from conftest import tiny_module

    g = torch.Generator().manual_seed(3)
    B, P, H, W = 3, 4, 5, 6
    d = torch.rand(B, P, H, W, generator=g) * 16
    inside = torch.rand(B, 1, H, W, generator=g) > 0.5
    penalty = 17.0
    masked = masked_distances(d, inside, penalty)
    for b in range(B):
        for j in range(P):
            for y in range(H):
                for x in range(W):
                    expected = d[b, j, y, x] + (0.0 if inside[b, 0, y, x] else penalty)
                    assert masked[b, j, y, x] == expected, (b, j, y, x)
    net = tiny_module(per_class=2, dim=16).net.eval()
    assert net.mask_penalty == 16 + 1
    x = torch.rand(2, 2, 64, 64, generator=g)
    mask = torch.zeros(2, 1, 64, 64)
    mask[0, :, 10:40, 12:50] = 1
    mask[1, :, 30:34, 30:34] = 1  # a tiny cell: few inside units
    with torch.no_grad():
        out = net(x, mask)
        z = net.latent(x)
        raw = squared_distances(z, net.prototypes)
        ins = latent_inside(mask, z.shape[-2:])
    for b in range(2):
        for j in range(net.prototypes.shape[0]):
            loop = min(
                raw[b, j, y, xx] + (0.0 if ins[b, 0, y, xx] else 17.0)  # float32, as the layer
                for y in range(z.shape[-2])
                for xx in range(z.shape[-1])
            )
            assert out["min_distances"][b, j] == loop
