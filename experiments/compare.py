"""One table from many runs (``protocell.compare``): factors, accuracy, ground-truth checks and wall time,
mean ± sd over seeds.

    python experiments/compare.py outputs/multirun/grid_cpu                 # a multirun folder
    python experiments/compare.py outputs/train/run_a outputs/train/run_b   # or run folders
    python experiments/compare.py outputs/multirun/grid_cpu --out outputs/multirun/grid_cpu/comparison

Writes ``<out>.md`` (mean ± sd over seeds per factor combination), ``<out>.csv`` and ``<out>_runs.csv``
(one row per run); prints the Markdown table. What each column reads: ``protocell/compare.py``.
"""

from __future__ import annotations

import argparse
import sys

from protocell.compare import CompareError, compare


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("paths", nargs="+", help="multirun folders and/or run folders")
    ap.add_argument("--out", help="write <out>.md, <out>.csv and <out>_runs.csv")
    args = ap.parse_args(argv)
    try:
        _, table = compare(args.paths, args.out)
    except CompareError as e:
        print(f"compare: {e}", file=sys.stderr)
        return 2
    print(table, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
