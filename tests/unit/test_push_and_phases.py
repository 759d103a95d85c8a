import pytest
import torch

from protocell.model.module import ProtoPNetModule
from protocell.model.prototypes import squared_distances
from protocell.training.phases import build_plan
from protocell.training.push import prototype_record, push_prototypes


def _latents(net, dm):
    """Every push-set latent with its cell id, class and inside mask, by brute force."""
    net.eval()
    out = []
    with torch.no_grad():
        for x, m, y, cid in dm.push_dataloader():
            z = net.latent(x)
            inside = net.inside(m, z.shape[-2:])
            out.append((z, inside, y, cid))
    return out


def test_push_projects_each_prototype_onto_its_brute_force_nearest_in_cell_own_class_patch(tiny_net, tiny_dm):
    net = tiny_net
    before = net.prototypes.detach().clone()
    push_prototypes(net, tiny_dm.push_dataloader())
    P = net.prototypes.shape[0]
    best = {j: (float("inf"), None) for j in range(P)}
    for z, inside, y, cid in _latents(net, tiny_dm):
        d = squared_distances(z, before)                                   # (B, P, H, W)
        for b in range(z.shape[0]):
            for j in range(P):
                if net.prototype_class[j] != y[b]:
                    continue
                for yy, xx in inside[b, 0].nonzero().tolist():
                    v = float(d[b, j, yy, xx])
                    if v < best[j][0]:
                        best[j] = (v, (int(cid[b]), yy, xx, z[b, :, yy, xx].clone()))
    manifest = tiny_dm.store.manifest.set_index("cell_id")
    for j in range(P):
        v, (cell, yy, xx, vec) = best[j]
        assert torch.allclose(net.prototypes[j], vec, atol=1e-6)
        assert int(net.proto_cell_id[j]) == cell
        assert net.proto_latent_yx[j].tolist() == [yy, xx]
        assert abs(float(net.proto_distance[j]) - v) < 1e-4
        # the source cell belongs to the prototype's class
        assert manifest.loc[cell, "label"] == int(net.prototype_class[j])


def test_with_mask_no_prototype_is_pushed_to_background(tiny_net, tiny_dm):
    push_prototypes(tiny_net, tiny_dm.push_dataloader())
    by_cell = {}
    for z, inside, y, cid in _latents(tiny_net, tiny_dm):
        for b in range(len(cid)):
            by_cell[int(cid[b])] = inside[b, 0]
    for j in range(tiny_net.prototypes.shape[0]):
        yy, xx = tiny_net.proto_latent_yx[j].tolist()
        assert by_cell[int(tiny_net.proto_cell_id[j])][yy, xx]


def test_prototype_record_loads_with_weights_only(tiny_net, tiny_dm, tmp_path):
    found = push_prototypes(tiny_net, tiny_dm.push_dataloader())
    rec = prototype_record(tiny_net, 64, found["latent_size"].tolist(), ["Ref", "Exp"], {"store": "x"})
    torch.save(rec, tmp_path / "p.pt")
    back = torch.load(tmp_path / "p.pt", weights_only=True)
    assert back["box"].shape == (6, 4) and (back["box"][:, 2] - back["box"][:, 0] == 46).all()
    assert ((back["box_clipped"] >= 0) & (back["box_clipped"] <= 64)).all()


def test_plan_pushes_every_n_epochs_and_at_the_end():
    plan = build_plan(30, warm_epochs=5, push_every=10, push_start=10, last_layer_epochs=2)
    phases = [p.phase for p in plan]
    assert len(plan) == 30 + 3 * 2
    assert phases[:5] == ["warm"] * 5 and phases[10:12] == ["last_layer"] * 2
    assert [i for i, p in enumerate(plan) if p.push] == [9, 21, 33]
    frozen = build_plan(30, push_every=10, last_layer_epochs=2, train_last_layer=False)
    assert len(frozen) == 30 and "last_layer" not in [p.phase for p in frozen]
    pre = build_plan(4, push_every=2, pretrain_epochs=3)
    assert [p.phase for p in pre[:3]] == ["pretrain"] * 3 and [i for i, p in enumerate(pre) if p.push] == [4, 6]


def _fit(module, dm, plan, tmp_path):
    import lightning as L

    from protocell.training.phases import PhaseCallback
    from protocell.training.push import PushCallback

    trainer = L.Trainer(max_epochs=len(plan), accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        callbacks=[PhaseCallback(plan), PushCallback(plan, tmp_path)])
    trainer.fit(module, datamodule=dm)
    return trainer


def test_frozen_last_layer_is_bit_identical_after_training(tiny_net, tiny_dm, tmp_path):
    module = ProtoPNetModule(tiny_net, last_layer="frozen")
    w0 = module.net.last_layer.weight.detach().clone()
    _fit(module, tiny_dm, build_plan(2, push_every=1, last_layer_epochs=1, train_last_layer=False), tmp_path)
    assert torch.equal(module.net.last_layer.weight, w0)
    assert torch.equal(w0, torch.tensor([[1.0, 1, 1, -0.5, -0.5, -0.5], [-0.5, -0.5, -0.5, 1, 1, 1]]))
    assert (tmp_path / "prototypes.pt").exists() and int(module.net.pushes) == 2


def test_warm_up_leaves_the_backbone_unchanged_and_trains_the_rest(tiny_net, tiny_dm, tmp_path):
    module = ProtoPNetModule(tiny_net, last_layer="trained")
    feats = {k: v.clone() for k, v in module.net.features.state_dict().items()}  # BN stats included
    addon = [p.detach().clone() for p in module.net.add_on.parameters()]
    last = module.net.last_layer.weight.detach().clone()
    plan = [p for p in build_plan(2, warm_epochs=1, push_every=5) if p.phase == "warm"][:1]
    module.net.use_mask = True
    _fit(module, tiny_dm, plan, tmp_path)
    for k, v in module.net.features.state_dict().items():
        assert torch.equal(v, feats[k]), k
    assert any(not torch.equal(a, b) for a, b in zip(module.net.add_on.parameters(), addon))
    assert torch.equal(module.net.last_layer.weight, last)


def test_last_layer_phase_trains_only_the_last_layer(tiny_net, tiny_dm, tmp_path):
    module = ProtoPNetModule(tiny_net, last_layer="trained")
    module.set_phase("last_layer")
    state = {k: v.clone() for k, v in module.net.state_dict().items()}
    _fit(module, tiny_dm, [build_plan(1)[0].__class__("last_layer", False)], tmp_path)
    same = lambda a, b: torch.equal(a, b) or (a.is_floating_point() and torch.equal(a.isnan(), b.isnan())
                                              and torch.equal(a.nan_to_num(), b.nan_to_num()))
    changed = {k for k, v in module.net.state_dict().items() if not same(v, state[k])}
    assert changed == {"last_layer.weight"}


def test_pretrain_keeps_the_epoch_with_the_lowest_validation_loss(tiny_store, tiny_net, tmp_path):
    import lightning as L
    from lightning.pytorch.callbacks import Callback

    from protocell.data.datamodule import CellDataModule
    from protocell.training.phases import PhaseCallback

    class Recorder(Callback):  # what each pretrain epoch ended with, and what the first warm epoch starts from
        def __init__(self):
            self.seen, self.start_of_warm = [], None

        def on_validation_end(self, trainer, pl_module):
            if pl_module.phase == "pretrain":
                self.seen.append((float(trainer.callback_metrics["val/ce"]),
                                  {k: v.clone() for k, v in pl_module.net.features.state_dict().items()}))

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if pl_module.phase == "warm" and self.start_of_warm is None:
                self.start_of_warm = {k: v.clone() for k, v in pl_module.net.features.state_dict().items()}

    dm = CellDataModule(tiny_store, crop_size=64, zero_background=True, batch_size=8, eval_batch_size=16,
                        test_fraction=0.3, val_fraction=0.3, seed=0)
    module = ProtoPNetModule(tiny_net, lr={"pretrain": 3e-2})   # a high rate: the epochs differ a lot
    plan = build_plan(1, warm_epochs=0, push_every=5, pretrain_epochs=4)
    plan[4] = plan[4].__class__("warm", False)
    rec = Recorder()
    phases = PhaseCallback(plan, pretrain_keep="best")
    L.Trainer(max_epochs=len(plan), accelerator="cpu", logger=False, enable_checkpointing=False,
              enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
              callbacks=[phases, rec]).fit(module, datamodule=dm)
    losses = [v for v, _ in rec.seen]
    best = min(range(len(losses)), key=losses.__getitem__)
    assert len(losses) == 4 and len(set(losses)) == 4
    assert phases.best["epoch"] == best and phases.best["restored"] and phases.best["state"] is None
    for k, v in rec.seen[best][1].items():
        assert torch.equal(rec.start_of_warm[k], v), k
    if best != 3:   # the kept state is not simply the last one
        assert any(not torch.equal(rec.start_of_warm[k], v) for k, v in rec.seen[3][1].items())
    with pytest.raises(ValueError, match="pretrain_keep"):
        PhaseCallback(plan, pretrain_keep="median")
