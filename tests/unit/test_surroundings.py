"""The surroundings intervention (``protocell.diagnostics.surroundings``) on a real built-in plate whose
backgrounds differ by condition (the debris and light of the background confound): a network that reads
the background is caught, one that reads the cells is not, and zeroing the background — the fix the
check's message prescribes — leaves nothing around a cell for a network to read."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import tiny_data, toy_reference_fit


class Reader(torch.nn.Module):
    """Exp score from the mean pixel outside the cell's mask (``where="outside"``: what a network without
    the mask can learn from a background confound) or inside it (``"inside"``: the cell's own pixels)."""

    def __init__(self, where: str, centre: float, scale: float):
        super().__init__()
        self.where, self.centre, self.scale, self.positive = where, centre, scale, 1
        self.views = 1  # read as cropped

    @staticmethod
    def mean(x, m, where: str):
        sel = (m > 0) if where == "inside" else (m <= 0)
        sel = sel.expand_as(x).float()
        return (x * sel).sum((1, 2, 3)) / sel.sum((1, 2, 3)).clamp_min(1)

    def scores(self, x, m):
        z = (self.mean(x, m, self.where) - self.centre) / self.scale
        return torch.stack([-z / 2, z / 2], 1), None


@pytest.fixture(scope="module")
def confounded(tmp_path_factory):
    from protocell.data.synthetic import WellSpec, build_store

    return build_store(
        tmp_path_factory.mktemp("surround"),
        WellSpec(wells_per_condition=2, fields_per_well=2, field_size=192, cells_per_field=12, seed=5),
    )


def _setup(store, zero: bool):
    dm = tiny_data(store, normalize="cell", zero_background=zero, zero_margin=2 if zero else 0, val_fraction=0.0)
    dm.setup()
    cells = dm.store.manifest[dm.store.manifest["label"] >= 0]
    held = pd.DataFrame({"cell_id": cells["cell_id"].to_numpy(), "condition": cells["condition"].to_numpy()})
    rows = np.flatnonzero(dm.store.manifest["label"].to_numpy() >= 0)
    return dm, held, rows


def _reader(dm, rows, held, where: str) -> Reader:
    """Centred between the conditions' medians, the exposed side high (measured on the plate)."""
    from protocell.diagnostics.imaging import _Imaged

    plain = _Imaged(dm, rows)
    means = np.array(
        [Reader.mean(x[None], m[None], where).item() for x, m, _, _ in (plain[i] for i in range(len(plain)))]
    )
    cond = held.set_index("cell_id").loc[dm.store.manifest["cell_id"].to_numpy()[rows], "condition"].to_numpy()
    ref, exp = np.median(means[cond == "Ref"]), np.median(means[cond == "Exp"])
    return Reader(where, (ref + exp) / 2, (exp - ref) / 6)


def test_a_network_that_reads_the_background_is_caught_and_one_that_reads_the_cells_is_not(confounded):
    from protocell.diagnostics.surroundings import surroundings_sensitivity

    dm, held, rows = _setup(confounded, zero=False)
    fit = toy_reference_fit()
    outside = surroundings_sensitivity(_reader(dm, rows, held, "outside"), dm, held, fit, ["Ref", "Exp"], max_cells=80)
    assert outside["fires"] and outside["value"] > 0.10, outside["why"]
    assert outside["shifts"]["Ref"]["change"] > 0.10 and outside["shifts"]["Exp"]["change"] < -0.10
    assert "zero the background (mask=on)" in outside["why"]
    # the cells' own pixels are kept: a network that reads them gives the same fractions
    inside = surroundings_sensitivity(_reader(dm, rows, held, "inside"), dm, held, fit, ["Ref", "Exp"], max_cells=80)
    assert not inside["fires"] and abs(inside["value"]) < 1e-9, inside["why"]


def test_with_the_background_zeroed_nothing_around_a_cell_reaches_the_network(confounded):
    """The prescribed fix, end to end: the same background reader on the background-zeroed input sees the
    same pixels whatever surrounds the cell, and the check says it has nothing to test."""
    from protocell.diagnostics.imaging import _Imaged
    from protocell.diagnostics.surroundings import _Surrounded, surroundings_sensitivity

    dm, held, rows = _setup(confounded, zero=True)
    exp = rows[
        held.set_index("cell_id").loc[dm.store.manifest["cell_id"].to_numpy()[rows], "condition"].to_numpy() == "Exp"
    ]
    plain, moved = _Imaged(dm, rows), _Surrounded(dm, rows, exp[::-1])
    for i in range(0, len(rows), 7):
        assert torch.equal(plain[i][0], moved[i][0])
    got = surroundings_sensitivity(_reader(dm, rows, held, "outside"), dm, held, toy_reference_fit(), ["Ref", "Exp"])
    assert not got["fires"] and got["value"] == 0.0 and "nothing around a cell is seen" in got["why"]
    # without a margin the outline still holds blurred background light: said, with the fix
    bare = tiny_data(confounded, normalize="cell", zero_background=True, zero_margin=0, val_fraction=0.0)
    bare.setup()
    said = surroundings_sensitivity(None, bare, held, toy_reference_fit(), ["Ref", "Exp"])["why"]
    assert "no margin" in said and "mask.zero_margin=2" in said


def test_the_surroundings_come_from_the_donor_and_the_cell_stays_itself(confounded):
    from protocell.diagnostics.imaging import _Imaged
    from protocell.diagnostics.surroundings import KEEP, _Surrounded

    dm, _held, rows = _setup(confounded, zero=False)
    own, donor = rows[:5], rows[-5:]
    plain, other, moved = _Imaged(dm, own), _Imaged(dm, donor), _Surrounded(dm, own, donor)
    for i in range(5):
        x, m = plain[i][0], plain[i][1]
        xd, md = other[i][0], other[i][1]
        got = moved[i][0]
        grown = torch.nn.functional.max_pool2d(m[None], 2 * KEEP + 1, stride=1, padding=KEEP)[0] > 0
        donor_bg = torch.nn.functional.max_pool2d(md[None], 2 * KEEP + 1, stride=1, padding=KEEP)[0] <= 0
        assert torch.equal(got[:, grown[0]], x[:, grown[0]])
        both = donor_bg[0] & ~grown[0]
        assert both.any() and torch.equal(got[:, both], xd[:, both])
