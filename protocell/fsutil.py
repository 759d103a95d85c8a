"""Atomic file writes: a reader (or a killed writer) never sees half a file.

Every file protocell writes goes through ``atomic_write``: the bytes go to a temporary sibling,
are flushed to disk, and the temporary file is renamed over the target (``os.replace`` is atomic
on POSIX file systems). A temporary file left by a killed process is overwritten by the next write.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Callable


def atomic_write(path: str | Path, write: Callable[[io.BufferedWriter], None], fsync: bool = True) -> Path:
    """Call ``write(fh)`` on a temporary sibling of ``path``, then rename it to ``path``."""
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
