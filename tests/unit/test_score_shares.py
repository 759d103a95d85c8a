"""The shares of a sharded score (protocell/score/shares.py): whole batches, every cell once, in order."""

from protocell.score.shares import share_rows


def test_shares_are_contiguous_whole_batches_covering_every_cell_once():
    for n in (0, 1, 63, 64, 65, 1000, 1024):
        for batch in (1, 7, 64, 256):
            batches = [(i, min(n, i + batch)) for i in range(0, n, batch)]  # what one process forms
            for shards in (1, 2, 3, 8, 200):
                parts = [share_rows(n, batch, shards, k) for k in range(shards)]
                assert [p.start for p in parts[1:]] == [p.stop for p in parts[:-1]]  # contiguous, in order
                assert parts[0].start == 0 and parts[-1].stop == n  # every cell once
                for p in parts:  # each share is a run of one process's batches
                    assert all(
                        b in batches for b in ((i, min(p.stop, i + batch)) for i in range(p.start, p.stop, batch))
                    )
                counts = [-(-(p.stop - p.start) // batch) for p in parts]
                assert max(counts) - min(counts) <= 1  # balanced to a batch


def test_the_scoring_pass_gives_each_cell_its_own_numbers_in_row_order(tiny_dm):
    """``infer`` fills arrays allocated once (a list of small per-batch arrays grew the process by ~13 KB a
    cell, measured by ``make bench`` → scale): every cell's numbers are those of a pass over that cell alone,
    with the documented dtypes, whatever the batch size."""
    import numpy as np
    import pytest
    import torch
    import torch.nn.functional as F
    from conftest import tiny_module

    from protocell.score.infer import infer

    net = tiny_module().net.eval()
    rows = np.flatnonzero(tiny_dm.store.manifest["aug_of"].to_numpy() < 0)[:23]
    cells = tiny_dm.dataset_of(tiny_dm.store, rows)
    got = infer(net, cells, 1, batch_size=5, progress=False)
    assert got["min_d"].shape == (23, net.prototypes.shape[0])
    assert {k: v.dtype for k, v in got.items()} == {
        "cell_id": np.int64,
        "score": np.float32,
        "min_d": np.float32,
        "intensity": np.float64,
        "finite": np.bool_,
    }
    with torch.no_grad():
        for j in (0, 4, 5, 22):  # a batch's first and last cell, the next batch's, the last
            x, m, _, cell_id = cells[j]
            o = net(x[None], m[None])
            assert got["cell_id"][j] == cell_id == tiny_dm.store.manifest["cell_id"].iloc[rows[j]]
            assert got["score"][j] == pytest.approx(float(F.softmax(o["logits"].float(), 1)[0, 1]), rel=1e-5)
            np.testing.assert_allclose(got["min_d"][j], o["min_distances"][0].numpy(), rtol=1e-5)
    assert got["finite"].all()
    np.testing.assert_allclose(infer(net, cells, 1, batch_size=23, progress=False)["score"], got["score"], rtol=1e-5)
