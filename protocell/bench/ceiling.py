"""What two processes can gain on this machine, before any protocell code runs (``make bench`` → ``scale``).

A share task of prepare or score is image arithmetic on arrays much larger than the caches (filters,
labelling, convolutions), so two tasks on two cores scale only as far as the memory bus lets them.
Two kernels, each run in one process and then in two at once (fresh interpreters, one thread each):

- ``cpu``: a pure-Python loop (registers and L1 only): the cores' own scaling;
- ``images``: Gaussian filtering and labelling of a 3 × 1080² float32 field (scipy.ndimage), the kind
  of work prepare does per tile: what the memory bus allows.

``speedup`` = 2 × (one process's seconds) / (the slower of two concurrent processes' seconds): 2.0 is
perfect scaling; the ``scale`` row's 2-task speedups are to be read against the ``images`` figure.

    python -m protocell.bench.ceiling
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

KERNELS = {
    "cpu": (
        "import time\nt = time.perf_counter(); x = 0\nfor i in range(12_000_000): x += i * i\n"
        "print(time.perf_counter() - t)"
    ),
    "images": (
        "import time, numpy as np\nfrom scipy import ndimage as ndi\n"
        "x = np.random.default_rng(0).random((3, 1080, 1080), dtype=np.float32)\nt = time.perf_counter()\n"
        "for _ in range(12): ndi.label(ndi.gaussian_filter(x, (0, 2, 2))[0] > 0.5)\nprint(time.perf_counter() - t)"
    ),
}


def _seconds(code: str, n: int) -> float:
    """The slowest of ``n`` concurrent processes running ``code`` (best of 3 rounds)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    rounds = []
    for _ in range(3):
        procs = [
            subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env) for _ in range(n)
        ]
        rounds.append(max(float(p.communicate()[0].strip()) for p in procs))
    return min(rounds)


def run() -> dict:
    out = {}
    for name, code in KERNELS.items():
        one, two = _seconds(code, 1), _seconds(code, 2)
        out[f"{name}_1proc_seconds"] = round(one, 3)
        out[f"{name}_2procs_seconds"] = round(two, 3)
        out[f"{name}_2procs_speedup"] = round(2 * one / two, 3)
    return out


if __name__ == "__main__":
    print(json.dumps(run(), indent=1))
