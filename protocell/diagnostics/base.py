"""What every label-free check returns, and the cells a well needs to be judged."""

from __future__ import annotations

import math

MIN_CELLS = 20  # cells a well needs to be judged


def check(value: float | None, threshold: float, fires: bool, why: str, **extra) -> dict:
    """``{"value", "threshold", "fires", "why", **extra}``; a non-finite value is stored as None."""
    return {
        "value": None if value is None or not math.isfinite(value) else float(value),
        "threshold": threshold,
        "fires": bool(fires),
        "why": why,
        **extra,
    }
