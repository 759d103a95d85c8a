"""The surroundings intervention: held-out cells re-scored with everything around them — background,
debris, neighbouring cells — taken from cells of the other condition; the cell's own pixels are kept.

The state the run reports is a cell's. If the fraction moves when only what lies *outside* the cells
changes, the network reads the surroundings: a background level that differs between the conditions'
wells, a neighbour's phenotype, the density of the field. Nothing in the well labels tells those apart
from the cells' biology, and no other check sees them when they line up with the condition in every
well (replicate wells agree, held-out wells read like training wells, and imaging noise and focus do not
move a background level). Measured: ``mask=off`` on the built-in wells (whose backgrounds differ by
condition), three seeds — two said ``warning`` only because the imaging check happened to fire, one said
``ok`` with an exposed fraction of 1.00 for a truth of 0.50 (docs/method.md).

With the background zeroed (``mask=on``: only the cell, less a margin, reaches the network) no pixel
outside the cell is seen, so the check has nothing to test and says so without scoring (without a margin
it also says that the outline still carries blurred background light, which a swap cannot test).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from protocell.diagnostics.base import MIN_CELLS, check
from protocell.diagnostics.imaging import _Imaged, fraction_of, held_rows

SURROUNDINGS = 0.10  # move of a condition's fraction when its cells' surroundings are the other condition's
KEEP = 2  # px around the cell's outline kept as the cell's own: the optics blur the outline's light into them


class _Surrounded(_Imaged):
    """``rows``' cells, each inside the surroundings of the cell at the same position of ``donors``: the
    cell (its mask grown by ``KEEP`` px) keeps its pixels; where the donor's crop is background (outside
    the donor's grown mask) the donor's pixels replace the rest; the few pixels that are neither (the
    donor's own cell outside this one) take the median of the donor's background (of its whole crop if
    it has none), channel by channel. On the network's input (normalised, resized), before the
    background would be zeroed."""

    def __init__(self, dm, rows, donors):
        super().__init__(dm, rows)
        self.donors = _Imaged(dm, donors)

    def __getitem__(self, i):
        import torch
        import torch.nn.functional as F

        x, m, y, cell_id = self.ds[i]
        xd, md, _, _ = self.donors.ds[i % len(self.donors)]
        grow = 2 * KEEP + 1
        own = F.max_pool2d(m[None], grow, stride=1, padding=KEEP)[0] > 0
        donor_bg = F.max_pool2d(md[None], grow, stride=1, padding=KEEP)[0] <= 0
        seen = donor_bg[0] if bool(donor_bg.any()) else torch.ones_like(donor_bg[0])
        fill = xd[:, seen].median(dim=1).values.view(-1, 1, 1)
        out = torch.where(own, x, torch.where(donor_bg, xd, fill))
        if self.zero:
            out = out * self.keep(m[0].numpy() > 0)[None]
        return out, m, y, cell_id


def surroundings_sensitivity(
    module, dm, held: pd.DataFrame, fit: dict, class_names: list[str], max_cells: int = 1000, seed: int = 0
) -> dict:
    """Each condition's affected fraction when its held-out cells sit in the other condition's cells'
    surroundings (``_Surrounded``); fires when the reference's rises or the exposed's falls by more than
    ``SURROUNDINGS``: the cells' own pixels are unchanged, so a network that reads the cells has the same
    evidence either way (unlike a noisier image, which can erase it). ``held``: held-out cells (cell_id,
    condition)."""
    if dm.zero_background:
        said = (
            f"the background is zeroed (the cell less a {dm.zero_margin} px margin reaches the network): "
            "nothing around a cell is seen"
            if dm.zero_margin > 0
            else "the background is zeroed, with no margin: nothing around a cell is seen, but the outline's own "
            "pixels hold background light the optics blurred across it, which no swap of the surroundings can "
            "move (docs/masking.md; mask.zero_margin=2 removes it)"
        )
        return check(0.0, SURROUNDINGS, False, said, shifts={})
    rng = np.random.default_rng(seed)
    ref, exp = class_names[0], class_names[-1]
    rows = held_rows(dm, held, (ref, exp), max_cells, rng)
    if min(len(rows[ref]), len(rows[exp])) < MIN_CELLS:
        return check(None, SURROUNDINGS, False, "too few held-out cells of a condition")
    shifts = {}
    for cond, other, sign in ((ref, exp, 1.0), (exp, ref, -1.0)):
        base = fraction_of(module, _Imaged(dm, rows[cond]), fit)
        moved = fraction_of(module, _Surrounded(dm, rows[cond], rng.permutation(rows[other])), fit)
        shifts[cond] = {"from": base, "to": moved, "change": moved - base, "toward_other": sign * (moved - base)}
    worst = max(shifts, key=lambda c: shifts[c]["toward_other"])
    value = shifts[worst]["toward_other"]
    fires = value > SURROUNDINGS
    said = "; ".join(
        f"{c} {s['from']:.3f} → {s['to']:.3f} in {o}'s surroundings" for (c, s), o in zip(shifts.items(), (exp, ref))
    )
    return check(
        value,
        SURROUNDINGS,
        fires,
        "affected fraction with each condition's cells in the other condition's surroundings (the cells' own "
        f"pixels kept): {said}"
        + (
            f": {worst} moved {value:.2f} toward the other condition with nothing of its cells changed — the "
            "network reads what lies around the cells (background, neighbours, debris), not the cells; zero "
            "the background (mask=on). If the change itself lies outside the masks, they do not cover the "
            "cells (docs/masking.md)"
            if fires
            else ""
        ),
        shifts=shifts,
    )
