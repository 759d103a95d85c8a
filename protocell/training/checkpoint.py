"""Checkpoints that survive ``kill -9``, clean stops on SIGINT/SIGTERM, SLURM requeueing.

What a run folder holds after any stop: ``checkpoints/last.ckpt`` is rewritten at the end of
**every** training epoch (after that epoch's validation and push: Lightning runs ``Checkpoint``
callbacks after the others) and once more when training ends. Each write goes to a temporary
sibling that is renamed over the old file (``AtomicCheckpointIO`` → ``fsutil.atomic_write``), so a
process killed while writing leaves the previous complete checkpoint, never half of one.

Why only at epoch ends: a run is reproducible because every epoch's order is a pure function of
(seed, epoch) — the samplers (``EpochSampler``, ``BagSampler``) draw a fresh permutation per epoch
and each crop's augmentation is seeded by its index and epoch. A checkpoint taken in the middle of
an epoch would have to carry the sampler's position, the DataLoader iterator and the generator
states to continue bit-exactly; Lightning does not save those for our samplers. So a stop (kill,
Ctrl-C, SIGTERM, SLURM pre-emption) loses the epoch in progress, and ``resume=`` re-runs it from its
start, ending bit-identical to an uninterrupted run (``tests/integration/test_kill_resume.py``).

SLURM: Lightning's ``SLURMEnvironment(auto_requeue=True)`` catches the requeue signal (submitit's
``--signal=USR2@signal_delay_s``), saves an "HPC" checkpoint, requeues the job and, when the
requeued job starts in the same run folder, resumes from it. That checkpoint would be mid-epoch,
so ``AtomicCheckpointIO`` writes the last end-of-epoch checkpoint in its place.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException

from protocell.config import SlurmConfig, check_fields, signal_named
from protocell.errors import ConfigError
from protocell.fsutil import atomic_torch_save, atomic_write_bytes

log = logging.getLogger("protocell.train")
HPC_PREFIX = "hpc_ckpt_"  # Lightning's name for the checkpoint its SLURM requeue writes


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` through a temporary file and ``os.replace``: a reader or a killed writer never
    sees half a checkpoint. ``last``: the end-of-epoch checkpoint that stands in for Lightning's
    mid-epoch SLURM requeue checkpoint (module doc)."""

    def __init__(self, last: str | Path | None = None):
        super().__init__()
        self.last = Path(last) if last is not None else None

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.name.startswith(HPC_PREFIX) and self.last is not None:
            if self.last.exists():
                log.info("SLURM requeue: %s is a copy of %s (the last finished epoch)", path, self.last)
                atomic_write_bytes(path, self.last.read_bytes())
            else:
                log.info("SLURM requeue: no epoch has finished yet, so no checkpoint; the job starts over")
            return
        atomic_torch_save(path, checkpoint)


class EpochCheckpoint(Checkpoint):
    """Writes ``path`` (``checkpoints/last.ckpt``) at the end of every training epoch and at the end
    of training, and says on an interrupt which epoch ``resume=`` continues from."""

    def __init__(self, path: str | Path, epochs: int):
        self.path = Path(path)
        self.epochs = int(epochs)
        self.finished = 0  # epochs whose end is in the file

    def on_train_epoch_end(self, trainer, pl_module):
        trainer.save_checkpoint(
            self.path, weights_only=False
        )  # the full state resume= needs; every rank calls it, rank 0 writes
        self.finished = trainer.current_epoch + 1

    def on_train_end(self, trainer, pl_module):
        # after on_train_end of the other callbacks (KeepBestPretrain may restore an earlier epoch)
        trainer.save_checkpoint(self.path, weights_only=False)
        self.finished = self.epochs

    def on_exception(self, trainer, pl_module, exception):
        if isinstance(exception, (KeyboardInterrupt, SIGTERMException)):
            log.warning(
                interrupt_notice(
                    type(exception).__name__, trainer.current_epoch, self.epochs, self.path if self.finished else None
                )
            )


def interrupt_notice(cause: str, epoch: int, epochs: int, checkpoint: Path | None) -> str:
    """The log line of a stopped run: what the checkpoint holds and the resume= that continues it."""
    if checkpoint is None:
        return (
            f"stopped ({cause}) in epoch {epoch} of {epochs} (0-based) before any epoch finished: there is no "
            "checkpoint to resume from; start the run again"
        )
    return (
        f"stopped ({cause}) in epoch {epoch} of {epochs} (0-based); {checkpoint} holds the end of epoch "
        f"{epoch - 1}. resume={checkpoint.resolve()} continues at epoch {epoch} (the unfinished epoch is "
        "re-run from its start: only end-of-epoch checkpoints resume bit-exactly)"
    )


def finished_epochs(path: str | Path) -> tuple[int, dict]:
    """(epochs whose training finished, the checkpoint) of a Lightning checkpoint, loaded with
    ``weights_only=True``; ``ConfigError`` naming the file when it cannot be read."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        progress = state["loops"]["fit_loop"]["epoch_progress"]["current"]
        return int(progress["processed"]), state
    except Exception as e:  # truncated, another program's pickle, not a Lightning checkpoint
        raise ConfigError(
            f"resume={path} cannot be read as a protocell checkpoint ({type(e).__name__}: "
            f"{str(e)[:200]}): it is truncated or not a train.py checkpoint; resume from an intact "
            "<run>/checkpoints/last.ckpt (rewritten atomically at the end of every epoch)"
        ) from None


def check_resume(path: str | Path, hparams: dict, epochs: int) -> int:
    """Refuse a checkpoint this config cannot continue; log and return where training continues."""
    done, state = finished_epochs(path)
    saved = dict(state.get("hyper_parameters") or {})
    differ = sorted(
        k for k in ("net_spec", "class_names", "last_layer", "head") if k in saved and saved[k] != hparams.get(k)
    )
    if differ:
        raise ConfigError(
            f"resume={path} was trained with different {differ} ({', '.join(f'{k}={saved[k]!r}' for k in differ)}"
            "): resume with the overrides of the run that wrote it"
        )
    if done >= epochs:
        log.info("resume: %s holds all %d epochs; nothing is trained, the run is evaluated", path, epochs)
    else:
        log.info(
            "resume: %s holds epochs 0–%d (%d of %d finished); training continues at epoch %d",
            path,
            done - 1,
            done,
            epochs,
            done,
        )
    return done


def cluster_plugins(slurm: Mapping[str, Any]) -> list:
    """Under SLURM, Lightning's ``SLURMEnvironment`` with the run's ``slurm.auto_requeue`` and
    ``slurm.requeue_signal`` (checked by the schema, ``protocell.config.SlurmConfig``); elsewhere
    nothing (Lightning's default environment).

    submitit (``hydra/launcher=slurm``) registers its own handler for the same signal, which requeues
    a timed-out job only when ``max_num_timeout`` > 0 and restarts it from scratch; Lightning
    registers its handler only on a free signal, so the signal is handed to Lightning here."""
    check_fields(slurm, SlurmConfig, "slurm")
    requeue, signum = bool(slurm["auto_requeue"]), signal_named(slurm["requeue_signal"])
    assert signum is not None  # the schema's rule
    if not SLURMEnvironment.detect():
        return []
    if requeue and signal.getsignal(signum) not in (None, signal.SIG_DFL, signal.SIG_IGN):
        signal.signal(signum, signal.SIG_DFL)
    log.info("SLURM: auto_requeue=%s on %s", requeue, signum.name)
    return [SLURMEnvironment(auto_requeue=requeue, requeue_signal=signum)]
