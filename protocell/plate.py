"""What a plate position is — a well's name → its row and column, which wells lie on the outer ring — and
what replicate wells share (their treatment's name).

Shared by score (trends, B-scores, plate heat maps, hits) and the layout check of a run's diagnostics.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

WELL_NAME = re.compile(r"^([A-Za-z]{1,2})0*(\d{1,3})$")  # B07, b7, AF48 (1536-well plates)


def parse_well(name: str) -> tuple[int, int] | None:
    """'B07' → (1, 7): zero-based row (A = 0, …, Z = 25, AA = 26) and one-based column; None when the
    name is not a plate position."""
    m = WELL_NAME.match(str(name).strip())
    if not m:
        return None
    letters = m.group(1).upper()
    row = ord(letters[-1]) - 65 + (26 * (ord(letters[0]) - 64) if len(letters) == 2 else 0)
    return row, int(m.group(2))


def outer_ring(w: pd.DataFrame) -> np.ndarray:
    """Which wells (``row``, ``column`` columns) lie on the plate's outer ring: row A, column 1, or the last
    row or column holding a well."""
    r, c = w["row"].astype(int), w["column"].astype(int)
    return ((r == 0) | (r == r.max()) | (c == 1) | (c == c.max())).to_numpy()


def treatment_name(condition: str, compound: str, dose: float) -> str:
    """The unit replicate wells share: condition · compound · dose (each part only when given); "" for a well
    with none of them (score names it after the well)."""
    parts = [p for p in (condition, compound) if p] + ([f"{dose:g}"] if np.isfinite(dose) else [])
    return " · ".join(parts)
