"""Checkpoint writing, resume checks and the SLURM wiring (protocell/training/checkpoint.py)."""

import signal

import pytest
import torch
from lightning.fabric.plugins.environments import SLURMEnvironment

from protocell.errors import ConfigError
from protocell.training.checkpoint import AtomicCheckpointIO, check_resume, cluster_plugins, interrupt_notice


def fake_checkpoint(processed: int, **hp) -> dict:
    return {
        "loops": {"fit_loop": {"epoch_progress": {"current": {"processed": processed}}}},
        "hyper_parameters": {"net_spec": {"backbone": {"name": "vgg11_narrow"}}, "class_names": ["Ref", "Exp"], **hp},
    }


def test_atomic_io_replaces_the_file_and_leaves_no_temporary(tmp_path):
    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"a": torch.ones(3)}, path)
    io.save_checkpoint({"a": torch.zeros(3)}, path)
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.zeros(3))
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"a": torch.ones(3)}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError, match="killed mid-write"):
        AtomicCheckpointIO().save_checkpoint({"a": torch.zeros(3), "b": Unpicklable()}, path)
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_the_slurm_requeue_checkpoint_is_the_last_end_of_epoch_one(tmp_path):
    last = tmp_path / "checkpoints" / "last.ckpt"
    io = AtomicCheckpointIO(last=last)
    io.save_checkpoint({"mid": "epoch"}, tmp_path / "hpc_ckpt_1.ckpt")  # nothing finished: none
    assert not (tmp_path / "hpc_ckpt_1.ckpt").exists()
    io.save_checkpoint(fake_checkpoint(3), last)
    io.save_checkpoint({"mid": "epoch"}, tmp_path / "hpc_ckpt_1.ckpt")
    assert (tmp_path / "hpc_ckpt_1.ckpt").read_bytes() == last.read_bytes()


def test_resume_refuses_a_truncated_checkpoint_naming_the_file(tmp_path):
    path = tmp_path / "last.ckpt"
    torch.save(fake_checkpoint(3), path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ConfigError, match=f"resume={path} cannot be read as a protocell checkpoint.*truncated"):
        check_resume(path, fake_checkpoint(0)["hyper_parameters"], 10)


def test_resume_refuses_a_checkpoint_of_another_network_and_says_where_it_continues(tmp_path, caplog):
    path = tmp_path / "last.ckpt"
    torch.save(fake_checkpoint(4), path)
    other = {**fake_checkpoint(0)["hyper_parameters"], "net_spec": {"backbone": {"name": "resnet18"}}}
    with pytest.raises(ConfigError, match=r"different \['net_spec'\].*vgg11_narrow"):
        check_resume(path, other, 10)
    caplog.set_level("INFO", logger="protocell.train")
    assert check_resume(path, fake_checkpoint(0)["hyper_parameters"], 10) == 4
    assert "holds epochs 0–3 (4 of 10 finished); training continues at epoch 4" in caplog.text


def test_interrupt_notice_names_the_checkpoint_and_the_epoch(tmp_path):
    msg = interrupt_notice("KeyboardInterrupt", 5, 10, tmp_path / "last.ckpt")
    assert "in epoch 5 of 10" in msg and "holds the end of epoch 4" in msg
    assert f"resume={(tmp_path / 'last.ckpt').resolve()} continues at epoch 5" in msg
    assert "no checkpoint to resume from" in interrupt_notice("SIGTERMException", 0, 10, None)


def test_slurm_environment_with_auto_requeue_takes_the_requeue_signal(monkeypatch):
    cfg = {"auto_requeue": True, "requeue_signal": "SIGUSR2"}
    monkeypatch.delenv("SLURM_NTASKS", raising=False)
    assert cluster_plugins(cfg) == []  # not under SLURM: Lightning's default
    for k, v in {
        "SLURM_NTASKS": "1",
        "SLURM_JOB_NAME": "train",
        "SLURM_JOB_ID": "42",
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
        "SLURM_NODEID": "0",
    }.items():
        monkeypatch.setenv(k, v)
    previous = signal.signal(signal.SIGUSR2, lambda *a: None)  # as submitit's handler holds it
    try:
        (env,) = cluster_plugins(cfg)
        assert isinstance(env, SLURMEnvironment) and env.auto_requeue and env.requeue_signal == signal.SIGUSR2
        assert signal.getsignal(signal.SIGUSR2) == signal.SIG_DFL  # free for Lightning's handler
    finally:
        signal.signal(signal.SIGUSR2, previous)
    with pytest.raises(ConfigError, match="slurm.requeue_signal='SIGNOPE' is invalid"):
        cluster_plugins({"auto_requeue": True, "requeue_signal": "SIGNOPE"})
