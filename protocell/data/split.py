"""Splitting source images (or wells) into train / val / test: the one policy prepare and the
DataModule share.

Per condition, ``n_out = round_half_up(fraction · n)`` units go out (to test, or from train to val),
but never all of them and, when there are at least two, at least one: an only image of a condition
trains. Units are drawn by a seeded permutation of their sorted names, conditions in sorted order.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, TypeVar

import numpy as np

if TYPE_CHECKING:
    from _typeshed import SupportsRichComparison

# a stratum's key: a condition, or a (plate, condition) pair (``protocell.prepare.assemble``)
K = TypeVar("K", bound="SupportsRichComparison")


def n_out(n: int, fraction: float, keep_one: bool = True) -> int:
    """How many of ``n`` units go to the held-out side: ``floor(n·fraction + 0.5)``, clipped to
    [1, n − 1] when n ≥ 2 (``keep_one``), 0 when n < 2; ``fraction`` 0 gives 0."""
    if n < 2 or fraction <= 0:
        return 0
    k = int(math.floor(n * fraction + 0.5))
    return min(n - 1, max(1, k)) if keep_one else min(n, k)


def assign(
    units_by_condition: Mapping[K, list[str]],
    fractions: dict[str, float],
    seed: int,
    rng: np.random.Generator | None = None,
) -> dict[str, str]:
    """unit → split name. ``fractions`` maps held-out split names to fractions of what is left,
    applied in order (e.g. {"test": 0.5, "val": 0.2}: half to test, 20 % of the rest to val);
    everything else is "train"."""
    rng = rng if rng is not None else np.random.default_rng(seed)
    out = {}
    for cond in sorted(units_by_condition):
        units = rng.permutation(sorted(units_by_condition[cond])).tolist()
        left = len(units)
        start = 0
        for name, fraction in fractions.items():
            k = n_out(left, fraction)
            for u in units[start : start + k]:
                out[u] = name
            start += k
            left -= k
        for u in units[start:]:
            out[u] = "train"
    return out
