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
