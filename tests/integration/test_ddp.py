"""DDP on 2 CPU processes (gloo), through Lightning and protocell's own loaders.

Given identical weights, the DDP run's test metrics, predictions and push equal a single-process
run's: every test cell is evaluated and predicted exactly once over both ranks (no padding
duplicates), and push takes the global nearest patch, identical on every rank; the validation AUROC
(pretrain's selection) is computed over both ranks' cells. After DDP training
(push included) both ranks hold identical weights, buffers and prototypes.

"Equal": the cell set and the push provenance (cell, position) exactly; per-cell scores and the
prototype vectors to 1e-6 (a cell's forward pass runs in a different batch); the epoch means to
1e-6 (summed per rank, then over ranks, instead of in one running sum)."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

PROTO = ("prototypes", "proto_cell_id", "proto_latent_yx", "proto_distance")


def _setup(store, seed=0):
    from conftest import TINY_LR, TINY_SETTINGS, TINY_SPEC, tiny_data

    from protocell.model.module import ProtoPNetModule

    torch.set_num_threads(1)
    dm = tiny_data(store, zero_background=True, batch_size=8, eval_batch_size=8, val_fraction=0.0, seed=0)
    torch.manual_seed(seed)
    return dm, ProtoPNetModule(TINY_SPEC, ["Ref", "Exp"], lr={**TINY_LR, "pretrain": 3e-3}, **TINY_SETTINGS)


def _trainer(**kw):
    import lightning as L

    return L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        deterministic=True,
        enable_checkpointing=False,
        **kw,
    )


def _evaluate(trainer, dm, module):
    """Test metrics, all predictions (gathered under DDP), this rank's predicted cells, push."""
    from protocell.distributed import gather_predictions
    from protocell.training.push import push_prototypes

    trainer.test(module, datamodule=dm, verbose=False)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
    trainer.validate(module, dataloaders=dm.test_dataloader(), verbose=False)  # val/auroc over every rank's cells
    metrics["val/auroc"] = float(trainer.callback_metrics["val/auroc"])
    local = trainer.predict(module, dataloaders=dm.predict_dataloader())
    preds = gather_predictions(local)
    push_prototypes(module.net, dm.push_dataloader())
    return {
        "metrics": metrics,
        "local_cells": torch.cat([b["cell_id"] for b in local]),
        "cells": torch.cat([b["cell_id"] for b in preds]),
        "probs": torch.cat([b["probs"] for b in preds]),
        "pushed": {k: module.net.state_dict()[k].clone() for k in PROTO},
    }


def _worker(rank, world, port, store, out):
    from lightning.pytorch.callbacks import Callback

    from protocell.training.callbacks import PhaseCallback, PushCallback
    from protocell.training.schedule import build_schedule

    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        WORLD_SIZE=str(world),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        NODE_RANK="0",
    )  # as torchrun / SLURM start the ranks
    dm, module = _setup(store)
    result = _evaluate(_trainer(devices=world, strategy="ddp"), dm, module)

    class Steps(Callback):  # counts this rank's training steps
        n = 0

        def on_train_batch_end(self, *a):
            Steps.n += 1

    plan = build_schedule(
        2, warm_epochs=1, push_every=1, push_start=1, lr={"features": 1e-3, "pretrain": 3e-3}
    )  # warm + push, joint + push
    dm, module = _setup(store, seed=1)
    trainer = _trainer(
        devices=world,
        strategy="ddp_find_unused_parameters_true",
        max_epochs=len(plan),
        callbacks=[PhaseCallback(plan), PushCallback(plan, f"{out}/fit"), Steps()],
    )
    trainer.fit(module, datamodule=dm)
    result["trained"] = {k: v.clone() for k, v in module.state_dict().items()}
    result["steps"] = Steps.n
    torch.save(result, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available in this build")
def test_ddp_two_processes_equal_single_process(tiny_store, tmp_path):
    dm, module = _setup(tiny_store)
    single = _evaluate(_trainer(devices=1), dm, module)
    n_train = len(dm.rows["train"])
    mp.spawn(_worker, args=(2, _free_port(), str(tiny_store), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]

    # every test cell predicted exactly once over the ranks, none twice (no padding), none missing
    local = [r["local_cells"].tolist() for r in ranks]
    assert not set(local[0]) & set(local[1])
    assert sorted(local[0] + local[1]) == sorted(single["cells"].tolist())
    assert len(local[0]) + len(local[1]) == len(single["cells"])
    for r in ranks:
        assert torch.equal(r["cells"], single["cells"])  # gathered back into loader order
        assert torch.allclose(r["probs"], single["probs"], atol=1e-6)
        assert r["metrics"].keys() == single["metrics"].keys() and single["metrics"]
        for k, v in single["metrics"].items():
            assert r["metrics"][k] == pytest.approx(v, abs=1e-6), (k, r["metrics"], single["metrics"])
        for k in PROTO:  # push from identical weights: the single-process result, on every rank
            assert torch.equal(r["pushed"][k], ranks[0]["pushed"][k]), k
            assert torch.allclose(r["pushed"][k].double(), single["pushed"][k].double(), atol=1e-6), k
    # the winners come from both ranks' shards, so the ranks really had to exchange their candidates
    shard0 = set(dm.dataset("push").cell_ids[0::2].tolist())
    winners = set(ranks[0]["pushed"]["proto_cell_id"].tolist())
    assert winners & shard0 and winners - shard0
    # after DDP training, push included, both ranks hold the same model, each rank half the batches
    for k, v in ranks[0]["trained"].items():
        assert torch.equal(v, ranks[1]["trained"][k]), k
    assert int(ranks[0]["trained"]["net.pushes"]) == 2
    per_rank_batches = -(-((n_train + 1) // 2) // 8)  # ceil(ceil(n_train / 2) / 8): each rank's half, in batches of 8
    assert ranks[0]["steps"] == ranks[1]["steps"] == 2 * per_rank_batches
