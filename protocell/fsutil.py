"""Atomic file writes: a reader (or a killed writer) never sees half a file.

Every file protocell writes goes through ``atomic_write``: the bytes go to a temporary sibling,
are flushed to disk, and the temporary file is renamed over the target (``os.replace`` is atomic
on POSIX file systems). A temporary file left by a killed process is overwritten by the next write.

``exclusive_lock`` keeps two processes out of one folder (a prepare output, a run folder, a score
output). ``folder_problem`` and ``output_errors`` turn an output folder that cannot be written (a file,
a path under a file, no permission, a read-only or full disk) into one line naming the setting.
"""

from __future__ import annotations

import errno
import fcntl
import io
import json
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def atomic_write(path: str | Path, write: Callable[[io.BufferedWriter], object], fsync: bool = True) -> Path:
    """Call ``write(fh)`` on a temporary sibling of ``path`` (what it returns is ignored), then rename it to
    ``path``."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda fh: fh.write(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def _json_default(o):
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def atomic_write_json(path: str | Path, obj, indent: int | None = 2) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent, default=_json_default))


def atomic_save_npy(path: str | Path, array) -> Path:
    import numpy as np

    return atomic_write(path, lambda fh: np.save(fh, array))


def atomic_torch_save(path: str | Path, obj) -> Path:
    import torch

    return atomic_write(path, lambda fh: torch.save(obj, fh))


@contextmanager
def exclusive_lock(path: str | Path, refuse: Callable[[str], Exception], shared: bool = False) -> Iterator[Path]:
    """Hold an exclusive ``fcntl.flock`` on ``path`` (created if absent) for the ``with`` block.

    Another process holding it gets ``refuse(holder)`` raised at once (no waiting: a second writer
    of one folder is a mistake, not a queue), where ``holder`` is "pid N on host" as the holder wrote
    it. The kernel releases the lock when its process ends, even by ``kill -9``, so a stale lock file
    never blocks anyone. Only the pid and host are written: a command line may hold secrets.
    ``shared``: a shared lock instead, which any number of shared holders hold together while an
    exclusive holder is refused (the share tasks of one sharded prepare, against a merge)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
            raise refuse(holder) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock


def folder_problem(path: str | Path) -> str | None:
    """Why ``path`` cannot be a folder to write into, from what exists (None: nothing found): it is a file,
    or lies under one."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        return "is a file"
    for parent in path.parents:
        if parent.exists():
            return None if parent.is_dir() else f"lies under the file {parent}"
    return None


# errors of writing that say where, not what: the folder is read-only, full, or not a folder
_WRITE_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR, errno.EEXIST}


@contextmanager
def output_errors(folder: str | Path, key: str, error: Callable[[str], Exception]) -> Iterator[None]:
    """Turn an ``OSError`` of writing under ``folder`` (no permission, a read-only or full file system, a
    file where a folder should be) raised in the ``with`` block into ``error(message)`` naming
    ``key=folder`` and the fix. Any other ``OSError`` (a file under another folder) passes unchanged."""
    folder = Path(folder)
    try:
        yield
    except OSError as err:
        where = Path(err.filename) if isinstance(err.filename, (str, Path)) else None
        inside = where is not None and (
            where == folder
            or folder in where.parents
            or folder.resolve() in where.resolve().parents
            or where in folder.parents
        )
        if not inside and not (where is None and err.errno in _WRITE_ERRNOS):
            raise
        reason = err.strerror or type(err).__name__
        raise error(
            f"{key}={folder} cannot be written ({reason}: {where or folder}): give a folder you can write to, "
            "on a disk with free space"
        ) from err
