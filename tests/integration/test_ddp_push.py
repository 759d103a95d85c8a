"""Push under DDP: 2 CPU processes (gloo), each with half of the push set, end with prototypes and
provenance identical to each other and to a single-process push over all cells."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DataLoader


def _net():
    from protocell.model.backbones import build_backbone
    from protocell.model.protopnet import ProtoPNet

    torch.manual_seed(0)
    return ProtoPNet(build_backbone("vgg11_narrow", 2, width=0.125, max_rf=46), 2, 3, 16).eval()


def _push_set(store, rank=0, world=1):
    from protocell.data.datamodule import CellDataModule

    dm = CellDataModule(store, zero_background=True, val_fraction=0.0, seed=0)
    dm.setup()
    ds = dm.dataset("push")
    # an interleaved shard, as a distributed sampler deals cells (no padding: each cell once)
    ds.rows, ds.labels, ds.cell_ids = ds.rows[rank::world], ds.labels[rank::world], ds.cell_ids[rank::world]
    return DataLoader(ds, batch_size=8)


def _worker(rank, world, port, store, out):
    from protocell.training.push import push_prototypes

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        net = _net()
        push_prototypes(net, _push_set(store, rank, world))
        torch.save({k: v.clone() for k, v in net.state_dict().items()}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available in this build")
def test_two_process_push_equals_single_process_push(tiny_store, tmp_path):
    from protocell.training.push import push_prototypes

    single = _net()
    push_prototypes(single, _push_set(tiny_store))
    mp.spawn(_worker, args=(2, _free_port(), str(tiny_store), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for key in ("prototypes", "proto_cell_id", "proto_latent_yx", "proto_distance"):
        assert torch.equal(ranks[0][key], ranks[1][key]), key                  # identical on every rank
        assert torch.allclose(ranks[0][key].double(), getattr(single, key).double(), atol=1e-6), key
    # the winners come from both shards, so the ranks really had to exchange their candidates
    shard0 = set(_push_set(tiny_store, 0, 2).dataset.cell_ids.tolist())
    winners = set(ranks[0]["proto_cell_id"].tolist())
    assert winners & shard0 and winners - shard0
