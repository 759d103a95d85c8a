"""What a dose is: the value of a plate map's (or a crops metadata table's) ``dose`` column.

A dose is a finite number ≥ 0 (in one unit the user chooses, e.g. 10 for 10 µM), or empty for a
well without one. prepare refuses any other value at once, naming the row and well; score reads the
same rule again from the store's manifest (a store written by another tool). One rule, one place.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

DOSE_COLUMN = "dose"
NEED = "a finite number ≥ 0 in one unit (e.g. 10 for 10 µM), or empty for a well without one"


def dose_value(text) -> float | None:
    """The dose a cell of the ``dose`` column holds: a float, NaN when empty (also ``nan``/``None``
    as pandas writes a missing value), None when it is not a finite number ≥ 0."""
    s = str(text).strip()
    if s.lower() in ("", "nan", "none"):
        return float("nan")
    try:
        value = float(s)
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def parse_doses(text: pd.Series) -> tuple[pd.Series, pd.Series]:
    """(dose as float, NaN where empty; True where the value is not a dose), with ``text``'s index."""
    values = [dose_value(t) for t in text]
    bad = pd.Series([v is None for v in values], index=text.index, dtype=bool)
    return pd.Series([np.nan if v is None else v for v in values], index=text.index, dtype=float), bad
