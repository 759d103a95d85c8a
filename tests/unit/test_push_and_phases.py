import pytest
import torch
from conftest import fit_plan as _fit
from conftest import tiny_module

from protocell.artifacts import prototype_record
from protocell.model.prototypes import squared_distances
from protocell.training.callbacks import KeepBestPretrain, PhaseCallback
from protocell.training.push import push_prototypes
from protocell.training.schedule import Phase, build_schedule, trainable_groups


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
        d = squared_distances(z, before)  # (B, P, H, W)
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
    for _z, inside, _y, cid in _latents(tiny_net, tiny_dm):
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


def test_schedule_pushes_every_n_epochs_and_at_the_end():
    plan = build_schedule(30, warm_epochs=5, push_every=10, push_start=10, last_layer_epochs=2)
    phases = [p.name for p in plan]
    assert len(plan) == 30 + 3 * 2
    assert phases[:5] == ["warm"] * 5 and phases[10:12] == ["last_layer"] * 2
    assert [i for i, p in enumerate(plan) if p.push] == [9, 21, 33]
    frozen = build_schedule(30, push_every=10, last_layer_epochs=2, train_last_layer=False)
    assert len(frozen) == 30 and "last_layer" not in [p.name for p in frozen]
    pre = build_schedule(4, push_every=2, pretrain_epochs=3)
    assert [p.name for p in pre[:3]] == ["pretrain"] * 3 and [i for i, p in enumerate(pre) if p.push] == [4, 6]
    assert plan[0].train == {"add_on", "prototypes"} and plan[10].train == {"last_layer"}
    assert plan[6].train == {"features", "add_on", "prototypes", "last_layer"}
    assert frozen[6].train == {"features", "add_on", "prototypes"}


def test_schedule_rates_step_decay_every_group_but_the_last_layer():
    lr = {"features": 1e-4, "add_on": 3e-3, "prototypes": 3e-3, "last_layer": 1e-2, "pretrain": 3e-3}
    plan = build_schedule(
        12, warm_epochs=2, push_every=10, last_layer_epochs=2, pretrain_epochs=2, lr=lr, lr_step_epochs=5, lr_gamma=0.1
    )
    assert plan[0].lr["features"] == plan[0].lr["probe"] == 3e-3  # pretrain: the from-scratch rate
    assert plan[2].lr["features"] == 1e-4 and plan[4].lr["add_on"] == 3e-3
    assert plan[6].lr["features"] == pytest.approx(1e-5) and plan[6].lr["add_on"] == pytest.approx(3e-4)
    assert plan[11].lr["prototypes"] == pytest.approx(3e-5) and plan[11].lr["last_layer"] == 1e-2


def test_bad_schedule_values_name_their_key():
    from protocell.errors import ConfigError

    with pytest.raises(ConfigError, match="schedule.warm_epochs=3 is invalid"):
        build_schedule(3, warm_epochs=3)
    with pytest.raises(ConfigError, match="schedule.push_every=0 is invalid"):
        build_schedule(3, push_every=0)


def test_paper_schedule_decays_the_backbone_rate_in_the_optimiser(tiny_dm, tmp_path):
    """The regression test of the lost backbone decay: after 6 epochs of schedule=paper's step decay
    (every 5 epochs, γ = 0.1), every group the schedule decays runs at a tenth of its base rate."""
    from lightning.pytorch.callbacks import Callback

    lr = {"features": 1e-4, "add_on": 3e-3, "prototypes": 3e-3, "last_layer": 1e-2, "pretrain": 3e-3}
    plan = build_schedule(6, warm_epochs=1, push_every=10, last_layer_epochs=0, lr=lr, lr_step_epochs=5, lr_gamma=0.1)
    seen = []

    class Rates(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == 0:
                seen.append({g["name"]: g["lr"] for g in trainer.optimizers[0].param_groups})

    module = tiny_module(lr=lr)
    _fit(module, tiny_dm, plan, tmp_path, extra=[Rates()])
    assert len(seen) == 6
    assert seen[1]["features"] == pytest.approx(1e-4) and seen[5]["features"] == pytest.approx(1e-5)
    assert seen[5]["add_on"] == pytest.approx(3e-4) and seen[5]["prototypes"] == pytest.approx(3e-4)
    assert seen[5]["last_layer"] == pytest.approx(1e-2)


def test_frozen_last_layer_is_bit_identical_after_training(tiny_dm, tmp_path):
    module = tiny_module(last_layer="frozen")
    w0 = module.net.last_layer.weight.detach().clone()
    _fit(module, tiny_dm, build_schedule(2, push_every=1, last_layer_epochs=1, train_last_layer=False), tmp_path)
    assert torch.equal(module.net.last_layer.weight, w0)
    assert torch.equal(w0, torch.tensor([[1.0, 1, 1, -0.5, -0.5, -0.5], [-0.5, -0.5, -0.5, 1, 1, 1]]))
    assert (tmp_path / "prototypes.pt").exists() and int(module.net.pushes) == 2


def test_warm_up_leaves_the_backbone_unchanged_and_trains_the_rest(tiny_dm, tmp_path):
    module = tiny_module(last_layer="trained")
    feats = {k: v.clone() for k, v in module.net.features.state_dict().items()}  # BN stats included
    addon = [p.detach().clone() for p in module.net.add_on.parameters()]
    last = module.net.last_layer.weight.detach().clone()
    plan = [p for p in build_schedule(2, warm_epochs=1, push_every=5) if p.name == "warm"][:1]
    _fit(module, tiny_dm, plan, tmp_path)
    for k, v in module.net.features.state_dict().items():
        assert torch.equal(v, feats[k]), k
    assert any(not torch.equal(a, b) for a, b in zip(module.net.add_on.parameters(), addon))
    assert torch.equal(module.net.last_layer.weight, last)


def test_a_zero_rate_freezes_its_group_batch_norm_statistics_included(tiny_dm, tmp_path):
    lr = {"features": 0.0, "add_on": 1e-3, "prototypes": 1e-3, "last_layer": 1e-2, "pretrain": 1e-3}
    plan = build_schedule(3, warm_epochs=0, push_every=5, lr=lr, pretrain_epochs=1)
    assert "features" in plan[0].train and all("features" not in p.train for p in plan[1:])
    module = tiny_module(last_layer="trained")
    feats = {k: v.clone() for k, v in module.net.features.state_dict().items()}
    addon = [p.detach().clone() for p in module.net.add_on.parameters()]
    _fit(module, tiny_dm, [p for p in plan if p.name == "joint"][:1], tmp_path)
    for k, v in module.net.features.state_dict().items():
        assert torch.equal(v, feats[k]), k
    assert any(not torch.equal(a, b) for a, b in zip(module.net.add_on.parameters(), addon))


def test_last_layer_phase_trains_only_the_last_layer(tiny_dm, tmp_path):
    module = tiny_module(last_layer="trained")
    state = {k: v.clone() for k, v in module.net.state_dict().items()}
    plan = [
        Phase(
            "last_layer",
            trainable_groups("last_layer", True),
            {"probe": 1e-3, "features": 1e-3, "add_on": 1e-3, "prototypes": 1e-3, "last_layer": 1e-2},
        )
    ]
    _fit(module, tiny_dm, plan, tmp_path)
    same = lambda a, b: (
        torch.equal(a, b)
        or (a.is_floating_point() and torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(), b.nan_to_num()))
    )
    changed = {k for k, v in module.net.state_dict().items() if not same(v, state[k])}
    assert changed == {"last_layer.weight"}


def test_pretrain_keeps_the_last_epoch_not_significantly_below_the_best_validation_auroc(tiny_store, tmp_path):
    from conftest import tiny_training_data
    from lightning.pytorch.callbacks import Callback

    class Recorder(Callback):  # what each pretrain epoch ended with, and what the first warm epoch starts from
        def __init__(self):
            self.seen, self.se, self.start_of_warm = [], [], None

        def on_validation_end(self, trainer, pl_module):
            if pl_module.phase == "pretrain":
                self.se.append(float(trainer.callback_metrics["val/auroc_se"]))
                self.seen.append(
                    (
                        float(trainer.callback_metrics["val/auroc"]),
                        {k: v.clone() for k, v in pl_module.net.features.state_dict().items()},
                    )
                )

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if pl_module.phase == "warm" and self.start_of_warm is None:
                self.start_of_warm = {k: v.clone() for k, v in pl_module.net.features.state_dict().items()}

    dm = tiny_training_data(tiny_store, test_fraction=0.3, val_fraction=0.3)
    module = tiny_module(lr={"pretrain": 3e-2})  # a high rate: the epochs differ a lot
    plan = build_schedule(1, warm_epochs=0, push_every=5, pretrain_epochs=4, lr=module.lr)
    plan[4] = Phase("warm", trainable_groups("warm", True), plan[4].lr, False)
    rec = Recorder()
    keep = KeepBestPretrain(plan)
    _fit(module, dm, plan, callbacks=[keep, PhaseCallback(plan), rec])
    aurocs = [v for v, _ in rec.seen]
    top = max(range(len(aurocs)), key=aurocs.__getitem__)
    best = max(e for e, a in enumerate(aurocs) if a >= aurocs[top] - 1.96 * rec.se[top])
    assert len(aurocs) == 4 and len(set(aurocs)) > 1
    assert keep.best["epoch"] == best and keep.best["restored"] and keep.best["state"] is None
    for k, v in rec.seen[best][1].items():
        assert torch.equal(rec.start_of_warm[k], v), k
    if best != 3:  # the kept state is not simply the last one
        assert any(not torch.equal(rec.start_of_warm[k], v) for k, v in rec.seen[3][1].items())


def test_val_auroc_is_the_validation_cells_auroc_against_their_well_labels(tiny_store):
    import lightning as L
    import numpy as np
    from conftest import tiny_training_data

    dm = tiny_training_data(tiny_store, test_fraction=0.3, val_fraction=0.3)
    module = tiny_module()
    module.phase = "pretrain"
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.validate(module, datamodule=dm, verbose=False)
    logged = float(trainer.callback_metrics["val/auroc"])
    preds = trainer.predict(module, dataloaders=dm.predict_dataloader("val"))
    probs = np.concatenate([p["probs"][:, 1].numpy() for p in preds])
    labels = np.concatenate([p["label"].numpy() for p in preds])
    assert len(set(labels)) == 2
    pos, neg = probs[labels == 1], probs[labels == 0]  # AUROC by its definition, ties counted half
    by_hand = ((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()) / (len(pos) * len(neg))
    assert logged == pytest.approx(by_hand, abs=1e-6)


class _Trainer:  # what KeepBestPretrain reads of a trainer
    sanity_checking = False

    def __init__(self):
        self.current_epoch, self.callback_metrics = 0, {}


def _keep_sequence(values, z=1.96):
    """Feed (auroc, se) per pretrain epoch to KeepBestPretrain; the epoch it keeps and what it loads."""
    plan = [Phase("pretrain", trainable_groups("pretrain", True), {}, False)] * len(values) + [
        Phase("warm", trainable_groups("warm", True), {}, False)
    ]
    keep = KeepBestPretrain(plan, z=z)
    module = torch.nn.Module()
    module.net = torch.nn.Module()
    module.net.features, module.probe = torch.nn.Linear(1, 1, bias=False), torch.nn.Linear(1, 1, bias=False)
    trainer = _Trainer()
    for epoch, (a, se) in enumerate(values):
        trainer.current_epoch = epoch
        module.net.features.weight.data.fill_(epoch)  # each epoch's weights name their epoch
        trainer.callback_metrics = {"val/auroc": torch.tensor(a), "val/auroc_se": torch.tensor(se)}
        keep.on_validation_end(trainer, module)
    trainer.current_epoch = len(values)
    keep.on_train_epoch_start(trainer, module)
    return keep.best["epoch"], int(module.net.features.weight.item())


def test_keep_best_pretrain_keeps_the_latest_epoch_within_z_standard_errors_of_the_best():
    # the validation AUROC of a 30 %-affected run split by well (its epochs 0-11), SE ≈ 0.022: flat
    # within the noise over epochs 0-5, then the network reads the training wells and it falls
    seq = [
        (0.541, 0.022),
        (0.546, 0.022),
        (0.528, 0.022),
        (0.520, 0.022),
        (0.531, 0.022),
        (0.523, 0.022),
        (0.466, 0.022),
        (0.415, 0.022),
        (0.372, 0.022),
        (0.254, 0.022),
        (0.192, 0.022),
        (0.142, 0.022),
    ]
    assert _keep_sequence(seq) == (5, 5)  # 0.523 ≥ 0.546 − 1.96 × 0.022; 0.466 is not
    assert _keep_sequence(seq, z=0.0) == (1, 1)  # z = 0: the maximum itself
    # a later, clearly better epoch resets the reference: earlier ties no longer count
    assert _keep_sequence([(0.60, 0.01), (0.59, 0.01), (0.70, 0.01), (0.65, 0.01)]) == (2, 2)
    # a NaN epoch (one condition among the validation cells) is never kept
    assert _keep_sequence([(0.60, 0.01), (float("nan"), 0.01)]) == (0, 0)


def test_auroc_se_matches_the_spread_of_simulated_aurocs():
    """Hanley & McNeil's formula is exact for exponential scores: negatives Exp(1), positives Exp(λ)
    have AUROC 1 / (1 + λ); the SD of 4000 simulated AUROCs agrees with it within sampling error."""
    import numpy as np

    from protocell.stats import auroc_se

    rng = np.random.default_rng(0)
    n_pos, n_neg, lam = 60, 40, 0.25
    pos = rng.exponential(1 / lam, (4000, n_pos))
    neg = rng.exponential(1.0, (4000, n_neg))
    a = (pos[:, :, None] > neg[:, None, :]).mean(axis=(1, 2))
    assert a.mean() == pytest.approx(1 / (1 + lam), abs=0.005)
    assert auroc_se(0.8, n_pos, n_neg) == pytest.approx(a.std(), rel=0.05)
    assert np.isnan(auroc_se(0.8, 0, 10)) and np.isnan(auroc_se(float("nan"), 5, 5))


def test_keep_best_pretrain_refuses_a_checkpoint_without_its_rule_and_resumes_its_own():
    """A checkpoint without the keep rule (an older protocell's) is refused by name, not resumed by a guess."""
    from protocell.errors import ProtocellError

    keep = KeepBestPretrain([Phase("pretrain", trainable_groups("pretrain", True), {}, False)] * 3)
    with pytest.raises(
        ProtocellError, match=r"lacks \['monitor', 'mode', 'se', 'z', 'top', 'top_se'\].*start the run again"
    ):
        keep.load_state_dict({"value": 0.69, "epoch": 0, "state": None, "restored": False})
    saved = {**keep.state_dict(), "value": 0.7, "epoch": 1, "top": 0.72, "top_se": 0.01}
    again = KeepBestPretrain([Phase("pretrain", trainable_groups("pretrain", True), {}, False)] * 3)
    again.load_state_dict(saved)
    assert again.best["top"] == 0.72 and (again.monitor, again.mode) == ("val/auroc", "max")
    fresh = KeepBestPretrain([Phase("pretrain", trainable_groups("pretrain", True), {}, False)])
    assert (fresh.monitor, fresh.mode, fresh.z) == ("val/auroc", "max", 1.96)
    assert fresh.state_dict()["monitor"] == "val/auroc"
    assert fresh._better(0.51) and not fresh._better(float("nan"))
