import pytest
import torch
from conftest import fit_plan, tiny_module
from lightning.pytorch.callbacks import Callback

from protocell.errors import ConfigError
from protocell.training.callbacks import WeightAverage
from protocell.training.callbacks.average import averaged_epochs
from protocell.training.schedule import build_schedule


def test_averaged_epochs_are_the_last_joint_epochs_up_to_the_final_push():
    # the default schedule: 12 pretrain, 30 prototype epochs (2 warm), pushes at 10, 20, 30, 5 last-layer epochs after each
    plan = build_schedule(30, warm_epochs=2, push_every=10, push_start=10, last_layer_epochs=5, pretrain_epochs=12)
    final = max(e for e, p in enumerate(plan) if p.push)
    got = averaged_epochs(plan, 4)
    assert got == [final - 3, final - 2, final - 1, final]
    assert all(plan[e].name == "joint" for e in got)
    assert len(averaged_epochs(plan, 10)) == 10 and plan[averaged_epochs(plan, 10)[0] - 1].name == "last_layer"
    assert averaged_epochs(plan, 0) == []
    with pytest.raises(ConfigError, match=r"schedule.average_epochs=11 is invalid: ≤ 10"):
        averaged_epochs(plan, 11)
    with pytest.raises(ConfigError, match=r"schedule.average_epochs=1 is invalid"):
        averaged_epochs(plan, 1)
    pretrain_only = [p for p in plan if p.name == "pretrain"]  # what head=baseline runs
    with pytest.raises(ConfigError, match=r"schedule.average_epochs=2 is invalid: 0: the schedule has no push"):
        averaged_epochs(pretrain_only, 2)


def test_weight_average_loads_the_mean_weights_recomputes_batch_norm_and_pushes_from_them(tiny_dm, tmp_path):
    plan = build_schedule(3, warm_epochs=0, push_every=10, last_layer_epochs=0)  # 3 joint epochs, one push at the end
    snaps = []

    class Snapshot(Callback):  # runs before WeightAverage: the weights each averaged epoch ended with
        def on_train_epoch_end(self, trainer, pl_module):
            snaps.append({k: v.detach().clone() for k, v in pl_module.net.named_parameters()})

    module = tiny_module(last_layer="trained")
    fit_plan(module, tiny_dm, plan, tmp_path, extra=[Snapshot(), WeightAverage(plan, 3)])
    net = module.net
    assert len(snaps) == 3 and not torch.equal(snaps[0]["add_on.0.weight"], snaps[2]["add_on.0.weight"])
    for name, p in net.named_parameters():
        if name == "prototypes":  # pushed after the average
            continue
        mean = sum(s[name] for s in snaps) / 3
        torch.testing.assert_close(p.detach(), mean, rtol=1e-5, atol=1e-6, msg=name)

    # batch norm: the plain average over the push set's batches of the first layer's batch means
    bn = next(m for m in net.features.modules() if isinstance(m, torch.nn.BatchNorm2d))
    seen = []
    hook = bn.register_forward_hook(lambda m, inp, out: seen.append(inp[0].mean(dim=(0, 2, 3))))
    net.eval()
    with torch.no_grad():
        for x, mask, _, _ in tiny_dm.push_dataloader():
            net(x, mask)
    hook.remove()
    torch.testing.assert_close(bn.running_mean, torch.stack(seen).mean(0), rtol=1e-4, atol=1e-5)

    # the push came after: each prototype is the latent patch of the averaged network it names
    z = {}
    with torch.no_grad():
        for x, _, _, cid in tiny_dm.push_dataloader():
            for b, c in enumerate(cid.tolist()):
                z[c] = net.latent(x[b : b + 1])[0]
    for j in range(net.prototypes.shape[0]):
        y, x_ = net.proto_latent_yx[j].tolist()
        torch.testing.assert_close(net.prototypes[j].detach(), z[int(net.proto_cell_id[j])][:, y, x_])
